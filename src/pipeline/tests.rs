//! Deterministic tests of the whole pipeline, driven only through the entry points the relay
//! uses (`on_client_frame`, `drain_replies`, `inspects` / `suppresses` / `on_backend_bytes` /
//! `on_backend_frame`, `next_timer` / `on_timer`, and `admit` with what a returned gate
//! yields), so they hold across refactors of the pipeline's internals. A [`Session`] plays the
//! relay: it feeds client frames, synthetic PostgreSQL replies and timer ticks at injected
//! instants, and keeps the exact bytes that would go upstream and to the client. Nothing
//! sleeps; the only waits are on gates, under tokio's paused clock.
//!
//! One caveat the tests live with: the result cache stamps a stored entry with the real
//! `Instant::now()` (`ResultCache::store`), not an injected instant, so cache tests keep
//! second-scale margins between an entry's ttl and the instants they inject.

/// Compares wire bytes; shows both escaped (`E\0\0\0\xe9SERROR...`) when they differ.
macro_rules! assert_wire {
    ($got:expr, $want:expr $(, $($message:tt)+)?) => {{
        let (got, want): (&[u8], &[u8]) = (&$got, &$want);
        let note: Vec<String> = vec![$(format!($($message)+))?];
        let note = note.concat();
        assert!(
            got == want,
            "wire bytes differ: {note}\n  got: {}\n want: {}",
            got.escape_ascii(),
            want.escape_ascii()
        );
    }};
}

mod admit;
mod batches;
mod budget;
mod cache;
mod frames;
mod held;
mod rules;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use frames::*;

use super::{Admitted, ClientAction, Expiry, FingerprintCache, Gate, Identity, Pipeline, Shared};
use crate::cache::{CacheSettings, ResultCache};
use crate::fingerprint::{FingerprintId, Strings};
use crate::protocol::build::{self, Severity};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::tag::{backend as be, frontend as fe};
use crate::reload::Rules;
use crate::stats::{Counter, Stats, StatsSettings};

