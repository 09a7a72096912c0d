//! pgward authenticating clients itself (`pgward::auth`), with tokio-postgres logging in: a
//! small listener runs `auth::authenticate` on each accepted socket, against a users file
//! holding the secrets PostgreSQL stored (`pg_shadow`), and against `auth_query` on a
//! throwaway cluster. Good passwords log in by SCRAM-SHA-256 and md5; a wrong password and an
//! unknown user both get 28P01 in PostgreSQL's words, after the failed-login delay (the
//! console's login waits it too).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgward::auth::{AuthSettings, Authenticator};
use pgward::protocol::backend::TransactionStatus;
use pgward::protocol::build;
use pgward::protocol::startup::{self, StartupPacket};
use pgward::upstream::{Upstream, UpstreamSettings, UpstreamTlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

const DELAY: Duration = Duration::from_millis(300);

fn upstream(cluster: &Cluster) -> Arc<Upstream> {
    let settings = UpstreamSettings {
        address: cluster.addr(),
        tls: UpstreamTlsMode::Disable,
        ..UpstreamSettings::default()
    };
    Arc::new(Upstream::new(settings).unwrap())
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgward-it-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads the StartupMessage's user.
async fn startup_user(socket: &mut TcpStream) -> Option<String> {
    let mut len = [0u8; 4];
    socket.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; startup::body_len(len).ok()?];
    socket.read_exact(&mut body).await.ok()?;
    match startup::decode(&body).ok()? {
        StartupPacket::Startup(message) => Some(message.user().to_owned()),
        _ => None,
    }
}

/// A listener that authenticates every client with `auth`, then completes the startup (so
/// tokio-postgres' connect returns) and holds the socket until the client leaves.
async fn auth_listener(auth: Authenticator) -> SocketAddr {
    let auth = Arc::new(auth);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let auth = auth.clone();
            tokio::spawn(async move {
                let Some(user) = startup_user(&mut socket).await else {
                    return;
                };
                let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                if pgward::auth::authenticate(&mut socket, &user, &auth, deadline)
                    .await
                    .is_err()
                {
                    return;
                }
                let mut out = Vec::new();
                build::parameter_status(&mut out, "server_version", "15.0");
                build::backend_key_data(&mut out, 1, &[0, 0, 0, 1]);
                build::ready_for_query(&mut out, TransactionStatus::Idle);
                let _ = socket.write_all(&out).await;
                let mut sink = [0u8; 256];
                while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    addr
}

/// Logs in; `Ok` or the error's SQLSTATE and message, and how long it took.
async fn log_in(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> (Result<(), (String, String)>, Duration) {
    let start = Instant::now();
    let result = match connect(addr, user, Some(password)).await {
        Ok(_client) => Ok(()),
        Err(e) => Err((code(&e), db_message(&e))),
    };
    (result, start.elapsed())
}

fn failed(user: &str) -> Result<(), (String, String)> {
    Err((
        "28P01".into(),
        format!("password authentication failed for user \"{user}\""),
    ))
}

/// Good passwords log in; wrong ones and unknown users read the same 28P01, each after the
/// delay (a floor on wall time: the delay itself, never a ceiling).
async fn check_logins(addr: SocketAddr, good: &[(&str, &str)]) {
    for (user, password) in good {
        let (result, _) = log_in(addr, user, password).await;
        assert_eq!(result, Ok(()), "{user}");
        let (result, took) = log_in(addr, user, "wrong-password").await;
        assert_eq!(result, failed(user), "{user}");
        assert!(took >= DELAY, "{user}: the failed login took only {took:?}");
    }
    let (result, took) = log_in(addr, "nobody_here", "wrong-password").await;
    assert_eq!(
        result,
        failed("nobody_here"),
        "an unknown user reads like a wrong password"
    );
    assert!(took >= DELAY, "{took:?}");
}

fn stored_secret(cluster: &Cluster, user: &str) -> String {
    cluster.psql(&format!(
        "SELECT passwd FROM pg_shadow WHERE usename = '{user}'"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_file_with_postgresql_secrets_logs_clients_in_by_scram_and_md5() {
    let cluster = shared();
    let scram = stored_secret(cluster, SCRAM_USER);
    let md5 = stored_secret(cluster, MD5_USER);
    assert!(
        scram.starts_with("SCRAM-SHA-256$") && md5.starts_with("md5"),
        "{scram} {md5}"
    );
    let file = temp_file(
        "userlist.txt",
        &format!(
            "# from pg_shadow\n\"{SCRAM_USER}\" \"{scram}\"\n\"{MD5_USER}\" \"{md5}\"\n\
             \"plain_user\" \"plain-secret\"\n"
        ),
    );
    let settings = AuthSettings {
        auth_file: Some(file),
        failed_login_delay: pgward::units::HumanDuration(DELAY),
        ..AuthSettings::default()
    };
    let auth = Authenticator::from_settings(&settings, upstream(cluster), None)
        .unwrap()
        .unwrap();
    let addr = auth_listener(auth).await;
    check_logins(
        addr,
        &[
            (SCRAM_USER, SCRAM_PASSWORD),
            (MD5_USER, MD5_PASSWORD),
            ("plain_user", "plain-secret"),
        ],
    )
    .await;
}

/// libpq (psql, with its default `channel_binding=prefer`) logs in by SCRAM and md5, and reads
/// a wrong password's FATAL as PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_by_scram_and_md5_and_is_refused_in_postgresql_words() {
    let cluster = shared();
    let file = temp_file(
        "psql-userlist.txt",
        &format!(
            "\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n",
            stored_secret(cluster, SCRAM_USER),
            stored_secret(cluster, MD5_USER)
        ),
    );
    let settings = AuthSettings {
        auth_file: Some(file),
        failed_login_delay: pgward::units::HumanDuration(Duration::ZERO),
        ..AuthSettings::default()
    };
    let auth = Authenticator::from_settings(&settings, upstream(cluster), None)
        .unwrap()
        .unwrap();
    let addr = auth_listener(auth).await;
    let psql = async |user: &str, password: &str| {
        tokio::process::Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=disable",
                addr.port()
            ))
            .args(["-X", "-c", "\\conninfo"])
            .env("PGPASSWORD", password)
            .output()
            .await
            .unwrap()
    };
    for (user, password) in [(SCRAM_USER, SCRAM_PASSWORD), (MD5_USER, MD5_PASSWORD)] {
        let out = psql(user, password).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{user}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("as user \"{user}\"")), "{stdout}");
        for wrong_user in [user, "nobody_here"] {
            let out = psql(wrong_user, "wrong-password").await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            let expected =
                format!("FATAL:  password authentication failed for user \"{wrong_user}\"");
            assert!(stderr.contains(&expected), "{stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_reads_secrets_from_postgresql_through_the_auth_user() {
    let cluster = Cluster::start(&[]);
    // PgBouncer's recommended setup: the auth user reads pg_shadow only through a function.
    cluster.psql(&format!(
        "CREATE FUNCTION public.pgward_lookup(name text, OUT usename name, OUT passwd text) \
         RETURNS SETOF record LANGUAGE sql SECURITY DEFINER \
         AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = name $$; \
         REVOKE ALL ON FUNCTION public.pgward_lookup(text) FROM PUBLIC; \
         GRANT EXECUTE ON FUNCTION public.pgward_lookup(text) TO {SCRAM_USER}; \
         CREATE ROLE late_user LOGIN PASSWORD 'late-secret';"
    ));
    let query = "SELECT usename, passwd FROM public.pgward_lookup($1)";
    // The auth user logs in by SCRAM (pg_hba says scram-sha-256 for it), its password from a file.
    let settings = |password: &str| AuthSettings {
        auth_query: Some(query.into()),
        auth_user: Some(SCRAM_USER.into()),
        auth_password_file: Some(temp_file("auth_password", &format!("{password}\n"))),
        failed_login_delay: pgward::units::HumanDuration(DELAY),
        ..AuthSettings::default()
    };
    let auth = Authenticator::from_settings(&settings(SCRAM_PASSWORD), upstream(&cluster), None)
        .unwrap()
        .unwrap();
    let addr = auth_listener(auth).await;
    check_logins(
        addr,
        &[
            (SCRAM_USER, SCRAM_PASSWORD),
            (MD5_USER, MD5_PASSWORD),
            ("late_user", "late-secret"),
        ],
    )
    .await;
    // A role without a password cannot log in through pgward either.
    let (result, _) = log_in(addr, TRUST_USER, "anything").await;
    assert_eq!(result, failed(TRUST_USER));
    // Answers are cached for auth_query_cache_ttl: a role dropped after its login still logs in
    // until its entry expires.
    cluster.psql("DROP ROLE late_user");
    let (result, _) = log_in(addr, "late_user", "late-secret").await;
    assert_eq!(result, Ok(()), "served from the cache");

    // The auth user's password is wrong: the lookup fails and the client is told so, not 28P01.
    let auth =
        Authenticator::from_settings(&settings("not-the-password"), upstream(&cluster), None)
            .unwrap()
            .unwrap();
    let addr = auth_listener(auth).await;
    let (result, _) = log_in(addr, MD5_USER, MD5_PASSWORD).await;
    assert_eq!(
        result,
        Err((
            "08006".into(),
            format!("pgward could not look up the password of user \"{MD5_USER}\"")
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_console_login_waits_the_delay_too() {
    let mut config = config_for(shared());
    config.console.users = vec!["ops".into()];
    config.console.password = Some("console-secret".into());
    config.auth.failed_login_delay = pgward::units::HumanDuration(DELAY);
    let proxy = start_proxy(config).await;
    let addr = proxy.proxy_addr;
    for (user, password) in [
        ("ops", "wrong-password"),
        ("not_an_admin", "console-secret"),
    ] {
        let conn = format!(
            "host={} port={} user={user} password={password} dbname=pgward",
            addr.ip(),
            addr.port()
        );
        let start = Instant::now();
        let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in"));
        let took = start.elapsed();
        assert_eq!(code(&err), "28P01", "{user}: {err}");
        assert_eq!(
            db_message(&err),
            format!("password authentication failed for user \"{user}\"")
        );
        assert!(took >= DELAY, "{user}: {took:?}");
    }
}

/// `pgward check` refuses an `[auth]` that cannot work, naming the key (and the users file's
/// line, without the secret), with the config's exit status 2.
#[test]
fn pgward_check_names_bad_auth_settings() {
    let users = temp_file("bad-userlist.txt", "\"ok\" \"pw\"\n\"app\" topsecret\n");
    let cases = [
        (
            "[auth]\nfailed_login_delay = \"1m\"\n".to_owned(),
            "auth.failed_login_delay: 60s is out of range",
        ),
        (
            "[auth]\nauth_query = \"SELECT usename, passwd FROM pg_shadow WHERE usename = $1\"\n"
                .to_owned(),
            "auth.auth_user: auth_query needs auth_user",
        ),
        (
            format!("[auth]\nauth_file = \"{}\"\n", users.display()),
            "bad-userlist.txt:2: expected \"user\" \"secret\"",
        ),
    ];
    for (text, expected) in cases {
        let config = temp_file("auth-check.toml", &text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
            .args(["check", "--config"])
            .arg(&config)
            .env_remove("PGWARD_CONFIG")
            .env_remove("PGWARD_ADMIN_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!stderr.contains("topsecret"), "{stderr}");
    }
}
