//! A small local linter for the `/metrics` text, for unit tests: the `promtool check metrics`
//! rules this exposition could break, plus what OpenMetrics forbids that Prometheus text lets
//! pass (two families sharing a base name, a unit not last), and histogram shape (buckets
//! cumulative, `+Inf` equal to `_count`). `tests/it` runs the real promtool when installed.

use std::collections::{BTreeMap, HashSet};

/// Units whose name must come last in a family (before `_total` for counters).
const UNITS: [&str; 2] = ["seconds", "bytes"];

/// The family a TYPE line declares, OpenMetrics-style: a counter's base drops `_total`.
fn base_name<'a>(name: &'a str, kind: &str) -> &'a str {
    match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// Sample names a family of `kind` owns.
fn sample_names(name: &str, kind: &str) -> Vec<String> {
    match kind {
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        "summary" => vec![name.into(), format!("{name}_sum"), format!("{name}_count")],
        _ => vec![name.into()],
    }
}

fn check_name(name: &str, kind: &str, problems: &mut Vec<String>) {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        problems.push(format!("bad metric name {name}"));
    }
    if (kind == "counter") != name.ends_with("_total") {
        problems.push(format!("{kind} {name}: only counters end in _total"));
    }
    for bad in [
        "_count",
        "_sum",
        "_bucket",
        "_milliseconds",
        "_ms",
        "_sec",
        "_kb",
    ] {
        if name.ends_with(bad) {
            problems.push(format!("{name} ends in {bad}"));
        }
    }
    let base = base_name(name, kind);
    for unit in UNITS {
        let tokens: Vec<&str> = base.split('_').collect();
        if tokens.contains(&unit) && tokens.last() != Some(&unit) {
            problems.push(format!("{name}: unit {unit} is not last (before _total)"));
        }
    }
}

/// Every problem found, empty when the text is clean.
pub(super) fn lint(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut bases: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !helps.insert(name.to_owned()) {
                problems.push(format!("duplicate HELP for {name}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if !helps.contains(name) {
                problems.push(format!("no HELP before TYPE of {name}"));
            }
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                problems.push(format!("duplicate TYPE for {name}"));
            }
            check_name(name, kind, &mut problems);
            let base = base_name(name, kind).to_owned();
            if let Some(other) = bases.insert(base.clone(), name.to_owned()) {
                problems.push(format!("family clash: {other} and {name} are both {base}"));
            }
            for sample in sample_names(name, kind) {
                if let Some(other) = owners.insert(sample.clone(), name.to_owned()) {
                    problems.push(format!("family clash: {other} and {name} own {sample}"));
                }
            }
        } else if line.starts_with('#') || line.is_empty() {
            problems.push(format!("unexpected line {line:?}"));
        } else {
            check_sample(line, &owners, &types, &mut series, &mut problems);
        }
    }
    for (name, base) in &owners {
        if bases.contains_key(name) && base != name {
            problems.push(format!("family clash: {base} owns {name}, also a family"));
        }
    }
    problems.extend(check_histograms(text, &types));
    problems
}

fn check_sample(
    line: &str,
    owners: &BTreeMap<String, String>,
    types: &BTreeMap<String, String>,
    series: &mut HashSet<String>,
    problems: &mut Vec<String>,
) {
    let (key, value) = line.rsplit_once(' ').unwrap_or((line, ""));
    let name = key.split('{').next().unwrap_or_default();
    let has_le = key.contains("{le=") || key.contains(",le=");
    match owners.get(name).and_then(|f| types.get(f)) {
        None => problems.push(format!("sample {name} has no family declared before it")),
        Some(kind) if key.contains("quantile=") && kind != "summary" => {
            problems.push(format!("quantile label on non-summary {name}"))
        }
        Some(kind) if has_le != name.ends_with("_bucket") || kind == "summary" => {
            problems.push(format!("le label misplaced, or a summary, in {line:?}"))
        }
        Some(_) => {}
    }
    if value.parse::<f64>().is_err() && !["NaN", "+Inf", "-Inf"].contains(&value) {
        problems.push(format!("bad value in {line:?}"));
    }
    if !series.insert(key.to_owned()) {
        problems.push(format!("duplicate series {key}"));
    }
}

/// The `le` value and the labels without it, of a `_bucket` sample key.
fn split_le(key: &str) -> Option<(String, f64)> {
    let (_, labels) = key.split_once('{')?;
    let labels = labels.strip_suffix('}')?;
    let mut rest = Vec::new();
    let mut le = None;
    for pair in labels.split(',') {
        match pair.strip_prefix("le=\"").and_then(|v| v.strip_suffix('"')) {
            Some("+Inf") => le = Some(f64::INFINITY),
            Some(v) => le = v.parse().ok(),
            None => rest.push(pair),
        }
    }
    Some((rest.join(","), le?))
}

/// Buckets ascending and cumulative, ending in `+Inf` equal to `_count`, for every series.
fn check_histograms(text: &str, types: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut buckets: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let value: f64 = value.parse().unwrap_or(f64::NAN);
        let name = key.split('{').next().unwrap_or_default();
        let labels = key
            .split_once('{')
            .map_or("", |(_, l)| l.trim_end_matches('}'));
        if let Some(family) = name.strip_suffix("_bucket") {
            match split_le(key) {
                Some((labels, le)) => buckets
                    .entry((family.into(), labels))
                    .or_default()
                    .push((le, value)),
                None => problems.push(format!("bucket without le: {line:?}")),
            }
        } else if let Some(family) = name.strip_suffix("_count")
            && types.get(family).is_some_and(|k| k == "histogram")
        {
            counts.insert((family.into(), labels.into()), value);
        }
    }
    for (key, series) in &buckets {
        let ascending = series
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !ascending {
            problems.push(format!("{key:?}: buckets not ascending and cumulative"));
        }
        match series.last() {
            Some((le, n)) if le.is_infinite() && counts.get(key) == Some(n) => {}
            _ => problems.push(format!("{key:?}: last bucket is not +Inf = _count")),
        }
    }
    problems
}
