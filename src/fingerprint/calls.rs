//! The functions a statement calls, read off its tokens: every name directly followed by `(`
//! that is not a keyword construct (`IN (`, `VALUES (`, `CAST (`), a type modifier
//! (`numeric(10,2)`), a column list (`INSERT INTO t (a)`, `WITH c(a) AS (`) or an alias list
//! (`FROM t x(a, b)`). The cache uses it to keep statements that call functions it does not
//! know to be stable out of the cache, and to stop using the cache for a session that may have
//! changed its settings inside such a function. It is lexical on purpose: it works on any
//! text, parsed or not, in one pass without recursion, and when it is unsure it reports a call
//! (a statement wrongly thought to call a function only loses the cache, never correctness).

use super::lexer::{Lexer, Tok, Token};

/// One call: the function's name as PostgreSQL resolves it (unquoted parts lowercased,
/// quoted parts kept with their quotes) and the schema that qualifies it, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub schema: Option<String>,
}

/// Keywords that may stand before `(` without being a function call.
const CONSTRUCTS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "check",
    "conflict",
    "cube",
    "default",
    "distinct",
    "do",
    "else",
    "except",
    "exists",
    "filter",
    "from",
    "group",
    "having",
    "if",
    "ilike",
    "in",
    "intersect",
    "is",
    "join",
    "key",
    "lateral",
    "like",
    "limit",
    "not",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "over",
    "overlaps",
    "partition",
    "primary",
    "references",
    "returning",
    "rollup",
    "row",
    "select",
    "set",
    "sets",
    "similar",
    "some",
    "tablesample",
    "then",
    "union",
    "unique",
    "using",
    "values",
    "when",
    "where",
    "window",
    "with",
    "within",
    "recursive",
    "materialized",
    "return",
    "returns",
    "nulls",
    "include",
    "foreign",
    "exclude",
    "constraint",
    "table",
    "into",
    "update",
    "index",
    "view",
    "to",
    "grouping",
    "for",
    "of",
    "escape",
    "at",
    "zone",
    "collate",
    "asc",
    "desc",
    "end",
    "cast",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "extract",
    "position",
    "substring",
    "overlay",
    "trim",
    "normalize",
    "xmlelement",
    "xmlforest",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmlconcat",
    "xmlexists",
    "treat",
    "mode",
    "percentile_cont",
    "percentile_disc",
];

/// Type names that take a modifier in parentheses (`varchar(20)`, `x::numeric(10,2)`).
const TYPE_MODIFIERS: &[&str] = &[
    "numeric",
    "decimal",
    "dec",
    "varchar",
    "char",
    "character",
    "varying",
    "nchar",
    "bit",
    "varbit",
    "timestamp",
    "timestamptz",
    "time",
    "timetz",
    "interval",
    "float",
    "precision",
];

/// Keywords after which a name followed by `(` is a table or relation with a column list.
const RELATION_BEFORE: &[&str] = &["into", "table", "copy", "references", "view", "as"];

/// The calls in `sql`, in order. Names longer than an identifier may be are cut, never
/// dropped; at most `limit` calls are returned (a statement with more is unusual enough that
/// the first ones decide).
pub fn calls(sql: &str, limit: usize) -> Vec<Call> {
    let tokens: Vec<Token> = Lexer::new(sql).collect();
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if out.len() >= limit {
            break;
        }
        if t.tok != Tok::Punct(b'(') || i == 0 {
            continue;
        }
        let Some(call) = call_before(sql, &tokens, i) else {
            continue;
        };
        out.push(call);
    }
    out
}

/// The call whose `(` is `tokens[open]`, if the tokens before it name a function.
fn call_before(sql: &str, tokens: &[Token], open: usize) -> Option<Call> {
    let name_at = open.checked_sub(1)?;
    let name_token = tokens.get(name_at)?;
    let name = ident(sql, *name_token)?;
    let unquoted = name_token.tok == Tok::Word;
    if unquoted && (CONSTRUCTS.contains(&name.as_str()) || TYPE_MODIFIERS.contains(&name.as_str()))
    {
        return None;
    }
    // `schema.name(` — and the token before the whole name tells what the name is.
    let (schema, before_name) = match (
        name_at.checked_sub(1).and_then(|j| tokens.get(j)),
        name_at.checked_sub(2).and_then(|j| tokens.get(j)),
    ) {
        (Some(dot), Some(s)) if dot.tok == Tok::Punct(b'.') => {
            (ident(sql, *s), name_at.checked_sub(3))
        }
        _ => (None, name_at.checked_sub(1)),
    };
    let before = before_name.and_then(|j| tokens.get(j));
    if let Some(b) = before {
        if b.tok == Tok::Punct(b')') {
            return None; // `(SELECT ...) x(a)`: no call follows a `)` directly in SQL
        }
        if b.tok == Tok::Word {
            let word = ident(sql, *b)?;
            if RELATION_BEFORE.contains(&word.as_str()) {
                return None;
            }
            // `FROM t x(a, b)`, `JOIN (SELECT ...) x(a)`: an alias with its column list
            // (a word that is no keyword, after the relation it names).
            let relation = before_name
                .and_then(|j| j.checked_sub(1))
                .and_then(|j| tokens.get(j))
                .is_some_and(|r| matches!(r.tok, Tok::Word | Tok::QuotedIdent | Tok::Punct(b')')));
            if relation && !is_keyword_before_expression(&word) {
                return None;
            }
        }
    }
    if is_cte_column_list(sql, tokens, open) {
        return None;
    }
    Some(Call { name, schema })
}

