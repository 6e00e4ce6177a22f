//! What the engine asks of the business services, and what comes back.
//!
//! The engine never waits: it emits a [`ServiceRequest`] to a [`ServiceSink`] and carries on; the answer
//! comes back later as an engine message, or at once from an embedded backend.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;

use compact_str::CompactString;
use serde::Serialize;

use crate::domain::{Cdr, Money, PartnerId, PartnerInfo, Rate, Reservation, Routes};
use crate::id::CallId;

/// The business services, for counters, breakers and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Who is calling (partner by source address).
    Partner,
    /// May they (credentials, prefixes).
    Auth,
    /// Their money: reservations, extensions, settlements.
    Balance,
    /// What the call costs.
    Rating,
    /// Where it goes.
    Routing,
    /// The call's record.
    Cdr,
}

impl ServiceKind {
    /// Every service, in index order.
    pub const ALL: [ServiceKind; 6] = [
        ServiceKind::Partner,
        ServiceKind::Auth,
        ServiceKind::Balance,
        ServiceKind::Rating,
        ServiceKind::Routing,
        ServiceKind::Cdr,
    ];

    /// The service's name, as in configuration, counters and messages.
    pub const fn name(self) -> &'static str {
        match self {
            ServiceKind::Partner => "partner",
            ServiceKind::Auth => "auth",
            ServiceKind::Balance => "balance",
            ServiceKind::Rating => "rating",
            ServiceKind::Routing => "routing",
            ServiceKind::Cdr => "cdr",
        }
    }
}

/// A request for a business fact or action about one call.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceRequest {
    /// Who is calling from `source_ip`.
    IdentifyPartner {
        /// The call.
        call: CallId,
        /// Where it came from (`None`: no transport address).
        source_ip: Option<IpAddr>,
    },
    /// May `partner` place this call.
    Authenticate {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// Where it came from.
        source_ip: Option<IpAddr>,
        /// Caller number.
        caller: CompactString,
        /// Destination number.
        destination: CompactString,
        /// The SIP user it authenticated as, if any.
        auth_user: CompactString,
    },
    /// Hold `amount` of the partner's money for the call.
    ReserveBalance {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// How much to hold.
        amount: Money,
        /// What is known of the call, kept with the reservation so that one nobody settles (a crash) still gets a
        /// CDR that says what the call was.
        context: Box<CallContext>,
        /// The reservation frees itself this long after now unless extended or settled.
        ttl: std::time::Duration,
    },
    /// The partner's price for `destination`.
    Rate {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// Destination number.
        destination: CompactString,
    },
    /// Routes to `destination`, in failover order.
    Route {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// Destination number.
        destination: CompactString,
    },
    /// Debit the next interval of a connected call (real-time billing): `debit` more of the call's money is
    /// spent, its reservation growing from the partner's available money where the debits pass it. With a
    /// `unit`, a debit the money cannot cover whole is granted in whole units as far as it goes.
    ExtendBalance {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// The call's reservation.
        reservation: Reservation,
        /// The next interval's cost (its connect fee included for the first).
        debit: Money,
        /// The cost of one billing increment (0: all or nothing).
        unit: Money,
        /// Seconds of talk paid for before this debit: with the call, names the debit (idempotency).
        paid_s: u32,
        /// What is now known of the call, for a CDR should nobody settle it.
        context: Box<CallContext>,
        /// The reservation's new expiry, from now.
        ttl: std::time::Duration,
    },
    /// Settle a reservation with the call's real cost (the rest returns to the balance).
    CommitBalance {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// The call's reservation.
        reservation: Reservation,
        /// What the call cost.
        cost: Money,
    },
    /// Give a reservation back untouched (call not answered, rejected, or failed).
    ReleaseBalance {
        /// The call.
        call: CallId,
        /// Its partner.
        partner: PartnerId,
        /// The call's reservation.
        reservation: Reservation,
    },
    /// Keep the call's record.
    WriteCdr(Box<Cdr>),
}

impl ServiceRequest {
    /// The service the request goes to.
    pub fn kind(&self) -> ServiceKind {
        match self {
            ServiceRequest::IdentifyPartner { .. } => ServiceKind::Partner,
            ServiceRequest::Authenticate { .. } => ServiceKind::Auth,
            ServiceRequest::ReserveBalance { .. }
            | ServiceRequest::ExtendBalance { .. }
            | ServiceRequest::CommitBalance { .. }
            | ServiceRequest::ReleaseBalance { .. } => ServiceKind::Balance,
            ServiceRequest::Rate { .. } => ServiceKind::Rating,
            ServiceRequest::Route { .. } => ServiceKind::Routing,
            ServiceRequest::WriteCdr(_) => ServiceKind::Cdr,
        }
    }

    /// The call the request is about.
    pub fn call(&self) -> CallId {
        match self {
            ServiceRequest::IdentifyPartner { call, .. }
            | ServiceRequest::Authenticate { call, .. }
            | ServiceRequest::ReserveBalance { call, .. }
            | ServiceRequest::ExtendBalance { call, .. }
            | ServiceRequest::Rate { call, .. }
            | ServiceRequest::Route { call, .. }
            | ServiceRequest::CommitBalance { call, .. }
            | ServiceRequest::ReleaseBalance { call, .. } => *call,
            ServiceRequest::WriteCdr(cdr) => cdr.uuid,
        }
    }
}

