//! A live `/metrics` after real traffic through a rule: `promtool check metrics` finds no
//! problem (when promtool is installed: scripts/lib/test-deps.sh installs it), the latency
//! histogram of a fingerprint agrees with its `/stats` row, and the build, upstream, rules and
//! process families are there.

use std::io::Write as _;
use std::process::{Command, Stdio};

use prometheus_parse::{Scrape, Value as PValue};

use crate::harness::*;
use crate::rules::{query_stats, rules_file};
use crate::stats_http::http;

const RULES: &str = r#"
[[rule]]
name = "probe"
match.query = "SELECT $1::int AS histogram_probe"
budget = "10s"
"#;

/// promtool's verdict on `text`, or `None` when promtool is not installed.
pub(crate) fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), said))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_agree_with_stats() {
    let mut config = config_for(shared());
    config.rules = Some(rules_file(RULES));
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    for i in 0..9 {
        client
            .query("SELECT $1::int AS histogram_probe", &[&i])
            .await
            .unwrap();
    }
    let row = query_stats(admin, "histogram_probe").await;
    let id = row["queryid"].as_str().unwrap();
    let (status, text) = http(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "{text}");

    match promtool_check(&text) {
        Some((ok, said)) => assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}"),
        None if std::env::var_os("CI").is_some() => panic!("promtool missing in CI"),
        None => eprintln!("skipped promtool check metrics: promtool not installed"),
    }

    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "pgward_query_exec_seconds" && s.labels.get("queryid") == Some(id))
        .map(|s| s.value.clone());
    let Some(PValue::Histogram(buckets)) = histogram else {
        panic!("no histogram for {id} in\n{text}");
    };
    let last = buckets.last().map(|b| (b.less_than, b.count));
    assert_eq!(last, Some((f64::INFINITY, 9.0)), "{buckets:?}");
    assert_eq!(row["calls"], 9);
    let info = format!(
        "pgward_query_info{{queryid=\"{id}\",query=\"select $1::int as histogram_probe\",rule=\"probe\"}} 1"
    );
    for line in [
        info.as_str(),
        "pgward_rule_calls_total{rule=\"probe\"} 9",
        "pgward_upstream_up 1",
        "pgward_rules_loaded 1",
        "pgward_rule_budget_seconds{rule=\"probe\"} 10.0",
        "pgward_rules_reload_failures_total 0",
        concat!(
            "pgward_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    for family in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(text.contains(&format!("\n{family} ")), "no {family}");
    }
}
