//! Segment codec tests: round trips through the writer and the decoders, and
//! the guarantee that a flipped bit or a truncation is an error, never wrong
//! data.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::pgoutput::tests::{column, encode, tuple};
use crate::pgoutput::*;
use crate::{Lsn, PgTimestamp};

/// The tables of the test database: (relation id, column count).
const TABLES: [(Oid, usize); 3] = [(16384, 2), (16390, 3), (16400, 1)];
const START: Lsn = Lsn(0x1_0000_0000);

fn relation(id: Oid, columns: usize) -> Message {
    Message::Relation(Relation {
        xid: None,
        id,
        namespace: "public".into(),
        name: format!("t{id}"),
        replica_identity: ReplicaIdentity::Default,
        columns: (0..columns)
            .map(|i| RelationColumn { flags: u8::from(i == 0), name: format!("c{i}"), type_oid: 25, type_modifier: -1 })
            .collect(),
    })
}

fn change() -> impl Strategy<Value = Message> {
    (0..TABLES.len(), 0u8..5).prop_flat_map(|(t, kind)| {
        let (relation_id, n) = TABLES[t];
        (tuple(n), tuple(n), proptest::collection::vec(column(), 0..1)).prop_map(move |(a, b, _)| match kind {
            0 | 1 => Message::Insert(Insert { xid: None, relation_id, new: a }),
            2 => Message::Update(Update { xid: None, relation_id, old: None, new: a }),
            3 => Message::Update(Update {
                xid: None,
                relation_id,
                old: Some(OldTuple { kind: OldKind::Full, tuple: b }),
                new: a,
            }),
            _ => Message::Delete(Delete { xid: None, relation_id, old: OldTuple { kind: OldKind::Key, tuple: a } }),
        })
    })
}

/// Whole transactions after `start`, in commit order; Relation messages come
/// before first use when `with_relations`, as a new walsender session sends
/// them.
fn transactions(start: Lsn, with_relations: bool) -> impl Strategy<Value = Vec<Message>> {
    proptest::collection::vec((proptest::collection::vec(change(), 1..6), 1u64..5000, -5i64..5_000_000), 1..6).prop_map(
        move |txns| {
            let mut out = Vec::new();
            let mut lsn = start.0;
            let mut time = 848_219_400_000_000i64;
            let mut announced = std::collections::HashSet::new();
            for (i, (changes, gap, dt)) in txns.into_iter().enumerate() {
                lsn += gap;
                time += dt;
                let (final_lsn, commit_time) = (Lsn(lsn + 100), PgTimestamp(time));
                out.push(Message::Begin(Begin { final_lsn, commit_time, xid: 1000 + i as u32 }));
                for change in changes {
                    let id = change.relation_ids()[0];
                    if with_relations && announced.insert(id) {
                        let (_, n) = TABLES.iter().find(|(t, _)| *t == id).copied().unwrap_or_default();
                        out.push(relation(id, n));
                    }
                    out.push(change);
                }
                lsn += 200;
                out.push(Message::Commit(Commit { flags: 0, commit_lsn: final_lsn, end_lsn: Lsn(lsn), commit_time }));
            }
            out
        },
    )
}

fn options(block_size: usize) -> SegmentOptions {
    SegmentOptions { block_size, ..SegmentOptions::new(7441234567890123456, START) }
}

fn encode_all(messages: &[Message], block_size: usize, cache: RelationCache) -> (Bytes, RelationCache) {
    encode_segment(messages.iter().map(encode), options(block_size), cache).expect("valid transactions encode")
}

fn without_relations(messages: impl IntoIterator<Item = Message>) -> Vec<Message> {
    messages.into_iter().filter(|m| !matches!(m, Message::Relation(_) | Message::Type(_))).collect()
}

