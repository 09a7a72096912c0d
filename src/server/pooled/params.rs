//! A transaction-mode client's session settings, which must follow it from one shared server
//! connection to the next: the parameters PostgreSQL reports (ParameterStatus: application_name,
//! client_encoding, DateStyle, IntervalStyle, TimeZone, standard_conforming_strings,
//! search_path where reported) are compared with what the server has and set only where they
//! differ; the others a client changed with `SET` (statement_timeout, work_mem, ...) are kept as
//! the statements it sent and run again on every server it gets, which is then reset when given
//! back. `SET LOCAL` and `SET TRANSACTION` end with their transaction and need nothing.

use std::fmt::Write as _;

/// Reported parameters pgward keeps in step on every server (others, such as server_version
/// or is_superuser, cannot be set or are the same everywhere).
const SYNCED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "search_path",
];

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// `SET` statements carried per client; past it a new name is not carried (the statement
/// still runs, and its server is reset afterwards) and a warning is logged.
pub const MAX_CARRIED: usize = 64;
/// Longest `SET` statement carried.
pub const MAX_SET_LEN: usize = 8 * 1024;

/// What one statement does to session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetCapture {
    /// `SET [SESSION] name ...`: replayed as written.
    Set { name: String, text: Box<str> },
    /// `RESET name`
    Reset { name: String },
    /// `RESET ALL`
    ResetAll,
}

/// The client's settings.
#[derive(Debug, Default)]
pub struct Params {
    /// Reported parameters as the client was last told them (original name, value).
    reported: Vec<(String, String)>,
    /// `SET` statements replayed on every server, by lower-case name.
    carried: Vec<(String, Box<str>)>,
    /// Captured in the open transaction: kept if it commits.
    in_transaction: Vec<SetCapture>,
    /// The transaction's end was a ROLLBACK (or a COMMIT of a failed transaction).
    rolled_back: bool,
    /// The carried list was full once: said once per session.
    warned_full: bool,
}

/// Whether `name` is one of the reported parameters pgward keeps in step (any case).
pub fn is_synced(name: &str) -> bool {
    SYNCED.iter().any(|s| s.eq_ignore_ascii_case(name))
}

