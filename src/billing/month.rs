//! `BillingMonth`: a UTC calendar month, `YYYY-MM`, the period a bill covers.
//!
//! Owns parsing, the month's instants (start inclusive, end exclusive) and day arithmetic used
//! for proration. It must not read the clock: callers pass the instant (from `Clock`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Utc};

/// A UTC calendar month between 1970-01 and 9999-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingMonth {
    /// Always the first day of the month, within the supported years.
    first_day: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonthError {
    #[error("invalid month `{input}`: expected `YYYY-MM`, e.g. `2026-03`")]
    Format { input: String },
    #[error("month `{input}` is outside 1970-01 to 9999-12")]
    OutOfRange { input: String },
}

const MIN_YEAR: i32 = 1970;
const MAX_YEAR: i32 = 9999;

// === impl BillingMonth ===

impl BillingMonth {
    pub fn new(year: i32, month: u32) -> Result<Self, MonthError> {
        let out_of_range = || MonthError::OutOfRange {
            input: format!("{year:04}-{month:02}"),
        };
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(out_of_range());
        }
        NaiveDate::from_ymd_opt(year, month, 1)
            .map(|first_day| Self { first_day })
            .ok_or_else(out_of_range)
    }

    /// Every month [`Self::parse`] takes, as `docs/openapi.json` states it: 1970-01 to 9999-12.
    pub const PATTERN: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$";

    /// Parses exactly `YYYY-MM`.
    pub fn parse(input: &str) -> Result<Self, MonthError> {
        let format = || MonthError::Format {
            input: input.chars().take(20).collect(),
        };
        let (y, m) = input.split_once('-').ok_or_else(format)?;
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(format());
        }
        let year: i32 = y.parse().map_err(|_| format())?;
        let month: u32 = m.parse().map_err(|_| format())?;
        if !(1..=12).contains(&month) {
            return Err(format());
        }
        Self::new(year, month).map_err(|_| MonthError::OutOfRange {
            input: input.to_owned(),
        })
    }

    /// The month an instant falls in (UTC).
    pub fn containing(at: DateTime<Utc>) -> Result<Self, MonthError> {
        Self::new(at.year(), at.month())
    }

    pub fn year(&self) -> i32 {
        self.first_day.year()
    }

    pub fn month(&self) -> u32 {
        self.first_day.month()
    }

    pub fn first_day(&self) -> NaiveDate {
        self.first_day
    }

    /// 00:00:00 UTC on the first day, inclusive.
    pub fn start(&self) -> DateTime<Utc> {
        self.first_day.and_time(NaiveTime::MIN).and_utc()
    }

    /// 00:00:00 UTC on the first day of the next month, exclusive.
    pub fn end(&self) -> DateTime<Utc> {
        self.first_day_after().and_time(NaiveTime::MIN).and_utc()
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start() <= at && at < self.end()
    }

    pub fn days_in_month(&self) -> u32 {
        // 28..=31, so the conversion cannot fail; 31 is a harmless fallback.
        u32::try_from((self.first_day_after() - self.first_day).num_days()).unwrap_or(31)
    }

    /// The following month, `None` after 9999-12.
    pub fn next(&self) -> Option<Self> {
        let after = self.first_day_after();
        Self::new(after.year(), after.month()).ok()
    }

    /// The preceding month, `None` before 1970-01.
    pub fn previous(&self) -> Option<Self> {
        let before = self.first_day.checked_sub_months(Months::new(1))?;
        Self::new(before.year(), before.month()).ok()
    }

    /// The first and last date of this month on which something active from `from`
    /// (inclusive) until `until` (exclusive; `None` = still active) was active at some instant
    /// (SPEC S2): a plan chosen on the 10th at 15:00 counts from the 10th; a plan replaced on
    /// the 20th at 09:00 counts up to the 20th (which its successor counts too); a plan chosen
    /// and ended on the same day counts that day. An empty interval (`until <= from`) was never
    /// active. `None` when no day of this month is covered.
    pub fn active_dates(
        &self,
        from: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Option<(NaiveDate, NaiveDate)> {
        let last_day = self.first_day_after().pred_opt()?;
        let last = match until {
            None => last_day,
            Some(u) if u <= from => return None,
            // The last instant before `until` decides its day: an end at midnight does not
            // count the day it starts.
            Some(u) => (u - chrono::Duration::milliseconds(1)).date_naive(),
        };
        let first = from.date_naive().max(self.first_day);
        let last = last.min(last_day);
        (first <= last).then_some((first, last))
    }

    /// The number of days of [`BillingMonth::active_dates`].
    pub fn active_days(&self, from: DateTime<Utc>, until: Option<DateTime<Utc>>) -> u32 {
        self.active_dates(from, until).map_or(0, |(first, last)| {
            u32::try_from((last - first).num_days() + 1).unwrap_or(0)
        })
    }

    fn first_day_after(&self) -> NaiveDate {
        // Years stop at 9999 and chrono's dates go far beyond, so this never saturates.
        self.first_day
            .checked_add_months(Months::new(1))
            .unwrap_or(NaiveDate::MAX)
    }
}

