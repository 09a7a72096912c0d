//! The result cache's fallbacks. A passed budget with a stale entry: the client gets the stale
//! rows while the query goes on detached to refresh the entry (or, once PostgreSQL's
//! RowDescription went out, the stale rows follow it when the cancel lands); without one, its
//! 57014 at once while the query fills the cache. A stale entry under `refresh = "background"`
//! is answered at once and refreshed detached, within a limit. A class 53 error from
//! PostgreSQL is answered with the stale rows.

use super::*;

const ITEMS: &str = "select * from items where id = 1";

fn old_result() -> Vec<Vec<u8>> {
    vec![
        row_description(&["id"]),
        data_row(&["1"]),
        complete("SELECT 1"),
    ]
}

fn new_result() -> Vec<Vec<u8>> {
    vec![
        row_description(&["id"]),
        data_row(&["1"]),
        data_row(&["1"]),
        complete("SELECT 2"),
    ]
}

/// A session whose first run of `ITEMS` at `t0` filled the cache with `old_result()`.
fn filled(rules: &str, t0: Instant) -> (Arc<Shared>, Session) {
    let shared = shared(rules);
    let mut s = Session::new(&shared);
    s.send(&[query(ITEMS)], t0);
    assert_wire!(
        s.take_upstream(),
        query(ITEMS),
        "a cold cache runs it upstream"
    );
    let answer = [old_result(), vec![ready()]].concat();
    s.backend(&answer, t0 + ms(5));
    assert_wire!(s.take_client(), answer.concat());
    // A fresh hit never goes upstream.
    s.send(&[query(ITEMS)], t0 + ms(10));
    assert!(s.take_upstream().is_empty());
    assert_wire!(s.take_client(), answer.concat());
    (shared, s)
}

/// The stored entries' row counts.
fn stored_rows(shared: &Shared) -> Vec<u64> {
    let snapshot = shared.cache.snapshot(10);
    snapshot.largest.iter().map(|e| e.rows).collect()
}

/// `bytes` is a NOTICE saying why (`because`) followed by exactly `rest`.
fn assert_stale_answer(bytes: &[u8], because: &str, rest: &[u8]) {
    let got = frames(bytes);
    assert!(!got.is_empty(), "nothing was answered");
    assert_eq!(got[0][0], be::NOTICE_RESPONSE, "{got:?}");
    let notice = text(&got[0]);
    assert!(
        notice.contains("pgward: served a cached result") && notice.contains(because),
        "{notice}"
    );
    assert_wire!(got[1..].concat(), rest);
}

const STALE_ON_BUDGET: &str = r#"
[[rule]]
name = "items"
match.pattern = '^select\*from items'
budget = "200ms"
cache.ttl = "10s"
cache.stale_for = "10m"
cache.refresh = "blocking"
on_budget_exceeded = "serve_stale"
"#;

#[test]
fn a_passed_budget_serves_the_stale_rows_and_the_query_refreshes_detached() {
    let t0 = Instant::now();
    let (shared, mut s) = filled(STALE_ON_BUDGET, t0);
    let t1 = t0 + Duration::from_secs(20);
    s.send(&[query(ITEMS)], t1);
    assert_wire!(
        s.take_upstream(),
        query(ITEMS),
        "past its ttl the entry is refreshed"
    );
    assert_eq!(s.tick(t1 + ms(199)), Tick::NotDue);
    assert_eq!(
        s.tick(t1 + ms(200)),
        Tick::Answered,
        "answered, not cancelled"
    );
    assert_stale_answer(
        &s.take_client(),
        "because the time budget of 200ms passed; the query goes on in the background",
        &[old_result(), vec![ready()]].concat().concat(),
    );
    assert_eq!(counter(&shared, ITEMS, Counter::StaleServed), 1);
    // The query goes on: everything PostgreSQL sends for it is swallowed, its result stored.
    s.backend(&[new_result(), vec![ready()]].concat(), t1 + ms(900));
    assert!(
        s.take_client().is_empty(),
        "the client already has its answer"
    );
    assert!(!s.pipeline.busy());
    assert_eq!(stored_rows(&shared), [2], "the refresh replaced the entry");
}

