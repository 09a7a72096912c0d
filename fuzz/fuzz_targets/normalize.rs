//! The hot-path lexer and normalizer, under both `standard_conforming_strings` settings.
//! Checks that every range it reports lies on char boundaries of the input in source order,
//! that the id is the hash of the text, and that normalizing is stable: a normalized text
//! normalizes to itself.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use pgward::fingerprint::{self, FingerprintId, Strings};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    for strings in [Strings::Standard, Strings::Backslash] {
        let n = fingerprint::normalize_with(sql, strings);
        assert_eq!(
            n.id,
            FingerprintId(xxhash_rust::xxh3::xxh3_64(n.text.as_bytes()))
        );
        ordered_ranges_in(sql, &n.constants);
        for slot in &n.slots {
            assert!(sql.get(slot.clone()).is_some(), "{slot:?}");
        }
        ordered_ranges_in(sql, &fingerprint::split_statements_with(sql, strings));
        let again = fingerprint::normalize_with(&n.text, strings);
        assert_eq!(again.text, n.text, "not stable for {sql:?}");
    }
});

/// Non-empty, non-overlapping, ascending ranges that slice `s` on char boundaries.
fn ordered_ranges_in(s: &str, ranges: &[Range<usize>]) {
    let mut prev_end = 0;
    for r in ranges {
        assert!(
            r.start >= prev_end && r.start < r.end,
            "{r:?} after {prev_end}"
        );
        assert!(s.get(r.clone()).is_some(), "{r:?} not in {} bytes", s.len());
        prev_end = r.end;
    }
}
