//! Calendar dates as the API writes them ("YYYY-MM-DD") and "today" in Japan.

use chrono::{Datelike, Duration, NaiveDate, Utc};

/// Earliest date accepted anywhere (birth dates of the oldest insured people included).
pub const MIN_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1870, 1, 1) {
    Some(date) => date,
    None => NaiveDate::MIN,
};
/// Latest date accepted anywhere.
pub const MAX_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2199, 12, 31) {
    Some(date) => date,
    None => NaiveDate::MAX,
};

/// Why a date string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not `YYYY-MM-DD`.
    #[error("must be a date \"YYYY-MM-DD\"")]
    Format,
    /// Not a calendar date.
    #[error("is not a calendar date")]
    Calendar,
    /// Outside 1870-01-01..=2199-12-31.
    #[error("must be between 1870-01-01 and 2199-12-31")]
    Range,
}

/// Parses exactly `YYYY-MM-DD`.
pub fn parse_date(input: &str) -> Result<NaiveDate, DateError> {
    let bytes = input.as_bytes();
    let shape = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape {
        return Err(DateError::Format);
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    // The year has four digits, so it fits an i32.
    let date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(DateError::Calendar)?;
    if !(MIN_DATE..=MAX_DATE).contains(&date) {
        return Err(DateError::Range);
    }
    Ok(date)
}

/// Writes `date` as `YYYY-MM-DD`, the form [`parse_date`] reads. Every answer carries a few of
/// these; chrono's `format` parses its pattern on every call and cost a tenth of a
/// FindLocations' CPU, so the digits are written directly. Years outside 0..=9999 (never
/// stored: every accepted date is within [`MIN_DATE`]..=[`MAX_DATE`]) fall back to chrono.
pub fn format_date(date: NaiveDate) -> String {
    let year = date.year();
    let Ok(year) = u32::try_from(year) else {
        return date.format("%Y-%m-%d").to_string();
    };
    if year > 9999 {
        return date.format("%Y-%m-%d").to_string();
    }
    let digit = |value: u32| char::from(b'0' + (value % 10) as u8);
    let (month, day) = (date.month(), date.day());
    [
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        '-',
        digit(month / 10),
        digit(month),
        '-',
        digit(day / 10),
        digit(day),
    ]
    .into_iter()
    .collect()
}

/// Parses an optional date: the empty string is `None`.
pub fn parse_optional_date(input: &str) -> Result<Option<NaiveDate>, DateError> {
    if input.is_empty() {
        Ok(None)
    } else {
        parse_date(input).map(Some)
    }
}

/// Today in Japan (UTC+9, no daylight saving time).
pub fn today_in_japan() -> NaiveDate {
    (Utc::now() + Duration::hours(9)).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strict_format() {
        assert_eq!(
            parse_date("2024-04-01").unwrap(),
            NaiveDate::from_ymd_opt(2024, 4, 1).unwrap()
        );
        assert_eq!(parse_date("2024-4-1"), Err(DateError::Format));
        assert_eq!(parse_date("20240401"), Err(DateError::Format));
        assert_eq!(parse_date("2023-02-29"), Err(DateError::Calendar));
        assert_eq!(parse_date("1800-01-01"), Err(DateError::Range));
        assert_eq!(parse_optional_date(""), Ok(None));
    }

    proptest! {
        #[test]
        fn formatted_dates_round_trip(days in 0i64..100_000) {
            let date = MIN_DATE + Duration::days(days);
            prop_assume!(date <= MAX_DATE);
            prop_assert_eq!(parse_date(&date.format("%Y-%m-%d").to_string()).unwrap(), date);
        }

        #[test]
        fn format_date_writes_what_chrono_writes(days in -800_000i64..4_000_000) {
            let date = NaiveDate::from_ymd_opt(1, 1, 1).unwrap() + Duration::days(days);
            prop_assert_eq!(format_date(date), date.format("%Y-%m-%d").to_string());
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,12}") {
            let _ = parse_date(&input);
        }
    }
}
