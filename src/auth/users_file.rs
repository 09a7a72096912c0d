//! The users file, in PgBouncer's `auth_file` format: one user per line, `"name" "secret"`,
//! each field in double quotes with `""` standing for a quote inside it; the rest of a line after
//! the second field is ignored (as PgBouncer does); blank lines and lines starting with `#` or
//! `;` are comments. A secret is a SCRAM verifier, an md5 hash or plaintext ([`Secret`]).
//! Loading returns an immutable [`UsersTable`]; a reload loads a new one and swaps it in whole.
//! Errors name the file and line and never quote a secret.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use super::secret::Secret;

/// Largest users file read: far above 100,000 users with SCRAM verifiers (~150 bytes a line).
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// Most users one file may list.
pub const MAX_USERS: usize = 100_000;
/// PostgreSQL's NAMEDATALEN - 1: a longer role name cannot exist.
pub const MAX_USER_NAME: usize = 63;

/// The users of one load of the file.
#[derive(Debug, Default)]
pub struct UsersTable {
    users: HashMap<String, Arc<Secret>>,
}

/// Why the users file cannot be used.
#[derive(Debug, Error)]
pub enum UsersFileError {
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {} is over {MAX_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl UsersTable {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<UsersTable, UsersFileError> {
        let read = |source| UsersFileError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        // One byte over the cap tells a file at the cap from a larger one.
        file.take(MAX_FILE_BYTES.saturating_add(1))
            .read_to_string(&mut text)
            .map_err(read)?;
        if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
            return Err(UsersFileError::TooLarge {
                path: path.to_owned(),
            });
        }
        UsersTable::parse(path, &text)
    }

    /// Parses the file's text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<UsersTable, UsersFileError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index.saturating_add(1);
            let fail = |message: String| UsersFileError::Line {
                path: path.to_owned(),
                line: number,
                message,
            };
            let Some((user, secret)) = parse_line(line).map_err(|m| fail(m.into()))? else {
                continue;
            };
            let secret = Secret::parse(&secret).map_err(|e| fail(e.to_string()))?;
            if users.contains_key(&user) {
                return Err(fail(format!("user \"{user}\" is listed twice")));
            }
            if users.len() >= MAX_USERS {
                return Err(fail(format!("more than {MAX_USERS} users")));
            }
            users.insert(user, Arc::new(secret));
        }
        Ok(UsersTable { users })
    }

    pub fn get(&self, user: &str) -> Option<Arc<Secret>> {
        self.users.get(user).cloned()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// One line: `Ok(None)` for a comment or blank line, else the user and the secret's text.
fn parse_line(line: &str) -> Result<Option<(String, String)>, &'static str> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with(['#', ';']) {
        return Ok(None);
    }
    let (user, rest) = quoted(rest)
        .ok_or("expected \"user\" \"secret\": the user name is not in double quotes")?;
    if user.is_empty() || user.len() > MAX_USER_NAME {
        return Err("the user name must have 1 to 63 bytes");
    }
    let after_user = rest.trim_start();
    if after_user.len() == rest.len() {
        return Err("expected whitespace between the user name and the secret");
    }
    let (secret, _ignored) = quoted(after_user)
        .ok_or("expected \"user\" \"secret\": the secret is not in double quotes")?;
    Ok(Some((user, secret)))
}

