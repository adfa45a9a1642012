//! The replication connection against a real PostgreSQL 15: start-up,
//! authentication, the replication commands, and a stream of pgoutput
//! messages that decode into what the workload committed.

use std::time::Duration;

use tidemark_agent::replication::{self, ReplicationConnection, ReplicationError, StreamEvent};
use tidemark_agent::source::conninfo::{resolve, ConnParams, Environment};
use tidemark_tests::PgCluster;
use tokio::sync::{mpsc, watch};
use wal_format::pgoutput::{Column, DecodeOptions, Decoder, Message};
use wal_format::Lsn;

fn params(conninfo: &str) -> ConnParams {
    resolve(Some(conninfo), &Environment::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_committed_changes_as_pgoutput() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR ALL TABLES").unwrap();
    let mut conn =
        ReplicationConnection::connect(&params(&pg.connection_string("postgres")), "tidemark-test").await.unwrap();
    assert!(conn.server_version().starts_with("15."), "{}", conn.server_version());
    let system = conn.identify_system().await.unwrap();
    assert_eq!(system.dbname.as_deref(), Some("postgres"));
    let expected_id = pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()").unwrap();
    assert_eq!(system.system_identifier.to_string(), expected_id);
    let slot = conn.create_slot("s", false, false).await.unwrap();
    assert!(slot.consistent_point > Lsn::ZERO);
    assert_eq!(slot.snapshot_name, None);

    let conn = conn.start_replication("s", Lsn::ZERO, "p").await.unwrap();
    let (durable_tx, durable_rx) = watch::channel(Lsn::ZERO);
    let (tx, mut rx) = mpsc::channel(16);
    let stream = replication::spawn(conn, durable_rx, tx, Duration::from_millis(100));
    pg.psql("postgres", "INSERT INTO t VALUES (1, 'one'), (2, NULL)").unwrap();
    pg.psql("postgres", "UPDATE t SET v = 'uno' WHERE id = 1").unwrap();

    let mut decoder = Decoder::new(DecodeOptions::v1());
    let mut messages = Vec::new();
    let mut commits = 0;
    while commits < 2 {
        let event = match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(e) => e.unwrap(),
            Err(_) => panic!(
                "no change arrived; walsender: {}; slot: {}; log: {}",
                pg.psql("postgres", "SELECT state, sent_lsn, flush_lsn FROM pg_stat_replication").unwrap(),
                pg.psql("postgres", "SELECT active, restart_lsn, confirmed_flush_lsn FROM pg_replication_slots")
                    .unwrap(),
                pg.log()
            ),
        };
        if let StreamEvent::XLogData { payload, .. } = event {
            let message = decoder.decode(payload).unwrap();
            commits += usize::from(matches!(message, Message::Commit(_)));
            messages.push(message);
        }
    }
    let tags: String = messages.iter().map(|m| char::from(m.tag())).collect();
    assert_eq!(tags, "BRIICBUC", "Relation is sent once per session");
    let Message::Insert(first) = &messages[2] else { panic!() };
    assert_eq!(first.new.columns[1], Column::Text("one".into()));
    let Message::Commit(last) = messages[7] else { panic!() };

    // Acknowledge the last commit's end: the slot's confirmed position follows.
    durable_tx.send(last.end_lsn).unwrap();
    let confirmed =
        || pg.psql("postgres", "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 's'").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while confirmed() != last.end_lsn.to_string() {
        assert!(std::time::Instant::now() < deadline, "confirmed_flush_lsn stays at {}", confirmed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.stop().await.unwrap();
    let active = pg.psql("postgres", "SELECT active FROM pg_replication_slots WHERE slot_name = 's'").unwrap();
    assert!(active == "f" || active == "t", "{active}");
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticates_with_scram_md5_and_cleartext_passwords() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE scram LOGIN REPLICATION PASSWORD 's3cret';
         SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN REPLICATION PASSWORD 'md5pass';",
    )
    .unwrap();
    pg.set_hba(&[
        "host all scram 127.0.0.1/32 scram-sha-256",
        "host replication scram 127.0.0.1/32 scram-sha-256",
        "host all md5user 127.0.0.1/32 md5",
        "host replication md5user 127.0.0.1/32 md5",
        "host all all 127.0.0.1/32 password",
    ])
    .unwrap();
    let base = format!("host=127.0.0.1 port={} dbname=postgres", pg.port());
    for (user, password) in [("scram", "s3cret"), ("md5user", "md5pass")] {
        let mut conn = ReplicationConnection::connect(&params(&format!("{base} user={user} password={password}")), "t")
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        conn.identify_system().await.unwrap();
    }
    let err =
        ReplicationConnection::connect(&params(&format!("{base} user=scram password=wrong")), "t").await.err().unwrap();
    assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
    assert!(err.to_string().contains("password authentication failed"), "{err}");
    let err = ReplicationConnection::connect(&params(&format!("{base} user=scram")), "t").await.err().unwrap();
    assert!(matches!(err, ReplicationError::PasswordRequired { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_failures_say_what_to_check() {
    let pg = PgCluster::start().unwrap();
    let port = pg.port();
    drop(pg);
    let err = ReplicationConnection::connect(&params(&format!("host=127.0.0.1 port={port} user=postgres")), "t")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ReplicationError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("check that the server runs"), "{err}");
}
