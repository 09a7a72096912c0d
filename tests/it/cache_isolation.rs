//! Cache isolation end to end (issue 11, docs/security.md "Cache isolation"): through pgward
//! against a real PostgreSQL, each case asserts the rows a client actually gets when sessions
//! differ in ways the cache key must tell apart (settings that differ only in case, settings
//! and roles changed where pgward cannot see them, volatile user functions, a write earlier in
//! the same batch, a refused Parse, declared parameter types), and that a single-flight waiter
//! is answered when the client filling the entry stops reading.

use std::net::SocketAddr;
use std::time::Duration;

use pgward::protocol::tag::backend::{DATA_ROW, ERROR_RESPONSE, READY_FOR_QUERY};
use serde_json::Value;

use crate::cache::{
    bind_message, caching_rule, counter, describe_portal_message, execute_message, extended_batch,
    parse_message, proxy, simple, sync_message, table,
};
use crate::harness::*;
use crate::rules::query_stats;
use crate::stats_http::http;

/// Bound on the waiter of case 7, only so that a broken build fails instead of hanging: three
/// times fill_wait, and below the 20 s a `Raw` read waits for one message.
const ANTI_HANG: Duration = Duration::from_secs(15);

/// The first column of every DataRow in `messages` (NULL as "NULL").
fn column0(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == DATA_ROW)
        .map(|(_, body)| {
            // Column count (2 bytes), then the first column's length (4 bytes, -1 for NULL).
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            if len < 0 {
                "NULL".to_owned()
            } else {
                String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned()
            }
        })
        .collect()
}

/// The first column of every row a tokio-postgres simple query returned.
async fn values(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").into()),
            _ => None,
        })
        .collect()
}

