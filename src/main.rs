//! The `pgward` command: run the proxy, or fingerprint a statement for a rule.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgward::config::{Config, LogFormat};
use pgward::fingerprint;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "pgward",
    version,
    about = "PostgreSQL proxy with per-query budgets, rewrites, caching and stats"
)]
struct Cli {
    /// Config file (TOML); without one, defaults apply and no rules are loaded.
    #[arg(long, short, env = "PGWARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address for clients (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// PostgreSQL HOST:PORT (overrides `upstream.address`).
    #[arg(long)]
    upstream: Option<String>,
    /// Admin HTTP address, "" to disable (overrides `admin.listen`).
    #[arg(long)]
    admin_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config, the TLS files it names and the rules file, like `nginx -t`.
    ///
    /// Checks everything pgward would load at start: the config (every value, with the flags
    /// applied), the TLS files it names and the rules file. Exit status: 0 all valid, 1 rules
    /// file unreadable or with problems (each listed), 2 config unreadable or invalid, 3 a TLS
    /// certificate, key or CA file unreadable or unusable.
    Check {
        /// Rules file to check (default: the config's `rules`; with neither, says so).
        rules: Option<PathBuf>,
        /// Config file (TOML) to check; same as the top-level `--config`.
        #[arg(long, short, env = "PGWARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Probe a running pgward: exit 0 when healthy, 1 when not (for HEALTHCHECK, systemd).
    ///
    /// Asks the admin endpoint's GET /healthz (200 only when PostgreSQL answers behind this
    /// instance) at the config's `admin.listen` (0.0.0.0 is probed on 127.0.0.1); with the
    /// admin endpoint disabled, checks that the client listener accepts a connection. Exit
    /// status: 0 healthy, 1 unhealthy or unreachable, 2 config unreadable.
    Healthcheck {
        /// Config file (TOML) of the instance; same as the top-level `--config`.
        #[arg(long, short, env = "PGWARD_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds allowed for connecting, and again for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print the fingerprint id, normalized text, kind and tables of each statement.
    Fingerprint {
        /// SQL text, one or more statements; read from stdin when absent.
        sql: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Fingerprint { ref sql }) => print_fingerprint(sql.as_deref()),
        Some(Command::Check {
            ref rules,
            ref config,
        }) => check(
            &cli,
            config.as_ref().or(cli.config.as_ref()),
            rules.as_deref(),
        ),
        Some(Command::Healthcheck {
            ref config,
            timeout,
        }) => healthcheck(&cli, config.as_ref().or(cli.config.as_ref()), timeout),
        None => run(cli),
    }
}

/// `pgward healthcheck`: one line on stdout or stderr, and the exit status.
fn healthcheck(cli: &Cli, config_file: Option<&PathBuf>, timeout: u64) -> ExitCode {
    // Not validated: the probe needs only the addresses (and not, say, the admin token).
    let config = match merged_config(cli, config_file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgward: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = std::time::Duration::from_secs(timeout.clamp(1, 600));
    match pgward::healthcheck::probe(&config, timeout) {
        Ok(pgward::healthcheck::Probed::Admin(addr)) => println!("healthy: {addr} /healthz 200"),
        Ok(pgward::healthcheck::Probed::Listener(addr)) => {
            println!("accepting: {addr} (admin endpoint disabled: PostgreSQL not checked)")
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `pgward check`: prints what was checked, or the problems with their class's exit status.
fn check(cli: &Cli, config_file: Option<&PathBuf>, rules: Option<&Path>) -> ExitCode {
    let outcome = merged_config(cli, config_file)
        .map_err(pgward::check::Problem::from)
        .and_then(|config| pgward::check::check(config_file.map(|p| p.as_path()), &config, rules));
    match outcome {
        Ok(report) => {
            for line in report {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("{problem}");
            ExitCode::from(problem.exit_code())
        }
    }
}

fn print_fingerprint(sql: Option<&str>) -> ExitCode {
    let text = match sql {
        Some(sql) => sql.to_owned(),
        None => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                eprintln!("pgward: cannot read SQL from stdin: {e}");
                return ExitCode::from(2);
            }
            text
        }
    };
    let statements = fingerprint::split_statements(&text);
    if statements.is_empty() {
        eprintln!("pgward: no SQL statement given");
        return ExitCode::from(2);
    }
    for range in statements {
        let Some(sql) = text.get(range) else { continue };
        let normalized = fingerprint::normalize(sql);
        let analysis = fingerprint::analyze(sql);
        println!("fingerprint: {}", normalized.id);
        println!("normalized:  {}", normalized.text);
        println!("kind:        {}", analysis.kind.as_str());
        if analysis.parsed {
            println!("reads:       {}", analysis.reads.join(", "));
            println!("writes:      {}", analysis.writes.join(", "));
        } else {
            println!("tables:      unknown (the SQL parser could not read this statement)");
        }
        println!();
    }
    ExitCode::SUCCESS
}

/// The config file (or the defaults) with the command-line flags applied, not yet validated.
fn merged_config(
    cli: &Cli,
    config_file: Option<&PathBuf>,
) -> Result<Config, pgward::config::ConfigError> {
    let mut config = match config_file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = &cli.listen {
        config.server.listen = listen.clone();
    }
    if let Some(upstream) = &cli.upstream {
        config.upstream.address = upstream.clone();
    }
    if let Some(admin) = &cli.admin_listen {
        config.admin.listen = admin.clone();
    }
    Ok(config)
}

fn load_config(cli: &Cli) -> Result<Config, pgward::config::ConfigError> {
    let config = merged_config(cli, cli.config.as_ref())?;
    config.validate()?;
    Ok(config)
}

fn run(cli: Cli) -> ExitCode {
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgward: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log.level));
    let filter = match filter {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("pgward: log.level {:?}: {e}", config.log.level);
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Err(e) = raise_fd_limit(&config) {
        eprintln!("pgward: {e}");
        return ExitCode::from(2);
    }
    let workers = match config.server.workers {
        // Measured on 2 vCPUs shared with Postgres: one thread costs ~2 µs less CPU per
        // transaction than two (docs/adr/0004-runtime-threads.md).
        0 => std::thread::available_parallelism()
            .map_or(1, |n| if n.get() <= 2 { 1 } else { n.get() }),
        n => n,
    };
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgward: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pgward: {e:#}");
            // A bad config or rules file is the operator's to fix: the same status as a bad flag.
            match e.downcast_ref::<pgward::Error>() {
                Some(
                    pgward::Error::Config(_)
                    | pgward::Error::Rules(_)
                    | pgward::Error::Admin(pgward::admin::AdminError::Setting { .. }),
                ) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Enough open files for `max_client_connections` (docs/operations.md, "Capacity"), before any
/// socket is opened: a limit found too low later would drop clients mid-incident.
fn raise_fd_limit(config: &Config) -> Result<(), pgward::fdlimit::FdLimitError> {
    let sockets = config
        .server
        .max_client_connections
        .saturating_add(pgward::server::HANDSHAKE_RESERVE);
    let needed = pgward::fdlimit::needed(sockets, config.admin.max_connections);
    let limit = pgward::fdlimit::ensure(needed)?;
    tracing::debug!(needed, ?limit, "open-file limit");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let running = pgward::start(config).await?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading rules");
                // The outcome is logged and shown on GET /rules.
                let _ = running.app.rules.reload();
            }
        }
    }
    tracing::info!(
        "shutting down: no new connections, idle sessions close now (signal again to stop at once)"
    );
    running.shutdown();
    tokio::select! {
        _ = running.wait() => {}
        _ = terminate.recv() => tracing::warn!("second signal: stopping now"),
        _ = interrupt.recv() => tracing::warn!("second signal: stopping now"),
    }
    Ok(())
}
