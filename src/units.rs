//! Human-friendly durations ("150ms", "30s", "10m", "off") and byte sizes ("64KiB", "1GiB", or a
//! plain integer) as they appear in pgward.toml and rules.toml.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Parses "250ms", "1.5s", "30s", "10m", "2h", "1d", "500us". Bare numbers are rejected so that a
/// unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected e.g. \"150ms\", \"30s\", \"5m\"")
    })?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        "" => {
            return Err(format!(
                "duration {text:?} needs a unit (us, ms, s, m, h, d)"
            ));
        }
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use us, ms, s, m, h, d)"
            ));
        }
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses "1GiB", "64MiB", "512KiB", "1MB", "100B" or a plain integer (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected e.g. \"64MiB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "kiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use B, KiB, MiB, GiB)"
            ));
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is out of range"))
}

/// A duration read from TOML as a string like "30s".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration read from TOML as a string like "1s", or "off" for none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DurationOrOff(pub Option<Duration>);

impl<'de> Deserialize<'de> for DurationOrOff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "off" {
            return Ok(DurationOrOff(None));
        }
        parse_duration(&text)
            .map(|d| DurationOrOff(Some(d)))
            .map_err(de::Error::custom)
    }
}

impl Serialize for DurationOrOff {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(d) => s.collect_str(&HumanDuration(d)),
            None => s.serialize_str("off"),
        }
    }
}

/// A byte size read from TOML as an integer or a string like "64MiB".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).map_err(de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("ten s").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("1 parsec").is_err());
    }
}
