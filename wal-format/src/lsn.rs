//! `Lsn`: a PostgreSQL write-ahead log position, printed and parsed as `X/Y`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in PostgreSQL's write-ahead log: a 64-bit byte offset, written
/// `X/Y` with the high and low 32 bits in upper-case hexadecimal, as
/// `pg_current_wal_lsn()` prints it.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`, PostgreSQL's `InvalidXLogRecPtr`.
    pub const ZERO: Lsn = Lsn(0);
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// Bytes of WAL from `earlier` to `self`, as `pg_wal_lsn_diff(self, earlier)`
    /// computes it; negative when `earlier` is in fact later.
    pub fn diff(self, earlier: Lsn) -> i128 {
        i128::from(self.0) - i128::from(earlier.0)
    }

    /// The number of bytes from `earlier` up to `self`, or `None` when
    /// `earlier` is later than `self`.
    pub fn checked_distance(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(value: Lsn) -> Self {
        value.0
    }
}

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {input:?}: expected two hexadecimal numbers of at most 8 digits each, as in 16/B374D848")]
pub struct LsnParseError {
    pub input: String,
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LsnParseError { input: s.to_owned() };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |part: &str| {
            let ok = !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit());
            if ok {
                u32::from_str_radix(part, 16).map_err(|_| err())
            } else {
                Err(err())
            }
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parses_what_postgres_prints_in_either_case() {
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/1a".parse::<Lsn>().unwrap(), Lsn(0x1a));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn::MAX);
    }

    #[test]
    fn rejects_what_is_not_an_lsn() {
        for bad in ["", "/", "0/", "/0", "1", "0/0/0", "100000000/0", "+1/0", "g/0", " 0/0", "0/-1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_and_measures_distance() {
        let a: Lsn = "0/FFFFFFFF".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.diff(a), 1);
        assert_eq!(a.diff(b), -1);
        assert_eq!(b.checked_distance(a), Some(1));
        assert_eq!(a.checked_distance(b), None);
    }

    #[test]
    fn serializes_as_its_text() {
        let json = serde_json::to_string(&Lsn(0x1_0000_0010)).unwrap();
        assert_eq!(json, "\"1/10\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), Lsn(0x1_0000_0010));
    }
}
