//! mod_rtc_core's audit trail: every business decision (partner found, authentication, reservation, rate,
//! routes, refusal with its reason, fraud hit, settlement) and every operator action (reload, top-up, unblock,
//! module load and unload) as one JSON line, each chained to the line before it by a SHA-256 hash, so that a
//! changed or removed line is found by [`verify`] (`rtc-core audit verify FILE...`).
//!
//! The host turns what happened into an [`Entry`] and hands it to [`AuditLog::record`], which never blocks; the
//! writer thread `rtc-audit` stamps, chains and writes the lines in batches, rotates the file by size and keeps
//! the chain going across rotations and restarts. Files are created mode 0600. Callers' and callees' numbers are
//! written under a [`NumberPolicy`]: in the clear, masked, or encrypted with the operator's key. See
//! `docs/audit.md` for the line format, what the chain can and cannot prove, and what the number policy protects
//! against.
//!
//! # Layout
//! - [`line`]: [`Entry`], the line's format, how a line is stamped and chained, and read back and checked.
//! - [`numbers`]: [`NumberPolicy`] and [`NumberKey`].
//! - [`writer`]: [`start`], the writer thread, [`AuditLog`] (the handle that records) and [`AuditWriter`] (the
//!   handle that stops it), rotation.
//! - [`verify`](mod@verify): [`verify()`], one or several files as one chain.
//!
//! No engine, no FreeSWITCH, no other crate of the workspace: the host converts its configuration and its
//! decisions into this crate's types.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod hex;
pub mod line;
pub mod numbers;
pub mod verify;
pub mod writer;

pub use line::{Entry, GENESIS, kind};
pub use numbers::{NumberError, NumberKey, NumberPolicy};
pub use verify::{VerifyError, VerifyProblem, VerifyReport, verify};
pub use writer::{AuditError, AuditLog, AuditSettings, AuditStats, AuditWriter, start};
