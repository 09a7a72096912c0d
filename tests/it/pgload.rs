//! The benchmarks' load generator (examples/pgload) for about a second against the shared
//! cluster, as a SCRAM user: the JSON counts what each workload did — answered requests, a
//! failing statement's SQLSTATE, a connection killed by its own statement reconnected, `\gset`
//! values carried between statements — and reports its own CPU time.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::{SCRAM_PASSWORD, SCRAM_USER, free_port, shared};

/// target/<profile>/examples/pgload next to this test binary (target/<profile>/deps), built
/// (or found up to date) by cargo first: `cargo test --test it` does not build examples.
fn pgload_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", "pgload", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "cargo build --example pgload failed");
    profile_dir.join("examples").join("pgload")
}

#[test]
fn pgload_counts_answers_sqlstates_reconnects_and_cpu() {
    let cluster = shared();
    let dir = std::env::temp_dir().join(format!("pgward-it-pgload-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("gset.sql");
    std::fs::write(
        &script,
        "-- a drawn value, read back through \\gset\n\\set n random(1, 1000)\n\
         SELECT :n AS x \\gset\nSELECT :x::int + 1 AS y;\n",
    )
    .unwrap();
    let conn = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname=postgres",
        cluster.port
    );
    let out = Command::new(pgload_bin())
        .args(["--conn", &conn, "--duration", "1", "--seed", "7"])
        .args(["-w", "name=ok,clients=2,sql=SELECT 1"])
        .args(["-w", "name=fail,clients=1,rate=200,sql=SELECT 1/0"])
        .args([
            "-w",
            "name=kill,clients=1,protocol=extended,sql=SELECT pg_terminate_backend(pg_backend_pid())",
        ])
        .arg("-w")
        .arg(format!(
            "name=gset,clients=2,protocol=prepared,script={}",
            script.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgload failed: {stderr}");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = |name: &str, key: &str| j["workloads"][name][key].as_u64().unwrap();

    // Closed loop, every request answered.
    assert!(w("ok", "ok") > 0, "{j}");
    assert_eq!(w("ok", "ok"), w("ok", "requests"), "{j}");
    assert_eq!(j["workloads"]["ok"]["latency_us"]["count"], w("ok", "ok"));

    // Open loop: each division by zero counted under its SQLSTATE; nothing stopped.
    let div0 = j["workloads"]["fail"]["errors"]["22012"].as_u64().unwrap();
    assert!(div0 > 0, "{j}");
    assert_eq!(div0, w("fail", "requests"), "{j}");
    assert_eq!(w("fail", "ok"), 0);

    // A statement that ends its own connection: 57P01, and the workload reconnects and goes on.
    let killed = j["workloads"]["kill"]["errors"]["57P01"].as_u64().unwrap();
    assert!(killed >= 2, "{j}");
    assert_eq!(w("kill", "reconnects"), killed, "{j}");

    // \gset: the second statement used the first one's column; one row from each.
    assert!(w("gset", "ok") > 0, "{j}");
    assert_eq!(w("gset", "rows"), 2 * w("gset", "ok"), "{j}");
    assert_eq!(w("gset", "client_errors"), 0, "{j}");

    assert!(j["cpu"]["total_s"].as_f64().unwrap() > 0.0, "{j}");
    assert!(
        j["executed"].as_u64().unwrap() >= w("ok", "ok") + div0,
        "{j}"
    );
}
