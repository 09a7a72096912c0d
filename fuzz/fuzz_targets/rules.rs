//! rules.toml from a string: parsed, validated and compiled by `rules::parse_rules`. A file
//! that loads is then evaluated against statements and its rewrites applied, as the pipeline
//! does. Input: the rules text, optionally followed by a NUL and one statement to try.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::fingerprint;
use pgward::rules::{self, SessionInfo};

const STATEMENTS: &[&str] = &[
    "select * from orders where id = 42",
    "SELECT a FROM t WHERE b IN (1, 2, 3) AND c = 'x'",
    "update accounts set balance = balance - 5 where id = $1",
    "insert into t (a, b) values (1, 'a'), (2, 'b')",
];

fuzz_target!(|data: &[u8]| {
    let (text, extra) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], data.get(nul + 1..)),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let set = match rules::parse_rules("fuzz.toml".as_ref(), text) {
        Ok(set) => set,
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(p.line <= text.lines().count() + 1, "{p:?}");
            }
            let _ = e.to_string();
            return;
        }
    };
    let extra = extra.and_then(|b| std::str::from_utf8(b).ok());
    for sql in STATEMENTS.iter().copied().chain(extra) {
        try_statement(&set, sql);
    }
});

fn try_statement(set: &rules::RuleSet, sql: &str) {
    let n = fingerprint::normalize(sql);
    let session = SessionInfo {
        user: "app",
        database: "shop",
        application_name: "",
    };
    let Some(rule) = set.evaluate(n.id, &n.text, &session) else {
        return;
    };
    let _ = rule.budget(set);
    if let Some(rewrite) = &rule.rewrite {
        let _ = rewrite.apply_to_text(sql, &n);
        let (_, oids) = rewrite.apply_to_parse(sql, &n, &[0, 23], n.slots.len());
        assert!(oids.len() <= pgward::protocol::MAX_PARAMETERS);
        assert!(rewrite.references().all(|j| j >= 1));
    }
}