/// A field in double quotes at the start of `text`, with `""` read as `"`; the field and what
/// follows its closing quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let body = text.get(1..)?;
    let mut out = String::new();
    while let Some((at, c)) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let after = body.get(at.saturating_add(1)..)?;
        if after.starts_with('"') {
            out.push('"');
            chars.next();
        } else {
            return Some((out, after));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::vectors::{MD5_SECRET, SCRAM_VERIFIER};

    fn parse(text: &str) -> Result<UsersTable, UsersFileError> {
        UsersTable::parse(Path::new("userlist.txt"), text)
    }

    #[test]
    fn every_kind_of_secret_and_comments() {
        let text = format!(
            "# generated\n\n  ; also a comment\n\"app\" \"{SCRAM_VERIFIER}\"\n\
             \"legacy\"\t\"{MD5_SECRET}\" \"ignored third field\"\n\"plain\" \"hunter2\"\n"
        );
        let table = parse(&text).unwrap();
        assert_eq!(table.len(), 3);
        assert!(matches!(
            table.get("app").as_deref(),
            Some(Secret::Scram(_))
        ));
        assert!(matches!(
            table.get("legacy").as_deref(),
            Some(Secret::Md5(_))
        ));
        assert!(
            matches!(table.get("plain").as_deref(), Some(Secret::Plain(p)) if p.0 == "hunter2")
        );
        assert!(table.get("nobody").is_none());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn doubled_quotes_escape_a_quote() {
        let table = parse(r#""we""ird" "pa""ss word""#).unwrap();
        assert!(
            matches!(table.get("we\"ird").as_deref(), Some(Secret::Plain(p)) if p.0 == "pa\"ss word")
        );
        let table = parse(r#""""" """""#).unwrap();
        assert!(matches!(table.get("\"").as_deref(), Some(Secret::Plain(p)) if p.0 == "\""));
    }

    #[test]
    fn malformed_lines_name_the_line_and_never_the_secret() {
        let cases = [
            (
                "\"ok\" \"pw1\"\nuser \"topsecret\"",
                2,
                "user name is not in double quotes",
            ),
            ("\"user\" topsecret", 1, "secret is not in double quotes"),
            ("\"user\" \"topsecret", 1, "secret is not in double quotes"),
            ("\"user\"\"topsecret\"", 1, "whitespace between"),
            ("\"user\"", 1, "whitespace between"),
            ("\"\" \"topsecret\"", 1, "1 to 63 bytes"),
            ("\"a\" \"\"", 1, "empty"),
            (
                "\"a\" \"topsecret\"\n\n\"a\" \"topsecret2\"",
                3,
                "listed twice",
            ),
            ("\"a\" \"SCRAM-SHA-256$4096:topsecret\"", 1, "malformed"),
        ];
        for (text, line, expected) in cases {
            let e = parse(text).expect_err(text);
            let UsersFileError::Line { line: at, .. } = &e else {
                panic!("{e}");
            };
            let shown = e.to_string();
            assert_eq!(*at, line, "{text}: {shown}");
            assert!(
                shown.starts_with(&format!("userlist.txt:{line}: ")),
                "{shown}"
            );
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(!shown.contains("topsecret"), "{shown}");
        }
        let long = format!("\"{}\" \"pw\"", "u".repeat(64));
        assert!(parse(&long).is_err());
        assert!(parse(&format!("\"{}\" \"pw\"", "u".repeat(63))).is_ok());
    }

    #[test]
    fn the_number_of_users_is_bounded() {
        let text: String = (0..=MAX_USERS)
            .map(|i| format!("\"u{i}\" \"pw\"\n"))
            .collect();
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("more than 100000 users"), "{e}");
    }

    fn quote(field: &str) -> String {
        format!("\"{}\"", field.replace('"', "\"\""))
    }

    proptest::proptest! {
        /// Any name and plaintext secret, quoted as PgBouncer writes them, read back as they
        /// were; and no input line makes the parser panic.
        #[test]
        fn quoted_fields_round_trip(
            user in "[^\r\n]{1,20}",
            secret in "[^\r\n]{1,40}",
            junk in "\\PC{0,80}",
        ) {
            proptest::prop_assume!(user.len() <= MAX_USER_NAME);
            proptest::prop_assume!(!secret.starts_with("SCRAM-SHA-256$"));
            let line = format!("{} {}\n{junk}", quote(&user), quote(&secret));
            let text = line.lines().next().unwrap_or_default().to_owned();
            let table = parse(&text).unwrap();
            let found = table.get(&user);
            let shown = match found.as_deref() {
                Some(Secret::Plain(p)) => p.0.clone(),
                Some(Secret::Md5(h)) => format!("md5{}", String::from_utf8_lossy(&h.0)),
                other => format!("{other:?}"),
            };
            proptest::prop_assert_eq!(shown.to_ascii_lowercase(), secret.to_ascii_lowercase());
            let _ = parse(&junk);
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let e = UsersTable::load(Path::new("/nonexistent/userlist.txt")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read users file /nonexistent/userlist.txt")
        );
    }
}
