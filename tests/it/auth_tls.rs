//! Authentication is Postgres's own (trust, md5, SCRAM relayed), startup errors arrive exactly as
//! Postgres sent them, TLS works on both legs, and cancel keys are pgward's own.

use pgward::upstream::UpstreamTlsMode;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_md5_and_scram_users_log_in() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    for (user, password) in [
        (TRUST_USER, None),
        (MD5_USER, Some(MD5_PASSWORD)),
        (SCRAM_USER, Some(SCRAM_PASSWORD)),
    ] {
        let client = connect(proxy.proxy_addr, user, password)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_come_from_postgres_unchanged() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    for (user, password) in [(SCRAM_USER, "wrong"), (MD5_USER, "wrong")] {
        let err = connect(proxy.proxy_addr, user, Some(password))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "28P01", "{user}: {err}");
        assert!(
            db_message(&err).contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{err}"
        );
    }
    let conn = format!(
        "host=127.0.0.1 port={} user={TRUST_USER} dbname=no_such_db",
        proxy.proxy_addr.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("unknown database fails");
    assert_eq!(code(&err), "3D000");
    assert!(
        db_message(&err).contains("database \"no_such_db\" does not exist"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_is_never_offered_across_upstream_tls() {
    let cluster = shared();
    let mut config = config_for(cluster);
    config.upstream.tls = UpstreamTlsMode::Require;
    let proxy = start_proxy(config).await;
    let mut raw = Raw::connect(proxy.proxy_addr).await;
    raw.send(&startup_bytes(&[
        ("user", SCRAM_USER),
        ("database", "postgres"),
    ]))
    .await;
    let (tag, body) = raw.read_message().await.expect("auth request");
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "SASL expected");
    let offered = String::from_utf8_lossy(&body[4..]).into_owned();
    assert!(offered.contains("SCRAM-SHA-256\0"), "{offered:?}");
    assert!(
        !offered.contains("PLUS"),
        "channel binding offered: {offered:?}"
    );
    // And a real SCRAM login completes over the TLS upstream leg.
    let client = connect(proxy.proxy_addr, SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "upstream leg is not TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_legs() {
    let cluster = shared();
    let certs = certificates();
    let mut config = config_for(cluster);
    config.server.tls.cert = Some(certs.join("server.crt"));
    config.server.tls.key = Some(certs.join("server.key"));
    config.upstream.address = format!("localhost:{}", cluster.port);
    config.upstream.tls = UpstreamTlsMode::VerifyFull;
    config.upstream.ca_file = Some(certs.join("ca.crt"));
    let proxy = start_proxy(config).await;
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host=localhost port={} user={MD5_USER} password={MD5_PASSWORD} dbname=postgres sslmode=verify-full sslrootcert={}",
            proxy.proxy_addr.port(),
            certs.join("ca.crt").display()
        ))
        .args(["-X", "-t", "-A", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", "-c", "\\conninfo"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("t\n"), "upstream leg not TLS: {stdout}");
    assert!(
        stdout.contains("SSL connection (protocol: TLSv1.3"),
        "client leg not TLS: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_means_n_and_verify_full_rejects_a_wrong_ca() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let mut raw = Raw::connect(proxy.proxy_addr).await;
    raw.send(&[0, 0, 0, 8, 4, 210, 22, 47]).await; // SSLRequest
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"N");
    raw.send(&[0, 0, 0, 8, 4, 210, 22, 48]).await; // GSSENCRequest
    tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"N");
    // The session continues in plaintext after both refusals.
    raw.send(&startup_bytes(&[
        ("user", TRUST_USER),
        ("database", "postgres"),
    ]))
    .await;
    assert!(raw.read_until_ready().await.iter().any(|m| m.0 == b'Z'));

    let wrong_ca = std::env::temp_dir().join(format!("pgward-wrong-ca-{}.pem", std::process::id()));
    std::fs::copy(certificates().join("server.crt"), &wrong_ca).unwrap();
    let mut config = config_for(cluster);
    config.upstream.address = format!("localhost:{}", cluster.port);
    config.upstream.tls = UpstreamTlsMode::VerifyFull;
    config.upstream.ca_file = Some(wrong_ca);
    let proxy = start_proxy(config).await;
    let err = connect(proxy.proxy_addr, TRUST_USER, None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "08006", "{err}");
    assert!(
        db_message(&err).contains("TLS handshake with upstream"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_reach_the_right_backend_only() {
    let cluster = shared();
    let proxy = start_proxy(config_for(cluster)).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let pid = backend_pid(&client).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (result, client)
    });
    cluster.await_running(pid, "SELECT pg_sleep(30)").await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    // Only so that a cancel that never arrives fails here instead of after the 30 s sleep.
    let (result, _session) = tokio::time::timeout(HANG_BOUND, sleeper)
        .await
        .expect("the cancelled statement never ended")
        .unwrap();
    assert_eq!(code(&result.unwrap_err()), "57014");
    // The cancel reached PostgreSQL: the session's backend is idle again, its statement ended.
    cluster
        .await_activity(pid, "idle: SELECT pg_sleep(30)")
        .await;

    // A CancelRequest with a made-up key cancels nothing.
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let pid = backend_pid(&client).await;
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(1.5)").await });
    cluster.await_running(pid, "SELECT pg_sleep(1.5)").await;
    for pid in 0..64u32 {
        let mut raw = Raw::connect(proxy.proxy_addr).await;
        let mut packet = vec![0, 0, 0, 16, 4, 210, 22, 46];
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&[1, 2, 3, 4]);
        raw.send(&packet).await;
        // pgward closes a cancel connection once it has handled the request.
        assert!(
            raw.read_to_close().await.is_empty(),
            "a cancel got an answer"
        );
    }
    assert!(
        sleeper.await.unwrap().is_ok(),
        "a wrong key cancelled a query"
    );
}
