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
use std::ops::{ControlFlow, Range};
use std::str::FromStr;

use sqlparser::ast::{
    CopySource, FromTable, Ident, ObjectName, ObjectNamePart, ObjectType, Query, Statement,
    TableFactor, TableObject, Visit, Visitor, visit_relations, visit_statements,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

#[cfg(test)]
mod tests;

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
}

/// Result of [`analyze`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Analysis {
    pub kind: StatementKind,
    pub reads: Vec<String>,
    pub writes: Vec<String>,
    pub parsed: bool,
}

// ---------------------------------------------------------------- lexer

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tok {
    Word,
    QuotedIdent,
    Str,
    Num,
    Param(u32),
    Op,
    Cast,
    Punct(u8),
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

/// PostgreSQL lexer over bytes. Every byte >= 0x80 counts as an identifier letter (as in
/// PostgreSQL's scanner), so token boundaries always fall on char boundaries.
#[derive(Clone)]
struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_op_char(c: u8) -> bool {
    b"+-*/<>=~!@#%^&|`?".contains(&c)
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str) -> Self {
        let b = sql.as_bytes();
        Lexer { b, pos: 0 }
    }

    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// Advances `n` bytes and returns `t`.
    fn adv(&mut self, n: usize, t: Tok) -> Tok {
        self.pos += n;
        t
    }

    fn skip_while(&mut self, f: impl Fn(u8) -> bool) {
        while self.pos < self.b.len() && f(self.b[self.pos]) {
            self.pos += 1;
        }
    }

    fn skip_trivia(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            let n1 = self.at(self.pos + 1);
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
                self.pos += 1;
            } else if c == b'-' && n1 == b'-' {
                self.skip_while(|c| c != b'\n');
            } else if c == b'/' && n1 == b'*' {
                let mut depth = 1u32;
                self.pos += 2;
                while self.pos < self.b.len() && depth > 0 {
                    match (self.b[self.pos], self.at(self.pos + 1)) {
                        (b'/', b'*') => (depth, self.pos) = (depth + 1, self.pos + 2),
                        (b'*', b'/') => (depth, self.pos) = (depth - 1, self.pos + 2),
                        _ => self.pos += 1,
                    }
                }
            } else {
                break;
            }
        }
        self.pos = self.pos.min(self.b.len());
    }

    /// Scans to the end of a quoted token (`pos` is just after the opening quote); a doubled
    /// quote is an escape, and so is a backslash when `backslash` (E'' strings).
    fn quoted(&mut self, skip: usize, q: u8, backslash: bool, t: Tok) -> Tok {
        self.pos += skip;
        while let Some(&c) = self.b.get(self.pos) {
            if (backslash && c == b'\\') || (c == q && self.at(self.pos + 1) == q) {
                self.pos += 2;
            } else if c == q {
                self.pos += 1;
                return t;
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.b.len();
        t
    }

    fn number(&mut self) -> Tok {
        let p = self.pos;
        if self.at(p) == b'0'
            && b"xXoObB".contains(&self.at(p + 1))
            && self.at(p + 2).is_ascii_alphanumeric()
        {
            self.pos += 2;
            self.skip_while(|c| c.is_ascii_alphanumeric() || c == b'_');
            return Tok::Num;
        }
        let digits = |c: u8| c.is_ascii_digit() || c == b'_';
        self.skip_while(digits);
        if self.at(self.pos) == b'.' && self.at(self.pos + 1) != b'.' {
            self.pos += 1;
            self.skip_while(digits);
        }
        if matches!(self.at(self.pos), b'e' | b'E') {
            let j = self.pos + 1 + usize::from(matches!(self.at(self.pos + 1), b'+' | b'-'));
            if self.at(j).is_ascii_digit() {
                self.pos = j;
                self.skip_while(digits);
            }
        }
        Tok::Num
    }

    /// `$1` parameter, `$tag$...$tag$` / `$$...$$` string, or a stray `$`.
    fn dollar(&mut self) -> Tok {
        let start = self.pos;
        if self.at(start + 1).is_ascii_digit() {
            self.pos += 1;
            let mut v: u32 = 0;
            while let Some(d) = self.b.get(self.pos).filter(|d| d.is_ascii_digit()) {
                v = v.saturating_mul(10).saturating_add(u32::from(d - b'0'));
                self.pos += 1;
            }
            return Tok::Param(v);
        }
        let mut j = start + 1;
        if is_ident_start(self.at(j)) {
            while is_ident_start(self.at(j)) || self.at(j).is_ascii_digit() {
                j += 1;
            }
        }
        if self.at(j) != b'$' {
            return self.adv(1, Tok::Other);
        }
        let tag = &self.b[start..=j];
        let body = &self.b[j + 1..];
        self.pos = match body.windows(tag.len()).position(|w| w == tag) {
            Some(k) => j + 1 + k + tag.len(),
            None => self.b.len(),
        };
        Tok::Str
    }

    /// Operator per PostgreSQL rules: stops before `--`/`/*`; a multi-char operator ending in
    /// `+`/`-` loses that tail unless it contains one of `~!@#%^&|`?` (so `=-5` is `=` `-5`).
    fn operator(&mut self) -> Tok {
        let s = self.pos;
        let mut e = s + 1;
        while is_op_char(self.at(e))
            && !matches!((self.at(e), self.at(e + 1)), (b'-', b'-') | (b'/', b'*'))
        {
            e += 1;
        }
        if !self.b[s..e].iter().any(|c| b"~!@#%^&|`?".contains(c)) {
            while e - s > 1 && matches!(self.b[e - 1], b'+' | b'-') {
                e -= 1;
            }
        }
        self.pos = e;
        Tok::Op
    }

    fn word_or_prefixed(&mut self, c: u8, n1: u8) -> Tok {
        let n2 = self.at(self.pos + 2);
        match (c.to_ascii_lowercase(), n1) {
            (b'e', b'\'') => self.quoted(2, b'\'', true, Tok::Str),
            (b'b' | b'x' | b'n', b'\'') => self.quoted(2, b'\'', false, Tok::Str),
            (b'u', b'&') if n2 == b'\'' => self.quoted(3, b'\'', false, Tok::Str),
            (b'u', b'&') if n2 == b'"' => self.quoted(3, b'"', false, Tok::QuotedIdent),
            _ => {
                self.skip_while(|c| is_ident_start(c) || c.is_ascii_digit() || c == b'$');
                Tok::Word
            }
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;
    fn next(&mut self) -> Option<Token> {
        self.skip_trivia();
        let start = self.pos;
        let c = *self.b.get(start)?;
        let n1 = self.at(start + 1);
        let tok = match c {
            b'\'' => self.quoted(1, b'\'', false, Tok::Str),
            b'"' => self.quoted(1, b'"', false, Tok::QuotedIdent),
            b'$' => self.dollar(),
            b'0'..=b'9' => self.number(),
            b'.' if n1.is_ascii_digit() => self.number(),
            b'(' | b')' | b'[' | b']' | b',' | b';' | b'.' => self.adv(1, Tok::Punct(c)),
            b':' if n1 == b':' => self.adv(2, Tok::Cast),
            b':' if n1 == b'=' => self.adv(2, Tok::Op),
            b':' => self.adv(1, Tok::Punct(c)),
            _ if is_op_char(c) => self.operator(),
            _ if is_ident_start(c) => self.word_or_prefixed(c, n1),
            _ => self.adv(1, Tok::Other),
        };
        let end = self.pos.min(self.b.len());
        Some(Token { tok, start, end })
    }
}

/// Lowercased copy of a short word for keyword matching (longer words never match).
fn kw(text: &str) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    let b = text.as_bytes();
    if b.len() > 16 {
        return (buf, 0);
    }
    for (d, s) in buf.iter_mut().zip(b) {
        *d = s.to_ascii_lowercase();
    }
    (buf, b.len())
}

// ---------------------------------------------------------------- normalize

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WordClass {
    In,
    Array,
    Values,
    Keyword,
    Name,
}

fn word_class(w: &str) -> WordClass {
    let (buf, n) = kw(w);
    match &buf[..n] {
        b"in" => WordClass::In,
        b"array" => WordClass::Array,
        b"values" => WordClass::Values,
        // Keywords after which `-5` is a negative constant rather than a subtraction.
        b"select" | b"where" | b"and" | b"or" | b"not" | b"when" | b"then" | b"else" | b"case"
        | b"by" | b"limit" | b"offset" | b"having" | b"on" | b"set" | b"between" | b"like"
        | b"ilike" | b"similar" | b"is" | b"return" | b"distinct" | b"all" | b"any" | b"some" => {
            WordClass::Keyword
        }
        _ => WordClass::Name,
    }
}

/// What was emitted last: decides spacing and whether a `-` is unary.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Last {
    Nothing,
    Word(WordClass),
    Ident,
    Value,
    Op,
    Close,
    Punct,
}

impl Last {
    fn wordlike(self) -> bool {
        matches!(self, Last::Word(_) | Last::Ident | Last::Value)
    }
    fn operand(self) -> bool {
        matches!(
            self,
            Last::Word(WordClass::Name) | Last::Ident | Last::Value | Last::Close
        )
    }
}

/// A list being watched for collapsing: an `IN (...)`/`ARRAY[...]` list (elements at `depth`)
/// or a `VALUES` row list (rows open at `depth`). It collapses to its first element when every
/// element has the first one's shape (and, for IN/ARRAY, holds exactly one value).
#[derive(Clone, Copy, Default)]
struct Frame {
    values: bool,
    depth: u32,
    first_start: usize,
    first_end: usize,
    elem_start: usize,
    slots_at_elem: u32,
    num_after_first: u32,
    elems: u32,
    ok: bool,
}

const MAX_FRAMES: usize = 8;

struct Norm<'a> {
    sql: &'a str,
    out: String,
    constants: Vec<Range<usize>>,
    last: Last,
    depth: u32,
    /// Last `$n` number handed out.
    next_num: u32,
    /// Values (literals and parameters) emitted so far.
    slots: u32,
    /// Number given to parameter `$k` (0 = none yet); `params_big` for k > 64.
    params: [u32; 65],
    params_big: Vec<(u32, u32)>,
    frames: [Frame; MAX_FRAMES],
    nframes: usize,
}

