//! The console's commands, parsed from one simple Query (case-insensitive, a trailing `;`
//! allowed) and answered from the same handles the HTTP endpoint reads. A bad command is an
//! ErrorResponse (42601, with a hint to `SHOW HELP`); the session goes on.

use serde_json::Value;

use super::Console;
use super::table::Table;
use crate::protocol::build::{self, Report};
use crate::protocol::sqlstate;
use crate::stats::SortKey;

/// Fingerprints `SHOW QUERIES` lists, by total execution time.
const TOP_QUERIES: usize = 20;
/// Entries `SHOW CACHE` names in its `largest` and `hottest` columns.
const CACHE_LISTED: usize = 5;

/// Every command, for `SHOW HELP` and the hint of a bad one.
const HELP: &[(&str, &str)] = &[
    (
        "SHOW QUERIES",
        "top fingerprints by total time (the /stats/queries columns)",
    ),
    ("SHOW RULES", "the rules in force (GET /rules)"),
    ("SHOW CACHE", "result cache size and counters (GET /cache)"),
    ("SHOW SESSIONS", "client sessions (GET /sessions)"),
    (
        "SHOW POOLS",
        "server connection pools of transaction mode (GET /pools)",
    ),
    (
        "SHOW LIMITS",
        "shared limits: configured, in use, in force under protection (GET /rules)",
    ),
    ("SHOW CONFIG", "the settings in force, secrets masked"),
    ("SHOW VERSION", "pgward's version"),
    ("SHOW HELP", "this list"),
    ("RELOAD", "reload the rules file (as SIGHUP does)"),
    (
        "INVALIDATE <table> | ALL",
        "drop cached results that read a table, or all",
    ),
    (
        "KILL <session id>",
        "end a client session (57P01), cancelling what it runs",
    ),
];

/// An answer that is not a table.
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Runs one query string and appends its answer (without ReadyForQuery).
pub(super) fn run(console: &Console, sql: &str, out: &mut Vec<u8>) {
    let command = sql.trim().trim_end_matches(';').trim();
    if command.is_empty() {
        build::empty_query_response(out);
        return;
    }
    let words: Vec<String> = command.split_whitespace().map(str::to_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["SHOW", what] => show(console, what).map(|table| table.write(out)),
        ["RELOAD"] => reload(console).map(|()| build::command_complete(out, "RELOAD")),
        ["INVALIDATE", _] => {
            // The table name as written (upper-casing would change a quoted name).
            let table = command.split_whitespace().nth(1).unwrap_or_default();
            invalidate(console, table).map(|()| build::command_complete(out, "INVALIDATE"))
        }
        ["KILL", id] => kill(console, id).map(|()| build::command_complete(out, "KILL")),
        _ => Err(refuse(
            sqlstate::SYNTAX_ERROR,
            format!("unknown console command: {}", clip(command)),
        )),
    };
    if let Err(refusal) = result {
        Report::error(refusal.code, &refusal.message)
            .with_hint("SHOW HELP lists the commands")
            .write_error(out);
    }
}

fn show(console: &Console, what: &str) -> Result<Table, Refusal> {
    Ok(match what {
        "QUERIES" => {
            let snapshot = console.stats.snapshot();
            let rows = to_values(snapshot.sorted(SortKey::TotalExecTime, TOP_QUERIES));
            Table::from_json(&rows, &["queryid", "query", "calls", "total_exec_time"])
        }
        "RULES" => {
            let active = console.rules.snapshot();
            let set = &active.set;
            let rules: Vec<Value> = set
                .rules
                .iter()
                .map(|r| crate::rules::describe(r, set))
                .collect();
            Table::from_json(&rules, &["name", "line", "match", "action"])
        }
        "CACHE" => Table::from_json(&to_values([console.cache.snapshot(CACHE_LISTED)]), &[]),
        "SESSIONS" => Table::from_json(
            &to_values(console.sessions.list()),
            &[
                "id",
                "peer",
                "user",
                "database",
                "application_name",
                "state",
            ],
        ),
        "POOLS" => pools(console),
        "LIMITS" => {
            let active = console.rules.snapshot();
            let limits = crate::limits::states(&active.shared_limits, std::time::Instant::now());
            Table::from_json(&to_values(limits), &LIMIT_COLUMNS)
        }
        "CONFIG" => {
            let mut table = Table::new(&["key", "value"]);
            for (key, value) in &console.config {
                table.push(vec![Some(key.clone()), Some(value.clone())]);
            }
            table
        }
        "VERSION" => {
            let mut table = Table::new(&["version"]);
            table.push(vec![Some(format!("pgward {}", env!("CARGO_PKG_VERSION")))]);
            table
        }
        "HELP" => {
            let mut table = Table::new(&["command", "description"]);
            for (command, description) in HELP {
                table.push(vec![
                    Some(command.to_string()),
                    Some(description.to_string()),
                ]);
            }
            table
        }
        _ => {
            let message = format!("unknown SHOW item {}", clip(what));
            return Err(refuse(sqlstate::SYNTAX_ERROR, message));
        }
    })
}

