//! Decoding pgoutput messages from the bytes of one XLogData payload.
//!
//! Every length and count is checked against the bytes that remain before
//! anything is allocated, and a message must be consumed exactly: a short
//! message is `Truncated`, a long one `TrailingBytes`. Values are `Bytes`
//! slices of the input.

use bytes::Bytes;

use super::message::*;
use crate::{Lsn, PgTimestamp};

/// The newest protocol version this decoder knows (PostgreSQL 16 and later).
pub const MAX_PROTOCOL_VERSION: u32 = 4;

/// What the walsender was asked for: it decides which messages may come and
/// what some of them carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    protocol_version: u32,
    parallel_streaming: bool,
}

impl DecodeOptions {
    /// Options for `proto_version` 1 to 4.
    pub fn new(protocol_version: u32) -> Result<Self, DecodeError> {
        if (1..=MAX_PROTOCOL_VERSION).contains(&protocol_version) {
            Ok(DecodeOptions { protocol_version, parallel_streaming: false })
        } else {
            Err(DecodeError::UnsupportedProtocol { version: protocol_version })
        }
    }

    /// Protocol 1: no streaming, no two-phase; what tidemark stores.
    pub const fn v1() -> Self {
        DecodeOptions { protocol_version: 1, parallel_streaming: false }
    }

    /// `streaming 'parallel'` (protocol 4): Stream Abort carries the abort
    /// LSN and time.
    pub fn with_parallel_streaming(mut self, parallel: bool) -> Self {
        self.parallel_streaming = parallel;
        self
    }

    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    fn abort_carries_lsn(&self) -> bool {
        self.protocol_version >= 4 && self.parallel_streaming
    }

    /// The oldest protocol version that has messages of this type.
    fn min_version_for(tag: u8) -> Option<u32> {
        match tag {
            b'B' | b'C' | b'O' | b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M' => Some(1),
            b'S' | b'E' | b'c' | b'A' => Some(2),
            b'b' | b'P' | b'K' | b'r' | b'p' => Some(3),
            _ => None,
        }
    }
}

