//! DA, TM and DT values on one time axis, for Range Matching (PS3.4
//! C.2.2.2.5) and the single-value matching of dates and times.
//!
//! Every value becomes an [`Interval`] of microseconds: a date from day 0
//! (1970-01-01, proleptic Gregorian) at midnight, a time from midnight, a
//! date-time from the same origin with its UTC offset removed when it has
//! one. A value given at reduced precision denotes the whole interval it
//! covers (`2024` is the year, `10` the hour from 10:00:00 to
//! 10:59:59.999999), as DT's "null components" do in PS3.5 §6.2: a query key
//! `1030` matches 10:30:15. A stored value is the point where its interval
//! starts. ACR-NEMA forms (`YYYY.MM.DD`, `HH:MM:SS`) are read too, as PS3.5
//! asks of readers. Parsing does not allocate.

/// Microseconds in a second, minute, hour and day.
const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// An inclusive interval of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    /// First microsecond.
    pub start: i64,
    /// Last microsecond.
    pub end: i64,
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`). Inputs are already range-checked by the callers.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = if days >= 0 { days } else { days - 146_096 } / 146_097;
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

const fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The value of the ASCII digits `digits` (at most 18 of them).
fn number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0')),
    )
}

/// The components of a date-time, each `None` when omitted.
#[derive(Debug, Clone, Copy)]
struct Components {
    year: i64,
    month: Option<i64>,
    day: Option<i64>,
    hour: Option<i64>,
    minute: Option<i64>,
    second: Option<i64>,
    /// Fraction in microseconds and the number of digits given.
    fraction: Option<(i64, u32)>,
}

impl Components {
    fn check(&self) -> bool {
        let month_ok = self.month.is_none_or(|month| (1..=12).contains(&month));
        let day_ok = self.day.is_none_or(|day| {
            (1..=days_in_month(self.year, self.month.unwrap_or(1))).contains(&day)
        });
        month_ok
            && day_ok
            && self.hour.is_none_or(|hour| (0..=23).contains(&hour))
            && self.minute.is_none_or(|minute| (0..=59).contains(&minute))
            // 60: a leap second.
            && self.second.is_none_or(|second| (0..=60).contains(&second))
    }

    /// The interval the components cover, on the common axis.
    fn interval(&self) -> Interval {
        let month = self.month.unwrap_or(1);
        let day = self.day.unwrap_or(1);
        let start = days_from_civil(self.year, month, day) * MICROS_PER_DAY
            + self.hour.unwrap_or(0) * MICROS_PER_HOUR
            + self.minute.unwrap_or(0) * MICROS_PER_MINUTE
            + self.second.unwrap_or(0) * MICROS_PER_SECOND
            + self.fraction.map_or(0, |(micros, _)| micros);
        // The first microsecond after the interval, from the finest component given.
        let next = if let Some((_, digits)) = self.fraction {
            start + 10i64.pow(6u32.saturating_sub(digits))
        } else if self.second.is_some() {
            start + MICROS_PER_SECOND
        } else if self.minute.is_some() {
            start + MICROS_PER_MINUTE
        } else if self.hour.is_some() {
            start + MICROS_PER_HOUR
        } else if self.day.is_some() {
            start + MICROS_PER_DAY
        } else if self.month.is_some() {
            let (year, month) = if month == 12 {
                (self.year + 1, 1)
            } else {
                (self.year, month + 1)
            };
            days_from_civil(year, month, 1) * MICROS_PER_DAY
        } else {
            days_from_civil(self.year + 1, 1, 1) * MICROS_PER_DAY
        };
        Interval {
            start,
            end: next - 1,
        }
    }
}

/// Parses `HH[MM[SS[.F{1,6}]]]` (digits only) into hour, minute, second,
/// fraction.
#[allow(clippy::type_complexity)]
fn parse_clock(text: &str) -> Option<(i64, Option<i64>, Option<i64>, Option<(i64, u32)>)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let bytes = whole.as_bytes();
    let (hour, minute, second) = match bytes {
        [h1, h2] => (number(&[*h1, *h2])?, None, None),
        [h1, h2, m1, m2] => (number(&[*h1, *h2])?, Some(number(&[*m1, *m2])?), None),
        [h1, h2, m1, m2, s1, s2] => (
            number(&[*h1, *h2])?,
            Some(number(&[*m1, *m2])?),
            Some(number(&[*s1, *s2])?),
        ),
        _ => return None,
    };
    let fraction = match fraction {
        None => None,
        Some(digits) => {
            // A fraction needs whole seconds before it and 1 to 6 digits.
            if second.is_none() || digits.is_empty() || digits.len() > 6 {
                return None;
            }
            let count = u32::try_from(digits.len()).ok()?;
            let value = number(digits.as_bytes())?;
            Some((value * 10i64.pow(6 - count), count))
        }
    };
    Some((hour, minute, second, fraction))
}

/// A DA value: `YYYYMMDD`, or ACR-NEMA `YYYY.MM.DD`.
pub fn date(text: &str) -> Option<Interval> {
    let bytes = text.as_bytes();
    let (year, month, day) = match bytes {
        [y1, y2, y3, y4, m1, m2, d1, d2] => ([*y1, *y2, *y3, *y4], [*m1, *m2], [*d1, *d2]),
        [y1, y2, y3, y4, b'.', m1, m2, b'.', d1, d2] => {
            ([*y1, *y2, *y3, *y4], [*m1, *m2], [*d1, *d2])
        }
        _ => return None,
    };
    let components = Components {
        year: number(&year)?,
        month: Some(number(&month)?),
        day: Some(number(&day)?),
        hour: None,
        minute: None,
        second: None,
        fraction: None,
    };
    components.check().then(|| components.interval())
}

/// A TM value: `HH`, `HHMM`, `HHMMSS`, `HHMMSS.F{1,6}`, or ACR-NEMA
/// `HH:MM[:SS[.F]]`. Microseconds since midnight.
pub fn time(text: &str) -> Option<Interval> {
    // ACR-NEMA: two-digit groups separated by colons, copied without them.
    let mut compact = [0u8; 16];
    let text = if text.contains(':') {
        let (clock, fraction) = match text.split_once('.') {
            Some((clock, fraction)) => (clock, Some(fraction)),
            None => (text, None),
        };
        let mut length = 0usize;
        for (index, group) in clock.split(':').enumerate() {
            if index > 2 || group.len() != 2 {
                return None;
            }
            compact
                .get_mut(length..length + 2)?
                .copy_from_slice(group.as_bytes());
            length += 2;
        }
        if let Some(fraction) = fraction {
            let fraction = fraction.as_bytes();
            *compact.get_mut(length)? = b'.';
            length += 1;
            compact
                .get_mut(length..length.checked_add(fraction.len())?)?
                .copy_from_slice(fraction);
            length += fraction.len();
        }
        std::str::from_utf8(compact.get(..length)?).ok()?
    } else {
        text
    };
    let (hour, minute, second, fraction) = parse_clock(text)?;
    let components = Components {
        // A fixed day: day 0 of the axis is 1970-01-01.
        year: 1970,
        month: Some(1),
        day: Some(1),
        hour: Some(hour),
        minute,
        second,
        fraction,
    };
    components.check().then(|| components.interval())
}

/// A DT value: `YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]`, the offset from
/// UTC removed when present.
pub fn datetime(text: &str) -> Option<Interval> {
    let (value, offset_micros) = match text
        .char_indices()
        .find(|(at, character)| *at >= 4 && (*character == '+' || *character == '-'))
    {
        Some((at, sign)) => {
            let value = text.get(..at)?;
            let offset = text.get(at.saturating_add(1)..)?.as_bytes();
            let (hours, minutes) = match offset {
                [h1, h2, m1, m2] => (number(&[*h1, *h2])?, number(&[*m1, *m2])?),
                _ => return None,
            };
            // PS3.5: offsets run from -1200 to +1400.
            let signed = if sign == '-' { -1 } else { 1 } * (hours * 60 + minutes);
            if !(-12 * 60..=14 * 60).contains(&signed) || minutes > 59 {
                return None;
            }
            (value, signed * MICROS_PER_MINUTE)
        }
        None => (text, 0),
    };
    let whole = value.split_once('.').map_or(value, |(whole, _)| whole);
    let digits = whole.as_bytes();
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return None;
    }
    if digits.len() != 14 && whole.len() != value.len() {
        // A fraction needs every component before it.
        return None;
    }
    let part = |range: std::ops::Range<usize>| digits.get(range).and_then(number);
    // The clock (and fraction) follow the date: "HH[MM[SS[.F]]]".
    let (hour, minute, second, fraction) = match value.get(8..) {
        Some(clock) if !clock.is_empty() => {
            let (hour, minute, second, fraction) = parse_clock(clock)?;
            (Some(hour), minute, second, fraction)
        }
        _ => (None, None, None, None),
    };
    let components = Components {
        year: part(0..4)?,
        month: if digits.len() >= 6 {
            Some(part(4..6)?)
        } else {
            None
        },
        day: if digits.len() >= 8 {
            Some(part(6..8)?)
        } else {
            None
        },
        hour,
        minute,
        second,
        fraction,
    };
    if !components.check() {
        return None;
    }
    let interval = components.interval();
    Some(Interval {
        start: interval.start - offset_micros,
        end: interval.end - offset_micros,
    })
}

/// `YYYYMMDD` of the day holding `micros`.
pub fn format_date(micros: i64) -> String {
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    format!("{year:04}{month:02}{day:02}")
}

/// `HHMMSS.FFFFFF` of the time of day of `micros`.
pub fn format_time(micros: i64) -> String {
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    format!(
        "{:02}{:02}{:02}.{:06}",
        of_day / MICROS_PER_HOUR,
        of_day % MICROS_PER_HOUR / MICROS_PER_MINUTE,
        of_day % MICROS_PER_MINUTE / MICROS_PER_SECOND,
        of_day % MICROS_PER_SECOND
    )
}

/// `YYYYMMDDHHMMSS.FFFFFF` (UTC where the value had an offset).
pub fn format_datetime(micros: i64) -> String {
    let date = format_date(micros);
    let time = format_time(micros);
    format!("{date}{time}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    #[test]
    fn civil_days_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in (-800_000..800_000).step_by(997) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[test]
    fn dates() {
        let day = days_from_civil(2024, 1, 15) * DAY;
        assert_eq!(
            date("20240115"),
            Some(Interval {
                start: day,
                end: day + DAY - 1
            })
        );
        assert_eq!(date("2024.01.15"), date("20240115"));
        assert_eq!(
            date("20240229").map(|i| i.start),
            Some(days_from_civil(2024, 2, 29) * DAY)
        );
        for bad in [
            "20230229",
            "20241301",
            "20240100",
            "2024011",
            "2024-01-15",
            "",
            "abcdefgh",
        ] {
            assert_eq!(date(bad), None, "{bad}");
        }
        assert_eq!(format_date(day), "20240115");
    }

    #[test]
    fn times_cover_their_precision() {
        let hour = |h: i64| h * MICROS_PER_HOUR;
        assert_eq!(
            time("10"),
            Some(Interval {
                start: hour(10),
                end: hour(11) - 1
            })
        );
        assert_eq!(
            time("1030").map(|i| i.end),
            Some(hour(10) + 31 * MICROS_PER_MINUTE - 1)
        );
        assert_eq!(
            time("103015.5").map(|i| i.start),
            Some(hour(10) + 30 * MICROS_PER_MINUTE + 15_500_000)
        );
        assert_eq!(time("103015.5").map(|i| i.end - i.start), Some(99_999));
        assert_eq!(time("10:30:15"), time("103015"));
        assert_eq!(time("10:30"), time("1030"));
        assert_eq!(time("235960").map(|i| i.start), Some(DAY));
        for bad in [
            "1",
            "240000",
            "1060",
            "106061",
            "1030.5",
            "103015.1234567",
            "10:3",
            "ab",
        ] {
            assert_eq!(time(bad), None, "{bad}");
        }
        assert_eq!(
            format_time(hour(9) + 30 * MICROS_PER_MINUTE),
            "093000.000000"
        );
    }

    #[test]
    fn datetimes_with_reduced_precision_and_offsets() {
        let year_2024 = days_from_civil(2024, 1, 1) * DAY;
        let year_2025 = days_from_civil(2025, 1, 1) * DAY;
        assert_eq!(
            datetime("2024"),
            Some(Interval {
                start: year_2024,
                end: year_2025 - 1
            })
        );
        assert_eq!(datetime("202412").map(|i| i.end), Some(year_2025 - 1));
        assert_eq!(
            datetime("202402").map(|i| i.end + 1),
            Some(days_from_civil(2024, 3, 1) * DAY)
        );
        // Noon in UTC+0100 is 11:00 UTC.
        assert_eq!(
            datetime("20240101120000+0100").map(|i| i.start),
            datetime("20240101110000").map(|i| i.start)
        );
        assert_eq!(
            datetime("20240101120000.25-0500").map(|i| i.start),
            datetime("20240101170000.25").map(|i| i.start)
        );
        for bad in [
            "202",
            "2024011",
            "20240101120000.",
            "20240101+2500",
            "2024010112.5",
            "20241301",
        ] {
            assert_eq!(datetime(bad), None, "{bad}");
        }
        assert_eq!(
            format_datetime(year_2024 + MICROS_PER_HOUR),
            "20240101010000.000000"
        );
    }
}
