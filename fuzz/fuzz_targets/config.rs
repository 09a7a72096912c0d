//! pgward.toml from a string: `Config::parse` (serde + toml), then `Config::validate`, which
//! includes the range checks of every numeric key. A parse error must point at a line of the
//! file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse("fuzz.toml".as_ref(), text) {
        Ok(config) => {
            if let Err(e) = config.validate() {
                let _ = e.to_string();
            }
        }
        Err(ConfigError::Parse { line, column, .. }) => {
            assert!(line >= 1 && column >= 1);
            assert!(line <= text.matches('\n').count() + 1, "line {line}");
        }
        Err(e) => panic!("parse gave a non-parse error: {e}"),
    }
});
