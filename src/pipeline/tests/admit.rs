//! The concurrency cap across sessions: a statement that finds every slot taken waits at a
//! gate (tokio's clock is paused, so a queue_timeout passes without waiting for it), gets the
//! slot when the running statement completes, or is shed with 53000 — or, when its rule serves
//! stale, answered with the stale cached result.

use super::*;

const CAPPED: &str = r#"
[[rule]]
name = "report"
match.pattern = '^select\*from report'
max_concurrency = 1
queue_timeout = "50ms"
"#;

const REPORT: &str = "select * from report";

#[tokio::test(start_paused = true)]
async fn a_statement_without_a_slot_in_queue_timeout_is_shed_with_53000() {
    let shared = shared(CAPPED);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query(REPORT)], t0);
    assert_wire!(
        a.take_upstream(),
        query(REPORT),
        "the first takes the only slot"
    );
    b.send(&[query(REPORT)], t0);
    assert!(b.still_waiting(), "the second waits for the slot");
    assert!(b.take_upstream().is_empty() && b.take_client().is_empty());
    let clock = tokio::time::Instant::now();
    assert!(!b.pass_gate(t0 + ms(50)).await, "no slot came");
    assert_eq!(
        tokio::time::Instant::now() - clock,
        ms(50),
        "it waited queue_timeout"
    );
    assert!(
        b.take_upstream().is_empty(),
        "a shed statement never reaches PostgreSQL"
    );
    let id = fp(&shared, REPORT);
    let expected = [
        error(
            Severity::Error,
            "53000",
            "pgward: too many concurrent statements for rule \"report\": no slot of 1 free \
             within 50ms",
            &format!("fingerprint {id}"),
            Some("Retry later; the rule's max_concurrency protects the database from this query family."),
        ),
        ready(),
    ]
    .concat();
    assert_wire!(b.take_client(), expected);
    assert!(!b.pipeline.busy());
    assert_eq!(counter(&shared, REPORT, Counter::Shed), 1);
    // The running statement is not disturbed.
    a.backend(&[complete("SELECT 0"), ready()], t0 + ms(60));
    assert_wire!(a.take_client(), [complete("SELECT 0"), ready()].concat());
}

const QUEUED: &str = r#"
[[rule]]
name = "report"
match.pattern = '^select\*from report'
max_concurrency = 1
queue_timeout = "5s"
"#;

#[tokio::test(start_paused = true)]
async fn a_waiting_statement_gets_the_slot_when_the_running_one_completes() {
    let shared = shared(QUEUED);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query(REPORT)], t0);
    assert_wire!(a.take_upstream(), query(REPORT));
    b.send(&[query(REPORT)], t0 + ms(10));
    assert!(b.still_waiting());
    // A's result arrives, but the slot is freed only by its completion.
    a.backend(&[row_description(&["n"]), data_row(&["1"])], t0 + ms(20));
    assert!(
        b.still_waiting(),
        "a slot is held until its statement completes"
    );
    a.backend(&[complete("SELECT 1"), ready()], t0 + ms(30));
    assert!(!b.still_waiting(), "the completion freed the slot");
    let clock = tokio::time::Instant::now();
    assert!(
        b.pass_gate(t0 + ms(30)).await,
        "it got the slot, not a timeout"
    );
    assert_eq!(
        tokio::time::Instant::now(),
        clock,
        "no queue_timeout passed"
    );
    assert_wire!(b.take_upstream(), query(REPORT), "and runs upstream");
    assert!(b.take_client().is_empty());
    b.backend(&[complete("SELECT 0"), ready()], t0 + ms(40));
    assert_wire!(b.take_client(), [complete("SELECT 0"), ready()].concat());
    assert_eq!(counter(&shared, REPORT, Counter::Shed), 0);
}

const CAPPED_STALE: &str = r#"
[[rule]]
name = "items"
match.pattern = '^select\*from items'
max_concurrency = 1
queue_timeout = "50ms"
cache.ttl = "10s"
cache.stale_for = "10m"
cache.refresh = "blocking"
on_budget_exceeded = "serve_stale"
"#;

