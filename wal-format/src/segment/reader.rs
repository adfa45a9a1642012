//! Reading segments: `SegmentDecoder` takes bytes in pieces and hands out
//! records (no I/O, so the same code serves files and S3 streams);
//! `SegmentReader` drives it from any `Read`. A block's records are handed
//! out only after its checksums were verified, so a corrupt segment yields an
//! error, never wrong data.

use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};

use crate::pgoutput::{decode_message, DecodeOptions, Message};

use super::header::{BlockHeader, SegmentHeader, BLOCK_HEADER_LEN, HEADER_LEN, MAX_RECORD_LEN};
use super::structure::Structure;
use super::SegmentError;

/// One stored pgoutput message: its bytes and their decoded form, whose
/// values are slices of `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub raw: Bytes,
    pub message: Message,
}

/// What `SegmentDecoder::step` found.
#[derive(Debug)]
pub enum Step {
    Record(Record),
    /// Feed more bytes, or call `finish_input` if there are none.
    NeedInput,
    /// The segment was complete and every total matched its header.
    End,
}

/// A sans-I/O segment decoder: `feed` it bytes, call `step` until it asks for
/// more. It holds at most one block's compressed bytes beyond what it is fed,
/// one decompressed block and one partial record.
pub struct SegmentDecoder {
    input: BytesMut,
    input_done: bool,
    fed: u64,
    header: Option<SegmentHeader>,
    structure: Structure,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    scratch: Vec<u8>,
    raw: BytesMut,
    raw_total: u64,
    body_consumed: u64,
    blocks: u32,
    ended: bool,
}

impl Default for SegmentDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentDecoder {
    pub fn new() -> Self {
        SegmentDecoder {
            input: BytesMut::new(),
            input_done: false,
            fed: 0,
            header: None,
            structure: Structure::new(crate::Lsn::ZERO),
            decompressor: None,
            scratch: Vec::new(),
            raw: BytesMut::new(),
            raw_total: 0,
            body_consumed: 0,
            blocks: 0,
            ended: false,
        }
    }

    /// The header, once its bytes were fed.
    pub fn header(&self) -> Option<&SegmentHeader> {
        self.header.as_ref()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.fed += bytes.len() as u64;
        self.input.extend_from_slice(bytes);
    }

    /// Declares that no more bytes will come.
    pub fn finish_input(&mut self) {
        self.input_done = true;
    }

    pub fn step(&mut self) -> Result<Step, SegmentError> {
        if self.ended {
            return Ok(Step::End);
        }
        let Some(header) = self.decode_header()? else {
            return self.need_input(HEADER_LEN as u64);
        };
        loop {
            if let Some(record) = self.next_record()? {
                return Ok(Step::Record(record));
            }
            if self.blocks == header.block_count {
                return self.end(&header);
            }
            if !self.read_block(&header)? {
                return self.need_input(header.object_len());
            }
        }
    }

    /// Decodes the header once enough bytes were fed; `Ok(None)` until then.
    pub fn decode_header(&mut self) -> Result<Option<SegmentHeader>, SegmentError> {
        if self.header.is_none() {
            let Some(h) = SegmentHeader::decode(&self.input)? else {
                return Ok(None);
            };
            self.input.advance(HEADER_LEN);
            self.header = Some(h);
            self.structure = Structure::new(h.start_lsn);
        }
        Ok(self.header)
    }

    /// Asks for more input, or reports the segment cut short at `expected`
    /// total bytes when the input is finished.
    fn need_input(&self, expected: u64) -> Result<Step, SegmentError> {
        if self.input_done {
            Err(SegmentError::Truncated { missing: expected.saturating_sub(self.fed) })
        } else {
            Ok(Step::NeedInput)
        }
    }

