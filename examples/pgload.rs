//! pgload — the benchmarks' load generator (`cargo build --release --example pgload`): several
//! workloads side by side against one PostgreSQL address (a proxy or the server), closed loop
//! or Poisson open loop, error-tolerant (a statement error never stops a connection; a lost one
//! reconnects), with per-SQLSTATE counts, HDR latency histograms and a JSON summary on stdout
//! that includes this process's own CPU time. docs/benchmarks.md describes it.

#[path = "pgload/exec.rs"]
mod exec;
#[path = "pgload/run.rs"]
mod run;
#[path = "pgload/script.rs"]
mod script;
#[path = "pgload/spec.rs"]
mod spec;
#[path = "pgload/stats.rs"]
mod stats;

use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio_postgres::Config;

use crate::script::Script;
use crate::spec::{Arrivals, Source, Spec};
use crate::stats::Stats;

const ABOUT: &str = "\
Load for PostgreSQL (or a proxy in front of it), several workloads side by side.

  pgload --conn 'host=127.0.0.1 port=6432 user=postgres dbname=shop' --duration 40 \\
      --workload name=checkout,script=bench/checkout.sql,rate=50,clients=16 \\
      --workload name=reco,script=bench/reco.sql,rate=400,clients=128,start=20,duration=20

A workload is comma-separated key=value pairs:
  name=NAME        key in the JSON (default w0, w1, ...); also its application_name
  script=FILE      pgbench-style script: \\set NAME random(LO, HI) | random_zipfian(LO, HI, S)
                   | INTEGER, `--` comment lines, statements ended by `;` or by \\gset (the
                   first row's columns become variables); one request = the whole script
  sql=TEXT         one statement instead of a script; takes the rest of the argument (last)
  clients=N        connections, 1..10000 (default 16)
  rate=R           open loop: Poisson arrivals at R per second (0.001..1000000); without it
                   the workload is closed loop (each connection sends the next request when
                   the previous one is answered)
  queue=N          open loop: arrivals waiting for a connection, 1..1000000 (default 10000);
                   one arriving at a full queue is dropped
  timeout=S        open loop: a request queued longer than S seconds is given up (default 5)
  protocol=P       simple (values inlined), extended (unnamed statement per request) or
                   prepared (prepared once per connection); default simple
  start=S          seconds after the run starts that the workload begins (default 0)
  warmup=S         unmeasured seconds before the measured ones (default --warmup)
  duration=S       measured seconds (default --duration); seconds are 0..86400

Latency is measured from each request's intended arrival (open loop; queueing included) or
from its sending (closed loop), in microseconds. Authentication: whatever the connection
string and tokio-postgres allow (SCRAM-SHA-256, md5, password, trust); PGPASSWORD is used when
the string has no password. No TLS.";

#[derive(Parser, Debug)]
#[command(name = "pgload", about = ABOUT)]
struct Args {
    /// libpq-style connection string or postgres:// URL
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )]
    conn: String,
    /// A workload (repeat for several side by side; see above)
    #[arg(long = "workload", short = 'w')]
    workloads: Vec<String>,
    /// Measured seconds of a workload without its own duration= (0.001..86400)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before a workload's measured ones (0..86400)
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds that requests still queued or in flight at a workload's end may take (0..3600)
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Seed of the arrival times and drawn values (default: random; printed in the JSON)
    #[arg(long)]
    seed: Option<u64>,
    /// CSV, one line per measured request: workload,arrival,latency_us,status,rows
    #[arg(long)]
    log: Option<PathBuf>,
    /// Runtime threads, 1..64 (1: the connections on one core; each open-loop workload
    /// also has a thread timing its arrivals)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Instead of workloads: open N connections (1..100000), run SELECT 1 on each, write
    /// --ready-file, stay idle for --duration seconds
    #[arg(long)]
    hold: Option<u32>,
    /// --hold: written (the number of connections) once all are open
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn secs(v: f64, what: &str, max: f64) -> anyhow::Result<Duration> {
    if !(0.0..=max).contains(&v) {
        bail!("{what} {v} is outside 0..{max} seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(1..=64).contains(&args.threads) {
        bail!("--threads {} is outside 1..64", args.threads);
    }
    let mut config = Config::from_str(&args.conn).context("--conn")?;
    if config.get_password().is_none()
        && let Ok(p) = std::env::var("PGPASSWORD")
    {
        config.password(p);
    }
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("tokio runtime")?;
    let summary = match args.hold {
        Some(n) => rt.block_on(hold(&args, config, n))?,
        None => rt.block_on(load(&args, config))?,
    };
    println!("{summary}");
    Ok(())
}

async fn hold(args: &Args, mut config: Config, clients: u32) -> anyhow::Result<Value> {
    if !(1..=100_000).contains(&clients) || !args.workloads.is_empty() {
        bail!("--hold takes 1..100000 connections and no --workload");
    }
    if config.get_application_name().is_none() {
        config.application_name("pgload-hold");
    }
    let (sessions, errors) = run::open_sessions(&config, "hold", clients).await;
    let mut open = Vec::with_capacity(sessions.len());
    for s in sessions.into_iter().flatten() {
        if s.ping().await {
            open.push(s);
        }
    }
    if errors > 0 || u32::try_from(open.len()).unwrap_or(u32::MAX) < clients {
        bail!("--hold: {} of {clients} connections opened", open.len());
    }
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{}\n", open.len())).context("--ready-file")?;
    }
    tokio::time::sleep(secs(args.duration, "--duration", spec::MAX_SECS)?).await;
    Ok(json!({ "mode": "hold", "clients": open.len() }))
}

