//! The admin endpoint under abuse: bounded invalidation bookkeeping, cross-origin and foreign
//! Host requests, a token from a file or the environment, stalled headers and connection floods.

use serde_json::Value;

use crate::harness::*;
use crate::stats_http::http;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_table_names_are_refused_and_leave_no_bookkeeping() {
    let proxy = start_proxy(config_for(shared())).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let long = "t".repeat(40 * 1024);
    for i in 0..1_000 {
        let path = format!("/cache/invalidate?table={long}{i}");
        let (status, body) = http(admin, "POST", &path, None).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("PostgreSQL names are at most 131") && body.len() < 300,
            "{body}"
        );
    }
    let (status, body) = http(admin, "POST", "/cache/invalidate?table=public.orders", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(admin, "GET", "/cache", None).await;
    assert_eq!(status, 200, "{body}");
    let cache: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cache["invalidation_marks"], 1, "{cache}");
}
