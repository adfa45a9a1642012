//! Fuzzes the segment decoder: any bytes, fed in pieces of any size, give
//! records and then an end or a typed error, never a panic; and the
//! in-memory and streaming decoders agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal_format::segment::{decode_segment, SegmentDecoder, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let whole = decode_segment(bytes);
    let mut decoder = SegmentDecoder::new();
    let mut pieces = bytes.chunks(usize::from(chunk).max(1));
    let mut records = Vec::new();
    let streamed = loop {
        match decoder.step() {
            Ok(Step::Record(r)) => records.push(r),
            Ok(Step::End) => break Ok(()),
            Ok(Step::NeedInput) => match pieces.next() {
                Some(p) => decoder.feed(p),
                None => decoder.finish_input(),
            },
            Err(e) => break Err(e),
        }
    };
    match (whole, streamed) {
        (Ok((_, all)), Ok(())) => assert_eq!(all, records),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("decoders disagree: {:?} vs {:?}", a.map(|_| ()), b),
    }
});
