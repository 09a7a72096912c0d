//! The admin console end to end: every command through tokio-postgres' simple query protocol,
//! `SHOW LIMITS` beside `GET /rules`, a bad command and the extended protocol refused while
//! the session goes on, logins refused (console off, wrong password, not an admin), `KILL`
//! and `POST /sessions/{id}/terminate` ending a session whose statement runs,
//! `GET /sessions`, and psql's own view of `SHOW VERSION`.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::harness::*;
use crate::rules::rules_file;
use crate::stats_http::http;

const ADMIN: &str = "ops";
const PASSWORD: &str = "console-secret";

fn console_config() -> pgward::Config {
    let mut config = config_for(shared());
    config.console.users = vec![ADMIN.into()];
    config.console.password = Some(PASSWORD.into());
    config
}

async fn console(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let conn = format!(
        "host={} port={} user={user} password={password} dbname=pgward",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A command's rows, each as column -> value.
async fn rows(client: &Client, sql: &str) -> Vec<HashMap<String, Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), row.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn cell<'a>(row: &'a HashMap<String, Option<String>>, column: &str) -> &'a str {
    match row.get(column) {
        Some(Some(value)) => value,
        Some(None) => "NULL",
        None => panic!("no column {column} in {row:?}"),
    }
}

const ONE_RULE: &str =
    "[[rule]]\nname = \"orders\"\nmatch.query = \"SELECT 42\"\nmax_concurrency = 4\n";

#[tokio::test]
async fn every_command_answers_and_the_session_survives_bad_ones() {
    let mut config = console_config();
    config.rules = Some(rules_file(ONE_RULE));
    let proxy = start_proxy(config).await;
    let app = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    app.simple_query("SELECT 42").await.unwrap();
    let admin = console(proxy.proxy_addr, ADMIN, PASSWORD).await.unwrap();

    let version = rows(&admin, "SHOW VERSION").await;
    assert_eq!(
        cell(&version[0], "version"),
        concat!("pgward ", env!("CARGO_PKG_VERSION"))
    );
    let queries = rows(&admin, "show queries;").await;
    let top = queries.iter().find(|q| cell(q, "query") == "select $1");
    let top = top.unwrap_or_else(|| panic!("SELECT 42 not in {queries:?}"));
    assert_eq!((cell(top, "calls"), cell(top, "rule")), ("1", "orders"));
    let rules = rows(&admin, "SHOW RULES").await;
    assert_eq!((rules.len(), cell(&rules[0], "name")), (1, "orders"));
    assert_eq!(cell(&rules[0], "max_concurrency"), "4");
    let cache = rows(&admin, "SHOW CACHE").await;
    assert_eq!((cache.len(), cell(&cache[0], "enabled")), (1, "true"));
    let config = rows(&admin, "SHOW CONFIG").await;
    let setting = |key: &str| {
        let row = config.iter().find(|r| cell(r, "key") == key);
        cell(row.unwrap_or_else(|| panic!("no {key}")), "value").to_owned()
    };
    assert_eq!(setting("console.password"), "(set)");
    assert_eq!(setting("upstream.address"), shared().addr());
    assert!(!config.iter().any(|r| cell(r, "value").contains(PASSWORD)));
    assert_eq!(rows(&admin, "SHOW HELP").await.len(), 12);
    assert!(
        rows(&admin, "SHOW POOLS").await.is_empty(),
        "no pools in session mode"
    );
    for done in ["RELOAD", "INVALIDATE ALL", "INVALIDATE public.orders"] {
        let messages = admin.simple_query(done).await.unwrap();
        assert!(
            matches!(
                messages.last(),
                Some(SimpleQueryMessage::CommandComplete(0))
            ),
            "{done}"
        );
    }

    for (bad, expected) in [
        ("SHOW NOTHING", "42601"),
        ("DROP TABLE t", "42601"),
        ("KILL x", "22023"),
        ("KILL 999999", "42704"),
    ] {
        let err = admin.simple_query(bad).await.expect_err(bad);
        assert_eq!(code(&err), expected, "{bad}: {err}");
    }
    let err = admin
        .query("SHOW VERSION", &[])
        .await
        .expect_err("extended protocol");
    assert_eq!(code(&err), "0A000", "{err}");
    assert_eq!(
        rows(&admin, "SHOW VERSION").await.len(),
        1,
        "the session goes on"
    );
    admin
        .simple_query(";")
        .await
        .expect("an empty query is answered");
}