/// `WITH c(a, b) AS (`, `, c(a) AS MATERIALIZED (`: the name is a CTE with a column list.
/// (A call with an alias, `f(x) AS y`, has a name after AS, never `(` or MATERIALIZED / NOT.)
fn is_cte_column_list(sql: &str, tokens: &[Token], open: usize) -> bool {
    let mut depth = 0u32;
    let mut close = None;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct(b'(') => depth = depth.saturating_add(1),
            Tok::Punct(b')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    close = Some(j);
                    break;
                }
            }
            _ => {}
        }
    }
    let word = |j: usize| tokens.get(j).and_then(|t| ident(sql, *t));
    let Some(close) = close else {
        return false;
    };
    word(close + 1).as_deref() == Some("as")
        && match tokens.get(close + 2) {
            Some(t) if t.tok == Tok::Punct(b'(') => true,
            Some(_) => matches!(word(close + 2).as_deref(), Some("materialized" | "not")),
            None => false,
        }
}

/// Keywords after which an expression (and so a call) may start.
fn is_keyword_before_expression(word: &str) -> bool {
    CONSTRUCTS.contains(&word)
        || matches!(
            word,
            "select"
                | "distinct"
                | "where"
                | "and"
                | "or"
                | "not"
                | "when"
                | "then"
                | "else"
                | "by"
                | "having"
                | "returning"
                | "set"
                | "values"
                | "from"
                | "join"
                | "lateral"
                | "in"
                | "is"
                | "like"
                | "ilike"
                | "between"
                | "case"
                | "limit"
                | "offset"
                | "perform"
                | "call"
                | "execute"
                | "default"
                | "return"
                | "all"
                | "any"
                | "some"
                | "exists"
                | "array"
                | "row"
                | "using"
                | "filter"
                | "over"
        )
}

/// The text of a name token as PostgreSQL resolves it.
fn ident(sql: &str, t: Token) -> Option<String> {
    let text = sql.get(t.start..t.end)?;
    match t.tok {
        Tok::Word => Some(text.to_ascii_lowercase()),
        Tok::QuotedIdent => Some(text.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        calls(sql, 64)
            .into_iter()
            .map(|c| match c.schema {
                Some(s) => format!("{s}.{}", c.name),
                None => c.name,
            })
            .collect()
    }

    #[test]
    fn calls_are_found_wherever_an_expression_may_stand() {
        assert_eq!(names("SELECT bump() FROM t"), ["bump"]);
        assert_eq!(
            names("select count(*), Lower(a) from t"),
            ["count", "lower"]
        );
        assert_eq!(
            names("SELECT * FROM generate_series(1, 3) g"),
            ["generate_series"]
        );
        assert_eq!(names("SELECT * FROM t JOIN u ON f(t.a) = u.b"), ["f"]);
        assert_eq!(names("SELECT a FROM t WHERE NOT shop.ok(a)"), ["shop.ok"]);
        assert_eq!(names("SELECT \"MyFunc\"(1)"), ["\"MyFunc\""]);
        assert_eq!(names("UPDATE t SET a = g(1) RETURNING h(a)"), ["g", "h"]);
        assert_eq!(names("SELECT f(x) AS y FROM t"), ["f"]);
        assert_eq!(names("SELECT a FROM t ORDER BY a DESC, g(b)"), ["g"]);
        assert_eq!(
            names("SELECT pg_catalog.set_config('a', 'b', false)"),
            ["pg_catalog.set_config"]
        );
    }

    #[test]
    fn constructs_types_and_column_lists_are_not_calls() {
        assert!(names("SELECT a FROM t WHERE id IN (1, 2) AND EXISTS (SELECT 1)").is_empty());
        assert!(names("SELECT CAST(a AS numeric(10, 2)), b::varchar(3) FROM t").is_empty());
        assert!(names("INSERT INTO shop.t (a, b) VALUES (1, 2)").is_empty());
        assert!(names("INSERT INTO t(a) VALUES ($1) ON CONFLICT (a) DO NOTHING").is_empty());
        assert!(
            names("WITH c(a) AS (SELECT 1), d(b) AS MATERIALIZED (SELECT 2) SELECT 3").is_empty()
        );
        assert!(names("SELECT * FROM t x(a, b) JOIN (SELECT 1) y(c) ON true").is_empty());
        assert!(names("SELECT COALESCE(a, 0), EXTRACT(year FROM b) FROM t").is_empty());
        assert!(names("SELECT 'f(x)' FROM t -- g(y)").is_empty());
    }
}
