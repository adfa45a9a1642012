//! The segment: one archive object holding whole committed transactions as
//! pgoutput protocol-1 messages, self-describing (it carries every Relation
//! its changes refer to), zstd-compressed in checksummed blocks, with its LSN
//! and commit-time range in a fixed header. `FORMAT.md` specifies it byte by
//! byte.
//!
//! `SegmentWriter` encodes into any `std::io::Write` in bounded memory;
//! `SegmentDecoder` decodes from bytes fed to it in pieces (no I/O), and
//! `SegmentReader` wraps it around any `std::io::Read`.

mod error;
mod header;
mod reader;
mod structure;
mod writer;

pub use error::SegmentError;
pub use header::{
    SegmentHeader, BLOCK_HEADER_LEN, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_BLOCK_RAW_LEN, MAX_RECORD_LEN,
};
pub use reader::{decode_segment, Record, SegmentDecoder, SegmentReader, Step};
pub use writer::{encode_segment, FinishedSegment, RelationCache, SegmentOptions, SegmentWriter};

#[cfg(test)]
mod tests;
