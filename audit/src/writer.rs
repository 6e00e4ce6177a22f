//! The writer thread `rtc-audit` and the handles the rest of the process talks to it through.
//!
//! [`AuditLog::record`] never blocks: it puts the entry on a bounded queue, and when the queue is full the entry
//! is dropped and counted ([`AuditStats::dropped`]; the writer warns about drops in the log, at most once a
//! second). The writer takes whatever is queued as one batch, stamps and chains each line, writes the batch, and
//! flushes it to the operating system: a crash of the process loses nothing written. It syncs the file to disk
//! (`fdatasync`) at most once a second while lines come in, at every rotation and when it stops: a power cut
//! loses at most the last second of lines, which is what a busy trail can afford beside the ledger's own syncs.
//!
//! A batch that cannot be written (disk full, I/O error) is taken back out of the file (truncated to where it
//! began), counted ([`AuditStats::write_errors`]), logged, and kept to be written again, the file reopened, at
//! the next batch or within a second; the chain is not advanced by lines that were not written. While the
//! writer keeps failing, what waits beyond one queue's worth of entries is dropped and counted.
//!
//! Rotation by size: before a line would take the file past `max_bytes`, the file is renamed `file.1`
//! (`file.1` to `file.2`, and so on; beyond `keep` the oldest goes) and a new file is started, mode 0600, whose
//! first line chains on the last line of the old one.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, select};

use crate::line::{self, Chain, Entry};
use crate::numbers::NumberPolicy;

/// The writer thread's name.
pub const THREAD_NAME: &str = "rtc-audit";

/// How long [`AuditWriter::stop`] waits for the writer to write what is queued and finish.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// How often, at most, the file is synced to disk while lines come in; also how soon a failed write is retried.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The smallest `max_bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 4096;

/// Where the trail is written and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// The current file; rotated files beside it as `file.1` (newest) to `file.<keep>`.
    pub file: PathBuf,
    /// The file is rotated before a line would take it past this many bytes (at least [`MIN_MAX_BYTES`]).
    pub max_bytes: u64,
    /// Rotated files kept; 0 keeps none (the full file is deleted and the chain starts its new file).
    pub keep: u32,
    /// How callers' and callees' numbers are written.
    pub numbers: NumberPolicy,
    /// Entries the queue holds (at least 1); a full queue drops and counts.
    pub queue: usize,
}

impl AuditSettings {
    /// The defaults (100 MB files, 10 kept, numbers in the clear, a queue of 65,536) for `file`.
    pub fn new(file: impl Into<PathBuf>) -> AuditSettings {
        AuditSettings {
            file: file.into(),
            max_bytes: 100_000_000,
            keep: 10,
            numbers: NumberPolicy::Plain,
            queue: 65_536,
        }
    }
}

/// Why the trail could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The settings cannot work.
    #[error("audit trail: {0}")]
    Settings(String),
    /// The file (or its directory) cannot be opened or read.
    #[error("audit trail {}: {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// The file's last line is not an audit line, so the chain cannot go on from it.
    #[error(
        "audit trail {}: its last line: {problem}; check it with `rtc-core audit verify`, and move the file aside \
         to start a new one",
        path.display()
    )]
    NotATrail {
        /// The file.
        path: PathBuf,
        /// What is wrong with its last line.
        problem: String,
    },
    /// The writer thread could not be started.
    #[error("audit trail: cannot start the writer thread: {0}")]
    Thread(io::Error),
}

/// The writer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Lines written.
    pub lines: u64,
    /// Entries not written: the queue was full (or the trail stopped), or the writer kept failing.
    pub dropped: u64,
    /// Batches, opens and rotations that failed (each logged).
    pub write_errors: u64,
    /// Files rotated.
    pub rotations: u64,
}

/// Counters shared by the handles and the writer.
#[derive(Debug, Default)]
struct Counters {
    lines: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    rotations: AtomicU64,
}

/// An entry and when it was recorded.
type Stamped = (SystemTime, Entry);

/// Records entries; cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: Sender<Stamped>,
    counters: Arc<Counters>,
}

