//! What a client learns about its session is true: the backend pid is PostgreSQL's, Terminate
//! lets the running statement finish, a cancel never reaches the next statement, and
//! `[tls] mode = "require"` turns plaintext clients away (#11 cases 19–22).

use pgward::server::ClientTlsMode;

use crate::harness::*;

/// The pid of the BackendKeyData among `messages`.
fn key_pid(messages: &[(u8, Vec<u8>)]) -> i32 {
    let (_, body) = messages
        .iter()
        .find(|(tag, _)| *tag == b'K')
        .expect("BackendKeyData");
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

/// The first column of the first DataRow among `messages`, as text.
fn first_value(messages: &[(u8, Vec<u8>)]) -> String {
    let (_, row) = messages
        .iter()
        .find(|(tag, _)| *tag == b'D')
        .expect("a DataRow");
    let len = i32::from_be_bytes([row[2], row[3], row[4], row[5]]) as usize;
    String::from_utf8_lossy(&row[6..6 + len]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_the_real_backend_pid() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let mut raw = Raw::connect(proxy.proxy_addr).await;
    raw.send(&startup_bytes(&[
        ("user", TRUST_USER),
        ("database", "postgres"),
    ]))
    .await;
    let login = raw.read_until_ready().await;
    let pid = key_pid(&login);
    raw.send(&query_message("SELECT pg_backend_pid()")).await;
    let answer = raw.read_until_ready().await;
    assert_eq!(first_value(&answer), pid.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_lets_the_running_statement_finish() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let mut both = query_message("SELECT 7 FROM pg_sleep(0.3)");
    both.extend_from_slice(&message(b'X', b""));
    raw.send(&both).await;
    let before_close = raw.read_to_close().await;
    assert_eq!(
        first_value(&before_close),
        "7",
        "the statement's result arrives before the close, as from PostgreSQL"
    );
}

/// Case 22 of issue 11. A cancel is answered (its connection closed) only after PostgreSQL has
/// acted on it, so a client that waits for that close, as libpq's PQcancel does, can never
/// cancel its next statement. PostgreSQL 15 signals the backend twice (its pid, then its process
/// group), so a client that does not wait for the close (tokio-postgres' `cancel_query` returns
/// once the packet is written) can have its next statement cancelled even without pgward; this
/// test therefore sends the CancelRequest itself and waits for EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_never_reaches_the_next_statement() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let watcher = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let mut session = Raw::connect(proxy.proxy_addr).await;
    session
        .send(&startup_bytes(&[
            ("user", TRUST_USER),
            ("database", "postgres"),
        ]))
        .await;
    let login = session.read_until_ready().await;
    let key = login
        .iter()
        .find(|(tag, _)| *tag == b'K')
        .map(|(_, body)| body.clone())
        .expect("BackendKeyData");
    for round in 0..20 {
        let tag = format!("cancel-round-{round}");
        session
            .send(&query_message(&format!("SELECT pg_sleep(30) /* {tag} */")))
            .await;
        let running = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{tag} */'"
        );
        let count = async || watcher.query_one(&running, &[]).await.unwrap().get(0);
        let what = format!("the {tag} statement to run upstream");
        eventually(&what, count, |n: &i64| *n == 1).await;
        send_cancel(proxy.proxy_addr, &key).await;
        let sleeper = session.read_until_ready().await;
        let error = sleeper.iter().find(|(tag, _)| *tag == b'E');
        assert_eq!(
            error.map(|(_, body)| sqlstate(body)).as_deref(),
            Some("57014")
        );
        // The cancel is spent: the next statement runs to its end.
        session.send(&query_message("SELECT pg_sleep(0.05)")).await;
        let next = session.read_until_ready().await;
        let errors: Vec<String> = next
            .iter()
            .filter(|(tag, _)| *tag == b'E')
            .map(|(_, body)| sqlstate(body))
            .collect();
        assert!(
            errors.is_empty(),
            "round {round}: the next statement failed: {errors:?}"
        );
        // A cancel of an idle session does nothing, as PostgreSQL does: answered only once
        // PostgreSQL has ignored it, it cannot land on the statement sent after it.
        send_cancel(proxy.proxy_addr, &key).await;
        session.send(&query_message("SELECT pg_sleep(0.05)")).await;
        let after_idle = session.read_until_ready().await;
        assert!(
            !after_idle.iter().any(|(tag, _)| *tag == b'E'),
            "round {round}: an idle cancel landed on the next statement"
        );
    }
}

/// Sends a CancelRequest for `key` (BackendKeyData's body) and waits for the server to close
/// the connection, as libpq's PQcancel does.
async fn send_cancel(addr: std::net::SocketAddr, key: &[u8]) {
    let mut cancel = Raw::connect(addr).await;
    let mut packet = 16u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102u32.to_be_bytes());
    packet.extend_from_slice(key);
    cancel.send(&packet).await;
    assert!(
        cancel.read_to_close().await.is_empty(),
        "cancel got an answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mode_require_turns_plaintext_clients_away() {
    let cluster = shared();
    let certs = certificates();
    let mut config = config_for(cluster);
    config.server.tls.cert = Some(certs.join("server.crt"));
    config.server.tls.key = Some(certs.join("server.key"));
    config.server.tls.mode = ClientTlsMode::Require;
    let proxy = start_proxy(config).await;
    let err = connect(proxy.proxy_addr, TRUST_USER, None)
        .await
        .expect_err("plaintext login accepted");
    assert_eq!(code(&err), "28000", "{err}");
    // TLS clients still get in.
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=localhost port={} user={TRUST_USER} dbname=postgres sslmode=require",
            proxy.proxy_addr.port()
        ))
        .args(["-X", "-t", "-A", "-c", "SELECT 1"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}
