//! Analysis, run once per new fingerprint: statement kind from the leading keywords, and the
//! tables a statement reads and writes from sqlparser's AST (empty when it cannot parse).

use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, FromTable, Ident, ObjectName, ObjectNamePart, ObjectType, Query, Statement,
    TableFactor, TableObject, Visit, Visitor, visit_relations, visit_statements,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::lexer::*;
use super::normalize::kw;
use super::{Analysis, StatementKind};

/// Slow path, called once per new [`FingerprintId`] (callers cache by id). Accepts the
/// original or the normalized text. `kind` comes from the leading keywords (no parser);
/// tables come from sqlparser and are empty with `parsed == false` when it fails. Names are
/// rendered as PostgreSQL resolves them: unquoted parts lowercased, quoted parts kept (and
/// re-quoted only when needed), schema qualification kept as written.
pub fn analyze(sql: &str) -> Analysis {
    let kind = classify(sql);
    let ((reads, writes), parsed) = match tables(sql) {
        Some(rw) => (rw, true),
        None => ((Vec::new(), Vec::new()), false),
    };
    Analysis {
        kind,
        reads,
        writes,
        parsed,
    }
}

pub(super) fn is_kw(sql: &str, t: Token, word: &[u8]) -> bool {
    t.tok == Tok::Word
        && sql
            .get(t.start..t.end)
            .is_some_and(|w| w.as_bytes().eq_ignore_ascii_case(word))
}

/// Walks the remaining tokens; `f(token, depth)` returning `Some` stops the walk.
pub(super) fn walk<T>(lx: Lexer<'_>, mut f: impl FnMut(Token, u32) -> Option<T>) -> Option<T> {
    let mut depth = 0u32;
    for t in lx {
        let r = f(t, depth);
        if r.is_some() {
            return r;
        }
        match t.tok {
            Tok::Punct(b'(' | b'[') => depth = depth.saturating_add(1),
            Tok::Punct(b')' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// First depth-0 word among `words` in the remaining tokens.
pub(super) fn first_top_level<'w>(
    sql: &str,
    lx: Lexer<'_>,
    words: &[&'w [u8]],
) -> Option<&'w [u8]> {
    walk(lx, |t, depth| {
        words
            .iter()
            .find(|w| depth == 0 && is_kw(sql, t, w))
            .copied()
    })
}

pub(super) fn classify(sql: &str) -> StatementKind {
    use StatementKind::*;
    let mut lx = Lexer::new(sql);
    let first = loop {
        match lx.next() {
            // Leading `;`s are empty statements, which normalizing drops: skipped so the
            // raw and the normalized text of a statement have one kind.
            Some(t) if matches!(t.tok, Tok::Punct(b'(' | b';')) => continue,
            Some(t) if t.tok == Tok::Word => break t,
            _ => return Utility,
        }
    };
    let next_is = |w: &[u8]| lx.clone().next().is_some_and(|t| is_kw(sql, t, w));
    let (buf, n) = kw(sql.get(first.start..first.end).unwrap_or(""));
    match &buf[..n] {
        b"select" => match first_top_level(sql, lx, &[b"into", b"from"]) {
            Some(b"into") => Write,
            _ => Read,
        },
        b"values" | b"table" => Read,
        b"insert" | b"update" | b"delete" | b"merge" | b"truncate" => Write,
        b"copy" => match first_top_level(sql, lx, &[b"from", b"to"]) {
            Some(b"to") => Read,
            _ => Write,
        },
        b"create" | b"alter" | b"drop" | b"comment" | b"grant" | b"revoke" | b"security"
        | b"refresh" | b"cluster" | b"import" | b"reassign" => Ddl,
        b"begin" | b"start" | b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint"
        | b"release" => Transaction,
        b"prepare" | b"set" if next_is(b"transaction") => Transaction,
        b"with" => classify_with(sql, lx),
        _ => Utility,
    }
}

/// `WITH ...`: a write if any CTE body (`AS (` ...) or the main statement modifies data.
pub(super) fn classify_with(sql: &str, lx: Lexer<'_>) -> StatementKind {
    const DML: [&[u8]; 4] = [b"insert", b"update", b"delete", b"merge"];
    let (mut after_as, mut body_start) = (false, false);
    let kind = walk(lx, |t, depth| {
        let dml = DML.iter().any(|w| is_kw(sql, t, w));
        if dml && (body_start || depth == 0) {
            return Some(StatementKind::Write);
        }
        if depth == 0
            && [b"select" as &[u8], b"values", b"table"]
                .iter()
                .any(|w| is_kw(sql, t, w))
        {
            return Some(StatementKind::Read);
        }
        body_start = depth == 0 && after_as && t.tok == Tok::Punct(b'(');
        after_as = depth == 0 && (is_kw(sql, t, b"as") || is_kw(sql, t, b"materialized"));
        None
    });
    kind.unwrap_or(StatementKind::Read)
}

pub(super) fn ident_str(id: &Ident, out: &mut String) {
    let v = &id.value;
    if id.quote_style.is_none() {
        out.extend(v.chars().map(|c| c.to_ascii_lowercase()));
    } else if v
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && v.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'$')
    {
        out.push_str(v);
    } else {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    }
}

pub(super) fn name_str(n: &ObjectName) -> String {
    let mut s = String::new();
    for (i, part) in n.0.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        match part {
            ObjectNamePart::Identifier(id) => ident_str(id, &mut s),
            ObjectNamePart::Function(f) => ident_str(&f.name, &mut s),
        }
    }
    s
}

pub(super) fn factor_name(f: &TableFactor) -> Option<&ObjectName> {
    match f {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

/// Tables a statement writes (DML and DDL targets); COPY ... TO sources go to `reads`.
pub(super) fn write_targets<'s>(
    s: &'s Statement,
    writes: &mut Vec<&'s ObjectName>,
    reads: &mut Vec<&'s ObjectName>,
) {
    match s {
        Statement::Insert(i) => {
            if let TableObject::TableName(n) = &i.table {
                writes.push(n);
            }
        }
        Statement::Update(u) => writes.extend(factor_name(&u.table.relation)),
        Statement::Delete(d) => {
            writes.extend(&d.tables);
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
            writes.extend(from.iter().filter_map(|t| factor_name(&t.relation)));
        }
        Statement::Merge(m) => writes.extend(factor_name(&m.table)),
        Statement::Truncate(t) => writes.extend(t.table_names.iter().map(|t| &t.name)),
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            to,
            ..
        } => if *to { reads } else { writes }.push(table_name),
        Statement::CreateTable(c) => writes.push(&c.name),
        Statement::CreateView(v) => writes.push(&v.name),
        Statement::CreateIndex(c) => writes.push(&c.table_name),
        Statement::AlterTable(a) => writes.push(&a.name),
        Statement::Drop {
            object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
            names,
            ..
        } => writes.extend(names),
        _ => {}
    }
}

pub(super) struct CteNames(Vec<String>);

impl Visitor for CteNames {
    type Break = ();
    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        for cte in q.with.iter().flat_map(|w| &w.cte_tables) {
            let mut s = String::new();
            ident_str(&cte.alias.name, &mut s);
            self.0.push(s);
        }
        ControlFlow::Continue(())
    }
}