impl AuditLog {
    /// Queues `entry` for the writer, stamped with the time now. Never blocks: when the queue is full (or the
    /// trail has stopped) the entry is dropped and counted.
    pub fn record(&self, entry: Entry) {
        match self.tx.try_send((SystemTime::now(), entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The writer's counters now.
    pub fn stats(&self) -> AuditStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AuditStats {
            lines: get(&self.counters.lines),
            dropped: get(&self.counters.dropped),
            write_errors: get(&self.counters.write_errors),
            rotations: get(&self.counters.rotations),
        }
    }

    /// Entries waiting for the writer.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// The writer thread; [`AuditWriter::stop`] (or dropping it) writes what is queued and joins it.
#[derive(Debug)]
pub struct AuditWriter {
    /// Dropped to tell the writer to finish.
    stop: Option<Sender<()>>,
    /// Closed by the writer when it has finished.
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    file: PathBuf,
}

impl AuditWriter {
    /// Writes what is queued, syncs and joins the writer, waiting at most [`STOP_WAIT`]. Entries recorded
    /// afterwards are dropped and counted.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        drop(stop);
        match self.done.recv_timeout(STOP_WAIT) {
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take()
                    && thread.join().is_err()
                {
                    log::error!("audit trail {}: the writer panicked", self.file.display());
                }
            }
            Ok(()) | Err(RecvTimeoutError::Timeout) => log::error!(
                "audit trail {}: the writer did not finish within {STOP_WAIT:?}; left behind",
                self.file.display()
            ),
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Opens (or creates, mode 0600) the trail's file, continues the chain of what is already there, and starts the
/// writer thread.
pub fn start(settings: AuditSettings) -> Result<(AuditLog, AuditWriter), AuditError> {
    if settings.queue == 0 {
        return Err(AuditError::Settings(
            "the queue must hold at least 1 entry".into(),
        ));
    }
    if settings.max_bytes < MIN_MAX_BYTES {
        return Err(AuditError::Settings(format!(
            "files of at most {} bytes are too small; at least {MIN_MAX_BYTES}",
            settings.max_bytes
        )));
    }
    let counters = Arc::new(Counters::default());
    let mut writer = Writer::new(settings, Arc::clone(&counters));
    writer.open(true)?;
    let (tx, rx) = crossbeam_channel::bounded(writer.settings.queue);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let file = writer.settings.file.clone();
    // Held by the writer so that its queue never reads as closed while it runs (the handles may all be gone).
    let keep_open = tx.clone();
    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let _keep_open = keep_open;
            writer.run(&rx, &stop_rx);
            drop(done_tx);
        })
        .map_err(AuditError::Thread)?;
    Ok((
        AuditLog { tx, counters },
        AuditWriter {
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
            file,
        },
    ))
}

/// The file being written.
struct Out {
    file: File,
    /// Its length: where the next line goes.
    len: u64,
}

/// The writer thread's state.
struct Writer {
    settings: AuditSettings,
    /// `None` after a failure, until reopened.
    out: Option<Out>,
    /// The next line's `seq` and `prev`.
    chain: Chain,
    /// Entries of batches that could not be written, oldest first.
    retry: Vec<Stamped>,
    counters: Arc<Counters>,
    /// Lines written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// The last attempt failed (logged once until it succeeds again).
    failing: bool,
    /// Drops already warned about.
    dropped_reported: u64,
    last_drop_report: Instant,
    /// After a failed rotation, the next is not tried before this.
    no_rotation_before: Instant,
}

impl Writer {
    fn new(settings: AuditSettings, counters: Arc<Counters>) -> Writer {
        Writer {
            settings,
            out: None,
            chain: Chain::genesis(),
            retry: Vec::new(),
            counters,
            unsynced: false,
            last_sync: Instant::now(),
            failing: false,
            dropped_reported: 0,
            last_drop_report: Instant::now(),
            no_rotation_before: Instant::now(),
        }
    }

    fn run(&mut self, rx: &Receiver<Stamped>, stop: &Receiver<()>) {
        loop {
            let mut batch = Vec::new();
            let stopping = select! {
                recv(rx) -> entry => {
                    batch.extend(entry.ok());
                    false
                }
                recv(stop) -> _ => true,
                default(SYNC_EVERY) => false,
            };
            batch.extend(rx.try_iter());
            self.write(batch);
            if stopping {
                // Whatever came in meanwhile: the handles may still be recording.
                let rest: Vec<Stamped> = rx.try_iter().collect();
                self.write(rest);
                if !self.retry.is_empty() {
                    self.write(Vec::new());
                }
                self.drop_retries("the trail stopped");
                self.sync();
                self.report_drops(true);
                return;
            }
            if self.unsynced && self.last_sync.elapsed() >= SYNC_EVERY {
                self.sync();
            }
            self.report_drops(false);
        }
    }

    /// Writes `batch` after what waits to be retried; on failure keeps the rest for the next attempt.
    fn write(&mut self, batch: Vec<Stamped>) {
        if batch.is_empty() && self.retry.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.retry);
        pending.extend(batch);
        if self.out.is_none()
            && let Err(e) = self.open(false)
        {
            self.failed(&e.to_string());
            self.keep_for_retry(pending);
            return;
        }
        let mut buf: Vec<u8> = Vec::new();
        // Where the lines in `buf` begin: the chain then, and the first one's entry.
        let mut segment = (self.chain.clone(), 0usize);
        let mut failure = None;
        let mut no_file_from = None;
        for (i, (at, entry)) in pending.iter().enumerate() {
            let before = self.chain.clone();
            let text = line::render(entry, *at, &mut self.chain, &self.settings.numbers);
            let len = self.out.as_ref().map_or(0, |o| o.len) + buf.len() as u64;
            if len > 0
                && len + text.len() as u64 > self.settings.max_bytes
                && Instant::now() >= self.no_rotation_before
            {
                if let Err(e) = self.append(&buf) {
                    failure = Some(e);
                    break;
                }
                buf.clear();
                segment = (before, i);
                self.rotate();
                if self.out.is_none() {
                    no_file_from = Some(i);
                    break;
                }
            }
            buf.extend_from_slice(&text);
        }
        if failure.is_none()
            && no_file_from.is_none()
            && let Err(e) = self.append(&buf)
        {
            failure = Some(e);
        }
        match (failure, no_file_from) {
            (Some(e), _) => self.take_back(&e, segment, pending),
            (None, Some(from)) => {
                self.chain = segment.0;
                self.keep_for_retry(pending.split_off(from));
            }
            (None, None) => {
                if self.failing {
                    log::info!(
                        "audit trail {}: writing again",
                        self.settings.file.display()
                    );
                    self.failing = false;
                }
            }
        }
    }

    /// Appends `bytes` (whole lines) to the file and flushes them to the operating system.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("the file is not open"))?;
        out.file.write_all(bytes)?;
        out.file.flush()?;
        out.len += bytes.len() as u64;
        let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        self.counters.lines.fetch_add(lines, Ordering::Relaxed);
        self.unsynced = true;
        Ok(())
    }

