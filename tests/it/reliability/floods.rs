//! Volume cases: admin HTTP garbage, connection floods over the cap, many distinct statements.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{self, Raw};

/// A named request generator.
pub type Garbage = (&'static str, fn() -> Vec<u8>);

/// Admin requests an attacker could send; each must end with an answer or a close.
pub const ADMIN_GARBAGE: &[Garbage] = &[
    ("admin: partial request line", || {
        b"GET /stats/quer".to_vec()
    }),
    ("admin: partial headers", || {
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec()
    }),
    ("admin: 1 MiB header", || {
        let mut b = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        b.extend(std::iter::repeat_n(b'a', 1 << 20));
        b.extend_from_slice(b"\r\n\r\n");
        b
    }),
    ("admin: 10,000 headers", || {
        let mut b = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..10_000 {
            b.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b
    }),
    ("admin: bad query string", || {
        b"GET /stats/queries?limit=-1&sort=%ZZ&limit=99999999999999999999&&== HTTP/1.1\r\nHost: x\r\n\r\n"
            .to_vec()
    }),
    ("admin: binary garbage", || {
        (0..=255u8).cycle().take(65_536).collect()
    }),
    ("admin: huge Content-Length", || {
        b"POST /rules/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nab".to_vec()
    }),
];

/// Sends `bytes` to the admin port, half-closes, and reads until the server closes.
pub async fn admin_garbage(admin: SocketAddr, bytes: Vec<u8>) {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut sink),
    )
    .await;
    assert!(read.is_ok(), "admin kept a half-closed socket open 20 s");
}

/// Opens `count` TCP connections (startup never sent); returns (held, refused): refused ones
/// close well before `quiet` (2x auth_timeout), held ones only at auth_timeout.
pub async fn connection_flood(
    addr: SocketAddr,
    count: usize,
    quiet: std::time::Duration,
) -> (usize, usize) {
    let mut held = Vec::new();
    for chunk in 0..count.div_ceil(500) {
        let n = 500.min(count - chunk * 500);
        let opened = futures_util::future::join_all((0..n).map(|_| TcpStream::connect(addr))).await;
        for stream in opened.into_iter().flatten() {
            held.push(stream);
        }
    }
    // refused sockets get 53300 and EOF at once; held ones only when auth_timeout ends them
    let start = std::time::Instant::now();
    let ends = futures_util::future::join_all(held.into_iter().map(|mut stream| async move {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(quiet, stream.read_to_end(&mut sink)).await;
        start.elapsed()
    }))
    .await;
    let refused = ends.iter().filter(|e| **e < quiet / 2).count();
    (ends.len() - refused, refused)
}

/// Runs `count` distinct statements (distinct fingerprints) on one session.
pub async fn distinct_statements(addr: SocketAddr, count: usize) {
    let client = harness::connect(addr, harness::TRUST_USER, None)
        .await
        .unwrap();
    for i in 0..count {
        client
            .simple_query(&format!("SELECT 1 AS c{i}"))
            .await
            .unwrap();
    }
}

/// A half-closed session: the client shuts its write side after a query.
pub async fn half_closed(addr: SocketAddr) {
    let mut raw = Raw::startup(addr, &[("user", harness::TRUST_USER)]).await;
    raw.send(&harness::query_message("SELECT 1")).await;
    let _ = raw.stream.shutdown().await;
    let got = raw.read_to_close().await;
    assert!(
        got.iter().any(|(tag, _)| *tag == b'Z'),
        "no answer before close: {got:?}"
    );
}
