//! The agent's main loop: prepare the source, open the archive, resume at
//! its watermark, and turn the change stream into durable segments,
//! acknowledging to PostgreSQL only what is durable.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use wal_format::pgoutput::{decode_message, DecodeOptions, Message, Oid};
use wal_format::segment::RelationCache;
use wal_format::Lsn;

use crate::archive::{self, TxnBuffer};
use crate::config::{ArchiveUrl, Config, TableName};
use crate::replication::{self, ReplicationConnection, StreamEvent};
use crate::segments::OpenSegment;
use crate::source::{self, conninfo, IdentityGuard, SlotState, SourceError};
use crate::store::{FsStore, ObjectStore, S3Settings, S3Store};
use crate::AgentError;

const APPLICATION_NAME: &str = "tidemark-agent";
/// How often the replica identity guard runs again while streaming.
const IDENTITY_RECHECK: Duration = Duration::from_secs(60);
/// A transaction's messages beyond this go to a temporary file.
const TXN_MEMORY_LIMIT: usize = 8 << 20;

/// What a run did, for the final log line and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub resumed_at: Lsn,
    pub durable: Lsn,
    pub segments: u64,
    pub transactions: u64,
}

/// Opens the archive a configuration names.
pub async fn open_store(config: &Config) -> Result<Box<dyn ObjectStore>, AgentError> {
    match &config.archive {
        ArchiveUrl::File(path) => Ok(Box::new(FsStore::open(path)?)),
        ArchiveUrl::S3 { bucket, prefix } => {
            let settings = S3Settings {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: config.s3.endpoint.clone(),
                region: config.s3.region.clone(),
                path_style: config.s3.path_style,
            };
            let store = S3Store::connect(settings).await?;
            // Fail now, before the source is touched, if the bucket is unusable.
            store.list(wal_format::ARCHIVE_MANIFEST_KEY).await?;
            Ok(Box::new(store))
        }
    }
}

/// Runs until `shutdown` completes (then closes the open segment, makes it
/// durable, acknowledges it and returns) or an error stops it.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<RunSummary, AgentError> {
    let params = conninfo::resolve(config.source.as_deref(), &conninfo::Environment::current())?;
    // The archive first: if it is unusable, the source is left untouched.
    let store = open_store(&config).await?;
    let client = source::sql::connect(&params, APPLICATION_NAME).await?;
    let facts = source::prepare(&client, &config).await?;
    for change in &facts.identity_changes {
        tracing::info!(table = %change.table, sql = %change.statement, "replica identity set");
    }
    let mut repl = ReplicationConnection::connect(&params, APPLICATION_NAME).await?;
    let system = repl.identify_system().await?;
    archive::open_identity(
        store.as_ref(),
        archive::new_identity(
            system.system_identifier,
            &facts.database,
            &facts.server_version,
            &config.slot,
            &config.publication,
        ),
    )
    .await?;
    if facts.slot == SlotState::Missing {
        let slot = repl.create_slot(&config.slot, false, false).await?;
        tracing::info!(slot = %slot.name, consistent_point = %slot.consistent_point, "created the replication slot");
    }
    let chain = archive::read_chain(store.as_ref()).await?;
    for (from, to) in &chain.gaps {
        tracing::warn!(%from, %to, "the archive has a gap between segments");
    }
    let watermark = chain.watermark();
    tracing::info!(archive = %store.describe(), %watermark, slot = %config.slot, "resuming the stream at the archive's watermark");
    let repl = repl.start_replication(&config.slot, watermark, &config.publication).await?;
    let (durable_tx, durable_rx) = watch::channel(watermark);
    let (events_tx, events_rx) = mpsc::channel(256);
    let stream = replication::spawn(repl, durable_rx, events_tx, Duration::from_secs(10));
    let mut streamer = Streamer::new(&config, system.system_identifier, watermark, store, durable_tx);
    let result = streamer.run(events_rx, &client, shutdown).await;
    let summary = streamer.summary();
    match result {
        Ok(()) => {
            stream.stop().await?;
            tracing::info!(durable = %summary.durable, segments = summary.segments, transactions = summary.transactions, "stopped; everything received up to the durable position is archived");
            Ok(summary)
        }
        Err(AgentError::StreamEnded) => match stream.join().await {
            // The stream task's own error says why the stream ended.
            Err(e) => Err(e.into()),
            Ok(()) => Err(AgentError::StreamEnded),
        },
        Err(e) => {
            drop(stream);
            Err(e)
        }
    }
}

