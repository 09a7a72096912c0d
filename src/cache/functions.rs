//! Which functions a cached statement may call. A result may be cached only when every
//! function it calls returns the same answer for the same arguments and data: built-ins known
//! to be immutable or stable and not tied to the clock (by a list that errs on the safe side),
//! plus the DBA's `[cache] stable_functions`. Built-ins tied to the clock, randomness or
//! sequences, plus `[cache] volatile_functions`, keep a statement out of the cache but are
//! known not to touch session settings. Any other function may do anything, including
//! `SET ROLE` or `set_config()` inside its body, so calling it also stops the session from
//! using the cache: pgward can no longer tell what its key should be.

use std::collections::HashSet;

use super::MissReason;
use crate::fingerprint::Call;

/// Built-ins whose result changes from call to call (or within a transaction, or with the
/// clock). They are harmless to the session's settings.
pub const DEFAULT_VOLATILE_FUNCTIONS: &[&str] = &[
    "now",
    "random",
    "random_normal",
    "setseed",
    "nextval",
    "currval",
    "lastval",
    "setval",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "current_timestamp",
    "current_time",
    "current_date",
    "localtime",
    "localtimestamp",
    "age",
    "txid_current",
    "txid_current_if_assigned",
    "txid_current_snapshot",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_snapshot",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "pg_backend_pid",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock",
    "pg_advisory_unlock",
    "pg_notify",
    "inet_client_addr",
    "inet_client_port",
    "pg_stat_get_activity",
    "dblink",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
];

/// The built-in functions that change session settings.
const SESSION_CHANGING: &[&str] = &["set_config"];

/// Built-ins known to be immutable or stable and independent of the clock: a statement
/// calling only these may be cached. Deliberately incomplete; a missing name only costs
/// caching (`unknown_function`), and `[cache] stable_functions` adds names.
pub const DEFAULT_STABLE_FUNCTIONS: &[&str] = &[
    // aggregates and window functions
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // strings
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "substr",
    "left",
    "right",
    "lpad",
    "rpad",
    "ltrim",
    "rtrim",
    "btrim",
    "replace",
    "translate",
    "concat",
    "concat_ws",
    "format",
    "initcap",
    "repeat",
    "reverse",
    "split_part",
    "strpos",
    "starts_with",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    "to_hex",
    "ascii",
    "chr",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "regexp_substr",
    "regexp_instr",
    "string_to_array",
    "array_to_string",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    "text",
    "unistr",
    // numbers
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sign",
    "sqrt",
    "cbrt",
    "power",
    "pow",
    "exp",
    "ln",
    "log",
    "log10",
    "mod",
    "div",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "width_bucket",
    "gcd",
    "lcm",
    "factorial",
    "scale",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "bool",
    "date",
    "numeric",
    // dates (from their arguments, never from the clock)
    "date_trunc",
    "date_part",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "date_bin",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    // json
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_array_length",
    "jsonb_array_length",
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "json_typeof",
    "jsonb_typeof",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_strip_nulls",
    "json_strip_nulls",
    "jsonb_pretty",
    "json_each",
    "json_each_text",
    "jsonb_each",
    "jsonb_each_text",
    "json_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "json_object_keys",
    "jsonb_object_keys",
    "jsonb_path_query",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "json_object",
    "jsonb_object",
    // arrays, ranges, series
    "array_length",
    "array_upper",
    "array_lower",
    "array_position",
    "array_positions",
    "array_remove",
    "array_replace",
    "array_append",
    "array_prepend",
    "array_cat",
    "cardinality",
    "unnest",
    "array_dims",
    "array_ndims",
    "generate_subscripts",
    "generate_series",
    "int4range",
    "int8range",
    "numrange",
    "daterange",
    "tsrange",
    "tstzrange",
    "isempty",
    "lower_inc",
    "upper_inc",
    "range_merge",
    "num_nonnulls",
    "num_nulls",
    // text search
    "to_tsvector",
    "to_tsquery",
    "plainto_tsquery",
    "phraseto_tsquery",
    "websearch_to_tsquery",
    "ts_rank",
    "ts_rank_cd",
    "ts_headline",
    "setweight",
    // catalog and session information (settings are part of every key)
    "current_setting",
    "version",
    "current_database",
    "current_schema",
    "current_schemas",
    "pg_typeof",
    "format_type",
    "pg_get_expr",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_get_viewdef",
    "pg_get_functiondef",
    "pg_get_function_arguments",
    "pg_get_function_result",
    "pg_get_userbyid",
    "pg_get_serial_sequence",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "pg_function_is_visible",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_column_privilege",
    "has_function_privilege",
    "pg_has_role",
    "obj_description",
    "col_description",
    "shobj_description",
    "pg_encoding_to_char",
    "to_regclass",
    "to_regtype",
    "to_regproc",
    "to_regnamespace",
    "array_in",
    "pg_get_keywords",
];