impl fmt::Display for BillingMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

impl FromStr for BillingMonth {
    type Err = MonthError;
    fn from_str(s: &str) -> Result<Self, MonthError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn month(s: &str) -> BillingMonth {
        BillingMonth::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0)
            .single()
            .unwrap_or_else(|| panic!("bad date"))
    }

    #[test]
    fn parses_and_displays_yyyy_mm() {
        assert_eq!(month("2026-03").to_string(), "2026-03");
        assert_eq!(month("2026-03").year(), 2026);
        assert_eq!(month("2026-03").month(), 3);
        for bad in [
            "2026-3",
            "2026-13",
            "2026-00",
            "26-03",
            "2026/03",
            "2026-03-01",
            "",
            "+026-03",
            "2026-0a",
        ] {
            assert!(
                matches!(BillingMonth::parse(bad), Err(MonthError::Format { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            BillingMonth::parse("1969-12"),
            Err(MonthError::OutOfRange { .. })
        ));
    }

    #[test]
    fn instants_are_utc_start_inclusive_end_exclusive() {
        let m = month("2026-12");
        assert_eq!(m.start(), at(2026, 12, 1, 0));
        assert_eq!(m.end(), at(2027, 1, 1, 0));
        assert!(m.contains(m.start()));
        assert!(!m.contains(m.end()));
        assert_eq!(m.next(), Some(month("2027-01")));
        assert_eq!(month("2027-01").previous(), Some(m));
        assert_eq!(month("9999-12").next(), None);
        assert_eq!(month("1970-01").previous(), None);
        assert_eq!(
            month("9999-12").end(),
            month("9999-12").start() + chrono::Duration::days(31)
        );
    }

    #[test]
    fn days_in_month_knows_leap_years() {
        assert_eq!(month("2024-02").days_in_month(), 29);
        assert_eq!(month("2100-02").days_in_month(), 28);
        assert_eq!(month("2000-02").days_in_month(), 29);
        assert_eq!(month("2026-04").days_in_month(), 30);
        assert_eq!(month("2026-01").days_in_month(), 31);
    }

    #[test]
    fn containing_uses_utc() {
        assert_eq!(
            BillingMonth::containing(at(2026, 3, 31, 23)),
            Ok(month("2026-03"))
        );
        assert_eq!(
            BillingMonth::containing(at(2026, 4, 1, 0)),
            Ok(month("2026-04"))
        );
    }

    #[test]
    fn s2_active_days_count_every_day_touched_and_clamp_to_the_month() {
        let m = month("2026-04"); // 30 days
        assert_eq!(m.active_days(at(2026, 4, 10, 15), None), 21);
        // Replaced on the 20th at 09:00: the 20th counts for both plans.
        assert_eq!(
            m.active_days(at(2026, 4, 10, 15), Some(at(2026, 4, 20, 9))),
            11
        );
        assert_eq!(m.active_days(at(2026, 4, 20, 9), None), 11);
        // Chosen and ended on the same day: that day counts.
        assert_eq!(
            m.active_days(at(2026, 4, 5, 9), Some(at(2026, 4, 5, 17))),
            1
        );
        // Never active.
        assert_eq!(m.active_days(at(2026, 4, 5, 9), Some(at(2026, 4, 5, 9))), 0);
        // Ended at midnight: the day it ends on is not touched.
        assert_eq!(m.active_days(at(2026, 4, 5, 9), Some(at(2026, 4, 7, 0))), 2);
        assert_eq!(m.active_days(at(2025, 1, 1, 0), None), 30);
        assert_eq!(m.active_days(at(2025, 1, 1, 0), Some(at(2026, 4, 1, 0))), 0);
        assert_eq!(m.active_days(at(2026, 5, 2, 0), None), 0);
        assert_eq!(m.active_days(at(2026, 3, 2, 0), Some(at(2026, 4, 3, 0))), 2);
        assert_eq!(m.active_days(at(2026, 3, 2, 0), Some(at(2026, 4, 3, 1))), 3);
        assert_eq!(
            m.active_dates(at(2026, 4, 5, 9), Some(at(2026, 4, 5, 17))),
            NaiveDate::from_ymd_opt(2026, 4, 5).map(|d| (d, d))
        );
    }
}
