//! pgward owns the life of a prepared statement: cache hits in the simple, extended (unnamed)
//! and prepared (named) protocols reach PostgreSQL with no message at all — its backend's
//! pg_stat_activity (state, query, state_change) does not move across the hits — while a
//! statement pgward answered itself is parsed upstream the moment a later message needs it,
//! and SQL-level DEALLOCATE finds it there.

use crate::cache::{
    bind_message, caching_rule, cstr, describe_portal_message, execute_message, extended_batch,
    parse_message, proxy, simple, sync_message, table,
};
use crate::harness::*;
use pgward::protocol::tag::frontend::DESCRIBE;

/// What PostgreSQL's statistics say backend `pid` did last, to the microsecond.
fn last_activity(pid: i32) -> String {
    shared().psql(&format!(
        "SELECT state || ' ' || query || ' ' || state_change FROM pg_stat_activity WHERE pid = {pid}"
    ))
}

fn tags(messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
    messages.iter().map(|(t, _)| *t).collect()
}

fn describe_statement_message(name: &str) -> Vec<u8> {
    let mut describe = vec![b'S'];
    describe.extend(cstr(name));
    message(DESCRIBE, &describe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_in_every_protocol_send_postgres_nothing() {
    table("held_items", "(1, 'lamp'), (2, 'desk')");
    let proxy = proxy(&caching_rule("held_items", ""), |_| {}).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let pid = raw.backend_pid().await;
    let sql = "SELECT id, v FROM held_items WHERE id = $1";
    let query = "SELECT v FROM held_items WHERE id = 1";
    let unnamed = extended_batch(sql, "1", 0);
    let prepare = [parse_message("s1", sql, &[]), sync_message()].concat();
    let named = [
        bind_message("s1", &["1"], 0),
        describe_portal_message(),
        execute_message(),
        sync_message(),
    ]
    .concat();
    // The misses fill the cache.
    let simple_miss = simple(&mut raw, query).await;
    raw.send(&unnamed).await;
    let unnamed_miss = raw.read_until_ready().await;
    raw.send(&prepare).await;
    assert_eq!(tags(&raw.read_until_ready().await), b"1Z");
    raw.send(&named).await;
    let named_miss = raw.read_until_ready().await;
    assert_eq!(tags(&named_miss), b"2TDCZ", "{named_miss:?}");
    let before = last_activity(pid);
    assert!(before.starts_with("idle "), "{before}");
    for _ in 0..20 {
        assert_eq!(simple(&mut raw, query).await, simple_miss);
        raw.send(&unnamed).await;
        assert_eq!(raw.read_until_ready().await, unnamed_miss);
        raw.send(&named).await;
        assert_eq!(raw.read_until_ready().await, named_miss);
    }
    assert_eq!(
        last_activity(pid),
        before,
        "60 hits in three protocols moved PostgreSQL's backend"
    );
    let admin = proxy.admin_addr.unwrap();
    let stats = crate::rules::query_stats(admin, "select id,v from held_items where id=$1").await;
    // The named statement's first run hit the unnamed one's entry: same text, types, values.
    assert_eq!(stats["cache_hits"], 41, "{stats}");
    assert_eq!(stats["cache_fills"], 1, "{stats}");
    // A hit's latency is pgward's own time to answer it: small, but not zero (the fastest
    // call is a hit).
    let fastest = stats["min_exec_time"].as_f64().unwrap_or(0.0);
    assert!(fastest > 0.0 && fastest < 50.0, "{stats}");

    // tokio-postgres: prepare (Parse/Describe/Sync goes upstream once), then hits.
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let tp_pid = backend_pid(&client).await;
    let statement = client.prepare(sql).await.unwrap();
    let first = client.query(&statement, &[&2i32]).await.unwrap();
    assert_eq!(first[0].get::<_, Option<&str>>(1), Some("desk"));
    let before = last_activity(tp_pid);
    for _ in 0..10 {
        let rows = client.query(&statement, &[&2i32]).await.unwrap();
        assert_eq!(rows[0].get::<_, Option<&str>>(1), Some("desk"));
    }
    assert_eq!(
        last_activity(tp_pid),
        before,
        "tokio-postgres hits reached PostgreSQL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_pgward_answered_is_parsed_upstream_when_needed_there() {
    table("held_lazy", "(1, 'one'), (2, 'two')");
    let proxy = proxy(&caching_rule("held_lazy", ""), |_| {}).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let cached = "SELECT v FROM held_lazy WHERE id = $1";
    raw.send(&extended_batch(cached, "1", 0)).await;
    raw.read_until_ready().await;
    // PostgreSQL's unnamed statement becomes another one...
    raw.send(&extended_batch("SELECT 'other' || $1::text", "x", 0))
        .await;
    raw.read_until_ready().await;
    // ...while the client's becomes `cached` again, through a hit PostgreSQL never sees.
    raw.send(&extended_batch(cached, "1", 0)).await;
    let hit = raw.read_until_ready().await;
    assert_eq!(tags(&hit), b"12TDCZ");
    // A Bind of the unnamed statement alone must run `cached`, not PostgreSQL's `other`.
    raw.send(
        &[
            bind_message("", &["2"], 0),
            execute_message(),
            sync_message(),
        ]
        .concat(),
    )
    .await;
    let answer = raw.read_until_ready().await;
    assert_eq!(tags(&answer), b"2DCZ", "{answer:?}");
    assert!(
        answer[1].1.ends_with(b"two"),
        "the unnamed statement ran was not the client's: {answer:?}"
    );
    // A named statement only pgward prepared: Describe and DEALLOCATE find it upstream.
    let named = [
        parse_message("only_here", cached, &[]),
        bind_message("only_here", &["1"], 0),
        describe_portal_message(),
        execute_message(),
        sync_message(),
    ]
    .concat();
    raw.send(&named).await;
    assert_eq!(tags(&raw.read_until_ready().await), b"12TDCZ");
    raw.send(&[describe_statement_message("only_here"), sync_message()].concat())
        .await;
    assert_eq!(tags(&raw.read_until_ready().await), b"tTZ");
    raw.send(
        &[
            parse_message("only_too", cached, &[]),
            bind_message("only_too", &["1"], 0),
            execute_message(),
            sync_message(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(tags(&raw.read_until_ready().await), b"12DCZ");
    let deallocated = simple(&mut raw, "DEALLOCATE only_too").await;
    assert_eq!(tags(&deallocated), b"CZ", "{deallocated:?}");
    let gone = simple(&mut raw, "EXECUTE only_too(1)").await;
    assert_eq!(sqlstate(&gone[0].1), "26000", "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_transaction_the_extended_protocol_reaches_postgres_and_keeps_its_status() {
    table("held_tx", "(1, 'one')");
    let proxy = proxy(&caching_rule("held_tx", ""), |_| {}).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let sql = "SELECT v FROM held_tx WHERE id = $1";
    raw.send(&extended_batch(sql, "1", 0)).await;
    let outside = raw.read_until_ready().await;
    assert_eq!(outside.last().map(|m| m.1.clone()), Some(b"I".to_vec()));
    assert_eq!(tags(&simple(&mut raw, "BEGIN").await), b"CZ");
    raw.send(&extended_batch(sql, "1", 0)).await;
    let inside = raw.read_until_ready().await;
    assert_eq!(tags(&inside), b"12TDCZ");
    assert_eq!(
        inside.last().map(|m| m.1.clone()),
        Some(b"T".to_vec()),
        "{inside:?}"
    );
    // A failed statement: the transaction is failed ('E'), and so says the next batch.
    let failed = simple(&mut raw, "SELECT 1/0").await;
    assert_eq!(failed.last().map(|m| m.1.clone()), Some(b"E".to_vec()));
    raw.send(&extended_batch(sql, "1", 0)).await;
    let aborted = raw.read_until_ready().await;
    assert_eq!(sqlstate(&aborted[0].1), "25P02", "{aborted:?}");
    assert_eq!(aborted.last().map(|m| m.1.clone()), Some(b"E".to_vec()));
    assert_eq!(tags(&simple(&mut raw, "ROLLBACK").await), b"CZ");
    let admin = proxy.admin_addr.unwrap();
    let stats = crate::rules::query_stats(admin, "held_tx where id=$1").await;
    assert_eq!(
        stats["cache_hits"], 0,
        "no hit inside a transaction: {stats}"
    );
}
