//! The settlement spool: commits, releases and CDRs that could not be delivered, kept as JSON lines in a
//! local file until they are replayed.
//!
//! Each line is one [`SpoolRecord`]: the operation, the call, the exact JSON body that was (or would have
//! been) sent, and why it was spooled. Lines are appended and synced one by one, so that a crash loses at
//! most the line being written. Replay renames the file to `<path>.replaying` first, so new failures go
//! to a fresh spool meanwhile; a replay interrupted by a crash is finished by the next one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::wire::Operation;

/// One undelivered settlement request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// Which operation (`commit`, `release`, `cdr`): tells the service and the path to post to.
    pub op: Operation,
    /// The call, for operators reading the file and for the `Idempotency-Key` header.
    pub call_id: String,
    /// When it was (last) spooled, milliseconds since the Unix epoch.
    pub spooled_at_ms: u64,
    /// Delivery attempts made so far, replays included.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// The request body, exactly as sent.
    pub body: serde_json::Value,
}

impl SpoolRecord {
    /// Milliseconds since the epoch, as records keep time.
    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Why the spool could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("settlement spool {path}: {action}: {source}")]
pub struct SpoolError {
    /// The file.
    pub path: PathBuf,
    /// What was being done ("append", "open", "rename"...).
    pub action: &'static str,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// The spool file. Appends are serialised by a mutex; they are rare (only failed settlements).
#[derive(Debug)]
pub struct Spool {
    /// Where records are appended.
    path: PathBuf,
    /// The open file, opened on first append and closed when replay takes the file away.
    file: Mutex<Option<File>>,
}

impl Spool {
    /// The spool in `path` (the file is made at the first record).
    pub fn new(path: PathBuf) -> Spool {
        Spool {
            path,
            file: Mutex::new(None),
        }
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a replay in progress keeps the records it is working on.
    pub fn replay_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".replaying");
        PathBuf::from(name)
    }

