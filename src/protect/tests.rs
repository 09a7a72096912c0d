//! The controller's arithmetic with injected time: windows, the p99 estimate, AIMD steps down to
//! zero and back, slots held back from the yielding limits only, and no flapping on a window
//! without enough samples.

use std::time::{Duration, Instant};

use super::*;
use crate::rules::parse_rules;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const RULES: &str = r#"
[limits.reco]
max_concurrency = 4
max_db_time = "1s/s"

[[rule]]
name = "checkout"
match.pattern = "orders"
max_concurrency = 8

[[rule]]
name = "reco"
match.pattern = "reco"
limit = "reco"

[[protect]]
rule = "checkout"
p99 = "20ms"
window = "5s"
"#;

fn protection(t0: Instant) -> (Protection, Vec<Option<Arc<Limit>>>) {
    let set = parse_rules(std::path::Path::new("rules.toml"), RULES).unwrap();
    let shared: Vec<Arc<Limit>> = set
        .limits
        .iter()
        .map(|s| Arc::new(Limit::shared(s, t0)))
        .collect();
    let limits = crate::limits::by_rule(&set, &shared);
    (Protection::new(&set, &limits, t0), limits)
}

#[test]
fn the_window_p99_counts_only_its_last_seconds() {
    let t0 = Instant::now();
    let (p, _) = protection(t0);
    let o = &p.objectives[0];
    for _ in 0..98 {
        o.record(ms(5), t0);
    }
    o.record(ms(100), t0);
    o.record(ms(100), t0);
    let seen = o.observe(t0);
    assert_eq!(seen.samples, 100);
    let p99 = seen.p99.unwrap();
    assert!(
        p99 >= ms(100) && p99 <= ms(111),
        "{p99:?}: the upper end of 100 ms's bucket"
    );
    // 200 fast ones a second later: the two slow ones are under 1 % of 300.
    for _ in 0..200 {
        o.record(ms(5), t0 + ms(1000));
    }
    let seen = o.observe(t0 + ms(1000));
    assert!(seen.p99.unwrap() < ms(6), "{seen:?}");
    // Five seconds on, the first second is out of the window.
    assert_eq!(o.observe(t0 + ms(5000)).samples, 200);
    assert_eq!(o.observe(t0 + ms(6000)).samples, 0);
}

#[test]
fn a_broken_objective_halves_the_others_down_to_zero_and_recovery_adds_back() {
    let t0 = Instant::now();
    let (p, limits) = protection(t0);
    let reco = limits[1].clone().unwrap();
    let checkout = limits[0].clone().unwrap();
    let slow = |at: Instant| {
        for _ in 0..MIN_SAMPLES {
            p.objectives[0].record(ms(50), at);
        }
    };
    let mut at = t0;
    let mut factors = Vec::new();
    for _ in 0..5 {
        slow(at);
        let change = p.step(at).expect("a change each step");
        assert!(
            change.reason.contains("rule:checkout p99"),
            "{}",
            change.reason
        );
        factors.push(change.to);
        at += ms(1000);
    }
    assert_eq!(
        factors,
        [500, 250, 125, 62, 0],
        "halved; below 5 % it is zero"
    );
    slow(at);
    assert_eq!(
        p.step(at),
        None,
        "at zero it stays zero while the objective is broken"
    );
    assert_eq!(reco.factor(), 0, "the unprotected limit admits nothing");
    assert_eq!(reco.in_use(), 4, "all its slots are held back");
    assert_eq!(
        checkout.factor(),
        FULL,
        "the protected rule's own limit never gives way"
    );
    assert_eq!(checkout.in_use(), 0);
    // The slow statements leave the window; each step with the objective kept adds a tenth.
    let quiet = at + ms(6000);
    let up: Vec<u32> = (0..3)
        .map(|i| p.step(quiet + ms(1000 * i)).map_or(0, |c| c.to))
        .collect();
    assert_eq!(up, [100, 200, 300]);
    assert_eq!(reco.in_use(), 2, "ceil(4 x 0.3) = 2 slots allowed again");
    assert_eq!(
        p.last_change().unwrap().reason,
        "every protected objective holds"
    );
}

#[test]
fn too_few_samples_never_move_the_factor() {
    let t0 = Instant::now();
    let (p, _) = protection(t0);
    for _ in 0..MIN_SAMPLES - 1 {
        p.objectives[0].record(Duration::from_secs(1), t0);
    }
    assert_eq!(p.step(t0), None, "19 slow statements say too little");
    assert_eq!(p.factor(), FULL);
    // Lowered, a window with too few statements neither lowers nor raises it.
    for _ in 0..MIN_SAMPLES {
        p.objectives[0].record(Duration::from_secs(1), t0 + ms(10_000));
    }
    assert_eq!(p.step(t0 + ms(10_000)).map(|c| c.to), Some(500));
    p.objectives[0].record(ms(1), t0 + ms(20_000));
    assert_eq!(
        p.step(t0 + ms(20_000)),
        None,
        "one statement in the window says too little"
    );
    assert_eq!(p.factor(), 500);
    // None at all: the protected traffic is idle, the share grows back.
    assert_eq!(p.step(t0 + ms(30_000)).map(|c| c.to), Some(600));
}

#[test]
fn a_statement_of_a_protected_rule_or_application_finds_its_objective() {
    let t0 = Instant::now();
    let (p, _) = protection(t0);
    assert!(p.objective(Some(0), "web").is_some());
    assert!(p.objective(Some(1), "web").is_none());
    assert!(p.objective(None, "web").is_none());
}
