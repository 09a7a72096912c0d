//! The crate's layers, checked: every `crate::<module>` a file under `src/` names (in a `use`
//! or an inline path, tests included) must sit on a lower layer than the file's own top-level
//! module. Peers on one layer may not import each other, so no cycle can form. A new module
//! must be placed in [`LAYERS`]; an upward import fails this test with the file that made it.

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom to top. Lower layers know nothing of higher ones.
const LAYERS: &[&[&str]] = &[
    // wire format, units, sockets: no pgward knowledge
    &["units", "secret", "net", "protocol", "eventlog", "fdlimit"],
    // what a statement is; how to reach PostgreSQL
    &["fingerprint", "upstream"],
    // who a client is (secrets, the login exchange); server connections pgward logs in itself
    // and shares between clients
    &["auth", "pool"],
    // what a DBA asked for; what may be answered from memory
    &["rules", "cache"],
    &["stats", "sessions", "limits"],
    // protected traffic and the controller that lowers the limits for it
    &["protect"],
    // the rules in force, with their reload
    &["reload"],
    // one statement's path through pgward
    &["pipeline"],
    // the admin console answered on the client listener
    &["console"],
    // the two front doors: client sessions, the admin endpoint
    &["server", "admin"],
    // pgward.toml: every module's settings together
    &["config"],
    &["error"],
    // builds everything and starts it
    &["app"],
    // the command line's checks and probes: build what app builds, without starting it
    &["check", "healthcheck"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules a source text names through `crate::`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: each entry's first segment.
            let inner = group.split('}').next().unwrap_or("");
            for entry in inner.split(',') {
                let name: String = entry
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first.as_os_str().to_string_lossy();
        let module = module.trim_end_matches(".rs");
        // The crate root and the binary sit above every layer.
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(module) else {
            unplaced.insert(module.to_owned());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            if named == module {
                continue;
            }
            match layer_of(&named) {
                Some(layer) if layer < own => {}
                Some(_) => violations.push(format!("{}: {module} -> {named}", relative.display())),
                None => {
                    unplaced.insert(named);
                }
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS: {unplaced:?}"
    );
    assert!(
        violations.is_empty(),
        "imports that point up or sideways:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_inline_paths() {
    let text = "use crate::{cache::Entry, stats};\nlet x = crate::protocol::tag::frontend::QUERY;";
    let names: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(names, ["cache", "protocol", "stats"]);
}
