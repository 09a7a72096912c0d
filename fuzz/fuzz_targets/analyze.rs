//! The slow-path analysis (sqlparser, bounded by `MAX_ANALYZED_TOKENS`) on raw and normalized
//! text. Checks that an unparsed statement reports no tables and that a statement over the
//! token bound is never parsed. Run with a 2 MiB stack (scripts/fuzz.sh), the size of a tokio
//! worker's, so a recursion that input can deepen shows up as a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::fingerprint;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let a = fingerprint::analyze(sql);
    if !a.parsed {
        assert!(a.reads.is_empty() && a.writes.is_empty());
    }
    if !fingerprint::within_parser_limits(sql) {
        assert!(!a.parsed);
    }
    let n = fingerprint::normalize(sql);
    let b = fingerprint::analyze(&n.text);
    assert_eq!(a.kind, b.kind, "kind changed by normalizing {sql:?}");
    if !b.parsed {
        assert!(b.reads.is_empty() && b.writes.is_empty());
    }
});
