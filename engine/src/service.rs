//! What the engine asks of the business services, and what comes back.
//!
//! The engine never waits: it emits a [`ServiceRequest`] to a [`ServiceSink`] and carries on; the answer
//! comes back later as an engine message, or at once from an embedded backend.

use std::net::IpAddr;

use compact_str::CompactString;
use serde::Serialize;

use crate::domain::{Cdr, Money, PartnerId, PartnerInfo, Rate, Reservation, Routes};
use crate::id::CallId;

/// The business services, for counters, breakers and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Partner,
    Auth,
    Balance,
    Rating,
    Routing,
    Cdr,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 6] = [
        ServiceKind::Partner,
        ServiceKind::Auth,
        ServiceKind::Balance,
        ServiceKind::Rating,
        ServiceKind::Routing,
        ServiceKind::Cdr,
    ];

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
    IdentifyPartner {
        call: CallId,
        source_ip: Option<IpAddr>,
    },
    Authenticate {
        call: CallId,
        partner: PartnerId,
        source_ip: Option<IpAddr>,
        caller: CompactString,
        destination: CompactString,
        auth_user: CompactString,
    },
    ReserveBalance {
        call: CallId,
        partner: PartnerId,
        amount: Money,
    },
    Rate {
        call: CallId,
        partner: PartnerId,
        destination: CompactString,
    },
    Route {
        call: CallId,
        partner: PartnerId,
        destination: CompactString,
    },
    /// Settle a reservation with the call's real cost (the rest returns to the balance).
    CommitBalance {
        call: CallId,
        partner: PartnerId,
        reservation: Reservation,
        cost: Money,
    },
    /// Give a reservation back untouched (call not answered, rejected, or failed).
    ReleaseBalance {
        call: CallId,
        partner: PartnerId,
        reservation: Reservation,
    },
    WriteCdr(Box<Cdr>),
}

impl ServiceRequest {
    pub fn kind(&self) -> ServiceKind {
        match self {
            ServiceRequest::IdentifyPartner { .. } => ServiceKind::Partner,
            ServiceRequest::Authenticate { .. } => ServiceKind::Auth,
            ServiceRequest::ReserveBalance { .. }
            | ServiceRequest::CommitBalance { .. }
            | ServiceRequest::ReleaseBalance { .. } => ServiceKind::Balance,
            ServiceRequest::Rate { .. } => ServiceKind::Rating,
            ServiceRequest::Route { .. } => ServiceKind::Routing,
            ServiceRequest::WriteCdr(_) => ServiceKind::Cdr,
        }
    }

    pub fn call(&self) -> CallId {
        match self {
            ServiceRequest::IdentifyPartner { call, .. }
            | ServiceRequest::Authenticate { call, .. }
            | ServiceRequest::ReserveBalance { call, .. }
            | ServiceRequest::Rate { call, .. }
            | ServiceRequest::Route { call, .. }
            | ServiceRequest::CommitBalance { call, .. }
            | ServiceRequest::ReleaseBalance { call, .. } => *call,
            ServiceRequest::WriteCdr(cdr) => cdr.uuid,
        }
    }
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
    PartnerFound(PartnerInfo),
    PartnerUnknown,
    AuthOk,
    AuthDenied,
    BalanceReserved(Reservation),
    BalanceInsufficient,
    RateFound(Rate),
    RateNone,
    RoutesFound(Routes),
    RoutesNone,
    /// A request (of any kind) that could not be answered.
    Failed(ServiceKind, ServiceFailure),
}

/// An answer, addressed to the call it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceResult {
    pub call: CallId,
    pub outcome: Outcome,
}

/// Where the engine sends its service requests.
///
/// An embedded backend may answer at once by returning `Some`; a remote one returns `None` and later sends
/// the answer to the engine's channel. Settlement requests (commit, release, CDR) return `None`: their
/// delivery is the sink's job, and must not be lost.
pub trait ServiceSink: Send {
    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult>;

    /// Takes a new configuration (`rtc_core reload`), all or nothing: on `Err` nothing changed. Called on
    /// the engine thread. Returns a one-line summary of what changed.
    fn reload(&mut self, config: &crate::settings::RtcConfig) -> Result<String, String> {
        let _ = config;
        Ok(String::new())
    }
}
