//! Fuzzes the pgoutput decoder: any bytes, under any protocol version and
//! stream state, give a message or a typed error, never a panic; and what
//! decodes re-encodes to the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use wal_format::pgoutput::{decode_message, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options; the rest is the message.
    let Some((&selector, message)) = data.split_first() else { return };
    let version = u32::from(selector & 0x3) + 1;
    let in_stream = selector & 0x4 != 0;
    let options = DecodeOptions::new(version).unwrap().with_parallel_streaming(selector & 0x8 != 0);
    let input = Bytes::copy_from_slice(message);
    if let Ok(decoded) = decode_message(input.clone(), &options, in_stream) {
        let mut again = BytesMut::new();
        decoded.encode(&mut again).expect("a decoded message encodes");
        assert_eq!(&again[..], &input[..], "decode then encode changed the bytes");
    }
});
