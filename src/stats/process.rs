//! The standard `process_*` families of `/metrics` (CPU seconds, resident and virtual memory,
//! open and maximum file descriptors, start time), read from `/proc/self` at scrape time, as
//! the official clients name them so stock dashboards find them. Elsewhere than Linux nothing
//! is read and the families are left out.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Families, one};

/// Clock ticks per second in `/proc/<pid>/stat`: USER_HZ, which Linux fixes at 100 for user
/// space on every architecture (the Go client's procfs assumes the same), so no libc call.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` said at one scrape; a field is `None` when its file was unreadable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessMetrics {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessMetrics {
    /// Reads `/proc/self`; every field is `None` where there is no procfs.
    pub fn read() -> ProcessMetrics {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
        let status = read("/proc/self/status");
        let kb = |key| status.as_deref().and_then(|s| status_kb(s, key));
        let boot = read("/proc/stat").and_then(|s| boot_time(&s));
        ProcessMetrics {
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / USER_HZ),
            resident_bytes: kb("VmRSS:").map(|k| k.saturating_mul(1024)),
            virtual_bytes: kb("VmSize:").map(|k| k.saturating_mul(1024)),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: read("/proc/self/limits").and_then(|s| max_open_files(&s)),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    /// utime + stime.
    cpu_ticks: u64,
    /// Start time after boot.
    start_ticks: u64,
}

/// `/proc/<pid>/stat`: the command name is in parentheses and may hold spaces or `)`, so the
/// fields are counted from the last `)`: state is field 3, utime 14, stime 15, starttime 22.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
    })
}

/// A `Key:   123 kB` line of `/proc/<pid>/status`, in kB.
fn status_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit on the `Max open files` line of `/proc/<pid>/limits`.
fn max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("btime "))?;
    line.get("btime ".len()..)?.trim().parse().ok()
}

impl Collector for ProcessMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::new(encoder);
        if let Some(v) = self.cpu_seconds {
            f.counter(
                "process_cpu_seconds",
                "User and system CPU time spent",
                one(v),
            )?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size",
                self.virtual_bytes,
            ),
            ("process_open_fds", "Open file descriptors", self.open_fds),
            (
                "process_max_fds",
                "Soft limit on open file descriptors",
                self.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                f.gauge(name, help, one(v))?;
            }
        }
        if let Some(v) = self.start_time_seconds {
            f.gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch",
                one(v),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "4242 (pg ward) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 12345 999 77";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        let status = "Name:\tpgward\nVmSize:\t  204800 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(5120));
        assert_eq!(status_kb(status, "VmSize:"), Some(204800));
        assert_eq!(status_kb(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1764800000\n"),
            Some(1_764_800_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = ProcessMetrics::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n > 0), "{p:?}");
        assert!(p.cpu_seconds.is_some() && p.max_fds.is_some(), "{p:?}");
        assert!(p.start_time_seconds.is_some_and(|t| t > 1.0e9), "{p:?}");
    }
}
