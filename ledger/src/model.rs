//! What the ledger keeps: accounts, reservations, journal entries and CDRs, and the operations that move money.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rtc_money::Money;

/// An account's row id in the ledger (stable for the ledger's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

/// A reservation's id: unique in the ledger, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(pub u64);

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How an operation names an account: by id (the engine, which opened it at start) or by name (operators).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRef {
    /// The account's row id.
    Id(AccountId),
    /// The account's name (a partner's name).
    Name(String),
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountRef::Id(id) => write!(f, "account id {}", id.0),
            AccountRef::Name(name) => write!(f, "account {name:?}"),
        }
    }
}

/// One account's money as it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountStatus {
    /// Row id.
    pub id: AccountId,
    /// The partner's name.
    pub name: String,
    /// Paid in, less what calls cost so far: the sum of the account's journal.
    pub balance: Money,
    /// Held by open reservations.
    pub reserved: Money,
    /// How far below zero the account may go (0: prepaid).
    pub credit_limit: Money,
    /// Open reservations (calls in setup or talking).
    pub open_reservations: u64,
}

impl AccountStatus {
    /// What the account can still reserve: balance plus credit limit, less what is held.
    pub fn available(&self) -> Money {
        available(self.balance, self.credit_limit, self.reserved)
    }
}

/// Balance plus credit limit less reserved, saturating.
pub(crate) fn available(balance: Money, credit_limit: Money, reserved: Money) -> Money {
    Money(
        balance
            .0
            .saturating_add(credit_limit.0)
            .saturating_sub(reserved.0),
    )
}

/// Where a reservation stands. Only `Open` changes; the others are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationState {
    /// Holding money for a call.
    Open,
    /// Settled with the call's cost.
    Committed,
    /// Given back untouched.
    Released,
    /// Nobody settled it before its expiry: what was debited was charged, the rest released.
    Expired,
    /// Left open by a process that died: settled at the next start like an expired one.
    Recovered,
}

impl ReservationState {
    /// The name stored in the database.
    pub const fn name(self) -> &'static str {
        match self {
            ReservationState::Open => "open",
            ReservationState::Committed => "committed",
            ReservationState::Released => "released",
            ReservationState::Expired => "expired",
            ReservationState::Recovered => "recovered",
        }
    }

    /// The state stored under `name`.
    pub fn from_name(name: &str) -> Option<ReservationState> {
        [
            ReservationState::Open,
            ReservationState::Committed,
            ReservationState::Released,
            ReservationState::Expired,
            ReservationState::Recovered,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// What moved: the kind of a journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Money held for a call at its start.
    Reserve,
    /// More money held for a call while it talks.
    Extend,
    /// A call's cost charged, its hold freed.
    Commit,
    /// A hold freed untouched.
    Release,
    /// Money paid in by the partner (`rtc_core topup`).
    Topup,
    /// A correction by an operator (either sign).
    Adjustment,
    /// An opening balance imported from `balances.csv`.
    Import,
    /// An expired reservation settled: what was debited charged, the rest freed.
    Expiry,
    /// A reservation a dead process left open, settled at the next start.
    Recovery,
}

impl EntryKind {
    /// Every kind, in the order of the list above.
    pub const ALL: [EntryKind; 9] = [
        EntryKind::Reserve,
        EntryKind::Extend,
        EntryKind::Commit,
        EntryKind::Release,
        EntryKind::Topup,
        EntryKind::Adjustment,
        EntryKind::Import,
        EntryKind::Expiry,
        EntryKind::Recovery,
    ];

    /// The name stored in the database.
    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::Reserve => "reserve",
            EntryKind::Extend => "extend",
            EntryKind::Commit => "commit",
            EntryKind::Release => "release",
            EntryKind::Topup => "topup",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Import => "import",
            EntryKind::Expiry => "expiry",
            EntryKind::Recovery => "recovery",
        }
    }

    /// The kind stored under `name`.
    pub fn from_name(name: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One immutable row of the journal: one movement of one account's money.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// Position in the journal (increasing, never reused).
    pub seq: i64,
    /// When, in microseconds since the Unix epoch.
    pub at_us: i64,
    /// Whose money.
    pub account: String,
    /// What moved.
    pub kind: EntryKind,
    /// Change of the balance (negative: charged).
    pub balance_delta: Money,
    /// Change of the reserved money.
    pub reserved_delta: Money,
    /// The balance after this entry.
    pub balance_after: Money,
    /// The reserved money after this entry.
    pub reserved_after: Money,
    /// The reservation moved, if any.
    pub reservation: Option<ReservationId>,
    /// The call it was for, if any.
    pub call: Option<String>,
    /// The operator's reference (top-ups, adjustments, imports).
    pub reference: Option<String>,
    /// Who asked: `engine`, `api`, `cli`, `recovery`, `expiry`.
    pub actor: String,
}

