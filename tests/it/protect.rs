//! Protected traffic against a real PostgreSQL: while the protected rule's p99 is over its
//! objective, the controller lowers the other limits step by step down to no database
//! admissions (their statements shed with 53000 saying why), and raises them again once the
//! objective holds; `/rules` and `/metrics` show the share in force.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use serde_json::Value;

use crate::cache::proxy;
use crate::harness::*;
use crate::stats_http::http;

const PROTECTED: &str = r#"
[limits.heavy]
max_concurrency = 4

[[rule]]
name = "checkout"
match.pattern = 'as checkout$'

[[rule]]
name = "heavy"
match.pattern = 'as heavy$'
limit = "heavy"

[[protect]]
rule = "checkout"
p99 = "30ms"
window = "3s"
"#;

async fn factor(admin: std::net::SocketAddr) -> u64 {
    let (_, body) = http(admin, "GET", "/rules", None).await;
    let rules: Value = serde_json::from_str(&body).unwrap();
    rules["protection"]["factor_permille"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_objective_stops_the_other_limits_until_it_holds_again() {
    let proxy = proxy(PROTECTED, |_| {}).await;
    let admin = proxy.admin_addr.unwrap();
    let slow = Arc::new(AtomicBool::new(true));
    let running = Arc::new(AtomicBool::new(true));
    // Four checkout clients: a window holds enough statements even on a loaded machine.
    let mut traffic = Vec::new();
    for _ in 0..4 {
        let checkout = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
        let (slow, running) = (slow.clone(), running.clone());
        traffic.push(tokio::spawn(async move {
            while running.load(Relaxed) {
                let sleep = if slow.load(Relaxed) { "0.05" } else { "0" };
                let sql = format!("SELECT pg_sleep({sleep}) AS checkout");
                checkout.batch_execute(&sql).await.unwrap();
            }
        }));
    }
    eventually(
        "the unprotected limit to reach 0",
        async || factor(admin).await,
        |f| *f == 0,
    )
    .await;
    let heavy = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let shed = heavy
        .batch_execute("SELECT 1 AS heavy")
        .await
        .expect_err("the unprotected family gets no database admission");
    assert_eq!(code(&shed), "53000", "{shed:?}");
    assert!(
        db_message(&shed).contains("gives way to protected traffic"),
        "{}",
        db_message(&shed)
    );
    let (_, metrics) = http(admin, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("pgward_protect_factor_ratio 0"),
        "{metrics}"
    );
    // The protected traffic is fast again: the share comes back and so does the family.
    slow.store(false, Relaxed);
    eventually(
        "the share to grow again",
        async || factor(admin).await,
        |f| *f > 0,
    )
    .await;
    eventually_ok("the heavy family to run again", async || {
        heavy.batch_execute("SELECT 1 AS heavy").await
    })
    .await;
    running.store(false, Relaxed);
    for client in traffic {
        client.await.unwrap();
    }
}
