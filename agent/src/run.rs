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
use wal_format::{Lsn, PgTimestamp};

use crate::archive::{self, TxnBuffer};
use crate::config::{ArchiveUrl, Config, TableName};
use crate::metrics::{self, Metrics};
use crate::replication::{self, ReplicationConnection, StreamEvent};
use crate::segments::{OpenSegment, SealedSegment};
use crate::source::{self, conninfo, IdentityGuard, SlotState, SourceError};
use crate::store::{FsStore, ObjectStore, RetryPolicy, S3Settings, S3Store};
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
    let metrics = Metrics::new();
    let _endpoint = match config.metrics_addr {
        Some(addr) => {
            let (bound, task) = metrics::serve(addr, metrics.clone())
                .await
                .map_err(|source| AgentError::Metrics { addr: addr.to_string(), source })?;
            tracing::info!("metrics endpoint listening on http://{bound}/metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
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
    metrics.streaming.store(true, std::sync::atomic::Ordering::Relaxed);
    metrics.durable_lsn.set(watermark.0 as f64);
    let mut streamer = Streamer::new(&config, system.system_identifier, watermark, store, durable_tx, metrics.clone());
    let result = streamer.run(events_rx, &client, shutdown).await;
    metrics.streaming.store(false, std::sync::atomic::Ordering::Relaxed);
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
    /// Relations seen, with the name of each that is excluded.
    excluded: HashMap<Oid, Option<String>>,
    txn: Option<(wal_format::pgoutput::Begin, TxnBuffer)>,
    segment: Option<OpenSegment>,
    relations: RelationCache,
    segments: u64,
    transactions: u64,
    metrics: Metrics,
    /// Sealed segments not yet stored, oldest first, and their bytes.
    queue: std::collections::VecDeque<Queued>,
    queued_bytes: u64,
    /// When to retry storing the queue, and the current backoff.
    retry: Option<(tokio::time::Instant, Duration)>,
    /// Where the next segment starts: the end of the last sealed one.
    next_start: Lsn,
    /// Row changes in the open segment, and its earliest commit.
    segment_changes: u64,
    /// Row changes of the transaction being received.
    txn_changes: u64,
    segment_first_commit: Option<PgTimestamp>,
}

impl<'a> Streamer<'a> {
    fn new(
        config: &'a Config,
        system_identifier: u64,
        watermark: Lsn,
        store: Box<dyn ObjectStore>,
        durable_tx: watch::Sender<Lsn>,
        metrics: Metrics,
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
            metrics,
            segment_changes: 0,
            txn_changes: 0,
            queue: std::collections::VecDeque::new(),
            queued_bytes: 0,
            retry: None,
            next_start: watermark,
            segment_first_commit: None,
        }
    }

    /// Publishes the commit time of the oldest transaction not yet durable.
    fn update_pending(&self) {
        let receiving = self.txn.as_ref().map(|(b, _)| b.commit_time);
        // Sealed segments waiting for the store are not durable either.
        let queued = self.queue.iter().map(|q| q.sealed.header.min_commit_time).min();
        let oldest =
            [queued, self.segment_first_commit, receiving].into_iter().flatten().min().map_or(i64::MAX, |t| t.0);
        self.metrics.oldest_pending_commit.store(oldest, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lag in bytes and the slot's retention, from the server.
    async fn refresh_slot_metrics(&self, client: &tokio_postgres::Client) -> Result<(), AgentError> {
        let row = client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $2::text::pg_lsn)::float8,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8, wal_status
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot, &self.durable.to_string()],
            )
            .await
            .map_err(|source| SourceError::Sql { what: "reading the slot's position", source })?;
        if let Some(row) = row {
            self.metrics.lag_bytes.set(row.get::<_, Option<f64>>(0).unwrap_or(0.0).max(0.0));
            self.metrics.slot_retained_wal_bytes.set(row.get::<_, Option<f64>>(1).unwrap_or(0.0));
            self.metrics.set_wal_status(&row.get::<_, Option<String>>(2).unwrap_or_default());
        }
        Ok(())
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
        let mut slot_metrics = tokio::time::interval(Duration::from_secs(5));
        slot_metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline =
                self.segment.as_ref().map(|s| tokio::time::Instant::from_std(s.opened + self.config.segment_max_age));
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutting down: closing the open segment");
                    return self.drain().await;
                }
                _ = sleep_until(deadline) => self.close_segment().await?,
                _ = sleep_until(self.retry.map(|(at, _)| at)) => self.upload_queued().await?,
                // Past the spill limit, read nothing until the store catches up:
                // the server keeps the rest, and the stream task keeps talking.
                event = events.recv(), if self.queued_bytes < self.config.spill_max_bytes => match event {
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
                _ = slot_metrics.tick() => self.refresh_slot_metrics(client).await?,
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
                self.txn_changes = 0;
                self.update_pending();
            }
            Message::Commit(commit) => {
                let Some((_, mut buffer)) = self.txn.take() else {
                    return Err(AgentError::Stream { reason: "Commit without Begin".into() });
                };
                // Already archived before a restart: drop it (no duplicate).
                if commit.end_lsn <= self.durable {
                    tracing::debug!(end_lsn = %commit.end_lsn, "dropping a transaction the archive already holds");
                    self.update_pending();
                    return Ok(());
                }
                buffer.push(payload)?;
                self.segment_first_commit.get_or_insert(commit.commit_time);
                self.segment_changes += std::mem::take(&mut self.txn_changes);
                self.append(buffer).await?;
                self.update_pending();
            }
            Message::Relation(r) => {
                let name = TableName { schema: r.namespace.clone(), name: r.name.clone() };
                let excluded = self.excluded_names.contains(&name);
                self.excluded.insert(r.id, excluded.then(|| name.to_string()));
                if !excluded {
                    self.push_in_txn(payload)?;
                }
            }
            Message::Insert(_) | Message::Update(_) | Message::Delete(_) => {
                let id = message.relation_ids()[0];
                match self.excluded_name(id)? {
                    Some(table) => self.metrics.excluded_changes.with_label_values(&[&table]).inc(),
                    None => {
                        self.push_in_txn(payload)?;
                        self.txn_changes += 1;
                    }
                }
            }
            Message::Truncate(t) => {
                let mut kept = t.clone();
                kept.relation_ids.retain(|id| !matches!(self.excluded.get(id), Some(Some(_))));
                self.txn_changes += u64::from(!kept.relation_ids.is_empty());
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

    /// The name of an excluded table, `None` for a table that is archived.
    fn excluded_name(&self, id: Oid) -> Result<Option<String>, AgentError> {
        self.excluded
            .get(&id)
            .cloned()
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
                Some(OpenSegment::create(&self.config.spill_dir, self.system_identifier, self.next_start, cache)?);
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
        let started = std::time::Instant::now();
        let (sealed, relations) = segment.seal()?;
        self.relations = relations;
        self.next_start = sealed.header.end_lsn;
        self.queued_bytes += sealed.header.object_len();
        self.queue.push_back(Queued { sealed, changes: std::mem::take(&mut self.segment_changes), started });
        self.segment_first_commit = None;
        self.update_pending();
        match self.retry {
            // The store is failing: the retry timer tries again, not every new segment.
            Some(_) => Ok(()),
            None => self.upload_queued().await,
        }
    }

    /// Stores queued segments in order until the queue is empty or the store
    /// fails; a failure that may pass is retried later with backoff (the
    /// stream keeps going meanwhile), any other stops the agent.
    async fn upload_queued(&mut self) -> Result<(), AgentError> {
        while let Some(next) = self.queue.front() {
            let request = std::time::Instant::now();
            match next.sealed.upload(self.store.as_ref()).await {
                Ok(()) => {
                    self.retry = None;
                    self.metrics
                        .store_request_seconds
                        .with_label_values(&["put"])
                        .observe(request.elapsed().as_secs_f64());
                    let done = self.queue.pop_front().expect("the front exists");
                    self.made_durable(done);
                    self.update_pending();
                }
                Err(e) => {
                    self.metrics.store_errors.with_label_values(&["put"]).inc();
                    if e.retry_policy() == RetryPolicy::Fail {
                        return Err(e.into());
                    }
                    let backoff = self.retry.map(|(_, b)| (b * 2).min(MAX_BACKOFF)).unwrap_or(MIN_BACKOFF);
                    let at = tokio::time::Instant::now() + jitter(backoff);
                    tracing::warn!(
                        error = %e, queued = self.queue.len(), queued_bytes = self.queued_bytes, retry_in = ?backoff,
                        "cannot store a segment; keeping it and retrying (nothing beyond the archive is acknowledged)"
                    );
                    self.retry = Some((at, backoff));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn made_durable(&mut self, done: Queued) {
        let header = done.sealed.header;
        self.queued_bytes -= header.object_len();
        self.metrics.segment_close_seconds.observe(done.started.elapsed().as_secs_f64());
        self.metrics.segments.inc();
        self.metrics.transactions.inc_by(u64::from(header.transaction_count));
        self.metrics.changes.inc_by(done.changes);
        self.metrics.archived_bytes.inc_by(header.object_len());
        self.metrics.durable_lsn.set(header.end_lsn.0 as f64);
        if let Some(unix) = header.max_commit_time.to_unix_micros() {
            self.metrics.last_durable_commit_timestamp.set(unix as f64 / 1e6);
        }
        self.durable = header.end_lsn;
        self.segments += 1;
        tracing::info!(
            start = %header.start_lsn, end = %header.end_lsn, transactions = header.transaction_count,
            bytes = header.object_len(), "segment durable"
        );
        // The stream task may be gone at shutdown; nothing else listens.
        let _ = self.durable_tx.send(header.end_lsn);
    }

    /// At shutdown: the open segment is sealed; store what is queued,
    /// retrying for a while if the store is down.
    async fn drain(&mut self) -> Result<(), AgentError> {
        self.close_segment().await?;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_RETRY;
        while !self.queue.is_empty() {
            let at = self.retry.map(|(at, _)| at).unwrap_or_else(tokio::time::Instant::now);
            if at > deadline {
                return Err(AgentError::Unstored { segments: self.queue.len(), durable: self.durable });
            }
            tokio::time::sleep_until(at).await;
            self.upload_queued().await?;
        }
        Ok(())
    }
}

/// One sealed segment waiting to be stored, with what it counts for.
struct Queued {
    sealed: SealedSegment,
    changes: u64,
    started: std::time::Instant,
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a shutdown keeps trying to store what is queued.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(60);

/// Up to 20 % more, so that agents do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 5000.0)
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
