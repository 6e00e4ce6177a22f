//! The settlement spool: commits, releases and CDRs that could not be delivered, kept as JSON lines in a
//! local file until they are replayed.
//!
//! Each line is one [`SpoolRecord`]: the operation, the call, the exact JSON body that was (or would have
//! been) sent, and why it was spooled. Lines are appended and synced one by one, so that a crash loses at
//! most the line being written. Replay renames the file to `<path>.replaying` first, so new failures go
//! to a fresh spool meanwhile; a replay interrupted by a crash is finished by the next one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::wire::Operation;

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
    pub fn new(path: PathBuf) -> Spool {
        Spool {
            path,
            file: Mutex::new(None),
        }
    }

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

    /// Takes the records to replay: those of an interrupted replay if any, else the current spool (moved
    /// aside so that new failures go to a fresh file). `None` when there is nothing to replay.
    pub fn take_for_replay(&self) -> Result<Option<TakenRecords>, SpoolError> {
        let work = self.replay_path();
        if !work.exists() {
            let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
            *guard = None;
            match std::fs::rename(&self.path, &work) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.err("move aside for replay")(e)),
            }
        }
        let file = File::open(&work).map_err(self.err("open for replay"))?;
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(self.err("read for replay"))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<SpoolRecord>(&line) {
                Ok(r) => records.push(r),
                Err(_) => unreadable.push(line),
            }
        }
        Ok(Some(TakenRecords {
            work,
            records,
            unreadable,
        }))
    }

    /// Finishes a replay: records still undelivered go back to the spool, unreadable lines to
    /// `<path>.bad` for a person to look at, and the replay file is removed.
    pub fn finish_replay(
        &self,
        taken: TakenRecords,
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
            for line in &taken.unreadable {
                writeln!(bad, "{line}").map_err(self.err("write .bad file"))?;
            }
        }
        std::fs::remove_file(&taken.work).map_err(self.err("remove replay file"))
    }
}

/// Records taken from the spool for a replay.
#[derive(Debug)]
pub struct TakenRecords {
    /// The replay file they came from.
    work: PathBuf,
    /// The records to send again.
    pub records: Vec<SpoolRecord>,
    /// Lines that are not records (hand-edited, truncated by a crash): kept aside, never dropped.
    pub unreadable: Vec<String>,
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
