//! pgward as a subprocess for the reliability suite: config file, start, liveness, RSS.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::harness::{self, Cluster};

/// RSS growth allowed over the start value, in KiB.
const RSS_BOUND_KIB: u64 = 64 * 1024;

pub struct Ward {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: std::sync::Mutex<Child>,
    pub pid: u32,
    start_rss_kib: u64,
    _dir: std::path::PathBuf,
}

impl Ward {
    /// Starts the cargo-built pgward with extra top-level `key = value` lines.
    pub async fn start(cluster: &Cluster, settings: &[(&str, &str)]) -> Ward {
        let port = harness::free_port();
        let admin = harness::free_port();
        let dir = std::env::temp_dir().join(format!("pgward-rely-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut toml = format!("listen = \"127.0.0.1:{port}\"\n");
        for (k, v) in settings {
            toml.push_str(&format!("{k} = {v}\n"));
        }
        toml.push_str(&format!(
            "[upstream]\naddress = \"{}\"\ntls = \"disable\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            cluster.addr()
        ));
        let config = dir.join("pgward.toml");
        std::fs::write(&config, toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgward"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pgward.log")).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = harness::connect_when_up(addr).await;
        client.simple_query("SELECT 1").await.unwrap();
        let start_rss_kib = rss_kib(pid);
        Ward {
            addr,
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
            child: std::sync::Mutex::new(child),
            pid,
            start_rss_kib,
            _dir: dir,
        }
    }

    /// (a) alive, (b) a fresh connection runs SELECT 1, (c) RSS within the bound.
    pub async fn check_healthy(&self, case: &str) {
        let exited = self.child.lock().unwrap().try_wait().unwrap();
        assert!(exited.is_none(), "{case}: pgward exited: {exited:?}");
        let client = harness::connect(self.addr, harness::TRUST_USER, None)
            .await
            .unwrap_or_else(|e| panic!("{case}: fresh connection failed: {e:?}"));
        let rows = client.simple_query("SELECT 1").await;
        assert!(rows.is_ok(), "{case}: SELECT 1 failed: {rows:?}");
        let rss = rss_kib(self.pid);
        assert!(
            rss <= self.start_rss_kib + RSS_BOUND_KIB,
            "{case}: RSS {rss} KiB, start {} KiB",
            self.start_rss_kib
        );
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// VmRSS of `pid` in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