#[tokio::test(start_paused = true)]
async fn a_shed_statement_gets_the_stale_entry_when_its_rule_serves_stale() {
    let shared = shared(CAPPED_STALE);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    let one = "select * from items where id = 1";
    let result = [
        row_description(&["id"]),
        data_row(&["1"]),
        complete("SELECT 1"),
    ];
    b.send(&[query(one)], t0);
    b.backend(&[&result[..], &[ready()]].concat(), t0 + ms(5));
    assert_wire!(b.take_client(), [&result[..], &[ready()]].concat().concat());
    b.take_upstream();
    // 20s later (past the ttl) A holds the slot with another statement of the rule...
    let t1 = t0 + Duration::from_secs(20);
    a.send(&[query("select * from items where id = 2")], t1);
    assert!(!a.take_upstream().is_empty());
    // ... so B's refresh of the stale entry finds no slot, and gets the entry instead.
    b.send(&[query(one)], t1);
    assert!(b.still_waiting());
    assert!(!b.pass_gate(t1 + ms(50)).await);
    assert!(b.take_upstream().is_empty(), "nothing goes upstream");
    let got = frames(&b.take_client());
    assert_eq!(got[0][0], be::NOTICE_RESPONSE, "{got:?}");
    let notice = text(&got[0]);
    assert!(
        notice.contains("pgward: served a cached result")
            && notice.contains("because no concurrency slot was free in time"),
        "{notice}"
    );
    assert_wire!(
        got[1..].concat(),
        [&result[..], &[ready()]].concat().concat()
    );
    assert!(!b.pipeline.busy());
    assert_eq!(counter(&shared, one, Counter::StaleServed), 1);
    // Stale answers are counted one way: a fallback is stale_served, not also a cache hit.
    assert_eq!(counter(&shared, one, Counter::CacheHit), 0);
    assert_eq!(counter(&shared, one, Counter::Shed), 1);
}

const CAPPED_WITH_BUDGET: &str = r#"
[[rule]]
name = "report"
match.pattern = '^select\*from report'
budget = "100ms"
max_concurrency = 1
queue_timeout = "1s"
"#;

/// docs/rules.md, `queue_timeout`: "The wait counts against the budget: if the budget runs out
/// first, the budget error wins."
#[tokio::test(start_paused = true)]
async fn a_slot_wait_that_outlasts_the_budget_answers_the_budget_error() {
    let shared = shared(CAPPED_WITH_BUDGET);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query(REPORT)], t0);
    b.send(&[query(REPORT)], t0);
    assert!(b.still_waiting());
    let clock = tokio::time::Instant::now();
    assert!(!b.pass_gate(t0 + ms(100)).await);
    assert_eq!(
        tokio::time::Instant::now() - clock,
        ms(100),
        "the wait ends at the budget"
    );
    let id = fp(&shared, REPORT);
    let expected = [
        error(
            Severity::Error,
            "57014",
            "canceling statement: pgward time budget of 100ms exceeded (rule \"report\")",
            &format!("fingerprint {id}"),
            Some("Raise the budget in rules.toml, or make the query faster."),
        ),
        ready(),
    ]
    .concat();
    assert_wire!(b.take_client(), expected);
}

const NEVER_WAIT: &str = r#"
[[rule]]
name = "report"
match.pattern = '^select\*from report'
max_concurrency = 1
queue_timeout = "0s"
"#;

#[tokio::test(start_paused = true)]
async fn a_zero_queue_timeout_sheds_without_waiting() {
    let shared = shared(NEVER_WAIT);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query(REPORT)], t0);
    b.send(&[query(REPORT)], t0);
    let clock = tokio::time::Instant::now();
    assert!(!b.pass_gate(t0).await, "no slot");
    assert_eq!(tokio::time::Instant::now(), clock, "and no wait for one");
    assert!(b.take_upstream().is_empty());
    assert_eq!(
        tags(&b.take_client()),
        [be::ERROR_RESPONSE, be::READY_FOR_QUERY]
    );
    assert_eq!(counter(&shared, REPORT, Counter::Shed), 1);
}

const OBSERVED_CAP: &str = r#"
[[rule]]
name = "report"
match.pattern = '^select\*from report'
max_concurrency = 1
mode = "observe"
"#;

#[test]
fn an_observed_cap_counts_what_it_would_shed_and_runs_it() {
    let shared = shared(OBSERVED_CAP);
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query(REPORT)], t0);
    b.send(&[query(REPORT)], t0);
    assert!(!b.still_waiting(), "no wait in observe mode");
    assert_wire!(b.take_upstream(), query(REPORT));
    assert!(b.take_client().is_empty());
    assert_eq!(counter(&shared, REPORT, Counter::WouldShed), 1);
    assert_eq!(counter(&shared, REPORT, Counter::Shed), 0);
}

/// Two rules sharing `[limits.reco]` with these keys.
fn reco_limit(keys: &str) -> String {
    format!(
        r#"
[limits.reco]
{keys}

[[rule]]
name = "reco-a"
match.pattern = '^select\*from reco_a'
limit = "reco"

[[rule]]
name = "reco-b"
match.pattern = '^select\*from reco_b'
limit = "reco"
"#
    )
}

#[tokio::test(start_paused = true)]
async fn rules_sharing_a_limit_share_its_slots() {
    let shared = shared(&reco_limit("max_concurrency = 1\nqueue_timeout = \"1s\""));
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query("select * from reco_a")], t0);
    assert_wire!(a.take_upstream(), query("select * from reco_a"));
    b.send(&[query("select * from reco_b")], t0);
    assert!(
        b.still_waiting(),
        "the other rule's statement waits for the shared slot"
    );
    a.backend(&[complete("SELECT 0"), ready()], t0 + ms(5));
    assert!(
        b.pass_gate(t0 + ms(5)).await,
        "it gets the slot the first released"
    );
    assert_wire!(b.take_upstream(), query("select * from reco_b"));
}

