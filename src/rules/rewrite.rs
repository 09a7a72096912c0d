//! Rewrites: a rule's replacement SQL, checked and cut once at load into text pieces and
//! `$j` references, then filled in per statement with the original text of what `$j` stands
//! for in the matched statement (`Normalized::slots`). Only placeholders that sqlparser's
//! PostgreSQL tokenizer sees as tokens are references, so `'$1'`, `$$ $1 $$` and comments stay
//! untouched and `$10` is never read as `$1` followed by `0`. Pure: no IO, no state.

use std::ops::Range;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::fingerprint::{FingerprintId, Normalized, normalize};

/// The `text` OID: declared for original parameters the replacement no longer uses.
pub const TEXT_OID: u32 = 25;

/// A rule's replacement statement, ready to be filled in.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// The replacement as written in rules.toml.
    pub replacement: String,
    /// Fingerprint of the replacement (what the rewritten statement is recorded under).
    pub target: FingerprintId,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Replacement text copied as is.
    Text(Range<usize>),
    /// `$j` (j = index + 1), at this range of the replacement.
    Slot(usize, Range<usize>),
}

/// Parses SQL as exactly one PostgreSQL statement; the error is a one-line message.
pub(super) fn parse_one(sql: &str) -> Result<(), String> {
    if !crate::fingerprint::within_parser_limits(sql) {
        return Err(format!(
            "statement is longer than {} tokens, which pgward does not parse",
            crate::fingerprint::MAX_ANALYZED_TOKENS
        ));
    }
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) if statements.len() == 1 => Ok(()),
        Ok(statements) => Err(format!(
            "must be exactly one statement, found {}",
            statements.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Byte range of a `$k` placeholder token, with k (None when the text after `$` is not a
/// plain number).
type Placeholder = (Range<usize>, Option<usize>);

/// Every placeholder token of `sql`, in order.
fn placeholders(sql: &str) -> Result<Vec<Placeholder>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut out = Vec::new();
    for t in tokens {
        let Token::Placeholder(p) = &t.token else {
            continue;
        };
        let line = usize::try_from(t.span.start.line).unwrap_or(0);
        let column = usize::try_from(t.span.start.column).unwrap_or(0);
        let Some(&line_start) = line_starts.get(line.wrapping_sub(1)) else {
            continue;
        };
        let rest = sql.get(line_start..).unwrap_or("");
        let start = line_start
            + rest
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(rest.len(), |(i, _)| i);
        let end = (start + p.len()).min(sql.len());
        let number = p
            .strip_prefix('$')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok());
        out.push((start..end, number));
    }
    Ok(out)
}

impl Rewrite {
    /// Checks a replacement (one statement that sqlparser accepts, every `$j` with
    /// 1 <= j <= `slots`) and cuts it into pieces; the error is a one-line message.
    pub(super) fn compile(replacement: &str, slots: usize) -> Result<Rewrite, String> {
        parse_one(replacement).map_err(|e| format!("rewrite does not parse: {e}"))?;
        let mut pieces = Vec::new();
        let mut at = 0;
        for (range, number) in placeholders(replacement)? {
            let text = replacement.get(range.clone()).unwrap_or("$");
            let j = match number {
                Some(j) if (1..=slots).contains(&j) => j,
                Some(_) if slots == 0 => {
                    return Err(format!(
                        "rewrite uses {text} but the match.query example has no values to \
                         pass on (no literals or parameters)"
                    ));
                }
                Some(_) => {
                    return Err(format!(
                        "rewrite uses {text} but the match.query example has only {slots} \
                         value(s) ($1..${slots})"
                    ));
                }
                None => return Err(format!("rewrite placeholder {text} is not $<number>")),
            };
            if range.start > at {
                pieces.push(Piece::Text(at..range.start));
            }
            at = range.end;
            pieces.push(Piece::Slot(j - 1, range));
        }
        if at < replacement.len() {
            pieces.push(Piece::Text(at..replacement.len()));
        }
        Ok(Rewrite {
            replacement: replacement.to_owned(),
            target: normalize(replacement).id,
            pieces,
        })
    }

    /// The `$j` numbers the replacement references, in order of appearance (with repeats).
    pub fn references(&self) -> impl Iterator<Item = usize> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Slot(i, _) => Some(i + 1),
            Piece::Text(_) => None,
        })
    }

    /// Simple protocol: the matched statement's original text and its Normalized (with slots);
    /// returns the new SQL with each $j of the replacement replaced by the original text of
    /// slot j. A `$j` the statement has no slot for (impossible when its fingerprint matched)
    /// is left as written.
    pub fn apply_to_text(&self, original_sql: &str, normalized: &Normalized) -> String {
        let mut out = String::with_capacity(self.replacement.len() + original_sql.len());
        for piece in &self.pieces {
            let text = match piece {
                Piece::Text(r) => self.replacement.get(r.clone()),
                Piece::Slot(i, r) => normalized
                    .slots
                    .get(*i)
                    .and_then(|s| original_sql.get(s.clone()))
                    .or_else(|| self.replacement.get(r.clone())),
            };
            let text = text.unwrap_or("");
            // `x-$1` with `-5` must not become the comment `x--5`.
            if text.starts_with(['-', '+'])
                && out.ends_with(|c: char| "+-*/<>=~!@#%^&|`?".contains(c))
            {
                out.push(' ');
            }
            out.push_str(text);
        }
        out
    }

    /// Extended protocol: same substitution (slots of a Parse are `$k` params or literals),
    /// plus the parameter type OIDs for the rewritten Parse: keep the original Parse's declared
    /// OIDs, and for original parameters the replacement no longer references and whose OID is
    /// 0/undeclared, declare 25 (text) so Postgres still accepts the client's Bind with all n
    /// values. Returns (sql, oids).
    pub fn apply_to_parse(
        &self,
        original_sql: &str,
        normalized: &Normalized,
        original_param_oids: &[u32],
        original_param_count: usize,
    ) -> (String, Vec<u32>) {
        let sql = self.apply_to_text(original_sql, normalized);
        // Callers refuse statements with `$k` past the protocol's limit; the bound here keeps
        // the allocation below from ever following a number taken from client text.
        let n = original_param_count
            .max(original_param_oids.len())
            .min(crate::protocol::MAX_PARAMETERS);
        if n == 0 {
            return (sql, Vec::new());
        }
        let carries_params = self.pieces.iter().any(|p| match p {
            Piece::Slot(i, _) => normalized
                .slots
                .get(*i)
                .and_then(|s| original_sql.get(s.clone()))
                .is_some_and(|t| t.contains('$')),
            Piece::Text(_) => false,
        });
        let mut used = vec![false; n];
        if carries_params {
            match placeholders(&sql) {
                Ok(found) => {
                    for k in found.into_iter().filter_map(|(_, k)| k) {
                        if let Some(u) = used.get_mut(k.wrapping_sub(1)) {
                            *u = true;
                        }
                    }
                }
                // Cannot tell which are used: declare nothing new.
                Err(_) => used.fill(true),
            }
        }
        let oids = used
            .iter()
            .enumerate()
            .map(
                |(i, &used)| match original_param_oids.get(i).copied().unwrap_or(0) {
                    0 if !used => TEXT_OID,
                    declared => declared,
                },
            )
            .collect();
        (sql, oids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(replacement: &str, slots: usize) -> Rewrite {
        match Rewrite::compile(replacement, slots) {
            Ok(r) => r,
            Err(e) => panic!("{replacement}: {e}"),
        }
    }

    #[test]
    fn simple_substitution_keeps_literal_text() {
        let sql = "SELECT * FROM t WHERE a = 'x''y' AND b = -5";
        let n = normalize(sql);
        let r = rw("SELECT c FROM u WHERE b = $2 AND a = $1", 2);
        assert_eq!(
            r.apply_to_text(sql, &n),
            "SELECT c FROM u WHERE b = -5 AND a = 'x''y'"
        );
        assert_eq!(r.references().collect::<Vec<_>>(), [2, 1]);
        assert_eq!(
            r.target,
            normalize("select c from u where b = 1 and a = 2").id
        );
    }

    #[test]
    fn ten_is_not_one_followed_by_zero() {
        let sql = "select 1, 2, 3, 4, 5, 6, 7, 8, 9, 'ten'";
        let n = normalize(sql);
        let r = rw("select $10, $1, $1", 10);
        assert_eq!(r.apply_to_text(sql, &n), "select 'ten', 1, 1");
    }

    #[test]
    fn placeholders_inside_strings_and_comments_are_untouched() {
        let sql = "select * from t where id = 7";
        let n = normalize(sql);
        let r = rw(
            "select '$1', $$ $1 $$, $1 /* $1 */ -- $1\n from t where \"$1\" = 0",
            1,
        );
        assert_eq!(
            r.apply_to_text(sql, &n),
            "select '$1', $$ $1 $$, 7 /* $1 */ -- $1\n from t where \"$1\" = 0"
        );
    }

    #[test]
    fn collapsed_in_list_is_passed_whole() {
        let sql = "SELECT * FROM t WHERE id IN (1, 2,  3) AND c = 'x'";
        let n = normalize(sql);
        let r = rw("SELECT * FROM v WHERE c = $2 AND id IN ($1)", 2);
        assert_eq!(
            r.apply_to_text(sql, &n),
            "SELECT * FROM v WHERE c = 'x' AND id IN (1, 2,  3)"
        );
    }

    #[test]
    fn negative_value_after_operator_gets_a_space() {
        let sql = "select 1 from t where a = -5";
        let n = normalize(sql);
        let r = rw("select x-$2 from t", 2);
        assert_eq!(r.apply_to_text(sql, &n), "select x- -5 from t");
    }

    #[test]
    fn parse_keeps_parameters_and_pads_unused_with_text() {
        // Client sends Parse with 3 params, declaring only $2 as int4 (23).
        let sql = "SELECT * FROM t WHERE a = $1 AND b = $2 AND c = $3 LIMIT 10";
        let n = normalize(sql);
        let r = rw("SELECT * FROM u WHERE b = $2 LIMIT $4", 4);
        let (new_sql, oids) = r.apply_to_parse(sql, &n, &[0, 23], 3);
        assert_eq!(new_sql, "SELECT * FROM u WHERE b = $2 LIMIT 10");
        // $1 and $3 are no longer referenced and were undeclared: text. $2 keeps int4.
        assert_eq!(oids, [TEXT_OID, 23, TEXT_OID]);
    }

    #[test]
    fn parse_keeps_declared_oids_of_unused_parameters() {
        let sql = "select * from t where a = $1 and b = $2";
        let n = normalize(sql);
        let r = rw("select * from u where b = $2", 2);
        let (new_sql, oids) = r.apply_to_parse(sql, &n, &[20, 0], 2);
        assert_eq!(new_sql, "select * from u where b = $2");
        assert_eq!(oids, [20, 0]);
        let (_, none) = r.apply_to_parse(sql, &n, &[], 0);
        assert!(none.is_empty());
    }

    #[test]
    fn parse_with_collapsed_parameter_list_counts_every_parameter() {
        let sql = "select * from t where id in ($1, $2, $3) and flag = $4";
        let n = normalize(sql);
        assert_eq!(n.text, "select*from t where id in($1,...)and flag=$2");
        let r = rw("select * from u where id = any(array[$1])", 2);
        let (new_sql, oids) = r.apply_to_parse(sql, &n, &[], 4);
        assert_eq!(new_sql, "select * from u where id = any(array[$1, $2, $3])");
        assert_eq!(oids, [0, 0, 0, TEXT_OID]);
    }

    #[test]
    fn compile_rejects_out_of_range_and_unparsable() {
        let e = Rewrite::compile("select $3 from t", 2).unwrap_err();
        assert!(e.contains("$3") && e.contains("only 2"), "{e}");
        let e = Rewrite::compile("select $0", 2).unwrap_err();
        assert!(e.contains("$0"), "{e}");
        let e = Rewrite::compile("select $1", 0).unwrap_err();
        assert!(e.contains("no values"), "{e}");
        let e = Rewrite::compile("selec x frm", 2).unwrap_err();
        assert!(e.starts_with("rewrite does not parse"), "{e}");
        let e = Rewrite::compile("select 1; select 2", 2).unwrap_err();
        assert!(e.contains("exactly one statement"), "{e}");
    }
}
