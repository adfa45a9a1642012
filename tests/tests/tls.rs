//! TLS to the source with libpq's sslmode meanings, for both the replication
//! connection and ordinary SQL connections, against a real PostgreSQL 15.

use tidemark_agent::replication::{ReplicationConnection, ReplicationError};
use tidemark_agent::source::conninfo::{resolve, ConnParams, Environment};
use tidemark_agent::source::{self, SourceError};
use tidemark_tests::PgCluster;

fn params(conninfo: &str, home: &std::path::Path) -> ConnParams {
    let env = Environment { home: Some(home.to_path_buf()), os_user: "postgres".into(), ..Default::default() };
    resolve(Some(conninfo), &env).unwrap()
}

/// Connects both ways; returns whether the SQL session uses TLS.
async fn connect_both(p: &ConnParams) -> Result<bool, String> {
    let mut repl = ReplicationConnection::connect(p, "t").await.map_err(|e| e.to_string())?;
    repl.identify_system().await.map_err(|e| e.to_string())?;
    let client = source::sql::connect(p, "t").await.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmodes_behave_as_in_libpq() {
    let pg = PgCluster::start().unwrap();
    let ca = pg.enable_tls().unwrap();
    pg.set_hba(&[
        "hostssl all all 127.0.0.1/32 trust",
        "hostssl replication all 127.0.0.1/32 trust",
        "hostnossl all all 127.0.0.1/32 reject",
        "hostnossl replication all 127.0.0.1/32 reject",
    ])
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let port = pg.port();
    let with = |host: &str, mode: &str, root: Option<&std::path::Path>| {
        let root = root.map(|r| format!(" sslrootcert={}", r.display())).unwrap_or_default();
        params(&format!("host={host} port={port} user=postgres dbname=postgres sslmode={mode}{root}"), home.path())
    };

    assert_eq!(
        connect_both(&with("localhost", "verify-full", Some(&ca))).await,
        Ok(true),
        "verify-full with the right CA and name"
    );
    assert_eq!(connect_both(&with("127.0.0.1", "verify-ca", Some(&ca))).await, Ok(true), "verify-ca ignores the name");
    assert_eq!(
        connect_both(&with("127.0.0.1", "require", None)).await,
        Ok(true),
        "require without a CA does not verify"
    );
    assert_eq!(connect_both(&with("127.0.0.1", "prefer", None)).await, Ok(true), "prefer uses TLS when offered");
    let allow = ReplicationConnection::connect(&with("127.0.0.1", "allow", None), "t").await;
    assert!(allow.is_ok(), "allow falls back to TLS when plain is refused: {:?}", allow.err());

    let err = ReplicationConnection::connect(&with("127.0.0.1", "verify-full", Some(&ca)), "t").await.err().unwrap();
    assert!(matches!(err, ReplicationError::TlsHandshake { .. }), "verify-full checks the host name: {err}");
    assert!(err.to_string().contains("host name"), "{err}");

    let other_ca_dir = tempfile::tempdir().unwrap();
    let other_ca = tidemark_tests::tls::make_ca(other_ca_dir.path(), "other").unwrap();
    let err =
        ReplicationConnection::connect(&with("localhost", "verify-ca", Some(&other_ca)), "t").await.err().unwrap();
    assert!(matches!(err, ReplicationError::TlsHandshake { .. }), "a certificate from another CA is refused: {err}");
    assert!(source::sql::connect(&with("localhost", "verify-full", Some(&other_ca)), "t").await.is_err());

    let err = ReplicationConnection::connect(&with("127.0.0.1", "disable", None), "t").await.err().unwrap();
    assert_eq!(err.sqlstate(), Some("28000"), "{err}");

    let err = ReplicationConnection::connect(&with("localhost", "verify-full", None), "t").await.err().unwrap();
    assert!(
        err.to_string().contains("needs the server's CA certificate")
            && err.to_string().contains(".postgresql/root.crt"),
        "{err}"
    );
    let err = source::sql::connect(&with("localhost", "verify-full", None), "t").await.err().unwrap();
    assert!(matches!(err, SourceError::Tls(_)), "{err}");

    // ~/.postgresql/root.crt is used when sslrootcert is not given.
    std::fs::create_dir_all(home.path().join(".postgresql")).unwrap();
    std::fs::copy(&ca, home.path().join(".postgresql/root.crt")).unwrap();
    assert_eq!(connect_both(&with("localhost", "verify-full", None)).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_a_server_without_tls() {
    let pg = PgCluster::start().unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = params(&format!("host=127.0.0.1 port={} user=postgres sslmode=require", pg.port()), home.path());
    let err = ReplicationConnection::connect(&p, "t").await.err().unwrap();
    assert!(matches!(err, ReplicationError::TlsRefused { .. }), "{err}");
    assert!(err.to_string().contains("does not offer TLS"), "{err}");
    let prefer = params(&format!("host=127.0.0.1 port={} user=postgres", pg.port()), home.path());
    assert_eq!(connect_both(&prefer).await, Ok(false), "prefer falls back to plain");
}
