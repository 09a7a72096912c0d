//! What the cache needs to know about a statement, worked out once per fingerprint from its
//! normalized text: whether its results may be cached at all (a read, no volatile function,
//! no row locks, known tables), which tables it reads (for invalidation), which tables it
//! writes (to invalidate), and whether it changes session state the cache key depends on.

use std::sync::Arc;

use super::MissReason;
use super::functions::Functions;
use crate::fingerprint::{self, StatementKind};

/// Tables a statement writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writes {
    Nothing,
    Tables(Arc<[Box<str>]>),
    /// It may write, but pgward cannot tell what (DO, CALL, EXECUTE, an unparsed write).
    Unknown,
}

/// How a statement changes the session settings that are part of the cache key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEffect {
    None,
    /// `SET` / `RESET` of one setting (the original text carries the value).
    Set,
    /// `RESET ALL` / `DISCARD ALL`: back to the startup settings (RESET ALL keeps the role
    /// and the session authorization).
    ResetAll,
    /// A change pgward cannot follow: set_config(), a function pgward does not know, DO,
    /// CALL, EXECUTE, LOAD, or a SET of a quoted name.
    Unknown,
}

/// Transaction control, as far as the cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionEffect {
    None,
    Begin,
    End,
}

/// The cache's view of one fingerprint.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `Ok` when the statement's results may be cached.
    pub verdict: Result<(), MissReason>,
    /// Tables it reads, as invalidation keys (see [`table_key`]).
    pub reads: Arc<[Box<str>]>,
    pub writes: Writes,
    pub session: SessionEffect,
    pub transaction: TransactionEffect,
    /// `CREATE TEMP TABLE`: its `writes` are temporary tables of the session.
    pub creates_temp: bool,
}

/// The invalidation key of a table name as analysis renders it: the last dotted part, so a
/// write to `shop.products` and a read of `products` meet (over-invalidating is safe).
pub fn table_key(name: &str) -> Box<str> {
    let last = if let Some(body) = name.strip_suffix('"') {
        // A quoted last part may contain dots: start from its opening quote.
        let mut start = 0;
        let mut in_quote = false;
        for (i, c) in body.char_indices() {
            match c {
                '"' => in_quote = !in_quote,
                '.' if !in_quote => start = i + 1,
                _ => {}
            }
        }
        &name[start..]
    } else {
        name.rsplit('.').next().unwrap_or(name)
    };
    last.into()
}