const SHARED_LIMIT: &str = r#"
[limits.reports]
max_concurrency = 3
max_db_time = "250ms/s"

[[rule]]
name = "reports"
match.query = "SELECT 7"
limit = "reports"
"#;

/// `SHOW LIMITS` lists each `[limits.<name>]` with what `GET /rules` says of it.
#[tokio::test]
async fn show_limits_lists_the_shared_limits_as_get_rules_does() {
    let mut config = console_config();
    config.rules = Some(rules_file(SHARED_LIMIT));
    let proxy = start_proxy(config).await;
    let admin = console(proxy.proxy_addr, ADMIN, PASSWORD).await.unwrap();

    let limits = rows(&admin, "SHOW LIMITS").await;
    assert_eq!(limits.len(), 1, "{limits:?}");
    let limit = &limits[0];
    for (column, expected) in [
        ("name", "reports"),
        ("max_concurrency", "3"),
        ("in_use", "0"),
        ("max_db_time_ms_per_s", "250.0"),
        ("factor", "1000"),
        ("effective_max_concurrency", "3"),
        ("effective_db_time_ms_per_s", "250.0"),
    ] {
        assert_eq!(cell(limit, column), expected, "{column}");
    }

    let (status, body) = http(proxy.admin_addr.unwrap(), "GET", "/rules", None).await;
    assert_eq!(status, 200, "{body}");
    let rules: Value = serde_json::from_str(&body).unwrap();
    let listed = rules["limits"][0].as_object().unwrap();
    let mut listed: Vec<&String> = listed.keys().collect();
    let mut shown: Vec<&String> = limit.keys().collect();
    listed.sort();
    shown.sort();
    assert_eq!(shown, listed, "SHOW LIMITS has the columns of GET /rules");
}

#[tokio::test]
async fn logins_are_refused_when_off_with_a_wrong_password_or_for_other_users() {
    let off = start_proxy(config_for(shared())).await;
    let err = console(off.proxy_addr, ADMIN, PASSWORD)
        .await
        .expect_err("console off");
    assert_eq!(code(&err), "28000", "{err}");

    let on = start_proxy(console_config()).await;
    for (user, password) in [(ADMIN, "wrong-password"), (TRUST_USER, PASSWORD)] {
        let err = console(on.proxy_addr, user, password)
            .await
            .expect_err(user);
        assert_eq!(code(&err), "28P01", "{user}: {err}");
    }
    console(on.proxy_addr, ADMIN, PASSWORD)
        .await
        .expect("the admin logs in");
    // Other databases still reach PostgreSQL.
    let app = connect(on.proxy_addr, TRUST_USER, None).await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
}

/// Polls `SHOW SESSIONS` until the session with `pid` as its backend runs a statement.
async fn active_session(admin: &Client, pid: &str) -> HashMap<String, Option<String>> {
    let what = format!("the session of backend {pid} to be active");
    eventually_ok(&what, async || {
        let sessions = rows(admin, "SHOW SESSIONS").await;
        sessions
            .into_iter()
            .find(|s| cell(s, "backend_pid") == pid && cell(s, "state") == "active")
            .ok_or(pid.to_owned())
    })
    .await
}

