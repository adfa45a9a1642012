//! `cargo bench -p tidemark-tests --bench agent`: tidemark-agent against a
//! real PostgreSQL 15, beside its anchor measured in the same run.
//!
//! 1. Backlog drain: pgbench (4 clients, 30 s) writes while the agent is
//!    stopped; then the agent drains the backlog into a file archive, and
//!    `pg_recvlogical` drains the same backlog from a second slot into a
//!    file. Goal: at least 90 % of pg_recvlogical's rate.
//! 2. Commit-to-durable latency under steady pgbench load at the default
//!    segment age: each transaction's commit time against the time its
//!    segment was stored. Goal: p99 at most 1 s.
//! 3. The agent's peak RSS. Goal: under 64 MiB steady.
//!
//! `TIDEMARK_BENCH_SECONDS` (default 30) sets the backlog's pgbench run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tidemark_tests::agent::Process;
use tidemark_tests::PgCluster;
use wal_format::pgoutput::Message;
use wal_format::segment::SegmentReader;
use wal_format::{Lsn, PgTimestamp};

fn pgbench(pg: &PgCluster, args: &[&str]) -> String {
    let out = Command::new(pg.bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", "postgres"])
        .args(args)
        .arg("bench")
        .output()
        .expect("pgbench runs");
    assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

use tidemark_tests::reference::segment_keys as segments;

fn start_agent(pg: &PgCluster, archive: &Path) -> Process {
    Process::start(
        "tidemark-agent",
        &["--source", &pg.connection_string("bench"), "--archive", &format!("file://{}", archive.display())],
        &[("TIDEMARK_LOG", "warn".into())],
    )
    .expect("tidemark-agent starts")
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("agent benchmark: run it with cargo bench -p tidemark-tests --bench agent");
        return;
    }
    let seconds: u64 = std::env::var("TIDEMARK_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let pg = PgCluster::start_with(&[("max_wal_size", "8GB"), ("shared_buffers", "256MB")]).unwrap();
    pg.create_database("bench").unwrap();
    pgbench(&pg, &["-i", "-q", "-s", "10"]);
    let archive = tempfile::tempdir().unwrap();

    // Set the source up, then stop the agent so that a backlog builds.
    let mut agent = start_agent(&pg, archive.path());
    pg.wait_for_active_slot("bench", "tidemark", Duration::from_secs(60)).unwrap();
    assert!(agent.terminate(Duration::from_secs(30)).unwrap().success());
    pg.psql("bench", "SELECT 'ok' FROM pg_create_logical_replication_slot('recvlogical', 'pgoutput')").unwrap();
    let report = pgbench(&pg, &["-n", "-c", "4", "-j", "2", "-T", &seconds.to_string()]);
    let transactions: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("pgbench reports its transactions");
    let end: Lsn = pg.psql("bench", "SELECT pg_current_wal_lsn()").unwrap().parse().unwrap();
    let backlog_mb = pg.psql("bench", &format!("SELECT round(pg_wal_lsn_diff('{end}', restart_lsn) / 1e6) FROM pg_replication_slots WHERE slot_name = 'tidemark'")).unwrap();

    // The agent drains the backlog.
    let started = Instant::now();
    let mut agent = start_agent(&pg, archive.path());
    loop {
        if segments(archive.path()).last().is_some_and(|k| k.end >= end) {
            break;
        }
        assert!(agent.try_wait().is_none(), "the agent died: {}", agent.output());
        assert!(started.elapsed() < Duration::from_secs(600), "the agent did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let agent_secs = started.elapsed().as_secs_f64();
    let drain_rss = peak_rss_mib(agent.pid());

    // pg_recvlogical drains the same backlog from its own slot.
    let out = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let status = Command::new(pg.bin_dir().join("pg_recvlogical"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "bench",
            "--slot",
            "recvlogical",
            "--start",
            "--no-loop",
        ])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=tidemark",
            "-o",
            "messages=true",
            "-E",
            &end.to_string(),
            "-f",
        ])
        .arg(out.path())
        .status()
        .unwrap();
    let recv_secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "pg_recvlogical failed");

    println!("backlog: {transactions} pgbench transactions ({seconds} s, 4 clients), {backlog_mb} MB of WAL");
    println!(
        "{:<40} {:>8.2} s {:>10.0} transactions/s",
        "pg_recvlogical (anchor) to a file",
        recv_secs,
        transactions as f64 / recv_secs
    );
    println!(
        "{:<40} {:>8.2} s {:>10.0} transactions/s  {:.0} % of the anchor (goal >= 90 %), peak RSS {:.1} MiB",
        "tidemark-agent to a file archive",
        agent_secs,
        transactions as f64 / agent_secs,
        100.0 * recv_secs / agent_secs,
        drain_rss
    );

    // Steady load: commit-to-durable latency at the default segment age.
    let steady_from = segments(archive.path()).last().map(|k| k.end).unwrap_or_default();
    pgbench(&pg, &["-n", "-c", "2", "-j", "2", "-R", "200", "-T", "20"]);
    std::thread::sleep(Duration::from_secs(2));
    let steady_rss = peak_rss_mib(agent.pid());
    assert!(agent.terminate(Duration::from_secs(30)).unwrap().success());
    let mut latencies = Vec::new();
    for key in segments(archive.path()).into_iter().filter(|k| k.start >= steady_from) {
        let path = archive.path().join(key.to_string());
        let stored = std::fs::metadata(&path).unwrap().modified().unwrap().duration_since(UNIX_EPOCH).unwrap();
        let stored = PgTimestamp::from_unix_micros(stored.as_micros() as i64).unwrap();
        for record in SegmentReader::new(std::fs::File::open(&path).unwrap()).unwrap() {
            if let Message::Commit(c) = record.unwrap().message {
                latencies.push((stored.0 - c.commit_time.0) as f64 / 1e6);
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "steady load (pgbench -R 200, default segment age): {} transactions, commit-to-durable p50 {:.3} s, p99 {:.3} s (goal p99 <= 1 s), peak RSS {:.1} MiB (goal < 64 MiB)",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        steady_rss
    );
}
