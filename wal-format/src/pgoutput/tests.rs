//! Decoder tests on hand-built messages, and property tests: every message
//! round-trips through encode and decode, and no input makes the decoder
//! panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::{Lsn, PgTimestamp};

pub(crate) fn encode(message: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).expect("test messages are encodable");
    buf.freeze()
}

fn v(version: u32) -> DecodeOptions {
    DecodeOptions::new(version).unwrap()
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_ ]{0,12}|[^\u{0}]{0,6}"
}

fn value() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

pub(crate) fn column() -> impl Strategy<Value = Column> {
    prop_oneof![
        Just(Column::Null),
        Just(Column::UnchangedToast),
        value().prop_map(Column::Text),
        value().prop_map(Column::Binary),
    ]
}

pub(crate) fn tuple(columns: usize) -> impl Strategy<Value = TupleData> {
    proptest::collection::vec(column(), columns).prop_map(|columns| TupleData { columns })
}

fn old(columns: usize) -> impl Strategy<Value = OldTuple> {
    (prop_oneof![Just(OldKind::Key), Just(OldKind::Full)], tuple(columns))
        .prop_map(|(kind, tuple)| OldTuple { kind, tuple })
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn ts() -> impl Strategy<Value = PgTimestamp> {
    any::<i64>().prop_map(PgTimestamp)
}

pub(crate) fn relation_message(id: Oid, columns: usize) -> impl Strategy<Value = Relation> {
    (
        name(),
        name(),
        prop_oneof![
            Just(ReplicaIdentity::Default),
            Just(ReplicaIdentity::Nothing),
            Just(ReplicaIdentity::Full),
            Just(ReplicaIdentity::Index)
        ],
        proptest::collection::vec((0u8..2, name(), any::<u32>(), any::<i32>()), columns),
    )
        .prop_map(move |(namespace, name, replica_identity, cols)| Relation {
            xid: None,
            id,
            namespace,
            name,
            replica_identity,
            columns: cols
                .into_iter()
                .map(|(flags, name, type_oid, type_modifier)| RelationColumn { flags, name, type_oid, type_modifier })
                .collect(),
        })
}

/// Relation, Type, Insert, Update, Delete, Truncate or Message; with a stream
/// xid when `in_stream`.
fn data_message(in_stream: bool) -> impl Strategy<Value = Message> {
    let xid = if in_stream { any::<u32>().prop_map(Some).boxed() } else { Just(None).boxed() };
    prop_oneof![
        (xid.clone(), any::<u32>(), 0usize..6).prop_flat_map(|(x, id, n)| relation_message(id, n).prop_map(
            move |mut r| {
                r.xid = x;
                Message::Relation(r)
            }
        )),
        (xid.clone(), any::<u32>(), name(), name()).prop_map(|(xid, id, namespace, name)| Message::Type(TypeMessage {
            xid,
            id,
            namespace,
            name
        })),
        (xid.clone(), any::<u32>(), 0usize..6).prop_flat_map(
            |(xid, relation_id, n)| tuple(n).prop_map(move |new| Message::Insert(Insert { xid, relation_id, new }))
        ),
        (xid.clone(), any::<u32>(), 0usize..6).prop_flat_map(|(xid, relation_id, n)| (
            proptest::option::of(old(n)),
            tuple(n)
        )
            .prop_map(move |(old, new)| Message::Update(Update { xid, relation_id, old, new }))),
        (xid.clone(), any::<u32>(), 0usize..6).prop_flat_map(
            |(xid, relation_id, n)| old(n).prop_map(move |old| Message::Delete(Delete { xid, relation_id, old }))
        ),
        (xid.clone(), 0u8..4, proptest::collection::vec(any::<u32>(), 0..5))
            .prop_map(|(xid, options, relation_ids)| Message::Truncate(Truncate { xid, options, relation_ids })),
        (xid, 0u8..2, lsn(), name(), value()).prop_map(|(xid, flags, lsn, prefix, content)| Message::Message(
            LogicalMessage { xid, flags, lsn, prefix, content }
        )),
    ]
}

/// Any message of protocol 4 with parallel streaming, as sent outside a
/// Stream Start block.
fn any_message() -> impl Strategy<Value = Message> {
    let control = prop_oneof![
        (lsn(), ts(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| Message::Begin(Begin {
            final_lsn,
            commit_time,
            xid
        })),
        (any::<u8>(), lsn(), lsn(), ts()).prop_map(|(flags, commit_lsn, end_lsn, commit_time)| Message::Commit(
            Commit { flags, commit_lsn, end_lsn, commit_time }
        )),
        (lsn(), name()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (any::<u32>(), 0u8..2)
            .prop_map(|(xid, first_segment)| Message::StreamStart(StreamStart { xid, first_segment })),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), ts()).prop_map(|(xid, flags, commit_lsn, end_lsn, commit_time)| {
            Message::StreamCommit(StreamCommit { xid, flags, commit_lsn, end_lsn, commit_time })
        }),
        (any::<u32>(), any::<u32>(), lsn(), ts()).prop_map(|(xid, subxid, l, t)| Message::StreamAbort(StreamAbort {
            xid,
            subxid,
            abort: Some((l, t))
        })),
        (lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(|(prepare_lsn, end_lsn, prepare_time, xid, gid)| {
            Message::BeginPrepare(BeginPrepare { prepare_lsn, end_lsn, prepare_time, xid, gid })
        }),
        (any::<bool>(), any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(
            |(stream, flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| {
                let p = Prepare { flags, prepare_lsn, end_lsn, prepare_time, xid, gid };
                if stream {
                    Message::StreamPrepare(p)
                } else {
                    Message::Prepare(p)
                }
            }
        ),
        (any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), name()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                Message::CommitPrepared(CommitPrepared { flags, commit_lsn, end_lsn, commit_time, xid, gid })
            }
        ),
        (any::<u8>(), lsn(), lsn(), ts(), ts(), any::<u32>(), name()).prop_map(
            |(flags, prepare_end_lsn, rollback_end_lsn, prepare_time, rollback_time, xid, gid)| {
                Message::RollbackPrepared(RollbackPrepared {
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                })
            }
        ),
    ];
    prop_oneof![data_message(false), control]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_message_round_trips_outside_a_stream(message in any_message()) {
        let raw = encode(&message);
        let options = v(4).with_parallel_streaming(true);
        prop_assert_eq!(decode_message(raw, &options, false)?, message);
    }

    #[test]
    fn every_data_message_round_trips_inside_a_stream(message in data_message(true)) {
        let raw = encode(&message);
        let options = v(2);
        prop_assert_eq!(decode_message(raw, &options, true)?, message);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), version in 1u32..=4, in_stream: bool) {
        let _ = decode_message(Bytes::from(bytes), &v(version), in_stream);
    }

    #[test]
    fn every_truncation_is_an_error(message in any_message()) {
        let raw = encode(&message);
        let options = v(4).with_parallel_streaming(true);
        for cut in 0..raw.len() {
            prop_assert!(decode_message(raw.slice(..cut), &options, false).is_err(), "cut at {} decoded", cut);
        }
        let mut longer = BytesMut::from(&raw[..]);
        longer.extend_from_slice(&[0]);
        prop_assert!(decode_message(longer.freeze(), &options, false).is_err());
    }
}

#[test]
fn decodes_an_insert_without_copying_its_values() {
    let raw = Bytes::from_static(b"I\x00\x00\x40\x00N\x00\x03t\x00\x00\x00\x0242nu");
    let Message::Insert(insert) = decode_message(raw.clone(), &DecodeOptions::v1(), false).unwrap() else {
        panic!("not an insert");
    };
    assert_eq!(insert.relation_id, 0x4000);
    let Column::Text(value) = &insert.new.columns[0] else { panic!("not text") };
    assert_eq!(&value[..], b"42");
    assert_eq!(value.as_ptr(), raw[13..].as_ptr(), "value is a slice of the input");
    assert_eq!(insert.new.columns[1..], [Column::Null, Column::UnchangedToast]);
}

#[test]
fn stream_messages_do_not_exist_in_protocol_1() {
    let raw = encode(&Message::StreamStop);
    assert_eq!(decode_message(raw, &v(1), false), Err(DecodeError::NotInProtocol { tag: b'E', version: 1 }));
    let raw = encode(&Message::Prepare(Prepare {
        flags: 0,
        prepare_lsn: Lsn(1),
        end_lsn: Lsn(2),
        prepare_time: PgTimestamp(0),
        xid: 7,
        gid: "g".into(),
    }));
    assert!(matches!(decode_message(raw, &v(2), false), Err(DecodeError::NotInProtocol { tag: b'P', .. })));
    assert!(DecodeOptions::new(0).is_err() && DecodeOptions::new(5).is_err());
}

#[test]
fn the_decoder_tracks_stream_blocks() {
    let mut decoder = Decoder::new(v(2));
    let insert = |xid| Message::Insert(Insert { xid, relation_id: 9, new: TupleData { columns: vec![Column::Null] } });
    decoder.decode(encode(&Message::StreamStart(StreamStart { xid: 700, first_segment: 1 }))).unwrap();
    assert!(decoder.in_stream());
    assert_eq!(decoder.decode(encode(&insert(Some(700)))).unwrap(), insert(Some(700)));
    decoder.decode(encode(&Message::StreamStop)).unwrap();
    assert!(!decoder.in_stream());
    assert_eq!(decoder.decode(encode(&insert(None))).unwrap(), insert(None));
}

#[test]
fn stream_abort_carries_its_lsn_only_with_parallel_streaming() {
    let with = Message::StreamAbort(StreamAbort { xid: 1, subxid: 2, abort: Some((Lsn(3), PgTimestamp(4))) });
    let without = Message::StreamAbort(StreamAbort { xid: 1, subxid: 2, abort: None });
    assert_eq!(decode_message(encode(&with), &v(4).with_parallel_streaming(true), false).unwrap(), with);
    assert_eq!(decode_message(encode(&without), &v(4), false).unwrap(), without);
    assert!(matches!(
        decode_message(encode(&with), &v(3), false),
        Err(DecodeError::TrailingBytes { tag: b'A', extra: 16 })
    ));
}

#[test]
fn malformed_messages_get_typed_errors() {
    let opts = DecodeOptions::v1();
    type Expect = fn(&DecodeError) -> bool;
    let cases: &[(&[u8], Expect)] = &[
        (b"", |e| *e == DecodeError::Empty),
        (b"Z", |e| matches!(e, DecodeError::UnknownType { tag: b'Z' })),
        (b"B\x00\x00", |e| matches!(e, DecodeError::Truncated { tag: b'B', .. })),
        (b"I\x00\x00\x00\x01X\x00\x00", |e| matches!(e, DecodeError::InvalidTupleMarker { marker: b'X', .. })),
        (b"I\x00\x00\x00\x01N\xff\xff", |e| matches!(e, DecodeError::Negative { .. })),
        (b"I\x00\x00\x00\x01N\x7f\xff", |e| matches!(e, DecodeError::CountExceedsInput { count: 32767, .. })),
        (b"I\x00\x00\x00\x01N\x00\x01x", |e| matches!(e, DecodeError::InvalidColumnKind { kind: b'x', .. })),
        (b"I\x00\x00\x00\x01N\x00\x01t\x7f\xff\xff\xff", |e| matches!(e, DecodeError::CountExceedsInput { .. })),
        (b"T\x7f\xff\xff\xff\x00", |e| matches!(e, DecodeError::CountExceedsInput { what: "relations", .. })),
        (b"O\x00\x00\x00\x00\x00\x00\x00\x01abc", |e| matches!(e, DecodeError::UnterminatedString { .. })),
        (b"O\x00\x00\x00\x00\x00\x00\x00\x01\xff\x00", |e| matches!(e, DecodeError::InvalidUtf8 { .. })),
        (b"R\x00\x00\x00\x01\x00t\x00x\x00\x00", |e| matches!(e, DecodeError::InvalidReplicaIdentity { value: b'x' })),
        (b"E", |e| matches!(e, DecodeError::NotInProtocol { .. })),
    ];
    for (bytes, expected) in cases {
        let err = decode_message(Bytes::from_static(bytes), &opts, false).unwrap_err();
        assert!(expected(&err), "{bytes:?} gave {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn encoding_refuses_what_the_protocol_cannot_carry() {
    let message = Message::Origin(Origin { commit_lsn: Lsn(1), name: "a\0b".into() });
    assert!(matches!(message.encode(&mut BytesMut::new()), Err(EncodeError::NulInString { .. })));
}
