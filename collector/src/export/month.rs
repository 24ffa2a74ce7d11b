//! A calendar month in UTC, the period of an export.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

/// A calendar month; its days run from 00:00 UTC on the first to 00:00 UTC
/// on the first of the next month, the metering view's days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    first_day: NaiveDate,
}

impl Month {
    /// The month holding this Unix time.
    pub fn of_unix(seconds: i64) -> Option<Month> {
        let day = chrono::DateTime::from_timestamp(seconds, 0)?.date_naive();
        NaiveDate::from_ymd_opt(day.year(), day.month(), 1).map(|first_day| Month { first_day })
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        self.first_day
    }

    /// The first day of the month after it.
    pub fn end_day(self) -> NaiveDate {
        let (year, month) = match self.first_day.month() {
            12 => (self.first_day.year() + 1, 1),
            m => (self.first_day.year(), m + 1),
        };
        NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MAX)
    }

    /// [start, end) in Unix seconds.
    pub fn unix_range(self) -> (i64, i64) {
        let seconds = |day: NaiveDate| day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        (seconds(self.first_day), seconds(self.end_day()))
    }
}

/// The UTC day `days` after 1970-01-01 (ClickHouse's `Date`, a Unix day).
pub fn unix_day(days: i64) -> NaiveDate {
    chrono::DateTime::UNIX_EPOCH.date_naive() + chrono::TimeDelta::days(days)
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first_day.format("%Y-%m"))
    }
}

/// Not a month in `YYYY-MM` form.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a month in the form YYYY-MM (e.g. 2026-10)")]
pub struct BadMonth(String);

impl FromStr for Month {
    type Err = BadMonth;

    fn from_str(text: &str) -> Result<Month, BadMonth> {
        let bad = || BadMonth(text.to_owned());
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        if year.len() != 4
            || month.len() != 2
            || !(year.bytes().chain(month.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        if year < 1970 {
            return Err(BadMonth(format!(
                "{text} (before 1970, when no metering exists)"
            )));
        }
        let month = month.parse().map_err(|_| bad())?;
        NaiveDate::from_ymd_opt(year, month, 1)
            .map(|first_day| Month { first_day })
            .ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // Test code: an unwrap is an assertion.
    use super::*;

    #[test]
    fn parses_only_year_dash_month() {
        let october: Month = "2026-10".parse().unwrap();
        assert_eq!(october.to_string(), "2026-10");
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-10",
            "2026/10",
            "2026-10-01",
            "",
            "abcd-ef",
            "+202-10",
            "0000-01",
            "1969-12",
        ] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_cover_whole_utc_days_and_december_rolls_over() {
        let december: Month = "2026-12".parse().unwrap();
        assert_eq!(december.end_day().to_string(), "2027-01-01");
        // 2026-12-01T00:00:00Z and 2027-01-01T00:00:00Z.
        assert_eq!(december.unix_range(), (1_796_083_200, 1_798_761_600));
        assert_eq!(Month::of_unix(1_798_761_599), Some(december));
        assert_eq!(
            Month::of_unix(1_798_761_600).unwrap().to_string(),
            "2027-01"
        );
    }
}
