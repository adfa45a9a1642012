//! The archive's object store: one small trait, with `fs` and in-memory
//! implementations beside each other (S3 joins them), and one conformance
//! suite that every implementation must pass.

mod fs;
mod memory;
mod s3;

pub mod conformance;

use std::fmt;
use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

pub use fs::FsStore;
pub use memory::MemoryStore;
pub use s3::{S3Settings, S3Store};

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    #[error("{key:?} is not a valid object key: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("range {start}..{end} is outside object {key} of {size} bytes")]
    InvalidRange { key: String, start: u64, end: u64, size: u64 },
    #[error("S3 could not {op} {key}: {message}")]
    Remote {
        op: &'static str,
        key: String,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot {op} {location}")]
    Io {
        op: &'static str,
        location: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Try again after a pause: the store may recover (network, throttling).
    Retry,
    /// Stop and report: retrying cannot help (bad key, missing object,
    /// permission denied, disk full...).
    Fail,
}

impl StoreError {
    pub fn retry_policy(&self) -> RetryPolicy {
        match self {
            StoreError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted => RetryPolicy::Retry,
                _ => RetryPolicy::Fail,
            },
            // The SDK already retried throttling, 5xx and timeouts with backoff.
            StoreError::Remote { .. } => RetryPolicy::Retry,
            _ => RetryPolicy::Fail,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// Where archive objects live.
///
/// Keys are relative paths of `[A-Za-z0-9._-]` components joined by `/`
/// (see `wal_format::keys`); no component is empty, `.`/`..`, or starts
/// with `.tmp-` (reserved for writes in progress).
///
/// Contract, per method:
/// - `put` and `put_file` are atomic and durable: when they return `Ok`, the
///   whole object survives a crash of this machine and every later `get` or
///   `list` sees it; a reader never sees a partial object. Writing an
///   existing key replaces it.
/// - `get`, `get_range` return exactly the bytes last put; a missing key is
///   `StoreError::NotFound`.
/// - `list` returns every object whose key starts with `prefix`, sorted by
///   key, and no write in progress.
/// - `delete` removes the object; deleting a missing key succeeds.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;

    /// Puts the content of a local file, without holding it in memory.
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError>;

    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Where this store is, for messages: `file:///var/lib/tidemark`.
    fn describe(&self) -> String;
}

/// The prefix of temporary objects, never a valid key component.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Checks a key against the rules of `ObjectStore`.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |reason| Err(StoreError::InvalidKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return invalid("it is empty");
    }
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return invalid("a path component is empty, . or ..");
        }
        if part.starts_with(TEMP_PREFIX) {
            return invalid("components starting with .tmp- are reserved");
        }
        if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return invalid("only letters, digits, '.', '_', '-' and '/' are allowed");
        }
    }
    Ok(())
}

/// Checks a listing prefix: a key, a key's start, or empty for everything.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    match prefix.trim_end_matches('/') {
        "" => Ok(()),
        p => validate_key(p),
    }
}

/// Reads a local file whole, for stores that send it in one request.
async fn read_local(path: &Path) -> Result<Bytes, StoreError> {
    let body = tokio::fs::read(path).await.map_err(|source| StoreError::Io {
        op: "read",
        location: path.display().to_string(),
        source,
    })?;
    Ok(Bytes::from(body))
}

fn check_range(key: &str, range: &Range<u64>, size: u64) -> Result<(), StoreError> {
    if range.start > range.end || range.end > size {
        return Err(StoreError::InvalidRange { key: key.to_owned(), start: range.start, end: range.end, size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_conforms() {
        conformance::run_all(&MemoryStore::new()).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_fs_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("archive")).unwrap();
        conformance::run_all(&store).await;
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("archive/c2")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[tokio::test]
    async fn the_fs_store_skips_writes_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("segments")).unwrap();
        std::fs::write(dir.path().join("segments/.tmp-a.seg-1-1"), b"partial").unwrap();
        store.put("segments/b.seg", Bytes::from_static(b"whole")).await.unwrap();
        let listed: Vec<String> = store.list("segments/").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(listed, ["segments/b.seg"]);
    }

    #[tokio::test]
    async fn the_fs_store_reports_an_unwritable_directory() {
        let err = FsStore::open(Path::new("relative/dir")).unwrap_err();
        assert!(err.to_string().contains("relative/dir"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let err = FsStore::open(&file.join("archive")).unwrap_err();
        assert!(matches!(err, StoreError::Io { op: "create the archive directory", .. }), "{err:?}");
        assert!(
            err.to_string().contains("a-file is not a directory")
                || format!("{:?}", err).contains("is not a directory"),
            "{err:?}"
        );
    }
}
