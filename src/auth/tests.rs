//! The exchange end to end over an in-memory socket, with rust-postgres' client side of SCRAM
//! and md5 (an implementation independent of pgward's) and secrets PostgreSQL itself stored.
//! Time is paused, so the failed-login delay is measured on tokio's clock, without waiting.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::vectors::*;
use super::*;
use crate::protocol::backend;
use crate::protocol::backend::auth as code;

const DELAY: Duration = Duration::from_millis(700);

fn policy(method: Method) -> Policy {
    Policy::new(method, DELAY, None).unwrap()
}

fn secret(text: &str) -> Secret {
    Secret::parse(text).unwrap()
}

/// What the client saw: authenticated, or the FATAL error's SQLSTATE and message.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Ok,
    Fatal(String, String),
}

async fn read(io: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    io.read_exact(&mut body).await.unwrap();
    (head[0], body)
}

fn fatal(body: &[u8]) -> Seen {
    let code = backend::error_fields(body).code.unwrap();
    let message = backend::error_message(body).unwrap();
    Seen::Fatal(
        String::from_utf8(code.to_vec()).unwrap(),
        String::from_utf8(message.to_vec()).unwrap(),
    )
}

/// A client logging in as `user` with `password`, as libpq would; returns what it saw and the
/// salt of a SCRAM challenge.
async fn client(mut io: DuplexStream, user: &str, password: &str) -> (Seen, Option<String>) {
    let mut scram = None;
    let mut salt = None;
    loop {
        let (kind, body) = read(&mut io).await;
        if kind == b'E' {
            return (fatal(&body), salt);
        }
        assert_eq!(kind, b'R');
        let data = backend::auth_data(&body);
        let mut out = BytesMut::new();
        match backend::auth_code(&body).unwrap() {
            code::OK => return (Seen::Ok, salt),
            code::MD5_PASSWORD => {
                let hash = md5_hash(
                    user.as_bytes(),
                    password.as_bytes(),
                    data.try_into().unwrap(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).unwrap();
            }
            code::SASL => {
                let c = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, c.message(), &mut out).unwrap();
                scram = Some(c);
            }
            code::SASL_CONTINUE => {
                let text = std::str::from_utf8(data).unwrap();
                salt = text
                    .split(',')
                    .find_map(|a| a.strip_prefix("s="))
                    .map(str::to_owned);
                let c = scram.as_mut().unwrap();
                c.update(data).unwrap();
                frontend::sasl_response(c.message(), &mut out).unwrap();
            }
            code::SASL_FINAL => {
                scram.as_mut().unwrap().finish(data).unwrap();
                continue;
            }
            other => panic!("unexpected request {other}"),
        }
        io.write_all(&out).await.unwrap();
    }
}

/// Runs pgward's side against `client`, returning the server's result, what the client saw,
/// the SCRAM salt, and how long (tokio time) the whole login took.
async fn run(
    user: &str,
    password: &str,
    stored: Option<&Secret>,
    policy: &Policy,
) -> (Result<(), AuthError>, Seen, Option<String>, Duration) {
    let (mut server, client_end) = tokio::io::duplex(4096);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let (result, (seen, salt)) = tokio::join!(
        login(&mut server, user, stored, policy, deadline),
        client(client_end, user, password)
    );
    (result, seen, salt, start.elapsed())
}

fn failed(user: &str) -> Seen {
    Seen::Fatal(
        "28P01".into(),
        format!("password authentication failed for user \"{user}\""),
    )
}

#[tokio::test(start_paused = true)]
async fn scram_against_a_postgresql_verifier() {
    let stored = secret(SCRAM_VERIFIER);
    let p = policy(Method::Md5);
    let (result, seen, salt, took) = run(SCRAM_USER, SCRAM_PASSWORD, Some(&stored), &p).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen, Seen::Ok);
    // The verifier's own salt, whatever password_encryption says for plaintext.
    assert_eq!(salt.as_deref(), Some("z0k+y5tyFFv7jrA/aIxGhQ=="));
    assert!(took < DELAY, "{took:?}");

    let (result, seen, _, took) = run(SCRAM_USER, "wrong", Some(&stored), &p).await;
    assert!(
        matches!(result, Err(AuthError::Failed { known: true })),
        "{result:?}"
    );
    assert_eq!(seen, failed(SCRAM_USER));
    assert!(took >= DELAY, "the failed login was not delayed: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn md5_against_a_postgresql_hash_and_plaintext() {
    let p = policy(Method::ScramSha256);
    let stored = secret(MD5_SECRET);
    let (_, seen, salt, _) = run(MD5_USER, MD5_PASSWORD, Some(&stored), &p).await;
    assert_eq!(
        (seen, salt),
        (Seen::Ok, None),
        "an md5 hash gets an md5 challenge"
    );
    let (_, seen, _, _) = run(MD5_USER, "wrong", Some(&stored), &p).await;
    assert_eq!(seen, failed(MD5_USER));

    let plain = secret("plain-secret");
    let md5 = policy(Method::Md5);
    let (_, seen, salt, _) = run("app", "plain-secret", Some(&plain), &md5).await;
    assert_eq!((seen, salt), (Seen::Ok, None));
    let (_, seen, _, _) = run("app", "plain-secreT", Some(&plain), &md5).await;
    assert_eq!(seen, failed("app"));
}

