//! Source setup, idempotent, run at every start: checks with one message and
//! fix each, the DDL event trigger, the replica identity guard, the
//! publication, and the slot's state. Also the records tidemark writes into
//! the stream: sequence values and marks.

use tokio_postgres::Client;
use wal_format::{Lsn, SequenceRecord, SequenceValue, TidemarkRecord, MARK_PREFIX, SEQUENCE_PREFIX};

use super::identity::{IdentityChange, IdentityGuard};
use super::SourceError;
use crate::config::Config;
use crate::replication::{quote_ident, quote_literal};

/// What the checks learned about the server.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub server_version: String,
    pub database: String,
    pub role: String,
    pub superuser: bool,
    pub identity_changes: Vec<IdentityChange>,
    pub slot: SlotState,
}

/// The replication slot as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    Missing,
    Exists { confirmed_flush: Option<Lsn> },
}

fn sql_error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    move |source| SourceError::Sql { what, source }
}

/// Checks the server and prepares it; creates nothing but the trigger, the
/// publication and replica identities (the caller creates the slot).
pub async fn prepare(client: &Client, config: &Config) -> Result<ServerFacts, SourceError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'),
                    current_setting('wal_level'), current_database(), current_user::text,
                    r.rolsuper, r.rolreplication,
                    current_setting('max_replication_slots')::int,
                    (SELECT count(*) FROM pg_replication_slots)::int,
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*) FROM pg_stat_replication)::int
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(sql_error("reading the server's settings"))?;
    let version_num: i32 = row.get(0);
    let server_version: String = row.get(1);
    if version_num < 150000 {
        return Err(SourceError::ServerTooOld { version: server_version });
    }
    let wal_level: String = row.get(2);
    if wal_level != "logical" {
        return Err(SourceError::WalLevel { current: wal_level });
    }
    let (database, role): (String, String) = (row.get(3), row.get(4));
    let (superuser, replication): (bool, bool) = (row.get(5), row.get(6));
    if !superuser && !replication {
        return Err(SourceError::NotReplicationRole { role });
    }
    let slot = slot_state(client, config, &database).await?;
    let (max_slots, used_slots): (i32, i32) = (row.get(7), row.get(8));
    if slot == SlotState::Missing && used_slots >= max_slots {
        return Err(SourceError::NoFreeSlots { max: max_slots });
    }
    let (max_senders, used_senders): (i32, i32) = (row.get(9), row.get(10));
    if used_senders >= max_senders {
        return Err(SourceError::NoFreeSenders { max: max_senders });
    }
    install_event_trigger(client, config, superuser).await?;
    let identity_changes = IdentityGuard::new(config.replica_identity, config.schemas.clone()).enforce(client).await?;
    ensure_publication(client, config, superuser).await?;
    Ok(ServerFacts { server_version, database, role, superuser, identity_changes, slot })
}

async fn slot_state(client: &Client, config: &Config, database: &str) -> Result<SlotState, SourceError> {
    let rows = client
        .query(
            "SELECT plugin, database, wal_status, confirmed_flush_lsn::text, slot_type
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(sql_error("reading the replication slot"))?;
    let Some(row) = rows.first() else {
        return Ok(SlotState::Missing);
    };
    let unusable = |reason: String| SourceError::SlotUnusable { slot: config.slot.clone(), reason };
    let (plugin, slot_db, wal_status): (Option<String>, Option<String>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    if row.get::<_, String>(4) != "logical" || plugin.as_deref() != Some("pgoutput") {
        return Err(unusable(format!("it is not a logical pgoutput slot (plugin {plugin:?})")));
    }
    if slot_db.as_deref() != Some(database) {
        return Err(unusable(format!("it belongs to database {slot_db:?}, not {database}")));
    }
    if wal_status.as_deref() == Some("lost") {
        return Err(SourceError::SlotLost { slot: config.slot.clone() });
    }
    let confirmed_flush = row.get::<_, Option<String>>(3).and_then(|l| l.parse().ok());
    Ok(SlotState::Exists { confirmed_flush })
}

/// The SQL of the event trigger: every DDL command emits a `tidemark.ddl`
/// message inside its transaction, and a table created or altered in a
/// configured schema gets a replica identity before that transaction can
/// write to it. No EXCEPTION blocks: a subtransaction would reorder the
/// message after later rows.
pub fn event_trigger_sql(config: &Config) -> String {
    let schemas = config.schemas.iter().map(|s| quote_literal(s)).collect::<Vec<_>>().join(", ");
    let act = match config.replica_identity {
        crate::config::IdentityMode::Auto => "PERFORM tidemark.ensure_identity(cmd.objid);",
        crate::config::IdentityMode::CheckOnly => {
            "NULL; -- replica_identity = check-only: the agent reports such tables"
        }
    };
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS tidemark;
CREATE OR REPLACE FUNCTION tidemark.ensure_identity(rel oid) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
  idx text;
BEGIN
  SELECT c.relreplident, c.relkind, c.oid::regclass::text AS name,
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ident
    INTO r FROM pg_class c WHERE c.oid = rel;
  IF NOT FOUND OR r.relkind <> 'r' OR r.relreplident = 'f'
     OR (r.relreplident = 'd' AND r.has_pk) OR (r.relreplident = 'i' AND r.has_ident) THEN
    RETURN;
  END IF;
  SELECT quote_ident(ic.relname) INTO idx
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
   WHERE i.indrelid = rel AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indisready
     AND i.indpred IS NULL AND i.indexprs IS NULL
     AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = rel AND a.attnum = ANY (i.indkey::int2[]) AND NOT a.attnotnull)
   ORDER BY i.indnatts, ic.relname LIMIT 1;
  IF idx IS NOT NULL THEN
    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %s', r.name, idx);
  ELSE
    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', r.name);
  END IF;
END
$fn$;
CREATE OR REPLACE FUNCTION tidemark.on_ddl_command_end() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    PERFORM pg_logical_emit_message(true, 'tidemark.ddl', json_build_object(
      'v', 1, 'command_tag', cmd.command_tag, 'object_type', cmd.object_type,
      'schema', cmd.schema_name, 'object_identity', cmd.object_identity)::text);
    IF cmd.object_type = 'table' AND cmd.schema_name = ANY (ARRAY[{schemas}]::text[])
       AND cmd.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE') THEN
      {act}
    END IF;
  END LOOP;
END
$fn$;
CREATE OR REPLACE FUNCTION tidemark.on_sql_drop() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
DECLARE
  obj record;
BEGIN
  FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE original LOOP
    PERFORM pg_logical_emit_message(true, 'tidemark.ddl', json_build_object(
      'v', 1, 'command_tag', tg_tag, 'object_type', obj.object_type,
      'schema', obj.schema_name, 'object_identity', obj.object_identity)::text);
  END LOOP;
END
$fn$;
DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'tidemark_ddl') THEN
    CREATE EVENT TRIGGER tidemark_ddl ON ddl_command_end EXECUTE FUNCTION tidemark.on_ddl_command_end();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'tidemark_drop') THEN
    CREATE EVENT TRIGGER tidemark_drop ON sql_drop EXECUTE FUNCTION tidemark.on_sql_drop();
  END IF;
