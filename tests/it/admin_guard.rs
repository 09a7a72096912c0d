//! The admin endpoint under abuse: bounded invalidation bookkeeping, cross-origin and foreign
//! Host requests, a token from a file or the environment, stalled headers and connection floods.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Reads until the server closes; the outer timeout only keeps a broken build from hanging.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut received),
    )
    .await;
    assert!(
        read.is_ok(),
        "the admin endpoint never closed the connection"
    );
    String::from_utf8_lossy(&received).into_owned()
}

const HALF_HEADER: &[u8] = b"GET /stats/queries HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_never_ends_is_closed_at_header_timeout() {
    let mut config = config_for(shared());
    config.admin.header_timeout = pgward::units::HumanDuration(Duration::from_millis(300));
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let mut stalled = TcpStream::connect(admin).await.unwrap();
    stalled.write_all(HALF_HEADER).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut stalled).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // An idle keep-alive connection ends the same way, after its first answer.
    let mut idle = TcpStream::connect(admin).await.unwrap();
    idle.write_all(b"GET /stats/queries HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_refused_while_the_others_are_held() {
    let mut config = config_for(shared());
    config.admin.max_connections = 4;
    config.admin.header_timeout = pgward::units::HumanDuration(Duration::from_secs(120));
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream.write_all(HALF_HEADER).await.unwrap();
        held.push(stream);
    }
    // The kernel hands connections to the accept loop in order: this one comes fifth.
    let mut extra = TcpStream::connect(admin).await.unwrap();
    let refused = read_until_closed(&mut extra).await;
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("admin.max_connections"),
        "{refused}"
    );
    // Once one held connection goes, its slot comes back.
    drop(held.pop());
    let mut answer = String::new();
    for _ in 0..200 {
        // A refused socket is answered 503 at once; read first, so that it is not reset.
        let mut stream = TcpStream::connect(admin).await.unwrap();
        let mut first = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut first)).await;
        if let Ok(Ok(n)) = early {
            answer = String::from_utf8_lossy(first.get(..n).unwrap_or_default()).into_owned();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        stream
            .write_all(
                b"GET /stats/queries HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        answer = read_until_closed(&mut stream).await;
        break;
    }
    assert!(
        answer.contains("200 OK"),
        "a freed slot is used again: {answer}"
    );
    assert_eq!(held.len(), 3);
}
