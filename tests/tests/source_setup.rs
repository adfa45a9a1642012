//! Source setup against a real PostgreSQL 15: checks, the replica identity
//! guard on tables of every kind, the event trigger for tables created while
//! the agent runs, and the publication. The application's own UPDATE and
//! DELETE must keep working on every table.

use tidemark_agent::config::{Config, Layers, Origin};
use tidemark_agent::source::{self, conninfo, SourceError};
use tidemark_tests::PgCluster;
use wal_format::pgoutput::{DecodeOptions, Decoder, Message};
use wal_format::TidemarkRecord;

fn config(extra: &[(&str, &str)]) -> Config {
    let mut layers = Layers::default();
    layers.set("archive", "file:///unused", Origin::Default);
    for (k, v) in extra {
        layers.set(k, *v, Origin::Default);
    }
    layers.validate().unwrap()
}

async fn client(pg: &PgCluster, db: &str, user: &str) -> tokio_postgres::Client {
    let params =
        conninfo::resolve(Some(&format!("{} user={user}", pg.connection_string(db))), &Default::default()).unwrap();
    source::sql::connect(&params, "tidemark-test").await.unwrap()
}

const SCHEMA: &str = "
    CREATE TABLE with_pk (id int PRIMARY KEY, v text);
    CREATE TABLE unique_not_null (a int NOT NULL, b int NOT NULL, v text);
    CREATE UNIQUE INDEX unique_not_null_ab ON unique_not_null (a, b);
    CREATE UNIQUE INDEX unique_not_null_a ON unique_not_null (a);
    CREATE TABLE unique_nullable (a int, v text);
    CREATE UNIQUE INDEX unique_nullable_a ON unique_nullable (a);
    CREATE TABLE no_index (a int, v text);
    CREATE TABLE e2e_one_time_keys_json (user_id text, key_id text, key_json text);
    INSERT INTO with_pk VALUES (1, 'x'); INSERT INTO unique_not_null VALUES (1, 1, 'x');
    INSERT INTO unique_nullable VALUES (1, 'x'); INSERT INTO no_index VALUES (1, 'x');
";

