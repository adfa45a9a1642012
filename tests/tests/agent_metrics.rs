//! The agent's metrics endpoint during real load: valid exposition
//! (`promtool check metrics`), counters that agree with the archive, lag
//! that returns to zero, and `/healthz`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidemark_tests::agent::{http_get, metric_value, Process};
use tidemark_tests::reference::{archived_transactions, commit_end};
use tidemark_tests::PgCluster;
use wal_format::pgoutput::{decode_message, DecodeOptions, Message};

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path).unwrap()
}

fn value(metrics: &str, name: &str) -> f64 {
    metric_value(metrics, name).unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[test]
fn metrics_agree_with_the_archive_and_pass_promtool() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE e2e_one_time_keys_json (k text)")
        .unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut agent = Process::start(
        "tidemark-agent",
        &["--source", &pg.connection_string("app"), "--archive", &format!("file://{}", archive.path().display())],
        &[("TIDEMARK_SEGMENT_MAX_AGE", "200ms".into())],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(addr) = agent.metrics_addr() {
            break addr;
        }
        assert!(Instant::now() < deadline, "no metrics endpoint: {}", agent.output());
        std::thread::sleep(Duration::from_millis(50));
    };
    while get(addr, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "never healthy: {}", agent.output());
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..50 {
        pg.psql("app", &format!("INSERT INTO t VALUES ({i}, 'x'); UPDATE t SET v = 'y' WHERE id = {i}; INSERT INTO e2e_one_time_keys_json VALUES ('k{i}')")).unwrap();
    }
    let end: wal_format::Lsn = pg.psql("app", "SELECT pg_current_wal_lsn()").unwrap().parse().unwrap();
    while archived_transactions(archive.path()).last().is_none_or(|t| commit_end(t) < end) {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "not archived: {}", agent.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The slot figures refresh every 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);

    let archived = archived_transactions(archive.path());
    let changes = archived
        .iter()
        .flatten()
        .filter(|raw| {
            matches!(
                decode_message((*raw).clone(), &DecodeOptions::v1(), false).unwrap(),
                Message::Insert(_) | Message::Update(_) | Message::Delete(_) | Message::Truncate(_)
            )
        })
        .count();
    assert_eq!(value(&metrics, "tidemark_archived_transactions_total") as usize, archived.len());
    assert_eq!(value(&metrics, "tidemark_archived_changes_total") as usize, changes);
    assert_eq!(value(&metrics, "tidemark_excluded_changes_total{table=\"public.e2e_one_time_keys_json\"}"), 50.0);
    let segments = std::fs::read_dir(archive.path().join("segments")).unwrap().count();
    assert_eq!(value(&metrics, "tidemark_segments_written_total") as usize, segments);
    assert_eq!(value(&metrics, "tidemark_archive_lag_seconds"), 0.0, "nothing waits once archived");
    assert!(value(&metrics, "tidemark_archive_lag_bytes") < 1e6);
    assert_eq!(value(&metrics, "tidemark_slot_wal_status{status=\"reserved\"}"), 1.0);
    assert!(value(&metrics, "tidemark_last_durable_commit_timestamp_seconds") > 1.7e9);
    assert!(metrics.contains("tidemark_agent_info{version=\""), "{metrics}");
    assert!(metrics.contains("tidemark_store_request_duration_seconds_bucket{operation=\"put\""), "{metrics}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install-test-deps.sh)");
    promtool.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    assert_eq!(get(addr, "/nothing").0, 404);
    assert!(agent.terminate(Duration::from_secs(30)).unwrap().success());
}