    /// Takes the next whole record out of the decompressed bytes.
    fn next_record(&mut self) -> Result<Option<Record>, SegmentError> {
        let record = self.structure.records();
        let Some(len_bytes) = self.raw.get(..4) else {
            return Ok(None);
        };
        let len = u64::from(u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]));
        if len > MAX_RECORD_LEN {
            return Err(SegmentError::RecordTooLarge { record, len, max: MAX_RECORD_LEN });
        }
        if (self.raw.len() as u64) < 4 + len {
            return Ok(None);
        }
        self.raw.advance(4);
        let raw = self.raw.split_to(len as usize).freeze();
        let message = decode_message(raw.clone(), &DecodeOptions::v1(), false)
            .map_err(|source| SegmentError::Record { record, source })?;
        self.structure.check(&message)?;
        Ok(Some(Record { raw, message }))
    }

    /// Verifies and decompresses the next block if all of it is buffered;
    /// `false` when more input is needed.
    fn read_block(&mut self, header: &SegmentHeader) -> Result<bool, SegmentError> {
        let block = self.blocks;
        let Some(head) = self.input.get(..BLOCK_HEADER_LEN) else {
            return Ok(false);
        };
        let mut head_bytes = [0u8; BLOCK_HEADER_LEN];
        head_bytes.copy_from_slice(head);
        let bh = BlockHeader::decode(&head_bytes, block)?;
        let total = (BLOCK_HEADER_LEN + bh.compressed_len as usize) as u64;
        if self.body_consumed + total > header.body_len {
            return Err(SegmentError::InvalidBlock { block, reason: "block runs past the body length in the header" });
        }
        if self.raw_total + u64::from(bh.raw_len) > header.raw_len {
            return Err(SegmentError::InvalidBlock { block, reason: "blocks hold more bytes than the header says" });
        }
        if (self.input.len() as u64) < total {
            return Ok(false);
        }
        self.input.advance(BLOCK_HEADER_LEN);
        let data = self.input.split_to(bh.compressed_len as usize);
        if crc32c::crc32c(&data) != bh.data_crc {
            return Err(SegmentError::BlockChecksum { block });
        }
        let decompress_error = |e: std::io::Error| SegmentError::Decompress { block, message: e.to_string() };
        let decompressor = match &mut self.decompressor {
            Some(d) => d,
            None => self.decompressor.insert(zstd::bulk::Decompressor::new().map_err(decompress_error)?),
        };
        self.scratch.clear();
        self.scratch.reserve(bh.raw_len as usize);
        let produced = decompressor.decompress_to_buffer(&data[..], &mut self.scratch).map_err(decompress_error)?;
        if produced != bh.raw_len as usize {
            return Err(SegmentError::InvalidBlock {
                block,
                reason: "decompressed size differs from the block header",
            });
        }
        self.raw.extend_from_slice(&self.scratch);
        self.raw_total += u64::from(bh.raw_len);
        self.body_consumed += total;
        self.blocks += 1;
        Ok(true)
    }

    /// All blocks are read: check that nothing is left over and that the
    /// records add up to what the header says.
    fn end(&mut self, header: &SegmentHeader) -> Result<Step, SegmentError> {
        if !self.raw.is_empty() {
            return Err(SegmentError::Structure {
                record: self.structure.records(),
                reason: "a record is cut off at the end of the body",
            });
        }
        if !self.input.is_empty() {
            return Err(SegmentError::TrailingBytes);
        }
        if !self.input_done {
            return Ok(Step::NeedInput);
        }
        let totals = self.structure.finish()?;
        let checks: [(&'static str, String, String); 7] = [
            ("the record count", header.record_count.to_string(), totals.records.to_string()),
            ("the transaction count", header.transaction_count.to_string(), totals.transactions.to_string()),
            ("the end LSN", header.end_lsn.to_string(), totals.end_lsn.to_string()),
            ("the earliest commit time", header.min_commit_time.to_string(), totals.min_commit_time.to_string()),
            ("the latest commit time", header.max_commit_time.to_string(), totals.max_commit_time.to_string()),
            ("the uncompressed length", header.raw_len.to_string(), self.raw_total.to_string()),
            ("the body length", header.body_len.to_string(), self.body_consumed.to_string()),
        ];
        for (field, said, actual) in checks {
            if said != actual {
                return Err(SegmentError::HeaderMismatch { field, header: said, actual });
            }
        }
        self.ended = true;
        Ok(Step::End)
    }
}

/// Reads a segment from any `Read`, record by record.
pub struct SegmentReader<R> {
    source: R,
    header: SegmentHeader,
    decoder: SegmentDecoder,
    buf: Box<[u8]>,
}

impl<R: Read> SegmentReader<R> {
    const READ_SIZE: usize = 64 * 1024;

    /// Reads and checks the header.
    pub fn new(mut source: R) -> Result<Self, SegmentError> {
        let mut decoder = SegmentDecoder::new();
        let mut buf = vec![0u8; Self::READ_SIZE].into_boxed_slice();
        let header = loop {
            if let Some(header) = decoder.decode_header()? {
                break header;
            }
            if decoder.input_done {
                return Err(SegmentError::Truncated { missing: (HEADER_LEN as u64).saturating_sub(decoder.fed) });
            }
            fill(&mut source, &mut decoder, &mut buf)?;
        };
        Ok(SegmentReader { source, header, decoder, buf })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The next record, `None` after the last one once the whole segment
    /// checked out.
    pub fn next_record(&mut self) -> Result<Option<Record>, SegmentError> {
        loop {
            match self.decoder.step()? {
                Step::Record(record) => return Ok(Some(record)),
                Step::End => return Ok(None),
                Step::NeedInput => fill(&mut self.source, &mut self.decoder, &mut self.buf)?,
            }
        }
    }
}

/// Reads the next piece of `source` into `decoder`, or tells it the input ended.
fn fill<R: Read>(source: &mut R, decoder: &mut SegmentDecoder, buf: &mut [u8]) -> Result<(), SegmentError> {
    let n = loop {
        match source.read(buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        decoder.finish_input();
    } else {
        decoder.feed(&buf[..n]);
    }
    Ok(())
}

impl<R: Read> Iterator for SegmentReader<R> {
    type Item = Result<Record, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Decodes a whole segment held in memory.
pub fn decode_segment(bytes: &[u8]) -> Result<(SegmentHeader, Vec<Record>), SegmentError> {
    let mut decoder = SegmentDecoder::new();
    decoder.feed(bytes);
    decoder.finish_input();
    let mut records = Vec::new();
    loop {
        match decoder.step()? {
            Step::Record(record) => records.push(record),
            Step::End => break,
            Step::NeedInput => return Err(SegmentError::Truncated { missing: 0 }),
        }
    }
    let header = *decoder.header().ok_or(SegmentError::Truncated { missing: HEADER_LEN as u64 })?;
    Ok((header, records))
}