fn identities(pg: &PgCluster) -> String {
    pg.psql(
        "app",
        "SELECT string_agg(c.relname || '=' || c.relreplident::text || coalesce('/' || (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident), ''), ' ' ORDER BY c.relname)
           FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_gets_an_identity_and_the_application_keeps_working() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", SCHEMA).unwrap();
    let cfg = config(&[]);
    let facts = source::prepare(&client(&pg, "app", "postgres").await, &cfg).await.unwrap();
    assert_eq!(facts.identity_changes.len(), 4, "{:?}", facts.identity_changes);
    assert_eq!(
        identities(&pg),
        "e2e_one_time_keys_json=f no_index=f unique_not_null=i/unique_not_null_a unique_nullable=f with_pk=d"
    );
    assert_eq!(pg.psql("app", "SELECT string_agg(n.nspname, ',') FROM pg_publication_namespace pn JOIN pg_namespace n ON n.oid = pn.pnnspid").unwrap(), "public");
    pg.psql(
        "app",
        "UPDATE with_pk SET v = 'y'; UPDATE unique_not_null SET v = 'y'; UPDATE unique_nullable SET v = 'y'; UPDATE no_index SET v = 'y';
         DELETE FROM with_pk; DELETE FROM unique_not_null; DELETE FROM unique_nullable; DELETE FROM no_index;",
    )
    .expect("the application's UPDATE and DELETE work on every published table");

    // Running setup again changes nothing.
    let again = source::prepare(&client(&pg, "app", "postgres").await, &cfg).await.unwrap();
    assert!(again.identity_changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_created_while_running_gets_an_identity_inside_its_transaction() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    source::prepare(&client(&pg, "app", "postgres").await, &config(&[])).await.unwrap();
    pg.psql("app", "SELECT 'slot' FROM pg_create_logical_replication_slot('peek', 'pgoutput')").unwrap();
    pg.psql(
        "app",
        "BEGIN;
         CREATE TABLE made_mid_stream (a int, v text);
         INSERT INTO made_mid_stream VALUES (1, 'one'), (2, 'two');
         UPDATE made_mid_stream SET v = 'uno' WHERE a = 1;
         DELETE FROM made_mid_stream WHERE a = 2;
         CREATE TABLE with_unique (a int NOT NULL UNIQUE, v text);
         INSERT INTO with_unique VALUES (1, 'x');
         UPDATE with_unique SET v = 'y';
         COMMIT;",
    )
    .expect("the creating transaction can update and delete its new table");
    assert_eq!(identities(&pg), "made_mid_stream=f with_unique=i/with_unique_a_key");

    // The DDL is in the stream, inside its transaction, before the rows.
    let hex = pg
        .psql("app", "SELECT string_agg(encode(data, 'hex'), ' ') FROM pg_logical_slot_peek_binary_changes('peek', NULL, NULL, 'proto_version', '1', 'publication_names', 'tidemark', 'messages', 'true')")
        .unwrap();
    let mut decoder = Decoder::new(DecodeOptions::v1());
    let mut order = Vec::new();
    for h in hex.split(' ') {
        let bytes: Vec<u8> = (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect();
        match decoder.decode(bytes.into()).unwrap() {
            Message::Message(m) => match TidemarkRecord::from_message(&m) {
                Some(Ok(TidemarkRecord::Ddl(d))) => order.push(format!("ddl {} {}", d.command_tag, d.object_identity)),
                other => panic!("unexpected message {other:?}"),
            },
            Message::Insert(_) => order.push("insert".into()),
            Message::Update(_) => order.push("update".into()),
            Message::Delete(_) => order.push("delete".into()),
            Message::Begin(_) => order.push("begin".into()),
            Message::Commit(_) => order.push("commit".into()),
            _ => {}
        }
    }
    let first_insert = order.iter().position(|o| o == "insert").unwrap();
    assert_eq!(order[0], "begin");
    assert!(order[1..first_insert].contains(&"ddl CREATE TABLE public.made_mid_stream".to_owned()), "{order:?}");
    assert!(order.iter().any(|o| o == "ddl ALTER TABLE public.made_mid_stream"), "{order:?}");
    assert_eq!(order.last().unwrap(), "commit");
    assert_eq!(order.iter().filter(|o| *o == "begin").count(), 1, "one transaction: {order:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_only_prints_the_sql_and_publishes_nothing() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", SCHEMA).unwrap();
    let err = source::prepare(&client(&pg, "app", "postgres").await, &config(&[("replica_identity", "check-only")]))
        .await
        .unwrap_err();
    let SourceError::IdentityNeeded { statements } = &err else { panic!("{err}") };
    assert!(
        statements.contains(&"ALTER TABLE \"public\".\"no_index\" REPLICA IDENTITY FULL;".to_owned()),
        "{statements:?}"
    );
    assert!(statements.contains(
        &"ALTER TABLE \"public\".\"unique_not_null\" REPLICA IDENTITY USING INDEX \"unique_not_null_a\";".to_owned()
    ));
    assert!(err.to_string().contains("check-only"), "{err}");
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pg_publication").unwrap(), "0");
    assert!(identities(&pg).contains("no_index=d"));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_wal_level_and_missing_privileges_are_named_with_the_fix() {
    let pg = PgCluster::start_with(&[("wal_level", "replica")]).unwrap();
    let err = source::prepare(&client(&pg, "postgres", "postgres").await, &config(&[])).await.unwrap_err();
    assert!(matches!(err, SourceError::WalLevel { .. }), "{err}");
    assert!(err.to_string().contains("ALTER SYSTEM SET wal_level = logical"), "{err}");
    drop(pg);

    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", "CREATE ROLE app LOGIN").unwrap();
    let err = source::prepare(&client(&pg, "postgres", "app").await, &config(&[])).await.unwrap_err();
    assert!(err.to_string().contains("ALTER ROLE app REPLICATION"), "{err}");
    pg.psql("postgres", "ALTER ROLE app REPLICATION").unwrap();
    let err = source::prepare(&client(&pg, "postgres", "app").await, &config(&[])).await.unwrap_err();
    let SourceError::NeedsSuperuser { sql, .. } = &err else { panic!("{err}") };
    assert!(sql.contains("CREATE EVENT TRIGGER tidemark_ddl"), "{sql}");
}
