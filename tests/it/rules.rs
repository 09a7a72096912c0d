//! rules.toml at work: budgets (simple, extended, in a transaction, ignored cancels),
//! concurrency caps with shedding, rewrites in both protocols, rejects, observe mode, hot
//! reload of good and broken files, and `pgward check`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::stats_http::http;

pub(crate) fn rules_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "pgward-rules-{}-{}.toml",
        std::process::id(),
        free_port()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

async fn proxy_with_rules(text: &str) -> (pgward::Running, PathBuf) {
    let path = rules_file(text);
    let mut config = config_for(shared());
    config.rules = Some(path.clone());
    (start_proxy(config).await, path)
}

/// The stats entry whose normalized text contains `needle` or whose rule is named `needle`.
pub(crate) async fn query_stats(admin: std::net::SocketAddr, needle: &str) -> Value {
    let (_, body) = http(admin, "GET", "/stats/queries?limit=1000", None).await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    let matches =
        |q: &&Value| q["query"].as_str().is_some_and(|t| t.contains(needle)) || q["rule"] == needle;
    let found = stats["queries"]
        .as_array()
        .and_then(|q| q.iter().find(matches).cloned());
    found.unwrap_or_else(|| panic!("no stats for {needle:?} in {body}"))
}

const SLEEP_BUDGET: &str = r#"
[defaults]
budget = "off"
cancel_grace = "2s"

