//! The segment's fixed 96-byte header and the 16-byte block header.

use crate::{Lsn, PgTimestamp};

use super::SegmentError;

/// The first eight bytes of every segment. The CR LF catches a transfer that
/// rewrote line endings.
pub const MAGIC: [u8; 8] = *b"TDMSEG\r\n";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 96;
pub const BLOCK_HEADER_LEN: usize = 16;
/// Uncompressed bytes in one block, at most. Writers use 1 MiB by default;
/// readers accept up to this, which bounds what one block can make them
/// allocate.
pub const MAX_BLOCK_RAW_LEN: u32 = 4 << 20;
/// A record's length, at most: PostgreSQL builds each pgoutput message in one
/// buffer, which cannot exceed 1 GiB (`MaxAllocSize`).
pub const MAX_RECORD_LEN: u64 = 1 << 30;

/// What a segment's header says: readable without touching the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The source cluster's system identifier (`IDENTIFY_SYSTEM`), 0 if unknown.
    pub system_identifier: u64,
    /// Exclusive lower bound: the archive position this segment continues
    /// from (the previous segment's `end_lsn`, or a base's consistent point).
    pub start_lsn: Lsn,
    /// Inclusive upper bound: the `end_lsn` of the segment's last transaction.
    pub end_lsn: Lsn,
    /// The earliest and latest commit times of its transactions (commit times
    /// need not grow with LSN order).
    pub min_commit_time: PgTimestamp,
    pub max_commit_time: PgTimestamp,
    pub transaction_count: u32,
    pub block_count: u32,
    pub record_count: u64,
    /// Uncompressed bytes of the record stream.
    pub raw_len: u64,
    /// Bytes after the header: every block with its block header.
    pub body_len: u64,
}

impl SegmentHeader {
    /// The object's total size.
    pub fn object_len(&self) -> u64 {
        HEADER_LEN as u64 + self.body_len
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
        // 12..16: flags, all zero in version 1.
        out[16..24].copy_from_slice(&self.system_identifier.to_be_bytes());
        out[24..32].copy_from_slice(&self.start_lsn.0.to_be_bytes());
        out[32..40].copy_from_slice(&self.end_lsn.0.to_be_bytes());
        out[40..48].copy_from_slice(&self.min_commit_time.0.to_be_bytes());
        out[48..56].copy_from_slice(&self.max_commit_time.0.to_be_bytes());
        out[56..60].copy_from_slice(&self.transaction_count.to_be_bytes());
        out[60..64].copy_from_slice(&self.block_count.to_be_bytes());
        out[64..72].copy_from_slice(&self.record_count.to_be_bytes());
        out[72..80].copy_from_slice(&self.raw_len.to_be_bytes());
        out[80..88].copy_from_slice(&self.body_len.to_be_bytes());
        // 88..92: reserved, zero.
        let crc = crc32c::crc32c(&out[..92]);
        out[92..96].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a header from the start of `bytes`: `Ok(None)` while fewer
    /// than `HEADER_LEN` bytes are there, an error when they are not a valid
    /// version-1 header.
    pub fn decode(bytes: &[u8]) -> Result<Option<SegmentHeader>, SegmentError> {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            return Err(SegmentError::BadMagic);
        }
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let version = u16::from_be_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(SegmentError::UnsupportedVersion { version, supported: FORMAT_VERSION });
        }
        let expected = be_u32(&b[92..96]);
        let actual = crc32c::crc32c(&b[..92]);
        if expected != actual {
            return Err(SegmentError::HeaderChecksum { expected, actual });
        }
        let invalid = |reason| Err(SegmentError::InvalidHeader { reason });
        if usize::from(u16::from_be_bytes([b[10], b[11]])) != HEADER_LEN {
            return invalid("header length is not 96");
        }
        if b[12..16] != [0; 4] || b[88..92] != [0; 4] {
            return invalid("flags or reserved bytes are set");
        }
        let header = SegmentHeader {
            system_identifier: be_u64(&b[16..24]),
            start_lsn: Lsn(be_u64(&b[24..32])),
            end_lsn: Lsn(be_u64(&b[32..40])),
            min_commit_time: PgTimestamp(be_u64(&b[40..48]) as i64),
            max_commit_time: PgTimestamp(be_u64(&b[48..56]) as i64),
            transaction_count: be_u32(&b[56..60]),
            block_count: be_u32(&b[60..64]),
            record_count: be_u64(&b[64..72]),
            raw_len: be_u64(&b[72..80]),
            body_len: be_u64(&b[80..88]),
        };
        if header.start_lsn >= header.end_lsn {
            return invalid("start LSN is not below end LSN");
        }
        if header.min_commit_time > header.max_commit_time {
            return invalid("earliest commit time is after the latest");
        }
        if header.transaction_count == 0 || header.block_count == 0 {
            return invalid("no transaction or no block");
        }
        if header.record_count < 2 * u64::from(header.transaction_count) {
            return invalid("fewer records than a Begin and a Commit per transaction");
        }
        if header.body_len < u64::from(header.block_count) * BLOCK_HEADER_LEN as u64
            || header.raw_len > u64::from(header.block_count) * u64::from(MAX_BLOCK_RAW_LEN)
        {
            return invalid("body length does not fit the block count");
        }
        Ok(Some(header))
    }
}

/// The header in front of each compressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    pub compressed_len: u32,
    pub raw_len: u32,
    pub data_crc: u32,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut out = [0u8; BLOCK_HEADER_LEN];
        out[0..4].copy_from_slice(&self.compressed_len.to_be_bytes());
        out[4..8].copy_from_slice(&self.raw_len.to_be_bytes());
        out[8..12].copy_from_slice(&self.data_crc.to_be_bytes());
        let crc = crc32c::crc32c(&out[..12]);
        out[12..16].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes and checks the header of block number `block`.
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN], block: u32) -> Result<BlockHeader, SegmentError> {
        if crc32c::crc32c(&b[..12]) != be_u32(&b[12..16]) {
            return Err(SegmentError::BlockHeaderChecksum { block });
        }
        let header =
            BlockHeader { compressed_len: be_u32(&b[0..4]), raw_len: be_u32(&b[4..8]), data_crc: be_u32(&b[8..12]) };
        if header.compressed_len == 0 || header.raw_len == 0 {
            return Err(SegmentError::InvalidBlock { block, reason: "empty block" });
        }
        if header.raw_len > MAX_BLOCK_RAW_LEN {
            return Err(SegmentError::InvalidBlock { block, reason: "more than 4 MiB uncompressed" });
        }
        // zstd never expands incompressible data by more than a small bound.
        if header.compressed_len as usize > zstd::zstd_safe::compress_bound(header.raw_len as usize) {
            return Err(SegmentError::InvalidBlock { block, reason: "compressed length exceeds zstd's bound" });
        }
        Ok(header)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}