    fn err(&self, action: &'static str) -> impl FnOnce(io::Error) -> SpoolError + '_ {
        move |source| SpoolError {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Appends records and syncs them to disk. Blocking: call from a blocking-capable thread.
    pub fn append(&self, records: &[SpoolRecord]) -> Result<(), SpoolError> {
        let mut text = Vec::new();
        for record in records {
            serde_json::to_writer(&mut text, record)
                .map_err(|e| self.err("serialise")(io::Error::other(e)))?;
            text.push(b'\n');
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(self.err("create directory"))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(self.err("open"))?;
            *guard = Some(file);
        }
        let Some(file) = guard.as_mut() else {
            return Ok(());
        };
        let written = file.write_all(&text).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Reopen next time: the handle may be the problem (file removed, disk replaced).
            *guard = None;
            return Err(self.err("append")(e));
        }
        Ok(())
    }

    /// Where a replay in progress records how far into its file it has come (bytes, after the last chunk
    /// whose undelivered records went back to the spool).
    fn progress_path(&self) -> PathBuf {
        let mut name = self.replay_path().into_os_string();
        name.push(".offset");
        PathBuf::from(name)
    }

    /// Starts (or resumes) a replay and reads its first chunk of at most [`REPLAY_CHUNK`] records: those of an
    /// interrupted replay if any, from where it had come, else the current spool (moved aside so that new
    /// failures go to a fresh file). `None` when there is nothing to replay. A spool of any size is replayed in
    /// bounded memory, chunk by chunk ([`Spool::next_chunk`]).
    pub fn take_for_replay(&self) -> Result<Option<TakenRecords>, SpoolError> {
        let work = self.replay_path();
        let progress = self.progress_path();
        let mut offset = 0;
        if work.exists() {
            offset = std::fs::read_to_string(&progress)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
        } else {
            // A progress file without its replay file belongs to a replay already finished.
            match std::fs::remove_file(&progress) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("remove stale replay progress")(e)),
            }
            let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
            *guard = None;
            match std::fs::rename(&self.path, &work) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.err("move aside for replay")(e)),
            }
        }
        let mut file = File::open(&work).map_err(self.err("open for replay"))?;
        let len = file.metadata().map_err(self.err("open for replay"))?.len();
        if offset > len {
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(self.err("open for replay"))?;
        let mut taken = TakenRecords {
            work,
            reader: BufReader::new(file),
            offset,
            at_end: false,
            records: Vec::new(),
            unreadable: Vec::new(),
        };
        self.read_chunk(&mut taken)?;
        Ok(Some(taken))
    }

    fn read_chunk(&self, taken: &mut TakenRecords) -> Result<(), SpoolError> {
        taken.records.clear();
        let mut line = String::new();
        while taken.records.len() < REPLAY_CHUNK {
            line.clear();
            let n = taken
                .reader
                .read_line(&mut line)
                .map_err(self.err("read for replay"))?;
            if n == 0 {
                taken.at_end = true;
                break;
            }
            taken.offset += n as u64;
            let text = line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<SpoolRecord>(text) {
                Ok(r) => taken.records.push(r),
                Err(_) => taken.unreadable.push(text.to_owned()),
            }
        }
        Ok(())
    }

    /// Settles the chunk just sent (`failed`: its records still undelivered, back to the spool; unreadable
    /// lines to `<path>.bad`), records the progress, and reads the next chunk into `taken`. A crash anywhere
    /// sends at most the last chunk again: deliveries are idempotent (`Idempotency-Key`).
    pub fn next_chunk(
        &self,
        taken: &mut TakenRecords,
        failed: &[SpoolRecord],
    ) -> Result<(), SpoolError> {
        self.settle_chunk(taken, failed)?;
        let mut progress =
            File::create(self.progress_path()).map_err(self.err("write replay progress"))?;
        progress
            .write_all(taken.offset.to_string().as_bytes())
            .and_then(|()| progress.sync_data())
            .map_err(self.err("write replay progress"))?;
        self.read_chunk(taken)
    }

    fn settle_chunk(
        &self,
        taken: &mut TakenRecords,
        failed: &[SpoolRecord],
    ) -> Result<(), SpoolError> {
        if !failed.is_empty() {
            self.append(failed)?;
        }
        if !taken.unreadable.is_empty() {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".bad");
            let mut bad = OpenOptions::new()
                .create(true)
                .append(true)
                .open(PathBuf::from(name))
                .map_err(self.err("open .bad file"))?;
            for line in taken.unreadable.drain(..) {
                writeln!(bad, "{line}").map_err(self.err("write .bad file"))?;
            }
        }
        Ok(())
    }

    /// Finishes a replay after its last chunk: records still undelivered go back to the spool, unreadable
    /// lines to `<path>.bad` for a person to look at, and the replay file is removed (its progress first, so
    /// that a crash in between replays the file again rather than skipping into the next one).
    pub fn finish_replay(
        &self,
        mut taken: TakenRecords,
        failed: &[SpoolRecord],
    ) -> Result<(), SpoolError> {
        self.settle_chunk(&mut taken, failed)?;
        match std::fs::remove_file(self.progress_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.err("remove replay progress")(e)),
        }
        std::fs::remove_file(&taken.work).map_err(self.err("remove replay file"))
    }
}

/// Records a replay reads at a time.
pub const REPLAY_CHUNK: usize = 1000;

/// A replay in progress: its file, where it has come, and the chunk of records to send now.
#[derive(Debug)]
pub struct TakenRecords {
    /// The replay file they come from.
    work: PathBuf,
    /// The replay file, read a chunk at a time.
    reader: BufReader<File>,
    /// Bytes of the replay file read so far.
    offset: u64,
    /// Whether the file has been read to its end (the chunk in `records` is the last).
    at_end: bool,
    /// The records to send now.
    pub records: Vec<SpoolRecord>,
    /// Lines of this chunk that are not records (hand-edited, truncated by a crash): kept aside, never dropped.
    pub unreadable: Vec<String>,
}

