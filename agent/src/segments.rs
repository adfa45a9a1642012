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

    /// Finishes the segment: the file then holds the whole object. Returns
    /// it and the relation cache for the next segment.
    pub fn seal(self) -> Result<(SealedSegment, RelationCache), AgentError> {
        let finished = self.writer.finish()?;
        let mut file = finished.sink.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&finished.header.encode())?;
        file.flush()?;
        Ok((SealedSegment { file, header: finished.header }, finished.relations))
    }
}

/// A finished segment waiting in its temporary file to be stored.
pub struct SealedSegment {
    file: File,
    pub header: SegmentHeader,
}

impl SealedSegment {
    pub fn key(&self) -> String {
        SegmentKey::new(self.header.start_lsn, self.header.end_lsn).to_string()
    }

    /// Stores the segment; when this returns `Ok`, it is durable.
    pub async fn upload(&self, store: &dyn ObjectStore) -> Result<(), crate::store::StoreError> {
        // The unnamed file is reachable through /proc while we hold it open.
        let path =
            std::path::PathBuf::from(format!("/proc/self/fd/{}", std::os::unix::io::AsRawFd::as_raw_fd(&self.file)));
        store.put_file(&self.key(), &path).await
    }
}
