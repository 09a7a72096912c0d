//! TEMPORARY STUB (replaced by the real module).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FingerprintId(pub u64);
impl std::fmt::Display for FingerprintId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl std::str::FromStr for FingerprintId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        u64::from_str_radix(s, 16)
            .map(FingerprintId)
            .map_err(|_| ())
    }
}
pub enum StatementKind {
    Read,
}
impl StatementKind {
    pub fn as_str(&self) -> &'static str {
        "read"
    }
}
pub struct Normalized {
    pub id: FingerprintId,
    pub text: String,
}
pub fn normalize(sql: &str) -> Normalized {
    Normalized {
        id: FingerprintId(xxhash_rust::xxh3::xxh3_64(sql.as_bytes())),
        text: sql.to_lowercase(),
    }
}
pub fn split_statements(sql: &str) -> Vec<std::ops::Range<usize>> {
    let mut v = vec![];
    let mut s = 0;
    for (i, c) in sql.char_indices() {
        if c == ';' {
            if !sql[s..i].trim().is_empty() {
                v.push(s..i)
            }
            s = i + 1;
        }
    }
    if !sql[s..].trim().is_empty() {
        v.push(s..sql.len())
    }
    v
}
pub struct Analysis {
    pub kind: StatementKind,
    pub reads: Vec<String>,
    pub writes: Vec<String>,
    pub parsed: bool,
}
pub fn analyze(_sql: &str) -> Analysis {
    Analysis {
        kind: StatementKind::Read,
        reads: vec![],
        writes: vec![],
        parsed: false,
    }
}