/// Turns pgoutput messages into segments.
struct Streamer<'a> {
    config: &'a Config,
    system_identifier: u64,
    store: Box<dyn ObjectStore>,
    durable_tx: watch::Sender<Lsn>,
    /// The archive's durable end: where the next segment starts.
    durable: Lsn,
    resumed_at: Lsn,
    excluded_names: HashSet<TableName>,
    /// Relations seen, and whether each is excluded.
    excluded: HashMap<Oid, bool>,
    txn: Option<(wal_format::pgoutput::Begin, TxnBuffer)>,
    segment: Option<OpenSegment>,
    relations: RelationCache,
    segments: u64,
    transactions: u64,
}

impl<'a> Streamer<'a> {
    fn new(
        config: &'a Config,
        system_identifier: u64,
        watermark: Lsn,
        store: Box<dyn ObjectStore>,
        durable_tx: watch::Sender<Lsn>,
    ) -> Self {
        Streamer {
            config,
            system_identifier,
            store,
            durable_tx,
            durable: watermark,
            resumed_at: watermark,
            excluded_names: config.exclude_tables.iter().cloned().collect(),
            excluded: HashMap::new(),
            txn: None,
            segment: None,
            relations: RelationCache::new(),
            segments: 0,
            transactions: 0,
        }
    }

    fn summary(&self) -> RunSummary {
        RunSummary {
            resumed_at: self.resumed_at,
            durable: self.durable,
            segments: self.segments,
            transactions: self.transactions,
        }
    }

