//! Wall-clock helpers for the stats module: the current time as Unix
//! microseconds and an RFC 3339 (UTC, millisecond precision) formatter built
//! on a small days-to-civil-date conversion, so no date crate is needed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current wall-clock time in microseconds since the Unix epoch. A clock set
/// before 1970 reads as 0; one past year 586912 saturates.
pub(crate) fn now_micros() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

/// Converts a count of days since 1970-01-01 into a proleptic Gregorian
/// (year, month, day). Works on 400-year eras of 146 097 days, with years
/// starting on March 1st so that the leap day falls at the end of the year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March .. 11 = February
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction, so the casts are lossless.
    (year, month as u32, day as u32)
}

/// Formats Unix microseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
/// RFC 3339 UTC text for a wall-clock time.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let micros = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    rfc3339_micros(micros)
}

pub(crate) fn rfc3339_micros(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let millis = (micros % 1_000_000) / 1_000;
    // secs / 86_400 fits in i64 for every u64 input.
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3_600,
        (rem % 3_600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day in a year divisible by 400) 12:34:56.789
        assert_eq!(
            rfc3339_micros(951_827_696_789_000),
            "2000-02-29T12:34:56.789Z"
        );
        // 2024-12-31T23:59:59.999999 truncates to .999
        assert_eq!(
            rfc3339_micros(1_735_689_599_999_999),
            "2024-12-31T23:59:59.999Z"
        );
        // 2100-03-01: 2100 is not a leap year.
        assert_eq!(
            rfc3339_micros(4_107_542_400_000_000),
            "2100-03-01T00:00:00.000Z"
        );
    }

    #[test]
    fn civil_round_trips_day_by_day() {
        // Walk 1970..~2110 day by day and check the calendar advances correctly.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for d in 1..51_500 {
            let cur = civil_from_days(d);
            let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match prev.1 {
                2 if leap(prev.0) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if prev.2 < month_len {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {d}");
            prev = cur;
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_micros() > 1_577_836_800_000_000);
    }
}