    /// A write failed: the part of the batch from `segment` is cut back out of the file and kept for a retry, and
    /// the chain goes back to where it stood before it.
    fn take_back(&mut self, e: &io::Error, segment: (Chain, usize), mut pending: Vec<Stamped>) {
        let (chain, from) = segment;
        if let Some(out) = self.out.take()
            && let Err(cut) = out.file.set_len(out.len)
        {
            log::error!(
                "audit trail {}: a partly written batch could not be cut back ({cut}); when the file is reopened the \
                 chain goes on from its last whole line, and lines of that batch may appear twice",
                self.settings.file.display()
            );
        }
        self.chain = chain;
        self.failed(&format!("cannot write: {e}"));
        self.keep_for_retry(pending.split_off(from));
    }

    fn failed(&mut self, what: &str) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing {
            log::error!(
                "audit trail {}: {what}; entries are kept and written again every {SYNC_EVERY:?} (beyond {} \
                 waiting they are dropped and counted)",
                self.settings.file.display(),
                self.settings.queue
            );
        }
        self.failing = true;
    }

    /// Keeps `pending` for the next attempt, dropping (and counting) the oldest beyond one queue's worth.
    fn keep_for_retry(&mut self, mut pending: Vec<Stamped>) {
        let excess = pending.len().saturating_sub(self.settings.queue);
        if excess > 0 {
            pending.drain(..excess);
            self.counters
                .dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
        self.retry = pending;
    }

    fn drop_retries(&mut self, why: &str) {
        if !self.retry.is_empty() {
            log::error!(
                "audit trail {}: {} entries not written ({why}): dropped",
                self.settings.file.display(),
                self.retry.len()
            );
            self.counters
                .dropped
                .fetch_add(self.retry.len() as u64, Ordering::Relaxed);
            self.retry.clear();
        }
    }

    fn sync(&mut self) {
        if let Some(out) = &self.out
            && self.unsynced
            && let Err(e) = out.file.sync_data()
        {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "audit trail {}: cannot sync to disk: {e}",
                self.settings.file.display()
            );
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    fn report_drops(&mut self, now: bool) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_reported && (now || self.last_drop_report.elapsed() >= SYNC_EVERY)
        {
            log::warn!(
                "audit trail {}: {} entries dropped ({} in all): the queue of {} was full or the file could not \
                 be written",
                self.settings.file.display(),
                dropped - self.dropped_reported,
                dropped,
                self.settings.queue
            );
            self.dropped_reported = dropped;
            self.last_drop_report = Instant::now();
        }
    }

    /// `file.<n>`.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = OsString::from(self.settings.file.as_os_str());
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Renames the file `file.1` (shifting the older ones, dropping beyond `keep`) and starts a new one. On
    /// failure the current file stays open and is written on, past its size.
    fn rotate(&mut self) {
        self.sync();
        let path = self.settings.file.clone();
        let keep = self.settings.keep;
        let moved = if keep == 0 {
            std::fs::remove_file(&path)
        } else {
            (1..keep)
                .rev()
                .map(|n| (self.rotated(n), self.rotated(n + 1)))
                .filter(|(from, _)| from.exists())
                .try_for_each(|(from, to)| std::fs::rename(from, to))
                .and_then(|()| std::fs::rename(&path, self.rotated(1)))
        };
        if let Err(e) = moved {
            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "audit trail {}: cannot rotate: {e}; writing on past its size, trying again in {SYNC_EVERY:?}",
                path.display()
            );
            self.no_rotation_before = Instant::now() + SYNC_EVERY;
            return;
        }
        self.out = None;
        self.counters.rotations.fetch_add(1, Ordering::Relaxed);
        match open_file(&path) {
            Ok(file) => self.out = Some(Out { file, len: 0 }),
            Err(e) => self.failed(&format!("cannot start a new file after rotating: {e}")),
        }
    }

    /// Opens the file and sets the chain from its last line (or, when it is empty, from what the chain already
    /// is, or at start from the last rotated file's last line). A file whose last line was cut short (a crash
    /// mid-write) is rotated away first, the chain going on from its last whole line.
    fn open(&mut self, at_start: bool) -> Result<(), AuditError> {
        let path = self.settings.file.clone();
        let io_err = |action: &'static str| {
            let path = path.clone();
            move |source| AuditError::Io {
                path,
                action,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(io_err("cannot create its directory"))?;
        }
        let mut file = open_file(&path).map_err(io_err("cannot open"))?;
        let len = file.metadata().map_err(io_err("cannot read"))?.len();
        let tail = last_line(&mut file, len).map_err(io_err("cannot read its last line"))?;
        let link = match tail.line.as_deref() {
            None => None,
            Some(text) => match line::read_link(text) {
                Ok(link) => Some(link),
                Err(line::LineProblem::Changed { seq }) => {
                    // Not for the writer to judge: it goes on from the hash the line carries; verify names it.
                    log::warn!(
                        "audit trail {}: its last line (seq {seq}) does not match its hash: it was changed; \
                         `rtc-core audit verify` names it",
                        path.display()
                    );
                    unchecked_link(text)
                }
                Err(problem) => {
                    return Err(AuditError::NotATrail {
                        path,
                        problem: problem.to_string(),
                    });
                }
            },
        };
        self.chain = match link {
            Some(link) => Chain::after(&link),
            None if at_start => self.last_rotated_chain().unwrap_or_else(Chain::genesis),
            None => self.chain.clone(),
        };
        self.out = Some(Out { file, len });
        if tail.torn {
            log::warn!(
                "audit trail {}: its last line was cut short (the writer stopped mid-line); the file is rotated and \
                 the chain goes on from seq {}",
                path.display(),
                self.chain.next_seq - 1
            );
            self.rotate();
            if self.out.is_none() {
                return Err(AuditError::Io {
                    path,
                    action: "cannot start a new file after a cut-short line",
                    source: io::Error::other("rotation failed"),
                });
            }
        }
        Ok(())
    }

    /// The chain after the last line of `file.1`, if it has one.
    fn last_rotated_chain(&self) -> Option<Chain> {
        let mut file = File::open(self.rotated(1)).ok()?;
        let len = file.metadata().ok()?.len();
        let tail = last_line(&mut file, len).ok()?;
        unchecked_link(tail.line.as_deref()?).map(|link| Chain::after(&link))
    }
}

