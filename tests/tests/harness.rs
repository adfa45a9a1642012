//! The harness itself: clusters and Garage start, serve, and leave nothing
//! behind, also when a test panics.

use std::net::TcpStream;
use std::path::PathBuf;

use tidemark_tests::{Garage, PgCluster};

fn port_is_closed(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn a_cluster_runs_sql_with_logical_wal_and_leaves_nothing_when_dropped() {
    let cluster = PgCluster::start().unwrap();
    assert_eq!(cluster.psql("postgres", "SHOW wal_level").unwrap(), "logical");
    assert_eq!(cluster.psql("postgres", "SHOW server_version_num").unwrap()[..2], *"15");
    cluster.create_database("synapse").unwrap();
    cluster
        .psql("synapse", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, NULL)")
        .unwrap();
    assert_eq!(cluster.psql("synapse", "SELECT id, coalesce(v, 'null') FROM t ORDER BY id").unwrap(), "1|a\n2|null");
    let err = cluster.psql("synapse", "SELECT * FROM missing").unwrap_err();
    assert!(err.to_string().contains("relation \"missing\" does not exist"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", cluster.port())).is_ok());
    let (dir, port) = (cluster.data_dir(), cluster.port());
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(port_is_closed(port));
}

#[test]
fn two_clusters_run_side_by_side() {
    let a = PgCluster::start().unwrap();
    let b = PgCluster::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.psql("postgres", "CREATE TABLE only_in_a (x int)").unwrap();
    assert_eq!(b.psql("postgres", "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'").unwrap(), "0");
}

#[test]
fn a_cluster_is_stopped_and_removed_when_its_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, u16)>();
    let outcome = std::thread::spawn(move || {
        let cluster = PgCluster::start().unwrap();
        tx.send((cluster.data_dir(), cluster.port())).unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(outcome.is_err());
    let (dir, port) = rx.recv().unwrap();
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(port_is_closed(port));
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_serves_s3_with_its_bucket_and_key() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::primitives::ByteStream;

    let garage = Garage::start().unwrap();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(Garage::REGION))
        .endpoint_url(garage.endpoint())
        .force_path_style(true)
        .credentials_provider(Credentials::new(garage.access_key_id(), garage.secret_access_key(), None, None, "test"))
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    let body = b"segment bytes".to_vec();
    s3.put_object()
        .bucket(garage.bucket())
        .key("segments/a")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = s3.get_object().bucket(garage.bucket()).key("segments/a").send().await.unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
    let listed = s3.list_objects_v2().bucket(garage.bucket()).prefix("segments/").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["segments/a"]);
    let wrong = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(Garage::REGION))
            .endpoint_url(garage.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(garage.access_key_id(), "not-the-secret", None, None, "test"))
            .build(),
    );
    assert!(wrong.get_object().bucket(garage.bucket()).key("segments/a").send().await.is_err());
    let endpoint = garage.endpoint();
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    drop(garage);
    assert!(port_is_closed(port));
}