[[rule]]
name = "sleepy"
match.query = "SELECT pg_sleep(5)"
budget = "300ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_cancels_upstream_and_keeps_the_session() {
    let (proxy, _) = proxy_with_rules(SLEEP_BUDGET).await;
    let cluster = shared();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let pid = backend_pid(&client).await;

    // Uncut, the sleep would end without an error after 5 s; the budget's 57014 names the rule.
    let err = client.simple_query("SELECT pg_sleep(5)").await.unwrap_err();
    assert_eq!(code(&err), "57014");
    let message = db_message(&err);
    assert!(
        message.contains("300ms") && message.contains("\"sleepy\""),
        "{message}"
    );
    // The cancel reached PostgreSQL: the backend is idle, not still sleeping.
    cluster
        .await_activity(pid, "idle: SELECT pg_sleep(5)")
        .await;
    assert_eq!(
        client.simple_query("SELECT 1").await.unwrap().len(),
        3,
        "session unusable after a budget cancel"
    );

    // Extended protocol: the same fingerprint.
    let err = client
        .query("SELECT pg_sleep($1)", &[&5.0f64])
        .await
        .unwrap_err();
    assert_eq!(code(&err), "57014");
    assert!(db_message(&err).contains("\"sleepy\""), "{err}");
    cluster
        .await_activity(pid, "idle: SELECT pg_sleep($1)")
        .await;
    assert_eq!(
        client
            .query_one("SELECT 2::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );

    // Inside a transaction: aborted, as with statement_timeout.
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.simple_query("SELECT pg_sleep(5)").await.unwrap_err();
    assert_eq!(code(&err), "57014");
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(client.simple_query("SELECT 1").await.unwrap().len(), 3);

    let stats = query_stats(proxy.admin_addr.unwrap(), "pg_sleep").await;
    assert_eq!(stats["budget_exceeded"], 3, "{stats}");
    assert_eq!(stats["rule"], "sleepy");
    let (_, body) = http(proxy.admin_addr.unwrap(), "GET", "/rules", None).await;
    let rules: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rules["rules"][0]["stats"]["budget_exceeded"], 3, "{body}");
    let (_, metrics) = http(proxy.admin_addr.unwrap(), "GET", "/metrics", None).await;
    assert!(
        metrics.contains("pgward_rule_budget_exceeded_total{rule=\"sleepy\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_cancel_closes_the_connection_within_cancel_grace() {
    let rules = r#"
[defaults]
budget = "300ms"
cancel_grace = "700ms"
"#;
    let (proxy, _) = proxy_with_rules(rules).await;
    let mut raw = Raw::startup(proxy.proxy_addr, &[("user", TRUST_USER)]).await;
    let pid = raw.backend_pid().await;
    // A stopped backend cannot act on the cancel. Stopped before the statement is sent, it
    // cannot act on it either, whenever the budget ends: no race with the 300 ms.
    std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap();
    raw.send(&query_message("SELECT pg_sleep(3)")).await;
    // Only so that a missing cancel_grace fails here instead of at the 20 s read timeout.
    let closed = tokio::time::timeout(HANG_BOUND, raw.read_to_close()).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .unwrap();
    let messages = closed.expect("the session outlived cancel_grace");
    let (_, error) = messages
        .iter()
        .find(|m| m.0 == b'E')
        .expect("a FATAL before close");
    assert_eq!(sqlstate(error), "57014");
    assert_eq!(field(error, b'V'), "FATAL");
    let message = field(error, b'M');
    assert!(
        message.contains("did not stop within 700ms of its cancel"),
        "{message}"
    );
    // pgward closed the upstream connection: once running again, the backend ends.
    shared().await_activity(pid, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_limits_upstream_and_sheds_the_rest() {
    let rules = r#"
[[rule]]
name = "capped"
match.query = "SELECT pg_sleep(0.6), 'capped-probe'"
max_concurrency = 4
queue_timeout = "200ms"
"#;
    let (proxy, _) = proxy_with_rules(rules).await;
    let cluster = shared();
    // Connected first, so that all twelve statements arrive within the 200 ms queue_timeout
    // however slowly logins go.
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap());
    }
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(async move {
            client
                .simple_query("SELECT pg_sleep(0.6), 'capped-probe'")
                .await
                .map(|_| ())
                .map_err(|e| code(&e))
        }));
    }
    // Samples the statements running upstream for as long as any client waits for its answer.
    let mut peak = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        let active: usize = cluster
            .psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%capped-probe%' AND state = 'active' AND pid <> pg_backend_pid()")
            .parse()
            .unwrap();
        peak = peak.max(active);
        // The sampling rate, not a wait for an event.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut ok = 0;
    let mut shed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(code) if code == "53000" => shed += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(peak <= 4, "{peak} statements ran at once");
    assert!(peak >= 1);
    assert_eq!((ok, shed), (4, 8));
    let stats = query_stats(proxy.admin_addr.unwrap(), "capped").await;
    assert_eq!(stats["shed"], 8, "{stats}");
    assert!(stats["queued"].as_u64().unwrap() >= 8, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_apply_in_both_protocols() {
    let cluster = shared();
    cluster.psql(
        "CREATE TABLE IF NOT EXISTS reco_slow (id int, v text); CREATE TABLE IF NOT EXISTS reco_fast (id int, v text); \
         TRUNCATE reco_slow, reco_fast; INSERT INTO reco_slow VALUES (7, 'slow'); INSERT INTO reco_fast VALUES (7, 'fast'); \
         GRANT SELECT ON reco_slow, reco_fast TO PUBLIC",
    );
    let rules = r#"
[[rule]]
name = "use-fast"
match.query = "SELECT v FROM reco_slow WHERE id = 1"
rewrite = "SELECT v FROM reco_fast WHERE id = $1"
"#;
    let (proxy, _) = proxy_with_rules(rules).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let rows = client
        .simple_query("SELECT v FROM reco_slow WHERE id = 7")
        .await
        .unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("fast"));
    let row = client
        .query_one("SELECT v FROM reco_slow WHERE id = $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "fast");
    let stats = query_stats(proxy.admin_addr.unwrap(), "reco_slow").await;
    assert_eq!(stats["rewritten"], 2, "{stats}");
    let target = pgward::fingerprint::normalize("SELECT v FROM reco_fast WHERE id = $1")
        .id
        .to_string();
    assert_eq!(stats["rewritten_to"], target.as_str(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_and_observe_mode() {
    let rules = r#"
[[rule]]
name = "no-secrets"
match.pattern = "^select\\*from pg_authid"
action = "reject"
message = "ask the DBA"
sqlstate = "42501"

[[rule]]
name = "watch-only"
match.query = "SELECT pg_sleep(0.4), 'observed'"
budget = "100ms"
mode = "observe"
"#;
    let (proxy, _) = proxy_with_rules(rules).await;
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    let err = client
        .simple_query("SELECT * FROM pg_authid")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42501");
    assert_eq!(db_message(&err), "ask the DBA");
    let err = client
        .query("select * from pg_authid", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42501");
    assert_eq!(
        client
            .query_one("SELECT 5::int", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );

    client
        .simple_query("SELECT pg_sleep(0.4), 'observed'")
        .await
        .expect("observe mode changes nothing");
    let stats = query_stats(proxy.admin_addr.unwrap(), "watch-only").await;
    assert_eq!(stats["would_timeout"], 1, "{stats:#}");
    assert_eq!(stats["budget_exceeded"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_good_files_and_keeps_old_rules_on_bad_ones() {
    let (proxy, path) = proxy_with_rules("[defaults]\nbudget = \"30s\"\n").await;
    let admin = proxy.admin_addr.unwrap();
    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    client.simple_query("SELECT 'reload-probe'").await.unwrap();

    let reject = "[[rule]]\nname = \"block-probe\"\nmatch.query = \"SELECT 'reload-probe'\"\naction = \"reject\"\nmessage = \"blocked\"\n";
    std::fs::write(&path, reject).unwrap();
    let reloaded = "the file watcher to load the reject rule (rules version 2)";
    eventually(
        reloaded,
        async || reload_status(admin).await,
        |s| s["version"] == 2,
    )
    .await;
    let err = client
        .simple_query("SELECT 'reload-probe'")
        .await
        .expect_err("the reloaded reject rule applies to the next statement");
    assert_eq!(db_message(&err), "blocked");

    std::fs::write(
        &path,
        "[[rule]]\nname = \"broken\"\nmatch.pattern = \"(unclosed\"\nbogus_key = 1\n",
    )
    .unwrap();
    let refused = "the file watcher to refuse the broken file (reload_failures 1)";
    let failed = |s: &Value| s["reload_failures"].as_u64() >= Some(1);
    eventually(refused, async || reload_status(admin).await, failed).await;
    assert!(
        client.simple_query("SELECT 'reload-probe'").await.is_err(),
        "old rules dropped by a broken file"
    );
    let (status, body) = http(admin, "GET", "/rules", None).await;
    assert_eq!(status, 200);
    let rules: Value = serde_json::from_str(&body).unwrap();
    let error = rules["status"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("bogus_key") || error.contains("unclosed"),
        "{body}"
    );
    assert!(rules["status"]["reload_failures"].as_u64().unwrap() >= 1);
    assert_eq!(rules["rules"][0]["name"], "block-probe");

    let (status, body) = http(admin, "POST", "/rules/reload", None).await;
    assert_eq!(status, 422, "{body}");
    // An empty file is what an editor leaves while it rewrites one: refused, rules stay.
    std::fs::write(&path, "").unwrap();
    let (status, body) = http(admin, "POST", "/rules/reload", None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("the rules file is empty"), "{body}");
    assert!(
        client.simple_query("SELECT 'reload-probe'").await.is_err(),
        "rules dropped by an empty file"
    );
    std::fs::write(&path, "# no rules\n").unwrap();
    let (status, body) = http(admin, "POST", "/rules/reload", None).await;
    assert_eq!(status, 200, "{body}");
    client
        .simple_query("SELECT 'reload-probe'")
        .await
        .expect("rule removed");
}

/// The `status` object of `GET /rules`: version, reload_failures, last_error.
async fn reload_status(admin: std::net::SocketAddr) -> Value {
    let (status, body) = http(admin, "GET", "/rules", None).await;
    assert_eq!(status, 200, "{body}");
    let rules: Value = serde_json::from_str(&body).unwrap();
    rules["status"].clone()
}

#[test]
fn check_command_exit_codes() {
    let repo_rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules.toml");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["check", repo_rules])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = rules_file(
        "[[rule]]\nname = \"a\"\nmatch.pattern = \"(\"\n\n[[rule]]\nname = \"b\"\nmatch.query = \"SELECT 1\"\nrewrite = \"SELECT $3\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgward"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"a\"") && stderr.contains("\"b\""),
        "every problem listed: {stderr}"
    );
}
