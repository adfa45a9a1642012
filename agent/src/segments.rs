//! The open segment: written block by block into a temporary file (so that
//! its size costs no memory), then uploaded whole under its key.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use wal_format::segment::{RelationCache, SegmentHeader, SegmentOptions, SegmentWriter, HEADER_LEN};
use wal_format::{Lsn, SegmentKey};

use crate::store::ObjectStore;
use crate::AgentError;

pub struct OpenSegment {
    writer: SegmentWriter<BufWriter<File>>,
    pub opened: Instant,
}

impl OpenSegment {
    /// Starts a segment continuing from `start_lsn`; the first `HEADER_LEN`
    /// bytes of the file are left for the header.
    pub fn create(
        spill_dir: &Path,
        system_identifier: u64,
        start_lsn: Lsn,
        cache: RelationCache,
    ) -> Result<Self, AgentError> {
        let mut file = tempfile::tempfile_in(spill_dir)?;
        file.write_all(&[0u8; HEADER_LEN])?;
        let writer = SegmentWriter::new(
            BufWriter::with_capacity(1 << 20, file),
            SegmentOptions::new(system_identifier, start_lsn),
            cache,
        )?;
        Ok(OpenSegment { writer, opened: Instant::now() })
    }

    pub fn push(&mut self, raw: Bytes) -> Result<(), AgentError> {
        Ok(self.writer.push(raw)?)
    }

    pub fn raw_len(&self) -> u64 {
        self.writer.raw_len()
    }

    pub fn transactions(&self) -> u32 {
        self.writer.transactions()
    }

    /// Finishes the segment and uploads it; returns its header and the
    /// relation cache for the next segment. When this returns, the segment
    /// is durable in the archive.
    pub async fn upload(self, store: &dyn ObjectStore) -> Result<(SegmentHeader, RelationCache), AgentError> {
        let finished = self.writer.finish()?;
        let mut file = finished.sink.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&finished.header.encode())?;
        file.flush()?;
        let key = SegmentKey::new(finished.header.start_lsn, finished.header.end_lsn).to_string();
        // The unnamed file is reachable through /proc while we hold it open.
        let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", std::os::unix::io::AsRawFd::as_raw_fd(&file)));
        store.put_file(&key, &path).await?;
        drop(file);
        Ok((finished.header, finished.relations))
    }
}
