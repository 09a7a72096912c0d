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

/// What a connection flood saw.
pub struct Flood {
    /// Sockets answered 53300 (refused at accept).
    pub refused: usize,
    /// Sockets closed by pgward without 53300 (held in a handshake slot until auth_timeout).
    pub timed_out: usize,
    /// Sockets still open when the flood was read: connections the kernel's full listen queue
    /// never handed to pgward (the client saw its connect succeed; the server dropped the ACK).
    pub unanswered: usize,
    /// Most sockets pgward had open at once while the flood lasted.
    pub peak_sockets: usize,
}

/// Opens `count` TCP connections that never send a startup packet, reads each until pgward
/// closes it (at most `wait`), sampling how many sockets pgward (`pid`) holds meanwhile.
pub async fn connection_flood(
    addr: SocketAddr,
    pid: u32,
    count: usize,
    wait: std::time::Duration,
) -> Flood {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(open_sockets(pid));
                std::thread::yield_now();
            }
            peak
        })
    };
    let mut held = Vec::new();
    for chunk in 0..count.div_ceil(CHUNK) {
        let n = CHUNK.min(count - chunk * CHUNK);
        let opened = futures_util::future::join_all((0..n).map(|_| TcpStream::connect(addr))).await;
        held.extend(opened.into_iter().flatten());
    }
    assert_eq!(held.len(), count, "connects failed");
    let answers = futures_util::future::join_all(held.into_iter().map(|mut stream| async move {
        let mut got = Vec::new();
        match tokio::time::timeout(wait, stream.read_to_end(&mut got)).await {
            Err(_) => None,
            Ok(_) => Some(got.windows(5).any(|w| w == b"53300")),
        }
    }))
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_sockets = sampler.await.unwrap();
    let refused = answers.iter().filter(|r| **r == Some(true)).count();
    let unanswered = answers.iter().filter(|r| r.is_none()).count();
    Flood {
        refused,
        timed_out: answers.len() - refused - unanswered,
        unanswered,
        peak_sockets,
    }
}

/// Connects in flight at once: well under the listen backlog, so few overflow it.
const CHUNK: usize = 200;

/// Sockets among `pid`'s open file descriptors.
pub fn open_sockets(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
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
