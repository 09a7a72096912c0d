//! The `pgward` command: run the proxy, or fingerprint a statement for a rule.

use std::io::Read;
use std::path::PathBuf;
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
    /// Config file (TOML); without one, defaults apply.
    #[arg(long, short, env = "PGWARD_CONFIG", global = true)]
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
    /// Validate a rules file like `nginx -t`: exit 0, or exit 1 listing every problem; with
    /// `--config`, the config file is checked first (exit 2 on a problem).
    Check { rules: Option<PathBuf> },
    /// Print the fingerprint id, normalized text, kind and tables of a statement (SQL from the
    /// argument, or stdin when absent).
    Fingerprint { sql: Option<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Fingerprint { ref sql }) => print_fingerprint(sql.as_deref()),
        Some(Command::Check { ref rules }) => check_rules(&cli, rules.as_deref()),
        None => run(cli),
    }
}

fn check_rules(cli: &Cli, rules: Option<&std::path::Path>) -> ExitCode {
    // With a config file, check it as the proxy would at start (ranges, admin token, ...).
    let config = match &cli.config {
        Some(_) => match load_config(cli) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("pgward: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let path = rules
        .map(std::path::Path::to_path_buf)
        .or_else(|| config.and_then(|c| c.rules))
        .unwrap_or_else(|| PathBuf::from("rules.toml"));
    match pgward::rules::load_rules(&path) {
        Ok(set) => {
            println!("{}: ok, {} rule(s)", path.display(), set.rules.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
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

fn load_config(cli: &Cli) -> Result<Config, pgward::config::ConfigError> {
    let mut config = match &cli.config {
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