/// Decodes, feeding `chunk` bytes at a time; returns the records handed out
/// before the first error too.
fn decode_in_pieces(bytes: &[u8], chunk: usize) -> (Vec<Message>, Result<(), SegmentError>) {
    let mut decoder = SegmentDecoder::new();
    let mut pieces = bytes.chunks(chunk.max(1));
    let mut out = Vec::new();
    loop {
        match decoder.step() {
            Ok(Step::Record(r)) => out.push(r.message),
            Ok(Step::End) => return (out, Ok(())),
            Ok(Step::NeedInput) => match pieces.next() {
                Some(piece) => decoder.feed(piece),
                None => decoder.finish_input(),
            },
            Err(e) => return (out, Err(e)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn encode_then_decode_gives_back_the_input(messages in transactions(START, true), small_blocks: bool, chunk in 1usize..300) {
        let block_size = if small_blocks { 4096 } else { SegmentOptions::DEFAULT_BLOCK_SIZE };
        let (bytes, _) = encode_all(&messages, block_size, RelationCache::new());
        let (header, records) = decode_segment(&bytes)?;
        let decoded: Vec<Message> = records.into_iter().map(|r| r.message).collect();
        prop_assert_eq!(&decoded, &messages);
        prop_assert_eq!(header.start_lsn, START);
        prop_assert_eq!(header.object_len(), bytes.len() as u64);
        let (pieces, result) = decode_in_pieces(&bytes, chunk);
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(pieces, messages);
    }

    #[test]
    fn a_later_segment_carries_the_relations_it_refers_to(first in transactions(START, true), second in transactions(Lsn(START.0 + (1 << 24)), false)) {
        let announce = TABLES.iter().map(|&(id, n)| relation(id, n));
        let (_, cache) = encode_all(&announce.chain(first).collect::<Vec<_>>(), 4096, RelationCache::new());
        let second_start = Lsn(START.0 + (1 << 24));
        let (bytes, _) = encode_segment(second.iter().map(encode), SegmentOptions::new(1, second_start), cache)?;
        let (_, records) = decode_segment(&bytes)?;
        let decoded: Vec<Message> = records.into_iter().map(|r| r.message).collect();
        prop_assert!(decoded.iter().any(|m| matches!(m, Message::Relation(_))));
        prop_assert_eq!(without_relations(decoded), second);
    }

    #[test]
    fn any_flipped_bit_is_an_error_never_wrong_data(messages in transactions(START, true), seed: u64) {
        let (bytes, _) = encode_all(&messages, 4096, RelationCache::new());
        // Every bit of the header and of the first block header, and a spread of the rest.
        let bits = bytes.len() * 8;
        let positions = (0..(HEADER_LEN + BLOCK_HEADER_LEN) * 8).chain((0..64).map(|i| (seed as usize).wrapping_add(i * 7919) % bits));
        for bit in positions {
            let mut corrupt = BytesMut::from(&bytes[..]);
            corrupt[bit / 8] ^= 1 << (bit % 8);
            let (handed_out, result) = decode_in_pieces(&corrupt, 997);
            prop_assert!(result.is_err(), "flipping bit {} went unnoticed", bit);
            prop_assert_eq!(&handed_out[..], &messages[..handed_out.len()], "bit {} gave wrong data", bit);
        }
    }

    #[test]
    fn any_truncation_is_an_error(messages in transactions(START, true)) {
        let (bytes, _) = encode_all(&messages, 4096, RelationCache::new());
        for cut in (0..bytes.len()).rev().take(200).chain(0..HEADER_LEN + 20) {
            let (handed_out, result) = decode_in_pieces(&bytes[..cut], 4096);
            prop_assert!(result.is_err(), "cut at {} of {} went unnoticed", cut, bytes.len());
            prop_assert_eq!(&handed_out[..], &messages[..handed_out.len()]);
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        prop_assert!(matches!(decode_segment(&longer), Err(SegmentError::TrailingBytes)));
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut input = valid_header_bytes().to_vec();
        input.extend_from_slice(&body);
        prop_assert!(decode_segment(&input).is_err());
    }
}

fn valid_header_bytes() -> [u8; HEADER_LEN] {
    SegmentHeader {
        system_identifier: 1,
        start_lsn: Lsn(1),
        end_lsn: Lsn(1000),
        min_commit_time: PgTimestamp(0),
        max_commit_time: PgTimestamp(10),
        transaction_count: 1,
        block_count: 2,
        record_count: 3,
        raw_len: 100,
        body_len: 400,
    }
    .encode()
}

fn begin(final_lsn: u64) -> Message {
    Message::Begin(Begin { final_lsn: Lsn(final_lsn), commit_time: PgTimestamp(5), xid: 9 })
}

fn commit(final_lsn: u64, end_lsn: u64) -> Message {
    Message::Commit(Commit { flags: 0, commit_lsn: Lsn(final_lsn), end_lsn: Lsn(end_lsn), commit_time: PgTimestamp(5) })
}

fn insert(relation_id: Oid, columns: usize) -> Message {
    Message::Insert(Insert { xid: None, relation_id, new: TupleData { columns: vec![Column::Null; columns] } })
}

fn write(messages: &[Message]) -> Result<FinishedSegment<Vec<u8>>, SegmentError> {
    let mut writer = SegmentWriter::new(Vec::new(), options(4096), RelationCache::new())?;
    for m in messages {
        writer.push_message(m)?;
    }
    writer.finish()
}

#[test]
fn the_writer_refuses_what_a_reader_would_refuse() {
    let s = START.0;
    type Expect = fn(&SegmentError) -> bool;
    let cases: Vec<(Vec<Message>, Expect)> = vec![
        (vec![], |e| matches!(e, SegmentError::Empty)),
        (vec![begin(s + 10)], |e| matches!(e, SegmentError::OpenTransaction)),
        (vec![commit(s + 10, s + 20)], |e| matches!(e, SegmentError::Structure { record: 0, .. })),
        (vec![begin(s + 10), begin(s + 10)], |e| matches!(e, SegmentError::Structure { record: 1, .. })),
        (vec![begin(s + 10), insert(77, 1)], |e| matches!(e, SegmentError::UnknownRelation { relation_id: 77, .. })),
        (vec![relation(77, 2), begin(s + 10), insert(77, 1)], |e| {
            matches!(e, SegmentError::ColumnCount { expected: 2, actual: 1, .. })
        }),
        (vec![begin(s + 10), commit(s + 11, s + 20)], |e| matches!(e, SegmentError::Structure { .. })),
        (vec![begin(s - 10), commit(s - 10, s)], |e| matches!(e, SegmentError::EndLsnOrder { .. })),
        (vec![begin(s + 10), commit(s + 10, s + 20), begin(s + 5), commit(s + 5, s + 15)], |e| {
            matches!(e, SegmentError::EndLsnOrder { record: 3, .. })
        }),
        (vec![relation(77, 1), insert(77, 1)], |e| matches!(e, SegmentError::Structure { record: 1, .. })),
        (vec![Message::StreamStop], |e| matches!(e, SegmentError::UnexpectedMessage { tag: b'E', .. })),
    ];
    for (messages, expected) in cases {
        let err = write(&messages).expect_err("writer accepted an invalid segment");
        assert!(expected(&err), "{messages:?} gave {err:?}");
    }
}

#[test]
fn streamed_changes_are_stored_without_their_stream_xid() {
    let mut streamed = insert(16400, 1);
    if let Message::Insert(i) = &mut streamed {
        i.xid = Some(4242);
    }
    let s = START.0;
    let finished = write(&[begin(s + 10), relation(16400, 1), streamed, commit(s + 10, s + 20)]).unwrap();
    let mut bytes = finished.header.encode().to_vec();
    bytes.extend_from_slice(&finished.sink);
    let (_, records) = decode_segment(&bytes).unwrap();
    assert_eq!(records[2].message, insert(16400, 1));
}

#[test]
fn the_header_is_readable_alone_and_reports_what_the_body_holds() {
    let s = START.0;
    let messages = [relation(16400, 1), begin(s + 10), insert(16400, 1), commit(s + 10, s + 20)];
    let (bytes, _) = encode_all(&messages, 4096, RelationCache::new());
    assert_eq!(SegmentHeader::decode(&bytes[..HEADER_LEN - 1]).unwrap(), None);
    let header = SegmentHeader::decode(&bytes[..HEADER_LEN]).unwrap().unwrap();
    assert_eq!((header.start_lsn, header.end_lsn), (START, Lsn(s + 20)));
    assert_eq!((header.transaction_count, header.record_count, header.block_count), (1, 4, 1));
    assert_eq!(header.min_commit_time, PgTimestamp(5));
    assert!(matches!(SegmentHeader::decode(b"PGDMP\x01\x0e"), Err(SegmentError::BadMagic)));
}

#[test]
fn a_reader_reads_a_segment_from_any_read() {
    let s = START.0;
    let value = Column::Text(Bytes::from(vec![b'x'; 20_000]));
    let big = Message::Insert(Insert { xid: None, relation_id: 16400, new: TupleData { columns: vec![value] } });
    let messages = [relation(16400, 1), begin(s + 10), big.clone(), big, commit(s + 10, s + 20)];
    let (bytes, _) = encode_all(&messages, 4096, RelationCache::new());
    let reader = SegmentReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    assert!(reader.header().block_count > 4, "a record spanning several blocks");
    let read: Vec<Message> = reader.map(|r| r.unwrap().message).collect();
    assert_eq!(read, messages);
    assert!(matches!(
        SegmentReader::new(std::io::Cursor::new(&bytes[..50])),
        Err(SegmentError::Truncated { missing: 46 })
    ));
}

#[test]
fn every_single_bit_flip_of_a_small_segment_is_an_error() {
    let s = START.0;
    let text = Column::Text(Bytes::from_static(b"hello, tidemark"));
    let messages = [
        relation(16400, 1),
        begin(s + 10),
        Message::Insert(Insert { xid: None, relation_id: 16400, new: TupleData { columns: vec![text] } }),
        commit(s + 10, s + 20),
    ];
    let (bytes, _) = encode_all(&messages, 4096, RelationCache::new());
    for bit in 0..bytes.len() * 8 {
        let mut corrupt = bytes.to_vec();
        corrupt[bit / 8] ^= 1 << (bit % 8);
        let (handed_out, result) = decode_in_pieces(&corrupt, 64);
        assert!(result.is_err(), "flipping bit {bit} of {} went unnoticed", bytes.len() * 8);
        assert_eq!(handed_out, messages[..handed_out.len()], "bit {bit} gave wrong data");
    }
}
