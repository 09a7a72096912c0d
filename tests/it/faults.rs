//! Faults: unreachable or dying upstream, vanishing clients, garbage and oversized input,
//! connection limits, replication startups, shutdown. Each ends in a clear error, never a hang
//! or a panic, and pgward keeps serving others.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_a_fatal_08006_naming_it() {
    let mut config = config_for(shared());
    let dead = format!("127.0.0.1:{}", free_port());
    config.upstream.address = dead.clone();
    let proxy = start_proxy(config).await;
    let err = connect(proxy.proxy_addr, TRUST_USER, None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "08006", "{err}");
    assert!(db_message(&err).contains(&dead), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_query_is_a_fatal_08006() {
    let cluster = Cluster::start(&["restart_after_crash = off"]);
    let proxy = start_proxy(config_for(&cluster)).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (result, client)
    });
    cluster.await_running(pid, "SELECT pg_sleep(30)").await;
    cluster.kill_backend(pid);
    // Only so that a pgward that never notices the dead backend fails instead of waiting
    // out the 30 s sleep.
    let (result, client) = tokio::time::timeout(HANG_BOUND, query)
        .await
        .expect("no answer after the backend died")
        .unwrap();
    let err = result.unwrap_err();
    let message = err.to_string();
    assert!(
        code(&err) == "08006" || message.contains("connection closed"),
        "{message}"
    );
    assert!(client.is_closed() || client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_08006_when_upstream_closes_without_a_word() {
    let cluster = Cluster::start(&["restart_after_crash = off"]);
    let proxy = start_proxy(config_for(&cluster)).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let pid = raw.backend_pid().await;
    raw.send(&query_message("SELECT pg_sleep(30)")).await;
    cluster.await_running(pid, "SELECT pg_sleep(30)").await;
    cluster.kill_backend(pid);
    let messages = raw.read_to_close().await;
    let (_, error) = messages
        .iter()
        .find(|m| m.0 == b'E')
        .expect("an ErrorResponse before close");
    assert_eq!(sqlstate(error), "08006");
    assert_eq!(field(error, b'V'), "FATAL");
    assert!(
        field(error, b'M').contains(&cluster.addr()),
        "{}",
        field(error, b'M')
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_has_its_query_cancelled() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let app_name = format!("vanishing-{}", free_port());
    let mut raw = Raw::startup(
        proxy.proxy_addr,
        &[("user", TRUST_USER), ("application_name", &app_name)],
    )
    .await;
    raw.send(&query_message("SELECT pg_sleep(60)")).await;
    let active = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app_name}' AND state = 'active'"
    );
    let running = format!("the pg_sleep(60) of {app_name} to run upstream");
    eventually(&running, async || cluster.psql(&active), |n| n == "1").await;
    drop(raw);
    let gone =
        format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app_name}'");
    let ended = format!("the backend of vanished client {app_name} to end");
    eventually(&ended, async || cluster.psql(&gone), |n| n == "0").await;
}