#[tokio::test]
async fn kill_and_terminate_end_a_running_session() {
    let proxy = start_proxy(console_config()).await;
    let admin = console(proxy.proxy_addr, ADMIN, PASSWORD).await.unwrap();
    let app = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let pid = app
        .query_one("SELECT pg_backend_pid()::text", &[])
        .await
        .unwrap();
    let pid: String = pid.get(0);
    let sleeping = tokio::spawn(async move { app.simple_query("SELECT pg_sleep(60)").await });
    let session = active_session(&admin, &pid).await;
    assert_eq!(
        (cell(&session, "user"), cell(&session, "database")),
        (TRUST_USER, "postgres")
    );
    assert_ne!(cell(&session, "fingerprint"), "NULL");
    assert_ne!(cell(&session, "running_ms"), "NULL");
    admin
        .simple_query(&format!("KILL {}", cell(&session, "id")))
        .await
        .unwrap();
    let ended = tokio::time::timeout(HANG_BOUND, sleeping)
        .await
        .expect("KILL ends the statement");
    let err = ended
        .unwrap()
        .expect_err("the killed session's statement fails");
    assert_eq!(code(&err), "57P01", "{err}");
    eventually(
        "its session to leave SHOW SESSIONS",
        async || rows(&admin, "SHOW SESSIONS").await,
        |s| s.is_empty(),
    )
    .await;

    let admin_http = proxy.admin_addr.unwrap();
    let other = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let (status, body) = http(admin_http, "GET", "/sessions", None).await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let one = &listed["sessions"][0];
    assert_eq!(
        (one["user"].as_str(), one["state"].as_str()),
        (Some(TRUST_USER), Some("idle"))
    );
    assert!(
        one["backend_pid"].as_u64().is_some() && one["peer"].as_str().is_some(),
        "{one}"
    );
    let id = one["id"].as_u64().unwrap();
    let path = format!("/sessions/{id}/terminate");
    assert_eq!(http(admin_http, "POST", &path, None).await.0, 200);
    let err = eventually_ok("the terminated session to fail", async || {
        match other.simple_query("SELECT 1").await {
            Ok(_) => Err("still answering"),
            Err(e) => Ok(e),
        }
    })
    .await;
    assert!(err.is_closed() || code(&err) == "57P01", "{err}");
    eventually(
        "the session to be gone",
        async || http(admin_http, "POST", &path, None).await.0,
        |s| *s == 404,
    )
    .await;
}

#[tokio::test]
async fn psql_shows_the_version_as_a_table() {
    let psql = std::path::Path::new("/usr/lib/postgresql/15/bin/psql");
    if !psql.exists() {
        eprintln!("skipped: no psql at {}", psql.display());
        return;
    }
    let proxy = start_proxy(console_config()).await;
    let addr = proxy.proxy_addr;
    let output = tokio::process::Command::new(psql)
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            ADMIN,
            "-c",
            "SHOW VERSION",
            "pgward",
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = concat!(" pgward ", env!("CARGO_PKG_VERSION"), "\n(1 row)\n");
    assert!(
        stdout.contains("version") && stdout.contains(value),
        "{stdout}"
    );
}

#[tokio::test]
async fn console_sessions_end_with_57p01_at_shutdown() {
    let proxy = start_proxy(console_config()).await;
    let admin = console(proxy.proxy_addr, ADMIN, PASSWORD).await.unwrap();
    rows(&admin, "SHOW VERSION").await;
    proxy.shutdown();
    let err = eventually_ok("the console session to end", async || {
        match admin.simple_query("SHOW VERSION").await {
            Ok(_) => Err("still answering"),
            Err(e) => Ok(e),
        }
    })
    .await;
    assert!(code(&err) == "57P01" || err.is_closed(), "{err}");
    tokio::time::timeout(HANG_BOUND, proxy.wait())
        .await
        .expect("pgward stops");
}

#[tokio::test]
async fn the_sessions_routes_need_the_admin_token() {
    let mut config = config_for(shared());
    config.admin.token = Some("s3cret".into());
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.unwrap();
    assert_eq!(http(admin, "GET", "/sessions", None).await.0, 401);
    assert_eq!(
        http(admin, "POST", "/sessions/1/terminate", None).await.0,
        401
    );
    assert_eq!(http(admin, "GET", "/sessions", Some("s3cret")).await.0, 200);
    let (status, body) = http(admin, "POST", "/sessions/x/terminate", Some("s3cret")).await;
    assert_eq!(status, 400, "{body}");
}
