//! A sink's disk-backed buffer: records are appended (and synced) before any delivery is
//! tried, and a delivered offset is kept beside them, so neither a sink outage nor a node
//! restart loses a record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug)]
pub struct Spool {
    records: PathBuf,
    offset: PathBuf,
    append: Mutex<File>,
}

impl Spool {
    pub fn open(dir: &Path, name: &str) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let records = dir.join(format!("{name}.jsonl"));
        let append = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&records)?;
        Ok(Spool {
            records,
            offset: dir.join(format!("{name}.offset")),
            append: Mutex::new(append),
        })
    }

    /// Appends one record line and syncs it to disk before returning.
    pub fn append(&self, line: &str) -> std::io::Result<()> {
        let mut file = self
            .append
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_data()
    }

    /// Complete lines from `offset` on: (end offset, line).
    pub fn read_from(&self, offset: u64) -> std::io::Result<Vec<(u64, String)>> {
        let mut file = File::open(&self.records)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut out = Vec::new();
        let mut end = offset;
        for piece in text.split_inclusive('\n') {
            if !piece.ends_with('\n') {
                break; // a record still being written
            }
            end += piece.len() as u64;
            out.push((end, piece.trim_end_matches('\n').to_string()));
        }
        Ok(out)
    }

    /// Bytes not yet delivered.
    pub fn depth(&self, offset: u64) -> u64 {
        std::fs::metadata(&self.records)
            .map(|m| m.len().saturating_sub(offset))
            .unwrap_or(0)
    }

    pub fn delivered(&self) -> u64 {
        std::fs::read_to_string(&self.offset)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records everything before `offset` as delivered (write, then rename: never torn).
    pub fn set_delivered(&self, offset: u64) -> std::io::Result<()> {
        let tmp = self.offset.with_extension("offset.tmp");
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::rename(&tmp, &self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_records_survive_reopening_with_their_delivered_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "sink-0").expect("open");
        spool.append("one").expect("append");
        spool.append("two").expect("append");
        let lines = spool.read_from(0).expect("read");
        assert_eq!(
            lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        spool.set_delivered(lines[0].0).expect("offset");
        drop(spool);
        let reopened = Spool::open(dir.path(), "sink-0").expect("reopen");
        let from = reopened.delivered();
        let rest = reopened.read_from(from).expect("read");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1, "two");
        assert_eq!(reopened.depth(from), 4);
    }
}
