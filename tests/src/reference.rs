//! Comparing an archive with an independent reference: a second pgoutput
//! slot on the same publication, peeked with SQL. Transactions are lists of
//! pgoutput messages' bytes, without the Relation and Type messages that a
//! segment repeats and without non-transactional messages.

use std::path::Path;

use bytes::Bytes;
use wal_format::pgoutput::{decode_message, DecodeOptions, Message, Oid};
use wal_format::segment::decode_segment;
use wal_format::{Lsn, SegmentKey};

use crate::PgCluster;

pub type Transaction = Vec<Bytes>;

/// Groups messages into transactions.
pub fn transactions(messages: impl IntoIterator<Item = Bytes>) -> Vec<Transaction> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for raw in messages {
        let m = decode_message(raw.clone(), &DecodeOptions::v1(), false).expect("archived messages decode");
        match m {
            Message::Relation(_) | Message::Type(_) => continue,
            Message::Message(ref lm) if !lm.is_transactional() => continue,
            _ => {}
        }
        current.push(raw);
        if matches!(m, Message::Commit(_)) {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// The end LSN of a transaction's Commit.
pub fn commit_end(txn: &[Bytes]) -> Lsn {
    match txn.last().map(|raw| decode_message(raw.clone(), &DecodeOptions::v1(), false)) {
        Some(Ok(Message::Commit(c))) => c.end_lsn,
        other => panic!("a transaction must end with a Commit, not {other:?}"),
    }
}

/// The transactions of a set of segments given by key and bytes, checking
/// that their keys and headers chain without gap or overlap.
pub fn segment_transactions(mut segments: Vec<(SegmentKey, Vec<u8>)>) -> Vec<Transaction> {
    segments.sort_by_key(|(k, _)| *k);
    let keys: Vec<String> = segments.iter().map(|(k, _)| k.to_string()).collect();
    let mut previous_end = None;
    let mut out = Vec::new();
    for (key, bytes) in segments {
        if let Some(end) = previous_end {
            assert_eq!(key.start, end, "the segment chain has a gap or overlap before {key}: {keys:?}");
        }
        previous_end = Some(key.end);
        let (header, records) = decode_segment(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!((header.start_lsn, header.end_lsn), (key.start, key.end), "{key}'s header");
        out.extend(transactions(records.into_iter().map(|r| r.raw)));
    }
    out
}

/// The segment keys of a `file://` archive directory, in order.
pub fn segment_keys(dir: &Path) -> Vec<SegmentKey> {
    let mut keys: Vec<SegmentKey> = std::fs::read_dir(dir.join("segments"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| SegmentKey::parse(&format!("segments/{}", e.file_name().to_string_lossy())).ok())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Every transaction of a `file://` archive directory, in order.
pub fn archived_transactions(dir: &Path) -> Vec<Transaction> {
    let segments = std::fs::read_dir(dir.join("segments"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let key = SegmentKey::parse(&format!("segments/{}", e.file_name().to_string_lossy())).ok()?;
                    Some((key, std::fs::read(e.path()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    segment_transactions(segments)
}

/// What slot `slot` (pgoutput, created by the test) saw of publication
/// `tidemark` in `database`, minus the changes of `excluded` (0 for none);
/// a TRUNCATE of several tables keeps the others.
pub fn reference_transactions(pg: &PgCluster, database: &str, slot: &str, excluded: Oid) -> Vec<Transaction> {
    let hex = pg
        .psql(
            database,
            &format!("SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, 'proto_version', '1', 'publication_names', 'tidemark', 'messages', 'true')"),
        )
        .expect("the reference slot can be peeked");
    let messages = hex.lines().map(|h| {
        Bytes::from(
            (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<u8>>(),
        )
    });
    let kept = messages.filter_map(|raw| match decode_message(raw.clone(), &DecodeOptions::v1(), false).unwrap() {
        Message::Truncate(mut t) if t.relation_ids.contains(&excluded) => {
            t.relation_ids.retain(|id| *id != excluded);
            (!t.relation_ids.is_empty()).then(|| {
                let mut buf = bytes::BytesMut::new();
                Message::Truncate(t).encode(&mut buf).unwrap();
                buf.freeze()
            })
        }
        m if m.relation_ids().contains(&excluded) => None,
        _ => Some(raw),
    });
    transactions(kept)
}
