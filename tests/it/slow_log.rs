//! The slow statement log: pgward as its own process with `log.format = "json"`; a statement
//! over `log.slow_statement` produces one JSON line with its fingerprint, normalized text,
//! duration, rule and outcome, and never its literals.

use std::io::Read;

use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_logged_once_as_json_without_literals() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pgward-slowlog-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"sleepers\"\nmatch.pattern = 'pg_sleep'\nbudget = \"5s\"\n",
    )
    .unwrap();
    let config = dir.join("pgward.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nrules = \"rules.toml\"\n\n[upstream]\naddress = \"{}\"\n\n\
             [admin]\nlisten = \"\"\n\n[log]\nlevel = \"warn\"\nslow_statement = \"200ms\"\nformat = \"json\"\n",
            shared().addr()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = connect_when_up(addr).await;
    client
        .simple_query("SELECT pg_sleep(0.35), 'secret-literal'")
        .await
        .unwrap();
    client.simple_query("SELECT 'fast-literal'").await.unwrap();
    drop(client);
    // SIGTERM: pgward ends its sessions and exits, and only then does its stderr end, so what
    // is read to EOF is every line it will ever write: "once" needs no guess at log latency.
    let mut pipe = child.stderr.take().unwrap();
    let reader = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        pipe.read_to_string(&mut stderr).map(|_| stderr)
    });
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    // Only so that a pgward that does not stop on SIGTERM fails instead of hanging.
    let read = tokio::time::timeout(HANG_BOUND, reader).await;
    let _ = child.kill();
    let _ = child.wait();
    let stderr = read
        .expect("pgward did not exit on SIGTERM")
        .unwrap()
        .unwrap();

    let slow: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "slow statement")
        .collect();
    assert_eq!(slow.len(), 1, "{stderr}");
    let fields = &slow[0]["fields"];
    assert_eq!(fields["query"], "select pg_sleep($1),$2", "{stderr}");
    assert_eq!(
        fields["fingerprint"].as_str().map(str::len),
        Some(16),
        "{stderr}"
    );
    assert_eq!(fields["rule"], "sleepers", "{stderr}");
    assert_eq!(fields["outcome"], "ok", "{stderr}");
    assert!(
        fields["duration_ms"].as_f64().unwrap_or(0.0) >= 300.0,
        "{stderr}"
    );
    assert_eq!(slow[0]["target"], "pgward::slow", "{stderr}");
    assert!(
        !stderr.contains("secret-literal") && !stderr.contains("0.35"),
        "{stderr}"
    );
}