/// How often statements like `needle` missed the cache for `reason`.
async fn misses(admin: SocketAddr, needle: &str, reason: &str) -> u64 {
    query_stats(admin, needle).await["cache_miss_reasons"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// `GET /cache`.
async fn cache_state(admin: SocketAddr) -> Value {
    let (status, body) = http(admin, "GET", "/cache?limit=0", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn trust_client(proxy: &pgward::Running) -> tokio_postgres::Client {
    connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap()
}

/// Case 7. A client sends a cached query with a large result and never reads its answer: the
/// fill it leads cannot end (pgward stops reading PostgreSQL once the client's socket is
/// full). A second client's identical query waits for that fill, but only for fill_wait
/// (5 s, for a rule without a budget), then runs upstream itself and gets its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_07_a_single_flight_waiter_is_answered_when_the_filling_client_stops_reading() {
    let rule = caching_rule("cache_iso7", "cache.max_entry_size = \"128MiB\"");
    let proxy = proxy(&rule, |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    // About 48 MB of rows: more than the sockets on the way can hold.
    let rows = 48_000;
    let sql =
        format!("SELECT n, repeat('x', 1000) FROM generate_series(1, {rows}) AS cache_iso7(n)");

    // The stalled client: a small receive buffer (no autotuning), and it never reads after
    // sending the query.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stalled = Raw {
        stream: socket.connect(proxy.proxy_addr).await.unwrap(),
    };
    stalled
        .send(&startup_bytes(&[
            ("user", TRUST_USER),
            ("database", "postgres"),
        ]))
        .await;
    let hello = stalled.read_until_ready().await;
    assert_eq!(hello.last().map(|(t, _)| *t), Some(READY_FOR_QUERY));
    stalled.send(&query_message(&sql)).await;
    let leading = "the stalled client's query to start its fill (fills_in_flight 1)";
    let one_fill = |cache: &Value| cache["fills_in_flight"] == 1;
    eventually(leading, async || cache_state(admin).await, one_fill).await;

    // Same user, database and startup parameters: the same key.
    let mut waiter = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let answer = tokio::time::timeout(ANTI_HANG, simple(&mut waiter, &sql))
        .await
        .expect("the waiter was never answered: its wait for the stalled fill is unbounded");
    let got = column0(&answer);
    assert_eq!(got.len(), rows, "rows the waiter got");
    assert_eq!((got[0].as_str(), got[rows - 1].as_str()), ("1", "48000"));
    assert_eq!(answer.last().map(|(t, _)| *t), Some(READY_FOR_QUERY));

    let stats = query_stats(admin, "cache_iso7").await;
    assert_eq!(stats["cache_coalesced_waits"], 1, "it waited: {stats}");
    assert_eq!(
        stats["cache_miss_reasons"]["fill_wait"], 1,
        "then ran upstream itself: {stats}"
    );
    assert_eq!(stats["cache_hits"], 0, "{stats}");
    // The stalled fill is still running: the waiter was not released by it ending.
    assert_eq!(cache_state(admin).await["fills_in_flight"], 1);
    drop(stalled);
}

/// Case 9. `SET search_path = "CacheIso9"` and `= "cacheiso9"` name two schemas whose tables of
/// the same name hold different rows: each session gets its own schema's rows, hit or miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_09_search_paths_differing_only_in_case_get_their_own_schemas_rows() {
    shared().psql(
        "DROP SCHEMA IF EXISTS \"CacheIso9\" CASCADE; DROP SCHEMA IF EXISTS cacheiso9 CASCADE; \
         CREATE SCHEMA \"CacheIso9\"; CREATE SCHEMA cacheiso9; \
         CREATE TABLE \"CacheIso9\".cache_iso9 (v text); \
         INSERT INTO \"CacheIso9\".cache_iso9 VALUES ('from CacheIso9'); \
         CREATE TABLE cacheiso9.cache_iso9 (v text); \
         INSERT INTO cacheiso9.cache_iso9 VALUES ('from cacheiso9'); \
         GRANT USAGE ON SCHEMA \"CacheIso9\", cacheiso9 TO PUBLIC; \
         GRANT SELECT ON ALL TABLES IN SCHEMA \"CacheIso9\", cacheiso9 TO PUBLIC; \
         DROP TABLE IF EXISTS public.cache_iso9; CREATE TABLE public.cache_iso9 (v text); \
         INSERT INTO public.cache_iso9 VALUES ('from public'); \
         GRANT SELECT ON public.cache_iso9 TO PUBLIC;",
    );
    let proxy = proxy(&caching_rule("cache_iso9", ""), |_| {}).await;
    let upper = trust_client(&proxy).await;
    let lower = trust_client(&proxy).await;
    upper
        .batch_execute("SET search_path = \"CacheIso9\"")
        .await
        .unwrap();
    lower
        .batch_execute("SET search_path = \"cacheiso9\"")
        .await
        .unwrap();
    let sql = "SELECT v FROM cache_iso9";
    for round in 0..2 {
        assert_eq!(
            values(&upper, sql).await,
            ["from CacheIso9"],
            "round {round}"
        );
        assert_eq!(
            values(&lower, sql).await,
            ["from cacheiso9"],
            "round {round}"
        );
    }
    // DISCARD TEMP resets no setting: still the session's own schema, not the startup
    // search_path's.
    let default = trust_client(&proxy).await;
    assert_eq!(values(&default, sql).await, ["from public"]);
    lower.batch_execute("DISCARD TEMP").await.unwrap();
    assert_eq!(values(&lower, sql).await, ["from cacheiso9"]);
    // One entry per search_path, hit by its own sessions only.
    let stats = query_stats(proxy.admin_addr.unwrap(), "cache_iso9").await;
    assert_eq!(stats["cache_fills"], 3, "{stats}");
    assert_eq!(stats["cache_hits"], 3, "{stats}");
}

/// Case 10. Row-level security on `current_setting('app.tenant')`, read by a role that is not
/// the table's owner: tenants `'ABC'` and `'abc'` each get only their own row, and a session
/// with no tenant gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_10_tenants_differing_only_in_case_never_get_each_others_rows() {
    shared().psql(
        "DROP TABLE IF EXISTS cache_iso10; CREATE TABLE cache_iso10 (tenant text, v text); \
         INSERT INTO cache_iso10 VALUES ('ABC', 'row of ABC'), ('abc', 'row of abc'); \
         ALTER TABLE cache_iso10 ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY cache_iso10_tenant ON cache_iso10 \
           USING (tenant = current_setting('app.tenant', true)); \
         GRANT SELECT ON cache_iso10 TO PUBLIC;",
    );
    let proxy = proxy(&caching_rule("cache_iso10", ""), |_| {}).await;
    let upper = trust_client(&proxy).await;
    let lower = trust_client(&proxy).await;
    let nobody = trust_client(&proxy).await;
    upper.batch_execute("SET app.tenant = 'ABC'").await.unwrap();
    lower.batch_execute("SET app.tenant = 'abc'").await.unwrap();
    let sql = "SELECT v FROM cache_iso10";
    for round in 0..2 {
        assert_eq!(values(&upper, sql).await, ["row of ABC"], "round {round}");
        assert_eq!(values(&lower, sql).await, ["row of abc"], "round {round}");
        assert!(values(&nobody, sql).await.is_empty(), "round {round}");
    }
    let stats = query_stats(proxy.admin_addr.unwrap(), "cache_iso10").await;
    assert_eq!(stats["cache_fills"], 3, "{stats}");
    assert_eq!(stats["cache_hits"], 3, "{stats}");
}

/// Case 11. Settings changed where pgward cannot follow them: a function that calls
/// set_config(), and a `DO` block that runs `SET ROLE`. The session stops using the cache, so
/// its rows are never stored under (or served from) the key of a session set up differently.
/// `RESET ALL` leaves the role as it is in PostgreSQL, so it does not make such a session
/// (nor one after a plain `SET ROLE`) share the role-less key again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_11_settings_and_roles_changed_unseen_never_leak_rows() {
    shared().psql(&format!(
        "DO $$ BEGIN CREATE ROLE cache_iso_alice; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         GRANT cache_iso_alice TO {TRUST_USER}; \
         DROP TABLE IF EXISTS cache_iso11_t; CREATE TABLE cache_iso11_t (tenant text, v text); \
         INSERT INTO cache_iso11_t VALUES ('t1', 'row of t1'); \
         ALTER TABLE cache_iso11_t ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY cache_iso11_tenant ON cache_iso11_t \
           USING (tenant = current_setting('app.tenant', true)); \
         DROP TABLE IF EXISTS cache_iso11_r; CREATE TABLE cache_iso11_r (owner name, v text); \
         INSERT INTO cache_iso11_r VALUES ('cache_iso_alice', 'row of alice'), \
           ('{TRUST_USER}', 'row of {TRUST_USER}'); \
         ALTER TABLE cache_iso11_r ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY cache_iso11_owner ON cache_iso11_r USING (owner = current_user); \
         GRANT SELECT ON cache_iso11_t, cache_iso11_r TO PUBLIC; \
         CREATE OR REPLACE FUNCTION iso11_enter(t text) RETURNS text LANGUAGE sql \
           AS $f$ SELECT set_config('app.tenant', t, false) $f$;"
    ));
    let proxy = proxy(&caching_rule("cache_iso11", ""), |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let plain = trust_client(&proxy).await;

    // set_config() inside a function: the tenant changes without a SET pgward could see.
    let tenants = "SELECT v FROM cache_iso11_t";
    assert!(values(&plain, tenants).await.is_empty());
    let entered = trust_client(&proxy).await;
    assert_eq!(values(&entered, "SELECT iso11_enter('t1')").await, ["t1"]);
    for round in 0..2 {
        assert_eq!(
            values(&entered, tenants).await,
            ["row of t1"],
            "round {round}"
        );
        assert!(values(&plain, tenants).await.is_empty(), "round {round}");
    }
    assert_eq!(misses(admin, "cache_iso11_t", "session_state").await, 2);

    // SET ROLE inside DO.
    let owners = "SELECT v FROM cache_iso11_r";
    let own_row = format!("row of {TRUST_USER}");
    assert_eq!(values(&plain, owners).await, [own_row.as_str()]);
    let alice = trust_client(&proxy).await;
    alice
        .batch_execute("DO $$ BEGIN EXECUTE 'SET ROLE cache_iso_alice'; END $$")
        .await
        .unwrap();
    for round in 0..2 {
        assert_eq!(
            values(&alice, owners).await,
            ["row of alice"],
            "round {round}"
        );
        assert_eq!(
            values(&plain, owners).await,
            [own_row.as_str()],
            "round {round}"
        );
    }
    // RESET ALL does not reset the role: still alice, still off the cache.
    alice.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(values(&alice, owners).await, ["row of alice"]);
    // Nor after a plain SET ROLE, which pgward follows.
    let set_role = trust_client(&proxy).await;
    set_role
        .batch_execute("SET ROLE cache_iso_alice; RESET ALL")
        .await
        .unwrap();
    assert_eq!(values(&set_role, owners).await, ["row of alice"]);
    assert_eq!(values(&plain, owners).await, [own_row.as_str()]);
    // DISCARD ALL does reset the role: the session shares the plain key again.
    alice.batch_execute("DISCARD ALL").await.unwrap();
    let hits = counter(admin, "cache_iso11_r", "cache_hits").await;
    assert_eq!(values(&alice, owners).await, [own_row.as_str()]);
    assert_eq!(
        counter(admin, "cache_iso11_r", "cache_hits").await,
        hits + 1
    );
}

/// Case 12. A user-defined VOLATILE function that writes: `SELECT bump() FROM t` under a
/// caching rule runs every time and is never answered from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_12_a_volatile_user_function_runs_every_time() {
    shared().psql(
        "DROP TABLE IF EXISTS cache_iso12; CREATE TABLE cache_iso12 (id int); \
         INSERT INTO cache_iso12 VALUES (1); \
         DROP TABLE IF EXISTS cache_iso12_runs; CREATE TABLE cache_iso12_runs (n int); \
         INSERT INTO cache_iso12_runs VALUES (0); \
         GRANT ALL ON cache_iso12, cache_iso12_runs TO PUBLIC; \
         CREATE OR REPLACE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE \
           AS $$ UPDATE cache_iso12_runs SET n = n + 1 RETURNING n $$;",
    );
    let proxy = proxy(&caching_rule("cache_iso12", ""), |_| {}).await;
    let client = trust_client(&proxy).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.extend(values(&client, "SELECT bump() FROM cache_iso12").await);
    }
    assert_eq!(answers, ["1", "2", "3"]);
    assert_eq!(shared().psql("SELECT n FROM cache_iso12_runs"), "3");
    let stats = query_stats(proxy.admin_addr.unwrap(), "bump()").await;
    assert_eq!(stats["cache_hits"], 0, "{stats}");
    assert_eq!(stats["cache_fills"], 0, "{stats}");
    assert_eq!(
        stats["cache_miss_reasons"]["unknown_function"], 3,
        "{stats}"
    );
}

