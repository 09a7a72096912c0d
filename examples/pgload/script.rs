//! A workload's statements: a pgbench-style script (`\set NAME random(LO, HI)`,
//! `\set NAME random_zipfian(LO, HI, S)`, `\set NAME INTEGER`, `--` comment lines, statements
//! ended by `;` or by `\gset` at the end of a line) compiled once into text pieces and variable
//! slots, then drawn and rendered per request: inlined for the simple protocol, as `$n`
//! parameters for the extended ones.

use std::fmt::Write as _;

use rand::RngExt;
use rand::rngs::SmallRng;

/// The most values a `random_zipfian` range may span (its CDF table is held in memory).
pub const MAX_ZIPF_RANGE: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("no SQL statement")]
    Empty,
}

/// How a `\set` variable is drawn.
#[derive(Debug)]
enum Draw {
    Const(i64),
    Uniform {
        lo: i64,
        hi: i64,
    },
    /// P(lo + k - 1) proportional to k^-s, k = 1..=n, as pgbench's random_zipfian; `cdf[k-1]`
    /// is the running sum up to k.
    Zipf {
        lo: i64,
        cdf: Vec<f64>,
    },
}

/// A `:name` in a statement.
#[derive(Debug, Clone)]
enum Var {
    /// Drawn by `\set` (index into the script's variables).
    Set(usize),
    /// Filled by an earlier statement's `\gset` (column name).
    Got(String),
}

#[derive(Debug)]
enum Part {
    Text(String),
    Var(Var),
}

/// One statement, compiled.
#[derive(Debug)]
pub struct Stmt {
    parts: Vec<Part>,
    /// The text with `$1..$n` in place of the variables (extended and prepared protocols).
    pub numbered: String,
    /// The variable behind each `$n`, in order.
    params: Vec<Var>,
    /// Store the first row's columns as variables for the next statements.
    pub gset: bool,
}

#[derive(Debug)]
pub struct Script {
    vars: Vec<(String, Draw)>,
    pub stmts: Vec<Stmt>,
}

/// One request's variable values: the drawn ones by index, the `\gset` ones by name.
#[derive(Debug, Default)]
pub struct Values {
    drawn: Vec<i64>,
    got: Vec<(String, String)>,
}

