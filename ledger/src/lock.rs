//! One writer per ledger file: an exclusive lock on `<ledger>.lock`, holding the writer's pid so that a second
//! process is told who has it.
//!
//! The lock is `flock`-style (std's `File::try_lock`): the kernel drops it when the holder dies, `kill -9`
//! included, so a crash never leaves a stale lock behind. Two opens in one process conflict too (the lock
//! belongs to the open file, not the process), which catches a module loaded twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::OpenError;

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WriterLock {
    /// The lock file, locked while this lives.
    _file: File,
    /// Its path, for messages.
    path: PathBuf,
}

impl WriterLock {
    /// The lock file of the ledger at `ledger`.
    pub fn path_for(ledger: &Path) -> PathBuf {
        let mut name = ledger.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of the ledger at `ledger`, or says who holds it.
    pub fn acquire(ledger: &Path) -> Result<WriterLock, OpenError> {
        let path = Self::path_for(ledger);
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| OpenError::Io {
                path,
                action,
                source,
            }
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .map_err(io("cannot open the ledger's lock file"))?;
        // A child this process forks holds a copy of the open lock file until it execs (the file is close-on-exec):
        // a lock that says it is this process's own is tried again for a moment before it counts as held.
        let patience = std::time::Instant::now() + std::time::Duration::from_millis(250);
        let mut locked = file.try_lock();
        while matches!(locked, Err(std::fs::TryLockError::WouldBlock))
            && std::time::Instant::now() < patience
            && Self::holder(&mut file).trim() == std::process::id().to_string()
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
            locked = file.try_lock();
        }
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = Self::holder(&mut file);
                let holder = holder.trim();
                return Err(OpenError::Locked {
                    path: ledger.to_owned(),
                    lock: path.clone(),
                    holder: if holder.is_empty() {
                        "(unknown pid)".to_string()
                    } else {
                        holder.chars().take(32).collect()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io("cannot lock the ledger's lock file")(e));
            }
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(io("cannot write the ledger's lock file"))?;
        Ok(WriterLock { _file: file, path })
    }

    /// What the lock file says of its holder.
    fn holder(file: &mut File) -> String {
        let mut holder = String::new();
        let _ = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut holder));
        holder
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_told_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("rtc_core.db");
        let held = WriterLock::acquire(&ledger).unwrap();
        let e = WriterLock::acquire(&ledger).unwrap_err().to_string();
        assert!(
            e.contains(&format!("by process {}", std::process::id())),
            "{e}"
        );
        assert!(e.contains("rtc_core.db.lock"), "{e}");
        drop(held);
        WriterLock::acquire(&ledger).unwrap();
    }
}
