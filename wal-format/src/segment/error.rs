//! `SegmentError`: everything that can be wrong with a segment, with the
//! block or record where it was found.

use crate::pgoutput::{DecodeError, EncodeError, Oid};
use crate::Lsn;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("not a tidemark segment: the first bytes are not the segment magic")]
    BadMagic,
    #[error("segment format version {version} is not supported by this tidemark (it reads version {supported})")]
    UnsupportedVersion { version: u16, supported: u16 },
    #[error("segment header is corrupt: checksum 0x{actual:08x}, header says 0x{expected:08x}")]
    HeaderChecksum { expected: u32, actual: u32 },
    #[error("segment header is invalid: {reason}")]
    InvalidHeader { reason: &'static str },
    #[error("segment ends early: {missing} more bytes expected")]
    Truncated { missing: u64 },
    #[error("segment has bytes after its last block")]
    TrailingBytes,
    #[error("segment block {block} is corrupt: its header checksum does not match")]
    BlockHeaderChecksum { block: u32 },
    #[error("segment block {block} is corrupt: its data checksum does not match")]
    BlockChecksum { block: u32 },
    #[error("segment block {block} is invalid: {reason}")]
    InvalidBlock { block: u32, reason: &'static str },
    #[error("segment block {block} does not decompress: {message}")]
    Decompress { block: u32, message: String },
    #[error("segment record {record} declares {len} bytes, more than the {max} a record may have")]
    RecordTooLarge { record: u64, len: u64, max: u64 },
    #[error("segment record {record} is not a valid pgoutput message")]
    Record {
        record: u64,
        #[source]
        source: DecodeError,
    },
    #[error("segment record {record} is a {:?} message, which segments do not hold", char::from(*tag))]
    UnexpectedMessage { record: u64, tag: u8 },
    #[error("segment record {record}: {reason}")]
    Structure { record: u64, reason: &'static str },
    #[error("segment record {record} refers to relation {relation_id}, whose Relation message the segment does not carry before it")]
    UnknownRelation { record: u64, relation_id: Oid },
    #[error("segment record {record} has {actual} columns for relation {relation_id}, which has {expected}")]
    ColumnCount { record: u64, relation_id: Oid, expected: usize, actual: usize },
    #[error("segment record {record}: transaction end {end_lsn} is not after {previous}")]
    EndLsnOrder { record: u64, end_lsn: Lsn, previous: Lsn },
    #[error("segment holds no transaction; an empty segment is never written")]
    Empty,
    #[error("segment ends inside a transaction")]
    OpenTransaction,
    #[error("segment header says {field} is {header}, but the body has {actual}")]
    HeaderMismatch { field: &'static str, header: String, actual: String },
    #[error("cannot encode a message into the segment")]
    Encode(#[from] EncodeError),
    #[error("segment I/O failed")]
    Io(#[from] std::io::Error),
}
