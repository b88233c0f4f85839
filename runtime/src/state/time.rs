//! Wall-clock timestamps stored in records: nanoseconds since the Unix epoch, shown as RFC 3339
//! (what `docker inspect` prints) without pulling in a date library.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time with nanosecond precision, serialised as an RFC 3339 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    unix_nanos: u128,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let unix_nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Timestamp { unix_nanos }
    }

    pub fn from_unix_nanos(unix_nanos: u128) -> Timestamp {
        Timestamp { unix_nanos }
    }

    pub fn unix_seconds(&self) -> u64 {
        (self.unix_nanos / 1_000_000_000) as u64
    }

    /// Time elapsed since this timestamp (zero if it lies in the future).
    pub fn elapsed(&self) -> Duration {
        let now = Timestamp::now().unix_nanos;
        let nanos = now.saturating_sub(self.unix_nanos);
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }

    /// `2026-11-30T12:34:56.123456789Z`
    pub fn to_rfc3339(&self) -> String {
        let secs = (self.unix_nanos / 1_000_000_000) as i64;
        let nanos = (self.unix_nanos % 1_000_000_000) as u32;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// Parses the format written by [`Timestamp::to_rfc3339`] (UTC, optional fraction).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let s = s.strip_suffix('Z')?;
        let (date, time) = s.split_once('T')?;
        let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
        let (y, m, d) = (
            date_parts.next()??,
            date_parts.next()??,
            date_parts.next()??,
        );
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
        let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
        let nanos: u128 = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            digits.parse().ok()?
        };
        let secs = days_from_civil(y, m as u32, d as u32) * 86_400 + hh * 3600 + mm * 60 + ss;
        (secs >= 0).then(|| Timestamp::from_unix_nanos(secs as u128 * 1_000_000_000 + nanos))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

// Howard Hinnant's civil-calendar algorithms (public-domain description of the proleptic
// Gregorian calendar), written out here.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            Timestamp::from_unix_nanos(0).to_rfc3339(),
            "1970-01-01T00:00:00.000000000Z"
        );
        // 2024-02-29T12:00:00.5Z, a leap day.
        let t = Timestamp::from_unix_nanos(1_709_208_000_500_000_000);
        assert_eq!(t.to_rfc3339(), "2024-02-29T12:00:00.500000000Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for nanos in [
            0u128,
            1,
            1_709_208_000_500_000_000,
            4_102_444_800_123_456_789,
        ] {
            let t = Timestamp::from_unix_nanos(nanos);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2024-02-29T12:00:00Z"),
            Some(Timestamp::from_unix_nanos(1_709_208_000_000_000_000))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
