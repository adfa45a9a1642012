//! The archive as the agent sees it: its identity (`archive.json`), its
//! durable watermark (the highest segment end), and writing segments.

mod txn;

pub use txn::TxnBuffer;

use bytes::Bytes;
use wal_format::{
    ArchiveManifest, Lsn, PgTimestamp, SegmentKey, ARCHIVE_FORMAT_VERSION, ARCHIVE_MANIFEST_KEY, SEGMENTS_PREFIX,
};

use crate::store::{ObjectStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive at {location} belongs to database {archive_db:?} of cluster {archive_system}, not to {database:?} of cluster {system}; use an empty archive for this database")]
    Mismatch { location: String, archive_system: String, archive_db: String, system: String, database: String },
    #[error("{location}/{ARCHIVE_MANIFEST_KEY} is not a tidemark archive manifest")]
    BadManifest {
        location: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("archive storage failed")]
    Store(#[from] StoreError),
}

/// The archive's chain of segments as found in a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub segments: Vec<SegmentKey>,
    /// `(from, to)` ranges no segment covers between the first and last.
    pub gaps: Vec<(Lsn, Lsn)>,
}

impl Chain {
    /// The highest durable `end_lsn`: where streaming resumes.
    pub fn watermark(&self) -> Lsn {
        self.segments.iter().map(|s| s.end).max().unwrap_or(Lsn::ZERO)
    }
}

/// Lists the segments and checks that each starts where the previous ended.
pub async fn read_chain(store: &dyn ObjectStore) -> Result<Chain, StoreError> {
    let mut segments: Vec<SegmentKey> = store
        .list(SEGMENTS_PREFIX)
        .await?
        .iter()
        .filter_map(|o| match SegmentKey::parse(&o.key) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(key = %o.key, error = %e, "ignoring an object that is not a segment");
                None
            }
        })
        .collect();
    segments.sort();
    let gaps = segments.windows(2).filter(|w| w[1].start != w[0].end).map(|w| (w[0].end, w[1].start)).collect();
    Ok(Chain { segments, gaps })
}

/// Reads `archive.json`, or writes it for a new archive; refuses an archive
/// of another cluster or database.
pub async fn open_identity(
    store: &dyn ObjectStore,
    expected: ArchiveManifest,
) -> Result<ArchiveManifest, ArchiveError> {
    match store.get(ARCHIVE_MANIFEST_KEY).await {
        Ok(bytes) => {
            let found: ArchiveManifest = serde_json::from_slice(&bytes)
                .map_err(|source| ArchiveError::BadManifest { location: store.describe(), source })?;
            if found.system_identifier != expected.system_identifier || found.database != expected.database {
                return Err(ArchiveError::Mismatch {
                    location: store.describe(),
                    archive_system: found.system_identifier,
                    archive_db: found.database,
                    system: expected.system_identifier,
                    database: expected.database,
                });
            }
            Ok(found)
        }
        Err(e) if e.is_not_found() => {
            let json = serde_json::to_vec_pretty(&expected)
                .map_err(|source| ArchiveError::BadManifest { location: store.describe(), source })?;
            store.put(ARCHIVE_MANIFEST_KEY, Bytes::from(json)).await?;
            tracing::info!(archive = %store.describe(), "created a new archive");
            Ok(expected)
        }
        Err(e) => Err(e.into()),
    }
}

/// The identity of a new archive for this source.
pub fn new_identity(
    system_identifier: u64,
    database: &str,
    server_version: &str,
    slot: &str,
    publication: &str,
) -> ArchiveManifest {
    ArchiveManifest {
        format_version: ARCHIVE_FORMAT_VERSION,
        system_identifier: system_identifier.to_string(),
        database: database.to_owned(),
        server_version: server_version.to_owned(),
        slot_name: slot.to_owned(),
        publication: publication.to_owned(),
        created_at: PgTimestamp::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn the_watermark_is_the_highest_end_and_gaps_are_found() {
        let store = MemoryStore::new();
        for (s, e) in [(0x10, 0x20), (0x20, 0x30), (0x40, 0x50)] {
            store.put(&SegmentKey::new(Lsn(s), Lsn(e)).to_string(), Bytes::new()).await.unwrap();
        }
        store.put("segments/not-a-segment", Bytes::new()).await.unwrap();
        let chain = read_chain(&store).await.unwrap();
        assert_eq!(chain.watermark(), Lsn(0x50));
        assert_eq!(chain.gaps, [(Lsn(0x30), Lsn(0x40))]);
        assert_eq!(read_chain(&MemoryStore::new()).await.unwrap().watermark(), Lsn::ZERO);
    }

    #[tokio::test]
    async fn an_archive_of_another_database_is_refused() {
        let store = MemoryStore::new();
        open_identity(&store, new_identity(1, "synapse", "15.18", "tidemark", "tidemark")).await.unwrap();
        open_identity(&store, new_identity(1, "synapse", "15.19", "tidemark", "tidemark")).await.unwrap();
        let err = open_identity(&store, new_identity(2, "synapse", "15.18", "tidemark", "tidemark")).await.unwrap_err();
        assert!(matches!(err, ArchiveError::Mismatch { .. }), "{err}");
        let err =
            open_identity(&store, new_identity(1, "mastodon", "15.18", "tidemark", "tidemark")).await.unwrap_err();
        assert!(err.to_string().contains("use an empty archive"), "{err}");
    }
}
