//! tidemark-agent archiving to S3 (a real Garage server): the archive holds
//! exactly what a reference slot saw, read back through the S3 store.

use std::time::{Duration, Instant};

mod common;

use common::{garage_store, s3_transactions};
use tidemark_agent::store::ObjectStore;
use tidemark_tests::agent::Process;
use tidemark_tests::reference::{commit_end, reference_transactions, Transaction};
use tidemark_tests::{Garage, PgCluster};

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_archives_to_s3_exactly_what_was_committed() {
    let garage = Garage::start().unwrap();
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE events (id int PRIMARY KEY, body text); CREATE TABLE memberships (user_id text, room text)",
    )
    .unwrap();
    let mut env = garage.env();
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    env.push(("TIDEMARK_SEGMENT_MAX_AGE", "200ms".into()));
    // This binary's only test: the S3 store below reads the same variables.
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let archive = format!("s3://{}/archives/app", garage.bucket());
    let mut agent =
        Process::start("tidemark-agent", &["--source", &pg.connection_string("app"), "--archive", &archive], &env)
            .unwrap();
    if let Err(e) = pg.wait_for_active_slot("app", "tidemark", Duration::from_secs(30)) {
        panic!("the agent did not start: {e}\n{}", agent.output());
    }
    pg.psql("app", "SELECT 'ok' FROM pg_create_logical_replication_slot('reference', 'pgoutput')").unwrap();
    for i in 0..200 {
        pg.psql(
            "app",
            &format!("INSERT INTO events VALUES ({i}, 'event {i}'); INSERT INTO memberships VALUES ('@u{i}:hs', '!r')"),
        )
        .unwrap();
    }
    pg.psql("app", "UPDATE memberships SET room = '!s' WHERE user_id LIKE '@u1%'; DELETE FROM events WHERE id % 2 = 0")
        .unwrap();
    let reference = reference_transactions(&pg, "app", "reference", 0);
    let (first, last) = (commit_end(&reference[0]), commit_end(reference.last().unwrap()));
    let store = garage_store(&garage, "archives/app").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3_transactions(&store).await.last().is_none_or(|t| commit_end(t) < last) {
        assert!(Instant::now() < deadline, "the archive did not catch up: {}", agent.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.terminate(Duration::from_secs(30)).unwrap().success(), "{}", agent.output());
    let archived: Vec<Transaction> =
        s3_transactions(&store).await.into_iter().filter(|t| (first..=last).contains(&commit_end(t))).collect();
    assert_eq!(archived.len(), reference.len());
    assert!(archived == reference, "the S3 archive differs from the reference");
    assert!(store.get("archive.json").await.is_ok(), "the archive's identity is stored");
}