END
$do$;"#
    )
}

async fn install_event_trigger(client: &Client, config: &Config, superuser: bool) -> Result<(), SourceError> {
    let sql = event_trigger_sql(config);
    if superuser {
        return client.batch_execute(&sql).await.map_err(sql_error("installing the DDL event trigger"));
    }
    let installed: i64 = client
        .query_one("SELECT count(*) FROM pg_event_trigger WHERE evtname IN ('tidemark_ddl', 'tidemark_drop')", &[])
        .await
        .map_err(sql_error("looking for the DDL event trigger"))?
        .get(0);
    if installed == 2 {
        Ok(())
    } else {
        Err(SourceError::NeedsSuperuser { what: "installing the DDL event trigger", sql })
    }
}

async fn ensure_publication(client: &Client, config: &Config, superuser: bool) -> Result<(), SourceError> {
    let rows = client
        .query(
            "SELECT n.nspname FROM pg_publication p
               LEFT JOIN pg_publication_namespace pn ON pn.pnpubid = p.oid
               LEFT JOIN pg_namespace n ON n.oid = pn.pnnspid
              WHERE p.pubname = $1",
            &[&config.publication],
        )
        .await
        .map_err(sql_error("reading the publication"))?;
    let schemas = config.schemas.iter().map(|s| quote_ident(s)).collect::<Vec<_>>().join(", ");
    let publication = quote_ident(&config.publication);
    let sql = if rows.is_empty() {
        format!("CREATE PUBLICATION {publication} FOR TABLES IN SCHEMA {schemas};")
    } else {
        let covered: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
        let missing: Vec<String> =
            config.schemas.iter().filter(|s| !covered.contains(&Some((*s).clone()))).map(|s| quote_ident(s)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        format!("ALTER PUBLICATION {publication} ADD TABLES IN SCHEMA {};", missing.join(", "))
    };
    if !superuser {
        return Err(SourceError::NeedsSuperuser { what: "a publication FOR TABLES IN SCHEMA", sql });
    }
    client.batch_execute(&sql).await.map_err(sql_error("creating the publication"))?;
    tracing::info!(%sql, "publication ready");
    Ok(())
}

/// Every sequence's value in the configured schemas, by name.
pub async fn read_sequences(client: &Client, schemas: &[String]) -> Result<Vec<SequenceValue>, SourceError> {
    let rows = client
        .query(
            "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences
              WHERE schemaname = ANY ($1) ORDER BY schemaname, sequencename",
            &[&schemas],
        )
        .await
        .map_err(sql_error("reading sequence values"))?;
    Ok(rows.iter().map(|r| SequenceValue { schema: r.get(0), name: r.get(1), last_value: r.get(2) }).collect())
}

/// Records sequence values as a `tidemark.seq` message, in a transaction of
/// its own.
pub async fn emit_sequences(client: &Client, values: &[SequenceValue]) -> Result<Lsn, SourceError> {
    let record = TidemarkRecord::Sequences(SequenceRecord { v: 1, sequences: values.to_vec() });
    emit(client, SEQUENCE_PREFIX, &record).await
}

async fn emit(client: &Client, prefix: &str, record: &TidemarkRecord) -> Result<Lsn, SourceError> {
    let content = String::from_utf8_lossy(&record.to_content()).into_owned();
    let row = client
        .query_one("SELECT pg_logical_emit_message(true, $1, $2)::text", &[&prefix, &content])
        .await
        .map_err(sql_error("writing a tidemark record"))?;
    Ok(row.get::<_, String>(0).parse().unwrap_or_default())
}

/// Writes a named mark into the stream.
pub async fn emit_mark(client: &Client, name: &str) -> Result<Lsn, SourceError> {
    emit(client, MARK_PREFIX, &TidemarkRecord::mark(name)).await
}