    async fn run(
        &mut self,
        mut events: mpsc::Receiver<StreamEvent>,
        client: &tokio_postgres::Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut sequences = tokio::time::interval(self.config.sequence_interval);
        sequences.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The event trigger guards tables as they are created; this catches
        // anything it could not (an identity dropped by hand, check-only mode).
        let mut identity = tokio::time::interval_at(tokio::time::Instant::now() + IDENTITY_RECHECK, IDENTITY_RECHECK);
        identity.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let guard = IdentityGuard::new(self.config.replica_identity, self.config.schemas.clone());
        let mut last_sequences = None;
        loop {
            let deadline =
                self.segment.as_ref().map(|s| tokio::time::Instant::from_std(s.opened + self.config.segment_max_age));
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutting down: closing the open segment");
                    return self.close_segment().await;
                }
                _ = sleep_until(deadline) => self.close_segment().await?,
                event = events.recv() => match event {
                    Some(StreamEvent::XLogData { payload, .. }) => self.handle(payload).await?,
                    Some(StreamEvent::Keepalive { .. }) => {}
                    None => return Err(AgentError::StreamEnded),
                },
                _ = sequences.tick() => {
                    // Only when a value moved: an idle database costs no segment.
                    let values = source::read_sequences(client, &self.config.schemas).await?;
                    if last_sequences.as_ref() != Some(&values) {
                        source::emit_sequences(client, &values).await?;
                        last_sequences = Some(values);
                    }
                }
                _ = identity.tick() => match guard.enforce(client).await {
                    Ok(changes) => {
                        for change in changes {
                            tracing::warn!(table = %change.table, sql = %change.statement, "a table had lost its replica identity; set it again");
                        }
                    }
                    Err(e @ SourceError::IdentityNeeded { .. }) => tracing::error!("{e}"),
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }

    async fn handle(&mut self, payload: Bytes) -> Result<(), AgentError> {
        let message = decode_message(payload.clone(), &DecodeOptions::v1(), false)?;
        match &message {
            Message::Begin(begin) => {
                if self.txn.is_some() {
                    return Err(AgentError::Stream { reason: "Begin inside a transaction".into() });
                }
                let mut buffer = TxnBuffer::new(TXN_MEMORY_LIMIT, &self.config.spill_dir);
                buffer.push(payload)?;
                self.txn = Some((*begin, buffer));
            }
            Message::Commit(commit) => {
                let Some((_, mut buffer)) = self.txn.take() else {
                    return Err(AgentError::Stream { reason: "Commit without Begin".into() });
                };
                // Already archived before a restart: drop it (no duplicate).
                if commit.end_lsn <= self.durable {
                    tracing::debug!(end_lsn = %commit.end_lsn, "dropping a transaction the archive already holds");
                    return Ok(());
                }
                buffer.push(payload)?;
                self.append(buffer).await?;
            }
            Message::Relation(r) => {
                let name = TableName { schema: r.namespace.clone(), name: r.name.clone() };
                let excluded = self.excluded_names.contains(&name);
                self.excluded.insert(r.id, excluded);
                if !excluded {
                    self.push_in_txn(payload)?;
                }
            }
            Message::Insert(_) | Message::Update(_) | Message::Delete(_) => {
                let id = message.relation_ids()[0];
                if !self.is_excluded(id)? {
                    self.push_in_txn(payload)?;
                }
            }
            Message::Truncate(t) => {
                let mut kept = t.clone();
                kept.relation_ids.retain(|id| !self.excluded.get(id).copied().unwrap_or(false));
                if kept.relation_ids.len() == t.relation_ids.len() {
                    self.push_in_txn(payload)?;
                } else if !kept.relation_ids.is_empty() {
                    let mut buf = BytesMut::new();
                    Message::Truncate(kept).encode(&mut buf)?;
                    self.push_in_txn(buf.freeze())?;
                }
            }
            Message::Message(m) if !m.is_transactional() => {
                // Outside any transaction: not tied to a commit, nothing to restore.
                tracing::debug!(prefix = %m.prefix, "ignoring a non-transactional logical message");
            }
            Message::Type(_) | Message::Origin(_) | Message::Message(_) => self.push_in_txn(payload)?,
            other => {
                return Err(AgentError::Stream {
                    reason: format!("unexpected {:?} message in protocol 1", char::from(other.tag())),
                })
            }
        }
        Ok(())
    }

    fn is_excluded(&self, id: Oid) -> Result<bool, AgentError> {
        self.excluded
            .get(&id)
            .copied()
            .ok_or(AgentError::Stream { reason: format!("change to relation {id} before its Relation message") })
    }

    fn push_in_txn(&mut self, payload: Bytes) -> Result<(), AgentError> {
        match &mut self.txn {
            Some((_, buffer)) => Ok(buffer.push(payload)?),
            // Type messages may precede a transaction's Begin in theory; keep
            // them for the cache only through the next Relation.
            None => Err(AgentError::Stream { reason: "change outside a transaction".into() }),
        }
    }

    /// Appends a committed transaction to the open segment, and closes the
    /// segment when it is full.
    async fn append(&mut self, buffer: TxnBuffer) -> Result<(), AgentError> {
        if self.segment.is_none() {
            let cache = std::mem::take(&mut self.relations);
            self.segment =
                Some(OpenSegment::create(&self.config.spill_dir, self.system_identifier, self.durable, cache)?);
        }
        let segment = self.segment.as_mut().expect("opened above");
        buffer.drain(|m| segment.push(m))?;
        self.transactions += 1;
        if segment.raw_len() >= self.config.segment_max_bytes {
            self.close_segment().await?;
        }
        Ok(())
    }

    /// Uploads the open segment and acknowledges its end.
    async fn close_segment(&mut self) -> Result<(), AgentError> {
        let Some(segment) = self.segment.take() else { return Ok(()) };
        if segment.transactions() == 0 {
            return Ok(());
        }
        let (header, relations) = segment.upload(self.store.as_ref()).await?;
        self.relations = relations;
        self.durable = header.end_lsn;
        self.segments += 1;
        tracing::info!(
            start = %header.start_lsn, end = %header.end_lsn, transactions = header.transaction_count,
            bytes = header.object_len(), "segment durable"
        );
        // The stream task may be gone at shutdown; nothing else listens.
        let _ = self.durable_tx.send(header.end_lsn);
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
