//! `SegmentWriter`: encodes whole transactions into a segment body, block by
//! block, into any `Write`, holding at most one block in memory.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use bytes::{Bytes, BytesMut};

use crate::pgoutput::{decode_message, DecodeOptions, Message, Oid, Relation};
use crate::Lsn;

use super::header::{BlockHeader, SegmentHeader, HEADER_LEN, MAX_BLOCK_RAW_LEN, MAX_RECORD_LEN};
use super::structure::Structure;
use super::SegmentError;

/// How to write one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOptions {
    pub system_identifier: u64,
    /// The archive position this segment continues from: every transaction
    /// in it must end after this.
    pub start_lsn: Lsn,
    /// Uncompressed bytes per block, 4 KiB to 4 MiB.
    pub block_size: usize,
    /// zstd level; 3 is zstd's default and keeps encoding far above what a
    /// walsender can deliver.
    pub compression_level: i32,
}

impl SegmentOptions {
    pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
    pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

    pub fn new(system_identifier: u64, start_lsn: Lsn) -> Self {
        SegmentOptions {
            system_identifier,
            start_lsn,
            block_size: Self::DEFAULT_BLOCK_SIZE,
            compression_level: Self::DEFAULT_COMPRESSION_LEVEL,
        }
    }
}

/// The latest Relation and Type messages seen, kept across segments so that
/// each segment can carry the ones its changes refer to.
#[derive(Debug, Clone, Default)]
pub struct RelationCache {
    relations: HashMap<Oid, (Bytes, Relation)>,
    types: HashMap<Oid, Bytes>,
}

impl RelationCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn relation(&self, id: Oid) -> Option<&Relation> {
        self.relations.get(&id).map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}

/// A finished segment: write `header.encode()` and then the body in `sink`.
#[derive(Debug)]
pub struct FinishedSegment<W> {
    pub header: SegmentHeader,
    pub sink: W,
    pub relations: RelationCache,
}

/// Writes one segment's body into `sink`. Push the messages of whole
/// transactions, in commit order, as pgoutput protocol-1 messages; the writer
/// adds the Relation (and Type) messages each segment must carry.
pub struct SegmentWriter<W: Write> {
    sink: W,
    options: SegmentOptions,
    compressor: zstd::bulk::Compressor<'static>,
    block: Vec<u8>,
    compressed: Vec<u8>,
    structure: Structure,
    cache: RelationCache,
    types_written: HashSet<Oid>,
    block_count: u32,
    raw_len: u64,
    body_len: u64,
}

impl<W: Write> SegmentWriter<W> {
    pub fn new(sink: W, options: SegmentOptions, cache: RelationCache) -> Result<Self, SegmentError> {
        let options =
            SegmentOptions { block_size: options.block_size.clamp(4096, MAX_BLOCK_RAW_LEN as usize), ..options };
        Ok(SegmentWriter {
            sink,
            compressor: zstd::bulk::Compressor::new(options.compression_level)?,
            block: Vec::with_capacity(options.block_size),
            compressed: Vec::with_capacity(zstd::zstd_safe::compress_bound(options.block_size)),
            structure: Structure::new(options.start_lsn),
            options,
            cache,
            types_written: HashSet::new(),
            block_count: 0,
            raw_len: 0,
            body_len: 0,
        })
    }

    /// Appends one pgoutput protocol-1 message, as the walsender sent it.
    pub fn push(&mut self, raw: Bytes) -> Result<(), SegmentError> {
        let message = decode_message(raw.clone(), &DecodeOptions::v1(), false)
            .map_err(|source| SegmentError::Record { record: self.records(), source })?;
        self.push_decoded(raw, &message)
    }

    /// Appends a message, encoding it first. A message of a streamed
    /// transaction is stored without its stream transaction id.
    pub fn push_message(&mut self, message: &Message) -> Result<(), SegmentError> {
        let plain;
        let message = if message.stream_xid().is_some() {
            plain = message.clone().without_stream_xid();
            &plain
        } else {
            message
        };
        let mut buf = BytesMut::new();
        message.encode(&mut buf)?;
        self.push_decoded(buf.freeze(), message)
    }

    fn push_decoded(&mut self, raw: Bytes, message: &Message) -> Result<(), SegmentError> {
        for &relation_id in message.relation_ids() {
            if !self.structure.declares(relation_id) {
                self.write_cached_relation(relation_id)?;
            }
        }
        self.structure.check(message)?;
        match message {
            Message::Relation(relation) => {
                self.write_types_of(relation)?;
                self.cache.relations.insert(relation.id, (raw.clone(), relation.clone()));
            }
            Message::Type(t) => {
                self.cache.types.insert(t.id, raw.clone());
                self.types_written.insert(t.id);
            }
            _ => {}
        }
        self.write_record(&raw)
    }

