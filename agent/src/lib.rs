//! tidemark-agent's library: the pieces the `tidemark-agent` daemon and the
//! `tidemark` command share. The binaries are thin clap layers over it.

pub mod config;
pub mod replication;
pub mod source;
pub mod store;
