//! Prometheus text exposition (format 0.0.4) of one [`Snapshot`]:
//! per-fingerprint series for the top fingerprints by total time, totals over
//! all fingerprints, and the proxy-wide counters and gauges. Every family gets
//! one `# HELP` and one `# TYPE` line; counters end in `_total`, times are in
//! seconds.

use std::fmt::Write as _;

use super::record::Counter;
use super::snapshot::{FingerprintSnapshot, Snapshot, SortKey};

/// Renders `snapshot`, with individual series for the `top` fingerprints of
/// largest total execution time. The normalized query text is added as a
/// `query` label only when `show_query_label` is true.
pub fn render_prometheus(snapshot: &Snapshot, top: usize, show_query_label: bool) -> String {
    let rows = snapshot.sorted(SortKey::TotalExecTime, top);
    let labels: Vec<String> = rows
        .iter()
        .map(|fp| fingerprint_labels(fp, show_query_label))
        .collect();
    let per_fp: Vec<(&FingerprintSnapshot, &str)> = rows
        .iter()
        .copied()
        .zip(labels.iter().map(String::as_str))
        .collect();
    let mut w = Writer::default();

    w.family(
        "pgward_query_calls_total",
        "counter",
        "Executions of the query fingerprint",
    );
    for (fp, l) in &per_fp {
        w.sample("pgward_query_calls_total", l, Value::Int(fp.calls));
    }
    w.family(
        "pgward_query_rows_total",
        "counter",
        "Rows returned or affected by the query fingerprint",
    );
    for (fp, l) in &per_fp {
        w.sample("pgward_query_rows_total", l, Value::Int(fp.rows));
    }
    w.family(
        "pgward_query_exec_seconds",
        "summary",
        "Execution time of the query fingerprint",
    );
    for (fp, l) in &per_fp {
        let quantiles = [
            ("0.5", fp.p50_exec_time),
            ("0.95", fp.p95_exec_time),
            ("0.99", fp.p99_exec_time),
        ];
        for (q, ms) in quantiles {
            let value = if fp.calls == 0 {
                f64::NAN
            } else {
                ms / 1_000.0
            };
            let l = join(l, &format!("quantile=\"{q}\""));
            w.sample("pgward_query_exec_seconds", &l, Value::Float(value));
        }
        let sum = fp.total_exec_time / 1_000.0;
        w.sample("pgward_query_exec_seconds_sum", l, Value::Float(sum));
        w.sample("pgward_query_exec_seconds_count", l, Value::Int(fp.calls));
    }
    w.family(
        "pgward_query_errors_total",
        "counter",
        "Failed executions of the query fingerprint by SQLSTATE class",
    );
    for (fp, l) in &per_fp {
        for (class, n) in &fp.errors_by_class {
            let l = join(l, &format!("class=\"{}\"", escape_label(class)));
            w.sample("pgward_query_errors_total", &l, Value::Int(*n));
        }
    }
    w.family(
        "pgward_query_bytes_sent_total",
        "counter",
        "Bytes sent to clients for the query fingerprint",
    );
    for (fp, l) in &per_fp {
        w.sample(
            "pgward_query_bytes_sent_total",
            l,
            Value::Int(fp.bytes_sent),
        );
    }
    w.family(
        "pgward_query_queue_seconds_total",
        "counter",
        "Time executions of the query fingerprint waited in queues",
    );
    for (fp, l) in &per_fp {
        w.sample(
            "pgward_query_queue_seconds_total",
            l,
            Value::Float(fp.queue_time / 1_000.0),
        );
    }
    for counter in Counter::ALL {
        let name = format!("pgward_query_{}_total", counter.name());
        w.family(&name, "counter", counter.help());
        for (fp, l) in &per_fp {
            w.sample(&name, l, Value::Int(fp.outcomes.get(counter)));
        }
    }
    w.family(
        "pgward_query_cache_misses_by_reason_total",
        "counter",
        "Cache misses of the query fingerprint by reason (reasons seen so far only)",
    );
    for (fp, l) in &per_fp {
        for (reason, n) in &fp.cache_miss_reasons {
            let labels = format!("{l},reason=\"{reason}\"");
            w.sample(
                "pgward_query_cache_misses_by_reason_total",
                &labels,
                Value::Int(*n),
            );
        }
    }

    let t = &snapshot.totals;
    let all = "over all fingerprints since the last reset";
    w.single(
        "pgward_all_queries_calls_total",
        "counter",
        &format!("Executions {all}"),
        Value::Int(t.calls),
    );
    w.single(
        "pgward_all_queries_rows_total",
        "counter",
        &format!("Rows returned or affected {all}"),
        Value::Int(t.rows),
    );
    w.single(
        "pgward_all_queries_exec_seconds_total",
        "counter",
        &format!("Execution time {all}"),
        Value::Float(t.total_exec_time / 1_000.0),
    );
    w.family(
        "pgward_all_queries_errors_total",
        "counter",
        &format!("Failed executions by SQLSTATE class {all}"),
    );
    for (class, n) in &t.errors_by_class {
        let l = format!("class=\"{}\"", escape_label(class));
        w.sample("pgward_all_queries_errors_total", &l, Value::Int(*n));
    }
    w.single(
        "pgward_all_queries_bytes_sent_total",
        "counter",
        &format!("Bytes sent to clients {all}"),
        Value::Int(t.bytes_sent),
    );
    w.single(
        "pgward_all_queries_queue_seconds_total",
        "counter",
        &format!("Time waited in queues {all}"),
        Value::Float(t.queue_time / 1_000.0),
    );
    for counter in Counter::ALL {
        let name = format!("pgward_all_queries_{}_total", counter.name());
        let help = format!("{} {all}", counter.help());
        w.single(&name, "counter", &help, Value::Int(t.outcomes.get(counter)));
    }

    let p = &snapshot.proxy;
    w.single(
        "pgward_client_connections",
        "gauge",
        "Client connections open now",
        Value::Signed(p.client_connections),
    );
    w.single(
        "pgward_client_connections_total",
        "counter",
        "Client connections accepted",
        Value::Int(p.client_connections_total),
    );
    w.single(
        "pgward_client_connections_rejected_total",
        "counter",
        "Client connections refused",
        Value::Int(p.client_connections_rejected),
    );
    w.single(
        "pgward_upstream_connections",
        "gauge",
        "Upstream connections open now",
        Value::Signed(p.upstream_connections),
    );
    w.single(
        "pgward_upstream_connections_total",
        "counter",
        "Upstream connections established",
        Value::Int(p.upstream_connections_total),
    );
    w.single(
        "pgward_upstream_connections_failed_total",
        "counter",
        "Upstream connection attempts that failed",
        Value::Int(p.upstream_connections_failed),
    );
    w.single(
        "pgward_queries_total",
        "counter",
        "Statements executed through the proxy",
        Value::Int(p.queries),
    );
    w.single(
        "pgward_errors_total",
        "counter",
        "Statements that ended in an error",
        Value::Int(p.errors),
    );
    w.single(
        "pgward_fingerprints_tracked",
        "gauge",
        "Query fingerprints tracked now",
        Value::Int(p.fingerprints_tracked),
    );
    w.single(
        "pgward_fingerprints_evicted_total",
        "counter",
        "Query fingerprints evicted to respect max_fingerprints",
        Value::Int(p.fingerprints_evicted),
    );

    let by_rule = snapshot.by_rule();
    let rule_label = |rule: &str| format!("rule=\"{}\"", escape_label(rule));
    w.family(
        "pgward_rule_calls_total",
        "counter",
        "Executions of fingerprints a rule matched",
    );
    for (rule, t) in &by_rule {
        w.sample(
            "pgward_rule_calls_total",
            &rule_label(rule),
            Value::Int(t.calls),
        );
    }
    w.family(
        "pgward_rule_queue_seconds_total",
        "counter",
        "Time statements of a rule waited for a concurrency slot",
    );
    for (rule, t) in &by_rule {
        w.sample(
            "pgward_rule_queue_seconds_total",
            &rule_label(rule),
            Value::Float(t.queue_time / 1_000.0),
        );
    }
    for counter in Counter::ALL {
        let name = format!("pgward_rule_{}_total", counter.name());
        w.family(&name, "counter", &format!("{}, per rule", counter.help()));
        for (rule, t) in &by_rule {
            w.sample(
                &name,
                &rule_label(rule),
                Value::Int(t.outcomes.get(counter)),
            );
        }
    }
    w.out
}

/// `queryid="…"` plus, if asked, `,query="…"`.
fn fingerprint_labels(fp: &FingerprintSnapshot, show_query_label: bool) -> String {
    let mut labels = format!("queryid=\"{}\"", escape_label(&fp.queryid));
    if show_query_label {
        labels.push_str(",query=\"");
        labels.push_str(&escape_label(&fp.query));
        labels.push('"');
    }
    labels
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a},{b}")
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

enum Value {
    Int(u64),
    Signed(i64),
    Float(f64),
}

#[derive(Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            self.out.push_str(labels);
            self.out.push('}');
        }
        self.out.push(' ');
        let _ = match value {
            Value::Int(v) => write!(self.out, "{v}"),
            Value::Signed(v) => write!(self.out, "{v}"),
            Value::Float(v) if v.is_nan() => write!(self.out, "NaN"),
            Value::Float(v) if v.is_infinite() => {
                write!(self.out, "{}", if v > 0.0 { "+Inf" } else { "-Inf" })
            }
            Value::Float(v) => write!(self.out, "{v}"),
        };
        self.out.push('\n');
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: Value) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}