    /// Writes the cached Relation message of `relation_id`, for a change that
    /// refers to a table whose Relation came in an earlier segment.
    fn write_cached_relation(&mut self, relation_id: Oid) -> Result<(), SegmentError> {
        let record = self.records();
        let (raw, relation) = self
            .cache
            .relations
            .get(&relation_id)
            .cloned()
            .ok_or(SegmentError::UnknownRelation { record, relation_id })?;
        self.write_types_of(&relation)?;
        self.structure.check(&Message::Relation(relation))?;
        self.write_record(&raw)
    }

    /// Writes the cached Type messages a Relation's columns refer to.
    fn write_types_of(&mut self, relation: &Relation) -> Result<(), SegmentError> {
        for column in &relation.columns {
            if self.types_written.contains(&column.type_oid) {
                continue;
            }
            if let Some(raw) = self.cache.types.get(&column.type_oid).cloned() {
                let message = decode_message(raw.clone(), &DecodeOptions::v1(), false)
                    .map_err(|source| SegmentError::Record { record: self.records(), source })?;
                self.structure.check(&message)?;
                self.types_written.insert(column.type_oid);
                self.write_record(&raw)?;
            }
        }
        Ok(())
    }

    fn records(&self) -> u64 {
        self.structure.records()
    }

    fn write_record(&mut self, raw: &[u8]) -> Result<(), SegmentError> {
        let len = raw.len() as u64;
        if len > MAX_RECORD_LEN {
            return Err(SegmentError::RecordTooLarge { record: self.records(), len, max: MAX_RECORD_LEN });
        }
        self.append(&(len as u32).to_be_bytes())?;
        self.append(raw)
    }

    fn append(&mut self, mut bytes: &[u8]) -> Result<(), SegmentError> {
        while !bytes.is_empty() {
            let room = self.options.block_size - self.block.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.block.extend_from_slice(now);
            bytes = later;
            if self.block.len() == self.options.block_size {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), SegmentError> {
        if self.block.is_empty() {
            return Ok(());
        }
        self.compressed.clear();
        self.compressor.compress_to_buffer(&self.block, &mut self.compressed)?;
        let header = BlockHeader {
            compressed_len: self.compressed.len() as u32,
            raw_len: self.block.len() as u32,
            data_crc: crc32c::crc32c(&self.compressed),
        };
        self.sink.write_all(&header.encode())?;
        self.sink.write_all(&self.compressed)?;
        self.block_count += 1;
        self.raw_len += self.block.len() as u64;
        self.body_len += (super::BLOCK_HEADER_LEN + self.compressed.len()) as u64;
        self.block.clear();
        Ok(())
    }

    /// Uncompressed bytes pushed so far: what a size-based close policy reads.
    pub fn raw_len(&self) -> u64 {
        self.raw_len + self.block.len() as u64
    }

    /// Compressed bytes written to the sink so far (whole blocks only).
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    pub fn in_transaction(&self) -> bool {
        self.structure.in_transaction()
    }

    pub fn transactions(&self) -> u32 {
        self.structure.transactions()
    }

    /// Flushes the last block and returns the header. Fails when no
    /// transaction was pushed or the last one is not committed.
    pub fn finish(mut self) -> Result<FinishedSegment<W>, SegmentError> {
        let totals = self.structure.finish()?;
        self.flush_block()?;
        self.sink.flush()?;
        let header = SegmentHeader {
            system_identifier: self.options.system_identifier,
            start_lsn: self.options.start_lsn,
            end_lsn: totals.end_lsn,
            min_commit_time: totals.min_commit_time,
            max_commit_time: totals.max_commit_time,
            transaction_count: totals.transactions,
            block_count: self.block_count,
            record_count: totals.records,
            raw_len: self.raw_len,
            body_len: self.body_len,
        };
        Ok(FinishedSegment { header, sink: self.sink, relations: self.cache })
    }
}

/// Encodes a whole segment in memory: the header, then the body.
pub fn encode_segment<I>(
    messages: I,
    options: SegmentOptions,
    cache: RelationCache,
) -> Result<(Bytes, RelationCache), SegmentError>
where
    I: IntoIterator<Item = Bytes>,
{
    let mut writer = SegmentWriter::new(Vec::new(), options, cache)?;
    for raw in messages {
        writer.push(raw)?;
    }
    let finished = writer.finish()?;
    let mut out = Vec::with_capacity(HEADER_LEN + finished.sink.len());
    out.extend_from_slice(&finished.header.encode());
    out.extend_from_slice(&finished.sink);
    Ok((Bytes::from(out), finished.relations))
}
