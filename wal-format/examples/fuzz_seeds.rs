//! Writes the fuzzers' seed corpora from the golden captures:
//! `fuzz/corpus/pgoutput/seed-*` (a few messages of every type, each behind
//! the options byte the target reads) and `fuzz/corpus/segment/seed-*`
//! (segments encoded from the protocol-1 capture).
//!
//!     cargo run -p wal-format --example fuzz_seeds

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use wal_format::pgoutput::{DecodeOptions, Decoder};
use wal_format::segment::{encode_segment, RelationCache, SegmentOptions};
use wal_format::Lsn;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

fn messages(root: &Path, name: &str) -> Vec<Bytes> {
    let text = std::fs::read_to_string(root.join("tests/fixtures").join(name)).expect("fixture");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(' ').nth(2))
        .map(|h| Bytes::from(unhex(h)))
        .collect()
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pgoutput_dir = root.join("fuzz/corpus/pgoutput");
    let segment_dir = root.join("fuzz/corpus/segment");
    std::fs::create_dir_all(&pgoutput_dir)?;
    std::fs::create_dir_all(&segment_dir)?;

    // Options byte: bits 0-1 protocol version - 1, bit 2 in a stream block.
    let captures = [
        ("pg15-proto1.hex", 1u32),
        ("pg15-proto1-binary.hex", 1),
        ("pg15-proto2-streaming.hex", 2),
        ("pg15-proto3-two-phase.hex", 3),
    ];
    let mut written = 0;
    for (name, version) in captures {
        let mut decoder = Decoder::new(DecodeOptions::new(version).unwrap());
        let mut per_tag = HashMap::<(u8, bool), usize>::new();
        for raw in messages(root, name) {
            let in_stream = decoder.in_stream();
            let Ok(message) = decoder.decode(raw.clone()) else { continue };
            let seen = per_tag.entry((message.tag(), in_stream)).or_default();
            *seen += 1;
            if *seen > 3 {
                continue;
            }
            let options = (version - 1) as u8 | if in_stream { 4 } else { 0 };
            let mut seed = vec![options];
            seed.extend_from_slice(&raw);
            std::fs::write(pgoutput_dir.join(format!("seed-{name}-{written:04}")), seed)?;
            written += 1;
        }
    }

    // Segments: one transaction, a few, and many across small blocks.
    let proto1 = messages(root, "pg15-proto1.hex");
    let commits: Vec<usize> =
        proto1.iter().enumerate().filter(|(_, raw)| raw.first() == Some(&b'C')).map(|(i, _)| i + 1).collect();
    for (n, &end) in [commits[0], commits[4], commits[12], *commits.last().unwrap()].iter().enumerate() {
        let options = SegmentOptions { block_size: 4096, ..SegmentOptions::new(1, Lsn(0)) };
        let (segment, _) =
            encode_segment(proto1[..end].iter().cloned(), options, RelationCache::new()).expect("fixture encodes");
        // The target reads a chunk-size byte first.
        let mut seed = vec![[255u8, 7, 64, 1][n]];
        seed.extend_from_slice(&segment);
        std::fs::write(segment_dir.join(format!("seed-{n}")), seed)?;
    }
    println!("wrote {written} pgoutput seeds and 4 segment seeds");
    Ok(())
}
