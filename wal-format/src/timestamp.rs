//! `PgTimestamp`: PostgreSQL's `timestamptz` as it travels in the replication
//! protocol, microseconds since 2000-01-01 00:00:00 UTC.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 UTC.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL timestamp: microseconds since 2000-01-01 00:00:00 UTC.
/// `i64::MAX` and `i64::MIN` are PostgreSQL's `infinity` and `-infinity`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

/// Why a time cannot be represented or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("invalid time {input:?}: expected RFC 3339, as in 2026-11-24T08:30:00Z or 2026-11-24T09:30:00.25+01:00")]
    Parse { input: String },
    #[error("time {micros} µs from 2000-01-01 is outside the range tidemark can print")]
    OutOfRange { micros: i64 },
}

impl PgTimestamp {
    pub const POSITIVE_INFINITY: PgTimestamp = PgTimestamp(i64::MAX);
    pub const NEGATIVE_INFINITY: PgTimestamp = PgTimestamp(i64::MIN);

    /// From microseconds since the Unix epoch; `None` on overflow.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        micros.checked_sub(PG_EPOCH_UNIX_MICROS).map(PgTimestamp)
    }

    /// Microseconds since the Unix epoch; `None` on overflow.
    pub fn to_unix_micros(self) -> Option<i64> {
        self.0.checked_add(PG_EPOCH_UNIX_MICROS)
    }

    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now()).unwrap_or(PgTimestamp::POSITIVE_INFINITY)
    }

    pub fn from_system_time(t: SystemTime) -> Option<Self> {
        let unix = match t.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).ok()?,
            Err(before) => i64::try_from(before.duration().as_micros()).ok()?.checked_neg()?,
        };
        Self::from_unix_micros(unix)
    }

    pub fn to_system_time(self) -> Option<SystemTime> {
        let unix = self.to_unix_micros()?;
        let magnitude = Duration::from_micros(unix.unsigned_abs());
        if unix >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    pub fn to_offset_date_time(self) -> Result<OffsetDateTime, TimestampError> {
        let out_of_range = || TimestampError::OutOfRange { micros: self.0 };
        let nanos = i128::from(self.to_unix_micros().ok_or_else(out_of_range)?) * 1000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| out_of_range())
    }

    /// RFC 3339 in UTC with microseconds, as in `2026-11-24T08:30:00.123456Z`.
    pub fn to_rfc3339(self) -> Result<String, TimestampError> {
        self.to_offset_date_time()?.format(&Rfc3339).map_err(|_| TimestampError::OutOfRange { micros: self.0 })
    }

    /// Parses RFC 3339 with any offset; precision beyond microseconds is
    /// truncated.
    pub fn parse_rfc3339(input: &str) -> Result<Self, TimestampError> {
        let parse_err = || TimestampError::Parse { input: input.to_owned() };
        let t = OffsetDateTime::parse(input.trim(), &Rfc3339).map_err(|_| parse_err())?;
        let micros = i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).map_err(|_| parse_err())?;
        Self::from_unix_micros(micros).ok_or_else(parse_err)
    }
}

impl fmt::Display for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PgTimestamp::POSITIVE_INFINITY => f.write_str("infinity"),
            PgTimestamp::NEGATIVE_INFINITY => f.write_str("-infinity"),
            t => match t.to_rfc3339() {
                Ok(text) => f.write_str(&text),
                Err(_) => write!(f, "{} µs since 2000-01-01", t.0),
            },
        }
    }
}

impl fmt::Debug for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTimestamp({self})")
    }
}

/// Manifests carry timestamps as RFC 3339 text, readable by people and `jq`.
impl Serialize for PgTimestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.to_rfc3339().map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for PgTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PgTimestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_the_postgres_epoch() {
        assert_eq!(PgTimestamp(0).to_rfc3339().unwrap(), "2000-01-01T00:00:00Z");
        assert_eq!(PgTimestamp(0).to_unix_micros(), Some(946_684_800_000_000));
    }

    #[test]
    fn round_trips_through_rfc3339_with_microseconds() {
        let t = PgTimestamp(848_219_400_123_456);
        let text = t.to_rfc3339().unwrap();
        assert_eq!(text, "2026-11-17T08:30:00.123456Z");
        assert_eq!(PgTimestamp::parse_rfc3339(&text).unwrap(), t);
    }

    #[test]
    fn parses_offsets_and_truncates_nanoseconds() {
        let utc = PgTimestamp::parse_rfc3339("2026-11-24T08:30:00Z").unwrap();
        let cet = PgTimestamp::parse_rfc3339("2026-11-24T09:30:00.0000009+01:00").unwrap();
        assert_eq!(utc, cet);
        let before_epoch = PgTimestamp::parse_rfc3339("1999-12-31T23:59:59.9999995Z").unwrap();
        assert_eq!(before_epoch, PgTimestamp(-1));
    }

    #[test]
    fn rejects_times_that_are_not_rfc3339() {
        for bad in ["", "yesterday", "2026-11-24", "2026-11-24 08:30:00", "2026-13-01T00:00:00Z"] {
            assert!(PgTimestamp::parse_rfc3339(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn extreme_values_never_panic() {
        for raw in [i64::MIN, i64::MIN + 1, -1, i64::MAX - 1, i64::MAX] {
            let t = PgTimestamp(raw);
            let _ = t.to_string();
            let _ = t.to_system_time();
            let _ = t.to_rfc3339();
        }
        assert_eq!(PgTimestamp::POSITIVE_INFINITY.to_string(), "infinity");
    }

    #[test]
    fn converts_to_and_from_system_time() {
        let now = PgTimestamp::now();
        assert_eq!(PgTimestamp::from_system_time(now.to_system_time().unwrap()), Some(now));
    }
}