/// The columns of `SHOW LIMITS` when there is no limit (otherwise `LimitState`'s fields,
/// which they repeat).
const LIMIT_COLUMNS: [&str; 11] = [
    "name",
    "max_concurrency",
    "in_use",
    "queue_timeout_ms",
    "max_db_time_ms_per_s",
    "db_time_burst_ms",
    "db_time_available_ms",
    "db_time_spent_ms",
    "factor",
    "effective_max_concurrency",
    "effective_db_time_ms_per_s",
];

/// The columns of `SHOW POOLS`, in PgBouncer's spirit; `GET /pools` has every counter.
const POOL_COLUMNS: [&str; 11] = [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_login",
    "sv_tested",
    "maxwait",
    "maxwait_us",
    "pool_mode",
];

fn pools(console: &Console) -> Table {
    let mut table = Table::new(&POOL_COLUMNS);
    let Some(pools) = &console.pools else {
        return table;
    };
    for p in pools.snapshot() {
        table.push(vec![
            Some(p.database),
            Some(p.user),
            Some(p.cl_active.to_string()),
            Some(p.cl_waiting.to_string()),
            Some(p.sv_active.to_string()),
            Some(p.sv_idle.to_string()),
            Some(p.sv_login.to_string()),
            Some(p.sv_tested.to_string()),
            Some(p.maxwait.to_string()),
            Some(p.maxwait_us.to_string()),
            Some("transaction".to_owned()),
        ]);
    }
    table
}

/// A user-given value as errors and logs repeat it: at most 64 characters.
fn clip(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", value.get(..end).unwrap_or_default()),
        None => value.to_owned(),
    }
}

fn to_values<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

fn reload(console: &Console) -> Result<(), Refusal> {
    tracing::info!("console: reloading rules");
    console.rules.reload().map(|_| ()).map_err(|problems| {
        let message = format!("rules file rejected; the previous rules stay in force: {problems}");
        refuse(sqlstate::CONFIG_FILE_ERROR, message)
    })
}

fn invalidate(console: &Console, table: &str) -> Result<(), Refusal> {
    if table.eq_ignore_ascii_case("all") {
        console.cache.purge_all();
    } else {
        console
            .cache
            .purge_table(table)
            .map_err(|e| refuse(sqlstate::INVALID_PARAMETER_VALUE, e.to_string()))?;
    }
    tracing::info!(table = %clip(table), "console: cache invalidated");
    Ok(())
}

fn kill(console: &Console, id: &str) -> Result<(), Refusal> {
    let Ok(number) = id.parse::<u64>() else {
        let message = format!("{} is not a session id (see SHOW SESSIONS)", clip(id));
        return Err(refuse(sqlstate::INVALID_PARAMETER_VALUE, message));
    };
    if !console.sessions.terminate(number) {
        return Err(refuse(
            sqlstate::UNDEFINED_OBJECT,
            format!("no session {number}"),
        ));
    }
    tracing::info!(session = number, "console: session terminated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::LIMIT_COLUMNS;
    use crate::limits::LimitState;

    #[test]
    fn show_limits_without_a_limit_has_the_columns_it_has_with_one() {
        let state = LimitState {
            name: "x".into(),
            max_concurrency: None,
            in_use: 0,
            queue_timeout_ms: 0.0,
            max_db_time_ms_per_s: None,
            db_time_burst_ms: None,
            db_time_available_ms: None,
            db_time_spent_ms: None,
            factor: 0,
            effective_max_concurrency: None,
            effective_db_time_ms_per_s: None,
        };
        let value = serde_json::to_value(state).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, LIMIT_COLUMNS);
    }
}
