//! The SQLSTATE codes pgward raises itself, named as in PostgreSQL's errcodes.txt.

pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const QUERY_CANCELED: &str = "57014";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const INSUFFICIENT_RESOURCES: &str = "53000";
pub const WARNING: &str = "01000";
pub const INTERNAL_ERROR: &str = "XX000";
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
