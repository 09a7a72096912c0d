//! The cache plan of a statement, from its normalized text (as the pipeline computes it) and
//! from raw text. Checks that a cacheable plan writes nothing and changes no session state, and
//! that invalidation keys are sorted, unique, and the last part of a table name.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pgward::cache::functions::Functions;
use pgward::cache::plan::{self, SessionEffect, TransactionEffect, Writes};
use pgward::fingerprint;

static FUNCTIONS: LazyLock<Functions> = LazyLock::new(|| Functions::new(&[], &[]));

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let normalized = fingerprint::normalize(sql);
    for text in [normalized.text.as_str(), sql] {
        let p = plan::plan(text, &FUNCTIONS);
        if p.verdict.is_ok() {
            assert_eq!(p.writes, Writes::Nothing, "{text:?}");
            assert_eq!(p.session, SessionEffect::None, "{text:?}");
            assert_eq!(p.transaction, TransactionEffect::None, "{text:?}");
            assert!(!p.creates_temp);
        }
        assert!(p.reads.windows(2).all(|w| w[0] < w[1]), "{:?}", p.reads);
        if let Writes::Tables(keys) = &p.writes {
            assert!(!keys.is_empty());
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        }
    }
    for name in sql.split_whitespace() {
        let key = plan::table_key(name);
        assert!(name.ends_with(&*key), "{key:?} of {name:?}");
    }
});