/// Equal up to the digits following each `$`.
fn same_shape(a: &[u8], b: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return true,
            (Some(b'$'), Some(b'$')) => {
                (i, j) = (i + 1, j + 1);
                while a.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            (Some(x), Some(y)) if x == y => (i, j) = (i + 1, j + 1),
            _ => return false,
        }
    }
}

impl Norm<'_> {
    fn top(&mut self, values: bool) -> Option<&mut Frame> {
        let depth = self.depth;
        let f = self.frames.get_mut(self.nframes.checked_sub(1)?)?;
        (f.values == values && f.depth == depth).then_some(f)
    }

    fn push_frame(&mut self, values: bool) {
        let (len, depth, slots) = (self.out.len(), self.depth, self.slots);
        if let Some(slot) = self.frames.get_mut(self.nframes) {
            *slot = Frame {
                values,
                depth,
                first_start: len,
                elem_start: len,
                slots_at_elem: slots,
                ok: true,
                ..Frame::default()
            };
            self.nframes += 1;
        }
    }

    fn emit(&mut self, s: &str, wordlike: bool, last: Last) {
        if (wordlike && self.last.wordlike()) || (last == Last::Op && self.last == Last::Op) {
            self.out.push(' ');
        }
        self.out.push_str(s);
        self.last = last;
    }

    fn param_number(&mut self, k: u32) -> u32 {
        let known = match self.params.get(k as usize) {
            Some(&v) => v,
            None => self
                .params_big
                .iter()
                .find(|(p, _)| *p == k)
                .map_or(0, |&(_, v)| v),
        };
        if known != 0 {
            return known;
        }
        self.next_num = self.next_num.saturating_add(1);
        match self.params.get_mut(k as usize) {
            Some(slot) => *slot = self.next_num,
            None => self.params_big.push((k, self.next_num)),
        }
        self.next_num
    }

    fn value(&mut self, param: Option<u32>) {
        let n = match param {
            Some(k) => self.param_number(k),
            None => {
                self.next_num = self.next_num.saturating_add(1);
                self.next_num
            }
        };
        self.slots = self.slots.wrapping_add(1);
        let mut buf = [b'$'; 11];
        let (mut i, mut v) = (buf.len(), n);
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let digits = std::str::from_utf8(&buf[i - 1..]).unwrap_or("$");
        self.emit(digits, true, Last::Value);
    }

    /// Closes the current element of the top frame (which the caller checked exists).
    fn end_element(&mut self) {
        let (len, slots, next_num) = (self.out.len(), self.slots, self.next_num);
        let out = self.out.as_bytes();
        let Some(f) = self.frames.get_mut(self.nframes.wrapping_sub(1)) else {
            return;
        };
        if !f.values && slots.wrapping_sub(f.slots_at_elem) != 1 {
            f.ok = false;
        }
        if f.elems == 0 {
            (f.first_end, f.num_after_first) = (len, next_num);
        } else if f.ok {
            let first = out.get(f.first_start..f.first_end).unwrap_or(b"");
            f.ok = same_shape(first, out.get(f.elem_start..).unwrap_or(b""));
        }
        f.elems += 1;
    }

    /// Pops the top frame, collapsing its list when every element had the first one's shape:
    /// the output is cut back to the first element and numbers given out after it are reused.
    fn close_frame(&mut self) {
        let Some(f) = self
            .nframes
            .checked_sub(1)
            .and_then(|i| self.frames.get(i).copied())
        else {
            return;
        };
        self.nframes -= 1;
        if f.ok && (f.elems > 1 || (!f.values && f.elems == 1)) {
            self.out.truncate(f.first_end);
            self.next_num = f.num_after_first;
            for p in self.params.iter_mut().filter(|p| **p > f.num_after_first) {
                *p = 0;
            }
            self.params_big.retain(|&(_, v)| v <= f.num_after_first);
            if !f.values {
                self.out.push_str(",...");
            }
            self.last = Last::Close;
        }
    }

    /// True when a string literal directly continues the previous one (`'a'` newline `'b'`).
    fn continues_string(&self, t: Token, start: usize) -> bool {
        let prev = self.constants.last().map_or(0..0, Range::clone);
        t.tok == Tok::Str
            && self.last == Last::Value
            && self.sql.get(prev.end.saturating_sub(1)..prev.end) == Some("'")
            && self
                .sql
                .get(prev.end..start)
                .is_some_and(|gap| gap.trim().is_empty() && gap.contains('\n'))
    }

    fn token(&mut self, t: Token, const_start: usize) {
        // A token at the level of a VALUES list that is neither a row nor a separator ends it.
        while self.top(true).is_some() && !matches!(t.tok, Tok::Punct(b'(' | b',')) {
            self.close_frame();
        }
        let sql = self.sql;
        let text = sql.get(t.start..t.end).unwrap_or("");
        match t.tok {
            Tok::Word => {
                let class = word_class(text);
                let start = self.out.len() + usize::from(self.last.wordlike());
                self.emit(text, true, Last::Word(class));
                if let Some(w) = self.out.get_mut(start..) {
                    w.make_ascii_lowercase();
                }
                if class == WordClass::Values {
                    self.push_frame(true);
                }
            }
            Tok::QuotedIdent if text.starts_with('U') => {
                self.emit("u", true, Last::Ident);
                self.out.push_str(text.get(1..).unwrap_or(""));
            }
            Tok::QuotedIdent => self.emit(text, true, Last::Ident),
            Tok::Str if self.continues_string(t, const_start) => {
                if let Some(prev) = self.constants.last_mut() {
                    prev.end = t.end;
                }
            }
            Tok::Str | Tok::Num => {
                self.constants.push(const_start..t.end);
                self.value(None);
            }
            Tok::Param(k) => self.value(Some(k)),
            Tok::Op => self.emit(if text == "!=" { "<>" } else { text }, false, Last::Op),
            Tok::Cast => self.emit("::", false, Last::Punct),
            Tok::Punct(c @ (b'(' | b'[')) => {
                let opens_list = matches!(
                    (c, self.last),
                    (b'(', Last::Word(WordClass::In)) | (b'[', Last::Word(WordClass::Array))
                );
                if let Some(f) = self.top(false) {
                    f.ok = false; // elements holding brackets never collapse
                }
                let len = self.out.len();
                if let Some(f) = self.top(true) {
                    f.first_start = if f.elems == 0 { len } else { f.first_start };
                    f.elem_start = len;
                }
                self.emit(text, false, Last::Punct);
                self.depth = self.depth.saturating_add(1);
                if opens_list {
                    self.push_frame(false);
                }
            }
            Tok::Punct(b')' | b']') => {
                if self.top(false).is_some() {
                    self.end_element();
                    self.close_frame();
                }
                self.emit(text, false, Last::Close);
                self.depth = self.depth.saturating_sub(1);
                if self.top(true).is_some() {
                    self.end_element();
                }
            }
            Tok::Punct(b',') => {
                let in_list = self.top(false).is_some();
                if in_list {
                    self.end_element();
                }
                self.emit(",", false, Last::Punct);
                let (len, slots) = (self.out.len(), self.slots);
                if let Some(f) = self.top(false).filter(|_| in_list) {
                    (f.elem_start, f.slots_at_elem) = (len, slots);
                }
            }
            Tok::Punct(b';') if self.out.is_empty() => {}
            Tok::Punct(_) | Tok::Other => self.emit(text, false, Last::Punct),
        }
    }
}