fn db_time_limit(queue_timeout: &str) -> String {
    reco_limit(&format!(
        "max_db_time = \"250ms/s\"\nqueue_timeout = \"{queue_timeout}\""
    ))
}

#[tokio::test(start_paused = true)]
async fn a_spent_database_time_budget_holds_statements_until_it_refills() {
    let shared = shared(&db_time_limit("1s"));
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query("select * from reco_a")], t0);
    assert_wire!(a.take_upstream(), query("select * from reco_a"));
    // It ran 300 ms: the 250 ms burst is spent and 50 ms owed (200 ms of refill at 250ms/s).
    a.backend(&[complete("SELECT 0"), ready()], t0 + ms(300));
    b.send(&[query("select * from reco_b")], t0 + ms(300));
    assert!(
        b.still_waiting(),
        "the limit's other rule waits for database time"
    );
    assert!(b.take_upstream().is_empty());
    let clock = tokio::time::Instant::now();
    b.pass_gate(t0 + ms(501)).await;
    assert_eq!(
        tokio::time::Instant::now() - clock,
        ms(200),
        "it waited for the refill"
    );
    assert_wire!(b.take_upstream(), query("select * from reco_b"));
    assert!(b.take_client().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_database_time_budget_spent_past_queue_timeout_sheds_with_53000() {
    let shared = shared(&db_time_limit("100ms"));
    let (mut a, mut b) = (Session::new(&shared), Session::new(&shared));
    let t0 = Instant::now();
    a.send(&[query("select * from reco_a")], t0);
    a.take_upstream();
    a.backend(&[complete("SELECT 0"), ready()], t0 + ms(300));
    let sql = "select * from reco_b";
    b.send(&[query(sql)], t0 + ms(300));
    assert!(b.still_waiting());
    b.pass_gate(t0 + ms(400)).await;
    assert!(
        b.take_upstream().is_empty(),
        "a shed statement never reaches PostgreSQL"
    );
    let id = fp(&shared, sql);
    let expected = [
        error(
            Severity::Error,
            "53000",
            "pgward: the database-time budget of limit \"reco\" (rule \"reco-b\") (250ms/s) is \
             spent: none free within 100ms",
            &format!("fingerprint {id}"),
            Some("Retry later; the limit's max_db_time keeps this query family to its share of the database."),
        ),
        ready(),
    ]
    .concat();
    assert_wire!(b.take_client(), expected);
    assert_eq!(counter(&shared, sql, Counter::Shed), 1);
    assert!(!b.pipeline.busy());
}

const PROTECTED: &str = r#"
[limits.reco]
max_concurrency = 2

[[rule]]
name = "checkout"
match.pattern = '^select\*from orders'

[[rule]]
name = "reco"
match.pattern = '^select\*from reco'
limit = "reco"

[[protect]]
rule = "checkout"
p99 = "20ms"
"#;

#[tokio::test(start_paused = true)]
async fn protected_latencies_reach_their_window_and_a_limit_at_zero_sheds_at_once() {
    let shared = shared(PROTECTED);
    let mut s = Session::new(&shared);
    let t0 = Instant::now();
    s.send(&[query("select * from orders")], t0);
    assert_wire!(s.take_upstream(), query("select * from orders"));
    s.backend(&[complete("SELECT 0"), ready()], t0 + ms(50));
    s.take_client();
    let rules = shared.rules.snapshot();
    let seen = rules.protection.objectives[0].observe(t0 + ms(50));
    assert_eq!(
        seen.samples, 1,
        "the protected statement's latency is in its window"
    );
    assert!(seen.p99.unwrap() >= ms(50), "{seen:?}");
    // The controller holds the unprotected limit at zero: its statement is shed at once.
    rules.shared_limits[0].set_factor(0);
    let sql = "select * from reco";
    s.send(&[query(sql)], t0 + ms(60));
    assert!(!s.still_waiting(), "no wait at zero");
    assert!(s.take_upstream().is_empty());
    let id = fp(&shared, sql);
    let expected = [
        error(
            Severity::Error,
            "53000",
            "pgward: limit \"reco\" (rule \"reco\") gives way to protected traffic, which is over \
             its latency objective",
            &format!("fingerprint {id}"),
            Some("Retry later; pgward admits this query family again as the protected traffic recovers."),
        ),
        ready(),
    ]
    .concat();
    assert_wire!(s.take_client(), expected);
    // The protected rule itself is never held back.
    s.send(&[query("select * from orders")], t0 + ms(70));
    assert_wire!(s.take_upstream(), query("select * from orders"));
}