impl Values {
    pub fn set_got(&mut self, name: &str, value: &str) {
        match self.got.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.got.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// A variable the script uses but nothing has set yet (a `\gset` that returned no row).
#[derive(Debug, thiserror::Error)]
#[error("variable :{0} is not set (its \\gset statement returned no row)")]
pub struct Unset(pub String);

impl Script {
    /// A script file's text.
    pub fn parse(text: &str) -> Result<Script, ScriptError> {
        let mut vars: Vec<(String, Draw)> = Vec::new();
        let mut raw: Vec<(String, bool)> = Vec::new();
        let mut current = String::new();
        for (i, line) in text.lines().enumerate() {
            let at = i.saturating_add(1);
            let s = line.trim();
            if s.is_empty() || s.starts_with("--") {
                continue;
            }
            if let Some(rest) = s.strip_prefix("\\set") {
                let err = |what: String| ScriptError::Line { line: at, what };
                let (name, draw) = parse_set(rest).map_err(err)?;
                vars.retain(|(n, _)| *n != name);
                vars.push((name, draw));
                continue;
            }
            if s.starts_with('\\') {
                return Err(ScriptError::Line {
                    line: at,
                    what: format!("unsupported meta-command: {s}"),
                });
            }
            let (body, gset) = match s.strip_suffix("\\gset") {
                Some(b) => (b.trim_end(), true),
                None => (line.trim_end(), false),
            };
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(body);
            if gset || body.ends_with(';') {
                let stmt = std::mem::take(&mut current);
                let stmt = stmt.trim().trim_end_matches(';').trim().to_owned();
                if !stmt.is_empty() {
                    raw.push((stmt, gset));
                }
            }
        }
        let tail = current.trim().trim_end_matches(';').trim();
        if !tail.is_empty() {
            raw.push((tail.to_owned(), false));
        }
        if raw.is_empty() {
            return Err(ScriptError::Empty);
        }
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        let mut stmts = Vec::with_capacity(raw.len());
        let mut gset_before = false;
        for (sql, gset) in &raw {
            stmts.push(compile(sql, &names, gset_before, *gset));
            gset_before |= *gset;
        }
        Ok(Script { vars, stmts })
    }

    /// One statement given inline (`sql=` of a workload): no `\set`, no `\gset`.
    pub fn inline(sql: &str) -> Result<Script, ScriptError> {
        let sql = sql.trim().trim_end_matches(';').trim();
        if sql.is_empty() {
            return Err(ScriptError::Empty);
        }
        Ok(Script {
            vars: Vec::new(),
            stmts: vec![compile(sql, &[], false, false)],
        })
    }

    /// Draw this request's variables.
    pub fn draw(&self, rng: &mut SmallRng, out: &mut Values) {
        out.drawn.clear();
        out.got.clear();
        for (_, d) in &self.vars {
            let v = match d {
                Draw::Const(c) => *c,
                Draw::Uniform { lo, hi } => rng.random_range(*lo..=*hi),
                Draw::Zipf { lo, cdf } => {
                    let total = cdf.last().copied().unwrap_or(0.0);
                    let u = rng.random::<f64>() * total;
                    let k = cdf.partition_point(|c| *c < u);
                    lo.saturating_add(i64::try_from(k).unwrap_or(i64::MAX))
                }
            };
            out.drawn.push(v);
        }
    }
}

fn lookup<'a>(var: &Var, v: &'a Values, buf: &'a mut String) -> Result<&'a str, Unset> {
    match var {
        Var::Set(i) => {
            buf.clear();
            let n = v.drawn.get(*i).copied().unwrap_or(0);
            let _ = write!(buf, "{n}");
            Ok(buf.as_str())
        }
        Var::Got(name) => v
            .got
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, val)| val.as_str())
            .ok_or_else(|| Unset(name.clone())),
    }
}

impl Stmt {
    /// The statement with its variables written in (simple protocol), into `out`.
    pub fn render(&self, v: &Values, out: &mut String) -> Result<(), Unset> {
        out.clear();
        let mut num = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(var) => out.push_str(lookup(var, v, &mut num)?),
            }
        }
        Ok(())
    }

    /// The values of `$1..$n` (extended and prepared protocols), as text.
    pub fn params(&self, v: &Values) -> Result<Vec<String>, Unset> {
        let mut num = String::new();
        self.params
            .iter()
            .map(|var| lookup(var, v, &mut num).map(str::to_owned))
            .collect()
    }

    pub fn param_count(&self) -> usize {
        self.params.len()
    }
}

/// `\set` arguments: `NAME random(LO, HI)`, `NAME random_zipfian(LO, HI, S)` or `NAME INT`.
fn parse_set(rest: &str) -> Result<(String, Draw), String> {
    let rest = rest.trim();
    let (name, expr) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("\\set needs a name and a value: \\set{rest}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad variable name '{name}'"));
    }
    let expr = expr.trim();
    if let Ok(c) = expr.parse::<i64>() {
        return Ok((name.to_owned(), Draw::Const(c)));
    }
    let (func, args) = expr
        .strip_suffix(')')
        .and_then(|e| e.split_once('('))
        .ok_or_else(|| {
            format!("unsupported \\set expression '{expr}' (random, random_zipfian or an integer)")
        })?;
    let args: Vec<&str> = args.split(',').map(str::trim).collect();
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("'{s}' is not an integer"))
    };
    let draw = match (func.trim(), args.as_slice()) {
        ("random", [lo, hi]) => {
            let (lo, hi) = (int(lo)?, int(hi)?);
            if lo > hi {
                return Err(format!("random({lo}, {hi}): empty range"));
            }
            Draw::Uniform { lo, hi }
        }
        ("random_zipfian", [lo, hi, s]) => {
            let (lo, hi) = (int(lo)?, int(hi)?);
            let s: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
            if !(s > 0.0 && s <= 1000.0) {
                return Err(format!("random_zipfian parameter {s} outside (0, 1000]"));
            }
            let span = hi.checked_sub(lo).and_then(|d| u64::try_from(d).ok());
            let n = match span {
                Some(d) if d < MAX_ZIPF_RANGE => d.saturating_add(1),
                _ => {
                    return Err(format!(
                        "random_zipfian({lo}, {hi}, ..): the range must hold 1 to {MAX_ZIPF_RANGE} values"
                    ));
                }
            };
            let mut cdf = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            let mut total = 0.0;
            for k in 1..=n {
                total += (k as f64).powf(-s);
                cdf.push(total);
            }
            Draw::Zipf { lo, cdf }
        }
        (f, a) => {
            return Err(format!(
                "unsupported function {f} with {} argument(s)",
                a.len()
            ));
        }
    };
    Ok((name.to_owned(), draw))
}