/// Fast path, called for EVERY simple-protocol statement: hand-written lexer, no sqlparser,
/// ~1 allocation (the text). Never fails: unterminated strings/comments run to the end.
pub fn normalize(sql: &str) -> Normalized {
    let mut n = Norm {
        sql,
        out: String::with_capacity(sql.len() + 8),
        constants: Vec::new(),
        last: Last::Nothing,
        depth: 0,
        next_num: 0,
        slots: 0,
        params: [0; 65],
        params_big: Vec::new(),
        frames: [Frame::default(); MAX_FRAMES],
        nframes: 0,
    };
    let mut lx = Lexer::new(sql);
    while let Some(mut t) = lx.next() {
        let const_start = t.start;
        if t.tok == Tok::Op
            && t.end - t.start == 1
            && lx.b.get(t.start) == Some(&b'-')
            && !n.last.operand()
        {
            let mut peek = lx.clone();
            if let Some(num) = peek.next().filter(|p| p.tok == Tok::Num) {
                (lx, t) = (peek, num);
            }
        }
        n.token(t, const_start);
    }
    // Unclosed lists stay as written; a VALUES list still open at the end collapses.
    while let Some(f) = n.nframes.checked_sub(1).and_then(|i| n.frames.get(i)) {
        if f.values {
            n.close_frame();
        } else {
            n.nframes -= 1;
        }
    }
    while n.out.ends_with(';') {
        n.out.pop();
    }
    let id = FingerprintId(xxhash_rust::xxh3::xxh3_64(n.out.as_bytes()));
    Normalized {
        id,
        text: n.out,
        constants: n.constants,
    }
}

