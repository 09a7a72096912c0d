//! Per-fingerprint stats through the admin endpoint: exact calls and rows for simple and
//! extended queries, one id for both forms, /metrics agreeing with the JSON, health, token,
//! errors, reset, and no literals anywhere.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// A minimal HTTP/1.1 request; returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    split_response(&response)
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn find<'a>(queries: &'a Value, needle: &str) -> &'a Value {
    queries["queries"]
        .as_array()
        .and_then(|q| {
            q.iter()
                .find(|q| q["query"].as_str().is_some_and(|t| t.contains(needle)))
        })
        .unwrap_or_else(|| panic!("no query containing {needle:?} in {queries}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_rows_are_exact_for_simple_and_extended_queries() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    for _ in 0..3 {
        client
            .simple_query("SELECT g FROM generate_series(1001::int, 1010::int) g")
            .await
            .unwrap();
    }
    let statement = client
        .prepare("select g from generate_series($1::int, $2::int) g")
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            client
                .query(&statement, &[&1001, &1010])
                .await
                .unwrap()
                .len(),
            10
        );
    }
    let _ = client
        .simple_query("SELECT 'secret-4711' || (1/0)::text AS boom")
        .await;

    let stats = json(admin, "/stats/queries?sort=calls&limit=50").await;
    let series = find(&stats, "generate_series");
    assert_eq!(series["calls"], 5, "{series}");
    assert_eq!(series["rows"], 50, "{series}");
    let query = series["query"].as_str().unwrap();
    assert!(
        !query.contains("1001") && !query.contains("1010"),
        "literal leaked: {query}"
    );
    assert!(series["p99_exec_time"].as_f64().unwrap() >= series["p50_exec_time"].as_f64().unwrap());
    assert!(series["total_exec_time"].as_f64().unwrap() > 0.0);

    let failed = find(&stats, "boom");
    assert_eq!(failed["errors"], 1);
    assert_eq!(failed["errors_by_class"]["22"], 1);
    assert!(
        !stats.to_string().contains("secret-4711"),
        "literal leaked into stats"
    );

    let id = series["queryid"].as_str().unwrap();
    assert_eq!(id.len(), 16);
    let one = json(admin, &format!("/stats/queries/{id}")).await;
    assert_eq!(one["calls"], 5);
    assert!(stats["proxy"]["queries"].as_u64().unwrap() >= 6);
}

fn metric_value(samples: &[prometheus_parse::Sample], name: &str, queryid: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("queryid") == Some(queryid))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {name} for {queryid}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_agree_with_the_json() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    for i in 0..7 {
        client
            .query("SELECT $1::int AS metric_probe", &[&i])
            .await
            .unwrap();
    }
    let stats = json(admin, "/stats/queries").await;
    let probe = find(&stats, "metric_probe");
    let id = probe["queryid"].as_str().unwrap();

    let (status, text) = http(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    assert_eq!(
        metric_value(&scrape.samples, "pgward_query_calls_total", id),
        7.0
    );
    assert_eq!(
        metric_value(&scrape.samples, "pgward_query_rows_total", id),
        7.0
    );
    let total: f64 = probe["total_exec_time"].as_f64().unwrap() / 1000.0;
    let sum = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "pgward_query_exec_seconds_sum" && s.labels.get("queryid") == Some(id)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        });
    let sum = sum.expect("pgward_query_exec_seconds_sum for the probe");
    assert!((sum - total).abs() < 1e-6, "json {total} vs metrics {sum}");
    assert!(
        text.contains("pgward_client_connections"),
        "proxy gauges missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_token_errors_and_reset() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.admin.token = Some("s3cret".into());
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.unwrap();

    let (status, body) = http(admin, "GET", "/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http(admin, "GET", "/stats/queries", None).await.0, 401);
    assert_eq!(
        http(admin, "GET", "/stats/queries", Some("wrong")).await.0,
        401
    );
    assert_eq!(
        http(admin, "GET", "/stats/queries", Some("s3cret")).await.0,
        200
    );
    for bad in [
        "/stats/queries?sort=bogus",
        "/stats/queries?limit=-1",
        "/stats/queries?what=1",
        "/stats/queries/xyz",
    ] {
        let (status, body) = http(admin, "GET", bad, Some("s3cret")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let parsed: HashMap<String, String> = serde_json::from_str(&body).unwrap();
        assert!(parsed.contains_key("error"), "{body}");
    }
    assert_eq!(
        http(
            admin,
            "GET",
            "/stats/queries/00000000000000ff",
            Some("s3cret")
        )
        .await
        .0,
        404
    );
    assert_eq!(http(admin, "GET", "/nowhere", Some("s3cret")).await.0, 404);

    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    client.simple_query("SELECT 'before reset'").await.unwrap();
    assert_eq!(
        http(admin, "POST", "/stats/reset", Some("s3cret")).await.0,
        200
    );
    let (_, body) = http(admin, "GET", "/stats/queries", Some("s3cret")).await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stats["queries"].as_array().map(Vec::len),
        Some(0),
        "{stats}"
    );
    client.simple_query("SELECT 'after reset'").await.unwrap();
    let (_, body) = http(admin, "GET", "/stats/queries", Some("s3cret")).await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stats["queries"].as_array().map(Vec::len),
        Some(1),
        "recording stopped after reset: {stats}"
    );

    let mut config = config_for(cluster);
    config.upstream.address = format!("127.0.0.1:{}", free_port());
    let down = start_proxy(config).await;
    let (status, body) = http(down.admin_addr.unwrap(), "GET", "/healthz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("reason"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_minute_window_has_the_recent_calls_and_their_percentiles() {
    let proxy = start_proxy(config_for(shared())).await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    for i in 0..30 {
        client
            .simple_query(&format!("SELECT {i} AS windowed_call"))
            .await
            .unwrap();
    }
    let _ = client.simple_query("SELECT 1/0 AS windowed_call").await;
    let stats = json(admin, "/stats/queries?window=1m&sort=calls").await;
    let row = stats["queries"]
        .as_array()
        .and_then(|q| {
            q.iter()
                .find(|q| q["query"] == "select $1 as windowed_call")
        })
        .cloned()
        .unwrap_or_else(|| panic!("{stats}"));
    let window = &row["window"];
    assert_eq!(window["seconds"], 60, "{row}");
    assert_eq!(window["calls"], 30, "{row}");
    assert!(window["p99_exec_time"].as_f64().unwrap() > 0.0, "{row}");
    assert!(window["total_exec_time"].as_f64().unwrap() > 0.0, "{row}");
    let failed = stats["queries"]
        .as_array()
        .and_then(|q| {
            q.iter()
                .find(|q| q["query"] == "select $1/$2 as windowed_call")
        })
        .cloned()
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(failed["window"]["errors"], 1, "{failed}");
    let (status, body) = http(admin, "GET", "/stats/queries?window=10m", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("window must be 1m or 5m"), "{body}");
}