/// Why some bytes are not a valid pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput protocol version {version} is not supported (1 to {MAX_PROTOCOL_VERSION} are)")]
    UnsupportedProtocol { version: u32 },
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message type 0x{tag:02x}")]
    UnknownType { tag: u8 },
    #[error("pgoutput message type {:?} does not exist in protocol version {version}", char::from(*tag))]
    NotInProtocol { tag: u8, version: u32 },
    #[error("pgoutput {:?} message ends early: {needed} more bytes needed at offset {offset}, {remaining} left", char::from(*tag))]
    Truncated { tag: u8, offset: usize, needed: usize, remaining: usize },
    #[error("pgoutput {:?} message has {extra} bytes after its end", char::from(*tag))]
    TrailingBytes { tag: u8, extra: usize },
    #[error("pgoutput {:?} message has a string without its terminating NUL at offset {offset}", char::from(*tag))]
    UnterminatedString { tag: u8, offset: usize },
    #[error("pgoutput {:?} message has a string that is not UTF-8 at offset {offset}", char::from(*tag))]
    InvalidUtf8 { tag: u8, offset: usize },
    #[error("pgoutput {:?} message has a negative {what} ({value}) at offset {offset}", char::from(*tag))]
    Negative { tag: u8, what: &'static str, value: i64, offset: usize },
    #[error("pgoutput {:?} message claims {count} {what} but only {remaining} bytes remain", char::from(*tag))]
    CountExceedsInput { tag: u8, what: &'static str, count: usize, remaining: usize },
    #[error("pgoutput {:?} message has tuple column kind 0x{kind:02x} at offset {offset} (expected n, u, t or b)", char::from(*tag))]
    InvalidColumnKind { tag: u8, kind: u8, offset: usize },
    #[error("pgoutput {:?} message has tuple marker 0x{marker:02x} at offset {offset} (expected {expected})", char::from(*tag))]
    InvalidTupleMarker { tag: u8, marker: u8, offset: usize, expected: &'static str },
    #[error("pgoutput Relation message has replica identity 0x{value:02x} (expected d, n, f or i)")]
    InvalidReplicaIdentity { value: u8 },
}

/// Decodes a stream of pgoutput messages, tracking whether a Stream Start
/// block is open (inside one, data messages carry their transaction id).
#[derive(Debug, Clone)]
pub struct Decoder {
    options: DecodeOptions,
    in_stream: bool,
}

impl Decoder {
    pub fn new(options: DecodeOptions) -> Self {
        Decoder { options, in_stream: false }
    }

    pub fn options(&self) -> DecodeOptions {
        self.options
    }

    /// Whether a Stream Start block is open.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes the next message; the stream state changes only on success.
    pub fn decode(&mut self, payload: Bytes) -> Result<Message, DecodeError> {
        let message = decode_message(payload, &self.options, self.in_stream)?;
        match message {
            Message::StreamStart(_) => self.in_stream = true,
            Message::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(message)
    }
}

/// Decodes one message. `in_stream` says whether a Stream Start block is open.
pub fn decode_message(payload: Bytes, options: &DecodeOptions, in_stream: bool) -> Result<Message, DecodeError> {
    let tag = *payload.first().ok_or(DecodeError::Empty)?;
    let min_version = DecodeOptions::min_version_for(tag).ok_or(DecodeError::UnknownType { tag })?;
    if options.protocol_version < min_version {
        return Err(DecodeError::NotInProtocol { tag, version: options.protocol_version });
    }
    let mut c = Cursor { buf: &payload, pos: 1, tag };
    let stream_xid = |c: &mut Cursor<'_>| -> Result<Option<Xid>, DecodeError> {
        if in_stream {
            c.u32().map(Some)
        } else {
            Ok(None)
        }
    };
    let message = match tag {
        b'B' => Message::Begin(Begin { final_lsn: c.lsn()?, commit_time: c.timestamp()?, xid: c.u32()? }),
        b'C' => Message::Commit(Commit {
            flags: c.u8()?,
            commit_lsn: c.lsn()?,
            end_lsn: c.lsn()?,
            commit_time: c.timestamp()?,
        }),
        b'O' => Message::Origin(Origin { commit_lsn: c.lsn()?, name: c.string()? }),
        b'R' => {
            let xid = stream_xid(&mut c)?;
            Message::Relation(relation(&mut c, xid)?)
        }
        b'Y' => Message::Type(TypeMessage {
            xid: stream_xid(&mut c)?,
            id: c.u32()?,
            namespace: c.string()?,
            name: c.string()?,
        }),
        b'I' => {
            let xid = stream_xid(&mut c)?;
            let relation_id = c.u32()?;
            c.expect_marker(b"N", "N")?;
            Message::Insert(Insert { xid, relation_id, new: c.tuple()? })
        }
        b'U' => {
            let xid = stream_xid(&mut c)?;
            let relation_id = c.u32()?;
            let old = match c.expect_marker(b"KON", "K, O or N")? {
                b'N' => None,
                marker => {
                    let old = OldTuple { kind: old_kind(marker), tuple: c.tuple()? };
                    c.expect_marker(b"N", "N")?;
                    Some(old)
                }
            };
            Message::Update(Update { xid, relation_id, old, new: c.tuple()? })
        }
        b'D' => {
            let xid = stream_xid(&mut c)?;
            let relation_id = c.u32()?;
            let kind = old_kind(c.expect_marker(b"KO", "K or O")?);
            Message::Delete(Delete { xid, relation_id, old: OldTuple { kind, tuple: c.tuple()? } })
        }
        b'T' => {
            let xid = stream_xid(&mut c)?;
            let count = c.count_i32("relations", 4)?;
            let options = c.u8()?;
            // Each OID is 4 bytes and the count was checked against what remains.
            let relation_ids = (0..count).map(|_| c.u32()).collect::<Result<_, _>>()?;
            Message::Truncate(Truncate { xid, options, relation_ids })
        }
        b'M' => {
            let xid = stream_xid(&mut c)?;
            let flags = c.u8()?;
            let lsn = c.lsn()?;
            let prefix = c.string()?;
            let len = c.count_i32("content bytes", 1)?;
            Message::Message(LogicalMessage { xid, flags, lsn, prefix, content: c.bytes(len)? })
        }
        b'S' => Message::StreamStart(StreamStart { xid: c.u32()?, first_segment: c.u8()? }),
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit(StreamCommit {
            xid: c.u32()?,
            flags: c.u8()?,
            commit_lsn: c.lsn()?,
            end_lsn: c.lsn()?,
            commit_time: c.timestamp()?,
        }),
        b'A' => Message::StreamAbort(StreamAbort {
            xid: c.u32()?,
            subxid: c.u32()?,
            abort: if options.abort_carries_lsn() { Some((c.lsn()?, c.timestamp()?)) } else { None },
        }),
        b'b' => Message::BeginPrepare(BeginPrepare {
            prepare_lsn: c.lsn()?,
            end_lsn: c.lsn()?,
            prepare_time: c.timestamp()?,
            xid: c.u32()?,
            gid: c.string()?,
        }),
        b'P' => Message::Prepare(prepare(&mut c)?),
        b'p' => Message::StreamPrepare(prepare(&mut c)?),
        b'K' => Message::CommitPrepared(CommitPrepared {
            flags: c.u8()?,
            commit_lsn: c.lsn()?,
            end_lsn: c.lsn()?,
            commit_time: c.timestamp()?,
            xid: c.u32()?,
            gid: c.string()?,
        }),
        b'r' => Message::RollbackPrepared(RollbackPrepared {
            flags: c.u8()?,
            prepare_end_lsn: c.lsn()?,
            rollback_end_lsn: c.lsn()?,
            prepare_time: c.timestamp()?,
            rollback_time: c.timestamp()?,
            xid: c.u32()?,
            gid: c.string()?,
        }),
        _ => return Err(DecodeError::UnknownType { tag }),
    };
    c.finish()?;
    Ok(message)
}

fn relation(c: &mut Cursor<'_>, xid: Option<Xid>) -> Result<Relation, DecodeError> {
    let id = c.u32()?;
    let namespace = c.string()?;
    let name = c.string()?;
    let identity_byte = c.u8()?;
    let replica_identity = ReplicaIdentity::from_byte(identity_byte)
        .ok_or(DecodeError::InvalidReplicaIdentity { value: identity_byte })?;
    // A column takes at least 10 bytes: flags, an empty name's NUL, type OID, typmod.
    let count = c.count_i16("columns", 10)?;
    let columns = (0..count)
        .map(|_| Ok(RelationColumn { flags: c.u8()?, name: c.string()?, type_oid: c.u32()?, type_modifier: c.i32()? }))
        .collect::<Result<_, DecodeError>>()?;
    Ok(Relation { xid, id, namespace, name, replica_identity, columns })
}

fn prepare(c: &mut Cursor<'_>) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: c.u8()?,
        prepare_lsn: c.lsn()?,
        end_lsn: c.lsn()?,
        prepare_time: c.timestamp()?,
        xid: c.u32()?,
        gid: c.string()?,
    })
}

