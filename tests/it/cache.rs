//! The result cache against a real Postgres: byte-identical hits in the simple and extended
//! protocol (text and binary results), tokio-postgres prepared statements and psql, private
//! entries per user / search_path / TimeZone, invalidation by writes (only once committed),
//! volatile and locking reads never cached, single flight (50 concurrent misses, one
//! execution), stale results with a NOTICE when Postgres is slow, the byte bound, and the admin
//! endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use pgward::protocol::tag::frontend::{BIND, DESCRIBE, EXECUTE, PARSE, SYNC};

use crate::harness::*;
use crate::rules::{query_stats, rules_file};
use crate::stats_http::http;

/// A table of its own per test (the cluster is shared by tests running in parallel).
pub(crate) fn table(name: &str, rows: &str) {
    shared().psql(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int PRIMARY KEY, v text); \
         INSERT INTO {name} VALUES {rows}; GRANT ALL ON {name} TO PUBLIC;"
    ));
}

pub(crate) async fn proxy(
    rules: &str,
    tweak: impl FnOnce(&mut pgward::config::Config),
) -> pgward::Running {
    let mut config = config_for(shared());
    config.rules = Some(rules_file(rules));
    tweak(&mut config);
    start_proxy(config).await
}

pub(crate) fn caching_rule(pattern: &str, extra: &str) -> String {
    let ttl = if extra.contains("cache.ttl") {
        ""
    } else {
        "cache.ttl = \"60s\""
    };
    format!("[[rule]]\nname = \"cached\"\nmatch.pattern = '{pattern}'\n{ttl}\n{extra}\n")
}

pub(crate) async fn counter(admin: SocketAddr, needle: &str, name: &str) -> u64 {
    query_stats(admin, needle).await[name].as_u64().unwrap_or(0)
}

/// Waits until the stats counter `name` of statements like `needle` reaches `value`.
pub(crate) async fn await_counter(admin: SocketAddr, needle: &str, name: &str, value: u64) {
    let what = format!("{name} of {needle:?} to reach {value}");
    let reached = |stats: &Value| stats[name].as_u64() == Some(value);
    eventually(&what, async || query_stats(admin, needle).await, reached).await;
}

