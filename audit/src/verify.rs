//! Checking a trail: every line's hash against its text, and every line's `seq` and `prev` against the line
//! before it, over one file or several given oldest first (`file.2 file.1 file`) as one chain.
//!
//! What a chain proves, and what it cannot: a changed line fails its own hash (named by its line); a removed line
//! leaves a gap in `seq` (named at the line after it); a line replaced by one with a hash of its own breaks the
//! next line's `prev`. The first line checked is taken on trust (its `seq` and `prev` are reported: what came
//! before it was rotated away or is in a file not given). The last line cannot be vouched for by anything after
//! it: removing it, or the whole end of the trail, leaves a shorter chain that is sound. Keep the last `seq` and
//! `hash` the report gives somewhere else (a ticket, another host) and compare them next time. Someone who can
//! write the files can also rewrite the whole chain from a line on; the hash that was kept elsewhere exposes that
//! too.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::line::{self, LineProblem, Link};

/// A sound chain: how much was checked, and its two ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Lines checked.
    pub lines: u64,
    /// `seq` of the first line (0: no lines).
    pub first_seq: u64,
    /// `prev` of the first line, taken on trust: the hash of a line in a file not given.
    pub first_prev: String,
    /// `seq` of the last line (0: no lines).
    pub last_seq: u64,
    /// `hash` of the last line: keep it elsewhere to detect a removed end later.
    pub last_hash: String,
    /// Files whose last line was cut short (the writer stopped mid-line, e.g. a crash or a full disk), with that
    /// line's number: not part of the chain, which goes on from the line before it.
    pub cut_short: Vec<(PathBuf, u64)>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines == 0 {
            return write!(f, "OK: {} file(s), no lines", self.files);
        }
        write!(
            f,
            "OK: {} line(s) in {} file(s), seq {} to {}, last hash {}",
            self.lines, self.files, self.first_seq, self.last_seq, self.last_hash
        )?;
        if self.first_seq != 1 {
            write!(
                f,
                " (seq {} chains on {}, in an earlier file not checked)",
                self.first_seq, self.first_prev
            )?;
        }
        for (file, line) in &self.cut_short {
            write!(f, "; {}:{line} cut short, not counted", file.display())?;
        }
        Ok(())
    }
}

/// Where the chain fails, and how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {problem}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct VerifyError {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1), when the problem is one line's.
    pub line: Option<u64>,
    /// What is wrong.
    pub problem: VerifyProblem,
}

/// What is wrong with a trail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyProblem {
    /// No file given.
    #[error("no file to check")]
    NoFiles,
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(String),
    /// The line is not JSON, or not an audit line.
    #[error("{0}")]
    NotALine(String),
    /// The line's text does not hash to its `hash`.
    #[error("seq {seq}: the line does not match its hash: it was changed after it was written")]
    Changed {
        /// Its `seq`.
        seq: u64,
    },
    /// `seq` jumps forward.
    #[error(
        "seq {seq} follows seq {after}: {} line(s) were removed before it",
        seq - after - 1
    )]
    Removed {
        /// This line's `seq`.
        seq: u64,
        /// The line before's.
        after: u64,
    },
    /// `seq` goes back or repeats.
    #[error("seq {seq} follows seq {after}: lines were moved or repeated")]
    OutOfOrder {
        /// This line's `seq`.
        seq: u64,
        /// The line before's.
        after: u64,
    },
    /// `seq` follows on, but `prev` is not the line before's `hash`.
    #[error(
        "seq {seq}: its prev is not the hash of the line before it: the line before was replaced or removed"
    )]
    BrokenLink {
        /// This line's `seq`.
        seq: u64,
    },
}

/// Checks `paths`, oldest first, as one chain.
pub fn verify<P: AsRef<Path>>(paths: &[P]) -> Result<VerifyReport, VerifyError> {
    if paths.is_empty() {
        return Err(VerifyError {
            file: PathBuf::new(),
            line: None,
            problem: VerifyProblem::NoFiles,
        });
    }
    let mut report = VerifyReport {
        files: 0,
        lines: 0,
        first_seq: 0,
        first_prev: String::new(),
        last_seq: 0,
        last_hash: String::new(),
        cut_short: Vec::new(),
    };
    let mut last: Option<Link> = None;
    for path in paths {
        verify_file(path.as_ref(), &mut last, &mut report)?;
        report.files += 1;
    }
    if let Some(link) = last {
        report.last_seq = link.seq;
        report.last_hash = link.hash;
    }
    Ok(report)
}

fn verify_file(
    path: &Path,
    last: &mut Option<Link>,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let fail = |line: Option<u64>, problem: VerifyProblem| VerifyError {
        file: path.to_owned(),
        line,
        problem,
    };
    let file = File::open(path).map_err(|e| fail(None, VerifyProblem::Read(e.to_string())))?;
    let mut reader = BufReader::new(file);
    let mut text = Vec::new();
    let mut number = 0u64;
    loop {
        text.clear();
        let read = reader
            .read_until(b'\n', &mut text)
            .map_err(|e| fail(Some(number + 1), VerifyProblem::Read(e.to_string())))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let whole = text.ends_with(b"\n");
        if whole {
            text.pop();
        }
        let link = match line::read_link(&text) {
            Ok(link) => link,
            // A last line without its newline that does not read: the writer stopped mid-line.
            Err(LineProblem::NotJson(_) | LineProblem::Shape(_)) if !whole => {
                report.cut_short.push((path.to_owned(), number));
                return Ok(());
            }
            Err(LineProblem::Changed { seq }) => {
                return Err(fail(Some(number), VerifyProblem::Changed { seq }));
            }
            Err(other) => {
                return Err(fail(
                    Some(number),
                    VerifyProblem::NotALine(other.to_string()),
                ));
            }
        };
        match last {
            None => {
                report.first_seq = link.seq;
                report.first_prev = link.prev.clone();
            }
            Some(before) => {
                let problem = if link.seq > before.seq + 1 {
                    Some(VerifyProblem::Removed {
                        seq: link.seq,
                        after: before.seq,
                    })
                } else if link.seq <= before.seq {
                    Some(VerifyProblem::OutOfOrder {
                        seq: link.seq,
                        after: before.seq,
                    })
                } else if link.prev != before.hash {
                    Some(VerifyProblem::BrokenLink { seq: link.seq })
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(fail(Some(number), problem));
                }
            }
        }
        report.lines += 1;
        *last = Some(link);
    }
}