/// What the engine knows of a call when it asks for its money: kept by the ledger with the reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// Caller number.
    pub caller: CompactString,
    /// Destination number.
    pub destination: CompactString,
    /// Where the call came from.
    pub source_ip: Option<IpAddr>,
    /// `Event-Date-Timestamp` of the call's first event, µs since the epoch.
    pub started_at_us: u64,
    /// When talk started, µs since the epoch (0: not yet).
    pub answered_at_us: u64,
    /// The call's rate, once rated.
    pub rate: Option<Rate>,
    /// The carrier the call went out through, once connected.
    pub carrier: Option<CompactString>,
    /// Seconds of talk paid for so far (after this request, for an extension).
    pub paid_s: u32,
}

/// Why a service gave no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceFailure {
    /// The service answered with an error or an answer that failed validation.
    Error,
    /// No answer within the service's timeout.
    Timeout,
    /// The service's circuit breaker is open: not asked at all.
    CircuitOpen,
}

/// A service's answer about one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The caller is this partner.
    PartnerFound(PartnerInfo),
    /// No partner calls from there.
    PartnerUnknown,
    /// The partner may place the call.
    AuthOk,
    /// It may not.
    AuthDenied,
    /// The amount is held; `available` is what the partner can still reserve, when the service says.
    BalanceReserved {
        /// The hold.
        reservation: Reservation,
        /// What the partner can still reserve.
        available: Option<Money>,
    },
    /// A reservation (or an extension's debit) the partner's money cannot cover; nothing was taken.
    BalanceInsufficient,
    /// A reservation refused by a call limit counted across every node sharing the balance service (a shared
    /// ledger's `max_concurrent` or `max_cps` for the partner); nothing was taken. The call is refused as a local
    /// admission refusal would be.
    LimitReached {
        /// Which limit (`partner_concurrent`, `partner_cps`).
        limit: &'static str,
        /// Its value.
        max: u32,
    },
    /// An extension's debit was granted: all of it, or (with a unit) as many whole units as the money covers.
    BalanceExtended {
        /// How much of the debit was granted.
        granted: Money,
        /// What the partner can still reserve.
        available: Option<Money>,
    },
    /// The call's rate.
    RateFound(Rate),
    /// No rate for the destination.
    RateNone,
    /// Routes, in failover order.
    RoutesFound(Routes),
    /// No route to the destination.
    RoutesNone,
    /// A request (of any kind) that could not be answered.
    Failed(ServiceKind, ServiceFailure),
}

/// An answer, addressed to the call it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceResult {
    /// The call.
    pub call: CallId,
    /// The answer.
    pub outcome: Outcome,
}

/// Where the engine sends its service requests.
///
/// An embedded backend may answer at once by returning `Some`; a remote one returns `None` and later sends
/// the answer to the engine's channel. Settlement requests (commit, release, CDR) return `None`: their
/// delivery is the sink's job, and must not be lost.
pub trait ServiceSink: Send {
    /// Takes one request: answers at once (`Some`) or later, to the engine's channel (`None`).
    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult>;

    /// A call's end: its settlement (commit or release, if it held a reservation) and its CDR. A sink that keeps
    /// both (the ledger) writes them in one transaction, so that a crash never keeps one without the other; the
    /// default hands them over one after the other.
    fn finish(&mut self, settlement: Option<ServiceRequest>, cdr: Box<Cdr>) {
        if let Some(settlement) = settlement {
            self.submit(settlement);
        }
        self.submit(ServiceRequest::WriteCdr(cdr));
    }

    /// The engine this sink answers, given once it runs (before any request): a sink that answers later sends its
    /// answers there.
    fn attach(&mut self, engine: Arc<dyn ResultSink>) {
        let _ = engine;
    }

    /// Takes a new configuration (`rtc_core reload`), all or nothing: on `Err` nothing changed. Called on
    /// the engine thread. `settings` is the services' own part of the configuration, as the host that built
    /// this sink passed it ([`NewSettings::services`](crate::config::NewSettings::services)): the engine does
    /// not read it, and a sink refuses, with a message saying so, settings of a kind it cannot read. Returns a
    /// one-line summary of what changed.
    fn reload(&mut self, settings: &dyn Any) -> Result<String, String> {
        let _ = settings;
        Ok(String::new())
    }
}

/// Where answers that come later go back to the engine: the engine's handle, or in tests another sink. Called
/// on the services' threads; must not block (a full engine queue is the engine's to count, not the caller's to
/// wait on).
pub trait ResultSink: Send + Sync + 'static {
    /// Hands over one answer.
    fn deliver(&self, result: ServiceResult);
}

/// For tests and simple hosts. `send` waits when a bounded channel is full: give it an unbounded channel
/// (or one with room for every call in flight) so that it never does.
impl ResultSink for crossbeam_channel::Sender<ServiceResult> {
    fn deliver(&self, result: ServiceResult) {
        // The receiver is gone only when the engine has stopped: nobody is left to tell.
        let _ = self.send(result);
    }
}
