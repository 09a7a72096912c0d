//! Why a statement whose rule enables caching was not answered from the result cache: one
//! reason code per miss, counted per fingerprint and shown in `/stats` and `/metrics`
//! (`docs/caching.md` explains each).

/// The reason code of one cache miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MissReason {
    /// No entry for the key (first request, or evicted / expired).
    Cold,
    /// The entry is past its ttl; this request refreshes it.
    Expired,
    /// A write to a table the entry read dropped it.
    Invalidated,
    /// The statement is not a read (SELECT / VALUES / TABLE / WITH ... SELECT).
    NotRead,
    /// It calls a volatile function (now(), random(), nextval(), ...).
    Volatile,
    /// It locks rows (FOR UPDATE / FOR SHARE ...).
    Locking,
    /// It reads a temporary table.
    TempTable,
    /// pgward could not tell which tables it reads.
    UnknownTables,
    /// It runs inside a transaction block.
    InTransaction,
    /// The session changed settings in a way pgward cannot follow (set_config, SET in a
    /// transaction block).
    SessionState,
    /// One of several statements in one simple-protocol Query.
    MultiStatement,
    /// An Execute with a row limit (a partial result).
    Partial,
    /// The result was larger than cache.max_entry_size.
    TooLarge,
    /// The statement failed (errors are never cached).
    Error,
    /// It calls a function pgward does not know to be stable (not built in, not in
    /// `[cache] stable_functions`).
    UnknownFunction,
    /// The same batch (since the last ReadyForQuery) already wrote: it must read its own write.
    UnsettledWrite,
    /// The identical query another session ran did not end within 5 s (a rule without a
    /// budget): this request ran it itself, uncached.
    FillWait,
}

impl MissReason {
    pub const COUNT: usize = 17;
    pub const ALL: [MissReason; MissReason::COUNT] = [
        MissReason::Cold,
        MissReason::Expired,
        MissReason::Invalidated,
        MissReason::NotRead,
        MissReason::Volatile,
        MissReason::Locking,
        MissReason::TempTable,
        MissReason::UnknownTables,
        MissReason::InTransaction,
        MissReason::SessionState,
        MissReason::MultiStatement,
        MissReason::Partial,
        MissReason::TooLarge,
        MissReason::Error,
        MissReason::UnknownFunction,
        MissReason::UnsettledWrite,
        MissReason::FillWait,
    ];

    /// The snake_case code used in JSON and as the `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            MissReason::Cold => "cold",
            MissReason::Expired => "expired",
            MissReason::Invalidated => "invalidated",
            MissReason::NotRead => "not_read",
            MissReason::Volatile => "volatile",
            MissReason::Locking => "locking",
            MissReason::TempTable => "temp_table",
            MissReason::UnknownTables => "unknown_tables",
            MissReason::InTransaction => "in_transaction",
            MissReason::SessionState => "session_state",
            MissReason::MultiStatement => "multi_statement",
            MissReason::Partial => "partial",
            MissReason::TooLarge => "too_large",
            MissReason::Error => "error",
            MissReason::UnknownFunction => "unknown_function",
            MissReason::UnsettledWrite => "unsettled_write",
            MissReason::FillWait => "fill_wait",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MissReason;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in MissReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let mut names: Vec<_> = MissReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MissReason::COUNT);
    }
}