/// Process-wide handles with the rules in `toml` (the cache enabled, as by default).
fn shared(toml: &str) -> Arc<Shared> {
    // Each call gets its own file: tests run in parallel and may share a rules text.
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pgward-pipeline-tests-{}-{}",
        std::process::id(),
        FILES.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.toml");
    std::fs::write(&path, toml).unwrap();
    let rules = Rules::load(Some(&path)).unwrap_or_else(|e| panic!("rules: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let stats = Arc::new(Stats::new(&StatsSettings::default()));
    let cache = ResultCache::new(&CacheSettings::default(), stats.on_cache_removed());
    Arc::new(Shared {
        stats,
        fingerprints: FingerprintCache::new(64),
        rules: Arc::new(rules),
        cache,
        slow_statement: None,
        events: Arc::new(crate::eventlog::EventLog::new(std::time::Instant::now())),
    })
}

/// The fingerprint pgward gives `sql` (one statement).
fn fp(shared: &Shared, sql: &str) -> FingerprintId {
    shared
        .fingerprints
        .statement(sql.as_bytes(), Strings::Standard)
        .unwrap()
        .id
}

/// A per-fingerprint counter of `sql` (0 when the fingerprint was never seen).
fn counter(shared: &Shared, sql: &str, counter: Counter) -> u64 {
    shared
        .stats
        .existing(fp(shared, sql))
        .map_or(0, |s| s.counter(counter))
}

/// What a timer tick made the session do.
#[derive(Debug, PartialEq, Eq)]
enum Tick {
    /// No deadline has passed: the relay's timer would not have fired.
    NotDue,
    /// Send a CancelRequest upstream.
    Cancel { grace_until: Instant },
    /// The cancel had no effect within the grace: the session ends with these bytes (FATAL).
    CancelIgnored(Vec<u8>),
    /// Nothing to do (observe mode).
    Nothing,
    /// pgward answered the client itself (the bytes are in `Session::client`).
    Answered,
}

/// One session's pipeline, driven the way `server::relay` drives it.
struct Session {
    pipeline: Pipeline,
    /// Whole client frames not yet taken (the relay's client receive buffer).
    inbox: VecDeque<Vec<u8>>,
    /// The gate the session waits at before it offers `inbox`'s first frame again.
    gate: Option<Gate>,
    /// Bytes sent upstream.
    upstream: Vec<u8>,
    /// Bytes sent to the client.
    client: Vec<u8>,
}

impl Session {
    fn new(shared: &Arc<Shared>) -> Session {
        Session {
            pipeline: Pipeline::new(shared.clone(), Identity::default()),
            inbox: VecDeque::new(),
            gate: None,
            upstream: Vec::new(),
            client: Vec::new(),
        }
    }

    /// The client sends `frames` at `now`.
    fn send(&mut self, frames: &[Vec<u8>], now: Instant) {
        self.inbox.extend(frames.iter().cloned());
        self.offer(now);
    }

    /// Offers the waiting client frames to the pipeline until one must wait at a gate.
    fn offer(&mut self, now: Instant) {
        while self.gate.is_none() {
            let Some(frame) = self.inbox.front() else {
                break;
            };
            let tag = frame[0];
            let action = match tag {
                fe::QUERY
                | fe::PARSE
                | fe::BIND
                | fe::DESCRIBE
                | fe::EXECUTE
                | fe::CLOSE
                | fe::SYNC
                | fe::FLUSH
                | fe::FUNCTION_CALL => {
                    self.pipeline
                        .on_client_frame(tag, &frame[HEADER_LEN..], now)
                }
                _ => ClientAction::Forward,
            };
            self.pipeline.drain_outbound(&mut self.upstream);
            match action {
                ClientAction::Forward => self.upstream.extend_from_slice(frame),
                ClientAction::Replace(bytes) => self.upstream.extend_from_slice(&bytes),
                ClientAction::Drop => {}
                ClientAction::Wait(gate) => {
                    // The frame stays first in the inbox and is offered again after the gate.
                    self.gate = Some(gate);
                    break;
                }
            }
            self.pipeline.drain_replies(&mut self.client);
            self.inbox.pop_front();
        }
    }

    /// True while a frame waits at a gate that has not opened yet (polled once, no waiting).
    fn still_waiting(&mut self) -> bool {
        use futures_util::FutureExt;
        match &mut self.gate {
            Some(gate) => match gate.0.as_mut().now_or_never() {
                None => true,
                Some(admitted) => {
                    // Opened: keep the outcome for `pass_gate` in a gate that is ready.
                    self.gate = Some(Gate(Box::pin(std::future::ready(admitted))));
                    false
                }
            },
            None => false,
        }
    }

    /// Waits until the gate opens, then offers the held frame again at `now`. Returns whether
    /// the wait ended with a concurrency slot (false: queue_timeout passed, or a cache fill).
    async fn pass_gate(&mut self, now: Instant) -> bool {
        let gate = self.gate.take().expect("the session waits at a gate");
        let admitted = gate.0.await;
        let slot = matches!(admitted, Admitted::Slot(Some(_)));
        self.pipeline.admit(admitted);
        self.offer(now);
        slot
    }

    /// PostgreSQL sends `frames` (each whole) at `now`.
    fn backend(&mut self, frames: &[Vec<u8>], now: Instant) {
        for frame in frames {
            let tag = frame[0];
            let inspected = self.pipeline.inspects(tag);
            let suppressed = self.pipeline.suppresses(tag);
            self.pipeline.on_backend_bytes(frame, Some(tag));
            let replacement = if inspected {
                self.pipeline
                    .on_backend_frame(tag, &frame[HEADER_LEN..], now)
            } else {
                None
            };
            match replacement {
                Some(bytes) => self.client.extend_from_slice(&bytes),
                None if suppressed => {}
                None => self.client.extend_from_slice(frame),
            }
            if inspected {
                self.pipeline.drain_replies(&mut self.client);
            }
        }
    }

    /// The session's timer at `now`: fires only when the pipeline's deadline has passed.
    fn tick(&mut self, now: Instant) -> Tick {
        match self.pipeline.next_timer() {
            Some(at) if at <= now => {}
            _ => return Tick::NotDue,
        }
        match self.pipeline.on_timer(now) {
            Expiry::Cancel { grace_until } if grace_until <= now => {
                let mut fatal = Vec::new();
                self.pipeline.cancel_ignored_error(&mut fatal);
                Tick::CancelIgnored(fatal)
            }
            Expiry::Cancel { grace_until } => Tick::Cancel { grace_until },
            Expiry::Nothing => Tick::Nothing,
            Expiry::Answered(bytes) => {
                self.client.extend_from_slice(&bytes);
                Tick::Answered
            }
        }
    }

    fn take_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.client)
    }

    fn take_upstream(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.upstream)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
