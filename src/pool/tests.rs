//! The pool's queue, limits and timers against a fake connector, in paused tokio time: every
//! timeout is exact and nothing sleeps for real.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// What the fake "server" did, shared by the connector and its connections.
#[derive(Default)]
struct Backend {
    opened: AtomicU64,
    closed: AtomicU64,
    resets: AtomicU64,
    fail_logins: AtomicBool,
    fail_resets: AtomicBool,
    /// Connections (by number) that died while idle.
    dead: Mutex<HashSet<u64>>,
}

struct FakeConn {
    n: u64,
    backend: Arc<Backend>,
}

impl Connection for FakeConn {
    fn alive(&self) -> bool {
        !self.backend.dead.lock().unwrap().contains(&self.n)
    }

    async fn reset(&mut self, _sql: &str) -> Result<(), ResetError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if self.backend.fail_resets.load(SeqCst) {
            return Err(ResetError::NotIdle);
        }
        self.backend.resets.fetch_add(1, SeqCst);
        Ok(())
    }

    async fn close(self) {
        self.backend.closed.fetch_add(1, SeqCst);
    }
}

struct Fake(Arc<Backend>);

impl Connector for Fake {
    type Conn = FakeConn;

    async fn open(&self) -> Result<FakeConn, LoginError> {
        // A login takes time, as a real one does.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if self.0.fail_logins.load(SeqCst) {
            return Err(LoginError::NoPassword { user: "app".into() });
        }
        let n = self.0.opened.fetch_add(1, SeqCst) + 1;
        Ok(FakeConn {
            n,
            backend: self.0.clone(),
        })
    }
}

fn limits(size: usize) -> Limits {
    Limits {
        size,
        min_size: 0,
        idle_timeout: None,
        lifetime: None,
        wait_timeout: Duration::from_secs(5),
        max_waiting: 100,
        reset_query: Some(Arc::from("DISCARD ALL")),
    }
}

fn pool(limits: Limits) -> (Pool<Fake>, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    (
        Pool::new("shop", "app", limits, Fake(backend.clone())),
        backend,
    )
}