/// A direct session holding an exclusive lock on `table` until it rolls back: statements on
/// the table block, as on a database that is struggling.
async fn lock_table(table: &str) -> tokio_postgres::Client {
    let (locker, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            shared().port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    locker
}

/// Messages up to ReadyForQuery, as raw bytes.
pub(crate) async fn simple(raw: &mut Raw, sql: &str) -> Vec<(u8, Vec<u8>)> {
    raw.send(&query_message(sql)).await;
    raw.read_until_ready().await
}

pub(crate) fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Parse/Bind/Describe/Execute/Sync of an unnamed statement with one text parameter and the
/// given result format code.
pub(crate) fn extended_batch(sql: &str, param: &str, result_format: i16) -> Vec<u8> {
    [
        parse_message("", sql, &[]),
        bind_message("", &[param], result_format),
        describe_portal_message(),
        execute_message(),
        sync_message(),
    ]
    .concat()
}

/// Parse of statement `name` declaring the parameter type OIDs `types`.
pub(crate) fn parse_message(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut parse = cstr(name);
    parse.extend(cstr(sql));
    parse.extend((types.len() as i16).to_be_bytes());
    for oid in types {
        parse.extend(oid.to_be_bytes());
    }
    message(PARSE, &parse)
}

/// Bind of statement `statement` to the unnamed portal: text parameters, one result format
/// code for all columns.
pub(crate) fn bind_message(statement: &str, params: &[&str], result_format: i16) -> Vec<u8> {
    let mut bind = cstr("");
    bind.extend(cstr(statement));
    // One format code (text) for all parameters; none when there are no parameters.
    let formats = i16::from(!params.is_empty());
    bind.extend(formats.to_be_bytes());
    bind.extend(vec![0u8; 2 * formats as usize]);
    bind.extend((params.len() as i16).to_be_bytes());
    for param in params {
        bind.extend((param.len() as i32).to_be_bytes());
        bind.extend(param.as_bytes());
    }
    bind.extend(1i16.to_be_bytes());
    bind.extend(result_format.to_be_bytes());
    message(BIND, &bind)
}

/// Describe of the unnamed portal.
pub(crate) fn describe_portal_message() -> Vec<u8> {
    let mut describe = vec![b'P'];
    describe.extend(cstr(""));
    message(DESCRIBE, &describe)
}

/// Execute of the unnamed portal, all rows.
pub(crate) fn execute_message() -> Vec<u8> {
    let mut execute = cstr("");
    execute.extend(0i32.to_be_bytes());
    message(EXECUTE, &execute)
}

pub(crate) fn sync_message() -> Vec<u8> {
    message(SYNC, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_byte_identical_in_both_protocols_and_formats() {
    table("cache_bytes", "(1, 'one'), (2, 'two'), (3, NULL)");
    let proxy = proxy(&caching_rule("cache_bytes", ""), |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;

    let sql = "SELECT id, v FROM cache_bytes WHERE id <= 3 ORDER BY id";
    let miss = simple(&mut raw, sql).await;
    let hit = simple(&mut raw, sql).await;
    assert_eq!(
        miss.iter().filter(|(t, _)| *t == b'D').count(),
        3,
        "{miss:?}"
    );
    assert_eq!(hit, miss, "a simple-protocol hit differs from the miss");
    assert_eq!(counter(admin, "cache_bytes", "cache_hits").await, 1);

    let psql = "SELECT v FROM cache_bytes WHERE id = 2";
    let prepared = "SELECT id, v FROM cache_bytes WHERE id = $1";
    for format in [0i16, 1] {
        raw.send(&extended_batch(prepared, "1", format)).await;
        let miss = raw.read_until_ready().await;
        raw.send(&extended_batch(prepared, "1", format)).await;
        let hit = raw.read_until_ready().await;
        let tags: Vec<u8> = hit.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"12TDCZ", "format {format}: {hit:?}");
        assert_eq!(
            hit, miss,
            "format {format}: an extended hit differs from the miss"
        );
        // Another parameter value is another entry.
        raw.send(&extended_batch(prepared, "2", format)).await;
        let other = raw.read_until_ready().await;
        assert_ne!(other, miss);
    }
    let stats = query_stats(admin, "select id,v from cache_bytes where id=$1").await;
    assert_eq!(stats["cache_hits"], 2, "{stats}");
    assert_eq!(stats["cache_fills"], 4, "{stats}");

    // psql (libpq) sees the same answer from a hit as from the miss.
    let addr = proxy.proxy_addr;
    let run_psql = move || {
        let out = std::process::Command::new("psql")
            .arg(conn_string(addr, TRUST_USER, None))
            .args(["-XAtc", psql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = tokio::task::spawn_blocking(run_psql).await.unwrap();
    let second = tokio::task::spawn_blocking(run_psql).await.unwrap();
    assert_eq!((first.trim(), second.trim()), ("two", "two"));
    assert_eq!(
        counter(
            admin,
            "select id,v from cache_bytes where id=$1",
            "cache_hits"
        )
        .await,
        2
    );
    assert_eq!(
        counter(admin, "select v from cache_bytes", "cache_hits").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_work_on_hits() {
    table("cache_tp", "(1, 'one'), (2, 'two')");
    let proxy = proxy(&caching_rule("cache_tp", ""), |_| {}).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let statement = client
        .prepare("SELECT id, v FROM cache_tp WHERE id = $1")
        .await
        .unwrap();
    for _ in 0..3 {
        let rows = client.query(&statement, &[&2i32]).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), 2);
        assert_eq!(rows[0].get::<_, Option<&str>>(1), Some("two"));
    }
    // The one-shot form (unnamed statement each time) hits the same way.
    for _ in 0..2 {
        let rows = client
            .query("SELECT id, v FROM cache_tp WHERE id = $1", &[&1i32])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, Option<&str>>(1), Some("one"));
    }
    let admin = proxy.admin_addr.unwrap();
    assert_eq!(counter(admin, "cache_tp", "cache_hits").await, 3);
    // A pipelined mix of hits and misses keeps every answer in place.
    let (a, b, c) = tokio::join!(
        client.query(&statement, &[&1i32]),
        client.query(&statement, &[&2i32]),
        client.query("SELECT count(*) FROM cache_tp", &[]),
    );
    assert_eq!(a.unwrap()[0].get::<_, i32>(0), 1);
    assert_eq!(b.unwrap()[0].get::<_, i32>(0), 2);
    assert_eq!(c.unwrap()[0].get::<_, i64>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_search_paths_and_time_zones_never_share_entries() {
    shared().psql(
        "DROP SCHEMA IF EXISTS cache_a CASCADE; DROP SCHEMA IF EXISTS cache_b CASCADE; \
         CREATE SCHEMA cache_a; CREATE SCHEMA cache_b; \
         CREATE TABLE cache_a.cache_sp (v text); INSERT INTO cache_a.cache_sp VALUES ('from a'); \
         CREATE TABLE cache_b.cache_sp (v text); INSERT INTO cache_b.cache_sp VALUES ('from b'); \
         DROP TABLE IF EXISTS cache_tz; CREATE TABLE cache_tz (at timestamptz); \
         INSERT INTO cache_tz VALUES ('2026-01-01 12:00:00+00'); \
         GRANT USAGE ON SCHEMA cache_a, cache_b TO PUBLIC; \
         GRANT SELECT ON ALL TABLES IN SCHEMA cache_a, cache_b, public TO PUBLIC;",
    );
    let proxy = proxy(&caching_rule("cache_sp|cache_tz|current_user", ""), |_| {}).await;
    let value = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default()
    };
    let a = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let b = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    a.batch_execute("SET search_path = cache_a").await.unwrap();
    b.batch_execute("SET search_path = cache_b").await.unwrap();
    for _ in 0..2 {
        let sql = "SELECT v FROM cache_sp";
        assert_eq!(value(a.simple_query(sql).await.unwrap()), "from a");
        assert_eq!(value(b.simple_query(sql).await.unwrap()), "from b");
    }
    a.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    b.batch_execute("SET TIME ZONE 'Asia/Tokyo'").await.unwrap();
    for _ in 0..2 {
        let sql = "SELECT at::text FROM public.cache_tz";
        assert_eq!(
            value(a.simple_query(sql).await.unwrap()),
            "2026-01-01 12:00:00+00"
        );
        assert_eq!(
            value(b.simple_query(sql).await.unwrap()),
            "2026-01-01 21:00:00+09"
        );
    }
    let other_user = connect(proxy.proxy_addr, MD5_USER, Some(MD5_PASSWORD))
        .await
        .unwrap();
    for _ in 0..2 {
        let sql = "SELECT current_user::text";
        assert_eq!(value(a.simple_query(sql).await.unwrap()), TRUST_USER);
        assert_eq!(value(other_user.simple_query(sql).await.unwrap()), MD5_USER);
    }
    // Every second round was a hit of the session's own entry.
    let admin = proxy.admin_addr.unwrap();
    assert_eq!(counter(admin, "cache_sp", "cache_hits").await, 2);
    assert_eq!(counter(admin, "cache_tz", "cache_hits").await, 2);
    assert_eq!(counter(admin, "current_user", "cache_hits").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_once_committed_and_volatile_or_locking_reads_are_never_cached() {
    table("cache_w", "(1, 'old')");
    let proxy = proxy(&caching_rule("cache_w", ""), |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let reader = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let writer = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let read = || async {
        let row = reader
            .query_one("SELECT v FROM cache_w WHERE id = 1", &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(read().await, "old");
    assert_eq!(read().await, "old");
    assert_eq!(counter(admin, "cache_w where id", "cache_hits").await, 1);

    // Inside an open transaction the write is not visible to others, cached or not.
    writer
        .batch_execute("BEGIN; UPDATE cache_w SET v = 'new' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(read().await, "old");
    // The writer's own transaction never reads from the cache.
    let own = writer
        .query_one("SELECT v FROM cache_w WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(own.get::<_, String>(0), "new");
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(read().await, "new", "the commit must invalidate the entry");

    // An autocommit write through pgward invalidates at once.
    writer
        .execute("UPDATE cache_w SET v = 'newer' WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(read().await, "newer");
    let stats = query_stats(admin, "cache_w where id").await;
    assert!(
        stats["cache_miss_reasons"]["invalidated"].as_u64() >= Some(1),
        "{stats}"
    );

    // A write that bypasses pgward needs the admin endpoint.
    shared().psql("UPDATE cache_w SET v = 'direct' WHERE id = 1");
    assert_eq!(read().await, "newer");
    let (status, _) = http(admin, "POST", "/cache/invalidate?table=cache_w", None).await;
    assert_eq!(status, 200);
    assert_eq!(read().await, "direct");

    for sql in [
        "SELECT v, now() FROM cache_w WHERE id = 1",
        "SELECT v FROM cache_w WHERE id = 1 FOR UPDATE",
    ] {
        for _ in 0..3 {
            reader.simple_query(sql).await.unwrap();
        }
    }
    let volatile = query_stats(admin, "now()").await;
    assert_eq!(volatile["cache_hits"], 0, "{volatile}");
    assert_eq!(volatile["cache_miss_reasons"]["volatile"], 3, "{volatile}");
    let locking = query_stats(admin, "for update").await;
    assert_eq!(locking["cache_hits"], 0, "{locking}");
    assert_eq!(locking["cache_miss_reasons"]["locking"], 3, "{locking}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_run_upstream_once() {
    shared().psql(
        "DROP SEQUENCE IF EXISTS cache_sf_runs; CREATE SEQUENCE cache_sf_runs; \
         GRANT ALL ON SEQUENCE cache_sf_runs TO PUBLIC; \
         CREATE OR REPLACE FUNCTION cache_sf_slow(x int) RETURNS int LANGUAGE plpgsql STABLE AS \
         $$ BEGIN PERFORM nextval('cache_sf_runs'); PERFORM pg_sleep(0.5); RETURN x * 2; END $$;",
    );
    // A user function is cached only when the DBA vouches for it.
    let proxy = proxy(&caching_rule("cache_sf_slow", "budget = \"10s\""), |c| {
        c.cache.stable_functions = vec!["cache_sf_slow".into()];
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap());
    }
    let runs = clients.iter().map(|c| async move {
        let rows = c.simple_query("SELECT cache_sf_slow(21)").await.unwrap();
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default()
    });
    let answers = futures_util::future::join_all(runs).await;
    assert!(answers.iter().all(|a| a == "42"), "{answers:?}");
    let executions = shared().psql("SELECT last_value FROM cache_sf_runs");
    assert_eq!(executions.trim(), "1", "upstream executions");
    let stats = query_stats(proxy.admin_addr.unwrap(), "cache_sf_slow").await;
    assert_eq!(stats["calls"], 50, "{stats}");
    assert_eq!(stats["cache_fills"], 1, "{stats}");
    assert_eq!(stats["cache_hits"], 49, "{stats}");
    assert_eq!(stats["cache_coalesced_waits"], 49, "{stats}");
    // No waiter gave up on the fill at fill_wait and ran the statement itself.
    let gave_up = stats["cache_miss_reasons"]["fill_wait"].as_u64();
    assert_eq!(gave_up.unwrap_or(0), 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_gets_the_stale_result_with_a_notice() {
    table("cache_stale", "(1, 'good')");
    let rule = caching_rule(
        "cache_stale",
        "budget = \"300ms\"\ncache.ttl = \"200ms\"\ncache.stale_for = \"1m\"\ncache.refresh = \"blocking\"\non_budget_exceeded = \"serve_stale\"",
    );
    let proxy = proxy(&rule, |_| {}).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let sql = "SELECT v FROM cache_stale WHERE id = 1";
    let fresh = simple(&mut raw, sql).await;
    // Time passing is the precondition: the entry must be past its 200 ms ttl. A sleep cannot
    // end early, and a loaded machine only makes it longer.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Make Postgres slow for this table: a lock held by a direct session.
    let locker = lock_table("cache_stale").await;

    // The lock is held until after this answer, so only the budget can end the wait; the
    // bound only turns a missing budget into a clear failure instead of the read timeout.
    let stale = tokio::time::timeout(HANG_BOUND, simple(&mut raw, sql))
        .await
        .expect("no answer while the table was locked: the budget never served the stale entry");
    locker.batch_execute("ROLLBACK").await.unwrap();
    let notice = stale
        .iter()
        .find(|(t, _)| *t == b'N')
        .unwrap_or_else(|| panic!("no NOTICE in {stale:?}"));
    let text = field(&notice.1, b'M');
    assert!(
        text.contains("served a cached result") && text.contains("budget"),
        "{text}"
    );
    let without_notice: Vec<_> = stale.into_iter().filter(|(t, _)| *t != b'N').collect();
    assert_eq!(
        without_notice, fresh,
        "the stale answer is the cached result"
    );
    let admin = proxy.admin_addr.unwrap();
    let stats = query_stats(admin, "cache_stale").await;
    assert_eq!(stats["stale_served"], 1, "{stats}");
    assert_eq!(stats["budget_exceeded"], 1, "{stats}");
    // The session is still usable, and once the lock is gone the detached query stores a
    // fresh entry.
    let again = simple(&mut raw, "SELECT 1").await;
    assert_eq!(again.last().map(|(t, _)| *t), Some(b'Z'));
    await_counter(admin, "cache_stale", "cache_fills", 2).await;
    assert_eq!(counter(admin, "cache_stale", "errors").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flood_stays_within_max_size_and_the_admin_endpoints_report_it() {
    let max = 64 * 1024;
    let proxy = proxy(&caching_rule("generate_series", ""), |c| {
        c.cache.max_size = pgward::units::ByteSize(max);
    })
    .await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    for i in 0..400 {
        client
            .simple_query(&format!(
                "SELECT repeat('x', 500) FROM generate_series(1, {i} % 3 + 1)"
            ))
            .await
            .unwrap();
    }
    let (status, body) = http(admin, "GET", "/cache?limit=3", None).await;
    assert_eq!(status, 200, "{body}");
    let cache: Value = serde_json::from_str(&body).unwrap();
    let size = cache["size_bytes"].as_u64().unwrap();
    assert!(size > 0 && size <= max, "{body}");
    assert!(cache["evictions"].as_u64().unwrap() > 0, "{body}");
    assert!(cache["largest"].as_array().unwrap().len() <= 3, "{body}");
    assert!(
        !body.contains("xxxxx"),
        "GET /cache must not show values: {body}"
    );

    let (_, metrics) = http(admin, "GET", "/metrics", None).await;
    assert!(metrics.contains("pgward_cache_size_bytes "), "{metrics}");
    assert!(
        metrics.contains("pgward_query_cache_hits_total{"),
        "{metrics}"
    );

    let (status, _) = http(admin, "POST", "/cache/invalidate?all", None).await;
    assert_eq!(status, 200);
    let (status, body) = http(admin, "POST", "/cache/invalidate?table=a&all", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(admin, "POST", "/cache/invalidate?fingerprint=nothex", None).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_is_served_at_once_while_it_refreshes_in_the_background() {
    table("cache_swr", "(1, 'first')");
    let rule = caching_rule(
        "cache_swr",
        "budget = \"5s\"\ncache.ttl = \"200ms\"\ncache.stale_for = \"1m\"\ncache.invalidate = \"ttl\"",
    );
    let proxy = proxy(&rule, |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let sql = "SELECT v FROM cache_swr WHERE id = 1";
    let first = simple(&mut raw, sql).await;
    shared().psql("UPDATE cache_swr SET v = 'second' WHERE id = 1");
    // Time passing is the precondition: the entry must be past its 200 ms ttl. A sleep cannot
    // end early, and a loaded machine only makes it longer.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Postgres is made slow for this table; the expired entry still answers. The lock is held
    // until after these answers, so none of them can have waited for PostgreSQL (that wait
    // would end at the 5 s budget with an error, not with the entry).
    let locker = lock_table("cache_swr").await;
    for _ in 0..3 {
        let answer = simple(&mut raw, sql).await;
        assert_eq!(answer, first, "the stale entry, without a notice");
    }
    let blocked = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query = '{sql}'"
    );
    let what = "the background refresh to wait for the lock upstream";
    eventually(what, async || shared().psql(&blocked), |n| n == "1").await;
    let stats = query_stats(admin, "cache_swr").await;
    assert_eq!(stats["cache_refreshes"], 1, "{stats}");
    assert_eq!(
        stats["cache_fills"], 1,
        "the refresh is still blocked: {stats}"
    );
    assert_eq!(stats["budget_exceeded"], 0, "{stats}");
    locker.batch_execute("ROLLBACK").await.unwrap();

    // The background refresh stores the new value.
    let refreshed = "the background refresh to store 'second'";
    let new_value = |answer: &Vec<(u8, Vec<u8>)>| {
        answer
            .iter()
            .any(|(t, b)| *t == b'D' && b.ends_with(b"second"))
    };
    eventually(refreshed, async || simple(&mut raw, sql).await, new_value).await;
    let stats = query_stats(admin, "cache_swr").await;
    assert_eq!(stats["cache_fills"], 2, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_miss_over_budget_errors_but_still_fills_the_cache_in_the_background() {
    shared().psql(
        "CREATE OR REPLACE FUNCTION cache_cold_slow(x int) RETURNS int LANGUAGE plpgsql STABLE AS \
         $$ BEGIN PERFORM pg_sleep(0.5); RETURN x + 1; END $$;",
    );
    let rule = caching_rule(
        "cache_cold_slow",
        "budget = \"200ms\"\ncache.stale_for = \"1m\"\non_budget_exceeded = \"serve_stale\"",
    );
    let proxy = proxy(&rule, |c| {
        c.cache.stable_functions = vec!["cache_cold_slow".into()];
    })
    .await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    // Uncut, the statement would answer 42 after 0.5 s; the budget's 57014 names the rule.
    let err = client
        .simple_query("SELECT cache_cold_slow(41)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "57014");
    assert!(db_message(&err).contains("\"cached\""), "{err}");
    // The query finished in the background and its result is now the entry.
    await_counter(admin, "cache_cold_slow", "cache_fills", 1).await;
    // A hit (counted below), not a second execution.
    let rows = client
        .simple_query("SELECT cache_cold_slow(41)")
        .await
        .unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("42"));
    let stats = query_stats(admin, "cache_cold_slow").await;
    assert_eq!(
        (stats["calls"].as_u64(), stats["cache_hits"].as_u64()),
        (Some(2), Some(1)),
        "{stats}"
    );
}
