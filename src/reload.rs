//! The rules in force and how they change: an [`ArcSwap`] holding the active rule set (each
//! statement takes one snapshot and finishes under it), the concurrency limiters that belong to
//! that set, and reloading — from a file poll, SIGHUP or `POST /rules/reload`. A file that fails
//! to parse or validate changes nothing; the error is kept for `GET /rules`, logged and counted.
//!
//! The file is polled (size, mtime, then content hash) rather than watched with inotify: it
//! survives editors that save by rename and Kubernetes ConfigMaps that swap a symlink, and costs
//! one `stat` per interval. See docs/adr/0003-rules-reload-by-polling.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use crate::limits::Limit;
use crate::protect::Protection;
use crate::rules::{RuleSet, RulesError, load_rules};

/// How often the rules file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often the protection controller compares protected traffic with its objectives.
pub const PROTECT_STEP: Duration = Duration::from_secs(1);

/// A rule set with the runtime state that belongs to it.
pub struct ActiveRules {
    pub set: RuleSet,
    /// The limit each rule's statements are admitted under (its own `max_concurrency`, or
    /// the shared one it names), by rule index.
    pub limits: Vec<Option<Arc<Limit>>>,
    /// The `[limits.<name>]` tables, as `RuleSet::limits`.
    pub shared_limits: Vec<Arc<Limit>>,
    /// The `[[protect]]` objectives and the controller that lowers the other limits.
    pub protection: Protection,
    pub version: u64,
}

impl ActiveRules {
    fn new(set: RuleSet, version: u64, previous: Option<&ActiveRules>) -> Self {
        let now = Instant::now();
        let shared_limits: Vec<Arc<Limit>> = set
            .limits
            .iter()
            .map(|spec| {
                let limit = Limit::shared(spec, now);
                let old =
                    previous.and_then(|p| p.shared_limits.iter().find(|l| l.name == spec.name));
                if let Some(old) = old {
                    limit.inherit(old, now);
                }
                Arc::new(limit)
            })
            .collect();
        let limits = crate::limits::by_rule(&set, &shared_limits);
        let protection = Protection::new(&set, &limits, now);
        if let Some(previous) = previous {
            protection.inherit(&previous.protection);
        }
        ActiveRules {
            set,
            limits,
            shared_limits,
            protection,
            version,
        }
    }
}

/// What `GET /rules` reports about loading.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadStatus {
    pub path: Option<PathBuf>,
    pub version: u64,
    pub loaded_at: Option<String>,
    pub file_hash: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub reload_failures: u64,
}

/// The rules in force and their reload machinery.
pub struct Rules {
    current: ArcSwap<ActiveRules>,
    path: Option<PathBuf>,
    status: Mutex<ReloadStatus>,
    failures: AtomicU64,
}

impl Rules {
    /// Loads the initial rules; a bad file here is a startup error.
    pub fn load(path: Option<&Path>) -> Result<Rules, RulesError> {
        let set = match path {
            Some(path) => load_rules(path)?,
            None => RuleSet::empty(),
        };
        let status = ReloadStatus {
            path: path.map(Path::to_path_buf),
            version: 1,
            loaded_at: Some(crate::stats::rfc3339(SystemTime::now())),
            file_hash: path.map(|_| set.source_hash.clone()),
            ..ReloadStatus::default()
        };
        Ok(Rules {
            current: ArcSwap::from_pointee(ActiveRules::new(set, 1, None)),
            path: path.map(Path::to_path_buf),
            status: Mutex::new(status),
            failures: AtomicU64::new(0),
        })
    }

    /// The rules to evaluate one statement under.
    pub fn snapshot(&self) -> Arc<ActiveRules> {
        self.current.load_full()
    }

    /// Whether any rule is in force: a guard of the current set, no reference count touched
    /// (asked once per extended-protocol batch).
    pub fn any(&self) -> bool {
        !self.current.load().set.rules.is_empty()
    }