/// Case 13. One extended-protocol batch `UPDATE ...; SELECT ...; Sync` after the SELECT was
/// cached: the SELECT gets the row as the UPDATE left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_13_a_select_after_an_update_in_the_same_batch_sees_the_update() {
    table("cache_iso13", "(1, 'old')");
    let proxy = proxy(&caching_rule("cache_iso13", ""), |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let select = "SELECT v FROM cache_iso13 WHERE id = $1";
    for _ in 0..2 {
        raw.send(&extended_batch(select, "1", 0)).await;
        assert_eq!(column0(&raw.read_until_ready().await), ["old"]);
    }
    assert_eq!(counter(admin, "cache_iso13 where", "cache_hits").await, 1);

    let batch = [
        parse_message("", "UPDATE cache_iso13 SET v = 'new' WHERE id = $1", &[]),
        bind_message("", &["1"], 0),
        execute_message(),
        parse_message("", select, &[]),
        bind_message("", &["1"], 0),
        describe_portal_message(),
        execute_message(),
        sync_message(),
    ]
    .concat();
    raw.send(&batch).await;
    let answer = raw.read_until_ready().await;
    let tags: Vec<u8> = answer.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"12C12TDCZ", "{answer:?}");
    assert_eq!(column0(&answer), ["new"], "the SELECT after the UPDATE");
    assert_eq!(counter(admin, "cache_iso13 where", "cache_hits").await, 1);
    assert_eq!(
        misses(admin, "cache_iso13 where", "unsettled_write").await,
        1
    );

    // Committed at the Sync: the old entry is gone for the next batch too.
    raw.send(&extended_batch(select, "1", 0)).await;
    assert_eq!(column0(&raw.read_until_ready().await), ["new"]);
}