/// Splits a simple-protocol Query string into statements at top-level `;` (respecting quotes,
/// dollar quotes, comments, parentheses), dropping empty ones; returns byte ranges into sql
/// (from the first token to the last token of each statement, comments around it excluded).
/// Known limit: a `;` inside a SQL-standard `BEGIN ATOMIC ... END` function body splits.
pub fn split_statements(sql: &str) -> Vec<Range<usize>> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0u32, None::<Range<usize>>);
    for t in Lexer::new(sql) {
        match t.tok {
            Tok::Punct(b';') if depth == 0 => {
                out.extend(cur.take());
                continue;
            }
            Tok::Punct(b'(' | b'[') => depth = depth.saturating_add(1),
            Tok::Punct(b')' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
        cur = Some(cur.map_or(t.start, |r| r.start)..t.end);
    }
    out.extend(cur);
    out
}

// ---------------------------------------------------------------- analyze

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

fn is_kw(sql: &str, t: Token, word: &[u8]) -> bool {
    t.tok == Tok::Word
        && sql
            .get(t.start..t.end)
            .is_some_and(|w| w.as_bytes().eq_ignore_ascii_case(word))
}

/// Walks the remaining tokens; `f(token, depth)` returning `Some` stops the walk.
fn walk<T>(lx: Lexer<'_>, mut f: impl FnMut(Token, u32) -> Option<T>) -> Option<T> {
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
fn first_top_level<'w>(sql: &str, lx: Lexer<'_>, words: &[&'w [u8]]) -> Option<&'w [u8]> {
    walk(lx, |t, depth| {
        words
            .iter()
            .find(|w| depth == 0 && is_kw(sql, t, w))
            .copied()
    })
}

fn classify(sql: &str) -> StatementKind {
    use StatementKind::*;
    let mut lx = Lexer::new(sql);
    let first = loop {
        match lx.next() {
            Some(t) if t.tok == Tok::Punct(b'(') => continue,
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
fn classify_with(sql: &str, lx: Lexer<'_>) -> StatementKind {
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

fn ident_str(id: &Ident, out: &mut String) {
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

fn name_str(n: &ObjectName) -> String {
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

fn factor_name(f: &TableFactor) -> Option<&ObjectName> {
    match f {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

/// Tables a statement writes (DML and DDL targets); COPY ... TO sources go to `reads`.
fn write_targets<'s>(
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

struct CteNames(Vec<String>);

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

/// (reads, writes) in first-appearance order; a name both read and written (e.g.
/// `INSERT INTO t SELECT FROM t`) is in both. CTE names are not tables.
fn tables(sql: &str) -> Option<(Vec<String>, Vec<String>)> {
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
