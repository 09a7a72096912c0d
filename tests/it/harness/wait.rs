//! Waiting on events in end-to-end tests: `eventually` polls an observation (a stats value,
//! pg_stat_activity, an HTTP answer) until it is what the test waits for, and fails naming what
//! was awaited and what was last seen; the pg_stat_activity views of one backend; and the one
//! bound that only turns a hang into a clear failure.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Cluster, TRUST_USER, connect};

/// How long `eventually` waits before it fails: generous, because the suite runs its tests in
/// parallel on a small shared machine; a passing wait ends at its first good poll.
pub const EVENTUALLY_DEADLINE: Duration = Duration::from_secs(15);

/// Pause between two polls of `eventually`: short, so a wait ends soon after its event.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A bound that only keeps a broken build from hanging until the 20 s `Raw` read timeout (or
/// forever): it fails with a message saying what never ended. Not a performance claim.
pub const HANG_BOUND: Duration = Duration::from_secs(10);

/// Polls `observe` until `done` accepts what it returned, and returns that value. Fails after
/// `EVENTUALLY_DEADLINE`, naming `what` was awaited and the last value observed.
pub async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut observe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    eventually_ok(what, async || {
        let value = observe().await;
        if done(&value) { Ok(value) } else { Err(value) }
    })
    .await
}

/// Polls `attempt` until it returns `Ok`, and returns its value. Fails after
/// `EVENTUALLY_DEADLINE`, naming `what` was awaited and the last `Err` observed.
pub async fn eventually_ok<T, E: std::fmt::Debug>(
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let started = tokio::time::Instant::now();
    loop {
        let last = match attempt().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        let waited = started.elapsed();
        assert!(
            waited < EVENTUALLY_DEADLINE,
            "timed out after {waited:?} waiting for {what}; last observed: {last:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Connects to a pgward started as a subprocess, retrying while it starts.
pub async fn connect_when_up(addr: SocketAddr) -> tokio_postgres::Client {
    let what = format!("the pgward subprocess on {addr} to accept connections");
    eventually_ok(&what, async || connect(addr, TRUST_USER, None).await).await
}

/// The upstream backend's pid of a tokio-postgres session through pgward.
pub async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

impl Cluster {
    /// `state: query` of backend `pid` in pg_stat_activity ("" when there is no such backend):
    /// the query is the running one when active, the last one when idle.
    pub fn activity(&self, pid: i32) -> String {
        self.psql(&format!(
            "SELECT state || ': ' || query FROM pg_stat_activity WHERE pid = {pid}"
        ))
    }

    /// Waits until backend `pid` is running `sql` upstream.
    pub async fn await_running(&self, pid: i32, sql: &str) {
        self.await_activity(pid, &format!("active: {sql}")).await;
    }

    /// Waits until pg_stat_activity shows `want` (`state: query`) for backend `pid`.
    pub async fn await_activity(&self, pid: i32, want: &str) {
        let what = format!("backend {pid} in pg_stat_activity to be {want:?}");
        eventually(&what, async || self.activity(pid), |now| now == want).await;
    }
}
