//! Golden tests on pgoutput bytes captured from a real PostgreSQL 15 by
//! `fixtures/capture.sh` (which runs `fixtures/workload.sql`). Each capture
//! must decode completely, re-encode to the same bytes, decode to what its
//! `.expected` file says (`TIDEMARK_UPDATE_GOLDEN=1` rewrites those), and show
//! the shapes the workload produced.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use wal_format::pgoutput::*;
use wal_format::segment::{decode_segment, encode_segment, RelationCache, SegmentOptions};
use wal_format::{Lsn, TidemarkRecord};

struct Captured {
    lsn: Lsn,
    raw: Bytes,
    message: Message,
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn unhex(s: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a lower-case hex digit: {c}"),
    };
    s.as_bytes().chunks(2).map(|p| digit(p[0]) << 4 | digit(p[1])).collect()
}

/// Decodes a capture and checks it against its `.expected` rendering.
fn load(name: &str, options: DecodeOptions) -> Vec<Captured> {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture exists; run fixtures/capture.sh");
    let mut decoder = Decoder::new(options);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.starts_with('#')) {
        let mut fields = line.split(' ');
        let lsn: Lsn = fields.next().unwrap().parse().unwrap();
        let raw = Bytes::from(unhex(fields.nth(1).unwrap()));
        let message = decoder.decode(raw.clone()).unwrap_or_else(|e| panic!("{name} line {}: {e}", n + 1));
        let mut again = BytesMut::new();
        message.encode(&mut again).unwrap();
        assert_eq!(again, raw, "{name} line {}: re-encoding differs", n + 1);
        out.push(Captured { lsn, raw, message });
    }
    let rendered: String = out.iter().map(|c| format!("{} {:?}\n", c.lsn, c.message)).collect();
    let expected_path = fixture_path(&format!("{name}.expected"));
    if std::env::var_os("TIDEMARK_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &rendered).unwrap();
    }
    let expected =
        std::fs::read_to_string(&expected_path).expect("expected file exists; TIDEMARK_UPDATE_GOLDEN=1 writes it");
    assert!(rendered == expected, "{name} decodes differently from {}", expected_path.display());
    out
}

fn v(version: u32) -> DecodeOptions {
    DecodeOptions::new(version).unwrap()
}

fn relation_named<'a>(captured: &'a [Captured], name: &str) -> &'a Relation {
    captured
        .iter()
        .find_map(|c| match &c.message {
            Message::Relation(r) if r.name == name => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Relation message for {name}"))
}

fn text(column: &Column) -> &str {
    match column {
        Column::Text(b) => std::str::from_utf8(b).unwrap(),
        other => panic!("not a text value: {other:?}"),
    }
}

#[test]
fn protocol_1_capture_shows_every_tuple_shape() {
    let captured = load("pg15-proto1.hex", DecodeOptions::v1());
    let messages: Vec<&Message> = captured.iter().map(|c| &c.message).collect();

    let mood = messages.iter().find_map(|m| match m {
        Message::Type(t) => Some(t),
        _ => None,
    });
    assert_eq!(mood.map(|t| (t.namespace.as_str(), t.name.as_str())), Some(("public", "mood")));

    let with_pk = relation_named(&captured, "with_pk");
    assert_eq!(with_pk.replica_identity, ReplicaIdentity::Default);
    assert_eq!(with_pk.columns.iter().filter(|c| c.is_key()).map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id"]);
    let first_insert = messages.iter().find_map(|m| match m {
        Message::Insert(i) if i.relation_id == with_pk.id => Some(i),
        _ => None,
    });
    let values = &first_insert.unwrap().new.columns;
    assert_eq!(
        values.iter().map(text).collect::<Vec<_>>(),
        ["1", "first", "happy", "2026-11-24 08:30:00+00", "1.5", "{a,\"b c\"}"]
    );

    // The key change sends the old key, other columns as 'n'.
    let key_change = messages.iter().find_map(|m| match m {
        Message::Update(u) if u.relation_id == with_pk.id && u.old.is_some() => u.old.as_ref(),
        _ => None,
    });
    let key_change = key_change.expect("an update with an old key");
    assert_eq!(key_change.kind, OldKind::Key);
    assert_eq!(text(&key_change.tuple.columns[0]), "2");
    assert!(key_change.tuple.columns[1..].iter().all(|c| *c == Column::Null));

    let toasty = relation_named(&captured, "toasty");
    let toast_update = messages.iter().find_map(|m| match m {
        Message::Update(u) if u.relation_id == toasty.id => Some(u),
        _ => None,
    });
    assert_eq!(toast_update.unwrap().new.columns[1], Column::UnchangedToast, "unchanged TOAST comes as 'u'");

    let full = relation_named(&captured, "full_rows");
    assert_eq!(full.replica_identity, ReplicaIdentity::Full);
    let full_old: Vec<&OldTuple> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) if u.relation_id == full.id => u.old.as_ref(),
            Message::Delete(d) if d.relation_id == full.id => Some(&d.old),
            _ => None,
        })
        .collect();
    assert_eq!(full_old.len(), 2);
    assert!(full_old.iter().all(|o| o.kind == OldKind::Full));
    assert_eq!(full_old[0].tuple.columns.iter().map(text).collect::<Vec<_>>(), ["1", "one"]);
    assert_eq!(full_old[1].tuple.columns[1], Column::Null);

    assert_eq!(relation_named(&captured, "by_index").replica_identity, ReplicaIdentity::Index);

    let truncates: Vec<&Truncate> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Truncate(t) => Some(t),
            _ => None,
        })
        .collect();
    let (parent, child) = (relation_named(&captured, "parent").id, relation_named(&captured, "child").id);
    assert!(truncates[0].cascade() && truncates[0].restart_identity());
    assert_eq!(truncates[0].relation_ids.iter().copied().collect::<HashSet<_>>(), HashSet::from([parent, child]));
    assert_eq!((truncates[1].options, &truncates[1].relation_ids[..]), (0, &[full.id][..]));

    let logical: Vec<&LogicalMessage> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert!(logical[0].is_transactional());
    assert_eq!(TidemarkRecord::from_message(logical[0]).unwrap().unwrap(), TidemarkRecord::mark("golden"));
    assert!(!logical[1].is_transactional());
    assert_eq!((&logical[1].prefix[..], &logical[1].content[..]), ("tidemark.test", &b"non-transactional"[..]));

    let origin = messages.iter().find_map(|m| match m {
        Message::Origin(o) => Some(o),
        _ => None,
    });
    assert_eq!(origin.map(|o| (o.name.as_str(), o.commit_lsn)), Some(("upstream", "0/ABCDEF".parse().unwrap())));
    assert!(captured.iter().all(|c| !c.raw.is_empty()));
}

