//! Encoding pgoutput messages, byte for byte as PostgreSQL writes them: used
//! to store streamed transactions in protocol-1 form and to test the decoder.

use bytes::{BufMut, BytesMut};

use super::message::*;

/// Why a message cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("string {value:?} contains a NUL byte, which the protocol cannot carry")]
    NulInString { value: String },
    #[error("{what} count {count} exceeds the protocol's limit of {max}")]
    TooMany { what: &'static str, count: usize, max: usize },
}

impl Message {
    /// Appends the message's wire form to `out`. Data messages write their
    /// `xid` when it is `Some`, as inside a Stream Start block.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(self.tag());
        match self {
            Message::Begin(m) => {
                out.put_u64(m.final_lsn.0);
                out.put_i64(m.commit_time.0);
                out.put_u32(m.xid);
            }
            Message::Commit(m) => {
                out.put_u8(m.flags);
                out.put_u64(m.commit_lsn.0);
                out.put_u64(m.end_lsn.0);
                out.put_i64(m.commit_time.0);
            }
            Message::Origin(m) => {
                out.put_u64(m.commit_lsn.0);
                put_string(out, &m.name)?;
            }
            Message::Relation(m) => {
                put_xid(out, m.xid);
                out.put_u32(m.id);
                put_string(out, &m.namespace)?;
                put_string(out, &m.name)?;
                out.put_u8(m.replica_identity.to_byte());
                out.put_i16(count_i16("columns", m.columns.len())?);
                for column in &m.columns {
                    out.put_u8(column.flags);
                    put_string(out, &column.name)?;
                    out.put_u32(column.type_oid);
                    out.put_i32(column.type_modifier);
                }
            }
            Message::Type(m) => {
                put_xid(out, m.xid);
                out.put_u32(m.id);
                put_string(out, &m.namespace)?;
                put_string(out, &m.name)?;
            }
            Message::Insert(m) => {
                put_xid(out, m.xid);
                out.put_u32(m.relation_id);
                out.put_u8(b'N');
                put_tuple(out, &m.new)?;
            }
            Message::Update(m) => {
                put_xid(out, m.xid);
                out.put_u32(m.relation_id);
                if let Some(old) = &m.old {
                    put_old(out, old)?;
                }
                out.put_u8(b'N');
                put_tuple(out, &m.new)?;
            }
            Message::Delete(m) => {
                put_xid(out, m.xid);
                out.put_u32(m.relation_id);
                put_old(out, &m.old)?;
            }
            Message::Truncate(m) => {
                put_xid(out, m.xid);
                out.put_i32(count_i32("relations", m.relation_ids.len())?);
                out.put_u8(m.options);
                for id in &m.relation_ids {
                    out.put_u32(*id);
                }
            }
            Message::Message(m) => {
                put_xid(out, m.xid);
                out.put_u8(m.flags);
                out.put_u64(m.lsn.0);
                put_string(out, &m.prefix)?;
                out.put_i32(count_i32("content bytes", m.content.len())?);
                out.put_slice(&m.content);
            }
            Message::StreamStart(m) => {
                out.put_u32(m.xid);
                out.put_u8(m.first_segment);
            }
            Message::StreamStop => {}
            Message::StreamCommit(m) => {
                out.put_u32(m.xid);
                out.put_u8(m.flags);
                out.put_u64(m.commit_lsn.0);
                out.put_u64(m.end_lsn.0);
                out.put_i64(m.commit_time.0);
            }
            Message::StreamAbort(m) => {
                out.put_u32(m.xid);
                out.put_u32(m.subxid);
                if let Some((lsn, time)) = m.abort {
                    out.put_u64(lsn.0);
                    out.put_i64(time.0);
                }
            }
            Message::BeginPrepare(m) => {
                out.put_u64(m.prepare_lsn.0);
                out.put_u64(m.end_lsn.0);
                out.put_i64(m.prepare_time.0);
                out.put_u32(m.xid);
                put_string(out, &m.gid)?;
            }
            Message::Prepare(m) | Message::StreamPrepare(m) => {
                out.put_u8(m.flags);
                out.put_u64(m.prepare_lsn.0);
                out.put_u64(m.end_lsn.0);
                out.put_i64(m.prepare_time.0);
                out.put_u32(m.xid);
                put_string(out, &m.gid)?;
            }
            Message::CommitPrepared(m) => {
                out.put_u8(m.flags);
                out.put_u64(m.commit_lsn.0);
                out.put_u64(m.end_lsn.0);
                out.put_i64(m.commit_time.0);
                out.put_u32(m.xid);
                put_string(out, &m.gid)?;
            }
            Message::RollbackPrepared(m) => {
                out.put_u8(m.flags);
                out.put_u64(m.prepare_end_lsn.0);
                out.put_u64(m.rollback_end_lsn.0);
                out.put_i64(m.prepare_time.0);
                out.put_i64(m.rollback_time.0);
                out.put_u32(m.xid);
                put_string(out, &m.gid)?;
            }
        }
        Ok(())
    }
}

fn put_xid(out: &mut BytesMut, xid: Option<Xid>) {
    if let Some(xid) = xid {
        out.put_u32(xid);
    }
}

fn put_string(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NulInString { value: s.to_owned() });
    }
    out.put_slice(s.as_bytes());
    out.put_u8(0);
    Ok(())
}

fn count_i16(what: &'static str, count: usize) -> Result<i16, EncodeError> {
    i16::try_from(count).map_err(|_| EncodeError::TooMany { what, count, max: i16::MAX as usize })
}

fn count_i32(what: &'static str, count: usize) -> Result<i32, EncodeError> {
    i32::try_from(count).map_err(|_| EncodeError::TooMany { what, count, max: i32::MAX as usize })
}

fn put_old(out: &mut BytesMut, old: &OldTuple) -> Result<(), EncodeError> {
    out.put_u8(match old.kind {
        OldKind::Key => b'K',
        OldKind::Full => b'O',
    });
    put_tuple(out, &old.tuple)
}

fn put_tuple(out: &mut BytesMut, tuple: &TupleData) -> Result<(), EncodeError> {
    out.put_i16(count_i16("columns", tuple.columns.len())?);
    for column in &tuple.columns {
        match column {
            Column::Null => out.put_u8(b'n'),
            Column::UnchangedToast => out.put_u8(b'u'),
            Column::Text(value) | Column::Binary(value) => {
                out.put_u8(if matches!(column, Column::Text(_)) { b't' } else { b'b' });
                out.put_i32(count_i32("value bytes", value.len())?);
                out.put_slice(value);
            }
        }
    }
    Ok(())
}
