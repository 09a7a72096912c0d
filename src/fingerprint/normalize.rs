//! Normalization: one pass over the lexer's tokens that writes the literal-free text, numbers
//! constants and parameters, and collapses IN / ARRAY lists and VALUES rows.

use std::ops::Range;

use super::lexer::*;
use super::{FingerprintId, Normalized};

/// Lowercased copy of a short word for keyword matching (longer words never match).
pub(super) fn kw(text: &str) -> ([u8; 16], usize) {
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
pub(super) enum WordClass {
    In,
    Array,
    Values,
    Keyword,
    Name,
}

pub(super) fn word_class(w: &str) -> WordClass {
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
pub(super) enum Last {
    Nothing,
    Word(WordClass),
    Ident,
    Value,
    Op,
    Close,
    Punct,
    /// A stray `$` (not `$n`, not a dollar quote). Spaced like a word: flush against a word it
    /// would join it (`a$`), against another `$` or a value it would open a dollar quote or
    /// a parameter (`$$`, `$$1`), and the normalized text would lex differently.
    Dollar,
    /// A lone `:`. An operator starting with `=` or another `:` right after it would read as
    /// `:=` or `::`.
    Colon,
}

impl Last {
    pub(super) fn wordlike(self) -> bool {
        matches!(
            self,
            Last::Word(_) | Last::Ident | Last::Value | Last::Dollar
        )
    }
    pub(super) fn operand(self) -> bool {
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
pub(super) struct Frame {
    pub(super) values: bool,
    pub(super) depth: u32,
    pub(super) first_start: usize,
    pub(super) first_end: usize,
    pub(super) elem_start: usize,
    pub(super) slots_at_elem: u32,
    pub(super) num_after_first: u32,
    pub(super) elems: u32,
    pub(super) ok: bool,
    /// Last `$n` number handed out before the list; numbers after it (up to `num_after_first`)
    /// belong to the first element.
    pub(super) num_at_start: u32,
    /// Source byte range of the list's contents: first element's first token (for VALUES: the
    /// first token inside the first row) to the last element's last token.
    pub(super) src_start: usize,
    pub(super) src_end: usize,
}

pub(super) const MAX_FRAMES: usize = 8;

pub(super) struct Norm<'a> {
    pub(super) sql: &'a str,
    pub(super) out: String,
    pub(super) constants: Vec<Range<usize>>,
    pub(super) last: Last,
    pub(super) depth: u32,
    /// Last `$n` number handed out.
    pub(super) next_num: u32,
    /// Values (literals and parameters) emitted so far.
    pub(super) slots: u32,
    /// Number given to parameter `$k` (0 = none yet); `params_big` for k > 64.
    pub(super) params: [u32; 65],
    pub(super) params_big: Vec<(u32, u32)>,
    pub(super) frames: [Frame; MAX_FRAMES],
    pub(super) nframes: usize,
    /// Source range of what each number stands for (index `n - 1` for `$n`).
    pub(super) slot_ranges: Vec<Range<usize>>,
    /// Source end of the previous token.
    pub(super) prev_end: usize,
    /// The next token starts the contents of the top frame (records its `src_start`).
    pub(super) mark_next: bool,
}

/// Equal up to the digits following each `$`.
pub(super) fn same_shape(a: &[u8], b: &[u8]) -> bool {
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
    pub(super) fn top(&mut self, values: bool) -> Option<&mut Frame> {
        let depth = self.depth;
        let f = self.frames.get_mut(self.nframes.checked_sub(1)?)?;
        (f.values == values && f.depth == depth).then_some(f)
    }

    /// Opens a frame; false when too many are open (the list is then never collapsed).
    pub(super) fn push_frame(&mut self, values: bool) -> bool {
        let (len, depth, slots) = (self.out.len(), self.depth, self.slots);
        let num_at_start = self.next_num;
        let Some(slot) = self.frames.get_mut(self.nframes) else {
            return false;
        };
        *slot = Frame {
            values,
            depth,
            first_start: len,
            elem_start: len,
            slots_at_elem: slots,
            ok: true,
            num_at_start,
            ..Frame::default()
        };
        self.nframes += 1;
        true
    }

    pub(super) fn emit(&mut self, s: &str, wordlike: bool, last: Last) {
        if (wordlike && self.last.wordlike())
            || (last == Last::Op && self.last == Last::Op)
            || (self.last == Last::Colon && s.starts_with(['=', ':']))
        {
            self.out.push(' ');
        }
        self.out.push_str(s);
        self.last = last;
    }

    /// Hands out the next number, standing for `src`.
    pub(super) fn new_number(&mut self, src: Range<usize>) -> u32 {
        self.next_num = self.next_num.saturating_add(1);
        if self.slot_ranges.len() < self.next_num as usize {
            self.slot_ranges.push(src);
        }
        self.next_num
    }

    pub(super) fn param_number(&mut self, k: u32, src: Range<usize>) -> u32 {
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
        let n = self.new_number(src);
        match self.params.get_mut(k as usize) {
            Some(slot) => *slot = n,
            None => self.params_big.push((k, n)),
        }
        n
    }

    /// Emits `$n` for a literal (`param` None) or a `$k` parameter spanning `src`.
    pub(super) fn value(&mut self, param: Option<u32>, src: Range<usize>) {
        let n = match param {
            Some(k) => self.param_number(k, src),
            None => self.new_number(src),
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
    pub(super) fn end_element(&mut self) {
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
    pub(super) fn close_frame(&mut self) {
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
            // The first element's numbers now stand for the whole list.
            self.slot_ranges.truncate(f.num_after_first as usize);
            let whole = f.src_start.min(f.src_end)..f.src_end;
            if let Some(first) = self.slot_ranges.get_mut(f.num_at_start as usize..) {
                first.fill(whole);
            }
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
    pub(super) fn continues_string(&self, t: Token, start: usize) -> bool {
        let prev = self.constants.last().map_or(0..0, Range::clone);
        t.tok == Tok::Str
            && self.last == Last::Value
            && self.sql.get(prev.end.saturating_sub(1)..prev.end) == Some("'")
            && self
                .sql
                .get(prev.end..start)
                .is_some_and(|gap| gap.trim().is_empty() && gap.contains('\n'))
    }

    pub(super) fn token(&mut self, t: Token, const_start: usize) {
        if self.mark_next {
            self.mark_next = false;
            if let Some(f) = self.frames.get_mut(self.nframes.wrapping_sub(1)) {
                f.src_start = const_start;
            }
        }
        self.token_inner(t, const_start);
        self.prev_end = t.end;
    }

    fn token_inner(&mut self, t: Token, const_start: usize) {
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
                    // Like brackets, a VALUES list inside an element stops its list from
                    // collapsing: the `,...` would read as a VALUES separator next time.
                    if let Some(f) = self.top(false) {
                        f.ok = false;
                    }
                    let _ = self.push_frame(true);
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
                if let Some(prev) = self.slot_ranges.last_mut() {
                    prev.end = t.end;
                }
            }
            Tok::Str | Tok::Num => {
                self.constants.push(const_start..t.end);
                self.value(None, const_start..t.end);
            }
            Tok::Param(k) => self.value(Some(k), t.start..t.end),
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
                let mut first_row = false;
                if let Some(f) = self.top(true) {
                    f.first_start = if f.elems == 0 { len } else { f.first_start };
                    f.elem_start = len;
                    first_row = f.elems == 0;
                }
                self.mark_next = first_row;
                self.emit(text, false, Last::Punct);
                self.depth = self.depth.saturating_add(1);
                if opens_list {
                    self.mark_next = self.push_frame(false);
                }
            }
            Tok::Punct(b')' | b']') => {
                let prev_end = self.prev_end;
                if let Some(f) = self.top(false) {
                    f.src_end = prev_end;
                    self.end_element();
                    self.close_frame();
                }
                self.emit(text, false, Last::Close);
                self.depth = self.depth.saturating_sub(1);
                if let Some(f) = self.top(true) {
                    f.src_end = prev_end;
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
            Tok::Other if text == "$" => self.emit(text, true, Last::Dollar),
            Tok::Punct(b':') => self.emit(text, false, Last::Colon),
            Tok::Punct(_) | Tok::Other => self.emit(text, false, Last::Punct),
        }
    }
}

/// Fast path, called for EVERY simple-protocol statement: hand-written lexer, no sqlparser,
/// ~1 allocation (the text). Never fails: unterminated strings/comments run to the end.
pub fn normalize(sql: &str) -> Normalized {
    normalize_with(sql, Strings::Standard)
}

/// [`normalize`] for a session whose `standard_conforming_strings` is as `strings` says.
pub fn normalize_with(sql: &str, strings: Strings) -> Normalized {
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
        slot_ranges: Vec::new(),
        prev_end: 0,
        mark_next: false,
    };
    let mut lx = Lexer::with_strings(sql, strings);
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
        slots: n.slot_ranges,
    }
}

#[cfg(test)]
mod slot_tests {
    use super::super::lexer::{Lexer, Tok};
    use super::normalize;
    use proptest::prelude::*;

    fn slots(sql: &str) -> Vec<&str> {
        let n = normalize(sql);
        n.slots
            .iter()
            .map(|r| sql.get(r.clone()).unwrap_or("<bad range>"))
            .collect()
    }

    #[test]
    fn literals_and_parameters() {
        assert_eq!(slots("SELECT * FROM t WHERE a = 5 AND b = $1"), ["5", "$1"]);
        assert_eq!(
            slots("select -5, E'a\\'b', X'1F', 'x'\n  'y', 1.5e-3"),
            ["-5", "E'a\\'b'", "X'1F'", "'x'\n  'y'", "1.5e-3"]
        );
        // A repeated parameter is one number: its slot is the first occurrence.
        let sql = "select * from t where a = $1 or b = $1 and c = $10";
        assert_eq!(
            normalize(sql).text,
            "select*from t where a=$1 or b=$1 and c=$2"
        );
        assert_eq!(slots(sql), ["$1", "$10"]);
        assert_eq!(normalize(sql).slots[0], 26..28);
        assert!(slots("select a from t").is_empty());
    }

    #[test]
    fn collapsed_lists_cover_the_whole_list() {
        assert_eq!(
            slots("SELECT * FROM t WHERE id IN (1, 2, 3) AND c = 'x'"),
            ["1, 2, 3", "'x'"]
        );
        assert_eq!(
            slots("select * from t where id = any(array[1,2,3]) and z = 'q'"),
            ["1,2,3", "'q'"]
        );
        assert_eq!(
            slots("select * from t where id in ( /* c */ -1, 2 /* d */ ) and z = 4"),
            ["-1, 2", "4"]
        );
        // Numbers handed out inside the list are reused after it.
        let sql = "SELECT 1 FROM t WHERE a IN ($2, $1) AND b = $1";
        assert_eq!(
            normalize(sql).text,
            "select $1 from t where a in($2,...)and b=$3"
        );
        assert_eq!(slots(sql), ["1", "$2, $1", "$1"]);
        // One element collapses too (to itself).
        assert_eq!(
            slots("select * from t where id in (7) and b = 8"),
            ["7", "8"]
        );
    }

    #[test]
    fn lists_that_do_not_collapse_keep_one_slot_per_value() {
        let sql = "select * from t where x in (1, a) and y = 2";
        assert_eq!(
            normalize(sql).text,
            "select*from t where x in($1,a)and y=$2"
        );
        assert_eq!(slots(sql), ["1", "2"]);
        let sql = "insert into t values (1, 'a')";
        assert_eq!(slots(sql), ["1", "'a'"]);
    }

    #[test]
    fn collapsed_values_rows_cover_all_rows() {
        let sql = "insert into t (a, b) values (1, 'a'), (2, 'b') returning a";
        assert_eq!(
            normalize(sql).text,
            "insert into t(a,b)values($1,$2)returning a"
        );
        assert_eq!(slots(sql), ["1, 'a'), (2, 'b'", "1, 'a'), (2, 'b'"]);
        assert_eq!(slots("values (1), (2), (3)"), ["1), (2), (3"]);
        assert_eq!(
            slots("insert into t values ($1, now()), ($2, now()); select 5"),
            ["$1, now()), ($2, now()", "5"]
        );
    }

    /// Highest `$n` of a normalized text.
    fn max_number(text: &str) -> usize {
        Lexer::new(text)
            .filter_map(|t| match t.tok {
                Tok::Param(n) => Some(n as usize),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    const WORDS: &[&str] = &[
        "select", "a", "b", "in", "(", ")", ",", "1", "-2", "'x'", "$1", "$2", "$3", "values",
        "array", "[", "]", "=", "and", "2.5", "/* c */", "E'q'",
    ];

    proptest! {
        #[test]
        fn one_slot_per_number(picks in prop::collection::vec(0..WORDS.len(), 0..40)) {
            let sql = picks.iter().map(|&i| WORDS[i]).collect::<Vec<_>>().join(" ");
            let n = normalize(&sql);
            prop_assert_eq!(n.slots.len(), max_number(&n.text), "{} -> {}", sql, n.text);
            for r in &n.slots {
                prop_assert!(sql.get(r.clone()).is_some_and(|s| !s.trim().is_empty()), "{:?} in {}", r, sql);
            }
        }
    }
}