async fn expect_protocol_violation(proxy: &pgward::Running, bytes: &[u8]) {
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    raw.send(bytes).await;
    let messages = raw.read_to_close().await;
    let (_, error) = messages
        .iter()
        .find(|m| m.0 == b'E')
        .unwrap_or_else(|| panic!("no error for {bytes:?}: {messages:?}"));
    assert_eq!(sqlstate(error), "08P01", "{}", field(error, b'M'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_get_08p01_and_a_clean_close() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.server.max_message_size = pgward::units::ByteSize(4096);
    let proxy = start_proxy(config).await;
    expect_protocol_violation(&proxy, &[b'Q', 0, 0, 0, 2]).await; // length below 4
    expect_protocol_violation(&proxy, &[b'Q', 0xff, 0xff, 0xff, 0xf0]).await; // negative length
    expect_protocol_violation(&proxy, &message(b'z', b"what")).await; // unknown type
    expect_protocol_violation(&proxy, &query_message(&"x".repeat(5000))).await; // over the cap

    // Garbage instead of a startup packet, and a startup packet over 10,000 bytes.
    for garbage in [
        b"\x16\x03\x01garbage-garbage".to_vec(),
        vec![0, 0, 0x30, 0, 0, 3, 0, 0],
        vec![0xde, 0xad, 0xbe, 0xef],
    ] {
        let mut raw = Raw::connect(proxy.proxy_addr).await;
        raw.send(&garbage).await;
        let messages = raw.read_to_close().await;
        let (_, error) = messages
            .iter()
            .find(|m| m.0 == b'E')
            .unwrap_or_else(|| panic!("no error for {garbage:?}"));
        assert_eq!(sqlstate(error), "08P01", "{}", field(error, b'M'));
    }
    // pgward is still fine.
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    assert_eq!(
        client
            .query_one("SELECT 1::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limit_gives_53300_and_replication_is_refused() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.server.max_client_connections = 2;
    let proxy = start_proxy(config).await;
    let a = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let _b = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let err = connect(proxy.proxy_addr, TRUST_USER, None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "53300");
    drop(a);
    let connections = async || proxy.app.stats.proxy().client_connections.get();
    let what = "the departed client's slot to be released (client_connections below 2)";
    eventually(what, connections, |n| *n < 2).await;
    connect(proxy.proxy_addr, TRUST_USER, None)
        .await
        .expect("a slot frees up when a client leaves");

    let mut raw = Raw::connect(proxy.proxy_addr).await;
    raw.send(&startup_bytes(&[
        ("user", TRUST_USER),
        ("replication", "database"),
    ]))
    .await;
    let messages = raw.read_to_close().await;
    let (_, error) = messages.iter().find(|m| m.0 == b'E').expect("error");
    assert_eq!(sqlstate(error), "0A000");
    assert!(field(error, b'M').contains("replication"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_sessions_with_57p01_and_stops_accepting() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let addr = proxy.proxy_addr;
    let mut idle = Raw::startup(addr, &[("user", TRUST_USER)]).await;
    let mut busy = Raw::startup(addr, &[("user", TRUST_USER)]).await;
    let busy_pid = busy.backend_pid().await;
    busy.send(&query_message("SELECT pg_sleep(1)")).await;
    cluster.await_running(busy_pid, "SELECT pg_sleep(1)").await;
    proxy.shutdown();
    let messages = idle.read_to_close().await;
    let (_, error) = messages.iter().find(|m| m.0 == b'E').expect("57P01");
    assert_eq!(sqlstate(error), "57P01");
    // The busy session finishes its statement first, then is closed.
    let messages = busy.read_to_close().await;
    let tags: Vec<u8> = messages.iter().map(|m| m.0).collect();
    assert!(
        tags.starts_with(b"TDCZ"),
        "busy session cut short: {:?}",
        String::from_utf8_lossy(&tags)
    );
    // Only so that a shutdown that never completes fails instead of hanging the suite.
    tokio::time::timeout(HANG_BOUND, proxy.wait())
        .await
        .expect("pgward did not stop after its sessions closed");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[test]
fn bad_config_file_exits_2_naming_file_line_and_key() {
    let path = std::env::temp_dir().join(format!("pgward-bad-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\n[upstream]\nadress = \"db:5432\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:1: adress", path.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_cap_are_refused_at_accept() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.server.max_client_connections = 2;
    let proxy = start_proxy(config).await;
    let held = 2 + pgward::server::HANDSHAKE_RESERVE;
    // Sockets that never send a byte fill every place; the next ones are answered at once.
    let mut idle = Vec::new();
    for _ in 0..held {
        idle.push(Raw::connect(proxy.proxy_addr).await);
    }
    // The kernel hands pgward connections in order, so each extra one finds every place taken.
    for _ in 0..10 {
        let mut extra = Raw::connect(proxy.proxy_addr).await;
        let messages = extra.read_to_close().await;
        let (_, error) = messages.iter().find(|m| m.0 == b'E').expect("an error");
        assert_eq!(sqlstate(error), "53300");
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_stalls_ends_at_auth_timeout() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.server.auth_timeout = pgward::units::HumanDuration(Duration::from_secs(1));
    let proxy = start_proxy(config).await;
    // Connects and never sends its startup packet: closed without a word, as PostgreSQL does
    // (the client has not said which protocol it speaks).
    let mut raw = Raw::connect(proxy.proxy_addr).await;
    assert!(raw.read_to_close().await.is_empty());
    // A startup packet and then no password: FATAL 57014.
    let mut raw = Raw::connect(proxy.proxy_addr).await;
    raw.send(&startup_bytes(&[
        ("user", MD5_USER),
        ("database", "postgres"),
    ]))
    .await;
    let messages = raw.read_to_close().await;
    let (_, error) = messages.iter().find(|m| m.0 == b'E').expect("an error");
    assert_eq!(sqlstate(error), "57014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_encryption_request_is_refused_as_postgres_does() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    for first in [[0u8, 0, 0, 8, 4, 210, 22, 48], [0, 0, 0, 8, 4, 210, 22, 47]] {
        let mut raw = Raw::connect(proxy.proxy_addr).await;
        raw.send(&first).await; // GSSENCRequest, then SSLRequest: each is declined once
        let mut answer = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"N");
        raw.send(&first).await;
        let messages = raw.read_to_close().await;
        let (_, error) = messages.iter().find(|m| m.0 == b'E').expect("an error");
        assert_eq!(sqlstate(error), "08P01");
    }
}