/// Works out the plan of a statement from its normalized text.
pub fn plan(normalized: &str, functions: &Functions) -> Plan {
    let analysis = fingerprint::analyze(normalized);
    let words = words(normalized);
    let first = words.first().copied().unwrap_or("");
    let second = words.get(1).copied().unwrap_or("");
    let keys = |names: &[String]| -> Arc<[Box<str>]> {
        let mut keys: Vec<Box<str>> = names.iter().map(|n| table_key(n)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into()
    };
    let reads = keys(&analysis.reads);
    let writes = match analysis.kind {
        StatementKind::Write | StatementKind::Ddl if !analysis.writes.is_empty() => {
            Writes::Tables(keys(&analysis.writes))
        }
        StatementKind::Write | StatementKind::Ddl => Writes::Unknown,
        StatementKind::Utility if matches!(first, "do" | "call" | "execute" | "vacuum") => {
            // VACUUM FULL rewrites nothing visible, but EXECUTE/CALL/DO may write anything.
            if first == "vacuum" {
                Writes::Nothing
            } else {
                Writes::Unknown
            }
        }
        _ => Writes::Nothing,
    };
    // Clock keywords such as `current_timestamp` are called without parentheses.
    let calls_volatile = words.iter().any(|w| functions.is_volatile(w));
    let calls = if analysis.kind == StatementKind::Ddl {
        // Definitions (`CREATE TABLE t (a int)`, `CREATE FUNCTION f(...)`) call nothing.
        Vec::new()
    } else {
        fingerprint::calls(normalized, MAX_CALLS)
    };
    let judged = functions.judge(&calls);
    let session = if first == "set" && second != "transaction" && second != "local"
        || first == "reset" && second != "all"
    {
        if names_quoted_setting(normalized) {
            SessionEffect::Unknown
        } else {
            SessionEffect::Set
        }
    } else if matches!((first, second), ("reset" | "discard", "all")) {
        // DISCARD TEMP / PLANS / SEQUENCES leave the settings alone (temporary tables it
        // drops stay refused, which is safe).
        SessionEffect::ResetAll
    } else if judged.session_unknown
        || words.contains(&"set_config")
        || matches!(first, "do" | "call" | "execute" | "load")
    {
        SessionEffect::Unknown
    } else {
        SessionEffect::None
    };
    let transaction = match (analysis.kind, first) {
        (StatementKind::Transaction, "begin" | "start") => TransactionEffect::Begin,
        (StatementKind::Transaction, "commit" | "end" | "rollback" | "abort")
            if second != "prepared" =>
        {
            TransactionEffect::End
        }
        _ => TransactionEffect::None,
    };
    let creates_temp = first == "create"
        && matches!(second, "temp" | "temporary" | "local" | "global")
        && words
            .iter()
            .take(4)
            .any(|w| *w == "temp" || *w == "temporary");
    let verdict = if analysis.kind != StatementKind::Read
        || !matches!(first, "select" | "values" | "table" | "with")
    {
        Err(MissReason::NotRead)
    } else if calls_volatile {
        Err(MissReason::Volatile)
    } else if let Err(reason) = judged.verdict {
        Err(reason)
    } else if locks_rows(&words) {
        Err(MissReason::Locking)
    } else if !analysis.parsed {
        Err(MissReason::UnknownTables)
    } else if analysis
        .reads
        .iter()
        .any(|t| t.starts_with("pg_temp") || t.contains(".pg_temp"))
    {
        Err(MissReason::TempTable)
    } else {
        Ok(())
    };
    Plan {
        verdict,
        reads,
        writes,
        session,
        transaction,
        creates_temp,
    }
}

/// Calls judged per statement at most (a statement with more is judged by its first ones,
/// and one unknown call among them is enough to keep it out of the cache).
const MAX_CALLS: usize = 256;

/// `SET "Name" = ...` / `RESET "Name"`: PostgreSQL keeps the name's case, pgward's settings
/// map would not, so the session's settings become unknown rather than mis-keyed.
fn names_quoted_setting(normalized: &str) -> bool {
    let text = normalized.trim_start();
    let Some(rest) = strip_word(text, "set").or_else(|| strip_word(text, "reset")) else {
        return false;
    };
    strip_word(rest, "session").unwrap_or(rest).starts_with('"')
}

/// `s` without its leading word `w` (any case) and the blanks after it.
fn strip_word<'a>(s: &'a str, w: &str) -> Option<&'a str> {
    let tail = s.get(w.len()..)?;
    let ends = tail.starts_with(|c: char| c.is_whitespace() || c == '"');
    (ends && s.get(..w.len())?.eq_ignore_ascii_case(w)).then(|| tail.trim_start())
}

/// The lowercase words (keywords and unquoted identifiers) of a normalized text, in order.
fn words(normalized: &str) -> Vec<&str> {
    normalized
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '"'))
        .filter(|w| !w.is_empty() && !w.starts_with('$') && !w.starts_with('"'))
        .collect()
}

/// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`.
fn locks_rows(words: &[&str]) -> bool {
    words.windows(2).any(|w| {
        w[0] == "for" && matches!(w[1], "update" | "share" | "no" | "key")
            || w[0] == "no" && w[1] == "key"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(sql: &str) -> Plan {
        plan(&fingerprint::normalize(sql).text, &Functions::new(&[], &[]))
    }

    #[test]
    fn reads_are_cacheable_with_their_tables() {
        let p = plan_of(
            "SELECT p.name FROM shop.products p JOIN order_items i USING (product_id) WHERE i.order_id = 7",
        );
        assert_eq!(p.verdict, Ok(()));
        assert_eq!(
            &*p.reads,
            &["order_items".into(), "products".into()] as &[Box<str>]
        );
        assert_eq!(p.writes, Writes::Nothing);
        assert_eq!(
            plan_of("WITH x AS (SELECT 1) SELECT * FROM x, t").verdict,
            Ok(())
        );
    }

    #[test]
    fn refusals_carry_their_reason() {
        let reason = |sql: &str| plan_of(sql).verdict.err();
        assert_eq!(
            reason("SELECT now(), id FROM t"),
            Some(MissReason::Volatile)
        );
        assert_eq!(
            reason("SELECT id FROM t WHERE at > CURRENT_TIMESTAMP"),
            Some(MissReason::Volatile)
        );
        assert_eq!(reason("SELECT nextval('s')"), Some(MissReason::Volatile));
        assert_eq!(
            reason("SELECT * FROM t WHERE id = 1 FOR UPDATE"),
            Some(MissReason::Locking)
        );
        assert_eq!(
            reason("SELECT * FROM t FOR NO KEY UPDATE"),
            Some(MissReason::Locking)
        );
        assert_eq!(
            reason("SELECT * FROM t FOR SHARE"),
            Some(MissReason::Locking)
        );
        assert_eq!(reason("UPDATE t SET a = 1"), Some(MissReason::NotRead));
        assert_eq!(reason("COPY t TO STDOUT"), Some(MissReason::NotRead));
        assert_eq!(reason("SELECT * INTO u FROM t"), Some(MissReason::NotRead));
        assert_eq!(
            reason("SELECT * FROM pg_temp.scratch"),
            Some(MissReason::TempTable)
        );
        assert_eq!(
            reason("SELECT FROM WHERE ((("),
            Some(MissReason::UnknownTables)
        );
        // A literal that mentions a volatile function is not a call.
        assert_eq!(reason("SELECT * FROM t WHERE note = 'now()'"), None);
    }

    #[test]
    fn writes_name_their_tables_or_are_unknown() {
        let w = |sql: &str| plan_of(sql).writes;
        assert_eq!(
            w("INSERT INTO shop.orders (id) VALUES (1)"),
            Writes::Tables(["orders".into()].into())
        );
        assert_eq!(
            w("TRUNCATE a, b"),
            Writes::Tables(["a".into(), "b".into()].into())
        );
        assert_eq!(
            w("COPY products FROM STDIN"),
            Writes::Tables(["products".into()].into())
        );
        assert_eq!(w("DO $$ BEGIN PERFORM 1; END $$"), Writes::Unknown);
        assert_eq!(w("CALL restock(1)"), Writes::Unknown);
        assert_eq!(w("SELECT 1"), Writes::Nothing);
        assert_eq!(w("SET search_path = x"), Writes::Nothing);
    }

    #[test]
    fn session_and_transaction_effects() {
        assert_eq!(
            plan_of("SET search_path = a, b").session,
            SessionEffect::Set
        );
        assert_eq!(plan_of("SET TIME ZONE 'UTC'").session, SessionEffect::Set);
        assert_eq!(plan_of("RESET role").session, SessionEffect::Set);
        assert_eq!(plan_of("RESET ALL").session, SessionEffect::ResetAll);
        assert_eq!(plan_of("DISCARD ALL").session, SessionEffect::ResetAll);
        assert_eq!(plan_of("DISCARD TEMP").session, SessionEffect::None);
        assert_eq!(plan_of("DISCARD PLANS").session, SessionEffect::None);
        assert_eq!(
            plan_of("SET LOCAL statement_timeout = 5").session,
            SessionEffect::None
        );
        assert_eq!(
            plan_of("SELECT set_config('search_path', 'x', false)").session,
            SessionEffect::Unknown
        );
        assert_eq!(
            plan_of("BEGIN READ ONLY").transaction,
            TransactionEffect::Begin
        );
        assert_eq!(
            plan_of("START TRANSACTION").transaction,
            TransactionEffect::Begin
        );
        assert_eq!(plan_of("COMMIT").transaction, TransactionEffect::End);
        assert_eq!(plan_of("ROLLBACK").transaction, TransactionEffect::End);
        assert_eq!(plan_of("SAVEPOINT a").transaction, TransactionEffect::None);
        assert!(plan_of("CREATE TEMP TABLE scratch (a int)").creates_temp);
        assert!(plan_of("create temporary table s2 as select 1").creates_temp);
        assert!(!plan_of("CREATE TABLE t (a int)").creates_temp);
    }

    #[test]
    fn table_keys_drop_the_schema() {
        assert_eq!(&*table_key("shop.products"), "products");
        assert_eq!(&*table_key("products"), "products");
        assert_eq!(&*table_key("\"My.Schema\".\"Odd.Name\""), "\"Odd.Name\"");
    }
}
