//! `FsStore`: an archive in a local directory. Every write goes to a
//! temporary file in the object's directory, is fsynced, renamed over the
//! key, and the directory is fsynced: after a crash an object is either
//! whole or absent.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{check_range, validate_key, validate_prefix, ObjectMeta, ObjectStore, StoreError, TEMP_PREFIX};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let location = path.display().to_string();
    move |source| StoreError::Io { op, location, source }
}

impl FsStore {
    /// An archive rooted at `root`, an absolute directory that is created if
    /// missing.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        if !root.is_absolute() {
            return Err(StoreError::Io {
                op: "use",
                location: root.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "the archive directory must be an absolute path"),
            });
        }
        if let Some(blocker) = root.ancestors().find(|a| a.exists() && !a.is_dir()) {
            return Err(StoreError::Io {
                op: "create the archive directory",
                location: root.display().to_string(),
                source: io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", blocker.display()),
                ),
            });
        }
        ensure_dir(root).map_err(|e| match e {
            StoreError::Io { source, .. } => {
                StoreError::Io { op: "create the archive directory", location: root.display().to_string(), source }
            }
            other => other,
        })?;
        Ok(FsStore { root: Arc::new(root.to_path_buf()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || f(&root)).await.map_err(|join| StoreError::Io {
            op: "run a file operation in",
            location: "the blocking thread pool".into(),
            source: io::Error::other(join.to_string()),
        })?
    }
}

/// Creates `dir` and its missing parents, fsyncing each parent that gained
/// an entry so that the new directories survive a crash.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(io_error("create directory", dir)(e)),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("fsync directory", dir))
}

/// Writes an object atomically and durably with `fill` writing its bytes.
fn write_atomic(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    ensure_dir(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temp).map_err(io_error("create", &temp))?;
        fill(&mut file).map_err(io_error("write", &temp))?;
        file.sync_all().map_err(io_error("fsync", &temp))?;
        drop(file);
        fs::rename(&temp, path).map_err(io_error("rename into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Every file under `dir`, as keys relative to `root`, skipping writes in
/// progress.
fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error("stat", &path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let size = entry.metadata().map_err(io_error("stat", &path))?.len();
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let key = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push(ObjectMeta { key, size });
        }
    }
    Ok(())
}

fn not_found_or(key: &str, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let (key, location) = (key.to_owned(), path.display().to_string());
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound { key }
        } else {
            StoreError::Io { op, location, source }
        }
    }
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.blocking(move |_| write_atomic(&path, |f| f.write_all(&body))).await
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let source = source.to_path_buf();
        self.blocking(move |_| {
            let mut input = File::open(&source).map_err(io_error("open", &source))?;
            write_atomic(&path, |f| io::copy(&mut input, f).map(|_| ()))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        self.blocking(move |_| fs::read(&path).map(Bytes::from).map_err(not_found_or(&key, "read", &path))).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        self.blocking(move |_| {
            let mut file = File::open(&path).map_err(not_found_or(&key, "open", &path))?;
            let size = file.metadata().map_err(io_error("stat", &path))?.len();
            check_range(&key, &range, size)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(io_error("read", &path))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_owned();
        self.blocking(move |root| {
            // Walk only the directory the prefix names, then filter by the rest.
            let dir = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.to_path_buf(),
            };
            let mut out = Vec::new();
            walk(root, &dir, &mut out)?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.blocking(move |_| match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", &path)(e)),
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
