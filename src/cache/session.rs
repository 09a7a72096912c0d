//! One session's side of the cache: the key prefix that makes entries private to who asked and
//! how the session is set up (user, database, every startup parameter, every `SET` since), the
//! transaction state (the cache is used only outside transaction blocks), temporary tables,
//! and the writes waiting for their transaction to end before they invalidate.

use std::collections::{BTreeMap, HashSet};

use super::MissReason;
use super::plan::{Plan, SessionEffect, TransactionEffect, Writes};

/// Protocol marker in a key: a simple-protocol Query.
pub const SIMPLE: u8 = crate::protocol::tag::frontend::QUERY;
/// Protocol marker in a key: an extended-protocol Execute.
pub const EXTENDED: u8 = crate::protocol::tag::frontend::EXECUTE;
/// Protocol marker in a key: an Execute after a Describe of its portal (the entry keeps the
/// RowDescription too).
pub const DESCRIBED: u8 = crate::protocol::tag::frontend::DESCRIBE;

/// Settings `RESET ALL` does not reset (PostgreSQL marks them so): who the session is.
const KEPT_BY_RESET_ALL: &[&str] = &["role", "session_authorization"];

/// Per-session cache state.
#[derive(Debug)]
pub struct SessionCache {
    /// User, database and startup parameters, encoded once.
    startup: Vec<u8>,
    /// Setting -> the text of the SET that last changed it.
    settings: BTreeMap<Box<str>, Box<str>>,
    /// `startup` + `settings`: the prefix of every key of this session.
    context: Vec<u8>,
    /// A settings change pgward cannot follow happened: the cache is off for the session.
    state_unknown: bool,
    in_block: bool,
    temp_tables: HashSet<Box<str>>,
    pending_tables: Vec<Box<str>>,
    pending_unknown: bool,
}

/// Writes to invalidate now that their transaction ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub tables: Vec<Box<str>>,
    pub unknown: bool,
}

impl SessionCache {
    /// `params` are the client's startup parameters (user and database included).
    pub fn new<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> SessionCache {
        let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
        sorted.sort_unstable();
        let mut startup = Vec::new();
        for (name, value) in sorted {
            push_field(&mut startup, name.as_bytes());
            push_field(&mut startup, value.as_bytes());
        }
        let context = startup.clone();
        SessionCache {
            startup,
            settings: BTreeMap::new(),
            context,
            state_unknown: false,
            in_block: false,
            temp_tables: HashSet::new(),
            pending_tables: Vec::new(),
            pending_unknown: false,
        }
    }

    /// Why the session may not use the cache for this statement now, if it may not.
    pub fn refusal(&self, plan: &Plan) -> Option<MissReason> {
        if let Err(reason) = plan.verdict {
            Some(reason)
        } else if self.in_block {
            Some(MissReason::InTransaction)
        } else if self.state_unknown {
            Some(MissReason::SessionState)
        } else if !self.pending_tables.is_empty() || self.pending_unknown {
            // A write earlier in this batch (or an unsettled pipeline) that PostgreSQL has not
            // committed yet: this statement must see it, so it neither hits nor fills.
            Some(MissReason::UnsettledWrite)
        } else if plan.reads.iter().any(|t| self.temp_tables.contains(t)) {
            Some(MissReason::TempTable)
        } else {
            None
        }
    }

    /// The key of a statement: this session's context, the protocol, the statement text,
    /// (extended protocol) the parameter type OIDs its Parse declared, which decide how
    /// PostgreSQL reads the values, and the Bind's parameter formats, values and result
    /// formats.
    pub fn key(&self, protocol: u8, statement: &[u8], types: &[u8], bind: &[u8]) -> Vec<u8> {
        let capacity = self.context.len() + statement.len() + types.len() + bind.len() + 16;
        let mut key = Vec::with_capacity(capacity);
        key.extend_from_slice(&self.context);
        key.push(0xff);
        key.push(protocol);
        push_field(&mut key, statement);
        push_field(&mut key, types);
        key.extend_from_slice(bind);
        key
    }

