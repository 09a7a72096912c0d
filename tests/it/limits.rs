//! Shared limits against a real PostgreSQL: two rules naming one `[limits.<name>]` share its
//! database-time budget — a heavy statement spends it, the other rule's next statement is shed
//! with 53000 naming the limit once queue_timeout passes, and once the budget refills the family
//! runs again; `/rules` and `/metrics` report the limit's state.

use serde_json::Value;

use crate::cache::proxy;
use crate::harness::*;
use crate::stats_http::http;

const HEAVY: &str = r#"
[limits.heavy]
max_db_time = "100ms/s"
queue_timeout = "50ms"

[[rule]]
name = "sleepy-a"
match.pattern = 'pg_sleep\(\$1\)$'
limit = "heavy"

[[rule]]
name = "sleepy-b"
match.pattern = 'pg_sleep\(\$1\),\$2'
limit = "heavy"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_database_time_budget_sheds_the_other_rules_of_its_limit() {
    let proxy = proxy(HEAVY, |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    // 300 ms of database time against a 100 ms burst: 200 ms owed, 2 s of refill.
    client.batch_execute("SELECT pg_sleep(0.3)").await.unwrap();
    let shed = client
        .batch_execute("SELECT pg_sleep(0), 1")
        .await
        .expect_err("the other rule of the limit is shed while the budget is spent");
    assert_eq!(code(&shed), "53000", "{shed:?}");
    let message = db_message(&shed);
    assert!(
        message.contains("database-time budget of limit \"heavy\" (rule \"sleepy-b\")"),
        "{message}"
    );
    let (_, body) = http(admin, "GET", "/rules", None).await;
    let rules: Value = serde_json::from_str(&body).unwrap();
    let limit = &rules["limits"][0];
    assert_eq!(limit["name"], "heavy", "{body}");
    assert_eq!(limit["max_db_time_ms_per_s"], 100.0, "{body}");
    let spent = limit["db_time_spent_ms"].as_f64().unwrap();
    assert!(spent >= 300.0, "{body}");
    assert!(
        limit["db_time_available_ms"].as_f64().unwrap() < 0.0,
        "{body}"
    );
    assert_eq!(rules["rules"][1]["limit"], "heavy");
    let (_, metrics) = http(admin, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("pgward_limit_db_time_seconds_total{limit=\"heavy\"}"),
        "{metrics}"
    );
    // Once refilled (the debt of 200 ms at 100 ms/s), the family runs again.
    eventually_ok("the limit to admit again", async || {
        client.batch_execute("SELECT pg_sleep(0), 1").await
    })
    .await;
}