/// Lets spawned tasks run until `done` holds (paused time: no real waiting).
async fn settle(what: &str, done: impl Fn() -> bool) {
    for i in 0..10_000 {
        if done() {
            return;
        }
        // Yields first (no time passes), then lets paused time reach the fakes' timers.
        if i < 100 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn a_released_connection_is_reused() {
    let (pool, backend) = pool(limits(2));
    let first = pool.checkout().await.unwrap();
    let id = first.id();
    assert_eq!(first.n, 1);
    pool.release(first, Release::Clean);
    let again = pool.checkout().await.unwrap();
    assert_eq!((again.n, again.id()), (1, id));
    assert_eq!(backend.opened.load(SeqCst), 1);
    let s = pool.snapshot();
    assert_eq!((s.sv_active, s.sv_idle, s.checkouts, s.waits), (1, 0, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn pool_size_holds_and_waiters_are_served_in_order() {
    let (pool, backend) = pool(limits(2));
    let a = pool.checkout().await.unwrap();
    let b = pool.checkout().await.unwrap();
    let third = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("third waits", || pool.snapshot().cl_waiting == 1).await;
    let fourth = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("fourth waits", || pool.snapshot().cl_waiting == 2).await;
    assert_eq!(pool.snapshot().sv_active, 2);
    let (an, bn) = (a.n, b.n);
    b.release(Release::Clean);
    let third = third.await.unwrap().unwrap();
    assert_eq!(third.n, bn, "the first waiter gets the first release");
    a.release(Release::Clean);
    let fourth = fourth.await.unwrap().unwrap();
    assert_eq!(fourth.n, an);
    assert_eq!(backend.opened.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_at_query_wait_timeout_with_53300() {
    let (pool, _) = pool(limits(1));
    let held = pool.checkout().await.unwrap();
    let started = Instant::now();
    let e = pool.checkout().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(matches!(e, PoolError::WaitTimeout { .. }), "{e}");
    assert_eq!(e.sqlstate(), "53300");
    assert!(e.to_string().contains("query_wait_timeout"), "{e}");
    let s = pool.snapshot();
    assert_eq!((s.checkout_timeouts, s.cl_waiting), (1, 0));
    held.release(Release::Clean);
    assert_eq!(pool.snapshot().sv_idle, 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let mut l = limits(1);
    l.max_waiting = 1;
    let (pool, _) = pool(l);
    let _held = pool.checkout().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("one waits", || pool.snapshot().cl_waiting == 1).await;
    let started = Instant::now();
    let e = pool.checkout().await.unwrap_err();
    assert!(matches!(e, PoolError::QueueFull { max: 1, .. }), "{e}");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(pool.snapshot().queue_full, 1);
    waiter.abort();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_the_queue_takes_nothing_with_it() {
    let (pool, _) = pool(limits(1));
    let held = pool.checkout().await.unwrap();
    let gone = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("waits", || pool.snapshot().cl_waiting == 1).await;
    gone.abort();
    settle("left the queue", || pool.snapshot().cl_waiting == 0).await;
    held.release(Release::Clean);
    let s = pool.snapshot();
    assert_eq!((s.sv_idle, s.sv_active), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_died_idle_is_replaced() {
    let (pool, backend) = pool(limits(2));
    let s = pool.checkout().await.unwrap();
    pool.release(s, Release::Clean);
    backend.dead.lock().unwrap().insert(1);
    let fresh = pool.checkout().await.unwrap();
    assert_eq!(fresh.n, 2);
    assert_eq!(pool.snapshot().servers_closed.died_idle, 1);
    // Noticed by the upkeep too, without a checkout.
    fresh.release(Release::Clean);
    backend.dead.lock().unwrap().insert(2);
    pool.tick();
    let s = pool.snapshot();
    assert_eq!((s.sv_idle, s.servers_closed.died_idle), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn lifetime_closes_at_release_never_while_held() {
    let mut l = limits(2);
    l.lifetime = Some(Duration::from_secs(10));
    let (pool, backend) = pool(l);
    let held = pool.checkout().await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    pool.tick();
    assert_eq!(
        pool.snapshot().sv_active,
        1,
        "held past its lifetime, not closed"
    );
    held.release(Release::Clean);
    settle("closed", || backend.closed.load(SeqCst) == 1).await;
    let s = pool.snapshot();
    assert_eq!((s.sv_idle, s.servers_closed.lifetime), (0, 1));
    assert_eq!(pool.checkout().await.unwrap().n, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_down_to_min_pool_size_and_upkeep_refills_it() {
    let mut l = limits(3);
    l.min_size = 1;
    l.idle_timeout = Some(Duration::from_secs(60));
    let (pool, backend) = pool(l);
    pool.tick();
    settle("warmed", || pool.snapshot().sv_idle == 1).await;
    let servers = [
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
        pool.checkout().await.unwrap(),
    ];
    for s in servers {
        s.release(Release::Clean);
    }
    tokio::time::advance(Duration::from_secs(59)).await;
    pool.tick();
    assert_eq!(pool.snapshot().sv_idle, 3);
    tokio::time::advance(Duration::from_secs(2)).await;
    pool.tick();
    let s = pool.snapshot();
    assert_eq!((s.sv_idle, s.servers_closed.idle_timeout), (1, 2));
    // The one kept dies: the next tick opens a replacement.
    backend.dead.lock().unwrap().extend([1, 2, 3]);
    pool.tick();
    settle("refilled", || pool.snapshot().sv_idle == 1).await;
    assert_eq!(backend.opened.load(SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn dirty_connections_are_reset_or_closed() {
    let (pool, backend) = pool(limits(1));
    let s = pool.checkout().await.unwrap();
    s.release(Release::Dirty);
    assert_eq!(pool.snapshot().sv_tested, 1);
    // The reset runs before anyone gets the connection.
    let again = pool.checkout().await.unwrap();
    assert_eq!((again.n, backend.resets.load(SeqCst)), (1, 1));
    backend.fail_resets.store(true, SeqCst);
    again.release(Release::Dirty);
    let fresh = pool.checkout().await.unwrap();
    assert_eq!(fresh.n, 2);
    assert_eq!(pool.snapshot().servers_closed.reset_failed, 1);

    let mut l = limits(1);
    l.reset_query = None;
    let (pool, _) = self::pool(l);
    pool.checkout().await.unwrap().release(Release::Dirty);
    let s = pool.snapshot();
    assert_eq!((s.sv_idle, s.servers_closed.dirty_without_reset), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_server_is_closed_and_its_room_goes_to_a_waiter() {
    let (pool, backend) = pool(limits(1));
    let held = pool.checkout().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("waits", || pool.snapshot().cl_waiting == 1).await;
    drop(held);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.n, 2);
    assert_eq!(pool.snapshot().servers_closed.broken, 1);
    assert_eq!(backend.opened.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_login_is_the_callers_error_and_frees_its_room() {
    let (pool, backend) = pool(limits(1));
    backend.fail_logins.store(true, SeqCst);
    let e = pool.checkout().await.unwrap_err();
    assert!(
        matches!(e, PoolError::Login(LoginError::NoPassword { .. })),
        "{e}"
    );
    let s = pool.snapshot();
    assert_eq!((s.sv_login, s.server_login_failures), (0, 1));
    backend.fail_logins.store(false, SeqCst);
    assert_eq!(pool.checkout().await.unwrap().n, 1);
}

#[tokio::test(start_paused = true)]
async fn waits_are_measured() {
    let (pool, _) = pool(limits(1));
    let held = pool.checkout().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("waits", || pool.snapshot().cl_waiting == 1).await;
    tokio::time::advance(Duration::from_millis(2_000)).await;
    let s = pool.snapshot();
    assert_eq!((s.maxwait, s.maxwait_us), (2, 0));
    held.release(Release::Clean);
    let _second = waiter.await.unwrap().unwrap();
    let s = pool.snapshot();
    // The first checkout waited for its login (10 ms), the second in the queue (2 s).
    assert_eq!((s.checkouts, s.waits), (2, 2));
    assert_eq!(s.wait_max_us, 2_000_000);
    assert_eq!(s.wait_time_us, 2_010_000);
    let le_10ms = WAIT_BUCKETS_SECONDS
        .iter()
        .position(|b| *b == 0.01)
        .unwrap();
    let le_5s = WAIT_BUCKETS_SECONDS.iter().position(|b| *b == 5.0).unwrap();
    assert_eq!((s.wait_buckets[le_10ms], s.wait_buckets[le_5s]), (1, 1));
    assert_eq!(s.wait_buckets.iter().sum::<u64>(), 2);
}

#[tokio::test(start_paused = true)]
async fn closing_fails_waiters_and_closes_idle_connections() {
    let (pool, backend) = pool(limits(2));
    let a = pool.checkout().await.unwrap();
    let b = pool.checkout().await.unwrap();
    b.release(Release::Clean);
    let c = pool.checkout().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("waits", || pool.snapshot().cl_waiting == 1).await;
    c.release(Release::Clean);
    // c went to the waiter; nothing idle now. Close with one held.
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.n, 2);
    pool.close().await;
    assert!(matches!(
        pool.checkout().await,
        Err(PoolError::Closed { .. })
    ));
    a.release(Release::Clean);
    got.release(Release::Clean);
    settle("closed", || backend.closed.load(SeqCst) == 2).await;
    assert_eq!(pool.snapshot().servers_closed.pool_closed, 2);
}

#[tokio::test]
async fn the_registry_is_bounded_and_never_drops_a_pool_in_use() {
    let settings = PoolSettings {
        max_pools: 1,
        ..PoolSettings::default()
    };
    let upstream = crate::upstream::Upstream::new(crate::upstream::UpstreamSettings::default());
    let pools = Pools::new(&settings, Arc::new(upstream.unwrap())).unwrap();
    let shop = pools.get("shop", "app").unwrap();
    assert!(pools.get("shop", "app").is_ok(), "the same pool again");
    let e = pools.get("crm", "app").err().unwrap();
    assert!(matches!(e, PoolError::TooManyPools { max: 1 }), "{e}");
    assert_eq!(e.sqlstate(), "53300");
    drop(shop);
    let crm = pools.get("crm", "app").unwrap();
    assert_eq!((pools.len(), crm.database()), (1, "crm"));
    let names: Vec<_> = pools.snapshot().into_iter().map(|p| p.database).collect();
    assert_eq!(names, ["crm"]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_while_its_connection_opens_leaves_it_to_the_pool() {
    let (pool, backend) = pool(limits(1));
    let gone = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout().await }
    });
    settle("opening", || pool.snapshot().sv_login == 1).await;
    gone.abort();
    settle("opened and idle", || pool.snapshot().sv_idle == 1).await;
    let s = pool.snapshot();
    assert_eq!(
        (s.sv_active, s.sv_login, backend.opened.load(SeqCst)),
        (0, 0, 1)
    );
    assert_eq!(pool.checkout().await.unwrap().n, 1);
}

#[tokio::test(start_paused = true)]
async fn many_clients_churning_never_exceed_pool_size_and_leave_nothing_behind() {
    let (pool, backend) = pool(limits(3));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..40u32 {
        let pool = pool.clone();
        clients.spawn(async move {
            for round in 0..25u32 {
                let server = pool.checkout().await.expect("within query_wait_timeout");
                let s = pool.snapshot();
                assert!(
                    s.sv_active + s.sv_idle + s.sv_login + s.sv_tested <= 3,
                    "{s:?}"
                );
                tokio::time::sleep(Duration::from_millis(u64::from((client + round) % 4))).await;
                match (client + round) % 7 {
                    0 => server.release(Release::Dirty),
                    1 => drop(server),
                    2 => server.release(Release::Broken),
                    _ => server.release(Release::Clean),
                }
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    settle("resets done", || pool.snapshot().sv_tested == 0).await;
    let s = pool.snapshot();
    assert_eq!((s.sv_active, s.cl_waiting, s.sv_login), (0, 0, 0), "{s:?}");
    assert!(s.sv_idle <= 3, "{s:?}");
    assert_eq!(s.checkouts, 1000);
    let closed: u64 = s.servers_closed.by_reason().iter().map(|(_, n)| n).sum();
    assert_eq!(
        backend.opened.load(SeqCst),
        closed + s.sv_idle as u64,
        "{s:?}"
    );
}
