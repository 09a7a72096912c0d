//! The admin endpoint under abuse: bounded invalidation bookkeeping, cross-origin and foreign
//! Host requests, a token from a file or the environment, stalled headers and connection floods.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::stats_http::http;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_table_names_are_refused_and_leave_no_bookkeeping() {
    let proxy = start_proxy(config_for(shared())).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let long = "t".repeat(40 * 1024);
    for i in 0..1_000 {
        let path = format!("/cache/invalidate?table={long}{i}");
        let (status, body) = http(admin, "POST", &path, None).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains("PostgreSQL names are at most 131") && body.len() < 300,
            "{body}"
        );
    }
    let (status, body) = http(admin, "POST", "/cache/invalidate?table=public.orders", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(admin, "GET", "/cache", None).await;
    assert_eq!(status, 200, "{body}");
    let cache: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cache["invalidation_marks"], 1, "{cache}");
}

/// Reads until the server closes; the outer timeout only keeps a broken build from hanging.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut received),
    )
    .await;
    assert!(
        read.is_ok(),
        "the admin endpoint never closed the connection"
    );
    String::from_utf8_lossy(&received).into_owned()
}

const HALF_HEADER: &[u8] = b"GET /stats/queries HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_never_ends_is_closed_at_header_timeout() {
    let mut config = config_for(shared());
    config.admin.header_timeout = pgward::units::HumanDuration(Duration::from_millis(300));
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let mut stalled = TcpStream::connect(admin).await.unwrap();
    stalled.write_all(HALF_HEADER).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut stalled).await;
    // A floor, not a ceiling (load only makes it longer): not closed before header_timeout.
    assert!(started.elapsed() >= Duration::from_millis(250));
    // An idle keep-alive connection ends the same way, after its first answer.
    let mut idle = TcpStream::connect(admin).await.unwrap();
    idle.write_all(b"GET /stats/queries HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_refused_while_the_others_are_held() {
    let mut config = config_for(shared());
    config.admin.max_connections = 4;
    config.admin.header_timeout = pgward::units::HumanDuration(Duration::from_secs(120));
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream.write_all(HALF_HEADER).await.unwrap();
        held.push(stream);
    }
    // The kernel hands connections to the accept loop in order: this one comes fifth.
    let mut extra = TcpStream::connect(admin).await.unwrap();
    let refused = read_until_closed(&mut extra).await;
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("admin.max_connections"),
        "{refused}"
    );
    // Once one held connection goes, its slot comes back (when pgward has seen it close).
    drop(held.pop());
    let what = "a request to be served in the freed admin slot";
    let answer = eventually(what, async || get(admin, "/stats/queries").await, |a| ok(a)).await;
    assert!(
        answer.contains("200 OK"),
        "a freed slot is used again: {answer}"
    );
    assert_eq!(held.len(), 3);
}

