//! The PostgreSQL lexer behind fingerprints: identifiers, quoted identifiers, every string
//! form (E'', U&'', B''/X'', dollar quoting), numbers, parameters, nested comments, operators.
//! It never fails: unterminated tokens run to the end of the input.

use std::ops::Range;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// How plain `'...'` strings treat a backslash: the session's `standard_conforming_strings`.
/// With it off (a per-session setting PostgreSQL still supports), `'x\' y'` is one string;
/// lexing it the standard way would end the string early and show `y` as SQL text, leaking a
/// literal into fingerprints and stats.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Strings {
    /// `standard_conforming_strings = on` (PostgreSQL's default): backslash is a character.
    #[default]
    Standard,
    /// `standard_conforming_strings = off`: backslash escapes in plain strings too.
    Backslash,
}

/// PostgreSQL lexer over bytes. Every byte >= 0x80 counts as an identifier letter (as in
/// PostgreSQL's scanner), so token boundaries always fall on char boundaries.
#[derive(Clone)]
pub(super) struct Lexer<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    strings: Strings,
}

pub(super) fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

pub(super) fn is_op_char(c: u8) -> bool {
    b"+-*/<>=~!@#%^&|`?".contains(&c)
}

impl<'a> Lexer<'a> {
    pub(super) fn new(sql: &'a str) -> Self {
        Self::with_strings(sql, Strings::Standard)
    }

    pub(super) fn with_strings(sql: &'a str, strings: Strings) -> Self {
        Lexer {
            b: sql.as_bytes(),
            pos: 0,
            strings,
        }
    }

    pub(super) fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// Advances `n` bytes and returns `t`.
    pub(super) fn adv(&mut self, n: usize, t: Tok) -> Tok {
        self.pos += n;
        t
    }

    pub(super) fn skip_while(&mut self, f: impl Fn(u8) -> bool) {
        while self.pos < self.b.len() && f(self.b[self.pos]) {
            self.pos += 1;
        }
    }

    pub(super) fn skip_trivia(&mut self) {
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
    pub(super) fn quoted(&mut self, skip: usize, q: u8, backslash: bool, t: Tok) -> Tok {
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

    pub(super) fn number(&mut self) -> Tok {
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
    pub(super) fn dollar(&mut self) -> Tok {
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
    pub(super) fn operator(&mut self) -> Tok {
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

    pub(super) fn word_or_prefixed(&mut self, c: u8, n1: u8) -> Tok {
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
            b'\'' => self.quoted(1, b'\'', self.strings == Strings::Backslash, Tok::Str),
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

/// Splits a simple-protocol Query string into statements at top-level `;` (respecting quotes,
/// dollar quotes, comments, parentheses), dropping empty ones; returns byte ranges into sql
/// (from the first token to the last token of each statement, comments around it excluded).
/// Known limit: a `;` inside a SQL-standard `BEGIN ATOMIC ... END` function body splits.
pub fn split_statements(sql: &str) -> Vec<Range<usize>> {
    split_statements_with(sql, Strings::Standard)
}

/// [`split_statements`] for a session whose `standard_conforming_strings` is as `strings` says.
pub fn split_statements_with(sql: &str, strings: Strings) -> Vec<Range<usize>> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0u32, None::<Range<usize>>);
    for t in Lexer::with_strings(sql, strings) {
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
