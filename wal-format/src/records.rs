//! tidemark's own records. They travel inside the change stream as
//! transactional logical messages (`pg_logical_emit_message(true, prefix,
//! content)`), so each lands in its transaction, in order, and segments
//! store them as they store any pgoutput message. Content is JSON with a
//! version field, readable with `pg_logical_slot_peek_changes` and `jq`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::pgoutput::LogicalMessage;

pub const DDL_PREFIX: &str = "tidemark.ddl";
pub const SEQUENCE_PREFIX: &str = "tidemark.seq";
pub const MARK_PREFIX: &str = "tidemark.mark";
const RECORD_VERSION: u32 = 1;

/// A DDL command, emitted by tidemark's event trigger at `ddl_command_end`
/// or `sql_drop`, inside the transaction that ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlRecord {
    pub v: u32,
    /// `CREATE TABLE`, `ALTER TABLE`, `DROP TABLE`...
    pub command_tag: String,
    pub object_type: String,
    pub schema: Option<String>,
    pub object_identity: String,
}

/// One sequence's state, as `pg_sequences` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    pub schema: String,
    pub name: String,
    /// `None` when the sequence was never used (`last_value` is NULL).
    pub last_value: Option<i64>,
}

/// The values of all sequences at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceRecord {
    pub v: u32,
    pub sequences: Vec<SequenceValue>,
}

/// A named restore point, written by `tidemark mark NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRecord {
    pub v: u32,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TidemarkRecord {
    Ddl(DdlRecord),
    Sequences(SequenceRecord),
    Mark(MarkRecord),
}

/// Why a tidemark message's content cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{prefix} message content is not valid")]
    Invalid {
        prefix: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{prefix} message has version {version}; this tidemark reads version {RECORD_VERSION}")]
    UnsupportedVersion { prefix: String, version: u32 },
}

impl TidemarkRecord {
    pub fn prefix(&self) -> &'static str {
        match self {
            TidemarkRecord::Ddl(_) => DDL_PREFIX,
            TidemarkRecord::Sequences(_) => SEQUENCE_PREFIX,
            TidemarkRecord::Mark(_) => MARK_PREFIX,
        }
    }

    /// The record in a logical message; `None` when the message is not one
    /// of tidemark's.
    pub fn from_message(message: &LogicalMessage) -> Option<Result<TidemarkRecord, RecordError>> {
        let prefix = message.prefix.as_str();
        let content = &message.content[..];
        Some(match prefix {
            DDL_PREFIX => parse(prefix, content, |r: &DdlRecord| r.v).map(TidemarkRecord::Ddl),
            SEQUENCE_PREFIX => parse(prefix, content, |r: &SequenceRecord| r.v).map(TidemarkRecord::Sequences),
            MARK_PREFIX => parse(prefix, content, |r: &MarkRecord| r.v).map(TidemarkRecord::Mark),
            _ => return None,
        })
    }

    /// The content to pass to `pg_logical_emit_message`.
    pub fn to_content(&self) -> Bytes {
        let json = match self {
            TidemarkRecord::Ddl(r) => serde_json::to_vec(r),
            TidemarkRecord::Sequences(r) => serde_json::to_vec(r),
            TidemarkRecord::Mark(r) => serde_json::to_vec(r),
        };
        // Serializing these plain structs to a Vec cannot fail.
        Bytes::from(json.unwrap_or_default())
    }

    pub fn mark(name: impl Into<String>) -> Self {
        TidemarkRecord::Mark(MarkRecord { v: RECORD_VERSION, name: name.into() })
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    prefix: &str,
    content: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, RecordError> {
    let record: T =
        serde_json::from_slice(content).map_err(|source| RecordError::Invalid { prefix: prefix.to_owned(), source })?;
    match version(&record) {
        RECORD_VERSION => Ok(record),
        v => Err(RecordError::UnsupportedVersion { prefix: prefix.to_owned(), version: v }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lsn;

    fn message(prefix: &str, content: &[u8]) -> LogicalMessage {
        LogicalMessage {
            xid: None,
            flags: 1,
            lsn: Lsn(1),
            prefix: prefix.into(),
            content: Bytes::copy_from_slice(content),
        }
    }

    #[test]
    fn reads_tidemark_records_and_ignores_other_prefixes() {
        let mark = TidemarkRecord::mark("before-upgrade");
        let back = TidemarkRecord::from_message(&message(MARK_PREFIX, &mark.to_content())).unwrap().unwrap();
        assert_eq!(back, mark);
        assert!(TidemarkRecord::from_message(&message("synapse.other", b"{}")).is_none());
        let seq = br#"{"v":1,"sequences":[{"schema":"public","name":"events_stream_seq","last_value":42},{"schema":"public","name":"unused","last_value":null}]}"#;
        let Some(Ok(TidemarkRecord::Sequences(r))) = TidemarkRecord::from_message(&message(SEQUENCE_PREFIX, seq))
        else {
            panic!("sequence record not read");
        };
        assert_eq!(r.sequences[0].last_value, Some(42));
        assert_eq!(r.sequences[1].last_value, None);
    }

    #[test]
    fn reports_bad_content_and_unknown_versions() {
        assert!(matches!(
            TidemarkRecord::from_message(&message(MARK_PREFIX, b"not json")),
            Some(Err(RecordError::Invalid { .. }))
        ));
        assert!(matches!(
            TidemarkRecord::from_message(&message(MARK_PREFIX, br#"{"v":2,"name":"x"}"#)),
            Some(Err(RecordError::UnsupportedVersion { version: 2, .. }))
        ));
    }
}
