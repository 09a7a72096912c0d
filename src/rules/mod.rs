//! The rules engine, pure: rules.toml -> [`RuleSet`] (parsed, validated with every problem
//! reported at once, compiled), and [`RuleSet::evaluate`], which picks the first rule in file
//! order whose matcher and filters accept a statement. A rule can give a statement its own time
//! budget, cap how many run upstream at once, rewrite it into another statement, reject it, or
//! (in observe mode) only record what it would have done. This module decides; the session
//! applies the decision. See `docs/rules.md` for the DBA's view.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::fingerprint::FingerprintId;

mod cache_policy;
mod compile;
mod describe;
#[cfg(test)]
mod evaluate_tests;
mod fields;
mod limits;
mod protect;
mod rewrite;
mod schema;
#[cfg(test)]
mod tests;

pub use compile::{DEFAULT_CANCEL_GRACE, DEFAULT_QUEUE_TIMEOUT, DEFAULT_SQLSTATE};
pub use describe::describe;
pub use protect::DEFAULT_WINDOW;
pub use rewrite::{Rewrite, TEXT_OID};

/// A compiled rules file.
#[derive(Clone, Debug)]
pub struct RuleSet {
    /// Budget of statements no rule gives another one (`None`: unlimited).
    pub default_budget: Option<Duration>,
    /// How long a cancelled statement may take to stop before the connection is closed.
    pub cancel_grace: Duration,
    /// In file order; the first match wins.
    pub rules: Vec<Rule>,
    /// `[limits.<name>]`, in name order; rules refer to them by index (`Rule::limit`).
    pub limits: Vec<LimitSpec>,
    /// `[[protect]]`: latency objectives the other traffic's limits give way to.
    pub protect: Vec<ProtectSpec>,
    /// xxh3-64 hex of the file text (empty for [`RuleSet::empty`]).
    pub source_hash: String,
}

/// Who runs a statement; rule filters compare against it.
#[derive(Clone, Copy, Debug)]
pub struct SessionInfo<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub application_name: &'a str,
}

/// One compiled `[[rule]]`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: Arc<str>,
    /// Line of the rule's `[[rule]]` header.
    pub line: usize,
    pub matcher: Matcher,
    pub filters: Filters,
    pub budget: Budget,
    /// Statements in flight upstream at once, across all clients.
    pub max_concurrency: Option<usize>,
    /// How long a statement waits for a concurrency slot (counts against its budget).
    pub queue_timeout: Duration,
    /// The shared `[limits.<name>]` its statements count against (index into
    /// `RuleSet::limits`); a rule has either this or its own `max_concurrency`.
    pub limit: Option<usize>,
    pub rewrite: Option<Rewrite>,
    pub action: Action,
    pub mode: Mode,
    /// Results of matching read statements are cached (see `docs/caching.md`).
    pub cache: Option<CachePolicy>,
    /// What a statement gets when its budget passes: the error, or a stale cached result.
    pub on_budget_exceeded: Fallback,
    /// What a statement gets when Postgres fails it with class 08/53/57: the error, or a stale
    /// cached result.
    pub on_upstream_error: Fallback,
}

/// A `[limits.<name>]` table: one bulkhead for all the rules that name it.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitSpec {
    pub name: Arc<str>,
    /// Statements of its rules in flight upstream at once, across all clients.
    pub max_concurrency: Option<usize>,
    /// How long a statement waits for a slot or for database time (counts against its
    /// budget).
    pub queue_timeout: Duration,
    pub db_time: Option<DbTimeSpec>,
}

/// A database-time budget: a token bucket of upstream execution time, refilled at
/// `per_second` per second of wall time up to `burst`, debited with each statement's measured
/// time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DbTimeSpec {
    pub per_second: Duration,
    pub burst: Duration,
}

/// A `[[protect]]`: what must stay fast, and how fast.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtectSpec {
    /// How ops see it: `rule:checkout` or `application_name:checkout-svc`.
    pub name: Arc<str>,
    pub traffic: Protected,
    /// The objective: p99 latency of the protected statements over `window`.
    pub p99: Duration,
    pub window: Duration,
}

/// Which statements a `[[protect]]` covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protected {
    /// The statements a rule matches (index into `RuleSet::rules`).
    Rule(usize),
    /// Every statement of sessions with this `application_name`.
    ApplicationName(String),
}

/// A rule's `cache` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long an entry is fresh (answered without asking Postgres).
    pub ttl: Duration,
    /// How long after `ttl` an entry may still be served when Postgres is slow or failing,
    /// or while one request refreshes it.
    pub stale_for: Duration,
    pub refresh: Refresh,
    /// Results larger than this (bytes of protocol messages) are not cached.
    pub max_entry_size: u64,
    pub invalidate: Invalidate,
}

