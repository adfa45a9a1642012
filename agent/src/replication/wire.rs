//! The replication sub-protocol inside CopyData: XLogData (`w`) and primary
//! keepalive (`k`) from the server, standby status updates (`r`) from us;
//! and the framing of backend messages. No I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use wal_format::{Lsn, PgTimestamp};

/// A backend message may carry a whole pgoutput message (at most 1 GiB)
/// plus small headers; a longer length is a corrupt stream.
pub const MAX_FRAME_LEN: usize = (1 << 30) + 4096;

/// What the server sends inside CopyData during replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyMessage {
    XLogData { wal_start: Lsn, wal_end: Lsn, send_time: PgTimestamp, payload: Bytes },
    Keepalive { wal_end: Lsn, send_time: PgTimestamp, reply_requested: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("backend message of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    FrameTooLong { len: usize },
    #[error("backend message has an invalid length {len}")]
    BadLength { len: i32 },
    #[error("replication message {what} is {len} bytes, too short")]
    Short { what: &'static str, len: usize },
    #[error("unknown replication message type 0x{tag:02x}")]
    UnknownCopyMessage { tag: u8 },
}

/// Splits one whole backend message (tag, length, body) off the front of
/// `buf`; `Ok(None)` until all of it is buffered.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let body_len = usize::try_from(len).ok().filter(|l| *l >= 4).ok_or(WireError::BadLength { len })?;
    if body_len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLong { len: body_len });
    }
    if buf.len() < 1 + body_len {
        buf.reserve(1 + body_len - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(1 + body_len)))
}

/// Parses the content of a CopyData message from the walsender.
pub fn parse_copy_data(mut data: Bytes) -> Result<CopyMessage, WireError> {
    let Some(&tag) = data.first() else {
        return Err(WireError::Short { what: "CopyData", len: 0 });
    };
    match tag {
        b'w' => {
            if data.len() < 25 {
                return Err(WireError::Short { what: "XLogData", len: data.len() });
            }
            data.advance(1);
            let wal_start = Lsn(data.get_u64());
            let wal_end = Lsn(data.get_u64());
            let send_time = PgTimestamp(data.get_i64());
            Ok(CopyMessage::XLogData { wal_start, wal_end, send_time, payload: data })
        }
        b'k' => {
            if data.len() != 18 {
                return Err(WireError::Short { what: "primary keepalive", len: data.len() });
            }
            data.advance(1);
            Ok(CopyMessage::Keepalive {
                wal_end: Lsn(data.get_u64()),
                send_time: PgTimestamp(data.get_i64()),
                reply_requested: data.get_u8() != 0,
            })
        }
        tag => Err(WireError::UnknownCopyMessage { tag }),
    }
}

/// Appends a CopyData message holding a standby status update.
pub fn standby_status_update(out: &mut BytesMut, written: Lsn, flushed: Lsn, now: PgTimestamp) {
    out.put_u8(b'd');
    out.put_i32(4 + 34);
    out.put_u8(b'r');
    out.put_u64(written.0);
    out.put_u64(flushed.0);
    // Applied: nothing is applied beyond what is durable.
    out.put_u64(flushed.0);
    out.put_i64(now.0);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_only_when_whole() {
        let mut buf = BytesMut::from(&b"d\x00\x00\x00\x06ab"[..]);
        let frame = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(&frame[..], b"d\x00\x00\x00\x06ab");
        assert!(buf.is_empty());
        let mut partial = BytesMut::from(&b"d\x00\x00\x00\x06a"[..]);
        assert_eq!(split_frame(&mut partial).unwrap(), None);
        let mut bad = BytesMut::from(&b"d\x00\x00\x00\x02"[..]);
        assert_eq!(split_frame(&mut bad), Err(WireError::BadLength { len: 2 }));
        let mut huge = BytesMut::from(&b"d\x7f\xff\xff\xff"[..]);
        assert!(matches!(split_frame(&mut huge), Err(WireError::FrameTooLong { .. })));
    }

    #[test]
    fn parses_xlogdata_and_keepalives() {
        let mut w = BytesMut::new();
        w.put_u8(b'w');
        w.put_u64(0x10);
        w.put_u64(0x20);
        w.put_i64(7);
        w.put_slice(b"B...");
        let CopyMessage::XLogData { wal_start, wal_end, payload, .. } = parse_copy_data(w.freeze()).unwrap() else {
            panic!("not XLogData")
        };
        assert_eq!((wal_start, wal_end, &payload[..]), (Lsn(0x10), Lsn(0x20), &b"B..."[..]));
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(0x30);
        k.put_i64(8);
        k.put_u8(1);
        assert_eq!(
            parse_copy_data(k.freeze()).unwrap(),
            CopyMessage::Keepalive { wal_end: Lsn(0x30), send_time: PgTimestamp(8), reply_requested: true }
        );
        assert!(parse_copy_data(Bytes::from_static(b"w\x00")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"x")).is_err());
    }

    #[test]
    fn status_updates_have_the_documented_layout() {
        let mut out = BytesMut::new();
        standby_status_update(&mut out, Lsn(0x30), Lsn(0x20), PgTimestamp(5));
        assert_eq!(out.len(), 1 + 4 + 34);
        assert_eq!(&out[..6], b"d\x00\x00\x00\x26r");
        assert_eq!(&out[6..14], &0x30u64.to_be_bytes());
        assert_eq!(&out[14..22], &0x20u64.to_be_bytes());
        assert_eq!(&out[22..30], &0x20u64.to_be_bytes());
    }
}
