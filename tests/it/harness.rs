//! Test harness: a throwaway PostgreSQL cluster (initdb + postgres on a free port in a temp dir,
//! run as the `postgres` OS user when the tests run as root) with trust, md5 and scram users and
//! TLS certificates, plus helpers to start pgward in-process against it and to talk to it with
//! tokio-postgres or raw protocol bytes. Waiting on events (`eventually`) lives in `wait`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgward::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls};

mod wait;
pub use wait::*;

pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASSWORD: &str = "scram-secret";
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5-secret";
pub const TRUST_USER: &str = "trust_user";

/// A running throwaway cluster.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

fn is_root() -> bool {
    // The uid of the process owning /proc/self.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn pg_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Path::new(&dir).join(name);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join(name).exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A command run as the `postgres` OS user when we are root (initdb and postgres refuse root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates made once per test process: a CA, and a server certificate it signed for
/// localhost/127.0.0.1. Returns the folder holding ca.crt, server.crt, server.key.
pub fn certificates() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pgward-it-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let ssl = |args: &[&str]| run(Command::new("openssl").current_dir(&dir).args(args));
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pgward-test-ca",
        ]);
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("san");
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        dir
    })
}

impl Cluster {
    /// Starts a new cluster; `settings` are extra postgresql.conf lines.
    pub fn start(settings: &[&str]) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("pgward-it-{}-{}", std::process::id(), free_port()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let certs = certificates();
        for file in ["server.crt", "server.key"] {
            std::fs::copy(certs.join(file), dir.join(file)).expect("copy cert");
        }
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        run(Command::new("chmod").arg("600").arg(dir.join("server.key")));
        run(as_postgres(&pg_bin("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .stdout(Stdio::null()));
        let port = free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 200\nssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             password_encryption = 'scram-sha-256'\nlog_min_messages = warning\n",
            dir = dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\nhost all {TRUST_USER} 127.0.0.1/32 trust\nhost all {MD5_USER} 127.0.0.1/32 md5\n\
                 host all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
            ),
        )
        .expect("pg_hba");
        let log = std::fs::File::create(dir.join("postgres.log")).expect("log");
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        let child = as_postgres(&pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        watchdog(child.id(), &dir);
        let cluster = Cluster { port, dir, child };
        cluster.wait_ready();
        cluster.psql(&format!(
            "CREATE ROLE {TRUST_USER} LOGIN; CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}'; \
             SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}'; \
             GRANT ALL ON SCHEMA public TO PUBLIC;"
        ));
        cluster
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A PostgreSQL client program aimed at this cluster as the superuser, over TCP.
    fn superuser_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(pg_bin(program));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        cmd
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .superuser_command("pg_isready")
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start; see {}",
                self.dir.join("postgres.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL directly against the cluster (not through pgward) as the superuser.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .superuser_command("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills one backend process with SIGKILL (the postmaster then resets all sessions).
    pub fn kill_backend(&self, pid: i32) {
        run(Command::new("kill").args(["-9", &pid.to_string()]));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // PGWARD_KEEP_CLUSTERS=1 keeps the data directory and postgres.log for a post-mortem.
        if std::env::var_os("PGWARD_KEEP_CLUSTERS").is_some() {
            eprintln!("kept cluster directory {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Stops postgres and removes its folder when the test process exits, even when a static
/// cluster is never dropped.
fn watchdog(pg_pid: u32, dir: &Path) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -INT {pg_pid} 2>/dev/null; sleep 3; kill -KILL {pg_pid} 2>/dev/null; rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    file.write_all(text.as_bytes()).expect("write conf");
}

/// The cluster shared by tests that do not break it.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(&[]))
}

/// pgward config for tests: ephemeral ports, upstream = `cluster`, upstream TLS off.
pub fn config_for(cluster: &Cluster) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.admin.listen = "127.0.0.1:0".into();
    config.upstream.address = cluster.addr();
    config.upstream.tls = pgward::upstream::UpstreamTlsMode::Disable;
    config
}

/// Starts pgward in-process.
pub async fn start_proxy(config: Config) -> pgward::Running {
    pgward::start(config).await.expect("pgward starts")
}

pub fn conn_string(addr: SocketAddr, user: &str, password: Option<&str>) -> String {
    let mut s = format!(
        "host={} port={} user={user} dbname=postgres",
        addr.ip(),
        addr.port()
    );
    if let Some(password) = password {
        s.push_str(&format!(" password={password}"));
    }
    s
}

/// Connects with tokio-postgres (plaintext) and drives the connection in the background.
pub async fn connect(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(&conn_string(addr, user, password), NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A raw protocol client for tests that need exact bytes.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    /// Connects and completes a trust-auth startup.
    pub async fn startup(addr: SocketAddr, params: &[(&str, &str)]) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let mut params = params.to_vec();
        if !params.iter().any(|(k, _)| *k == "database") {
            params.push(("database", "postgres"));
        }
        raw.send(&startup_bytes(&params)).await;
        let messages = raw.read_until_ready().await;
        assert!(
            messages.iter().any(|(tag, _)| *tag == b'K'),
            "no BackendKeyData in {messages:?}"
        );
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one message; None at EOF.
    pub async fn read_message(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(20), self.stream.read_exact(&mut head))
            .await
            .expect("read timeout")
            .ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream.read_exact(&mut body).await.ok()?;
        Some((head[0], body))
    }

    /// The upstream backend's pid, asked with `SELECT pg_backend_pid()`.
    pub async fn backend_pid(&mut self) -> i32 {
        self.send(&query_message("SELECT pg_backend_pid()")).await;
        let messages = self.read_until_ready().await;
        let row = messages
            .iter()
            .find(|m| m.0 == b'D')
            .map(|(_, body)| String::from_utf8_lossy(body.get(6..).unwrap_or_default()));
        row.and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("no backend pid in {messages:?}"))
    }

    /// Reads messages up to and including ReadyForQuery (or EOF).
    pub async fn read_until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((tag, body)) = self.read_message().await {
            out.push((tag, body));
            if tag == b'Z' {
                break;
            }
        }
        out
    }

    /// Reads until the server closes; returns everything received.
    pub async fn read_to_close(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(message) = self.read_message().await {
            out.push(message);
        }
        out
    }
}

pub fn startup_bytes(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// SQLSTATE of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    field(body, b'C')
}

/// One field of an ErrorResponse/NoticeResponse body.
pub fn field(body: &[u8], kind: u8) -> String {
    let mut rest = body;
    while let Some((&k, after)) = rest.split_first() {
        if k == 0 {
            break;
        }
        let end = after.iter().position(|&b| b == 0).unwrap_or(after.len());
        if k == kind {
            return String::from_utf8_lossy(&after[..end]).into_owned();
        }
        rest = &after[(end + 1).min(after.len())..];
    }
    String::new()
}

/// The SQLSTATE of a tokio-postgres error, as text.
pub fn code(err: &tokio_postgres::Error) -> String {
    err.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {err}"))
}

/// The message of a tokio-postgres error: the server's text for database errors.
pub fn db_message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| err.to_string())
}

/// An HTTP/1.1 response's status code (0 when there is none) and body.
pub fn split_response(response: &str) -> (u16, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}
