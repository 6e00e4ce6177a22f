//! What the engine tells the audit trail: each business decision as it is made — who the partner is, what the
//! services answered, what was reserved, rated and routed, why a call was refused, what a fraud rule found, how the
//! call was settled. The host turns these into lines of its audit trail (written off the engine thread); the
//! engine only builds them, and only when a sink is set.

use std::net::IpAddr;

use compact_str::CompactString;

use crate::domain::{Money, Rate};
use crate::id::CallId;
use crate::service::ServiceKind;

/// One decision about one call.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// The call (its A leg's UUID).
    pub call: CallId,
    /// The partner's name, once identified.
    pub partner: Option<CompactString>,
    /// Caller number, as the call came.
    pub caller: CompactString,
    /// Destination number, as the call came.
    pub destination: CompactString,
    /// What was decided.
    pub what: Audited,
}

/// The decisions the trail records.
#[derive(Clone, Debug, PartialEq)]
pub enum Audited {
    /// The partner service was asked who calls from `source_ip`: `found` (the partner's name is the record's).
    Partner {
        /// The address asked about.
        source_ip: Option<IpAddr>,
        /// Whether a partner owns it.
        found: bool,
    },
    /// The auth service's answer.
    Auth {
        /// Allowed or denied.
        allowed: bool,
    },
    /// The balance service was asked to hold `asked`.
    Reservation {
        /// What was asked for.
        asked: Money,
        /// The reservation's id and amount, when held.
        held: Option<(u64, Money)>,
        /// Why not, when refused (`no_balance`, `limit_reached`).
        refused: Option<&'static str>,
    },
    /// The rating service's answer (`None`: no rate).
    Rate(Option<Rate>),
    /// The routing service's answer: the carriers in failover order (empty: no route).
    Routes(Vec<CompactString>),
    /// A service gave no answer (error, timeout, breaker open).
    ServiceFailed {
        /// Which.
        service: ServiceKind,
        /// What went wrong.
        failure: String,
        /// Whether the call went on without it (fail-open).
        skipped: bool,
    },
    /// The call was refused or failed.
    Refused {
        /// The reason's name.
        reason: &'static str,
        /// The hangup cause's Q.850 code.
        cause: u16,
    },
    /// A fraud rule hit.
    Fraud {
        /// The rule's name.
        rule: &'static str,
        /// What it did.
        action: &'static str,
        /// The figure that hit.
        value: f64,
        /// The most allowed.
        limit: f64,
        /// The figures in words.
        detail: CompactString,
    },
    /// The call ended and its money was settled.
    Settlement {
        /// Its final state.
        state: &'static str,
        /// The reservation settled, if it had one.
        reservation: Option<u64>,
        /// Committed `cost` (it talked), or released (`None`).
        committed: Option<Money>,
        /// Seconds of talk, and billed.
        talk_s: u64,
        /// Seconds billed.
        billed_s: u64,
    },
}

impl Audited {
    /// The line's kind in the trail.
    pub const fn kind(&self) -> &'static str {
        match self {
            Audited::Partner { .. } => "partner",
            Audited::Auth { .. } => "auth",
            Audited::Reservation { .. } => "reservation",
            Audited::Rate(_) => "rate",
            Audited::Routes(_) => "routes",
            Audited::ServiceFailed { .. } => "service_failed",
            Audited::Refused { .. } => "refused",
            Audited::Fraud { .. } => "fraud",
            Audited::Settlement { .. } => "settlement",
        }
    }

    /// The service that answered, when one did.
    pub const fn service(&self) -> Option<ServiceKind> {
        match self {
            Audited::Partner { .. } => Some(ServiceKind::Partner),
            Audited::Auth { .. } => Some(ServiceKind::Auth),
            Audited::Reservation { .. } | Audited::Settlement { .. } => Some(ServiceKind::Balance),
            Audited::Rate(_) => Some(ServiceKind::Rating),
            Audited::Routes(_) => Some(ServiceKind::Routing),
            Audited::ServiceFailed { service, .. } => Some(*service),
            Audited::Refused { .. } | Audited::Fraud { .. } => None,
        }
    }
}

/// Where the engine sends its decisions; must not block the engine thread.
pub trait AuditSink: Send {
    /// Takes one record.
    fn record(&mut self, record: AuditRecord);
}