/// What the ledger knows of the call a reservation is for, kept so that a reservation settled by expiry or
/// recovery still gets a CDR that says what the call was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// Calling number.
    pub caller: String,
    /// Called number.
    pub destination: String,
    /// Where the call came from.
    pub source_ip: Option<String>,
    /// `Event-Date-Timestamp` of the call's first event, µs since the epoch.
    pub started_at_us: u64,
    /// When talk started (µs since the epoch), once it has.
    pub answered_at_us: Option<u64>,
    /// The call's price per minute, once rated.
    pub rate_per_minute: Option<Money>,
    /// The carrier the call went out through, once connected.
    pub carrier: Option<String>,
    /// Seconds of talk the debits so far pay for.
    pub paid_s: u64,
}

/// The record of one call, as stored and exported (`rtc-core ledger cdrs`). Its JSON form is the engine's CDR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrRecord {
    /// The call's (a-leg channel's) UUID.
    pub uuid: String,
    /// Calling number.
    pub caller: String,
    /// Called number.
    pub destination: String,
    /// Where the call came from.
    pub source_ip: Option<String>,
    /// The partner's name, when identified.
    pub partner: Option<String>,
    /// COMPLETED, REJECTED or FAILED.
    pub final_state: String,
    /// Why it was refused, failed or ended by the engine (`recovered` for a call settled after a crash).
    pub reason: Option<String>,
    /// FreeSWITCH's hangup cause name.
    pub hangup_cause: String,
    /// The carrier that carried it.
    pub carrier: Option<String>,
    /// Its price per minute.
    pub rate_per_minute: Option<Money>,
    /// Microseconds from CHANNEL_CREATE to the routing decision, when one was made.
    pub setup_us: Option<u64>,
    /// Seconds of conversation.
    pub talk_s: u64,
    /// Seconds billed (minimum and increment applied).
    pub billed_s: u64,
    /// What the call cost the partner.
    pub cost: Money,
    /// First event, µs since the epoch.
    pub started_at_us: u64,
    /// Last event, µs since the epoch.
    pub ended_at_us: u64,
}

/// A call's limits as a shared ledger counts them: open reservations are calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallLimits {
    /// Most calls at once of the partner (its open reservations) across every node; 0: no limit.
    pub max_concurrent: u32,
    /// Most reservations of the partner made in one second (of the ledger's clock) across every node; 0: no limit.
    pub max_cps: u32,
    /// Most calls at once of all partners across every node (the global limit, when shared); 0: no limit.
    pub global_concurrent: u32,
    /// Most reservations of all partners in one second across every node; 0: no limit.
    pub global_cps: u32,
}

/// One request to the ledger.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Makes sure an account exists (at 0, no journal entry) and sets its credit limit.
    OpenAccount {
        /// The partner's name.
        name: String,
        /// How far below zero it may go.
        credit_limit: Money,
    },
    /// Holds `amount` of the account's available money for a call.
    Reserve {
        /// Whose money.
        account: AccountRef,
        /// How much (≥ 0).
        amount: Money,
        /// The call (its UUID).
        call: String,
        /// What is known of the call, for a CDR should nobody settle the reservation.
        info: CallInfo,
        /// The reservation frees itself this long after now unless extended or settled.
        ttl: Duration,
        /// The partner's call limits, counted across every node by a shared ledger (PostgreSQL); the embedded
        /// ledger serves one node, whose engine counts them exactly, and ignores them.
        limits: CallLimits,
    },
    /// Debits the next part of a talking call: `debit` more of the reservation is spent, and the hold grows
    /// by whatever the debits exceed it by, from the account's available money. With a `unit`, a debit the
    /// available money cannot cover whole is granted in whole units as far as it goes; without one (zero), it
    /// is all or nothing. Refreshes the expiry either way.
    Extend {
        /// Which reservation.
        reservation: ReservationId,
        /// Spent on the next part of the call (≥ 0; 0 only refreshes the expiry).
        debit: Money,
        /// Granularity of a partial grant (the cost of one billing increment); zero: all or nothing.
        unit: Money,
        /// New expiry, from now.
        ttl: Duration,
        /// What is now known of the call (rate, carrier, answer time, seconds paid for).
        info: Option<CallInfo>,
    },
    /// Settles a reservation with the call's cost (the rest is freed; a cost above the hold is charged anyway),
    /// and stores the call's CDR in the same transaction.
    Commit {
        /// Which reservation.
        reservation: ReservationId,
        /// The account named by the request, checked against the reservation's.
        account: Option<AccountRef>,
        /// What the call cost (≥ 0).
        cost: Money,
        /// The call's record, stored with the settlement.
        cdr: Option<Box<CdrRecord>>,
    },
    /// Frees a reservation untouched, storing the call's CDR in the same transaction.
    Release {
        /// Which reservation.
        reservation: ReservationId,
        /// The account named by the request, checked against the reservation's.
        account: Option<AccountRef>,
        /// The call's record, stored with the settlement.
        cdr: Option<Box<CdrRecord>>,
    },
    /// Money paid in: idempotent by `reference` (the same reference and amount again changes nothing).
    TopUp {
        /// Whose money.
        account: AccountRef,
        /// How much (> 0).
        amount: Money,
        /// The operator's reference (a payment id), unique per account.
        reference: String,
        /// Who asked (`api`, `cli`).
        actor: String,
    },
    /// A correction of either sign, idempotent by `reference` like a top-up.
    Adjust {
        /// Whose money.
        account: AccountRef,
        /// How much (non-zero, either sign).
        amount: Money,
        /// The operator's reference, unique per account.
        reference: String,
        /// Who asked.
        actor: String,
    },
    /// An opening balance (`balances.csv`): applied only to an account that has never moved money, so that an
    /// import can never overwrite live balances.
    Import {
        /// Whose money; opened when missing.
        name: String,
        /// The opening balance (either sign).
        amount: Money,
        /// Where it came from (`balances.csv:12`).
        reference: String,
    },
    /// Stores a CDR (a call with no reservation to settle). A second CDR for the same call is ignored.
    Cdr(Box<CdrRecord>),
    /// One account's money.
    Account(AccountRef),
    /// Every account's money.
    Accounts,
}