impl TakenRecords {
    /// Whether the chunk in `records` is the replay's last.
    pub fn is_last(&self) -> bool {
        self.at_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> SpoolRecord {
        SpoolRecord {
            op: Operation::Commit,
            call_id: format!("call-{n}"),
            spooled_at_ms: 1,
            attempts: n,
            last_error: "HTTP status 503".into(),
            body: serde_json::json!({"n": n}),
        }
    }

    #[test]
    fn appends_lines_and_replays_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("sub/spool.jsonl"));
        spool.append(&[record(1)]).unwrap();
        spool.append(&[record(2)]).unwrap();
        let text = std::fs::read_to_string(spool.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with(r#"{"op":"commit","call_id":"call-1""#));

        let taken = spool.take_for_replay().unwrap().unwrap();
        assert_eq!(taken.records, vec![record(1), record(2)]);
        // While replaying, new failures go to a fresh spool.
        spool.append(&[record(3)]).unwrap();
        spool.finish_replay(taken, &[record(2)]).unwrap();
        let text = std::fs::read_to_string(spool.path()).unwrap();
        let left: Vec<SpoolRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(left, vec![record(3), record(2)]);
        assert!(!spool.replay_path().exists());
    }

    #[test]
    fn a_large_spool_is_replayed_a_chunk_at_a_time_and_resumed_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool.jsonl"));
        let total = REPLAY_CHUNK as u32 * 2 + 5;
        spool
            .append(&(1..=total).map(record).collect::<Vec<_>>())
            .unwrap();
        let mut taken = spool.take_for_replay().unwrap().unwrap();
        assert_eq!(taken.records.len(), REPLAY_CHUNK);
        assert!(!taken.is_last());
        // The first chunk's record 1 failed again: back to the spool, progress recorded.
        spool.next_chunk(&mut taken, &[record(1)]).unwrap();
        assert_eq!(taken.records[0], record(REPLAY_CHUNK as u32 + 1));
        // A crash now: the next replay resumes after the first chunk, sending the second one again at most.
        drop(taken);
        let mut taken = spool.take_for_replay().unwrap().unwrap();
        assert_eq!(taken.records[0], record(REPLAY_CHUNK as u32 + 1));
        spool.next_chunk(&mut taken, &[]).unwrap();
        assert_eq!(taken.records.len(), 5);
        assert!(taken.is_last());
        spool.finish_replay(taken, &[]).unwrap();
        assert!(!spool.replay_path().exists() && !spool.progress_path().exists());
        // Only the failed record is left for the next replay.
        let taken = spool.take_for_replay().unwrap().unwrap();
        assert_eq!(taken.records, vec![record(1)]);
    }

    #[test]
    fn nothing_to_replay_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool.jsonl"));
        assert!(spool.take_for_replay().unwrap().is_none());
    }

    #[test]
    fn an_interrupted_replay_is_finished_first_and_bad_lines_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool.jsonl"));
        let line = serde_json::to_string(&record(9)).unwrap();
        std::fs::write(spool.replay_path(), format!("{line}\n{{truncated\n")).unwrap();
        spool.append(&[record(1)]).unwrap();
        let taken = spool.take_for_replay().unwrap().unwrap();
        assert_eq!(taken.records, vec![record(9)]);
        assert_eq!(taken.unreadable, vec!["{truncated".to_owned()]);
        spool.finish_replay(taken, &[]).unwrap();
        let bad = std::fs::read_to_string(dir.path().join("spool.jsonl.bad")).unwrap();
        assert_eq!(bad, "{truncated\n");
        // The current spool was left alone for the next replay.
        let taken = spool.take_for_replay().unwrap().unwrap();
        assert_eq!(taken.records, vec![record(1)]);
    }

    #[test]
    fn an_unwritable_spool_says_where_and_what() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let spool = Spool::new(dir.path().join("file/spool.jsonl"));
        let err = spool.append(&[record(1)]).unwrap_err().to_string();
        assert!(err.contains("file/spool.jsonl"), "{err}");
    }
}
