//! tidemark-agent's library: configuration, the source (connections, setup,
//! replication), the archive's object stores and segments, and the main
//! loop. The `tidemark-agent` and `tidemark` binaries are thin clap layers
//! over it.

pub mod archive;
pub mod config;
pub mod metrics;
pub mod replication;
mod run;
mod segments;
pub mod source;
pub mod store;

pub use run::{open_store, run, RunSummary};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    ConnInfo(#[from] source::conninfo::ConnInfoError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Replication(#[from] replication::ReplicationError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("archive storage failed")]
    Store(#[from] store::StoreError),
    #[error("cannot write a segment")]
    Segment(#[from] wal_format::segment::SegmentError),
    #[error("the walsender sent a message tidemark cannot decode")]
    Decode(#[from] wal_format::pgoutput::DecodeError),
    #[error("cannot re-encode a message")]
    Encode(#[from] wal_format::pgoutput::EncodeError),
    #[error("the change stream broke its rules: {reason}")]
    Stream { reason: String },
    #[error("stopped with {segments} segment(s) that the store did not take; nothing beyond {durable} was acknowledged, and the next start resumes there")]
    Unstored { segments: usize, durable: wal_format::Lsn },
    #[error("the change stream ended")]
    StreamEnded,
    #[error("cannot serve metrics on {addr}; set metrics_addr to a free address or off")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("local temporary file I/O failed (spill_dir)")]
    Io(#[from] std::io::Error),
}
