//! The store goes away under write load: the agent keeps the replication
//! connection alive, keeps what it cannot store, retries, and when the store
//! returns the archive is complete, with no loss and no duplicate. Metrics
//! show the lag growing during the outage and returning after.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{garage_store, s3_transactions};
use tidemark_tests::agent::{http_get, metric_value, Process};
use tidemark_tests::reference::{commit_end, reference_transactions, Transaction};
use tidemark_tests::{Garage, PgCluster};

fn scrape(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, metrics) = http_get(addr, "/metrics").unwrap();
    metric_value(&metrics, name).unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_under_load_loses_nothing() {
    let mut garage = Garage::start().unwrap();
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE events (id bigserial PRIMARY KEY, body text)").unwrap();
    let mut env = garage.env();
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    env.push(("TIDEMARK_SEGMENT_MAX_AGE", "200ms".into()));
    // This binary's only test: the S3 store below reads the same variables.
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let archive = format!("s3://{}/outage", garage.bucket());
    let mut agent =
        Process::start("tidemark-agent", &["--source", &pg.connection_string("app"), "--archive", &archive], &env)
            .unwrap();
    pg.wait_for_active_slot("app", "tidemark", Duration::from_secs(30)).unwrap();
    pg.psql("app", "SELECT 'ok' FROM pg_create_logical_replication_slot('reference', 'pgoutput')").unwrap();
    let metrics = agent.metrics_addr().expect("the agent serves metrics");

    let stop = AtomicBool::new(false);
    /// Stops the writer however the scope ends, so a failed assertion
    /// cannot leave it writing forever.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop_writer = StopOnDrop(&stop);
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                pg.psql("app", &format!("INSERT INTO events (body) VALUES ('event {i}')")).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        garage.stop();
        let outage = Instant::now();
        let reply = || {
            pg.psql("app", "SELECT extract(epoch FROM reply_time) FROM pg_stat_replication WHERE application_name = 'tidemark-agent'").unwrap()
        };
        let first_reply: f64 = reply().parse().unwrap();
        std::thread::sleep(Duration::from_secs(60));
        assert!(agent.try_wait().is_none(), "the agent gave up during the outage: {}", agent.output());
        let last_reply: f64 = reply().parse().unwrap();
        assert!(
            last_reply - first_reply >= 20.0,
            "status updates kept flowing during the outage ({first_reply} -> {last_reply})"
        );
        assert!(scrape(metrics, "tidemark_archive_lag_seconds") > 30.0, "the lag grows while the store is down");
        assert!(agent.output().contains("cannot store a segment"), "{}", agent.output());
        garage.restart().unwrap();
        eprintln!("store back after {:?}", outage.elapsed());
        std::thread::sleep(Duration::from_secs(3));
    });

    let reference = reference_transactions(&pg, "app", "reference", 0);
    let (first, last) = (commit_end(&reference[0]), commit_end(reference.last().unwrap()));
    let store = garage_store(&garage, "outage").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while s3_transactions(&store).await.last().is_none_or(|t| commit_end(t) < last) {
        assert!(Instant::now() < deadline, "the archive did not catch up after the outage: {}", agent.output());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(metrics, "tidemark_archive_lag_seconds") > 2.0 {
        assert!(Instant::now() < deadline, "the lag did not return near zero");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.terminate(Duration::from_secs(60)).unwrap().success(), "{}", agent.output());
    let archived: Vec<Transaction> =
        s3_transactions(&store).await.into_iter().filter(|t| (first..=last).contains(&commit_end(t))).collect();
    assert_eq!(archived.len(), reference.len(), "every transaction once");
    assert!(archived == reference, "the archive after the outage differs from the reference");
    assert!(reference.len() > 1000, "writes went on during the outage ({} transactions)", reference.len());
}
