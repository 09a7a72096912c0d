//! The packaging files against what pgward does: the systemd unit (reload is SIGHUP, its
//! open-file limit covers what pgward asks for, `systemd-analyze verify` where installed), the
//! Debian package metadata names files that exist, the packaged config and rules load, and the
//! LICENSE file is the license Cargo.toml declares.

use std::path::Path;
use std::process::Command;

use pgward::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `Key=value` of a unit file's line (the first with that key).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_has_the_files_it_needs() {
    let unit = read("packaging/systemd/pgward.service");
    assert_eq!(
        unit_value(&unit, "ExecReload"),
        Some("/bin/kill -HUP $MAINPID")
    );
    let limit: u64 = unit_value(&unit, "LimitNOFILE").unwrap().parse().unwrap();
    // What pgward asks at start for the packaged config, and for the largest
    // max_client_connections the unit's comment promises.
    let config = Config::load(&root().join("packaging/pgward.toml")).unwrap();
    config.validate().unwrap();
    let reserve = pgward::server::HANDSHAKE_RESERVE;
    let admin = config.admin.max_connections;
    let packaged = config.server.max_client_connections + reserve;
    assert!(pgward::fdlimit::needed(packaged, admin) <= limit);
    assert!(unit.contains("up to about 32,000"));
    assert!(pgward::fdlimit::needed(32_000 + reserve, admin) <= limit);
    assert!(pgward::fdlimit::needed(33_000 + reserve, admin) > limit);
    let rules = config
        .rules
        .expect("the packaged config names its rules file");
    pgward::rules::load_rules(&rules).unwrap();
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_where_installed() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    // verify checks that the binaries exist: point the unit at the one just built.
    let dir = std::env::temp_dir().join(format!("pgward-it-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = read("packaging/systemd/pgward.service")
        .replace("/usr/bin/pgward", env!("CARGO_BIN_EXE_pgward"));
    let path = dir.join("pgward.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // verify exits 0 even for values it ignores ("Failed to parse ..."): its stderr is the
    // verdict.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_debian_metadata_names_files_that_exist() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    let mut installed = Vec::new();
    for asset in assets {
        let source = asset[0].as_str().unwrap();
        let target = asset[1].as_str().unwrap();
        installed.push(format!("/{target}"));
        // The binary is built by `cargo deb` itself.
        if source != "target/release/pgward" {
            assert!(root().join(source).is_file(), "asset {source} is missing");
        }
    }
    for conf in deb["conf-files"].as_array().unwrap() {
        let conf = conf.as_str().unwrap();
        assert!(
            installed.iter().any(|i| i == conf),
            "{conf} is not installed"
        );
    }
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    assert!(root().join(units).join("pgward.service").is_file());
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    let postinst = std::fs::read_to_string(root().join(scripts).join("postinst")).unwrap();
    assert!(postinst.contains("#DEBHELPER#") && postinst.contains("adduser --system"));
    let unit = read("packaging/systemd/pgward.service");
    assert_eq!(unit_value(&unit, "User"), Some("pgward"));
}

#[test]
fn the_license_file_is_the_license_cargo_toml_declares() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    assert_eq!(manifest["package"]["license"].as_str(), Some("Apache-2.0"));
    let license = read("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(license.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
}
