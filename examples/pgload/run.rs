//! The load itself, per workload: closed-loop connections that each send the next request
//! when the previous one is answered, or Poisson arrivals from a seeded RNG fed through a
//! bounded queue to the connections, with latency measured from each request's intended
//! arrival (queueing included, so coordinated omission does not hide it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{sleep_until, timeout_at};
use tokio_postgres::Config;

use crate::exec::{self, Session};
use crate::script::{Script, Values};
use crate::spec::{Arrivals, Spec};
use crate::stats::{Outcome, Stats};

/// Pause before retrying a failed connection attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// Connection errors printed per workload (the rest are only counted).
const PRINTED_CONNECT_ERRORS: u64 = 5;

/// One workload, ready to run.
pub struct Work {
    pub spec: Spec,
    pub script: Script,
    pub config: Config,
    pub seed: u64,
    /// When its warm-up starts; `measure_from` ends the warm-up; `end` ends arrivals.
    pub begin: Instant,
    pub measure_from: Instant,
    pub end: Instant,
    /// Requests still queued or in flight at this point are given up as unanswered.
    pub hard_stop: Instant,
    pub stats: Mutex<Stats>,
}

impl Work {
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        // A panic while recording cannot leave the counters half-updated in a harmful way.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rng(&self, stream: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A connection, retrying until the hard stop; `None` then.
    async fn session(&self) -> Option<Session> {
        while Instant::now() < self.hard_stop {
            match timeout_at(self.hard_stop.into(), exec::connect(&self.config)).await {
                Ok(Ok(s)) => return Some(s),
                Ok(Err(e)) => {
                    let n = {
                        let mut st = self.stats();
                        st.connect_errors = st.connect_errors.saturating_add(1);
                        st.connect_errors
                    };
                    if n <= PRINTED_CONNECT_ERRORS {
                        eprintln!("pgload: {}: connect: {e}", self.spec.name);
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Send one request meant for `arrival`; `false` when the run is over for this connection.
    async fn one(
        &self,
        sess: &mut Option<Session>,
        arrival: Instant,
        rng: &mut SmallRng,
        v: &mut Values,
    ) -> bool {
        if sess.as_ref().is_none_or(Session::is_closed) {
            *sess = self.session().await;
        }
        let Some(s) = sess.as_mut() else {
            self.stats().record(arrival, Outcome::Unanswered, 0);
            return false;
        };
        self.script.draw(rng, v);
        let done = tokio::select! {
            d = s.run(&self.script, self.spec.protocol, v) => d,
            _ = sleep_until(self.hard_stop.into()) => {
                self.stats().record(arrival, Outcome::Unanswered, 0);
                return false;
            }
        };
        let mut st = self.stats();
        st.record(arrival, done.outcome, done.rows);
        if done.broken {
            st.reconnects = st.reconnects.saturating_add(1);
            *sess = None;
        }
        true
    }
}

/// Run the workload with its connections (opened beforehand; `None` for one that failed).
pub async fn run(work: Arc<Work>, sessions: Vec<Option<Session>>) {
    sleep_until(work.begin.into()).await;
    match work.spec.arrivals {
        Arrivals::Closed => closed(work, sessions).await,
        Arrivals::Open {
            rate,
            queue,
            timeout,
        } => open(work, sessions, rate, queue, timeout).await,
    }
}

async fn closed(work: Arc<Work>, sessions: Vec<Option<Session>>) {
    let mut tasks = Vec::with_capacity(sessions.len());
    for (id, mut sess) in (0u64..).zip(sessions) {
        let w = Arc::clone(&work);
        tasks.push(tokio::spawn(async move {
            let mut rng = w.rng(id);
            let mut v = Values::default();
            while Instant::now() < w.end {
                if !w.one(&mut sess, Instant::now(), &mut rng, &mut v).await {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The open-loop queue: arrivals in, idle connections take them out.
struct Queue {
    rx: tokio::sync::Mutex<mpsc::Receiver<Instant>>,
    /// Connections waiting for a request.
    idle: AtomicUsize,
}

async fn open(
    work: Arc<Work>,
    sessions: Vec<Option<Session>>,
    rate: f64,
    capacity: usize,
    timeout: Duration,
) {
    let (tx, rx) = mpsc::channel(capacity);
    let queue = Arc::new(Queue {
        rx: tokio::sync::Mutex::new(rx),
        idle: AtomicUsize::new(0),
    });
    let mut tasks = Vec::with_capacity(sessions.len());
    for (id, mut sess) in (0u64..).zip(sessions) {
        let (w, q) = (Arc::clone(&work), Arc::clone(&queue));
        tasks.push(tokio::spawn(async move {
            let mut rng = w.rng(id);
            let mut v = Values::default();
            while let Some(arrival) = next(&w, &q).await {
                if arrival.elapsed() > timeout {
                    w.stats().record(arrival, Outcome::Timeout, 0);
                } else if !w.one(&mut sess, arrival, &mut rng, &mut v).await {
                    break;
                }
            }
        }));
    }
    // Arrivals come from a thread of their own: its sleep wakes within tens of microseconds of
    // each arrival, where the runtime's millisecond timer would add up to a millisecond of the
    // generator's own lag to every latency.
    let (w, q) = (Arc::clone(&work), Arc::clone(&queue));
    let _ = tokio::task::spawn_blocking(move || schedule(&w, &q, tx, rate)).await;
    for t in tasks {
        let _ = t.await;
    }
    // What the connections did not take before the hard stop was not answered.
    let mut rx = queue.rx.lock().await;
    while let Ok(arrival) = rx.try_recv() {
        work.stats().record(arrival, Outcome::Unanswered, 0);
    }
}

/// Poisson arrivals at `rate` into the queue until the workload's end: exponential gaps from
/// the run's seed, so a run can be repeated exactly.
fn schedule(w: &Work, q: &Queue, tx: mpsc::Sender<Instant>, rate: f64) {
    let mut rng = w.rng(u64::MAX);
    let mut t = w.begin;
    loop {
        let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
        t += Duration::from_secs_f64(gap.min(crate::spec::MAX_SECS));
        if t >= w.end {
            break;
        }
        let wait = t.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let late = q.idle.load(Ordering::Relaxed) == 0 || tx.capacity() < tx.max_capacity();
        match tx.try_send(t) {
            Ok(()) if late => w.stats().queued(t),
            Ok(()) => {}
            Err(TrySendError::Full(at) | TrySendError::Closed(at)) => {
                w.stats().record(at, Outcome::Dropped, 0);
            }
        }
    }
}

/// The next queued arrival; `None` once arrivals ended and the queue is empty, or at the hard
/// stop.
async fn next(w: &Work, q: &Queue) -> Option<Instant> {
    let mut rx = tokio::select! {
        g = q.rx.lock() => g,
        _ = sleep_until(w.hard_stop.into()) => return None,
    };
    q.idle.fetch_add(1, Ordering::Relaxed);
    let got = tokio::select! {
        a = rx.recv() => a,
        _ = sleep_until(w.hard_stop.into()) => None,
    };
    q.idle.fetch_sub(1, Ordering::Relaxed);
    match got {
        Some(a) if Instant::now() >= w.hard_stop => {
            w.stats().record(a, Outcome::Unanswered, 0);
            None
        }
        other => other,
    }
}

/// `clients` connections opened 50 at a time (so no listen backlog overflows), and how many
/// attempts failed; a failed one is `None`, left to its worker to retry.
pub async fn open_sessions(
    config: &Config,
    name: &str,
    clients: u32,
) -> (Vec<Option<Session>>, u64) {
    let mut out = Vec::new();
    let mut errors = 0u64;
    let mut left = clients;
    while left > 0 {
        let n = left.min(50);
        left = left.saturating_sub(n);
        let batch = (0..n).map(|_| exec::connect(config));
        for r in futures_util::future::join_all(batch).await {
            match r {
                Ok(s) => out.push(Some(s)),
                Err(e) => {
                    errors = errors.saturating_add(1);
                    if errors <= PRINTED_CONNECT_ERRORS {
                        eprintln!("pgload: {name}: connect: {e}");
                    }
                    out.push(None);
                }
            }
        }
    }
    (out, errors)
}
