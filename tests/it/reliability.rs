//! Reliability suite (issue #11): pgward runs as a subprocess (the binary cargo built) in front
//! of a real PostgreSQL, a catalogue of hostile inputs is thrown at it, and after each case the
//! process must still be alive, a fresh connection must run `SELECT 1`, and its RSS must stay
//! within a bound of the RSS measured at start.

mod floods;
mod raw_cases;
mod ward;

use raw_cases::{CASES, run_case};
use ward::Ward;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_raw_inputs_leave_pgward_alive_answering_and_bounded() {
    // The login of each health check counts against auth_timeout too, and on a loaded 2-core
    // machine with ~50 cases in flight 1 s was seen to run out (57014 at login); 5 s bounds
    // the stalled cases and leaves the health checks room.
    let ward = Ward::start(crate::harness::shared(), &[("auth_timeout", "\"5s\"")]).await;
    let ward = &ward;
    // independent cases run concurrently; each one checks health when it ends
    let results = futures_util::future::join_all(CASES.iter().map(|case| async move {
        run_case(ward.addr, case).await;
        ward.check_healthy(case.name).await;
        case.name
    }))
    .await;
    assert_eq!(results.len(), CASES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_garbage_half_closes_and_distinct_statements_stay_bounded() {
    let ward = Ward::start(crate::harness::shared(), &[("auth_timeout", "\"5s\"")]).await;
    let ward = &ward;
    futures_util::future::join_all(
        floods::ADMIN_GARBAGE
            .iter()
            .map(|(name, bytes)| async move {
                floods::admin_garbage(ward.admin, bytes()).await;
                ward.check_healthy(name).await;
            }),
    )
    .await;
    // several times stats.max_fingerprints (5000): the map must evict, not grow
    floods::distinct_statements(ward.addr, 20_000).await;
    ward.check_healthy("20,000 distinct statements").await;
}

/// Case 5 of issue 11: 10,000 idle sockets against a cap of 20. pgward holds at most the cap
/// plus the handshake reserve at once, refuses the rest at accept with 53300, and closes every
/// held one at auth_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_over_a_small_cap_are_refused() {
    let ward = Ward::start(
        crate::harness::shared(),
        &[("auth_timeout", "\"2s\""), ("max_client_connections", "20")],
    )
    .await;
    let before = floods::open_sockets(ward.pid);
    let wait = std::time::Duration::from_secs(10);
    let flood = floods::connection_flood(ward.addr, ward.pid, 10_000, wait).await;
    // over what pgward held idle (listeners, the signal driver's pair): the cap, the handshake
    // reserve, and the one socket being refused at that moment
    let bound = before + 20 + pgward::server::HANDSHAKE_RESERVE + 1;
    assert!(
        flood.peak_sockets <= bound,
        "pgward held {} sockets at once (bound {bound})",
        flood.peak_sockets
    );
    // The cap and the handshake reserve (84) are held until auth_timeout; every other socket
    // is refused at once: measured 9,916 refused, 84 timed out, 0 listen-queue drops in three
    // runs with the 4,096 backlog (with tokio's 1,024: 9,328..9,580, and 201..610 drops whose
    // sockets later got freed slots). Drops on a slower machine would still be retried.
    assert!(
        flood.refused >= 9_800,
        "only {} refused with 53300 ({} timed out, {} never accepted)",
        flood.refused,
        flood.timed_out,
        flood.unanswered
    );
    ward.check_healthy("10,000 idle connections").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_then_half_close_is_answered_before_close() {
    let ward = Ward::start(crate::harness::shared(), &[]).await;
    floods::half_closed(ward.addr).await;
    ward.check_healthy("half-closed session").await;
}
