//! One `--workload` argument: `key=value` pairs separated by commas, checked against their
//! documented ranges. `sql=` takes the rest of the argument (commas included), so it comes last.

use std::time::Duration;

/// Ranges every workload setting must fall in (also in `--help` and docs/benchmarks.md).
pub const MAX_CLIENTS: u32 = 10_000;
pub const MAX_RATE: f64 = 1_000_000.0;
pub const MAX_QUEUE: usize = 1_000_000;
pub const MAX_SECS: f64 = 86_400.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
    Prepared,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Prepared => "prepared",
        }
    }
}

/// How requests arrive.
#[derive(Debug, Clone, Copy)]
pub enum Arrivals {
    /// Each connection sends the next request when the previous one is answered.
    Closed,
    /// Poisson arrivals at `rate` per second, served by the connections through a queue of at
    /// most `queue` requests; one queued longer than `timeout` is given up.
    Open {
        rate: f64,
        queue: usize,
        timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub enum Source {
    File(String),
    Sql(String),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub source: Source,
    pub clients: u32,
    pub arrivals: Arrivals,
    pub protocol: Protocol,
    /// Seconds after the run's start the workload begins (its warm-up included).
    pub start: Duration,
    /// Measured seconds; `None`: the run's `--duration`.
    pub duration: Option<Duration>,
    /// Unmeasured seconds before the measured ones; `None`: the run's `--warmup`.
    pub warmup: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("workload '{spec}': {what}")]
    Bad { spec: String, what: String },
}

fn secs(v: &str, key: &str, min: f64) -> Result<Duration, String> {
    let s: f64 = v
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{key}={v}: not a number of seconds"))?;
    if !(min..=MAX_SECS).contains(&s) {
        return Err(format!("{key}={v}: must be in [{min}, {MAX_SECS}] seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Spec {
    pub fn parse(arg: &str, index: usize) -> Result<Spec, SpecError> {
        Self::parse_inner(arg, index).map_err(|what| SpecError::Bad {
            spec: arg.to_owned(),
            what,
        })
    }

    fn parse_inner(arg: &str, index: usize) -> Result<Spec, String> {
        let mut name = format!("w{index}");
        let mut source = None;
        let mut clients = None;
        let mut rate = None;
        let mut queue = 10_000usize;
        let mut timeout = Duration::from_secs(5);
        let mut protocol = Protocol::Simple;
        let (mut start, mut duration, mut warmup) = (Duration::ZERO, None, None);
        let mut rest = arg;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once('=')
                .ok_or_else(|| format!("'{rest}' is not key=value"))?;
            let key = key.trim();
            if key == "sql" {
                source = Some(Source::Sql(after.to_owned()));
                break;
            }
            let (value, next) = after.split_once(',').unwrap_or((after, ""));
            rest = next;
            let value = value.trim();
            match key {
                "name" => {
                    let ok = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if !ok {
                        return Err(format!("name={value}: letters, digits, '_' and '-' only"));
                    }
                    value.clone_into(&mut name);
                }
                "script" => source = Some(Source::File(value.to_owned())),
                "clients" => {
                    let n: u32 = value.parse().map_err(|_| format!("clients={value}"))?;
                    if !(1..=MAX_CLIENTS).contains(&n) {
                        return Err(format!("clients={n}: must be 1 to {MAX_CLIENTS}"));
                    }
                    clients = Some(n);
                }
                "rate" => {
                    let r: f64 = value.parse().map_err(|_| format!("rate={value}"))?;
                    if !(0.001..=MAX_RATE).contains(&r) {
                        return Err(format!(
                            "rate={value}: must be 0.001 to {MAX_RATE} per second"
                        ));
                    }
                    rate = Some(r);
                }
                "queue" => {
                    let q: usize = value.parse().map_err(|_| format!("queue={value}"))?;
                    if !(1..=MAX_QUEUE).contains(&q) {
                        return Err(format!("queue={q}: must be 1 to {MAX_QUEUE}"));
                    }
                    queue = q;
                }
                "timeout" => timeout = secs(value, key, 0.001)?,
                "start" => start = secs(value, key, 0.0)?,
                "duration" => duration = Some(secs(value, key, 0.001)?),
                "warmup" => warmup = Some(secs(value, key, 0.0)?),
                "protocol" => {
                    protocol = match value {
                        "simple" => Protocol::Simple,
                        "extended" => Protocol::Extended,
                        "prepared" => Protocol::Prepared,
                        _ => return Err(format!("protocol={value}: simple, extended or prepared")),
                    }
                }
                _ => return Err(format!("unknown key '{key}'")),
            }
        }
        let source = source.ok_or("needs script=FILE or sql=TEXT")?;
        let arrivals = match rate {
            Some(rate) => Arrivals::Open {
                rate,
                queue,
                timeout,
            },
            None => Arrivals::Closed,
        };
        Ok(Spec {
            name,
            source,
            clients: clients.unwrap_or(16),
            arrivals,
            protocol,
            start,
            duration,
            warmup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_spec_with_sql_last() {
        let s = Spec::parse(
            "name=reco,rate=400,clients=128,timeout=5,sql=SELECT 1, 2",
            0,
        )
        .unwrap();
        assert_eq!(s.name, "reco");
        assert_eq!(s.clients, 128);
        assert!(matches!(s.arrivals, Arrivals::Open { rate, .. } if rate == 400.0));
        assert!(matches!(s.source, Source::Sql(ref q) if q == "SELECT 1, 2"));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            "clients=0,sql=SELECT 1",
            "rate=0,sql=SELECT 1",
            "protocol=binary,sql=SELECT 1",
            "duration=0,sql=SELECT 1",
            "clients=4",
            "colour=red,sql=SELECT 1",
        ] {
            assert!(Spec::parse(bad, 0).is_err(), "{bad}");
        }
    }
}
