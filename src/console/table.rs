//! A console answer as a table of text columns, written as RowDescription, one DataRow per row
//! and CommandComplete. Rows built from the JSON the HTTP endpoint serves keep its keys as
//! columns, so `SHOW QUERIES` and `GET /stats/queries` say the same thing the same way.

use serde_json::Value;

use crate::protocol::build;

pub(super) struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Option<String>>) {
        self.rows.push(row);
    }

    /// One row per JSON object, one column per key of the first (`empty`: the columns when
    /// there is no row). Nested values are shown as compact JSON; null is SQL NULL.
    pub fn from_json(objects: &[Value], empty: &[&str]) -> Table {
        let columns: Vec<String> = match objects.first() {
            Some(Value::Object(first)) => first.keys().cloned().collect(),
            _ => empty.iter().map(|c| c.to_string()).collect(),
        };
        let rows = objects
            .iter()
            .map(|object| {
                columns
                    .iter()
                    .map(|column| object.get(column).and_then(text))
                    .collect()
            })
            .collect();
        Table { columns, rows }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        build::row_description(out, &columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
            build::data_row(out, &values);
        }
        build::command_complete(out, &format!("SHOW {}", self.rows.len()));
    }
}

/// Settings (pgward.toml as JSON) as `SHOW CONFIG` lists them: one dotted key per value;
/// keys ending in `token` or `password` show only whether they are set.
pub fn settings(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    flatten("", value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let key = match prefix {
                    "" => key.clone(),
                    _ => format!("{prefix}.{key}"),
                };
                flatten(&key, inner, out);
            }
        }
        _ if prefix.ends_with("token") || prefix.ends_with("password") => {
            let shown = if value.is_null() { "" } else { "(set)" };
            out.push((prefix.to_owned(), shown.to_owned()));
        }
        other => out.push((prefix.to_owned(), text(other).unwrap_or_default())),
    }
}

/// A JSON value as a console cell.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Array(_) | Value::Object(_) => Some(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Table, settings};

    #[test]
    fn settings_are_dotted_keys_with_secrets_masked() {
        let config = json!({
            "listen": "127.0.0.1:6432",
            "admin": { "token": "t0ken", "token_file": null, "max_connections": 64 },
            "console": { "users": ["ops"], "password": "secret-pw" },
        });
        let listed = settings(&config);
        let get = |key: &str| {
            listed
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("listen"), Some("127.0.0.1:6432"));
        assert_eq!(get("admin.token"), Some("(set)"));
        assert_eq!(get("admin.token_file"), Some(""));
        assert_eq!(get("admin.max_connections"), Some("64"));
        assert_eq!(get("console.users"), Some(r#"["ops"]"#));
        assert_eq!(get("console.password"), Some("(set)"));
        assert!(
            !listed
                .iter()
                .any(|(_, v)| v.contains("t0ken") || v.contains("secret-pw"))
        );
    }

    #[test]
    fn json_rows_keep_their_keys_as_columns_and_null_as_null() {
        let rows = [
            json!({ "id": 1, "name": "a", "extra": { "k": true }, "none": null }),
            json!({ "id": 2, "name": "b" }),
        ];
        let table = Table::from_json(&rows, &[]);
        assert_eq!(table.columns, ["id", "name", "extra", "none"]);
        assert_eq!(
            table.rows[0],
            [
                Some("1".into()),
                Some("a".into()),
                Some(r#"{"k":true}"#.into()),
                None
            ]
        );
        assert_eq!(table.rows[1][2], None);
        assert_eq!(Table::from_json(&[], &["x"]).columns, ["x"]);
    }
}
