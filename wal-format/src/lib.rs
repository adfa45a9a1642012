//! tidemark's archive format, as a pure library: log positions and
//! timestamps, the pgoutput decoder, the segment codec, object keys and
//! manifests. Nothing here touches a socket or a file: it decodes from bytes
//! and encodes into buffers, and no input can make it panic.

mod keys;
mod lsn;
mod manifest;
pub mod pgoutput;
mod records;
pub mod segment;
mod timestamp;

pub use keys::{BaseKeys, KeyError, SegmentKey, ARCHIVE_MANIFEST_KEY, BASES_PREFIX, SEGMENTS_PREFIX};
pub use lsn::{Lsn, LsnParseError};
pub use manifest::{
    ArchiveManifest, BaseChunk, BaseManifest, BaseTable, ObjectRef, SegmentSummary, ARCHIVE_FORMAT_VERSION,
};
pub use records::{
    DdlRecord, MarkRecord, RecordError, SequenceRecord, SequenceValue, TidemarkRecord, DDL_PREFIX, MARK_PREFIX,
    SEQUENCE_PREFIX,
};
pub use timestamp::{PgTimestamp, TimestampError};