/// One request with the given extra header lines ("Name: value\r\n" each); status and body.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream).await;
    split_response(&response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_and_foreign_hosts_are_refused_with_the_default_config() {
    let mut config = config_for(shared());
    config.admin.allowed_hosts = vec!["pgward.internal".into()];
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let own = format!("Host: {admin}\r\n");
    for path in ["/stats/reset", "/cache/invalidate?all"] {
        for from in [
            "Origin: http://evil.example\r\n",
            "Origin: null\r\n",
            "Referer: http://evil.example/attack.html\r\n",
            "Content-Type: text/plain\r\n",
            "Content-Type: application/x-www-form-urlencoded\r\n",
        ] {
            let (status, body) = request(admin, "POST", path, &format!("{own}{from}")).await;
            assert_eq!(status, 403, "{path} {from}: {body}");
            assert!(body.contains("refused"), "{body}");
        }
        // The endpoint's own page, and curl without a body.
        let same = format!("{own}Origin: http://{admin}\r\n");
        let (status, body) = request(admin, "POST", path, &same).await;
        assert_eq!(status, 200, "{path} same origin: {body}");
        let (status, body) = request(admin, "POST", path, &own).await;
        assert_eq!(status, 200, "{path} curl-style: {body}");
    }
    // DNS rebinding: the browser sends the attacker's name as Host.
    let (status, body) = request(
        admin,
        "GET",
        "/stats/queries",
        "Host: evil.example:6480\r\n",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.allowed_hosts"), "{body}");
    for host in [
        format!("localhost:{}", admin.port()),
        "pgward.internal:6480".to_owned(),
        admin.to_string(),
    ] {
        let headers = format!("Host: {host}\r\n");
        let (status, body) = request(admin, "GET", "/stats/queries", &headers).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_a_file() {
    let path = std::env::temp_dir().join(format!("pgward-it-token-{}", std::process::id()));
    std::fs::write(&path, "from-a-file\n").unwrap();
    let mut config = config_for(shared());
    config.admin.token_file = Some(path.clone());
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    let own = format!("Host: {admin}\r\n");
    let (status, _) = request(admin, "GET", "/stats/queries", &own).await;
    assert_eq!(status, 401);
    let with = format!("{own}Authorization: Bearer from-a-file\r\n");
    let (status, body) = request(admin, "GET", "/stats/queries", &with).await;
    assert_eq!(status, 200, "{body}");
    std::fs::remove_file(&path).unwrap();
}

/// `pgward check --config` on `config`, with `env` set; exit code and stderr.
fn check(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("pgward-it-check-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.toml"), "# no rules\n").unwrap();
    std::fs::write(dir.join("pgward.toml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .arg("--config")
        .arg(dir.join("pgward.toml"))
        .arg("check")
        .env_remove("PGWARD_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_a_non_loopback_admin_listener_without_a_token() {
    let open = "rules = \"rules.toml\"\n[admin]\nlisten = \"0.0.0.0:6480\"\n";
    let (code, stderr) = check(open, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("admin.token") && stderr.contains("not a loopback"),
        "{stderr}"
    );
    let (code, stderr) = check(open, &[("PGWARD_ADMIN_TOKEN", "from-env")]);
    assert_eq!(code, Some(0), "{stderr}");
    let both = format!("{open}token = \"t\"\n");
    let (code, stderr) = check(&both, &[("PGWARD_ADMIN_TOKEN", "from-env")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("only one of"), "{stderr}");
    let (code, stderr) = check("rules = \"rules.toml\"\n", &[]);
    assert_eq!(code, Some(0), "loopback default: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_loses_its_slot_after_header_timeout() {
    let mut config = config_for(shared());
    config.admin.max_connections = 1;
    config.admin.header_timeout = pgward::units::HumanDuration(Duration::from_millis(500));
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    // A thousand pipelined dashboard pages (17 KB each) are far more than the socket buffers
    // hold: pgward's write stalls while this client reads nothing.
    let mut greedy = TcpStream::connect(admin).await.unwrap();
    let one = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    greedy.write_all(&one.repeat(1_000)).await.unwrap();
    // The only slot is the greedy client's until the stalled write times out; then another
    // client is served. Before that it is refused (503); without a write limit, forever.
    let what = "another client to be served once the stalled write timed out";
    let answer = eventually(what, async || get(admin, "/healthz").await, |a| ok(a)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the stalled client kept the only slot: {answer}"
    );
    drop(greedy);
}

/// Whether `answer` is a 200.
fn ok(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 200")
}

/// `GET path` on a fresh connection: the answer, or "" when the socket was refused and reset
/// before the request was written or the answer read (a refused socket is answered 503 and
/// closed at once, so a request written after that can meet a reset).
async fn get(admin: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(admin).await else {
        return String::new();
    };
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received));
    match read.await {
        Ok(Ok(_)) => String::from_utf8_lossy(&received).into_owned(),
        _ => String::new(),
    }
}