/// Statements with more tokens than this are not given to sqlparser: it builds chains such as
/// `1+1+...+1` or `a AND b AND ...` as trees as deep as the chain is long, and visits and drops
/// them recursively, so a long chain overflows a worker thread's stack and aborts the process.
/// Tokens bound the depth of every tree sqlparser can build; normalized texts collapse IN and
/// VALUES lists, so real statements stay far below this. A statement over it has unknown
/// tables: never cached, and a write invalidates everything, which is always safe.
pub const MAX_ANALYZED_TOKENS: usize = 4_000;

/// Whether `sql` is small enough for sqlparser (see [`MAX_ANALYZED_TOKENS`]).
pub fn within_parser_limits(sql: &str) -> bool {
    Lexer::new(sql).take(MAX_ANALYZED_TOKENS + 1).count() <= MAX_ANALYZED_TOKENS
}

/// (reads, writes) in first-appearance order; a name both read and written (e.g.
/// `INSERT INTO t SELECT FROM t`) is in both. CTE names are not tables.
pub(super) fn tables(sql: &str) -> Option<(Vec<String>, Vec<String>)> {
    if !within_parser_limits(sql) {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let stmts = match Parser::parse_sql(&dialect, sql) {
        Ok(s) => s,
        // Normalized text: collapsed lists carry a `,...` marker that no parser accepts.
        Err(_) if sql.contains(",...") => {
            Parser::parse_sql(&dialect, &sql.replace(",...", "")).ok()?
        }
        Err(_) => return None,
    };
    let mut rels = Vec::new();
    let _ = visit_relations(&stmts, |n| {
        rels.push(name_str(n));
        ControlFlow::<()>::Continue(())
    });
    let mut ctes = CteNames(Vec::new());
    let _ = stmts.visit(&mut ctes);
    let (mut w, mut r) = (Vec::new(), Vec::new());
    let _ = visit_statements(&stmts, |s| {
        let (mut ws, mut rs) = (Vec::new(), Vec::new());
        write_targets(s, &mut ws, &mut rs);
        w.extend(ws.into_iter().map(name_str));
        r.extend(rs.into_iter().map(name_str));
        ControlFlow::<()>::Continue(())
    });
    // Each write target accounts for one relation occurrence; the rest are reads.
    let (mut unconsumed, mut reads, mut writes) = (w.clone(), Vec::new(), Vec::new());
    for name in rels.into_iter().chain(r) {
        if let Some(i) = unconsumed.iter().position(|x| *x == name) {
            unconsumed.swap_remove(i);
        } else if !ctes.0.contains(&name) && !reads.contains(&name) {
            reads.push(name);
        }
    }
    for name in w {
        if !writes.contains(&name) {
            writes.push(name);
        }
    }
    Some((reads, writes))
}
