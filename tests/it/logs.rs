//! The INFO log during an incident, from pgward as its own process (`log.format = "json"`): a
//! flood of exceeded budgets is one verbatim line plus summary lines whose counts add up, and
//! each session has an open and a close line naming who it was.

use std::io::Read;

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::harness::*;

const FLOOD: usize = 20;

/// The pgward process, killed when the test ends early (a failed assertion would otherwise
/// leave it running, holding the test's output pipe open).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_budget_events_is_one_line_and_a_count() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pgward-logs-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        "[[rule]]\nname = \"sleepers\"\nmatch.pattern = 'pg_sleep'\nbudget = \"20ms\"\n",
    )
    .unwrap();
    let config = dir.join("pgward.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nrules = \"rules.toml\"\n\n[upstream]\naddress = \"{}\"\n\n\
             [admin]\nlisten = \"\"\n\n[log]\nlevel = \"info\"\nformat = \"json\"\n",
            shared().addr()
        ),
    )
    .unwrap();
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    drop(connect_when_up(addr).await);
    let url = format!(
        "{} application_name=it-logs",
        conn_string(addr, TRUST_USER, None)
    );
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    // A sleep far past the budget: even on a loaded machine the cancel lands before it ends.
    for _ in 0..FLOOD {
        let e = client
            .simple_query("SELECT pg_sleep(10), 'secret-literal'")
            .await
            .unwrap_err();
        assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57014"));
    }
    drop(client);
    // pgward relayed the Terminate once PostgreSQL's backend of the session is gone; only then
    // is the session's ending the client's, not the shutdown's.
    eventually(
        "the it-logs backend to end",
        async || {
            shared()
                .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'it-logs'")
        },
        |n| n == "0",
    )
    .await;
    // Read to EOF after SIGTERM: every line pgward will write, the last summary included.
    let mut pipe = child.0.stderr.take().unwrap();
    let reader = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        pipe.read_to_string(&mut stderr).map(|_| stderr)
    });
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let read = tokio::time::timeout(HANG_BOUND, reader).await;
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = read.expect("pgward did not exit").unwrap().unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let message = |v: &Value, m: &str| v["fields"]["message"] == m;

    let verbatim = lines.iter().filter(|v| message(v, "time budget exceeded"));
    assert_eq!(verbatim.count(), 1, "{stderr}");
    let summarized: u64 = lines
        .iter()
        .filter(|v| message(v, "repeated events (the first was logged above)"))
        .inspect(|v| assert_eq!(v["fields"]["rule"], "sleepers", "{v}"))
        .inspect(|v| assert_eq!(v["fields"]["outcome"], "budget_exceeded", "{v}"))
        .filter_map(|v| v["fields"]["count"].as_u64())
        .sum();
    assert_eq!(summarized, FLOOD as u64 - 1, "{stderr}");
    assert!(!stderr.contains("secret-literal"), "{stderr}");

    let session = |m: &str| {
        lines
            .iter()
            .find(|v| message(v, m) && v["fields"]["application_name"] == "it-logs")
            .unwrap_or_else(|| panic!("no {m:?} line for it-logs: {stderr}"))
            .clone()
    };
    let opened = session("session opened");
    let closed = session("session closed");
    for line in [&opened, &closed] {
        let span = &line["span"];
        assert_eq!(span["user"], TRUST_USER, "{line}");
        assert!(
            span["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{line}"
        );
        assert!(span["db"].is_string() && span["id"].is_number(), "{line}");
    }
    assert_eq!(opened["span"]["id"], closed["span"]["id"]);
    assert_eq!(closed["fields"]["ending"], "client_terminated", "{closed}");
    // Twenty statements of at least their 20 ms budget each ran in the session.
    let duration = closed["fields"]["duration_ms"].as_u64().unwrap_or(0);
    assert!(duration >= 20 * FLOOD as u64, "{closed}");
}