    /// Follows a statement the session sends: transaction control, settings, temporary
    /// tables and writes. `sql` is the statement's original text (values of SET included).
    pub fn on_statement(&mut self, plan: &Plan, sql: &str) {
        match plan.transaction {
            TransactionEffect::Begin => self.in_block = true,
            TransactionEffect::End => self.in_block = false,
            TransactionEffect::None => {}
        }
        match plan.session {
            SessionEffect::None => {}
            SessionEffect::Unknown => self.state_unknown = true,
            // A SET inside a transaction block is undone if the block rolls back, and pgward
            // does not see which way it ends.
            SessionEffect::Set | SessionEffect::ResetAll if self.in_block => {
                self.state_unknown = true
            }
            SessionEffect::Set => {
                self.apply_set(sql);
                self.rebuild_context();
            }
            SessionEffect::ResetAll => {
                let discard = sql
                    .trim_start()
                    .get(..7)
                    .is_some_and(|w| w.eq_ignore_ascii_case("discard"));
                if discard {
                    // DISCARD ALL: the session as it started (authorization, role, settings,
                    // temporary tables).
                    self.settings.clear();
                    self.state_unknown = false;
                    self.temp_tables.clear();
                } else {
                    // RESET ALL leaves the role and the session authorization as they are,
                    // and so whatever an unfollowed change did to them: an unknown state
                    // stays unknown.
                    self.settings
                        .retain(|name, _| KEPT_BY_RESET_ALL.contains(&name.as_ref()));
                }
                self.rebuild_context();
            }
        }
        match &plan.writes {
            Writes::Nothing => {}
            Writes::Tables(tables) if plan.creates_temp => {
                self.temp_tables.extend(tables.iter().cloned());
            }
            Writes::Tables(tables) => self.pending_tables.extend(tables.iter().cloned()),
            Writes::Unknown => self.pending_unknown = true,
        }
    }

    /// ReadyForQuery arrived and nothing more is owed: the transaction status is known. When
    /// the session is outside a block, the writes it made are committed (or rolled back,
    /// which invalidating cannot hurt) and are returned for invalidation.
    pub fn on_settled(&mut self, idle: bool) -> Option<Committed> {
        self.in_block = !idle;
        if !idle || self.pending_tables.is_empty() && !self.pending_unknown {
            return None;
        }
        let mut tables = std::mem::take(&mut self.pending_tables);
        tables.sort_unstable();
        tables.dedup();
        Some(Committed {
            tables,
            unknown: std::mem::take(&mut self.pending_unknown),
        })
    }

    /// True while the session is in a transaction block, as far as pgward can tell.
    pub fn in_block(&self) -> bool {
        self.in_block
    }

    /// Records a SET / RESET: the setting's name from the lowercased words, and as its value
    /// the statement's text exactly as sent. Values keep their case (`"Foo"` and `"foo"`
    /// are different schemas, `'ABC'` and `'abc'` different tenants); two spellings of the
    /// same value only make two keys, which is safe.
    fn apply_set(&mut self, sql: &str) {
        let exact = sql.trim().trim_end_matches(';').trim_end();
        let lower = exact.to_ascii_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| c.is_whitespace() || c == '=')
            .filter(|w| !w.is_empty())
            .collect();
        let (verb, rest) = match words.split_first() {
            Some((verb, rest)) => (*verb, rest),
            None => return,
        };
        let rest = match rest {
            ["session", next, ..] if *next != "authorization" && *next != "characteristics" => {
                &rest[1..]
            }
            _ => rest,
        };
        let target: String = match rest {
            ["time", "zone", ..] => "timezone".into(),
            ["names", ..] => "client_encoding".into(),
            ["schema", ..] => "search_path".into(),
            ["session", "authorization", ..] => "session_authorization".into(),
            ["session", "characteristics", ..] => "session_characteristics".into(),
            [name, ..] => (*name).to_owned(),
            [] => return,
        };
        if target == "session_authorization" {
            // Setting or resetting the session authorization also resets the role.
            self.settings.remove("role");
        }
        if verb == "reset" {
            self.settings.remove(target.as_str());
        } else {
            self.settings.insert(target.into(), exact.into());
        }
    }

    fn rebuild_context(&mut self) {
        self.context.clear();
        self.context.extend_from_slice(&self.startup);
        for (name, text) in &self.settings {
            self.context.push(0xfe);
            push_field(&mut self.context, name.as_bytes());
            push_field(&mut self.context, text.as_bytes());
        }
    }
}

