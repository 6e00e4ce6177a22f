//! mod_rtc_core's ledger: partners' money, kept like a financial ledger, in one embedded SQLite database.
//!
//! Money moves only through [`Op`]s, each answered once it is durable. A call **reserves** (a pending hold with
//! a unique id and an expiry), **extends** while it talks (one debit interval at a time), then **commits** what
//! it cost or **releases** the rest: every reservation resolves at most once, and one that nobody settles frees
//! itself at its expiry. Every movement is an immutable journal row, and balances are always the journal's sum
//! ([`Store::check`] proves it). After a crash, the next open settles what the dead process left open (charging
//! what was debited up to each call's last interval) and writes a CDR with reason `recovered` for each.
//!
//! # Layout
//! - [`model`]: accounts, reservations, journal entries, CDRs; the operations ([`Op`]) and answers ([`Answer`]).
//! - [`store`]: the SQLite schema and every operation as SQL, on one connection ([`Store`]); also the offline
//!   reading and checking of `rtc-core ledger`.
//! - [`backend`]: what the writer needs of a storage engine ([`Backend`]): SQLite here, PostgreSQL in
//!   `rtc-ledger-pg`.
//! - [`writer`]: the writer thread `rtc-ledger` with group commit, and the [`Ledger`] / [`LedgerHandle`] the
//!   rest of the process talks to it through.
//! - [`lock`]: one writer per file (`<ledger>.lock` holds the writer's pid).
//! - [`error`]: why a ledger would not open ([`OpenError`]) or an operation was refused ([`LedgerError`]).
//!
//! No FreeSWITCH, no engine, no `unsafe`: the engine's local balance service and the operators' commands are
//! built on this crate, not the other way round.
#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod lock;
pub mod model;
pub mod store;
pub mod writer;

pub use backend::Abandoned;
pub use backend::{Backend, BatchOutcome, StorageFailure};
pub use error::{LedgerError, OpenError};
pub use model::{
    AccountId, AccountRef, AccountStatus, Answer, CallInfo, CallLimits, CdrRecord, EntryKind,
    JournalEntry, Op, ReservationId, ReservationState, Settlement,
};
/// Amounts of money, as every operation and answer counts them (the `rtc-money` crate).
pub use rtc_money::Money;
pub use store::{Access, CheckReport, Opened, ReservationRow, Store, now_us, recovered_cdr};
pub use writer::{
    CloseReport, CommitObserver, Committed, Ledger, LedgerClock, LedgerConfig, LedgerHandle,
    LedgerStats, Location, Reply, Request,
};
