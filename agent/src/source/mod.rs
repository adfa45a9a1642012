//! The source database: how to reach it, and the setup that makes it safe to
//! archive (checks, the replica identity guard, the DDL event trigger, the
//! publication and the slot), idempotent and run at every start.

pub mod conninfo;
mod identity;
mod setup;
pub mod sql;
pub mod tls;

pub use identity::{IdentityChange, IdentityGuard};
pub use setup::{emit_mark, emit_sequences, prepare, read_sequences, ServerFacts, SlotState};

/// Why the source cannot be archived, each with the fix.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot connect to PostgreSQL at {target}; check that the server runs, and the host, port, user and password"
    )]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{what} failed")]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL {version} is too old: tidemark needs PostgreSQL 15 or later")]
    ServerTooOld { version: String },
    #[error("wal_level is {current}, but logical replication needs logical: run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL")]
    WalLevel { current: String },
    #[error("all {max} replication slots are in use: raise max_replication_slots (and restart PostgreSQL) or drop an unused slot")]
    NoFreeSlots { max: i32 },
    #[error("all {max} WAL senders are in use: raise max_wal_senders and restart PostgreSQL")]
    NoFreeSenders { max: i32 },
    #[error("role {role} may not replicate: run ALTER ROLE {role} REPLICATION; as a superuser")]
    NotReplicationRole { role: String },
    #[error("{what} needs a superuser once; connect as one, or run this SQL as one and start again:\n{sql}")]
    NeedsSuperuser { what: &'static str, sql: String },
    #[error("replica_identity = check-only and {} table(s) have no replica identity, so publishing them would make the application's UPDATE and DELETE fail; run this SQL (or set replica_identity = auto):\n{}", statements.len(), statements.join("\n"))]
    IdentityNeeded { statements: Vec<String> },
    #[error("could not lock table {table} to set its replica identity after {attempts} attempts (lock_timeout {lock_timeout}); the application holds it: try again at a quieter time")]
    IdentityLocked { table: String, attempts: u32, lock_timeout: &'static str },
    #[error("replication slot {slot} exists but {reason}; drop it (SELECT pg_drop_replication_slot('{slot}')) or choose another slot name")]
    SlotUnusable { slot: String, reason: String },
    #[error("replication slot {slot} was invalidated by the server (wal_status = lost: max_slot_wal_keep_size was exceeded while the agent was down); the archive cannot continue without a gap: drop the slot and take a new base")]
    SlotLost { slot: String },
}