impl Params {
    /// The client's view at login: the server's reported parameters, overridden by the
    /// settings in the client's StartupMessage (those not reported become carried SETs).
    pub fn at_login(server: &[(String, String)], startup: &[(String, String)]) -> Params {
        let mut params = Params {
            reported: server.to_vec(),
            ..Params::default()
        };
        for (name, value) in startup {
            if NOT_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                continue;
            }
            if is_synced(name) {
                params.report(name, value);
            } else {
                let text = format!("SET {} TO {}", quote_ident(name), quote_literal(value));
                params.carry(name.to_ascii_lowercase(), text.into());
            }
        }
        params
    }

    /// What the client is told at login (ParameterStatus for each).
    pub fn reported(&self) -> &[(String, String)] {
        &self.reported
    }

    /// A ParameterStatus reached the client.
    pub fn report(&mut self, name: &str, value: &str) {
        match self
            .reported
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => value.clone_into(v),
            None => self.reported.push((name.to_owned(), value.to_owned())),
        }
    }

    /// Whether a server that is given back carries settings of this client.
    pub fn carries(&self) -> bool {
        !self.carried.is_empty()
    }

    /// The query that makes `server` (its reported parameters) match this client, if any.
    pub fn prefix(&self, server: &[(String, String)]) -> Option<String> {
        let mut sql = String::new();
        for (name, value) in &self.reported {
            if !is_synced(name) {
                continue;
            }
            let on_server = server
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            if on_server != Some(value.as_str()) {
                let _ = write!(
                    sql,
                    "SET {} TO {};",
                    quote_ident(name),
                    quote_literal(value)
                );
            }
        }
        for (_, text) in &self.carried {
            sql.push_str(text);
            sql.push(';');
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// A statement that changed settings succeeded in the open transaction.
    pub fn captured(&mut self, capture: SetCapture) {
        if self.in_transaction.len() < MAX_CARRIED * 2 {
            self.in_transaction.push(capture);
        }
    }

    /// The transaction ended with ROLLBACK: its settings go.
    pub fn rolled_back(&mut self) {
        self.rolled_back = true;
    }

    /// ReadyForQuery 'I': the transaction is over; what it set stays unless it rolled back.
    pub fn transaction_ended(&mut self) {
        let captured = std::mem::take(&mut self.in_transaction);
        if !std::mem::take(&mut self.rolled_back) {
            for capture in captured {
                self.apply(capture);
            }
        }
    }

    /// `DISCARD ALL`: every setting back to the server's default.
    pub fn discard_all(&mut self) {
        self.carried.clear();
        self.in_transaction.clear();
    }

    fn apply(&mut self, capture: SetCapture) {
        match capture {
            SetCapture::ResetAll => self.carried.clear(),
            SetCapture::Reset { name } => self.carried.retain(|(n, _)| *n != name),
            SetCapture::Set { name, text } => self.carry(name, text),
        }
    }

    fn carry(&mut self, name: String, text: Box<str>) {
        if let Some(entry) = self.carried.iter_mut().find(|(n, _)| *n == name) {
            entry.1 = text;
        } else if self.carried.len() < MAX_CARRIED {
            self.carried.push((name, text));
        } else if !std::mem::replace(&mut self.warned_full, true) {
            tracing::warn!(
                max = MAX_CARRIED,
                "more session settings than pgward carries across transactions; the rest apply to one transaction only"
            );
        }
    }
}

/// `"name"`, for a parameter name in SET.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `E'value'`, right whatever the server's standard_conforming_strings.
fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// What a statement's text does to session settings that must be carried, if anything: one
/// `SET` / `RESET` statement alone (a multi-statement query with one is refused in transaction
/// mode before it gets here). Reported parameters are followed through ParameterStatus and
/// transaction-scoped forms (`SET LOCAL`, `SET TRANSACTION`, `SET CONSTRAINTS`) need nothing.
pub fn capture(sql: &[u8]) -> Option<SetCapture> {
    // Runs on every simple Query in transaction mode: most are not SET / RESET, and that is
    // seen from the first byte, before the text is validated.
    let first = sql.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first, b's' | b'S' | b'r' | b'R' | b'-' | b'/') {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    let body = skip_space_and_comments(text);
    let statement = single_statement(body)?;
    let mut words = Words(statement);
    let first = words.next()?;
    if first.eq_ignore_ascii_case("RESET") {
        let name = setting_name(&mut words)?;
        if name == "all" {
            return Some(SetCapture::ResetAll);
        }
        return (!is_synced(&name)).then_some(SetCapture::Reset { name });
    }
    if !first.eq_ignore_ascii_case("SET") || statement.len() > MAX_SET_LEN {
        return None;
    }
    let mut peek = Words(words.0);
    let second = peek.next()?;
    if second.eq_ignore_ascii_case("SESSION") {
        words = peek;
    } else if ["LOCAL", "TRANSACTION", "CONSTRAINTS"]
        .iter()
        .any(|w| second.eq_ignore_ascii_case(w))
    {
        return None;
    }
    let name = setting_name(&mut words)?;
    if is_synced(&name) {
        return None;
    }
    Some(SetCapture::Set {
        name,
        text: statement.into(),
    })
}

/// The setting a SET / RESET names, lower case, with the SQL-standard spellings mapped.
fn setting_name(words: &mut Words<'_>) -> Option<String> {
    let word = words.next()?;
    let lower = word.trim_matches('"').to_ascii_lowercase();
    let mapped = match lower.as_str() {
        "time" => "timezone",
        "names" => "client_encoding",
        "schema" => "search_path",
        "xml" => "xmloption",
        // After `SET SESSION`, which was skipped.
        "authorization" => "session_authorization",
        "characteristics" => "default_transaction_characteristics",
        "session" => match words.next()?.to_ascii_lowercase().as_str() {
            "authorization" => "session_authorization",
            "characteristics" => "default_transaction_characteristics",
            _ => return None,
        },
        _ => return Some(lower),
    };
    Some(mapped.to_owned())
}

/// Whitespace-separated words, a name ending at `=` too.
struct Words<'a>(&'a str);

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0.trim_start();
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '=')
            .unwrap_or(rest.len())
            .max(1);
        let (word, tail) = rest.split_at_checked(end)?;
        self.0 = tail;
        Some(word)
    }
}

