//! The task that owns the replication socket once streaming started. It
//! reads XLogData and keepalives and hands them on, answers keepalives that
//! ask for a reply at once, and sends a standby status update at least every
//! `status_interval` and whenever the durable position advances, whatever
//! the consumer is doing: when the consumer is behind, it stops reading
//! (TCP pushes back on the server) but keeps talking, so the walsender never
//! times out.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wal_format::{Lsn, PgTimestamp};

use super::connection::{copy_data_body, ReplicationConnection, Transport};
use super::wire::{parse_copy_data, split_frame, standby_status_update, CopyMessage};
use super::ReplicationError;

/// What the stream hands to its consumer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// One pgoutput message.
    XLogData { wal_start: Lsn, wal_end: Lsn, payload: bytes::Bytes },
    /// The server's WAL position while nothing is sent (for lag).
    Keepalive { wal_end: Lsn },
}

/// A running stream task.
pub struct StreamHandle {
    task: JoinHandle<Result<(), ReplicationError>>,
    stop: watch::Sender<bool>,
}

impl StreamHandle {
    /// Sends a last status update with the durable position, ends the
    /// stream (CopyDone, Terminate) and waits for the task.
    pub async fn stop(self) -> Result<(), ReplicationError> {
        let _ = self.stop.send(true);
        self.join().await
    }

    /// Waits for the task to end by itself (an error, or the server closing).
    pub async fn join(self) -> Result<(), ReplicationError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ReplicationError::Protocol { reason: format!("the stream task failed: {join}") }),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the stream task on a connection returned by `start_replication`.
/// `durable` carries the end LSN of the last transaction durable in the
/// archive: the only position ever acknowledged as flushed.
pub fn spawn(
    conn: ReplicationConnection,
    durable: watch::Receiver<Lsn>,
    events: mpsc::Sender<StreamEvent>,
    status_interval: Duration,
) -> StreamHandle {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(conn, durable, events, stop_rx, status_interval));
    StreamHandle { task, stop: stop_tx }
}

struct Status {
    writer: WriteHalf<Box<dyn Transport>>,
    /// The highest WAL end received.
    received: Lsn,
    out: BytesMut,
}

impl Status {
    async fn send(&mut self, durable: Lsn) -> Result<(), ReplicationError> {
        self.out.clear();
        standby_status_update(&mut self.out, self.received.max(durable), durable, PgTimestamp::now());
        self.writer.write_all(&self.out).await.map_err(ReplicationError::Io)?;
        self.writer.flush().await.map_err(ReplicationError::Io)
    }

    async fn finish(&mut self, durable: Lsn) -> Result<(), ReplicationError> {
        self.send(durable).await?;
        self.out.clear();
        // CopyDone, then Terminate.
        self.out.put_slice(b"c\x00\x00\x00\x04X\x00\x00\x00\x04");
        self.writer.write_all(&self.out).await.map_err(ReplicationError::Io)?;
        self.writer.flush().await.map_err(ReplicationError::Io)
    }
}

async fn run(
    conn: ReplicationConnection,
    mut durable: watch::Receiver<Lsn>,
    events: mpsc::Sender<StreamEvent>,
    mut stop: watch::Receiver<bool>,
    status_interval: Duration,
) -> Result<(), ReplicationError> {
    let (io, mut buf, target) = conn.into_parts();
    let (mut reader, writer) = tokio::io::split(io);
    let mut status = Status { writer, received: Lsn::ZERO, out: BytesMut::with_capacity(64) };
    let mut tick = tokio::time::interval(status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<StreamEvent> = None;
    loop {
        // Take complete frames from the buffer until one must be handed on.
        while pending.is_none() {
            let Some(frame) = split_frame(&mut buf)? else { break };
            match frame[0] {
                b'd' => match parse_copy_data(copy_data_body(frame))? {
                    CopyMessage::XLogData { wal_start, wal_end, payload, .. } => {
                        status.received = status.received.max(wal_end);
                        pending = Some(StreamEvent::XLogData { wal_start, wal_end, payload });
                    }
                    CopyMessage::Keepalive { wal_end, reply_requested, .. } => {
                        status.received = status.received.max(wal_end);
                        if reply_requested {
                            let d = *durable.borrow();
                            status.send(d).await?;
                        }
                        // Only informative: never wait for room to pass it on.
                        let _ = events.try_send(StreamEvent::Keepalive { wal_end });
                    }
                },
                b'c' => return Err(ReplicationError::Closed { target }),
                b'E' => {
                    let mut frame = frame;
                    return Err(match postgres_protocol::message::backend::Message::parse(&mut frame) {
                        Ok(Some(postgres_protocol::message::backend::Message::ErrorResponse(body))) => {
                            ReplicationError::from_error_fields(body.fields())
                        }
                        _ => ReplicationError::Protocol { reason: "unreadable error from the walsender".into() },
                    });
                }
                // Notices and parameter changes need no answer.
                _ => {}
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => {
                let d = *durable.borrow();
                return status.finish(d).await;
            }
            changed = durable.changed() => {
                if changed.is_err() {
                    // The consumer is gone: stop without acknowledging more.
                    return Ok(());
                }
                let d = *durable.borrow_and_update();
                status.send(d).await?;
            }
            _ = tick.tick() => {
                let d = *durable.borrow();
                status.send(d).await?;
            }
            permit = events.reserve(), if pending.is_some() => {
                match (permit, pending.take()) {
                    (Ok(permit), Some(event)) => permit.send(event),
                    // The consumer is gone.
                    _ => return Ok(()),
                }
            }
            read = reader.read_buf(&mut buf), if pending.is_none() => {
                if read.map_err(ReplicationError::Io)? == 0 {
                    return Err(ReplicationError::Closed { target });
                }
            }
        }
    }
}
