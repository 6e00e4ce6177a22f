//! What the writer thread needs of a storage engine: apply a batch of operations in one durable transaction.
//!
//! The ledger has two: the embedded SQLite [`Store`](crate::store::Store) (this crate, the default) and
//! PostgreSQL (`rtc-ledger-pg`, for several nodes sharing partners). The writer ([`crate::writer`]) does the
//! rest the same way for both: group commit, bounds on waiting requests, settlements kept and written again
//! after a storage failure, the circuit breaker, expiry, close. So the engine and the services talk to one
//! [`LedgerHandle`](crate::writer::LedgerHandle) and never know which engine keeps the money.

use crate::error::LedgerError;
use crate::model::{Answer, CdrRecord, Op, ReservationId};
use rtc_money::Money;

/// What one committed batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One answer per operation, in order: refusals are `Err` and changed nothing.
    pub answers: Vec<Result<Answer, LedgerError>>,
    /// Reservations the batch's upkeep settled: expired ones, and (PostgreSQL) those of a dead node.
    pub settled: Vec<Abandoned>,
    /// How long the commit itself took (µs): the fsync, or the database's round trip.
    pub commit_us: u64,
}

/// Why a batch was not applied at all (the database could not be reached or written): nothing of it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFailure(pub String);

impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One storage engine under the ledger's writer. Called on the writer thread only, one batch at a time.
pub trait Backend: Send + 'static {
    /// Applies `ops` (each with who asks) in order, in one transaction committed durably before this returns.
    /// A refused operation changes nothing of itself; a storage failure applies nothing of the batch. With
    /// `upkeep`, the same transaction also settles what is due (expired reservations; a dead node's).
    fn apply_batch(
        &mut self,
        ops: &[(&Op, &'static str)],
        now_us: i64,
        upkeep: bool,
    ) -> Result<BatchOutcome, StorageFailure>;

    /// Called once when the writer closes, after the last batch (a shared ledger tells the others it left).
    fn close(&mut self) {}

    /// Called when the writer has nothing queued (SQLite copies its write-ahead log back then).
    fn idle(&mut self) {}

    /// Whether the writer should call [`Backend::idle`] now: `batches` committed since the last call, `busy`
    /// when this turn had requests, `queued` when more are waiting.
    fn idle_due(&self, batches: u64, busy: bool, queued: bool) -> bool {
        let _ = (batches, busy, queued);
        false
    }
}

/// A reservation settled because nobody else would: by expiry, or at start after a crash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Abandoned {
    /// The reservation.
    pub reservation: ReservationId,
    /// Its account's name.
    pub account: String,
    /// The call.
    pub call: String,
    /// Charged (what was debited up to the call's last interval).
    pub charged: Money,
    /// Freed.
    pub released: Money,
    /// The CDR written for it (recovery only).
    pub cdr: Option<CdrRecord>,
}

impl Abandoned {
    /// Logs a reservation settled by recovery: left open by `left_by`, settled in the ledger at `place`.
    pub fn log_recovered(&self, place: &str, left_by: &str) {
        log::warn!(
            "{place}: reservation {} of account {:?} for call {} was left open by {left_by}; settled: {} charged \
             (debited up to its last interval), {} released; CDR reason recovered",
            self.reservation,
            self.account,
            self.call,
            self.charged,
            self.released
        );
    }
}
