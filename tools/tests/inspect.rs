//! `tidemark inspect` on segment files: prints what a segment holds, and
//! names the damage in one that is corrupt.

use std::process::Command;

use bytes::{Bytes, BytesMut};
use wal_format::pgoutput::*;
use wal_format::segment::{encode_segment, RelationCache, SegmentOptions};
use wal_format::{Lsn, PgTimestamp, SegmentKey, TidemarkRecord};

fn segment() -> (Bytes, SegmentKey) {
    let t = PgTimestamp::parse_rfc3339("2026-11-24T08:30:00Z").unwrap();
    let text = |s: &str| Column::Text(Bytes::copy_from_slice(s.as_bytes()));
    let messages = [
        Message::Begin(Begin { final_lsn: Lsn(0x1000), commit_time: t, xid: 740 }),
        Message::Relation(Relation {
            xid: None,
            id: 16384,
            namespace: "public".into(),
            name: "events".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn { flags: 1, name: "id".into(), type_oid: 20, type_modifier: -1 },
                RelationColumn { flags: 0, name: "body".into(), type_oid: 25, type_modifier: -1 },
            ],
        }),
        Message::Insert(Insert {
            xid: None,
            relation_id: 16384,
            new: TupleData { columns: vec![text("1"), text("hello")] },
        }),
        Message::Message(LogicalMessage {
            xid: None,
            flags: 1,
            lsn: Lsn(0x1010),
            prefix: "tidemark.mark".into(),
            content: TidemarkRecord::mark("before-upgrade").to_content(),
        }),
        Message::Commit(Commit { flags: 0, commit_lsn: Lsn(0x1000), end_lsn: Lsn(0x1030), commit_time: t }),
    ];
    let raw = messages.iter().map(|m| {
        let mut b = BytesMut::new();
        m.encode(&mut b).unwrap();
        b.freeze()
    });
    let (bytes, _) = encode_segment(raw, SegmentOptions::new(1, Lsn(0x800)), RelationCache::new()).unwrap();
    (bytes, SegmentKey::new(Lsn(0x800), Lsn(0x1030)))
}

fn inspect(path: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark")).arg("inspect").arg(path).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_prints_the_header_and_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, key) = segment();
    let path = dir.path().join("segment.seg");
    std::fs::write(&path, &bytes).unwrap();
    let (ok, stdout, stderr) = inspect(&path, &["--records"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("segment       {key}")), "{stdout}");
    assert!(stdout.contains("LSN range     (0/800, 0/1030]"), "{stdout}");
    assert!(stdout.contains("commit times  2026-11-24T08:30:00Z .. 2026-11-24T08:30:00Z"), "{stdout}");
    assert!(stdout.contains("RELATION 16384 public.events (id*, body)"), "{stdout}");
    assert!(stdout.contains(r#"INSERT 16384 ("1", "hello")"#), "{stdout}");
    assert!(stdout.contains("tidemark.mark") && stdout.contains("before-upgrade"), "{stdout}");
    assert!(stdout.contains("verified: 5 records"), "{stdout}");

    let (ok, json, _) = inspect(&path, &["--json"]);
    assert!(ok);
    let summary: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(summary["end_lsn"], "0/1030");
    assert_eq!(summary["transactions"], 1);
}

#[test]
fn inspect_names_the_damage_in_a_corrupt_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = segment();
    let path = dir.path().join("segment.seg");
    let mut corrupt = bytes.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x10;
    std::fs::write(&path, &corrupt).unwrap();
    let (ok, _, stderr) = inspect(&path, &[]);
    assert!(!ok);
    assert!(stderr.contains("block 0 is corrupt: its data checksum does not match"), "{stderr}");

    std::fs::write(&path, &bytes[..40]).unwrap();
    let (ok, _, stderr) = inspect(&path, &[]);
    assert!(!ok);
    assert!(stderr.contains("segment ends early"), "{stderr}");

    let (ok, _, stderr) = inspect(&dir.path().join("missing.seg"), &[]);
    assert!(!ok);
    assert!(stderr.contains("cannot open") && stderr.contains("missing.seg"), "{stderr}");
}
