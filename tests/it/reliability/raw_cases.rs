//! The raw-bytes catalogue: each case is bytes sent before or after a completed startup.
//! A case ends when pgward closes the socket (error or auth_timeout) or, after auth, when it
//! has answered up to ReadyForQuery after our half-close.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use crate::harness::{Raw, TRUST_USER, message, query_message, startup_bytes};

pub struct Case {
    pub name: &'static str,
    /// true: sent on a fresh socket; false: sent after a trust-auth startup.
    pub before_auth: bool,
    pub bytes: fn() -> Vec<u8>,
}

fn be(n: i32) -> [u8; 4] {
    n.to_be_bytes()
}

fn header(len: i32, code: i32) -> Vec<u8> {
    let mut b = be(len).to_vec();
    b.extend_from_slice(&be(code));
    b
}

fn tagged(tag: u8, len: i32) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&be(len));
    b
}

fn long_sum(terms: usize) -> String {
    let mut sql = String::from("SELECT 1");
    for _ in 1..terms {
        sql.push_str("+1");
    }
    sql
}

fn parse(sql: &str) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    message(b'P', &body)
}

pub const CASES: &[Case] = &[
    Case {
        name: "startup length 0",
        before_auth: true,
        bytes: || be(0).to_vec(),
    },
    Case {
        name: "startup length 3",
        before_auth: true,
        bytes: || header(3, 196_608),
    },
    Case {
        name: "startup length negative",
        before_auth: true,
        bytes: || header(-1, 196_608),
    },
    Case {
        name: "startup declares 1 GiB",
        before_auth: true,
        bytes: || header(1 << 30, 196_608),
    },
    Case {
        name: "startup truncated body",
        before_auth: true,
        bytes: || {
            let mut b = startup_bytes(&[("user", TRUST_USER)]);
            b.truncate(b.len() - 3);
            b
        },
    },
    Case {
        name: "startup unknown protocol",
        before_auth: true,
        bytes: || header(8, 0x0009_0000),
    },
    Case {
        name: "startup params without terminator",
        before_auth: true,
        bytes: || {
            let mut b = header(18, 196_608);
            b.extend_from_slice(b"user\0trust_u");
            b
        },
    },
    Case {
        name: "startup invalid UTF-8 params",
        before_auth: true,
        bytes: || {
            startup_bytes(&[("user", "\u{FFFD}"), ("application_name", "x")])
                .into_iter()
                .map(|c| if c == 0xEF { 0xFF } else { c })
                .collect()
        },
    },
    Case {
        name: "startup 10,000 params",
        before_auth: true,
        bytes: || {
            let params: Vec<(String, String)> =
                (0..10_000).map(|i| (format!("k{i}"), "v".into())).collect();
            let refs: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            startup_bytes(&refs)
        },
    },
    Case {
        name: "SSLRequest x3",
        before_auth: true,
        bytes: || header(8, 80_877_103).repeat(3),
    },
    Case {
        name: "GSSENCRequest x3",
        before_auth: true,
        bytes: || header(8, 80_877_104).repeat(3),
    },
    Case {
        name: "CancelRequest garbage",
        before_auth: true,
        bytes: || {
            let mut b = header(16, 80_877_102);
            b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
            b
        },
    },
    Case {
        name: "CancelRequest short",
        before_auth: true,
        bytes: || header(12, 80_877_102),
    },
    Case {
        name: "stalled login (nothing sent)",
        before_auth: true,
        bytes: Vec::new,
    },
    Case {
        name: "stalled login (half a header)",
        before_auth: true,
        bytes: || vec![0, 0],
    },
    Case {
        name: "unknown tag",
        before_auth: false,
        bytes: || message(b'@', b"zz"),
    },
    Case {
        name: "regular length 3",
        before_auth: false,
        bytes: || tagged(b'Q', 3),
    },
    Case {
        name: "regular length negative",
        before_auth: false,
        bytes: || tagged(b'Q', -5),
    },
    Case {
        name: "regular declares 1 GiB",
        before_auth: false,
        bytes: || tagged(b'Q', 1 << 30),
    },
    Case {
        name: "Query without NUL",
        before_auth: false,
        bytes: || message(b'Q', b"SELECT 1"),
    },
    Case {
        name: "NUL inside SQL",
        before_auth: false,
        bytes: || message(b'Q', b"SELECT 1\0; SELECT 2\0"),
    },
    Case {
        name: "300,000-term sum (simple)",
        before_auth: false,
        bytes: || query_message(&long_sum(300_000)),
    },
    Case {
        name: "300,000-term sum (Parse)",
        before_auth: false,
        bytes: || {
            let mut b = parse(&long_sum(300_000));
            b.extend(message(b'S', b""));
            b
        },
    },
    Case {
        name: "10,000 nested parentheses",
        before_auth: false,
        bytes: || {
            query_message(&format!(
                "SELECT {}1{}",
                "(".repeat(10_000),
                ")".repeat(10_000)
            ))
        },
    },
    Case {
        name: "2,000 nested subqueries",
        before_auth: false,
        bytes: || {
            query_message(&format!(
                "{}1{}",
                "SELECT (".repeat(2_000),
                ")".repeat(2_000)
            ))
        },
    },
    Case {
        name: "$99999999999999 in Parse",
        before_auth: false,
        bytes: || {
            let mut b = parse("SELECT $99999999999999");
            b.extend(message(b'S', b""));
            b
        },
    },
    Case {
        name: "Bind with mismatched counts",
        before_auth: false,
        bytes: || {
            let mut b = parse("SELECT $1::int");
            // 0 formats, 3 params declared but only one sent, 0 result formats
            let mut bind = vec![0u8, 0, 0, 0, 0, 3];
            bind.extend_from_slice(&be(1));
            bind.push(b'1');
            b.extend(message(b'B', &bind));
            b.extend(message(b'S', b""));
            b
        },
    },
    Case {
        name: "Execute unknown portal",
        before_auth: false,
        bytes: || {
            let mut b = message(b'E', b"nope\0\0\0\0\0");
            b.extend(message(b'S', b""));
            b
        },
    },
    Case {
        name: "Sync flood (20,000)",
        before_auth: false,
        bytes: || message(b'S', b"").repeat(20_000),
    },
    Case {
        name: "Describe garbage kind",
        before_auth: false,
        bytes: || {
            let mut b = message(b'D', b"Xfoo\0");
            b.extend(message(b'S', b""));
            b
        },
    },
    Case {
        name: "startup again after auth",
        before_auth: false,
        bytes: || startup_bytes(&[("user", TRUST_USER)]),
    },
];

/// Sends the case's bytes and waits until pgward closes or answers everything.
pub async fn run_case(addr: SocketAddr, case: &Case) {
    let mut raw = if case.before_auth {
        Raw::connect(addr).await
    } else {
        Raw::startup(addr, &[("user", TRUST_USER)]).await
    };
    // the server may close before reading everything; a failed write is an outcome too
    let _ = raw.stream.write_all(&(case.bytes)()).await;
    if !case.before_auth {
        // EOF tells pgward no more bytes are coming, so a truncated message cannot hang it
        let _ = raw.stream.shutdown().await;
    }
    let _ = raw.read_to_close().await;
}
