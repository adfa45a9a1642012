//! The archive's object-key layout. Keys are relative to the archive's root
//! (a directory or an S3 prefix); LSNs are written as 16 upper-case hex
//! digits so that keys sort in LSN order and a gap shows in a listing
//! without opening any object.
//!
//! ```text
//! archive.json                                    ArchiveManifest
//! bases/{lsn:016X}/manifest.json                  BaseManifest, written last
//! bases/{lsn:016X}/schema.sql.zst                 pg_dump --schema-only
//! bases/{lsn:016X}/data/{oid:010}-{chunk:06}.copy.zst
//! segments/{start:016X}-{end:016X}.seg            (start, end] of end_lsn
//! ```

use std::fmt;

use crate::pgoutput::Oid;
use crate::Lsn;

pub const ARCHIVE_MANIFEST_KEY: &str = "archive.json";
pub const SEGMENTS_PREFIX: &str = "segments/";
pub const BASES_PREFIX: &str = "bases/";
const SEGMENT_SUFFIX: &str = ".seg";

/// Why a key is not one of the archive's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{key:?} is not a segment key (expected segments/<16 hex digits>-<16 hex digits>.seg)")]
    NotASegment { key: String },
    #[error("{key:?} is not a base key (expected bases/<16 hex digits>/...)")]
    NotABase { key: String },
    #[error("segment key {key:?} has an empty or reversed LSN range")]
    EmptyRange { key: String },
}

/// A segment's key: it holds the transactions whose `end_lsn` lies in
/// `(start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    pub start: Lsn,
    pub end: Lsn,
}

impl SegmentKey {
    pub fn new(start: Lsn, end: Lsn) -> Self {
        SegmentKey { start, end }
    }

    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let not_a_segment = || KeyError::NotASegment { key: key.to_owned() };
        let name =
            key.strip_prefix(SEGMENTS_PREFIX).and_then(|k| k.strip_suffix(SEGMENT_SUFFIX)).ok_or_else(not_a_segment)?;
        let (start, end) = name.split_once('-').ok_or_else(not_a_segment)?;
        let start = parse_hex16(start).ok_or_else(not_a_segment)?;
        let end = parse_hex16(end).ok_or_else(not_a_segment)?;
        if start >= end {
            return Err(KeyError::EmptyRange { key: key.to_owned() });
        }
        Ok(SegmentKey { start, end })
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SEGMENTS_PREFIX}{:016X}-{:016X}{SEGMENT_SUFFIX}", self.start.0, self.end.0)
    }
}

/// The keys of one base, named by its consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BaseKeys {
    pub consistent_lsn: Lsn,
}

impl BaseKeys {
    pub fn new(consistent_lsn: Lsn) -> Self {
        BaseKeys { consistent_lsn }
    }

    /// The base a key belongs to.
    pub fn of_key(key: &str) -> Result<Self, KeyError> {
        let lsn = key
            .strip_prefix(BASES_PREFIX)
            .and_then(|k| k.get(..16).filter(|_| k.as_bytes().get(16) == Some(&b'/')))
            .and_then(parse_hex16)
            .ok_or_else(|| KeyError::NotABase { key: key.to_owned() })?;
        Ok(BaseKeys { consistent_lsn: lsn })
    }

    pub fn prefix(&self) -> String {
        format!("{BASES_PREFIX}{:016X}/", self.consistent_lsn.0)
    }

    pub fn manifest(&self) -> String {
        format!("{}manifest.json", self.prefix())
    }

    pub fn schema(&self) -> String {
        format!("{}schema.sql.zst", self.prefix())
    }

    pub fn table_chunk(&self, table: Oid, chunk: u32) -> String {
        format!("{}data/{table:010}-{chunk:06}.copy.zst", self.prefix())
    }
}

fn parse_hex16(s: &str) -> Option<Lsn> {
    if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        u64::from_str_radix(s, 16).ok().map(Lsn)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_round_trip_and_sort_in_lsn_order() {
        let a = SegmentKey::new(Lsn(0x9), Lsn(0x10));
        let b = SegmentKey::new(Lsn(0x10), Lsn(0x1_0000_0000));
        assert_eq!(a.to_string(), "segments/0000000000000009-0000000000000010.seg");
        assert_eq!(SegmentKey::parse(&b.to_string()).unwrap(), b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn rejects_keys_that_are_not_segments() {
        for bad in [
            "segments/0000000000000009-0000000000000010",
            "segments/000000000000009-0000000000000010.seg",
            "segments/0000000000000009-000000000000001a.seg",
            "bases/0000000000000009/manifest.json",
            "segments/0000000000000010-0000000000000010.seg",
        ] {
            assert!(SegmentKey::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn base_keys_live_under_their_consistent_point() {
        let base = BaseKeys::new(Lsn(0x16_B374_D848));
        assert_eq!(base.manifest(), "bases/00000016B374D848/manifest.json");
        assert_eq!(base.table_chunk(16384, 2), "bases/00000016B374D848/data/0000016384-000002.copy.zst");
        assert_eq!(BaseKeys::of_key(&base.schema()).unwrap(), base);
        assert!(BaseKeys::of_key("bases/00000016B374D848").is_err());
    }
}