const BACKGROUND: &str = r#"
[[rule]]
name = "items"
match.pattern = '^select\*from items'
cache.ttl = "10s"
cache.stale_for = "10m"
"#;

#[test]
fn a_stale_entry_is_answered_at_once_and_refreshed_detached() {
    let t0 = Instant::now();
    let (shared, mut s) = filled(BACKGROUND, t0);
    let t1 = t0 + Duration::from_secs(20);
    s.send(&[query(ITEMS)], t1);
    assert_wire!(s.take_upstream(), query(ITEMS), "the refresh goes upstream");
    assert_wire!(
        s.take_client(),
        [old_result(), vec![ready()]].concat().concat(),
        "the client has the stale entry at once"
    );
    // The client goes on while the refresh runs; its next statement is answered in order.
    s.send(&[query("select 1")], t1 + ms(1));
    assert_wire!(s.take_upstream(), query("select 1"));
    // A detached refresh is bounded (its ttl here, as the rule has no budget).
    assert_eq!(s.pipeline.next_timer(), Some(t1 + Duration::from_secs(10)));
    s.backend(&[new_result(), vec![ready()]].concat(), t1 + ms(50));
    assert!(
        s.take_client().is_empty(),
        "the refresh's answer is swallowed"
    );
    assert_eq!(stored_rows(&shared), [2], "the refresh replaced the entry");
    let one = [
        row_description(&["?column?"]),
        data_row(&["1"]),
        complete("SELECT 1"),
        ready(),
    ];
    s.backend(&one, t1 + ms(60));
    assert_wire!(s.take_client(), one.concat());
    assert!(!s.pipeline.busy());
    assert_eq!(counter(&shared, ITEMS, Counter::CacheRefresh), 1);
}

#[test]
fn a_detached_refresh_past_its_limit_is_cancelled() {
    let t0 = Instant::now();
    let (_shared, mut s) = filled(BACKGROUND, t0);
    let t1 = t0 + Duration::from_secs(20);
    s.send(&[query(ITEMS)], t1);
    s.take_client();
    let limit = t1 + Duration::from_secs(10);
    assert_eq!(s.tick(limit - ms(1)), Tick::NotDue);
    assert_eq!(
        s.tick(limit),
        Tick::Cancel {
            grace_until: limit + Duration::from_secs(1)
        }
    );
    // Its 57014 is swallowed too: the client's answer was the stale entry.
    s.backend(
        &[
            pg_error("57014", "canceling statement due to user request"),
            ready(),
        ],
        limit + ms(5),
    );
    assert!(s.take_client().is_empty());
    assert!(!s.pipeline.busy());
}

const STALE_ON_ERROR: &str = r#"
[[rule]]
name = "items"
match.pattern = '^select\*from items'
cache.ttl = "10s"
cache.stale_for = "10m"
cache.refresh = "blocking"
on_upstream_error = "serve_stale"
"#;

#[test]
fn an_upstream_error_of_class_53_serves_the_stale_rows() {
    let t0 = Instant::now();
    let (shared, mut s) = filled(STALE_ON_ERROR, t0);
    let t1 = t0 + Duration::from_secs(20);
    s.send(&[query(ITEMS)], t1);
    assert_wire!(s.take_upstream(), query(ITEMS));
    s.backend(
        &[
            pg_error("53300", "sorry, too many clients already"),
            ready(),
        ],
        t1 + ms(5),
    );
    assert_stale_answer(
        &s.take_client(),
        "because Postgres failed the query with SQLSTATE 53300",
        &[old_result(), vec![ready()]].concat().concat(),
    );
    assert_eq!(counter(&shared, ITEMS, Counter::StaleServed), 1);
    // An error of another class (the query itself is wrong) reaches the client as it is.
    s.send(&[query(ITEMS)], t1 + ms(10));
    let syntax = [
        pg_error("42P01", "relation \"items\" does not exist"),
        ready(),
    ];
    s.backend(&syntax, t1 + ms(15));
    assert_wire!(s.take_client(), syntax.concat());
}

