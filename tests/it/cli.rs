//! The `pgward` binary as an operator runs it: `check` with each class of problem and its exit
//! status, what `--help` shows, `healthcheck` against a live, a dead and an orphaned instance,
//! and the open-file limit at start (raised, or the start refused).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::free_port;

/// A scratch directory removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let dir = std::env::temp_dir().join(format!("pgward-it-cli-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the built binary in `cwd` with no PGWARD_* variables from the test's environment.
fn pgward(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pgward"))
        .current_dir(cwd)
        .args(args)
        .env_remove("PGWARD_CONFIG")
        .env_remove("PGWARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const RULES: &str = "[[rule]]\nname = \"r\"\nmatch.pattern = \"orders\"\nbudget = \"1s\"\n";

#[test]
fn check_exits_zero_naming_the_config_and_its_rules_file() {
    let dir = Dir::new(&[
        ("pgward.toml", "rules = \"my-rules.toml\"\n"),
        ("my-rules.toml", RULES),
    ]);
    let run = pgward(&dir.0, &["check", "--config", "pgward.toml"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("pgward.toml: ok"), "{}", run.stdout);
    assert!(
        run.stdout.contains("my-rules.toml: ok, 1 rule(s)"),
        "{}",
        run.stdout
    );
    // The top-level form CI uses works the same.
    let run = pgward(&dir.0, &["--config", "pgward.toml", "check"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn check_without_a_rules_file_says_so_instead_of_reading_rules_toml() {
    // A broken ./rules.toml that the old check read silently.
    let dir = Dir::new(&[("pgward.toml", "# defaults\n"), ("rules.toml", "nonsense")]);
    for args in [&["check"][..], &["check", "--config", "pgward.toml"]] {
        let run = pgward(&dir.0, args);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("no rules file"),
            "{args:?}: {}",
            run.stdout
        );
    }
}

#[test]
fn check_exit_status_names_the_class_of_problem() {
    let dir = Dir::new(&[
        ("listen.toml", "listen = \"nope\"\n"),
        ("typo.toml", "[upstream]\naddres = \"db:5432\"\n"),
        ("port.toml", "[upstream]\naddress = \"db:99999\"\n"),
        (
            "tls.toml",
            "[tls]\ncert = \"missing-cert.pem\"\nkey = \"missing-key.pem\"\n",
        ),
        (
            "ca.toml",
            "[upstream]\ntls = \"verify-full\"\nca_file = \"/nonexistent/ca.pem\"\n",
        ),
        ("norules.toml", "rules = \"absent.toml\"\n"),
        (
            "bad-rules.toml",
            "[[rule]]\nname = \"r\"\nbudgit = \"1s\"\n",
        ),
    ]);
    let cases: [(&[&str], i32, &str); 8] = [
        (
            &["check", "-c", "listen.toml"],
            2,
            "listen: \"nope\" is not an IP:port",
        ),
        (&["check", "-c", "typo.toml"], 2, "typo.toml:2:1: addres"),
        (&["check", "-c", "port.toml"], 2, "upstream.address"),
        (
            &["check", "-c", "absent.toml"],
            2,
            "cannot read config file",
        ),
        (&["check", "-c", "tls.toml"], 3, "tls.cert"),
        (&["check", "-c", "ca.toml"], 3, "upstream.ca_file"),
        (
            &["check", "-c", "norules.toml"],
            1,
            "cannot read the rules file",
        ),
        (&["check", "bad-rules.toml"], 1, "bad-rules.toml:3:1"),
    ];
    for (args, code, message) in cases {
        let run = pgward(&dir.0, args);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    // A flag is checked as pgward would apply it.
    let run = pgward(&dir.0, &["--listen", "nope", "check"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(dir.path("listen.toml").exists());
}

#[test]
fn help_describes_every_argument_and_lists_only_the_options_used() {
    let dir = Dir::new(&[]);
    let run = pgward(&dir.0, &["check", "--help"]);
    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.contains("3 a TLS"),
        "exit statuses: {}",
        run.stdout
    );
    let run = pgward(&dir.0, &["check", "-h"]);
    for wanted in ["[RULES]  Rules file", "--config <CONFIG>  Config file"] {
        assert!(run.stdout.contains(wanted), "{wanted}: {}", run.stdout);
    }
    let run = pgward(&dir.0, &["fingerprint", "-h"]);
    assert!(run.stdout.contains("[SQL]  SQL text"), "{}", run.stdout);
    assert!(!run.stdout.contains("--config"), "{}", run.stdout);
    // Every argument line of every (short) help page has a description beside it.
    let pages = [
        &["-h"][..],
        &["check", "-h"],
        &["fingerprint", "-h"],
        &["healthcheck", "-h"],
    ];
    for page in pages {
        let out = pgward(&dir.0, page).stdout;
        let bare = out.lines().filter(|l| {
            let l = l.trim();
            (l.starts_with('-') || l.starts_with('[')) && !l.contains("  ")
        });
        assert_eq!(bare.count(), 0, "{page:?}: {out}");
    }
}

/// `pgward healthcheck` from another thread: the in-process proxy keeps serving meanwhile.
async fn healthcheck(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut all = args;
        all.push("healthcheck".into());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        pgward(&std::env::temp_dir(), &refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_only_when_the_instance_answers() {
    let proxy =
        crate::harness::start_proxy(crate::harness::config_for(crate::harness::shared())).await;
    let admin = proxy.admin_addr.expect("admin enabled").to_string();
    let run = healthcheck(vec!["--admin-listen".into(), admin.clone()]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("/healthz 200"), "{}", run.stdout);
    // Without the admin endpoint, the client listener is what can be probed.
    let listen = proxy.proxy_addr.to_string();
    let args = vec![
        "--admin-listen".into(),
        String::new(),
        "--listen".into(),
        listen,
    ];
    let run = healthcheck(args).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("accepting"), "{}", run.stdout);
    // Nothing listens on a fresh free port.
    let dead = format!("127.0.0.1:{}", free_port());
    let run = healthcheck(vec!["--admin-listen".into(), dead]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stderr.contains("unhealthy: cannot connect"),
        "{}",
        run.stderr
    );
    // An instance whose PostgreSQL is gone answers /healthz 503: unhealthy.
    let mut orphan = crate::harness::config_for(crate::harness::shared());
    orphan.upstream.address = format!("127.0.0.1:{}", free_port());
    let orphan = crate::harness::start_proxy(orphan).await;
    let admin = orphan.admin_addr.expect("admin enabled").to_string();
    let run = healthcheck(vec!["--admin-listen".into(), admin]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stderr.contains("503"), "{}", run.stderr);
}

/// "Max open files" soft and hard values of a running process (Linux /proc).
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut values = line.trim_start_matches("Max open files").split_whitespace();
    let soft = values.next().unwrap().to_owned();
    (soft, values.next().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgward_raises_its_soft_open_file_limit_or_refuses_to_start() {
    let bin = env!("CARGO_BIN_EXE_pgward");
    let port = free_port();
    // Soft 512 under whatever hard limit the test runs with: raised to the hard one.
    let script =
        format!("ulimit -Sn 512 && exec {bin} --listen 127.0.0.1:{port} --admin-listen ''");
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Reaped(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let what = "pgward to listen";
    crate::harness::eventually_ok(what, async || tokio::net::TcpStream::connect(addr).await).await;
    let (soft, hard) = open_file_limits(child.0.id());
    drop(child);
    assert_eq!(soft, hard, "the soft limit was not raised");
    // A hard limit of 512 cannot serve the default 1000 sessions: refused, saying what to do.
    let script = format!("ulimit -n 512 && exec {bin} --listen 127.0.0.1:{port} --admin-listen ''");
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("max_client_connections needs about 2256 open files")
            && stderr.contains("hard limit is 512")
            && stderr.contains("LimitNOFILE"),
        "{stderr}"
    );
}
