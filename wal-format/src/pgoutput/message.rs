//! The pgoutput messages of logical replication protocol versions 1 to 4, as
//! typed values. Byte strings (column values, message contents) are `Bytes`
//! slices of the buffer they were decoded from: decoding copies none of them.

use bytes::Bytes;

use crate::{Lsn, PgTimestamp};

/// A PostgreSQL object identifier.
pub type Oid = u32;
/// A PostgreSQL transaction identifier.
pub type Xid = u32;

/// One pgoutput message: the payload of one XLogData (`w`) frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
    BeginPrepare(BeginPrepare),
    Prepare(Prepare),
    CommitPrepared(CommitPrepared),
    RollbackPrepared(RollbackPrepared),
    StreamPrepare(Prepare),
}

impl Message {
    /// The message's type byte on the wire.
    pub fn tag(&self) -> u8 {
        match self {
            Message::Begin(_) => b'B',
            Message::Commit(_) => b'C',
            Message::Origin(_) => b'O',
            Message::Relation(_) => b'R',
            Message::Type(_) => b'Y',
            Message::Insert(_) => b'I',
            Message::Update(_) => b'U',
            Message::Delete(_) => b'D',
            Message::Truncate(_) => b'T',
            Message::Message(_) => b'M',
            Message::StreamStart(_) => b'S',
            Message::StreamStop => b'E',
            Message::StreamCommit(_) => b'c',
            Message::StreamAbort(_) => b'A',
            Message::BeginPrepare(_) => b'b',
            Message::Prepare(_) => b'P',
            Message::CommitPrepared(_) => b'K',
            Message::RollbackPrepared(_) => b'r',
            Message::StreamPrepare(_) => b'p',
        }
    }

    /// The streamed transaction a data message belongs to: `Some` only for
    /// Relation, Type, Insert, Update, Delete, Truncate and Message sent
    /// inside a Stream Start / Stream Stop block.
    pub fn stream_xid(&self) -> Option<Xid> {
        match self {
            Message::Relation(m) => m.xid,
            Message::Type(m) => m.xid,
            Message::Insert(m) => m.xid,
            Message::Update(m) => m.xid,
            Message::Delete(m) => m.xid,
            Message::Truncate(m) => m.xid,
            Message::Message(m) => m.xid,
            _ => None,
        }
    }

    /// The relations a change refers to (empty for other messages).
    pub fn relation_ids(&self) -> &[Oid] {
        match self {
            Message::Insert(m) => std::slice::from_ref(&m.relation_id),
            Message::Update(m) => std::slice::from_ref(&m.relation_id),
            Message::Delete(m) => std::slice::from_ref(&m.relation_id),
            Message::Truncate(m) => &m.relation_ids,
            _ => &[],
        }
    }
}

/// `B`: the start of a transaction, sent before its first change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    pub commit_time: PgTimestamp,
    pub xid: Xid,
}

/// `C`: the end of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by PostgreSQL 15; kept as sent.
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// The end of the commit record: the position to acknowledge.
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// `O`: the transaction came from another node by replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// The table's `relreplident` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            _ => return None,
        })
    }

    pub fn to_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }
}

/// `R`: a table's shape, sent before the first change to it in each walsender
/// session and again after it changes. Its LSN is 0/0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub xid: Option<Xid>,
    pub id: Oid,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: the column is part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: Oid,
    pub type_modifier: i32,
}

impl RelationColumn {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `Y`: a non-built-in data type a following Relation refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    pub xid: Option<Xid>,
    pub id: Oid,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
}

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// `n`: SQL NULL; in an old-key tuple also "not part of the key, not sent".
    Null,
    /// `u`: an unchanged TOASTed value that was not sent. Never NULL: at
    /// replay the column is left out of the SET list.
    UnchangedToast,
    /// `t`: the value in PostgreSQL's text output format.
    Text(Bytes),
    /// `b`: the value in binary format (only with the `binary` option).
    Binary(Bytes),
}

/// A row: one value per column of the relation, in column order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    pub columns: Vec<Column>,
}

/// Which old row an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: the replica identity key columns; the others come as `n`.
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldTuple {
    pub kind: OldKind,
    pub tuple: TupleData,
}

/// `I`: a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<Xid>,
    pub relation_id: Oid,
    pub new: TupleData,
}

/// `U`: a changed row. `old` is present when the key changed (`K`) or the
/// table has REPLICA IDENTITY FULL (`O`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<Xid>,
    pub relation_id: Oid,
    pub old: Option<OldTuple>,
    pub new: TupleData,
}

/// `D`: a removed row, identified by its key (`K`) or whole old row (`O`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<Xid>,
    pub relation_id: Oid,
    pub old: OldTuple,
}

/// `T`: one TRUNCATE statement over one or more tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<Xid>,
    /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relation_ids: Vec<Oid>,
}

impl Truncate {
    pub const CASCADE: u8 = 1;
    pub const RESTART_IDENTITY: u8 = 2;

    pub fn cascade(&self) -> bool {
        self.options & Self::CASCADE != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & Self::RESTART_IDENTITY != 0
    }
}

/// `M`: a message written with `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub xid: Option<Xid>,
    /// Bit 1: transactional (sent inside its transaction, in order).
    pub flags: u8,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

impl LogicalMessage {
    pub fn is_transactional(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `S`: the start of a block of changes of a large in-progress transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: Xid,
    /// 1 for the first block of this transaction, else 0.
    pub first_segment: u8,
}

/// `c`: a streamed transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: Xid,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// `A`: a streamed (sub)transaction aborted. When `subxid == xid` the whole
/// transaction aborted, else only that subtransaction's changes are void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: Xid,
    pub subxid: Xid,
    /// Abort LSN and time: protocol 4 with `streaming 'parallel'` only.
    pub abort: Option<(Lsn, PgTimestamp)>,
}

/// `b`: the start of a transaction prepared for two-phase commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_time: PgTimestamp,
    pub xid: Xid,
    pub gid: String,
}

/// `P` (Prepare) and `p` (Stream Prepare), which share a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub flags: u8,
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_time: PgTimestamp,
    pub xid: Xid,
    pub gid: String,
}

/// `K`: a prepared transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
    pub xid: Xid,
    pub gid: String,
}

/// `r`: a prepared transaction rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    pub flags: u8,
    pub prepare_end_lsn: Lsn,
    pub rollback_end_lsn: Lsn,
    pub prepare_time: PgTimestamp,
    pub rollback_time: PgTimestamp,
    pub xid: Xid,
    pub gid: String,
}

impl Message {
    /// The same message as sent outside a Stream Start block: a streamed
    /// transaction's changes, ready to be stored as a plain transaction.
    pub fn without_stream_xid(mut self) -> Message {
        match &mut self {
            Message::Relation(m) => m.xid = None,
            Message::Type(m) => m.xid = None,
            Message::Insert(m) => m.xid = None,
            Message::Update(m) => m.xid = None,
            Message::Delete(m) => m.xid = None,
            Message::Truncate(m) => m.xid = None,
            Message::Message(m) => m.xid = None,
            _ => {}
        }
        self
    }
}