fn skip_space_and_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = text.strip_prefix("/*") {
            // Not nested: a statement starting with a nested comment is simply not captured.
            match rest.split_once("*/") {
                Some((_, after)) => text = after,
                None => return "",
            }
        } else {
            return text;
        }
    }
}

/// The statement without its final `;`, when nothing but space follows it; `None` for more
/// than one statement. Quotes are skipped so a `;` inside a value does not count.
fn single_statement(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while let Some(&b) = bytes.get(i) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b';' => {
                let (statement, rest) = text.split_at_checked(i)?;
                let rest = rest.get(1..)?;
                return skip_space_and_comments(rest)
                    .trim_start_matches(';')
                    .trim()
                    .is_empty()
                    .then_some(statement.trim_end());
            }
            None => {}
        }
        i += 1;
    }
    Some(text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, text: &str) -> Option<SetCapture> {
        Some(SetCapture::Set {
            name: name.into(),
            text: text.into(),
        })
    }

    #[test]
    fn session_settings_are_captured_as_written() {
        assert_eq!(
            capture(b"SET statement_timeout = '5s'"),
            set("statement_timeout", "SET statement_timeout = '5s'")
        );
        assert_eq!(
            capture(b"  -- why\n set SESSION work_mem TO '64MB' ;  "),
            set("work_mem", "set SESSION work_mem TO '64MB'")
        );
        assert_eq!(
            capture(b"SET search_path_x='a;b';"),
            set("search_path_x", "SET search_path_x='a;b'")
        );
        assert_eq!(
            capture(b"SET SESSION AUTHORIZATION bob"),
            set("session_authorization", "SET SESSION AUTHORIZATION bob")
        );
        assert_eq!(capture(b"RESET ALL"), Some(SetCapture::ResetAll));
        assert_eq!(
            capture(b"reset Work_Mem"),
            Some(SetCapture::Reset {
                name: "work_mem".into()
            })
        );
    }

    #[test]
    fn transaction_scoped_reported_and_multi_statement_sets_are_not() {
        for sql in [
            "SET LOCAL work_mem = '1MB'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "SET application_name = 'x'",
            "SET TIME ZONE 'UTC'",
            "SET NAMES 'UTF8'",
            "SET work_mem = '1MB'; SELECT 1",
            "SELECT 1",
            "SETX a = 1",
        ] {
            assert_eq!(capture(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn the_prefix_sets_what_differs_and_replays_what_is_carried() {
        let server = vec![
            ("TimeZone".to_owned(), "UTC".to_owned()),
            ("DateStyle".to_owned(), "ISO, MDY".to_owned()),
            ("server_version".to_owned(), "15".to_owned()),
        ];
        let startup = vec![
            ("user".to_owned(), "u".to_owned()),
            ("timezone".to_owned(), "Europe/Paris".to_owned()),
            ("extra_float_digits".to_owned(), "3".to_owned()),
        ];
        let mut params = Params::at_login(&server, &startup);
        assert_eq!(
            params.prefix(&server).as_deref(),
            Some("SET \"TimeZone\" TO E'Europe/Paris';SET \"extra_float_digits\" TO E'3';")
        );
        assert!(params.carries());
        params.captured(SetCapture::ResetAll);
        params.transaction_ended();
        assert!(!params.carries());
        params.report("TimeZone", "UTC");
        assert_eq!(params.prefix(&server), None, "nothing differs any more");
        params.captured(set("work_mem", "SET work_mem='1MB'").unwrap_or(SetCapture::ResetAll));
        params.rolled_back();
        params.transaction_ended();
        assert!(!params.carries(), "a rolled back SET is not carried");
        assert_eq!(quote_literal("a'b\\c"), "E'a\\'b\\\\c'");
    }
}
