//! A sink's disk-backed buffer: records are appended before any delivery is tried, and a
//! delivered offset is kept beside them, so neither a sink outage nor a node restart loses a
//! record. An append reaches the page cache at once (it survives the process being killed) and
//! the disk at the next [`Spool::sync`], which the delivery runs every [`SYNC_EVERY`] (it
//! survives a machine crash, on a volume that survives one): one fdatasync per interval
//! instead of one per record keeps auditing out of a join's latency. Once everything is delivered the file is emptied, so a buffer only
//! ever holds what a sink has not taken yet.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How often appended records are synced to the disk.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A drained buffer is emptied once it is this large.
pub const COMPACT_AT: u64 = 1 << 20;

#[derive(Debug)]
pub struct Spool {
    records: PathBuf,
    offset: PathBuf,
    append: Mutex<File>,
    /// Appended since the last sync.
    dirty: std::sync::atomic::AtomicBool,
}

impl Spool {
    pub fn open(dir: &Path, name: &str) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let records = dir.join(format!("{name}.jsonl"));
        let append = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&records)?;
        let spool = Spool {
            records,
            offset: dir.join(format!("{name}.offset")),
            append: Mutex::new(append),
            dirty: std::sync::atomic::AtomicBool::new(false),
        };
        spool.set_aside_torn_tail()?;
        // After a machine crash the offset (synced) can be ahead of records that were
        // delivered but not on the disk yet: new records are written from the shorter end,
        // and must not be skipped.
        let len = spool.len()?;
        if spool.delivered() > len {
            spool.write_offset(len)?;
        }
        Ok(spool)
    }

    /// A record cut short by a crash (a write the disk kept only part of) would run into the
    /// next one appended: it is moved to the `.set-aside` file and the buffer ends at its last
    /// whole record. Delivery never read it (only whole lines are read), so nothing delivered
    /// moves.
    fn set_aside_torn_tail(&self) -> std::io::Result<()> {
        let mut file = File::open(&self.records)?;
        let len = file.metadata()?.len();
        let mut end = len;
        let mut chunk = vec![0u8; 4096];
        while end > 0 {
            let from = end.saturating_sub(chunk.len() as u64);
            let part = &mut chunk[..(end - from) as usize];
            file.seek(SeekFrom::Start(from))?;
            std::io::Read::read_exact(&mut file, part)?;
            match part.iter().rposition(|b| *b == b'\n') {
                Some(at) => {
                    end = from + at as u64 + 1;
                    break;
                }
                None => end = from,
            }
        }
        if end == len {
            return Ok(());
        }
        file.seek(SeekFrom::Start(end))?;
        let mut torn = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut torn)?;
        tracing::warn!(
            buffer = %self.records.display(),
            bytes = torn.len(),
            "an audit record cut short by a crash was set aside; the buffer goes on after the last whole record"
        );
        self.keep_aside(&String::from_utf8_lossy(&torn))?;
        self.append
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?
            .set_len(end)
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(std::fs::metadata(&self.records)?.len())
    }

    pub fn delivered(&self) -> u64 {
        std::fs::read_to_string(&self.offset)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Appends one record line (one write). A write cut short (a full disk) is taken back,
    /// so the next record does not run into half of this one.
    pub fn append(&self, line: &str) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(line.len() + 1);
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
        let mut file = self
            .append
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&text) {
            let _ = file.set_len(before);
            return Err(e);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Syncs what was appended since the last sync to the disk.
    pub fn sync(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let file = self
            .append
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?
            .try_clone()?;
        // Outside the lock: appends go on while the disk catches up.
        file.sync_data()
    }

    /// Up to `max` complete lines from `offset` on: (end offset, line).
    pub fn read_from(&self, offset: u64, max: usize) -> std::io::Result<Vec<(u64, String)>> {
        let mut file = File::open(&self.records)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::new(file);
        let mut out = Vec::new();
        let mut end = offset;
        let mut line = String::new();
        while out.len() < max {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 || !line.ends_with('\n') {
                break; // the end, or a record still being written
            }
            end += read as u64;
            out.push((end, line.trim_end_matches('\n').to_string()));
        }
        Ok(out)
    }

    /// Empties the buffer when everything up to its end (`delivered`) has been delivered
    /// and it has grown past [`COMPACT_AT`]; returns whether it did. Only the sink's delivery
    /// task calls this, so the offset cannot move meanwhile; appends wait on the lock.
    pub fn compact_if_drained(&self, delivered: u64) -> std::io::Result<bool> {
        let file = self
            .append
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        let len = file.metadata()?.len();
        if len != delivered || len < COMPACT_AT {
            return Ok(false);
        }
        // Offset first: a crash between the two steps re-delivers (a detectable duplicate)
        // instead of skipping records appended after the truncation.
        self.write_offset(0)?;
        file.set_len(0)?;
        Ok(true)
    }

    /// The buffer's file name, to name it in a report.
    pub fn file_name(&self) -> String {
        self.records
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The complete records in the buffer's last `window` bytes, delivered or not (the first,
    /// cut by the window, left out).
    pub fn tail_lines(&self, window: u64) -> std::io::Result<Vec<String>> {
        let mut file = File::open(&self.records)?;
        let len = file.metadata()?.len();
        let from = len.saturating_sub(window);
        file.seek(SeekFrom::Start(from))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text)?;
        let Some(end) = text.rfind('\n') else {
            return Ok(Vec::new());
        };
        let mut lines: Vec<String> = text[..end].split('\n').map(str::to_string).collect();
        if from > 0 {
            lines.remove(0);
        }
        lines.retain(|l| !l.is_empty());
        Ok(lines)
    }

    /// The last complete record in the buffer, delivered or not.
    pub fn last_line(&self) -> std::io::Result<Option<String>> {
        // Records are well under 4 KiB; the tail of the file holds the last one whole.
        Ok(self.tail_lines(64 * 1024)?.pop())
    }

    /// Bytes not yet delivered.
    pub fn depth(&self, offset: u64) -> u64 {
        std::fs::metadata(&self.records)
            .map(|m| m.len().saturating_sub(offset))
            .unwrap_or(0)
    }

    /// Records everything before `offset` as delivered: the records reach the disk first,
    /// then the offset is written, synced and renamed into place (never torn, never ahead of
    /// what a crash keeps).
    pub fn set_delivered(&self, offset: u64) -> std::io::Result<()> {
        self.sync()?;
        self.write_offset(offset)
    }

    /// Writes the delivered offset (without syncing the records first).
    fn write_offset(&self, offset: u64) -> std::io::Result<()> {
        let tmp = self.offset.with_extension("offset.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(offset.to_string().as_bytes())?;
        file.sync_data()?;
        std::fs::rename(&tmp, &self.offset)?;
        if let Some(dir) = self.offset.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Moves a line that is not a record out of the way: appended to the `.set-aside` file
    /// beside the buffer (kept for whoever investigates), and counted as delivered.
    pub fn set_aside(&self, line: &str, end: u64) -> std::io::Result<()> {
        self.keep_aside(line)?;
        self.set_delivered(end)
    }

    fn keep_aside(&self, line: &str) -> std::io::Result<()> {
        let mut aside = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.records.with_extension("set-aside"))?;
        aside.write_all(line.as_bytes())?;
        aside.write_all(b"\n")?;
        aside.sync_data()
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
        let lines = spool.read_from(0, 10).expect("read");
        assert_eq!(
            lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        spool.set_delivered(lines[0].0).expect("offset");
        drop(spool);
        let reopened = Spool::open(dir.path(), "sink-0").expect("reopen");
        let from = reopened.delivered();
        let rest = reopened.read_from(from, 10).expect("read");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1, "two");
        assert_eq!(reopened.depth(from), 4);
        assert_eq!(reopened.last_line().expect("read").as_deref(), Some("two"));
    }

    #[test]
    fn an_offset_ahead_of_the_buffer_resumes_at_its_end_and_skips_nothing_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "sink-0").expect("open");
        spool.append("one").expect("append");
        // A crash kept the offset of records the disk did not keep.
        spool.set_delivered(400).expect("offset");
        drop(spool);
        let spool = Spool::open(dir.path(), "sink-0").expect("reopened after the crash");
        assert_eq!(spool.delivered(), 4);
        spool.append("two").expect("append");
        let rest = spool.read_from(spool.delivered(), 10).expect("read");
        assert_eq!(rest, [(8, "two".to_string())]);
    }

    #[test]
    fn a_line_set_aside_is_kept_beside_the_buffer_and_delivery_moves_past_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "sink-0").expect("open");
        spool.append("{\"seq\":1,\"ev").expect("append");
        spool.append("{\"seq\":2}").expect("append");
        let lines = spool.read_from(0, 10).expect("read");
        spool.set_aside(&lines[0].1, lines[0].0).expect("set aside");
        let rest = spool.read_from(spool.delivered(), 10).expect("read");
        assert_eq!(rest[0].1, "{\"seq\":2}");
        let aside = std::fs::read_to_string(dir.path().join("sink-0.set-aside")).expect("kept");
        assert_eq!(aside, "{\"seq\":1,\"ev\n");
    }

    #[test]
    fn a_drained_buffer_is_emptied_and_keeps_taking_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), "sink-0").expect("open");
        let record = "r".repeat(1023);
        for _ in 0..(COMPACT_AT / 1024) {
            spool.append(&record).expect("append");
        }
        let lines = spool.read_from(0, 5).expect("read");
        assert_eq!(lines.len(), 5, "reads are bounded");
        let end = COMPACT_AT;
        assert!(
            !spool.compact_if_drained(lines[4].0).expect("compact"),
            "not drained yet"
        );
        spool.set_delivered(end).expect("offset");
        assert!(spool.compact_if_drained(end).expect("compact"));
        assert_eq!((spool.delivered(), spool.depth(0)), (0, 0));
        spool.append("after").expect("append");
        let rest = spool.read_from(spool.delivered(), 10).expect("read");
        assert_eq!(rest, [(6, "after".to_string())]);
    }
}
