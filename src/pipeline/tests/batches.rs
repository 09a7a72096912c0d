//! Extended-protocol batches: after an error the rest of a batch is skipped up to its Sync (as
//! PostgreSQL does), also the answers pgward queued in it, and pipelined batches with a cache
//! hit among them reach the client in the order the client asked.

use super::*;

const REJECT_DELETE: &str = r#"
[[rule]]
name = "no-audit-delete"
match.pattern = '^delete from audit'
action = "reject"
message = "the audit log is append-only"
"#;

#[test]
fn after_pgwards_own_error_the_batch_is_skipped_up_to_its_sync() {
    let shared = shared(REJECT_DELETE);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let sql = "delete from audit where id = $1";
    s.send(&batch(sql, &["1"]), t0);
    assert_wire!(s.take_upstream(), sync(), "only the Sync goes upstream");
    let id = fp(&shared, sql);
    let rejected = error(
        Severity::Error,
        "42501",
        "the audit log is append-only",
        &format!("rejected by pgward rule \"no-audit-delete\" (fingerprint {id})"),
        None,
    );
    assert_wire!(
        s.take_client(),
        rejected,
        "the error at once, its ReadyForQuery from PostgreSQL"
    );
    s.backend(&[ready()], t0 + ms(1));
    assert_wire!(s.take_client(), ready());
    assert!(!s.pipeline.busy());
    // The next batch runs in full.
    let next = batch("select * from audit where id = $1", &["1"]);
    s.send(&next, t0 + ms(2));
    assert_wire!(s.take_upstream(), next.concat());
}

/// A rule caching `ITEMS` (also used by `held.rs`).
pub(super) const ITEMS_CACHED: &str = r#"
[[rule]]
name = "items"
match.pattern = '^select\*from items'
cache.ttl = "10m"
"#;

/// An extended-protocol statement `ITEMS_CACHED` caches.
pub(super) const ITEMS: &str = "select * from items where id = $1";

/// Fills the cache with the extended-protocol result of `ITEMS` for id 1; returns that result
/// (rows and completion: what a hit answers an Execute with).
fn fill_extended(s: &mut Session, t0: Instant) -> Vec<u8> {
    s.send(&batch(ITEMS, &["1"]), t0);
    assert_wire!(s.take_upstream(), batch(ITEMS, &["1"]).concat());
    let rows = [data_row(&["1", "lamp"]), complete("SELECT 1")].concat();
    let answer = [parse_complete(), bind_complete(), rows.clone(), ready()].concat();
    s.backend(&frames(&answer), t0 + ms(5));
    assert_wire!(s.take_client(), answer);
    rows
}

#[test]
fn pipelined_batches_with_a_cache_hit_in_the_middle_answer_in_order() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let cached_rows = fill_extended(&mut s, t0);
    // Three batches at once; the middle one's Execute is a hit.
    let first = batch("select * from alpha where id = $1", &["1"]);
    let hit = batch(ITEMS, &["1"]);
    let last = batch("select * from gamma where id = $1", &["1"]);
    s.send(
        &[first.clone(), hit.clone(), last.clone()].concat(),
        t0 + ms(10),
    );
    assert_wire!(
        s.take_upstream(),
        [first.concat(), last.concat()].concat(),
        "the hit's batch sends PostgreSQL nothing; the others go in order"
    );
    assert!(
        s.take_client().is_empty(),
        "the hit waits for the answers before it"
    );
    let a = [
        parse_complete(),
        bind_complete(),
        data_row(&["a"]),
        complete("SELECT 1"),
        ready(),
    ];
    let c = [
        parse_complete(),
        bind_complete(),
        data_row(&["c"]),
        complete("SELECT 1"),
        ready(),
    ];
    s.backend(&[&a[..], &c[..]].concat(), t0 + ms(20));
    let expected = [
        a.concat(),
        parse_complete(),
        bind_complete(),
        cached_rows,
        ready(),
        c.concat(),
    ]
    .concat();
    assert_eq!(tags(&s.client), tags(&expected));
    assert_wire!(s.take_client(), expected);
    assert!(!s.pipeline.busy());
}

#[test]
fn a_postgres_error_in_a_batch_drops_the_cache_hit_queued_after_it() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    fill_extended(&mut s, t0);
    // One batch: a statement PostgreSQL fails, then a hit, then the Sync.
    let broken = "select * from missing where id = $1";
    let mut frames_sent = batch(broken, &["1"]);
    frames_sent.pop();
    frames_sent.extend(batch(ITEMS, &["1"]));
    s.send(&frames_sent, t0 + ms(10));
    assert!(s.take_client().is_empty());
    let answer = [
        parse_complete(),
        bind_complete(),
        pg_error("42P01", "relation \"missing\" does not exist"),
        ready(),
    ];
    s.backend(&answer, t0 + ms(20));
    assert_wire!(
        s.take_client(),
        answer.concat(),
        "PostgreSQL skipped the rest of the batch, so the hit is not answered either"
    );
    assert!(!s.pipeline.busy());
}

const CAPPED: &str = r#"
[[rule]]
name = "report"
match.pattern = '^select\*from report'
max_concurrency = 1
queue_timeout = "50ms"
"#;

