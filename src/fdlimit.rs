//! The open-file limit at start. Every client session holds two sockets (client and upstream),
//! so `max_client_connections = 10000` needs over 20,000 descriptors, while most systems start
//! a process with a soft limit of 1,024: past it, accept fails with EMFILE and new clients are
//! dropped mid-incident. pgward raises its soft limit to the hard limit (as the hard limit is
//! the administrator's ceiling, the soft one only a default), and refuses to start when even
//! the hard limit cannot serve the configured connections.

use thiserror::Error;

/// Descriptors beyond the sockets: listeners, the rules file being read, cancel connections
/// in flight, the runtime's own.
const SLACK: u64 = 64;

/// Open files pgward may hold at once: two per client socket (`sockets` counts the sessions
/// and the handshake reserve), one per admin connection, and [`SLACK`].
pub fn needed(sockets: usize, admin_connections: usize) -> u64 {
    let sockets = u64::try_from(sockets).unwrap_or(u64::MAX);
    let admin = u64::try_from(admin_connections).unwrap_or(u64::MAX);
    sockets
        .saturating_mul(2)
        .saturating_add(admin)
        .saturating_add(SLACK)
}

/// What to do with the soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The soft limit already covers `needed`.
    Keep,
    /// Raise the soft limit to this (the hard limit, or unlimited as `None`).
    Raise(Option<u64>),
    /// The hard limit is below `needed`.
    Refuse { hard: u64 },
}

/// `soft` and `hard` as getrlimit gives them (`None`: unlimited).
pub fn plan(soft: Option<u64>, hard: Option<u64>, needed: u64) -> Plan {
    if soft.is_none_or(|s| s >= needed) {
        return Plan::Keep;
    }
    match hard {
        Some(hard) if hard < needed => Plan::Refuse { hard },
        hard => Plan::Raise(hard),
    }
}

#[derive(Debug, Error)]
pub enum FdLimitError {
    #[error(
        "max_client_connections needs about {needed} open files (2 per session, plus the \
         handshake reserve, admin connections and listeners), but the hard limit is {hard}: \
         raise it (systemd LimitNOFILE=, docker run --ulimit nofile=, ulimit -Hn) or lower \
         max_client_connections"
    )]
    TooLow { needed: u64, hard: u64 },
    #[error("cannot raise the open-file limit to {to:?}: {source}")]
    Set {
        to: Option<u64>,
        source: std::io::Error,
    },
}

/// Raises this process's soft open-file limit when it is below `needed`; returns the limit in
/// force afterwards (`None`: unlimited).
#[cfg(unix)]
pub fn ensure(needed: u64) -> Result<Option<u64>, FdLimitError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    match plan(limit.current, limit.maximum, needed) {
        Plan::Keep => Ok(limit.current),
        Plan::Refuse { hard } => Err(FdLimitError::TooLow { needed, hard }),
        Plan::Raise(to) => {
            let new = Rlimit {
                current: to,
                maximum: limit.maximum,
            };
            setrlimit(Resource::Nofile, new).map_err(|e| FdLimitError::Set {
                to,
                source: e.into(),
            })?;
            Ok(to)
        }
    }
}

/// Without Unix resource limits there is nothing to raise.
#[cfg(not(unix))]
pub fn ensure(_needed: u64) -> Result<Option<u64>, FdLimitError> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_needs_a_few_thousand() {
        // 1000 sessions + the 64 handshake reserve, 64 admin connections.
        assert_eq!(needed(1064, 64), 2 * 1064 + 64 + 64);
        assert_eq!(needed(usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_or_the_start_refused() {
        assert_eq!(plan(Some(4096), Some(8192), 2000), Plan::Keep);
        assert_eq!(plan(None, None, 2000), Plan::Keep);
        assert_eq!(
            plan(Some(1024), Some(524_288), 2000),
            Plan::Raise(Some(524_288))
        );
        assert_eq!(plan(Some(1024), None, 2000), Plan::Raise(None));
        assert_eq!(
            plan(Some(1024), Some(1024), 2000),
            Plan::Refuse { hard: 1024 }
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_need_within_the_current_limit_changes_nothing() {
        let now = ensure(16).unwrap();
        assert!(now.is_none_or(|n| n >= 16));
        let e = ensure(u64::MAX - 1);
        // Only an unlimited hard limit could serve that; anything else is refused by name.
        if let Err(e) = e {
            assert!(e.to_string().contains("LimitNOFILE"), "{e}");
        }
    }
}
