//! `MemoryStore`: objects in a map, for tests of the logic above the store.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{check_range, validate_key, validate_prefix, ObjectMeta, ObjectStore, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding the lock cannot leave the map half-changed.
        self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        self.objects().insert(key.to_owned(), body);
        Ok(())
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.put(key, super::read_local(path).await?).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        self.objects().get(key).cloned().ok_or_else(|| StoreError::NotFound { key: key.to_owned() })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let body = self.get(key).await?;
        check_range(key, &range, body.len() as u64)?;
        Ok(body.slice(range.start as usize..range.end as usize))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        Ok(self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta { key: k.clone(), size: v.len() as u64 })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.objects().remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".to_owned()
    }
}