/// Without a caching rule pgward does not follow the answers to Parse and Bind; its own
/// error for an Execute must still come after them, where PostgreSQL would have put it.
#[tokio::test(start_paused = true)]
async fn a_shed_execute_is_answered_after_its_parse_and_bind() {
    let shared = shared(CAPPED);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query("select * from report")], t0);
    let sql = "select * from report where id = $1";
    b.send(&batch(sql, &["1"]), t0);
    assert!(b.still_waiting(), "the Execute waits for the slot");
    assert!(!b.pass_gate(t0 + ms(50)).await);
    let sent = batch(sql, &["1"]);
    assert_wire!(
        b.take_upstream(),
        [&sent[..2], &sent[3..]].concat().concat()
    );
    b.backend(&[parse_complete(), bind_complete(), ready()], t0 + ms(51));
    let id = fp(&shared, sql);
    let shed = error(
        Severity::Error,
        "53000",
        "pgward: too many concurrent statements for rule \"report\": no slot of 1 free within 50ms",
        &format!("fingerprint {id}"),
        Some(
            "Retry later; the rule's max_concurrency protects the database from this query family.",
        ),
    );
    assert_wire!(
        b.take_client(),
        [parse_complete(), bind_complete(), shed, ready()].concat()
    );
}

/// The same for a Parse pgward rejects after another Parse of the same batch.
#[test]
fn a_rejected_parse_is_answered_after_the_parse_before_it() {
    let shared = shared(REJECT_DELETE);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let sql = "delete from audit where id = $1";
    let frames_sent = [
        parse("s1", "select * from audit where id = $1"),
        parse("s2", sql),
        sync(),
    ];
    s.send(&frames_sent, t0);
    assert_wire!(s.take_upstream(), [frames_sent[0].clone(), sync()].concat());
    s.backend(&[parse_complete(), ready()], t0 + ms(1));
    let id = fp(&shared, sql);
    let rejected = error(
        Severity::Error,
        "42501",
        "the audit log is append-only",
        &format!("rejected by pgward rule \"no-audit-delete\" (fingerprint {id})"),
        None,
    );
    assert_wire!(
        s.take_client(),
        [parse_complete(), rejected, ready()].concat()
    );
}

#[test]
fn pipelined_simple_queries_with_a_cache_hit_in_the_middle_answer_in_order() {
    let shared = shared(ITEMS_CACHED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    let items = "select * from items where id = 1";
    let result = [
        row_description(&["id"]),
        data_row(&["1"]),
        complete("SELECT 1"),
    ]
    .concat();
    s.send(&[query(items)], t0);
    s.backend(&frames(&[result.clone(), ready()].concat()), t0 + ms(5));
    s.take_upstream();
    s.take_client();
    let (first, last) = (query("select * from alpha"), query("select * from gamma"));
    s.send(&[first.clone(), query(items), last.clone()], t0 + ms(10));
    assert_wire!(s.take_upstream(), [first, last].concat());
    assert!(
        s.take_client().is_empty(),
        "the hit waits for the answer before it"
    );
    let a = [row_description(&["a"]), complete("SELECT 0"), ready()].concat();
    let c = [row_description(&["c"]), complete("SELECT 0"), ready()].concat();
    s.backend(&frames(&[a.clone(), c.clone()].concat()), t0 + ms(20));
    assert_wire!(s.take_client(), [a, result, ready(), c].concat());
    assert!(!s.pipeline.busy());
}

/// An extended-protocol statement under the default budget; `extra` adds rules.
fn default_budget(extra: &str) -> String {
    format!("[defaults]\nbudget = \"200ms\"\n{extra}")
}

/// A caching rule that does not match the statement the budget tests run.
const SOME_RULE_CACHES: &str = r#"
[[rule]]
name = "items"
match.pattern = '^select\*from items'
cache.ttl = "10m"
"#;

/// PostgreSQL flushes its answers to Parse and Bind only when the batch ends: a batch of
/// Parse/Bind/Execute/Sync of `select pg_sleep(2)` sent to PostgreSQL 15 got ParseComplete,
/// BindComplete, DataRow, CommandComplete and ReadyForQuery all at 2.006s. So the budget must
/// run while those answers are still owed.
fn budget_of_an_unanswered_batch(rules: &str) -> Tick {
    let shared = shared(rules);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(&batch("select pg_sleep(10)", &[]), t0);
    assert_wire!(
        s.take_upstream(),
        batch("select pg_sleep(10)", &[]).concat()
    );
    s.tick(t0 + ms(200))
}

#[test]
fn an_execute_budget_runs_while_parse_and_bind_are_unanswered() {
    let tick = budget_of_an_unanswered_batch(&default_budget(""));
    assert!(matches!(tick, Tick::Cancel { .. }), "{tick:?}");
}

#[test]
fn an_execute_budget_runs_while_parse_and_bind_are_unanswered_when_some_rule_caches() {
    let tick = budget_of_an_unanswered_batch(&default_budget(SOME_RULE_CACHES));
    assert!(matches!(tick, Tick::Cancel { .. }), "{tick:?}");
}
