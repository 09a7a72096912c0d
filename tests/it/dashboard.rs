//! The dashboard page in a real browser: headless Debian chromium loads `GET /` from a pgward
//! with a token, a rules file, some traffic and a refused rules reload, runs the page's script
//! (which must send the token from the page URL), and the dumped DOM must hold a row per
//! fingerprint, the rule still in force, the reload error, the connection count, and hostile
//! query text as text rather than markup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::*;
use crate::stats_http::http;

const TOKEN: &str = "dash-token";
const RULE: &str = "dashboard-probe-rule";
const PLAIN: &str = "SELECT 41 + 1 AS dashboard_probe_plain";
const RULED: &str = "SELECT count(*) FROM generate_series(1, 500) AS dashboard_probe_ruled";
/// A quoted name survives normalization as written: if the page inserted it as HTML, the DOM
/// would gain an element with `id="injected"`.
const HOSTILE: &str = "SELECT 7 AS \"<b id=injected>dashboard_probe_hostile</b>\"";

/// Debian's chromium: $CHROMIUM, /usr/bin/chromium or `chromium` on PATH.
fn chromium() -> PathBuf {
    let candidates = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromium")])
        .chain(
            std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join("chromium"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the dashboard test needs headless Chromium and none was found (CHROMIUM, /usr/bin/chromium, \
         PATH): apt-get install chromium   (bash .ci/run installs it)"
    );
}

/// Loads `url` in headless chromium, lets its scripts run for 5 s of virtual time, and
/// returns the serialized DOM.
async fn dump_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "pgward-it-chromium-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&profile).expect("chromium profile dir");
    let run = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chromium did not finish within 120 s")
        .expect("chromium starts");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed ({}): stdout {dom:.2000} stderr {:.4000}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// The serialized opening tag of the table row for `fingerprint`, and what follows it up to
/// the end of the row.
fn row<'a>(dom: &'a str, attribute: &str, value: &str) -> &'a str {
    let needle = format!("<tr {attribute}=\"{value}\">");
    let start = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no row {needle} in the rendered page:\n{dom}"));
    let rest = &dom[start..];
    let end = rest.find("</tr>").unwrap_or(rest.len());
    &rest[..end]
}

/// Text of the element with `id` (up to its first child tag or closing tag).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\">");
    let start = dom
        .find(&needle)
        .map(|i| i + needle.len())
        .unwrap_or_else(|| panic!("no element {id} in:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

fn write_rules(dir: &Path) -> PathBuf {
    let path = dir.join("rules.toml");
    let text =
        format!("[[rule]]\nname = \"{RULE}\"\nmatch.query = \"{RULED}\"\nbudget = \"10s\"\n");
    std::fs::write(&path, text).expect("write rules");
    path
}

async fn page_is_public_and_data_is_guarded(admin: SocketAddr) {
    let (status, body) = http(admin, "GET", "/", None).await;
    assert_eq!(status, 200, "the page itself needs no token");
    assert!(body.contains("<table id=\"fingerprints\">"), "{body:.500}");
    assert_eq!(
        http(admin, "GET", "/stats/queries", None).await.0,
        401,
        "the data stays behind the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_fingerprints_rules_and_connections_in_chromium() {
    let browser = chromium();
    let cluster = shared();
    let dir = std::env::temp_dir().join(format!(
        "pgward-it-dashboard-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config = config_for(cluster);
    config.admin.token = Some(TOKEN.into());
    let rules = write_rules(&dir);
    config.rules = Some(rules.clone());
    let proxy = start_proxy(config).await;
    let admin = proxy.admin_addr.expect("admin enabled");
    page_is_public_and_data_is_guarded(admin).await;

    let client = connect(proxy.proxy_addr, TRUST_USER, None).await.unwrap();
    for sql in [PLAIN, PLAIN, RULED, HOSTILE] {
        client.simple_query(sql).await.unwrap();
    }
    let id = |sql: &str| pgward::fingerprint::normalize(sql).id.to_string();

    // A broken edit of the rules file is refused; the page must show why, and the old rules.
    std::fs::write(&rules, "[[rule]]\nname = \"broken\"\nbudgett = \"1s\"\n").expect("rules");
    let (status, body) = http(admin, "POST", "/rules/reload", Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");

    // Virtual time normally lets the first refresh finish; on a starved machine, load again.
    let url = format!("http://{admin}/#token={TOKEN}");
    let mut dom = dump_dom(&url).await;
    for _ in 0..2 {
        if dom.contains(&format!("data-fingerprint=\"{}\"", id(PLAIN))) {
            break;
        }
        dom = dump_dom(&url).await;
    }
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        dom.contains("<div id=\"problems\"></div>"),
        "the page reported a problem (token not sent?):\n{dom}"
    );
    assert_ne!(
        text_of(&dom, "refreshed"),
        "never",
        "no refresh finished in {browser:?}"
    );
    // The limits and protection section rendered from /rules (none configured here).
    assert!(
        dom.contains("no shared limits ([limits.&lt;name&gt;] in the rules file)"),
        "{dom}"
    );
    assert!(dom.contains("unprotected limits at 100 %"), "{dom}");

    let plain = row(&dom, "data-fingerprint", &id(PLAIN));
    assert!(plain.contains("dashboard_probe_plain"), "{plain}");
    assert!(plain.contains(">2</td>"), "two calls expected: {plain}");

    let ruled = row(&dom, "data-fingerprint", &id(RULED));
    assert!(ruled.contains(&format!(">{RULE}</td>")), "{ruled}");
    let rule = row(&dom, "data-rule", RULE);
    assert!(rule.contains("fingerprint "), "{rule}");
    assert!(
        !dom.contains("id=\"reload-error-section\" hidden"),
        "the failed reload is not shown:\n{dom}"
    );
    assert!(
        text_of(&dom, "reload-error").contains("budgett"),
        "{}",
        text_of(&dom, "reload-error")
    );

    let hostile = row(&dom, "data-fingerprint", &id(HOSTILE));
    assert!(
        hostile.contains("&lt;b id=injected&gt;dashboard_probe_hostile&lt;/b&gt;"),
        "query text must be shown as text: {hostile}"
    );
    assert!(
        !dom.contains("id=\"injected\""),
        "query text was parsed as HTML:\n{dom}"
    );

    assert_eq!(
        text_of(&dom, "client-connections"),
        "1",
        "one client is connected"
    );
    assert!(
        text_of(&dom, "rules-count").starts_with("1 rule"),
        "{}",
        text_of(&dom, "rules-count")
    );
    drop(client);
}