    pub fn status(&self) -> ReloadStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        status.reload_failures = self.failures.load(Relaxed);
        status
    }

    /// Re-reads the file; on success the new rules apply to the next statement. Returns whether
    /// anything changed.
    pub fn reload(&self) -> Result<bool, String> {
        // A bug in validation must not take the reload path (and with it the watcher) down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reload_file()))
            .unwrap_or_else(|_| {
                self.failures.fetch_add(1, Relaxed);
                let message = "the rules reload panicked (a pgward bug); the rules in force stay";
                tracing::error!("{message}");
                self.set_status(|s| s.last_error = Some(message.into()));
                Err(message.into())
            })
    }

    fn reload_file(&self) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Err("no rules file configured".into());
        };
        match load_rules(path) {
            Ok(set) => {
                let current = self.current.load();
                if current.set.source_hash == set.source_hash {
                    self.set_status(|s| s.last_error = None);
                    return Ok(false);
                }
                let version = current.version + 1;
                let hash = set.source_hash.clone();
                let count = set.rules.len();
                self.current
                    .store(Arc::new(ActiveRules::new(set, version, Some(&current))));
                self.set_status(|s| {
                    s.version = version;
                    s.loaded_at = Some(crate::stats::rfc3339(SystemTime::now()));
                    s.file_hash = Some(hash);
                    s.last_error = None;
                });
                tracing::info!(version, rules = count, path = %path.display(), "rules reloaded");
                Ok(true)
            }
            Err(e) => {
                let message = e.to_string();
                self.failures.fetch_add(1, Relaxed);
                self.set_status(|s| {
                    s.last_error = Some(message.clone());
                    s.last_error_at = Some(crate::stats::rfc3339(SystemTime::now()));
                });
                tracing::error!(path = %path.display(), problems = %message, "rules file rejected; the previous rules stay in force");
                Err(message)
            }
        }
    }

    fn set_status(&self, change: impl FnOnce(&mut ReloadStatus)) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut status);
    }

    /// Polls the rules file and reloads when its content changes, until shutdown.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut settle = Settle::new(file_signature(&path));
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
            if settle.observe(file_signature(&path)) {
                // A file that is still wrong is retried on its next change.
                let _ = self.reload();
            }
        }
    }
}

impl Rules {
    /// Runs the protection controller of the rules in force once per [`PROTECT_STEP`] until
    /// shutdown; each change of the other traffic's share is one log line.
    pub async fn protect(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(PROTECT_STEP);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
            let active = self.current.load();
            if !active.protection.active() {
                continue;
            }
            if let Some(change) = active.protection.step(Instant::now()) {
                tracing::warn!(
                    from_permille = change.from,
                    to_permille = change.to,
                    reason = %change.reason,
                    "protection: unprotected limits now at {}% of their configured values",
                    change.to / 10
                );
            }
        }
    }
}

/// Decides when a changed file is ready to load: only once two polls in a row see the same
/// size and modification time, so a file an editor is still writing is not loaded half-done.
#[derive(Debug)]
struct Settle {
    loaded: Option<(u64, SystemTime)>,
    seen: Option<(u64, SystemTime)>,
}

impl Settle {
    fn new(current: Option<(u64, SystemTime)>) -> Settle {
        Settle {
            loaded: current,
            seen: current,
        }
    }

    /// Takes one poll's signature; true when the file changed and has now settled.
    fn observe(&mut self, signature: Option<(u64, SystemTime)>) -> bool {
        let settled = signature == self.seen;
        self.seen = signature;
        if settled && signature != self.loaded {
            self.loaded = signature;
            return true;
        }
        false
    }
}

/// Size and modification time, enough to notice a change without reading the file.
fn file_signature(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn sig(len: u64, secs: u64) -> Option<(u64, SystemTime)> {
        Some((len, UNIX_EPOCH + Duration::from_secs(secs)))
    }

    #[test]
    fn a_changed_file_loads_only_once_it_has_settled() {
        let mut settle = Settle::new(sig(100, 1));
        assert!(!settle.observe(sig(100, 1)), "nothing changed");
        // Truncated by an editor, then written back a poll later.
        assert!(!settle.observe(sig(0, 2)));
        assert!(!settle.observe(sig(120, 3)));
        assert!(
            settle.observe(sig(120, 3)),
            "the same twice: settled, load it"
        );
        assert!(
            !settle.observe(sig(120, 3)),
            "loaded once, not on every poll"
        );
        // Removed and put back.
        assert!(!settle.observe(None));
        assert!(!settle.observe(sig(120, 4)));
        assert!(settle.observe(sig(120, 4)));
    }
}
