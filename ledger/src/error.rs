//! Why the ledger refused to open, or refused an operation. Every message names the file or the account,
//! reservation or reference concerned, and what to change.

use std::path::PathBuf;

use crate::model::{AccountId, Op, ReservationId, ReservationState};
use rtc_money::Money;

/// Why a ledger could not be opened. The module does not start without its ledger: starting on empty balances
/// in its place would hand every partner its money back.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has the ledger open for writing.
    #[error(
        "{path}: the ledger is open for writing by process {holder} (lock file {lock}); two processes never write \
         one ledger: stop the other one, or give this one another ledger file"
    )]
    Locked {
        /// The ledger file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid as written in the lock file (or what was found there).
        holder: String,
    },
    /// The file exists but is not a ledger (not SQLite, or SQLite without the ledger's tables).
    #[error(
        "{path}: not a ledger: {detail}; the module will not start on an empty ledger in its place"
    )]
    NotALedger {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// SQLite's integrity check found damage.
    #[error(
        "{path}: the ledger is corrupt ({detail}); restore it from a backup (`rtc-core ledger check {path}` says the same)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The first problems SQLite reported.
        detail: String,
    },
    /// Written by a newer version of the module.
    #[error(
        "{path}: ledger schema version {found} is newer than this version's ({supported}); run the version that \
         wrote it, or a newer one"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The money in it does not add up (a journal that does not sum to the balances).
    #[error("{path}: the ledger does not balance: {detail}; restore it from a backup")]
    Unbalanced {
        /// The file.
        path: PathBuf,
        /// The first discrepancies.
        detail: String,
    },
    /// A read-only open of a ledger that does not exist.
    #[error("{path}: no ledger here (no such file)")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file or its directory could not be read, written or created.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("{path}: {action}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// A database server (PostgreSQL) refused or could not be reached.
    #[error("{place}: {action}: {detail}")]
    Database {
        /// The database, as configured (without its password).
        place: String,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// Another live node uses this node's id on the shared ledger.
    #[error(
        "{place}: node id {node:?} is in use by a live node ({holder}, lease until {lease_until_us} µs); give each \
         node its own node-id"
    )]
    NodeInUse {
        /// The database.
        place: String,
        /// The id.
        node: String,
        /// Who holds it (host and pid).
        holder: String,
        /// Until when its lease runs.
        lease_until_us: i64,
    },
    /// The writer thread could not be started.
    #[error("cannot start the ledger writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Why an operation was refused or not carried out. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No account by that name or id (the text names it: `account "acme"`, `account id 4`).
    #[error("no {0} in the ledger")]
    UnknownAccount(String),
    /// No reservation by that id.
    #[error("reservation {0} does not exist in this ledger")]
    UnknownReservation(ReservationId),
    /// The reservation was settled already: a reservation resolves at most once.
    #[error("reservation {id} is {state:?} already (a reservation is settled at most once)")]
    NotOpen {
        /// The reservation.
        id: ReservationId,
        /// How it was settled.
        state: ReservationState,
    },
    /// The request names another account than the reservation's.
    #[error(
        "reservation {id} belongs to account id {owner}, but the request names account id {claimed}",
        owner = owner.0,
        claimed = claimed.0
    )]
    AccountMismatch {
        /// The reservation.
        id: ReservationId,
        /// Its account.
        owner: AccountId,
        /// The account the request named.
        claimed: AccountId,
    },
    /// A negative amount where only zero or more makes sense (or zero where it must be positive).
    #[error("amount {0} is out of range for {1}")]
    BadAmount(Money, &'static str),
    /// The amount would overflow the account.
    #[error("amount {0} would overflow the account")]
    Overflow(Money),
    /// The reference was used before, for another amount.
    #[error(
        "reference {reference:?} was already used for {kind} of {amount} on this account; a reference is applied once"
    )]
    ReferenceReused {
        /// The reference.
        reference: String,
        /// The kind of movement it was used for.
        kind: &'static str,
        /// The amount it was used with.
        amount: Money,
    },
    /// The database could not be written (disk full, I/O error); the operation was not applied.
    #[error("ledger storage failed: {0}")]
    Storage(String),
    /// The database failed a moment ago and is not tried again before its retry time (the breaker is open);
    /// the operation was not applied.
    #[error(
        "the ledger's database is unavailable (last failure: {0}); not tried until it is retried"
    )]
    Unavailable(String),
    /// A call limit counted across every node on the ledger refused the reservation.
    #[error("{which} of {max} reached across the nodes sharing this ledger")]
    LimitReached {
        /// Which limit (`max_concurrent`, `max_cps`).
        which: &'static str,
        /// Its value.
        max: u32,
    },
    /// The ledger was closed before the operation was applied.
    #[error("the ledger is closed")]
    Closed,
    /// No answer within the caller's bound.
    #[error("the ledger did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Waited longer than its bound before the writer reached it; not applied.
    #[error("the request waited {0:?} for the ledger writer and was not applied")]
    Expired(std::time::Duration),
}

impl LedgerError {
    /// A storage failure, from SQLite's error.
    pub fn storage(e: rusqlite::Error) -> LedgerError {
        LedgerError::Storage(e.to_string())
    }
}

/// Amounts checked where the errors they make are defined.
impl Op {
    /// Refuses amounts out of range for the operation (a negative hold, debit, cost or credit limit, a top-up not
    /// above zero, a zero adjustment), before any store reads or writes anything.
    pub fn check_amounts(&self) -> Result<(), LedgerError> {
        let bad = |m: Money, what: &'static str| Err(LedgerError::BadAmount(m, what));
        match self {
            Op::OpenAccount { credit_limit, .. } if *credit_limit < Money::ZERO => {
                bad(*credit_limit, "a credit limit (must be 0 or more)")
            }
            Op::Reserve { amount, .. } if *amount < Money::ZERO => {
                bad(*amount, "a reservation (must be 0 or more)")
            }
            Op::Extend { debit, unit, .. } if *debit < Money::ZERO || *unit < Money::ZERO => {
                bad((*debit).min(*unit), "an extension (must be 0 or more)")
            }
            Op::Commit { cost, .. } if *cost < Money::ZERO => {
                bad(*cost, "a call's cost (must be 0 or more)")
            }
            Op::TopUp { amount, .. } if *amount <= Money::ZERO => {
                bad(*amount, "a top-up (must be above 0)")
            }
            Op::Adjust { amount, .. } if *amount == Money::ZERO => {
                bad(*amount, "an adjustment (must not be 0)")
            }
            _ => Ok(()),
        }
    }
}