/// `seq` and `hash` of a line, without checking them against its text.
fn unchecked_link(text: &[u8]) -> Option<line::Link> {
    let value: serde_json::Value = serde_json::from_slice(text).ok()?;
    Some(line::Link {
        seq: value.get("seq")?.as_u64()?,
        prev: value.get("prev")?.as_str()?.to_owned(),
        hash: value.get("hash")?.as_str()?.to_owned(),
    })
}

/// Opens `path` to append, creating it mode 0600; an existing file readable or writable by others is made 0600.
fn open_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        log::warn!(
            "audit trail {}: was mode {:o}, readable beyond its owner; made 0600",
            path.display(),
            mode & 0o777
        );
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The end of a file: its last whole line (without the newline), and whether a cut-short line follows it.
struct Tail {
    line: Option<Vec<u8>>,
    torn: bool,
}

/// Longest last line read back.
const MAX_LINE: u64 = 16 << 20;

/// Reads the last whole line of a file of `len` bytes, from its end.
fn last_line(file: &mut File, len: u64) -> io::Result<Tail> {
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    // Enough read once two newlines are in (the line's end and the one before it), or the whole file is.
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() < 2 {
        if len - start > MAX_LINE {
            return Err(io::Error::other(format!(
                "no line end in its last {MAX_LINE} bytes"
            )));
        }
        let chunk = start.min(64 * 1024);
        start -= chunk;
        let mut part = vec![0u8; chunk as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut part)?;
        part.extend_from_slice(&buf);
        buf = part;
    }
    let torn = !buf.is_empty() && !buf.ends_with(b"\n");
    // Up to the last newline: whole lines only.
    let whole = match buf.iter().rposition(|&b| b == b'\n') {
        Some(end) => &buf[..end],
        None => return Ok(Tail { line: None, torn }),
    };
    let begin = whole.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Ok(Tail {
        line: Some(whole[begin..].to_vec()),
        torn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Stamped> {
        (0..n)
            .map(|_| (SystemTime::now(), Entry::new(crate::kind::LOAD, "module")))
            .collect()
    }

    #[test]
    fn a_full_queue_drops_at_once() {
        let (tx, _rx) = crossbeam_channel::bounded(2);
        let log = AuditLog {
            tx,
            counters: Arc::default(),
        };
        let began = Instant::now();
        for _ in 0..5 {
            log.record(Entry::new(crate::kind::RELOAD, "api"));
        }
        assert!(began.elapsed() < Duration::from_secs(1));
        assert_eq!(log.queued(), 2);
        assert_eq!(log.stats().dropped, 3);
    }

    #[test]
    fn a_batch_that_cannot_be_written_is_taken_back_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trail.jsonl");
        let counters = Arc::new(Counters::default());
        let mut writer = Writer::new(AuditSettings::new(&path), Arc::clone(&counters));
        writer.open(true).unwrap();
        writer.write(entries(2));
        let len = std::fs::metadata(&path).unwrap().len();
        // A handle that cannot write: the next batch fails.
        writer.out = Some(Out {
            file: File::open(&path).unwrap(),
            len,
        });
        writer.write(entries(3));
        assert_eq!(counters.write_errors.load(Ordering::Relaxed), 1);
        assert_eq!(writer.retry.len(), 3);
        assert_eq!(writer.chain.next_seq, 3, "the chain is not advanced");
        assert!(writer.out.is_none());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        // The next attempt reopens the file and writes what was kept first.
        writer.write(entries(1));
        assert!(writer.retry.is_empty());
        assert_eq!(counters.lines.load(Ordering::Relaxed), 6);
        let report = crate::verify(&[path]).unwrap();
        assert_eq!((report.lines, report.last_seq), (6, 6));
    }
}
