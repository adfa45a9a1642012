//! The archive's JSON manifests: its identity, each base's contents, and the
//! summary of a segment that listings print.

use serde::{Deserialize, Serialize};

use crate::segment::SegmentHeader;
use crate::{Lsn, PgTimestamp, SegmentKey};

/// The version of the archive layout that `archive.json` declares.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;

/// `archive.json`: which database an archive belongs to. Written once, when
/// the archive is created; an agent refuses to write into an archive of
/// another cluster or database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveManifest {
    pub format_version: u32,
    /// PostgreSQL's system identifier, as text (it does not fit a JSON number).
    pub system_identifier: String,
    pub database: String,
    pub server_version: String,
    pub slot_name: String,
    pub publication: String,
    pub created_at: PgTimestamp,
}

/// A stored object with what is needed to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub key: String,
    /// Stored (compressed) size.
    pub bytes: u64,
    /// CRC32C of the stored bytes.
    pub crc32c: u32,
}

/// One chunk of a table's COPY output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseChunk {
    pub object: ObjectRef,
    pub rows: u64,
    /// Uncompressed COPY bytes.
    pub raw_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseTable {
    pub schema: String,
    pub name: String,
    /// The table's OID in the source, which names its chunks.
    pub oid: u32,
    /// Excluded tables keep their schema and lose their data.
    pub excluded: bool,
    pub chunks: Vec<BaseChunk>,
}

/// `bases/{lsn}/manifest.json`: written last, so that a base without one is
/// incomplete and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseManifest {
    pub format_version: u32,
    pub system_identifier: String,
    /// The exported snapshot's consistent point: the base holds every
    /// transaction with `end_lsn` at or below it, the stream the rest.
    pub consistent_lsn: Lsn,
    pub started_at: PgTimestamp,
    pub completed_at: PgTimestamp,
    pub server_version: String,
    pub pg_dump_version: String,
    pub schema: ObjectRef,
    pub tables: Vec<BaseTable>,
}

/// What a listing shows of a segment: its key and header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSummary {
    pub key: String,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub min_commit_time: PgTimestamp,
    pub max_commit_time: PgTimestamp,
    pub transactions: u32,
    pub records: u64,
    pub bytes: u64,
    pub raw_bytes: u64,
}

impl SegmentSummary {
    pub fn from_header(header: &SegmentHeader) -> Self {
        SegmentSummary {
            key: SegmentKey::new(header.start_lsn, header.end_lsn).to_string(),
            start_lsn: header.start_lsn,
            end_lsn: header.end_lsn,
            min_commit_time: header.min_commit_time,
            max_commit_time: header.max_commit_time,
            transactions: header.transaction_count,
            records: header.record_count,
            bytes: header.object_len(),
            raw_bytes: header.raw_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_manifest_round_trips_through_json() {
        let manifest = BaseManifest {
            format_version: ARCHIVE_FORMAT_VERSION,
            system_identifier: "7441234567890123456".into(),
            consistent_lsn: "0/1A2B3C4".parse().unwrap(),
            started_at: PgTimestamp(848_219_400_000_000),
            completed_at: PgTimestamp(848_219_460_000_000),
            server_version: "15.18".into(),
            pg_dump_version: "15.18".into(),
            schema: ObjectRef { key: "bases/0000000001A2B3C4/schema.sql.zst".into(), bytes: 10, crc32c: 7 },
            tables: vec![BaseTable {
                schema: "public".into(),
                name: "e2e_one_time_keys_json".into(),
                oid: 16400,
                excluded: true,
                chunks: vec![],
            }],
        };
        let json = serde_json::to_string_pretty(&manifest).unwrap();
        assert!(json.contains("\"consistent_lsn\": \"0/1A2B3C4\""), "{json}");
        assert_eq!(serde_json::from_str::<BaseManifest>(&json).unwrap(), manifest);
    }
}