/// Length-prefixed, so that no two different field lists encode the same.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::functions::Functions;
    use crate::cache::plan;
    use crate::fingerprint;

    fn plan_of(sql: &str) -> Plan {
        plan::plan(&fingerprint::normalize(sql).text, &Functions::new(&[], &[]))
    }

    fn session(user: &str) -> SessionCache {
        SessionCache::new([("user", user), ("database", "shop")])
    }

    fn run(s: &mut SessionCache, sql: &str) {
        s.on_statement(&plan_of(sql), sql);
    }

    #[test]
    fn keys_differ_by_user_settings_and_protocol() {
        let q = b"select 1";
        let (alice, bob) = (session("alice"), session("bob"));
        assert_ne!(alice.key(SIMPLE, q, b"", b""), bob.key(SIMPLE, q, b"", b""));
        assert_eq!(
            alice.key(SIMPLE, q, b"", b""),
            session("alice").key(SIMPLE, q, b"", b"")
        );
        assert_ne!(
            alice.key(SIMPLE, q, b"", b""),
            alice.key(EXTENDED, q, b"", b"")
        );
        assert_ne!(
            alice.key(EXTENDED, q, b"", b"\x00\x01"),
            alice.key(EXTENDED, q, b"", b"\x00\x02")
        );

        let mut utc = session("alice");
        run(&mut utc, "SET TIME ZONE 'UTC'");
        let mut tokyo = session("alice");
        run(&mut tokyo, "set timezone = 'Asia/Tokyo'");
        assert_ne!(utc.key(SIMPLE, q, b"", b""), tokyo.key(SIMPLE, q, b"", b""));
        assert_ne!(utc.key(SIMPLE, q, b"", b""), alice.key(SIMPLE, q, b"", b""));
        // The last SET of a setting counts; RESET returns to the startup state.
        run(&mut tokyo, "SET TIME ZONE 'UTC'");
        assert_eq!(utc.key(SIMPLE, q, b"", b""), tokyo.key(SIMPLE, q, b"", b""));
        run(&mut tokyo, "RESET timezone");
        assert_eq!(
            tokyo.key(SIMPLE, q, b"", b""),
            alice.key(SIMPLE, q, b"", b"")
        );
        run(&mut utc, "SET search_path = a");
        run(&mut utc, "RESET ALL");
        assert_eq!(utc.key(SIMPLE, q, b"", b""), alice.key(SIMPLE, q, b"", b""));
    }

    #[test]
    fn set_values_keep_their_case_and_quoted_names_are_not_followed() {
        let q = b"select 1";
        let keyed = |set: &str| {
            let mut s = session("alice");
            run(&mut s, set);
            assert_eq!(s.refusal(&plan_of("SELECT * FROM t")), None, "{set}");
            s.key(SIMPLE, q, b"", b"")
        };
        assert_ne!(
            keyed("SET search_path = \"Foo\""),
            keyed("SET search_path = \"foo\"")
        );
        assert_ne!(
            keyed("SET app.tenant = 'ABC'"),
            keyed("SET app.tenant = 'abc'")
        );
        assert_eq!(
            keyed("SET app.tenant = 'abc'"),
            keyed("SET app.tenant = 'abc';")
        );
        let read = plan_of("SELECT * FROM t");
        for unfollowed in [
            "SET \"App.Tenant\" = 'x'",
            "SET SESSION \"search_path\" = x",
            "DO $$ BEGIN EXECUTE 'SET ROLE alice'; END $$",
            "CALL switch_tenant('x')",
            "SELECT become_tenant('x')",
            "SELECT pg_catalog.set_config('app.tenant', 'x', false)",
        ] {
            let mut s = session("alice");
            run(&mut s, unfollowed);
            assert_eq!(
                s.refusal(&read),
                Some(MissReason::SessionState),
                "{unfollowed}"
            );
        }
    }

    #[test]
    fn reset_all_keeps_the_role_and_only_discard_all_ends_an_unknown_state() {
        let q = b"select 1";
        let fresh = session("alice").key(SIMPLE, q, b"", b"");
        let read = plan_of("SELECT * FROM t");
        let mut s = session("alice");
        run(&mut s, "SET ROLE admin");
        run(&mut s, "SET search_path = x");
        run(&mut s, "RESET ALL");
        let mut role_only = session("alice");
        run(&mut role_only, "SET ROLE admin");
        assert_eq!(
            s.key(SIMPLE, q, b"", b""),
            role_only.key(SIMPLE, q, b"", b"")
        );
        assert_ne!(s.key(SIMPLE, q, b"", b""), fresh);
        run(&mut s, "DISCARD ALL");
        assert_eq!(s.key(SIMPLE, q, b"", b""), fresh);

        let mut unseen = session("alice");
        run(&mut unseen, "DO $$ BEGIN EXECUTE 'SET ROLE admin'; END $$");
        assert!(unseen.on_settled(true).is_some(), "DO may have written");
        run(&mut unseen, "RESET ALL");
        assert_eq!(unseen.refusal(&read), Some(MissReason::SessionState));
        run(&mut unseen, "DISCARD ALL");
        assert_eq!(unseen.refusal(&read), None);
        assert_eq!(unseen.key(SIMPLE, q, b"", b""), fresh);

        // Other DISCARDs leave the settings alone.
        for discard in ["DISCARD TEMP", "DISCARD PLANS", "DISCARD SEQUENCES"] {
            let mut kept = session("alice");
            run(&mut kept, "SET search_path = x");
            let before = kept.key(SIMPLE, q, b"", b"");
            run(&mut kept, discard);
            assert_eq!(kept.key(SIMPLE, q, b"", b""), before, "{discard}");
        }
    }

    #[test]
    fn the_session_authorization_resets_the_role() {
        let q = b"select 1";
        let mut role_then_authorization = session("postgres");
        run(&mut role_then_authorization, "SET ROLE alice");
        run(
            &mut role_then_authorization,
            "SET SESSION AUTHORIZATION bob",
        );
        let mut authorization_then_role = session("postgres");
        run(
            &mut authorization_then_role,
            "SET SESSION AUTHORIZATION bob",
        );
        run(&mut authorization_then_role, "SET ROLE alice");
        let mut bob = session("postgres");
        run(&mut bob, "SET SESSION AUTHORIZATION bob");
        // PostgreSQL: the first is bob, the second alice.
        assert_ne!(
            role_then_authorization.key(SIMPLE, q, b"", b""),
            authorization_then_role.key(SIMPLE, q, b"", b"")
        );
        assert_eq!(
            role_then_authorization.key(SIMPLE, q, b"", b""),
            bob.key(SIMPLE, q, b"", b"")
        );
    }

    #[test]
    fn a_write_in_the_batch_makes_the_rest_of_it_uncacheable() {
        let read = plan_of("SELECT * FROM products");
        let mut s = session("a");
        run(&mut s, "UPDATE products SET stock = 1 WHERE id = $1");
        assert_eq!(s.refusal(&read), Some(MissReason::UnsettledWrite));
        assert!(s.on_settled(true).is_some());
        assert_eq!(s.refusal(&read), None);
    }

    #[test]
    fn parameter_types_are_part_of_the_key() {
        let s = session("a");
        let (text, int) = (23u32.to_be_bytes(), 25u32.to_be_bytes());
        assert_ne!(
            s.key(EXTENDED, b"select $1", &text, b"\0\0"),
            s.key(EXTENDED, b"select $1", &int, b"\0\0")
        );
        assert_ne!(
            s.key(EXTENDED, b"select $1", b"", b"\0\0"),
            s.key(EXTENDED, b"select $1\0", b"", b"\0")
        );
    }

    #[test]
    fn transaction_blocks_and_unknown_state_refuse() {
        let read = plan_of("SELECT * FROM t");
        let mut s = session("a");
        assert_eq!(s.refusal(&read), None);
        run(&mut s, "BEGIN");
        assert_eq!(s.refusal(&read), Some(MissReason::InTransaction));
        run(&mut s, "SET search_path = x");
        run(&mut s, "COMMIT");
        assert_eq!(s.refusal(&read), Some(MissReason::SessionState));
        // The unknown change may have been to the role, which RESET ALL keeps.
        run(&mut s, "RESET ALL");
        assert_eq!(s.refusal(&read), Some(MissReason::SessionState));
        run(&mut s, "DISCARD ALL");
        assert_eq!(s.refusal(&read), None);
        run(&mut s, "SELECT set_config('search_path', 'y', false)");
        assert_eq!(s.refusal(&read), Some(MissReason::SessionState));
        assert_eq!(
            s.refusal(&plan_of("SELECT now()")),
            Some(MissReason::Volatile)
        );
    }

    #[test]
    fn temp_tables_are_refused() {
        let mut s = session("a");
        run(&mut s, "CREATE TEMP TABLE scratch (a int)");
        assert_eq!(
            s.refusal(&plan_of("SELECT * FROM scratch")),
            Some(MissReason::TempTable)
        );
        assert_eq!(s.refusal(&plan_of("SELECT * FROM other")), None);
        run(&mut s, "DISCARD ALL");
        assert_eq!(s.refusal(&plan_of("SELECT * FROM scratch")), None);
    }

    #[test]
    fn writes_wait_for_the_end_of_their_transaction() {
        let mut s = session("a");
        run(&mut s, "BEGIN");
        run(&mut s, "INSERT INTO orders (id) VALUES (1)");
        run(&mut s, "UPDATE shop.products SET stock = 1");
        assert_eq!(s.on_settled(false), None);
        run(&mut s, "COMMIT");
        let committed = s.on_settled(true).expect("writes");
        assert_eq!(
            committed.tables,
            vec!["orders".into(), "products".into()] as Vec<Box<str>>
        );
        assert!(!committed.unknown);
        assert_eq!(s.on_settled(true), None);
        run(&mut s, "CALL restock()");
        assert_eq!(s.on_settled(true).map(|c| c.unknown), Some(true));
    }
}