/// What a statement's calls mean for the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// `Err` when a call keeps the statement out of the cache.
    pub verdict: Result<(), MissReason>,
    /// A call may have changed session settings (set_config, or a function pgward does
    /// not know): the session stops using the cache.
    pub session_unknown: bool,
}

/// The function lists, built once from the defaults and `[cache]`.
#[derive(Debug)]
pub struct Functions {
    volatile: HashSet<Box<str>>,
    stable: HashSet<Box<str>>,
}

impl Functions {
    /// `volatile` and `stable` are the `[cache]` lists: names, optionally `schema.name`.
    pub fn new(volatile: &[String], stable: &[String]) -> Functions {
        let set = |defaults: &[&str], extra: &[String]| -> HashSet<Box<str>> {
            defaults
                .iter()
                .map(|f| Box::from(*f))
                .chain(extra.iter().map(|f| configured_name(f)))
                .collect()
        };
        Functions {
            volatile: set(DEFAULT_VOLATILE_FUNCTIONS, volatile),
            stable: set(DEFAULT_STABLE_FUNCTIONS, stable),
        }
    }

    /// True for a built-in or configured volatile name (also the clock keywords, such as
    /// `current_timestamp`, that are used without parentheses).
    pub fn is_volatile(&self, word: &str) -> bool {
        self.volatile.contains(word)
    }

    /// Judges the calls of one statement: the first call that keeps it out of the cache
    /// gives the reason, and any unknown call makes the session's settings unknown.
    pub fn judge(&self, calls: &[Call]) -> Judgement {
        let mut judgement = Judgement {
            verdict: Ok(()),
            session_unknown: false,
        };
        for call in calls {
            let builtin = matches!(call.schema.as_deref(), None | Some("pg_catalog"));
            let qualified = call.schema.as_ref().map(|s| format!("{s}.{}", call.name));
            let listed = |set: &HashSet<Box<str>>| {
                builtin && set.contains(call.name.as_str())
                    || qualified.as_deref().is_some_and(|q| set.contains(q))
            };
            let reason = if builtin && SESSION_CHANGING.contains(&call.name.as_str()) {
                judgement.session_unknown = true;
                MissReason::Volatile
            } else if listed(&self.volatile) {
                MissReason::Volatile
            } else if listed(&self.stable) {
                continue;
            } else {
                judgement.session_unknown = true;
                MissReason::UnknownFunction
            };
            if judgement.verdict.is_ok() {
                judgement.verdict = Err(reason);
            }
        }
        judgement
    }
}

/// A configured name as calls spell it: unquoted parts lowercased, quoted ones kept.
fn configured_name(name: &str) -> Box<str> {
    if name.contains('"') {
        name.into()
    } else {
        name.to_ascii_lowercase().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::calls;

    fn judge(sql: &str) -> Judgement {
        let functions = Functions::new(&["audit_log".into()], &["shop.price_of".into()]);
        functions.judge(&calls(sql, 64))
    }

    #[test]
    fn only_known_stable_functions_may_be_cached() {
        assert_eq!(
            judge("SELECT lower(name), count(*) FROM t GROUP BY 1").verdict,
            Ok(())
        );
        assert_eq!(
            judge("SELECT pg_catalog.lower(name) FROM t").verdict,
            Ok(())
        );
        assert_eq!(judge("SELECT shop.price_of(id) FROM t").verdict, Ok(()));
        assert_eq!(judge("SELECT now()").verdict, Err(MissReason::Volatile));
        assert_eq!(
            judge("SELECT audit_log(1)").verdict,
            Err(MissReason::Volatile)
        );
        let unknown = judge("SELECT bump() FROM t");
        assert_eq!(unknown.verdict, Err(MissReason::UnknownFunction));
        assert!(unknown.session_unknown);
        // A user function in another schema is not the built-in of the same name.
        assert_eq!(
            judge("SELECT shop.lower(name) FROM t").verdict,
            Err(MissReason::UnknownFunction)
        );
        assert_eq!(
            judge("SELECT \"Lower\"(name) FROM t").verdict,
            Err(MissReason::UnknownFunction)
        );
    }

    #[test]
    fn set_config_and_unknown_functions_make_the_session_unknown() {
        assert!(judge("SELECT set_config('app.tenant', 'abc', false)").session_unknown);
        assert!(judge("SELECT pg_catalog.set_config('role', 'x', false)").session_unknown);
        assert!(judge("SELECT 1 FROM t WHERE become_admin()").session_unknown);
        assert!(!judge("SELECT now(), audit_log(2), lower('x')").session_unknown);
        assert!(!judge("INSERT INTO t (a) VALUES (1)").session_unknown);
    }
}
