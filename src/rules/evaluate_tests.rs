//! Tests of the example rules.toml and of evaluation: first match wins, filters must all
//! match, fingerprint and query matchers agree, budgets inherit.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::fingerprint::normalize;

fn ok(text: &str) -> RuleSet {
    match parse_rules(Path::new("rules.toml"), text) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    }
}

const SESSION: SessionInfo<'static> = SessionInfo {
    user: "app",
    database: "shop",
    application_name: "web",
};

#[test]
fn example_file_in_the_repository_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.toml"));
    let set = match load_rules(path) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(set.default_budget, Some(Duration::from_secs(30)));
    assert_eq!(set.cancel_grace, Duration::from_secs(1));
    assert_eq!(set.source_hash.len(), 16);
    let names: Vec<&str> = set.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "reco-also-bought",
            "order-history-bounded",
            "no-full-export",
            "revenue-report-trial",
            "nightly-stock-job"
        ]
    );
    let sql = "select p.product_id, p.name from order_items a join order_items b \
               on b.order_id = a.order_id and b.product_id <> a.product_id \
               join products p on p.product_id = b.product_id where a.product_id = 7 \
               group by p.product_id, p.name order by count(*) desc limit 5";
    let n = normalize(sql);
    let rule = set.evaluate(n.id, &n.text, &SESSION).map(|r| &*r.name);
    assert_eq!(rule, Some("reco-also-bought"));
    let reco = &set.rules[0];
    assert_eq!(reco.budget(&set), Some(Duration::from_millis(150)));
    // The recommendation families share one bulkhead; checkout is protected.
    let limit = reco
        .limit
        .and_then(|i| set.limits.get(i))
        .expect("reco has a limit");
    assert_eq!(
        (&*limit.name, limit.max_concurrency, limit.queue_timeout),
        ("reco", Some(1), Duration::from_millis(150))
    );
    assert_eq!(
        limit.db_time.map(|d| d.per_second),
        Some(Duration::from_millis(500))
    );
    assert_eq!(set.protect.len(), 1);
    assert_eq!(set.protect[0].p99, Duration::from_millis(10));
    let cache = reco.cache.expect("the reco rule caches");
    assert_eq!(
        (cache.ttl, cache.stale_for, cache.invalidate),
        (
            Duration::from_secs(60),
            Duration::from_secs(600),
            Invalidate::TtlOnly
        )
    );
    assert_eq!(reco.on_budget_exceeded, Fallback::ServeStale);
    let sql =
        "select order_id, created_at from orders where customer_id = 12 order by created_at desc";
    let n = normalize(sql);
    let history = set.evaluate(n.id, &n.text, &SESSION);
    let rewritten = history
        .and_then(|r| r.rewrite.as_ref())
        .map(|r| r.apply_to_text(sql, &n));
    assert_eq!(
        rewritten.as_deref(),
        Some(
            "SELECT order_id, created_at FROM orders WHERE customer_id = 12 ORDER BY created_at DESC LIMIT 50"
        )
    );
    let n = normalize("SELECT * FROM orders");
    let reject = set.evaluate(n.id, &n.text, &SESSION);
    assert!(matches!(
        reject.map(|r| &r.action),
        Some(Action::Reject { sqlstate, .. }) if sqlstate == "42501"
    ));
    assert_eq!(set.rules[3].mode, Mode::Observe);
    assert_eq!(set.rules[4].budget(&set), None);
}

const ORDERED: &str = r#"
[defaults]
budget = "10s"

[[rule]]
name = "reports-app"
match.pattern = "^select"
match.application_name = "reports"
match.user = "analyst"
budget = "off"

[[rule]]
name = "by-query"
match.query = "SELECT * FROM orders WHERE customer_id = 1"
budget = "200ms"

[[rule]]
name = "any-orders"
match.pattern = "from orders"
max_concurrency = 3

[[rule]]
name = "shop-db-only"
match.pattern = "products"
match.database = "shop"
"#;

#[test]
fn first_match_wins_and_filters_must_all_match() {
    let set = ok(ORDERED);
    let pick = |sql: &str, s: &SessionInfo<'_>| {
        let n = normalize(sql);
        set.evaluate(n.id, &n.text, s).map(|r| r.name.to_string())
    };
    let q = "select * from orders where customer_id = 99";
    assert_eq!(pick(q, &SESSION).as_deref(), Some("by-query"));
    let reports = SessionInfo {
        user: "analyst",
        database: "shop",
        application_name: "reports",
    };
    assert_eq!(pick(q, &reports).as_deref(), Some("reports-app"));
    // One filter of two does not suffice.
    let half = SessionInfo {
        user: "app",
        ..reports
    };
    assert_eq!(pick(q, &half).as_deref(), Some("by-query"));
    assert_eq!(
        pick("select count(*) from orders", &SESSION).as_deref(),
        Some("any-orders")
    );
    assert_eq!(
        pick("select * from products", &SESSION).as_deref(),
        Some("shop-db-only")
    );
    let other_db = SessionInfo {
        database: "staging",
        ..SESSION
    };
    assert_eq!(pick("select * from products", &other_db), None);
    let r = set.rules.iter().find(|r| &*r.name == "reports-app");
    assert_eq!(r.map(|r| r.budget(&set)), Some(None));
    let r = set.rules.iter().find(|r| &*r.name == "any-orders");
    assert_eq!(
        r.map(|r| r.budget(&set)),
        Some(Some(Duration::from_secs(10)))
    );
    assert_eq!(r.map(|r| r.queue_timeout), Some(DEFAULT_QUEUE_TIMEOUT));
}

#[test]
fn fingerprint_matcher_equals_query_matcher() {
    let id = normalize("select * from t where id = 5").id;
    let set = ok(&format!(
        "[[rule]]\nname = \"f\"\nmatch.fingerprint = \"{id}\"\n"
    ));
    assert!(matches!(set.rules[0].matcher, Matcher::Fingerprint(got) if got == id));
    let n = normalize("SELECT * FROM t WHERE id = 77");
    assert!(set.evaluate(n.id, &n.text, &SESSION).is_some());
    let n = normalize("SELECT * FROM t WHERE other = 77");
    assert!(set.evaluate(n.id, &n.text, &SESSION).is_none());
}
