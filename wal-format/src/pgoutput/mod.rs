//! pgoutput, PostgreSQL's logical replication output plugin: its messages
//! (protocol versions 1 to 4), a decoder that copies no value and cannot be
//! made to panic, and an encoder that writes them back byte for byte.

mod decode;
mod encode;
mod message;

pub use decode::{decode_message, DecodeError, DecodeOptions, Decoder, MAX_PROTOCOL_VERSION};
pub use encode::EncodeError;
pub use message::*;

#[cfg(test)]
pub(crate) mod tests;