/// Case 14. A Parse PostgreSQL refuses (42P05, the name is taken) leaves the name meaning the
/// statement it meant before, so the cache never stores one statement's rows under another's
/// key: other sessions get their own rows. And the parameter type OIDs a Parse declares are
/// part of the key: the same text with other declared types is another entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_14_a_refused_parse_and_declared_parameter_types_never_mix_entries() {
    table("cache_iso14_a", "(1, 'a one')");
    table("cache_iso14_b", "(1, 'b one')");
    let proxy = proxy(&caching_rule("cache_iso14", ""), |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let tags = |messages: &[(u8, Vec<u8>)]| messages.iter().map(|(t, _)| *t).collect::<Vec<u8>>();
    let (read_a, read_b) = (
        "SELECT v FROM cache_iso14_a WHERE id = $1",
        "SELECT v FROM cache_iso14_b WHERE id = $1",
    );

    let mut first = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    first
        .send(&[parse_message("s14", read_a, &[]), sync_message()].concat())
        .await;
    assert_eq!(tags(&first.read_until_ready().await), b"1Z");
    first
        .send(&[parse_message("s14", read_b, &[]), sync_message()].concat())
        .await;
    let refused = first.read_until_ready().await;
    assert_eq!(
        tags(&refused),
        [ERROR_RESPONSE, READY_FOR_QUERY],
        "{refused:?}"
    );
    assert_eq!(sqlstate(&refused[0].1), "42P05");
    // s14 is still the statement on cache_iso14_a, for PostgreSQL and for the cache.
    let execute_s14 = [
        bind_message("s14", &["1"], 0),
        describe_portal_message(),
        execute_message(),
        sync_message(),
    ]
    .concat();
    for _ in 0..2 {
        first.send(&execute_s14).await;
        assert_eq!(column0(&first.read_until_ready().await), ["a one"]);
    }

    // Another session with the same user and startup parameters: the same keys.
    let mut other = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    for (sql, row) in [(read_b, "b one"), (read_b, "b one"), (read_a, "a one")] {
        other.send(&extended_batch(sql, "1", 0)).await;
        assert_eq!(column0(&other.read_until_ready().await), [row], "{sql}");
    }
    assert_eq!(counter(admin, "cache_iso14_a where", "cache_hits").await, 2);
    assert_eq!(counter(admin, "cache_iso14_b where", "cache_hits").await, 1);

    // Same text, declared int4 (23) in one session and text (25) in another.
    let typed = "SELECT pg_typeof($1)::text FROM cache_iso14_a WHERE id = 1";
    let run = |types: &'static [u32]| {
        [
            parse_message("", typed, types),
            bind_message("", &["7"], 0),
            describe_portal_message(),
            execute_message(),
            sync_message(),
        ]
        .concat()
    };
    let mut int_session = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let mut text_session = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    for round in 0..2 {
        int_session.send(&run(&[23])).await;
        let int = int_session.read_until_ready().await;
        assert_eq!(column0(&int), ["integer"], "round {round}");
        text_session.send(&run(&[25])).await;
        let text = text_session.read_until_ready().await;
        assert_eq!(column0(&text), ["text"], "round {round}");
    }
    let stats = query_stats(admin, "pg_typeof").await;
    assert_eq!(stats["cache_fills"], 2, "{stats}");
    assert_eq!(stats["cache_hits"], 2, "{stats}");
}