impl Op {
    /// The CDR a settlement carries, if any (stored even when the settlement is refused).
    pub fn settlement_cdr(&self) -> Option<&CdrRecord> {
        match self {
            Op::Commit { cdr, .. } | Op::Release { cdr, .. } => cdr.as_deref(),
            _ => None,
        }
    }

    /// Whether the operation changes the ledger (and so must be committed before it is answered).
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Account(_) | Op::Accounts)
    }

    /// Settlements and records must never be dropped: on a storage failure they wait and are written again.
    /// Others (reservations, queries) are answered with the failure at once, so the call is not kept waiting.
    pub fn must_not_be_lost(&self) -> bool {
        matches!(
            self,
            Op::Commit { .. }
                | Op::Release { .. }
                | Op::Cdr(_)
                | Op::TopUp { .. }
                | Op::Adjust { .. }
        )
    }

    /// A short name, for messages and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Op::OpenAccount { .. } => "open_account",
            Op::Reserve { .. } => "reserve",
            Op::Extend { .. } => "extend",
            Op::Commit { .. } => "commit",
            Op::Release { .. } => "release",
            Op::TopUp { .. } => "topup",
            Op::Adjust { .. } => "adjustment",
            Op::Import { .. } => "import",
            Op::Cdr(_) => "cdr",
            Op::Account(_) => "account",
            Op::Accounts => "accounts",
        }
    }
}

/// What settling a reservation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Settlement {
    /// Whose reservation it was.
    pub account: AccountId,
    /// Taken from the balance (the cost; zero for a release).
    pub charged: Money,
    /// Part of the hold given back to the available money.
    pub released: Money,
    /// Cost above the hold, charged anyway: the call ran past what was held for it.
    pub excess: Money,
    /// The account's balance afterwards.
    pub balance: Money,
}

/// The ledger's answer to one [`Op`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The account exists.
    AccountOpened(AccountId),
    /// The money is held.
    Reserved {
        /// The new reservation.
        reservation: ReservationId,
        /// What it holds.
        amount: Money,
        /// What the account can still reserve afterwards.
        available: Money,
    },
    /// The account's available money does not cover the request; nothing was held (an extension's expiry was
    /// still refreshed).
    Insufficient {
        /// What the account could have given.
        available: Money,
    },
    /// The debit is granted (`granted` may be less than asked, in whole units, when a unit was given).
    Extended {
        /// Debit granted.
        granted: Money,
        /// What the reservation holds now.
        held: Money,
        /// What has been debited against it so far.
        debited: Money,
        /// What the account can still reserve afterwards.
        available: Money,
    },
    /// A commit or release was applied.
    Settled(Settlement),
    /// A top-up or adjustment; `duplicate` when its reference had been applied already (nothing changed).
    Moved {
        /// The balance afterwards.
        balance: Money,
        /// The reference was applied before, with the same amount: nothing changed.
        duplicate: bool,
    },
    /// An opening balance was applied (`true`), or skipped because the account already moved money.
    Imported(bool),
    /// A CDR was stored (`false`: one for that call was there already, this one was ignored).
    CdrStored(bool),
    /// One account.
    Account(AccountStatus),
    /// Every account.
    Accounts(Vec<AccountStatus>),
}
