//! `pgward check`: everything pgward loads at start, checked without starting it — the config
//! (TOML, every value through [`Config::validate`], flags applied), the files it names (client
//! TLS certificate and key, the upstream CA) and the rules file. Each class of problem has its
//! own exit status ([`Problem::exit_code`]), so a deploy script can tell a typo in pgward.toml
//! from a missing certificate.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::rules::RulesError;

/// Why `pgward check` failed; one class per exit status.
#[derive(Debug, Error)]
pub enum Problem {
    /// The rules file could not be read or has problems (each with file:line:column).
    #[error("{0}")]
    Rules(#[from] RulesError),
    /// The config file could not be read or parsed, or a value (an address, a range, the admin
    /// token) is invalid.
    #[error("pgward: {0}")]
    Config(#[from] ConfigError),
    /// A TLS file the config names cannot be read or holds no usable certificate or key.
    #[error("pgward: {0}")]
    Tls(String),
}

impl Problem {
    /// 1 for the rules file (what `check` has always returned for it), 2 for the config (the
    /// status pgward itself exits with on a bad config), 3 for TLS files.
    pub fn exit_code(&self) -> u8 {
        match self {
            Problem::Rules(_) => 1,
            Problem::Config(_) => 2,
            Problem::Tls(_) => 3,
        }
    }
}

/// Where the rules file to check came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesSource {
    /// Named on the command line.
    Argument(PathBuf),
    /// The config's `rules` key.
    Config(PathBuf),
    /// Neither: pgward would run without rules.
    None,
}

impl RulesSource {
    /// The command-line file wins over the config's, as it is the one the user asked about.
    pub fn pick(argument: Option<&Path>, config: &Config) -> RulesSource {
        match (argument, &config.rules) {
            (Some(path), _) => RulesSource::Argument(path.to_path_buf()),
            (None, Some(path)) => RulesSource::Config(path.clone()),
            (None, None) => RulesSource::None,
        }
    }
}

/// Checks an already loaded and flag-merged `config` (its own loading errors are
/// [`Problem::Config`] too) and the rules file; returns the lines to print on success.
pub fn check(
    config_file: Option<&Path>,
    config: &Config,
    rules_argument: Option<&Path>,
) -> Result<Vec<String>, Problem> {
    config.validate()?;
    check_tls_files(config)?;
    let mut report = Vec::new();
    report.push(match config_file {
        Some(path) => format!("{}: ok", path.display()),
        None => "no config file: defaults apply (ok)".to_owned(),
    });
    match RulesSource::pick(rules_argument, config) {
        RulesSource::Argument(path) | RulesSource::Config(path) => {
            let set = crate::rules::load_rules(&path)?;
            let mut line = format!("{}: ok, {} rule(s)", path.display(), set.rules.len());
            if !set.limits.is_empty() {
                line.push_str(&format!(", {} shared limit(s)", set.limits.len()));
            }
            if !set.protect.is_empty() {
                line.push_str(&format!(", {} protected", set.protect.len()));
            }
            report.push(line);
        }
        RulesSource::None => report.push(
            "no rules file: none given and the config names none (`rules = \"...\"`), so \
             pgward runs without rules"
                .to_owned(),
        ),
    }
    Ok(report)
}

/// The certificate, key and CA files load as they would at start.
fn check_tls_files(config: &Config) -> Result<(), Problem> {
    crate::server::client_tls_acceptor(&config.server.tls).map_err(Problem::Tls)?;
    crate::upstream::Upstream::new(config.upstream.clone())
        .map_err(|e| Problem::Tls(format!("upstream.ca_file: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_of_problem_has_its_own_exit_code() {
        let mut bad_listen = Config::default();
        bad_listen.server.listen = "nope".into();
        let e = check(None, &bad_listen, None).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("listen"), "{e}");

        let mut missing_cert = Config::default();
        missing_cert.server.tls.cert = Some("/nonexistent/cert.pem".into());
        missing_cert.server.tls.key = Some("/nonexistent/key.pem".into());
        let e = check(None, &missing_cert, None).unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
        assert!(e.to_string().contains("tls.cert"), "{e}");

        let e = check(
            None,
            &Config::default(),
            Some(Path::new("/nonexistent.toml")),
        );
        assert_eq!(e.unwrap_err().exit_code(), 1);
    }

    #[test]
    fn no_rules_file_is_said_not_guessed() {
        let report = check(None, &Config::default(), None).unwrap();
        assert!(
            report.iter().any(|l| l.starts_with("no rules file")),
            "{report:?}"
        );
    }
}
