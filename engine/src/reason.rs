//! Why a call was refused or failed, and the hangup cause each reason maps to.

use serde::Serialize;

use crate::cause::HangupCause;

/// The reason a call did not go through. Each has its own hangup cause (configurable), its own counter,
/// and is written to `rtc_reject_reason` and the CDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Reason {
    /// No partner owns the call's source address.
    UnknownPartner = 1,
    /// The partner exists but this call is not allowed (credentials, allowed IPs, fraud rules).
    AuthDenied,
    /// Not enough balance to reserve for the call.
    NoBalance,
    /// No rate for the destination.
    NoRate,
    /// No route for the destination.
    NoRoute,
    /// An admission limit (concurrent calls, calls per second) was reached.
    LimitReached,
    /// A required service failed, timed out or had its breaker open, and the service is fail-closed.
    ServiceDown,
    /// The decision was not made and carried out within the call setup timeout.
    SetupTimeout,
    /// The call waited in park longer than the park timeout.
    ParkTimeout,
    /// Every route was tried and failed.
    RoutesExhausted,
    /// The call reached its maximum duration (balance or configured limit).
    MaxDuration,
    /// Its hangup never arrived: the sweep removed it.
    Stale,
    /// The engine was shut down with the call still controlled.
    Shutdown,
    /// A fraud rule refused the call, or its partner is blocked (`<fraud>`), or a block hung it up.
    Fraud,
    /// The destination is not a number (digits after one leading `+`, at most `max-destination-digits`).
    InvalidDestination,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 15] = [
        Reason::UnknownPartner,
        Reason::AuthDenied,
        Reason::NoBalance,
        Reason::NoRate,
        Reason::NoRoute,
        Reason::LimitReached,
        Reason::ServiceDown,
        Reason::SetupTimeout,
        Reason::ParkTimeout,
        Reason::RoutesExhausted,
        Reason::MaxDuration,
        Reason::Stale,
        Reason::Shutdown,
        Reason::Fraud,
        Reason::InvalidDestination,
    ];

    /// The reason's name (`no_balance`), as in CDRs, channel variables and `<causes>`.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::UnknownPartner => "unknown_partner",
            Reason::AuthDenied => "auth_denied",
            Reason::NoBalance => "no_balance",
            Reason::NoRate => "no_rate",
            Reason::NoRoute => "no_route",
            Reason::LimitReached => "limit_reached",
            Reason::ServiceDown => "service_down",
            Reason::SetupTimeout => "setup_timeout",
            Reason::ParkTimeout => "park_timeout",
            Reason::RoutesExhausted => "routes_exhausted",
            Reason::MaxDuration => "max_duration",
            Reason::Stale => "stale",
            Reason::Shutdown => "shutdown",
            Reason::Fraud => "fraud",
            Reason::InvalidDestination => "invalid_destination",
        }
    }

    /// The reason named `name`, if any.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The reason's dense index (counters).
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// The hangup cause used for this reason unless the configuration says otherwise.
    pub const fn default_cause(self) -> HangupCause {
        match self {
            Reason::UnknownPartner | Reason::AuthDenied => HangupCause::CALL_REJECTED,
            Reason::NoBalance => HangupCause::OUTGOING_CALL_BARRED,
            Reason::NoRate => HangupCause::INCOMPATIBLE_DESTINATION,
            Reason::NoRoute => HangupCause::NO_ROUTE_DESTINATION,
            Reason::LimitReached => HangupCause::NORMAL_CIRCUIT_CONGESTION,
            Reason::ServiceDown => HangupCause::NORMAL_TEMPORARY_FAILURE,
            Reason::SetupTimeout | Reason::ParkTimeout => HangupCause::RECOVERY_ON_TIMER_EXPIRE,
            Reason::RoutesExhausted => HangupCause::NORMAL_TEMPORARY_FAILURE,
            Reason::MaxDuration => HangupCause::ALLOTTED_TIMEOUT,
            Reason::Stale => HangupCause::NORMAL_UNSPECIFIED,
            Reason::Shutdown => HangupCause::SYSTEM_SHUTDOWN,
            Reason::Fraud => HangupCause::CALL_REJECTED,
            Reason::InvalidDestination => HangupCause::INVALID_NUMBER_FORMAT,
        }
    }
}

/// Hangup cause per reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CauseMap([HangupCause; Reason::ALL.len()]);

impl Default for CauseMap {
    fn default() -> Self {
        CauseMap(Reason::ALL.map(Reason::default_cause))
    }
}

impl CauseMap {
    /// The hangup cause for `reason`.
    pub fn cause(&self, reason: Reason) -> HangupCause {
        self.0[reason.index()]
    }

    /// Sets the hangup cause for `reason`.
    pub fn set(&mut self, reason: Reason, cause: HangupCause) {
        self.0[reason.index()] = cause;
    }
}