const BACKGROUND_AND_BUDGET: &str = r#"
[defaults]
budget = "200ms"

[[rule]]
name = "items"
match.pattern = '^select\*from items'
budget = "off"
cache.ttl = "10s"
cache.stale_for = "10m"
"#;

/// The client's next statement waits upstream behind a refresh it never asked for; its budget
/// must still be enforced at its deadline, not only once the refresh ends (up to 10s here).
#[test]
#[ignore = "known limit: a statement queued behind a detached refresh has no timer until the refresh ends (the refresh runs on the same backend; cancelling it for the statement's budget would leave the statement itself unguarded)"]
fn a_statement_behind_a_detached_refresh_keeps_its_budget() {
    let t0 = Instant::now();
    let (_shared, mut s) = filled(BACKGROUND_AND_BUDGET, t0);
    let t1 = t0 + Duration::from_secs(20);
    s.send(&[query(ITEMS)], t1);
    s.take_client();
    s.send(&[query("select pg_sleep(1)")], t1 + ms(1));
    let deadline = t1 + ms(201);
    assert!(
        s.pipeline.next_timer().is_some_and(|at| at <= deadline),
        "the timer is set for {:?} after the deadline",
        s.pipeline.next_timer().map(|at| at - deadline)
    );
    assert!(matches!(s.tick(deadline), Tick::Cancel { .. }));
}

#[test]
fn after_a_row_description_the_stale_rows_replace_the_cancelled_result() {
    let t0 = Instant::now();
    let (shared, mut s) = filled(STALE_ON_BUDGET, t0);
    let t1 = t0 + Duration::from_secs(20);
    s.send(&[query(ITEMS)], t1);
    // PostgreSQL already sent its RowDescription when the budget passes: too late to answer
    // in its place, so pgward cancels, and the stale rows follow that RowDescription.
    s.backend(&[row_description(&["id"])], t1 + ms(100));
    assert_wire!(s.take_client(), row_description(&["id"]));
    assert_eq!(
        s.tick(t1 + ms(200)),
        Tick::Cancel {
            grace_until: t1 + ms(1200)
        }
    );
    s.backend(
        &[
            data_row(&["late"]),
            pg_error("57014", "canceling statement due to user request"),
            ready(),
        ],
        t1 + ms(250),
    );
    let old = old_result();
    assert_stale_answer(
        &s.take_client(),
        "because the time budget of 200ms passed; the query was cancelled",
        &[&old[1..], &[ready()]].concat().concat(),
    );
    assert!(!s.pipeline.busy());
    assert_eq!(counter(&shared, ITEMS, Counter::StaleServed), 1);
}

#[test]
fn without_a_stale_entry_a_passed_budget_answers_57014_and_the_query_fills_the_cache() {
    let shared = shared(STALE_ON_BUDGET);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(&[query(ITEMS)], t0);
    assert_wire!(s.take_upstream(), query(ITEMS));
    assert_eq!(s.tick(t0 + ms(200)), Tick::Answered);
    let id = fp(&shared, ITEMS);
    let exceeded = error(
        Severity::Error,
        "57014",
        "canceling statement: pgward time budget of 200ms exceeded (rule \"items\")",
        &format!("fingerprint {id}"),
        Some("Raise the budget in rules.toml, or make the query faster."),
    );
    assert_wire!(s.take_client(), [exceeded, ready()].concat());
    // The query goes on detached; its result fills the cache for the next request.
    s.backend(&[old_result(), vec![ready()]].concat(), t0 + ms(900));
    assert!(s.take_client().is_empty());
    assert!(!s.pipeline.busy());
    s.send(&[query(ITEMS)], t0 + ms(1000));
    assert!(s.take_upstream().is_empty(), "a hit");
    assert_wire!(
        s.take_client(),
        [old_result(), vec![ready()]].concat().concat()
    );
}
