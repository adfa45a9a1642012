//! `TxnBuffer`: the messages of the transaction being received, in memory
//! up to a limit and then in a temporary file, so that a transaction of any
//! size passes through in bounded memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;

/// The messages of one transaction, in order.
pub struct TxnBuffer {
    memory: Vec<Bytes>,
    memory_bytes: usize,
    limit: usize,
    spill: Option<BufWriter<File>>,
    spilled_bytes: u64,
    spill_dir: std::path::PathBuf,
}

impl TxnBuffer {
    /// Holds up to `limit` bytes in memory, then spills to `spill_dir`.
    pub fn new(limit: usize, spill_dir: &Path) -> Self {
        TxnBuffer {
            memory: Vec::new(),
            memory_bytes: 0,
            limit,
            spill: None,
            spilled_bytes: 0,
            spill_dir: spill_dir.to_path_buf(),
        }
    }

    pub fn push(&mut self, message: Bytes) -> std::io::Result<()> {
        if self.spill.is_none() && self.memory_bytes + message.len() <= self.limit {
            self.memory_bytes += message.len();
            self.memory.push(message);
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(s) => s,
            None => {
                // An unnamed file: gone as soon as it is closed, even after a crash.
                let file = tempfile::tempfile_in(&self.spill_dir)?;
                tracing::debug!(dir = %self.spill_dir.display(), "spilling a large transaction to disk");
                self.spill.insert(BufWriter::with_capacity(1 << 20, file))
            }
        };
        spill.write_all(&(message.len() as u32).to_be_bytes())?;
        spill.write_all(&message)?;
        self.spilled_bytes += message.len() as u64;
        Ok(())
    }

    /// Bytes held in memory and on disk.
    pub fn len_bytes(&self) -> u64 {
        self.memory_bytes as u64 + self.spilled_bytes
    }

    pub fn is_spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Hands every message to `f`, in order, reading spilled ones back one
    /// at a time.
    pub fn drain(self, mut f: impl FnMut(Bytes) -> Result<(), crate::AgentError>) -> Result<(), crate::AgentError> {
        for message in self.memory {
            f(message)?;
        }
        let Some(spill) = self.spill else { return Ok(()) };
        let mut file = spill.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut len = [0u8; 4];
        loop {
            match reader.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let mut message = vec![0u8; u32::from_be_bytes(len) as usize];
            reader.read_exact(&mut message)?;
            f(Bytes::from(message))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_limit_and_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut txn = TxnBuffer::new(10, dir.path());
        let messages: Vec<Bytes> = (0..50u8).map(|i| Bytes::from(vec![i; usize::from(i % 7) + 1])).collect();
        for m in &messages {
            txn.push(m.clone()).unwrap();
        }
        assert!(txn.is_spilled());
        assert_eq!(txn.len_bytes(), messages.iter().map(|m| m.len() as u64).sum::<u64>());
        let mut out = Vec::new();
        txn.drain(|m| {
            out.push(m);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, messages);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spill file has no name to leave behind");
    }
}
