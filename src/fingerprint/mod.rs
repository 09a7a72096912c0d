//! Query fingerprinting. This module owns everything pgward knows about a statement's
//! *shape*: normalization (literals replaced by `$n`, IN lists / ARRAY lists / VALUES rows
//! collapsed, keywords lowercased, comments and insignificant whitespace dropped), the stable
//! [`FingerprintId`] (xxh3-64 of the normalized text), the [`StatementKind`] and the tables a
//! statement reads and writes. It has its own hand-written PostgreSQL lexer because
//! [`normalize`] runs for every simple-protocol statement on the proxy's hot path: it must never
//! fail, never panic, accept SQL that no parser accepts (unterminated strings, vendor syntax)
//! and cost well under a microsecond with a single allocation. sqlparser is only used by
//! [`analyze`], which callers run once per new id.
//!
//! Numbering: every literal and every distinct `$k` parameter gets the next number in order of
//! first appearance, so `id = 42` and `id = $1` agree, and so do `IN (1, 2, 3) AND b = 5` and
//! `IN ($1, $2) AND b = $3` (both `in($1,...)and b=$2`). `constants` lists the replaced
//! literals in source order; without `$k` parameters and collapsed lists, constant `i` is `$(i+1)`.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

mod analyze;
mod calls;
mod lexer;
mod normalize;
#[cfg(test)]
mod tests;

pub use analyze::{MAX_ANALYZED_TOKENS, analyze, within_parser_limits};
pub use calls::{Call, calls};
pub use lexer::{Strings, split_statements, split_statements_with};
pub use normalize::{normalize, normalize_with};

/// Stable identifier of a normalized statement: xxh3-64 of the normalized text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FingerprintId(pub u64);

impl fmt::Display for FingerprintId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::LowerHex for FingerprintId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Error of [`FingerprintId::from_str`]: the input is not exactly 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FingerprintIdParseError;

impl fmt::Display for FingerprintIdParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fingerprint id must be exactly 16 hex digits")
    }
}

impl std::error::Error for FingerprintIdParseError {}

impl FromStr for FingerprintId {
    type Err = FingerprintIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FingerprintIdParseError);
        }
        u64::from_str_radix(s, 16)
            .map(FingerprintId)
            .map_err(|_| FingerprintIdParseError)
    }
}

/// Coarse class of a statement, from its leading keyword(s).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StatementKind {
    Read,
    Write,
    Ddl,
    Transaction,
    Utility,
}

impl StatementKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Transaction => "transaction",
            StatementKind::Utility => "utility",
        }
    }
}

/// Result of [`normalize`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Normalized {
    pub id: FingerprintId,
    pub text: String,
    /// Byte ranges in the original SQL of every literal replaced by `$n`, in source order
    /// (a negative number's range includes its `-`; collapsed lists keep all their constants).
    pub constants: Vec<Range<usize>>,
    /// What each `$j` of `text` stands for: `slots[j - 1]` is the byte range in the original SQL
    /// of the literal (with its quotes, prefix and sign) or `$k` parameter that became `$j`; for
    /// a collapsed IN / ARRAY list it covers the whole list, first element's start to last
    /// element's end, and for a collapsed VALUES list the contents of all rows, from inside the
    /// first row's `(` to inside the last row's `)` (`values (1, 'a'), (2, 'b')` gives
    /// `1, 'a'), (2, 'b'` for both `$1` and `$2`).
    pub slots: Vec<Range<usize>>,
}

/// Result of [`analyze`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Analysis {
    pub kind: StatementKind,
    pub reads: Vec<String>,
    pub writes: Vec<String>,
    pub parsed: bool,
}