/// Split a statement into text and `:name` variables (a `::` cast is text). `:name` is a
/// variable when `\set` defines it, or, after a `\gset` statement, any name (filled at run
/// time); otherwise it stays text.
fn compile(sql: &str, set_names: &[&str], gset_before: bool, gset: bool) -> Stmt {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    let mut numbered = String::with_capacity(sql.len());
    let mut text = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(':') {
        let (before, from) = rest.split_at(at);
        text.push_str(before);
        let after = from.get(1..).unwrap_or("");
        if let Some(cast) = after.strip_prefix(':') {
            text.push_str("::");
            rest = cast;
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(len);
        let var = match set_names.iter().position(|n| *n == name) {
            Some(i) => Some(Var::Set(i)),
            None if gset_before && !name.is_empty() => Some(Var::Got(name.to_owned())),
            None => None,
        };
        match var {
            Some(var) => {
                numbered.push_str(&text);
                parts.push(Part::Text(std::mem::take(&mut text)));
                params.push(var.clone());
                let _ = write!(numbered, "${}", params.len());
                parts.push(Part::Var(var));
            }
            None => {
                text.push(':');
                text.push_str(name);
            }
        }
        rest = tail;
    }
    text.push_str(rest);
    numbered.push_str(&text);
    parts.push(Part::Text(text));
    Stmt {
        parts,
        numbered,
        params,
        gset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn checkout_script_compiles_with_gset() {
        let s = Script::parse(
            "\\set cid random(1, 5)\nBEGIN;\nINSERT INTO o (c) VALUES (:cid) RETURNING id \\gset\n\
             SELECT :id::int, :cid;\nCOMMIT;\n",
        )
        .unwrap();
        assert_eq!(s.stmts.len(), 4);
        assert!(s.stmts[1].gset);
        assert_eq!(
            s.stmts[1].numbered,
            "INSERT INTO o (c) VALUES ($1) RETURNING id"
        );
        assert_eq!(s.stmts[2].numbered, "SELECT $1::int, $2");
        let mut rng = SmallRng::seed_from_u64(1);
        let mut v = Values::default();
        s.draw(&mut rng, &mut v);
        let mut out = String::new();
        assert!(s.stmts[2].render(&v, &mut out).is_err());
        v.set_got("id", "7");
        s.stmts[2].render(&v, &mut out).unwrap();
        assert!(out.starts_with("SELECT 7::int, "), "{out}");
        assert_eq!(s.stmts[2].params(&v).unwrap()[0], "7");
    }

    #[test]
    fn zipf_favours_the_low_end() {
        let s = Script::parse("\\set p random_zipfian(1, 100, 1.1)\nSELECT :p;").unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut v = Values::default();
        let (mut ones, mut out) = (0, String::new());
        for _ in 0..10_000 {
            s.draw(&mut rng, &mut v);
            s.stmts[0].render(&v, &mut out).unwrap();
            let n: i64 = out.trim_start_matches("SELECT ").parse().unwrap();
            assert!((1..=100).contains(&n));
            ones += i32::from(n == 1);
        }
        // P(1) = 1 / H(100, 1.1) ~ 0.22
        assert!((1800..2600).contains(&ones), "{ones}");
    }
}