/// What happens to the first request for an entry past its `ttl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// It runs upstream and refreshes the entry; requests meanwhile get the old entry.
    Background,
    /// It is a miss: it runs upstream and concurrent requests wait for it.
    Blocking,
}

/// Whether writes seen by pgward drop entries that read the written tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidate {
    OnWrite,
    /// Entries live out their ttl (results that may lag writes, like recommendations).
    TtlOnly,
}

/// The answer when a statement cannot complete normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    Error,
    ServeStale,
}

/// What a statement is recognised by.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// A fingerprint id (given, or of `match.query`'s example).
    Fingerprint(FingerprintId),
    /// A regex searched for in the normalized text.
    Pattern(regex::Regex),
}

/// Optional session filters; every one that is set must equal the session's value exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub user: Option<String>,
    pub database: Option<String>,
    pub application_name: Option<String>,
}

/// A rule's time budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Use `[defaults] budget`.
    Inherit,
    /// No budget for this statement.
    Off,
    Limit(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the statement (under the rule's budget, cap and rewrite).
    Allow,
    /// Answer with an error instead of running it.
    Reject { message: String, sqlstate: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Apply the rule.
    Enforce,
    /// Record what the rule would have done; change nothing.
    Observe,
}

/// One thing wrong with a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem is not about a place in the file (it could not be read).
    pub line: usize,
    pub column: usize,
    /// Name of the rule the problem is in, when known.
    pub rule: Option<String>,
    pub message: String,
}

/// Every problem of a rules file; displayed one per line as `path:line:col: rule "name": message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.path, .problems))]
pub struct RulesError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = fmt::Write::write_fmt(&mut out, format_args!("{}", path.display()));
        if p.line > 0 {
            let _ = fmt::Write::write_fmt(&mut out, format_args!(":{}:{}", p.line, p.column));
        }
        out.push_str(": ");
        if let Some(rule) = &p.rule {
            let _ = fmt::Write::write_fmt(&mut out, format_args!("rule {rule:?}: "));
        }
        out.push_str(&p.message);
    }
    out
}

impl RuleSet {
    /// No rules, no default budget, a 1s cancel grace.
    pub fn empty() -> RuleSet {
        RuleSet {
            default_budget: None,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            rules: Vec::new(),
            limits: Vec::new(),
            protect: Vec::new(),
            source_hash: String::new(),
        }
    }

    /// True when some rule caches results.
    pub fn caches(&self) -> bool {
        self.rules.iter().any(|r| r.cache.is_some())
    }

    /// The first rule, in file order, whose filters all accept the session and whose matcher
    /// accepts the statement (fingerprint rules compare `id`, pattern rules search
    /// `normalized`, the statement's normalized text).
    pub fn evaluate(
        &self,
        id: FingerprintId,
        normalized: &str,
        session: &SessionInfo<'_>,
    ) -> Option<&Rule> {
        self.rules
            .get(self.evaluate_index(id, normalized, session)?)
    }

    /// Like [`RuleSet::evaluate`], returning the rule's position in `rules`.
    pub fn evaluate_index(
        &self,
        id: FingerprintId,
        normalized: &str,
        session: &SessionInfo<'_>,
    ) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.filters.accept(session) && r.matcher.accepts(id, normalized))
    }
}

impl Matcher {
    pub fn accepts(&self, id: FingerprintId, normalized: &str) -> bool {
        match self {
            Matcher::Fingerprint(want) => *want == id,
            Matcher::Pattern(re) => re.is_match(normalized),
        }
    }
}

impl Filters {
    pub fn accept(&self, s: &SessionInfo<'_>) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.user, s.user)
            && ok(&self.database, s.database)
            && ok(&self.application_name, s.application_name)
    }
}

impl Rule {
    /// The budget this rule gives its statements: its own, none ("off"), or the default.
    pub fn budget(&self, set: &RuleSet) -> Option<Duration> {
        match self.budget {
            Budget::Inherit => set.default_budget,
            Budget::Off => None,
            Budget::Limit(d) => Some(d),
        }
    }
}

/// Parses rules text; `path_for_messages` only appears in the error.
pub fn parse_rules(path_for_messages: &Path, text: &str) -> Result<RuleSet, RulesError> {
    compile::compile(text).map_err(|problems| RulesError {
        path: path_for_messages.to_path_buf(),
        problems,
    })
}

/// Reads and parses a rules file.
pub fn load_rules(path: &Path) -> Result<RuleSet, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|e| RulesError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            rule: None,
            message: format!("cannot read the rules file: {e}"),
        }],
    })?;
    if text.trim().is_empty() {
        // An editor that truncates the file before writing it back leaves it empty for a
        // moment; loading that would drop every budget, cap and cache at once.
        return Err(RulesError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                rule: None,
                message: "the rules file is empty; to run without rules on purpose, write a \
                          comment such as `# no rules` in it"
                    .into(),
            }],
        });
    }
    parse_rules(path, &text)
}
