//! Transaction mode end to end, tokio-postgres against pgward against a throwaway PostgreSQL:
//! pgward logs clients in itself (users file), sessions share server connections per
//! transaction, a named statement prepared on one server connection runs on another, session
//! settings follow the client, DEALLOCATE ALL is followed, session features are refused (0A000), a cancel reaches only the right
//! backend, and a pool with no free connection within query_wait_timeout answers 53300.

use std::time::Duration;

use pgward::config::Config;
use pgward::pool::PoolMode;
use pgward::units::HumanDuration;

use crate::harness::*;

const PASSWORD: &str = "pooled-secret";
/// The application_name of the pools' own logins (by pool size: each test has its own).
const APP: &str = "pgward-txmode";

fn config(cluster: &Cluster, pool_size: usize) -> Config {
    let dir = std::env::temp_dir().join(format!("pgward-it-txmode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join(format!("users-{pool_size}.txt"));
    std::fs::write(&users, format!("\"{TRUST_USER}\" \"{PASSWORD}\"\n")).unwrap();
    let mut config = config_for(cluster);
    config.pool.pool_mode = PoolMode::Transaction;
    config.pool.pool_size = pool_size;
    config.pool.query_wait_timeout = HumanDuration(Duration::from_secs(1));
    config.auth.auth_file = Some(users);
    config.auth.failed_login_delay = HumanDuration(Duration::ZERO);
    config
        .pool
        .startup_parameters
        .insert("application_name".into(), format!("{APP}-{pool_size}"));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_share_servers_and_keep_statements_and_settings() {
    let proxy = start_proxy(config(shared(), 2)).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = connect(proxy.proxy_addr, TRUST_USER, Some(PASSWORD))
            .await
            .unwrap();
        assert_eq!(
            client
                .query_one("SELECT 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
        clients.push(client);
    }
    // Five sessions, at most pool_size = 2 PostgreSQL backends for them.
    let backends = shared().psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}-2'"
    ));
    let backends: i64 = backends.trim().parse().unwrap();
    assert!((1..=2).contains(&backends), "{backends} backends");
    let b = clients.pop().unwrap();
    let a = clients.pop().unwrap();

    let statement = a
        .prepare("SELECT pg_backend_pid(), $1::int + 1")
        .await
        .unwrap();
    let row = a.query_one(&statement, &[&41i32]).await.unwrap();
    let first: i32 = row.get(0);
    assert_eq!(row.get::<_, i32>(1), 42);
    // The server it was prepared on goes away: the next execution lands on a new one, where
    // pgward prepares the statement before the Bind.
    shared().psql(&format!("SELECT pg_terminate_backend({first})"));
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}");
    eventually(
        "the backend to end",
        async || shared().psql(&sql),
        |n| n == "0",
    )
    .await;
    let row = a.query_one(&statement, &[&1i32]).await.unwrap();
    assert_ne!(
        row.get::<_, i32>(0),
        first,
        "ran on another server connection"
    );
    assert_eq!(row.get::<_, i32>(1), 2);

    // The same text prepared by b, on a server that already has it under pgward's name.
    let again = b
        .prepare("SELECT pg_backend_pid(), $1::int + 1")
        .await
        .unwrap();
    assert_eq!(
        b.query_one(&again, &[&2i32])
            .await
            .unwrap()
            .get::<_, i32>(1),
        3
    );

    // A session setting follows its client to every server, and no other client sees it.
    a.batch_execute("SET statement_timeout = '1234ms'")
        .await
        .unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(shown(&a).await, "1234ms");
    assert_eq!(shown(&b).await, "0");
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(shown(&b).await, "0", "the server a used was reset");
    assert_eq!(shown(&a).await, "1234ms");

    // DEALLOCATE ALL drops the client's statements; preparing again works.
    a.batch_execute("DEALLOCATE ALL").await.unwrap();
    let err = a.query_one(&statement, &[&1i32]).await.unwrap_err();
    assert_eq!(code(&err), "26000", "{err}");
    let fresh = a.prepare("SELECT $1::int * 2").await.unwrap();
    assert_eq!(
        a.query_one(&fresh, &[&21i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
}

async fn shown(client: &tokio_postgres::Client) -> String {
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cancel_and_the_pool_queue() {
    let proxy = start_proxy(config(shared(), 1)).await;
    let err = connect(proxy.proxy_addr, TRUST_USER, Some("wrong"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "28P01", "{err}");
    let err = connect(proxy.proxy_addr, "nobody", Some(PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "28P01", "{err}");

    let a = connect(proxy.proxy_addr, TRUST_USER, Some(PASSWORD))
        .await
        .unwrap();
    // A cancel reaches the statement running for this client.
    let token = a.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = a.batch_execute("SELECT pg_sleep(30)").await;
        (a, result)
    });
    let canceller = tokio::spawn(async move {
        // Sent until the statement is seen running: a cancel between statements cancels nothing.
        loop {
            let active = shared().psql(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
            );
            if active.trim() == "1" {
                break;
            }
            tokio::task::yield_now().await;
        }
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let (a, result) = sleeping.await.unwrap();
    canceller.await.unwrap();
    let err = result.unwrap_err();
    assert_eq!(code(&err), "57014", "{err}");
    assert_eq!(
        a.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );

    // The pool's one server is held by a's transaction: b waits query_wait_timeout, then 53300.
    a.batch_execute("BEGIN").await.unwrap();
    let b = connect(proxy.proxy_addr, TRUST_USER, Some(PASSWORD)).await;
    let err = match b {
        Ok(b) => b.query_one("SELECT 1", &[]).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(code(&err), "53300", "{err}");
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        a.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_mid_transaction_fails_only_its_client() {
    let proxy = start_proxy(config(shared(), 3)).await;
    let a = connect(proxy.proxy_addr, TRUST_USER, Some(PASSWORD))
        .await
        .unwrap();
    let b = connect(proxy.proxy_addr, TRUST_USER, Some(PASSWORD))
        .await
        .unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let held: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    shared().psql(&format!("SELECT pg_terminate_backend({held})"));
    let err = a.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(
        err.is_closed() || code(&err) == "57P01" || code(&err) == "08006",
        "{err}"
    );
    // The other session, and a new one, are untouched.
    assert_eq!(
        b.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
    let c = connect(proxy.proxy_addr, TRUST_USER, Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("SELECT 3", &[]).await.unwrap().get::<_, i32>(0),
        3
    );
}
