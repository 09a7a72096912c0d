//! Secrets PostgreSQL 15 itself stored (`SELECT rolname, rolpassword FROM pg_authid` after
//! `CREATE ROLE ... PASSWORD`, with `password_encryption` set to each kind), so the tests check
//! pgward against PostgreSQL's derivation rather than against its own.

/// `CREATE ROLE v_scram PASSWORD 'scram-secret'` (scram-sha-256).
pub const SCRAM_USER: &str = "v_scram";
pub const SCRAM_PASSWORD: &str = "scram-secret";
pub const SCRAM_VERIFIER: &str = "SCRAM-SHA-256$4096:z0k+y5tyFFv7jrA/aIxGhQ==$\
JrYhWUT8E39RLlWajwUzFRNId7CjwyYuY1R26BjY5BI=:TZ3YIZXlvr1SXXRZgtok6E9X1b3vl+Rzf8P6VYZ9hPU=";

/// `CREATE ROLE v_md5 PASSWORD 'md5-secret'` (md5).
pub const MD5_USER: &str = "v_md5";
pub const MD5_PASSWORD: &str = "md5-secret";
pub const MD5_SECRET: &str = "md5cf2eb91161e673512c698f154f5e688d";

/// `CREATE ROLE v_uni PASSWORD E'pa\u00A0ss\u00DF'`: SASLprep maps the no-break space to a
/// space before the keys are derived.
pub const UNICODE_PASSWORD: &str = "pa\u{a0}ss\u{df}";
pub const UNICODE_VERIFIER: &str = "SCRAM-SHA-256$4096:BBOoGbkxfio9Ssz72lMeTg==$\
pDx9GNr/UXojvr8cTe+Ko/8Au62NzrWMatPKeYtOF4g=:TseWKaH8lUeYsZ/a/Wl0/Sq/Oz/ULF3QZWPQbPyVM7s=";
