//! The errors pgward raises for rules, worded so the person reading them in an application log
//! learns which rule fired and what to change: budget exceeded (57014), shed by a concurrency
//! cap (53000), rejected (the rule's SQLSTATE). A budget's own errors (57014, and the FATAL when
//! its cancel is ignored) are worded in `budget.rs`.

use std::time::Duration;

use crate::fingerprint::FingerprintId;
use crate::protocol::build::{Report, Severity};
use crate::protocol::sqlstate;

/// An error with owned texts, written as an ErrorResponse.
pub(super) struct Raised {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub detail: String,
    pub hint: Option<&'static str>,
}

impl Raised {
    pub fn write_error_to(&self, out: &mut Vec<u8>) {
        let report = Report {
            severity: self.severity,
            code: &self.code,
            message: &self.message,
            detail: Some(&self.detail),
            hint: self.hint,
        };
        report.write_error(out);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_error_to(&mut out);
        out
    }
}

/// 53000 for a statement that found no concurrency slot within queue_timeout.
pub(super) fn shed(
    who: &str,
    slots: usize,
    waited: Duration,
    fingerprint: FingerprintId,
) -> Vec<u8> {
    let message = format!(
        "pgward: too many concurrent statements for {who}: no slot of {slots} free within {}",
        format_duration(waited)
    );
    let hint =
        "Retry later; the rule's max_concurrency protects the database from this query family.";
    insufficient_resources(message, hint, fingerprint)
}

/// The 53000 for a statement whose limit's database-time budget stayed spent while it waited.
pub(super) fn shed_db_time(
    who: &str,
    per_second: Duration,
    waited: Duration,
    fingerprint: FingerprintId,
) -> Vec<u8> {
    let message = format!(
        "pgward: the database-time budget of {who} ({}/s) is spent: none free within {}",
        format_duration(per_second),
        format_duration(waited)
    );
    let hint = "Retry later; the limit's max_db_time keeps this query family to its share of the database.";
    insufficient_resources(message, hint, fingerprint)
}

/// The 53000 for a statement whose limit admits nothing while protected traffic is over its
/// latency objective.
pub(super) fn shed_protected(who: &str, fingerprint: FingerprintId) -> Vec<u8> {
    let message = format!(
        "pgward: {who} gives way to protected traffic, which is over its latency objective"
    );
    let hint =
        "Retry later; pgward admits this query family again as the protected traffic recovers.";
    insufficient_resources(message, hint, fingerprint)
}

/// A shed: 53000 (insufficient_resources), the statement's fingerprint as the detail.
fn insufficient_resources(
    message: String,
    hint: &'static str,
    fingerprint: FingerprintId,
) -> Vec<u8> {
    Raised {
        severity: Severity::Error,
        code: sqlstate::INSUFFICIENT_RESOURCES.into(),
        message,
        detail: format!("fingerprint {fingerprint}"),
        hint: Some(hint),
    }
    .into_bytes()
}

/// The rule's own SQLSTATE and message for a rejected statement.
pub(super) fn rejected(
    rule: &str,
    code: &str,
    message: &str,
    fingerprint: FingerprintId,
) -> Vec<u8> {
    Raised {
        severity: Severity::Error,
        code: code.to_owned(),
        message: message.to_owned(),
        detail: format!("rejected by pgward rule \"{rule}\" (fingerprint {fingerprint})"),
        hint: None,
    }
    .into_bytes()
}

/// The NOTICE that goes with a stale cached result: how old it is and why it was served.
pub(super) fn stale_served(
    age: Duration,
    why: &str,
    rule: &str,
    fingerprint: FingerprintId,
) -> Vec<u8> {
    let message = format!(
        "pgward: served a cached result {} old because {why}",
        format_duration(age)
    );
    let detail = format!("rule \"{rule}\", fingerprint {fingerprint}");
    let mut out = Vec::new();
    Report {
        severity: Severity::Error,
        code: sqlstate::WARNING,
        message: &message,
        detail: Some(&detail),
        hint: None,
    }
    .write_notice(&mut out);
    out
}

/// "150ms", "2s", "1.5s", "2m".
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(150)), "150ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
