//! Reliability suite (issue #11): pgward runs as a subprocess (the binary cargo built) in front
//! of a real PostgreSQL, a catalogue of hostile inputs is thrown at it, and after each case the
//! process must still be alive, a fresh connection must run `SELECT 1`, and its RSS must stay
//! within a bound of the RSS measured at start.

mod raw_cases;
mod ward;

use raw_cases::{CASES, run_case};
use ward::Ward;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_raw_inputs_leave_pgward_alive_answering_and_bounded() {
    let ward = Ward::start(crate::harness::shared(), &[("auth_timeout", "\"1s\"")]).await;
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
