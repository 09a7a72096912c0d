//! A statement's time budget as the session's timer sees it: the cancel when it passes and the
//! 57014 reworded to name the rule, the FATAL when the cancel has no effect within the grace,
//! and observe mode, where a passed budget is only counted.

use super::*;

const SLOW: &str = r#"
[defaults]
cancel_grace = "2s"

[[rule]]
name = "slow"
match.pattern = '^select pg_sleep'
budget = "200ms"
"#;

const SLEEP: &str = "select pg_sleep(10)";

/// A session running `SLEEP` since `t0` under `rules`.
fn running(rules: &str, t0: Instant) -> (Arc<Shared>, Session) {
    let shared = shared(rules);
    let mut s = Session::new(&shared);
    s.send(&[query(SLEEP)], t0);
    assert_wire!(s.take_upstream(), query(SLEEP));
    (shared, s)
}

#[test]
fn a_passed_budget_cancels_and_the_57014_names_the_rule() {
    let t0 = Instant::now();
    let (shared, mut s) = running(SLOW, t0);
    assert_eq!(s.pipeline.next_timer(), Some(t0 + ms(200)));
    assert_eq!(s.tick(t0 + ms(199)), Tick::NotDue);
    assert_eq!(
        s.tick(t0 + ms(200)),
        Tick::Cancel {
            grace_until: t0 + ms(2200)
        }
    );
    assert_eq!(counter(&shared, SLEEP, Counter::BudgetExceeded), 1);
    // PostgreSQL answers the cancel with its own 57014: the client reads pgward's instead.
    s.backend(
        &[
            pg_error("57014", "canceling statement due to user request"),
            ready(),
        ],
        t0 + ms(230),
    );
    let id = fp(&shared, SLEEP);
    let expected = [
        error(
            Severity::Error,
            "57014",
            "canceling statement: pgward time budget of 200ms exceeded (rule \"slow\")",
            &format!("fingerprint {id}"),
            Some("Raise the budget in rules.toml, or make the query faster."),
        ),
        ready(),
    ]
    .concat();
    assert_wire!(s.take_client(), expected);
    assert!(!s.pipeline.busy());
    assert_eq!(s.pipeline.next_timer(), None);
}

#[test]
fn a_cancel_without_effect_ends_the_session_with_a_fatal_after_the_grace() {
    let t0 = Instant::now();
    let (shared, mut s) = running(SLOW, t0);
    let grace_until = t0 + ms(2200);
    assert_eq!(s.tick(t0 + ms(200)), Tick::Cancel { grace_until });
    assert_eq!(s.pipeline.next_timer(), Some(grace_until));
    assert_eq!(s.tick(grace_until - ms(1)), Tick::NotDue);
    let id = fp(&shared, SLEEP);
    let fatal = error(
        Severity::Fatal,
        "57014",
        "terminating connection: statement exceeded the pgward time budget of 200ms \
         (rule \"slow\") and did not stop within 2s of its cancel",
        &format!("fingerprint {id}; the upstream connection was closed, so session state is lost"),
        Some("Reconnect. If this repeats, the upstream ignores cancels (e.g. a blocked backend)."),
    );
    assert_eq!(s.tick(grace_until), Tick::CancelIgnored(fatal));
    assert!(
        s.take_client().is_empty(),
        "the session, not the pipeline, sends the FATAL"
    );
}

const OBSERVED: &str = r#"
[[rule]]
name = "slow-trial"
match.pattern = '^select pg_sleep'
budget = "200ms"
mode = "observe"
"#;

#[test]
fn observe_mode_only_counts_a_passed_budget_and_leaves_a_foreign_57014_alone() {
    let t0 = Instant::now();
    let (shared, mut s) = running(OBSERVED, t0);
    assert_eq!(s.pipeline.next_timer(), Some(t0 + ms(200)));
    assert_eq!(
        s.tick(t0 + ms(200)),
        Tick::Nothing,
        "no cancel in observe mode"
    );
    assert_eq!(
        s.pipeline.next_timer(),
        None,
        "and no later deadline either"
    );
    assert_eq!(counter(&shared, SLEEP, Counter::WouldTimeout), 1);
    assert_eq!(counter(&shared, SLEEP, Counter::BudgetExceeded), 0);
    // PostgreSQL's own statement_timeout fires later: its 57014 reaches the client unchanged.
    let answer = [
        pg_error("57014", "canceling statement due to statement timeout"),
        ready(),
    ];
    s.backend(&answer, t0 + ms(5000));
    assert_wire!(s.take_client(), answer.concat());
    assert!(!s.pipeline.busy());
}