fn old_kind(marker: u8) -> OldKind {
    if marker == b'K' {
        OldKind::Key
    } else {
        OldKind::Full
    }
}

/// A read position in one message, which knows the message type for errors.
struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
    tag: u8,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.need(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    /// The end offset of the next `n` bytes, if they are there.
    fn need(&self, n: usize) -> Result<usize, DecodeError> {
        if n <= self.remaining() {
            Ok(self.pos + n)
        } else {
            Err(DecodeError::Truncated { tag: self.tag, offset: self.pos, needed: n, remaining: self.remaining() })
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.take()?)))
    }

    fn timestamp(&mut self) -> Result<PgTimestamp, DecodeError> {
        Ok(PgTimestamp(i64::from_be_bytes(self.take()?)))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self.need(n)?;
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = &self.buf[start..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString { tag: self.tag, offset: start })?;
        let text = std::str::from_utf8(&rest[..nul])
            .map_err(|_| DecodeError::InvalidUtf8 { tag: self.tag, offset: start })?
            .to_owned();
        self.pos = start + nul + 1;
        Ok(text)
    }

    /// Reads a marker byte and checks it is one of `allowed`.
    fn expect_marker(&mut self, allowed: &[u8], expected: &'static str) -> Result<u8, DecodeError> {
        let offset = self.pos;
        let marker = self.u8()?;
        if allowed.contains(&marker) {
            Ok(marker)
        } else {
            Err(DecodeError::InvalidTupleMarker { tag: self.tag, marker, offset, expected })
        }
    }

    /// An Int16 count of items that take at least `min_item_bytes` each,
    /// checked against what remains so that no input can make us allocate
    /// more than it justifies.
    fn count_i16(&mut self, what: &'static str, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i16()?;
        self.check_count(what, i64::from(value), offset, min_item_bytes)
    }

    fn count_i32(&mut self, what: &'static str, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i32()?;
        self.check_count(what, i64::from(value), offset, min_item_bytes)
    }

    fn check_count(
        &self,
        what: &'static str,
        value: i64,
        offset: usize,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = usize::try_from(value).map_err(|_| DecodeError::Negative { tag: self.tag, what, value, offset })?;
        if count.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(DecodeError::CountExceedsInput { tag: self.tag, what, count, remaining: self.remaining() });
        }
        Ok(count)
    }

    fn tuple(&mut self) -> Result<TupleData, DecodeError> {
        let count = self.count_i16("columns", 1)?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let offset = self.pos;
            let column = match self.u8()? {
                b'n' => Column::Null,
                b'u' => Column::UnchangedToast,
                b't' => {
                    let len = self.count_i32("value bytes", 1)?;
                    Column::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.count_i32("value bytes", 1)?;
                    Column::Binary(self.bytes(len)?)
                }
                kind => return Err(DecodeError::InvalidColumnKind { tag: self.tag, kind, offset }),
            };
            columns.push(column);
        }
        Ok(TupleData { columns })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { tag: self.tag, extra }),
        }
    }
}
