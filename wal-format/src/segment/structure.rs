//! The rules a segment's record stream obeys, checked the same way by the
//! writer (so it never writes what a reader would refuse) and the reader.
//!
//! Transactions are whole and in commit order (`end_lsn` strictly growing,
//! all above the segment's start); every change follows the Relation message
//! of its table within the segment, with one value per column.

use std::collections::HashMap;

use crate::pgoutput::{Message, Oid, TupleData};
use crate::{Lsn, PgTimestamp};

use super::SegmentError;

/// What the checked records add up to; the header must say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub records: u64,
    pub transactions: u32,
    pub end_lsn: Lsn,
    pub min_commit_time: PgTimestamp,
    pub max_commit_time: PgTimestamp,
}

#[derive(Debug)]
pub(crate) struct Structure {
    open: Option<crate::pgoutput::Begin>,
    /// Relations declared so far in this segment, with their column counts.
    relations: HashMap<Oid, usize>,
    last_end: Lsn,
    records: u64,
    transactions: u32,
    commit_times: Option<(PgTimestamp, PgTimestamp)>,
}

impl Structure {
    pub fn new(start_lsn: Lsn) -> Self {
        Structure {
            open: None,
            relations: HashMap::new(),
            last_end: start_lsn,
            records: 0,
            transactions: 0,
            commit_times: None,
        }
    }

    pub fn declares(&self, relation_id: Oid) -> bool {
        self.relations.contains_key(&relation_id)
    }

    /// Records checked so far: the index of the next one.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Checks the next record and takes it into account.
    pub fn check(&mut self, message: &Message) -> Result<(), SegmentError> {
        let record = self.records;
        let rule = |reason| Err(SegmentError::Structure { record, reason });
        match message {
            Message::Begin(begin) => {
                if self.open.is_some() {
                    return rule("Begin inside an open transaction");
                }
                self.open = Some(*begin);
            }
            Message::Commit(commit) => {
                let Some(begin) = self.open.take() else {
                    return rule("Commit without a Begin");
                };
                if commit.commit_lsn != begin.final_lsn || commit.commit_time != begin.commit_time {
                    return rule("Commit does not match its Begin's final LSN and commit time");
                }
                if commit.end_lsn <= commit.commit_lsn {
                    return rule("Commit's end LSN is not after its commit LSN");
                }
                if commit.end_lsn <= self.last_end {
                    return Err(SegmentError::EndLsnOrder { record, end_lsn: commit.end_lsn, previous: self.last_end });
                }
                self.last_end = commit.end_lsn;
                self.transactions += 1;
                let t = commit.commit_time;
                self.commit_times = Some(match self.commit_times {
                    None => (t, t),
                    Some((lo, hi)) => (lo.min(t), hi.max(t)),
                });
            }
            Message::Relation(relation) => {
                self.relations.insert(relation.id, relation.columns.len());
            }
            Message::Type(_) => {}
            Message::Origin(_) => {
                if self.open.is_none() {
                    return rule("Origin outside a transaction");
                }
            }
            Message::Message(m) => {
                if m.is_transactional() != self.open.is_some() {
                    return rule("transactional message outside a transaction, or non-transactional inside one");
                }
            }
            Message::Insert(m) => self.check_change(record, m.relation_id, [Some(&m.new), None])?,
            Message::Update(m) => {
                self.check_change(record, m.relation_id, [Some(&m.new), m.old.as_ref().map(|o| &o.tuple)])?
            }
            Message::Delete(m) => self.check_change(record, m.relation_id, [Some(&m.old.tuple), None])?,
            Message::Truncate(m) => {
                for &relation_id in &m.relation_ids {
                    self.check_change(record, relation_id, [None, None])?;
                }
            }
            other => return Err(SegmentError::UnexpectedMessage { record, tag: other.tag() }),
        }
        self.records += 1;
        Ok(())
    }

    fn check_change(&self, record: u64, relation_id: Oid, tuples: [Option<&TupleData>; 2]) -> Result<(), SegmentError> {
        if self.open.is_none() {
            return Err(SegmentError::Structure { record, reason: "change outside a transaction" });
        }
        let expected =
            *self.relations.get(&relation_id).ok_or(SegmentError::UnknownRelation { record, relation_id })?;
        for tuple in tuples.into_iter().flatten() {
            if tuple.columns.len() != expected {
                return Err(SegmentError::ColumnCount { record, relation_id, expected, actual: tuple.columns.len() });
            }
        }
        Ok(())
    }

    /// The totals of a complete segment: at least one transaction, none open.
    pub fn finish(&self) -> Result<Totals, SegmentError> {
        if self.open.is_some() {
            return Err(SegmentError::OpenTransaction);
        }
        let (min_commit_time, max_commit_time) = self.commit_times.ok_or(SegmentError::Empty)?;
        Ok(Totals {
            records: self.records,
            transactions: self.transactions,
            end_lsn: self.last_end,
            min_commit_time,
            max_commit_time,
        })
    }
}