#[tokio::test(start_paused = true)]
async fn plaintext_is_challenged_with_scram_by_default() {
    let p = policy(Method::ScramSha256);
    let plain = secret(UNICODE_PASSWORD);
    let (_, seen, first, _) = run("app", UNICODE_PASSWORD, Some(&plain), &p).await;
    assert_eq!(seen, Seen::Ok);
    assert!(first.is_some());
    let (_, seen, again, _) = run("app", "pa ss\u{df}", Some(&plain), &p).await;
    assert_eq!(
        seen,
        Seen::Ok,
        "SASLprep maps the no-break space on both sides"
    );
    assert_eq!(first, again, "a user's salt is stable");
    let (_, seen, _, _) = run("app", "wrong", Some(&plain), &p).await;
    assert_eq!(seen, failed("app"));
}

/// An unknown user goes through the whole exchange and reads exactly what a wrong password
/// reads, after the same delay; the made-up salt is stable per user like a real one.
#[tokio::test(start_paused = true)]
async fn an_unknown_user_reads_like_a_wrong_password() {
    for method in [Method::ScramSha256, Method::Md5] {
        let p = policy(method);
        let (result, seen, salt, took) = run("nobody", "guess", None, &p).await;
        assert!(
            matches!(result, Err(AuthError::Failed { known: false })),
            "{result:?}"
        );
        assert_eq!(seen, failed("nobody"));
        assert!(took >= DELAY, "{took:?}");
        if method == Method::ScramSha256 {
            let (_, _, again, _) = run("nobody", "other", None, &p).await;
            let (_, _, someone, _) = run("someone", "other", None, &p).await;
            assert!(salt.is_some());
            assert_eq!(salt, again);
            assert_ne!(salt, someone);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_protocol_violation_is_08p01_and_a_client_that_leaves_is_not_delayed() {
    let p = policy(Method::ScramSha256);
    let (mut server, mut client) = tokio::io::duplex(4096);
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = tokio::spawn(async move { login(&mut server, "nobody", None, &p, deadline).await });
    let (kind, _) = read(&mut client).await;
    assert_eq!(kind, b'R');
    client.write_all(b"Q\0\0\0\x0dSELECT 1\0").await.unwrap();
    let (kind, body) = read(&mut client).await;
    assert_eq!(kind, b'E');
    assert_eq!(
        fatal(&body),
        Seen::Fatal(
            "08P01".into(),
            "expected SASL response, got message type 81".into()
        )
    );
    assert!(matches!(task.await.unwrap(), Err(AuthError::Protocol(_))));

    let p = policy(Method::ScramSha256);
    let (mut server, client) = tokio::io::duplex(4096);
    drop(client);
    let start = Instant::now();
    let result = login(
        &mut server,
        "nobody",
        None,
        &p,
        start + Duration::from_secs(60),
    )
    .await;
    assert!(
        matches!(result, Err(AuthError::ClientLeft | AuthError::Io(_))),
        "{result:?}"
    );
    assert!(start.elapsed() < DELAY);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stalls_gets_57014_at_the_deadline() {
    let p = policy(Method::ScramSha256);
    let (mut server, mut client) = tokio::io::duplex(4096);
    let deadline = Instant::now() + Duration::from_secs(5);
    let result = login(&mut server, "nobody", None, &p, deadline).await;
    assert!(matches!(result, Err(AuthError::Timeout)), "{result:?}");
    let (kind, _) = read(&mut client).await;
    assert_eq!(kind, b'R');
    let (kind, body) = read(&mut client).await;
    assert_eq!(kind, b'E');
    assert!(matches!(fatal(&body), Seen::Fatal(code, _) if code == "57014"));
}

/// The users file is read first; a reload swaps the whole table, and a bad file keeps the
/// table in force.
#[tokio::test]
async fn the_authenticator_looks_users_up_in_the_file_and_reloads_it() {
    let dir = std::env::temp_dir().join(format!("pgward-auth-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("userlist.txt");
    std::fs::write(&path, format!("\"{SCRAM_USER}\" \"{SCRAM_VERIFIER}\"\n")).unwrap();
    let settings = AuthSettings {
        auth_file: Some(path.clone()),
        ..AuthSettings::default()
    };
    let upstream = Arc::new(Upstream::new(crate::upstream::UpstreamSettings::default()).unwrap());
    let auth = Authenticator::from_settings(&settings, upstream, None)
        .unwrap()
        .unwrap();
    assert!(matches!(
        auth.lookup(SCRAM_USER).await.unwrap().as_deref(),
        Some(Secret::Scram(_))
    ));
    assert!(auth.lookup(MD5_USER).await.unwrap().is_none());
    std::fs::write(&path, format!("\"{MD5_USER}\" \"{MD5_SECRET}\"\n")).unwrap();
    assert_eq!(auth.reload_users_file().unwrap(), 1);
    assert!(auth.lookup(SCRAM_USER).await.unwrap().is_none());
    assert!(auth.lookup(MD5_USER).await.unwrap().is_some());
    std::fs::write(&path, "not a users file\n").unwrap();
    assert!(auth.reload_users_file().is_err());
    assert!(auth.lookup(MD5_USER).await.unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