#[test]
fn binary_capture_carries_binary_values() {
    let captured = load("pg15-proto1-binary.hex", DecodeOptions::v1());
    let binary = captured.iter().any(|c| match &c.message {
        Message::Insert(i) => i.new.columns.iter().any(|v| matches!(v, Column::Binary(_))),
        _ => false,
    });
    assert!(binary);
}

#[test]
fn protocol_1_capture_goes_through_a_segment_unchanged() {
    let captured = load("pg15-proto1.hex", DecodeOptions::v1());
    let options = SegmentOptions { block_size: 16 * 1024, ..SegmentOptions::new(1, Lsn(0)) };
    let (segment, _) = encode_segment(captured.iter().map(|c| c.raw.clone()), options, RelationCache::new()).unwrap();
    let (header, records) = decode_segment(&segment).unwrap();
    assert_eq!(records.len(), captured.len());
    assert!(records.iter().zip(&captured).all(|(r, c)| r.raw == c.raw));
    let commits = captured.iter().filter(|c| matches!(c.message, Message::Commit(_))).count();
    assert_eq!(header.transaction_count as usize, commits);
    assert!(header.block_count > 1);
    assert!(
        (segment.len() as f64) < 0.5 * captured.iter().map(|c| c.raw.len()).sum::<usize>() as f64,
        "segments compress"
    );
}

#[test]
fn protocol_2_capture_streams_large_transactions_and_aborts_a_subtransaction() {
    let captured = load("pg15-proto2-streaming.hex", v(2));
    let mut in_stream = None;
    let mut inserts_by_xid = std::collections::HashMap::<Xid, usize>::new();
    // (top-level xid of the stream block, xid the insert carries)
    let mut streamed_inserts = Vec::new();
    let mut aborts = Vec::new();
    let mut commits = Vec::new();
    for c in &captured {
        match &c.message {
            Message::StreamStart(s) => in_stream = Some(s.xid),
            Message::StreamStop => in_stream = None,
            Message::Insert(i) => {
                assert_eq!(i.xid.is_some(), in_stream.is_some(), "stream data carries its xid, other data does not");
                if let (Some(top), Some(xid)) = (in_stream, i.xid) {
                    *inserts_by_xid.entry(xid).or_default() += 1;
                    streamed_inserts.push((top, xid));
                }
            }
            Message::StreamAbort(a) => aborts.push(*a),
            Message::StreamCommit(c) => commits.push(*c),
            _ => {}
        }
    }
    let subtransaction = aborts.iter().find(|a| a.subxid != a.xid).expect("a rolled-back subtransaction");
    let whole = aborts.iter().find(|a| a.subxid == a.xid).expect("an aborted streamed transaction");
    // Rows streamed before the rollback carry the subtransaction's own xid;
    // the Stream Abort voids them (the rest were never sent).
    assert!((1..=800).contains(&inserts_by_xid[&subtransaction.subxid]), "the subtransaction's rows carry its xid");
    assert!((1..=800).contains(&inserts_by_xid[&whole.xid]));
    let committed = commits.iter().find(|c| c.xid == subtransaction.xid).expect("the streamed transaction committed");
    let aborted: HashSet<Xid> = aborts.iter().map(|a| a.subxid).collect();
    let kept = streamed_inserts.iter().filter(|(top, xid)| *top == committed.xid && !aborted.contains(xid)).count();
    assert_eq!(kept, 801, "800 rows before the savepoint and 1 after its rollback");
}

#[test]
fn protocol_3_capture_has_the_two_phase_messages() {
    let captured = load("pg15-proto3-two-phase.hex", v(3));
    let mut gids = Vec::new();
    for c in &captured {
        match &c.message {
            Message::BeginPrepare(m) => gids.push(('b', m.gid.clone())),
            Message::Prepare(m) => gids.push(('P', m.gid.clone())),
            Message::StreamPrepare(m) => gids.push(('p', m.gid.clone())),
            Message::CommitPrepared(m) => gids.push(('K', m.gid.clone())),
            Message::RollbackPrepared(m) => gids.push(('r', m.gid.clone())),
            _ => {}
        }
    }
    let expect = |tag, gid: &str| assert!(gids.contains(&(tag, gid.to_owned())), "no {tag} for {gid} in {gids:?}");
    expect('b', "tx-commit");
    expect('P', "tx-commit");
    expect('K', "tx-commit");
    expect('r', "tx-rollback");
    expect('p', "tx-big");
    expect('K', "tx-big");
}
