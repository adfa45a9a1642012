//! The replica identity guard: a table that is published with UPDATE and
//! DELETE and has no replica identity makes the application's own UPDATE and
//! DELETE fail. Every table of the configured schemas gets one before it is
//! published: its primary key; else `USING INDEX` on a unique, non-partial,
//! immediate index over NOT NULL columns; else `FULL`. One table per
//! transaction, with a short lock_timeout and retries.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::SourceError;
use crate::config::IdentityMode;
use crate::replication::quote_ident;

/// Tables of the schemas that have no usable replica identity, with the
/// index that could serve as one.
const TABLES_WITHOUT_IDENTITY: &str = r#"
SELECT n.nspname, c.relname,
       (SELECT ic.relname
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indisready
           AND i.indpred IS NULL AND i.indexprs IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey::int2[]) AND NOT a.attnotnull)
         ORDER BY i.indnatts, ic.relname LIMIT 1) AS candidate
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname = ANY ($1)
   AND CASE c.relreplident
         WHEN 'f' THEN false
         WHEN 'd' THEN NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
         WHEN 'i' THEN NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
         ELSE true
       END
 ORDER BY n.nspname, c.relname
"#;

/// One table that needs (or got) an identity, and the statement for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    pub table: String,
    pub statement: String,
}

pub struct IdentityGuard {
    pub mode: IdentityMode,
    pub schemas: Vec<String>,
    pub lock_timeout: &'static str,
    pub attempts: u32,
}

impl IdentityGuard {
    pub fn new(mode: IdentityMode, schemas: Vec<String>) -> Self {
        IdentityGuard { mode, schemas, lock_timeout: "2s", attempts: 10 }
    }

    /// The tables that need an identity now, with the SQL that gives it.
    pub async fn pending(&self, client: &tokio_postgres::Client) -> Result<Vec<IdentityChange>, SourceError> {
        let rows = client
            .query(TABLES_WITHOUT_IDENTITY, &[&self.schemas])
            .await
            .map_err(|source| SourceError::Sql { what: "listing tables without a replica identity", source })?;
        Ok(rows
            .iter()
            .map(|row| {
                let table = format!("{}.{}", quote_ident(row.get(0)), quote_ident(row.get(1)));
                let statement = match row.get::<_, Option<String>>(2) {
                    Some(index) => format!("ALTER TABLE {table} REPLICA IDENTITY USING INDEX {};", quote_ident(&index)),
                    None => format!("ALTER TABLE {table} REPLICA IDENTITY FULL;"),
                };
                IdentityChange { table, statement }
            })
            .collect())
    }

    /// Gives every table an identity (auto), or refuses with the SQL
    /// (check-only). Returns the changes made.
    pub async fn enforce(&self, client: &tokio_postgres::Client) -> Result<Vec<IdentityChange>, SourceError> {
        let pending = self.pending(client).await?;
        if pending.is_empty() {
            return Ok(pending);
        }
        if self.mode == IdentityMode::CheckOnly {
            return Err(SourceError::IdentityNeeded { statements: pending.into_iter().map(|c| c.statement).collect() });
        }
        client
            .batch_execute(&format!("SET lock_timeout = '{}'", self.lock_timeout))
            .await
            .map_err(|source| SourceError::Sql { what: "setting lock_timeout", source })?;
        for change in &pending {
            self.apply(client, change).await?;
            tracing::info!(table = %change.table, statement = %change.statement, "gave a table a replica identity");
        }
        client
            .batch_execute("RESET lock_timeout")
            .await
            .map_err(|source| SourceError::Sql { what: "resetting lock_timeout", source })?;
        Ok(pending)
    }

    /// Runs one ALTER in its own transaction, retrying while the table is
    /// locked by the application.
    async fn apply(&self, client: &tokio_postgres::Client, change: &IdentityChange) -> Result<(), SourceError> {
        for attempt in 1..=self.attempts {
            match client.batch_execute(&change.statement).await {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    tracing::warn!(table = %change.table, attempt, "table is locked; will retry setting its replica identity");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8)))).await;
                }
                Err(source) => return Err(SourceError::Sql { what: "setting a replica identity", source }),
            }
        }
        Err(SourceError::IdentityLocked {
            table: change.table.clone(),
            attempts: self.attempts,
            lock_timeout: self.lock_timeout,
        })
    }
}
