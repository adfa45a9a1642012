//! Every metric the agent exports, in one place, and the HTTP endpoint that
//! serves them (`/metrics`, and `/healthz` while the stream runs). Names
//! follow Prometheus conventions; labels have low cardinality (an operation
//! name, a table named in `exclude_tables`, a slot status).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The agent's metrics. Cloning shares them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub lag_bytes: Gauge,
    pub lag_seconds: Gauge,
    pub slot_retained_wal_bytes: Gauge,
    pub slot_wal_status: GaugeVec,
    pub last_durable_commit_timestamp: Gauge,
    pub durable_lsn: Gauge,
    pub transactions: IntCounter,
    pub changes: IntCounter,
    pub archived_bytes: IntCounter,
    pub excluded_changes: IntCounterVec,
    pub segments: IntCounter,
    pub store_errors: IntCounterVec,
    pub store_request_seconds: HistogramVec,
    pub segment_close_seconds: Histogram,
    /// Commit time (µs since 2000-01-01) of the oldest transaction received
    /// but not yet durable; `i64::MAX` when none.
    pub oldest_pending_commit: Arc<AtomicI64>,
    pub streaming: Arc<AtomicBool>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and distinct, so registration cannot fail.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let gauge = |name: &str, help: &str| register(&r, Gauge::new(name, help).expect("valid metric"));
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid metric"));
        let info = register(
            &r,
            GaugeVec::new(Opts::new("tidemark_agent_info", "The running tidemark-agent; always 1."), &["version"])
                .expect("valid metric"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        Metrics {
            lag_bytes: gauge(
                "tidemark_archive_lag_bytes",
                "WAL bytes between the server's current position and the archive's durable position.",
            ),
            lag_seconds: gauge(
                "tidemark_archive_lag_seconds",
                "Seconds since the commit of the oldest transaction received but not yet durable; 0 when none waits.",
            ),
            slot_retained_wal_bytes: gauge(
                "tidemark_slot_retained_wal_bytes",
                "WAL bytes the replication slot keeps on the server.",
            ),
            slot_wal_status: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "tidemark_slot_wal_status",
                        "1 for the slot's current wal_status (reserved, extended, unreserved, lost).",
                    ),
                    &["status"],
                )
                .expect("valid metric"),
            ),
            last_durable_commit_timestamp: gauge(
                "tidemark_last_durable_commit_timestamp_seconds",
                "Unix time of the last commit that is durable in the archive.",
            ),
            durable_lsn: gauge("tidemark_durable_lsn_bytes", "The archive's durable position as a WAL byte offset."),
            transactions: counter("tidemark_archived_transactions_total", "Transactions made durable in the archive."),
            changes: counter(
                "tidemark_archived_changes_total",
                "Row changes (inserts, updates, deletes, truncates) made durable in the archive.",
            ),
            archived_bytes: counter("tidemark_archived_bytes_total", "Bytes of segments stored (compressed)."),
            excluded_changes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tidemark_excluded_changes_total",
                        "Row changes dropped because their table is excluded.",
                    ),
                    &["table"],
                )
                .expect("valid metric"),
            ),
            segments: counter("tidemark_segments_written_total", "Segments stored."),
            store_errors: register(
                &r,
                IntCounterVec::new(
                    Opts::new("tidemark_store_errors_total", "Failed store requests, after the store's own retries."),
                    &["operation"],
                )
                .expect("valid metric"),
            ),
            store_request_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("tidemark_store_request_duration_seconds", "Duration of store requests.")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                    &["operation"],
                )
                .expect("valid metric"),
            ),
            segment_close_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tidemark_segment_close_duration_seconds",
                        "Time to finish and store a segment.",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                )
                .expect("valid metric"),
            ),
            oldest_pending_commit: Arc::new(AtomicI64::new(i64::MAX)),
            streaming: Arc::new(AtomicBool::new(false)),
            registry: r,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding gathered metrics into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    pub fn set_wal_status(&self, status: &str) {
        for s in ["reserved", "extended", "unreserved", "lost"] {
            self.slot_wal_status.with_label_values(&[s]).set(if s == status { 1.0 } else { 0.0 });
        }
    }

    /// Updates the lag in seconds from the oldest pending commit.
    pub fn refresh_lag_seconds(&self) {
        let oldest = self.oldest_pending_commit.load(Ordering::Relaxed);
        let lag = if oldest == i64::MAX {
            0.0
        } else {
            (wal_format::PgTimestamp::now().0.saturating_sub(oldest)).max(0) as f64 / 1e6
        };
        self.lag_seconds.set(lag);
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped;
/// returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head (it may come in pieces), at most 8 KiB.
                let mut buf = Vec::with_capacity(1024);
                let read_head = async {
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                };
                if tokio::time::timeout(std::time::Duration::from_secs(5), read_head).await.is_err() {
                    return;
                }
                let request = String::from_utf8_lossy(&buf);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, content_type, body) = match path {
                    "/metrics" => {
                        metrics.refresh_lag_seconds();
                        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render())
                    }
                    "/healthz" if metrics.streaming.load(Ordering::Relaxed) => {
                        ("200 OK", "text/plain", b"ok\n".to_vec())
                    }
                    "/healthz" => ("503 Service Unavailable", "text/plain", b"not streaming\n".to_vec()),
                    _ => ("404 Not Found", "text/plain", b"try /metrics or /healthz\n".to_vec()),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Metrics::new();
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), metrics.clone()).await.unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        metrics.streaming.store(true, Ordering::Relaxed);
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        metrics.transactions.inc_by(3);
        let body = get(addr, "/metrics").await;
        assert!(body.contains("tidemark_archived_transactions_total 3"), "{body}");
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
    }
}