async fn load(args: &Args, config: Config) -> anyhow::Result<Value> {
    if args.workloads.is_empty() {
        bail!("no --workload (see --help)");
    }
    let duration = secs(args.duration, "--duration", spec::MAX_SECS)?;
    if duration.is_zero() {
        bail!("--duration must be above 0");
    }
    let warmup = secs(args.warmup, "--warmup", spec::MAX_SECS)?;
    let drain = secs(args.drain, "--drain", 3600.0)?;
    let seed = match args.seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random seed: {e}"))?;
            u64::from_ne_bytes(b)
        }
    };
    let mut specs: Vec<(Spec, Script)> = Vec::new();
    for (i, w) in args.workloads.iter().enumerate() {
        let spec = Spec::parse(w, i)?;
        if specs.iter().any(|(s, _)| s.name == spec.name) {
            bail!("two workloads are named '{}'", spec.name);
        }
        let script = match &spec.source {
            Source::File(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("script {path}"))?;
                Script::parse(&text).with_context(|| format!("script {path}"))?
            }
            Source::Sql(sql) => {
                Script::inline(sql).with_context(|| format!("workload {}", spec.name))?
            }
        };
        specs.push((spec, script));
    }
    // Every connection is opened before the clock starts, so connecting is not measured.
    let mut opened = Vec::with_capacity(specs.len());
    for (spec, _) in &specs {
        let mut c = config.clone();
        if c.get_application_name().is_none() {
            c.application_name(&spec.name);
        }
        let (sessions, errors) = run::open_sessions(&c, &spec.name, spec.clients).await;
        opened.push((c, sessions, errors));
    }
    let t0 = Instant::now();
    let epoch = (t0, SystemTime::now());
    let mut works = Vec::with_capacity(specs.len());
    let mut tasks = Vec::with_capacity(specs.len());
    for ((index, (spec, script)), (c, sessions, errors)) in (0u64..).zip(specs).zip(opened) {
        let begin = t0 + spec.start;
        let measure_from = begin + spec.warmup.unwrap_or(warmup);
        let end = measure_from + spec.duration.unwrap_or(duration);
        let mut stats = Stats::new(measure_from, args.log.is_some()).context("histogram")?;
        stats.connect_errors = errors;
        let work = Arc::new(run::Work {
            spec,
            script,
            config: c,
            seed: seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
            begin,
            measure_from,
            end,
            hard_stop: end + drain,
            stats: Mutex::new(stats),
        });
        tasks.push(tokio::spawn(run::run(Arc::clone(&work), sessions)));
        works.push(work);
    }
    for t in tasks {
        t.await.context("workload task")?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (user, sys) = stats::cpu_seconds().unwrap_or((0.0, 0.0));
    let mut executed = 0u64;
    let mut out = serde_json::Map::new();
    for w in &works {
        let st = w.stats();
        executed = executed.saturating_add(st.executed);
        out.insert(w.spec.name.clone(), Value::Object(describe(w, &st, epoch)));
    }
    if let Some(path) = &args.log {
        write_log(path, &works, epoch).with_context(|| format!("--log {}", path.display()))?;
    }
    let per_request = if executed > 0 {
        json!(((user + sys) * 1e6 / executed as f64 * 100.0).round() / 100.0)
    } else {
        json!(null)
    };
    Ok(json!({
        "seed": seed,
        "threads": args.threads,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "executed": executed,
        "cpu": {
            "user_s": user,
            "sys_s": sys,
            "total_s": ((user + sys) * 1000.0).round() / 1000.0,
            "us_per_request": per_request,
        },
        "workloads": out,
    }))
}

/// A workload's settings and results.
fn describe(
    w: &run::Work,
    st: &Stats,
    epoch: (Instant, SystemTime),
) -> serde_json::Map<String, Value> {
    let unix = |t: Instant| {
        let base = epoch.1.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let d = base.saturating_add(t.saturating_duration_since(epoch.0));
        (d.as_secs_f64() * 1e6).round() / 1e6
    };
    let measured = w
        .end
        .saturating_duration_since(w.measure_from)
        .as_secs_f64();
    let mut m = serde_json::Map::new();
    match w.spec.arrivals {
        Arrivals::Closed => {
            m.insert("mode".into(), json!("closed"));
        }
        Arrivals::Open {
            rate,
            queue,
            timeout,
        } => {
            m.insert("mode".into(), json!("open"));
            m.insert("target_rate_per_s".into(), json!(rate));
            m.insert("queue".into(), json!(queue));
            m.insert("timeout_s".into(), json!(timeout.as_secs_f64()));
        }
    }
    m.insert("protocol".into(), json!(w.spec.protocol.name()));
    m.insert("clients".into(), json!(w.spec.clients));
    m.insert("measure_start_unix".into(), json!(unix(w.measure_from)));
    m.insert("measure_end_unix".into(), json!(unix(w.end)));
    m.insert("duration_s".into(), json!(measured));
    m.extend(st.summary(measured));
    m
}

fn write_log(
    path: &PathBuf,
    works: &[Arc<run::Work>],
    epoch: (Instant, SystemTime),
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "workload,arrival,latency_us,status,rows")?;
    for w in works {
        w.stats().write_log(&w.spec.name, epoch, &mut f)?;
    }
    f.flush()
}
