//! Counters of what the services did, per service and per outcome, readable from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use rtc_engine::service::ServiceKind;

/// What happened to one request (or one step of it). Each is counted per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A request was sent over HTTP.
    Sent,
    /// A valid answer came back.
    Ok,
    /// No answer within the service's timeout.
    Timeout,
    /// Refused by the open breaker, not sent.
    CircuitOpen,
    /// Could not connect or the connection broke.
    Connect,
    /// The service answered with a non-2xx status.
    HttpStatus,
    /// The answer was larger than the body limit.
    BodyTooLarge,
    /// The answer was not the JSON the contract describes (syntax, missing or mistyped field).
    BadJson,
    /// The answer parsed but a value was out of range (money, increment, route count, dial string).
    InvalidValue,
    /// A cached partner was served because the partner service failed.
    DegradedPartnerCache,
    /// The configured default routes were served because the routing service failed.
    DegradedDefaultRoute,
    /// A settlement request (commit, release, CDR) was retried.
    SettlementRetry,
    /// A settlement request was written to the spool after its retries failed.
    Spooled,
    /// A settlement request could not even be written to the spool: it is lost (logged in full).
    SpoolFailed,
    /// A spooled request was replayed successfully.
    Replayed,
    /// Answered by the local backend.
    Local,
}

impl Event {
    /// Every event, in index order.
    pub const ALL: [Event; 16] = [
        Event::Sent,
        Event::Ok,
        Event::Timeout,
        Event::CircuitOpen,
        Event::Connect,
        Event::HttpStatus,
        Event::BodyTooLarge,
        Event::BadJson,
        Event::InvalidValue,
        Event::DegradedPartnerCache,
        Event::DegradedDefaultRoute,
        Event::SettlementRetry,
        Event::Spooled,
        Event::SpoolFailed,
        Event::Replayed,
        Event::Local,
    ];

    /// The event's name, as metrics label it.
    pub const fn name(self) -> &'static str {
        match self {
            Event::Sent => "sent",
            Event::Ok => "ok",
            Event::Timeout => "timeout",
            Event::CircuitOpen => "circuit_open",
            Event::Connect => "connect",
            Event::HttpStatus => "http_status",
            Event::BodyTooLarge => "body_too_large",
            Event::BadJson => "bad_json",
            Event::InvalidValue => "invalid_value",
            Event::DegradedPartnerCache => "degraded_partner_cache",
            Event::DegradedDefaultRoute => "degraded_default_route",
            Event::SettlementRetry => "settlement_retry",
            Event::Spooled => "spooled",
            Event::SpoolFailed => "spool_failed",
            Event::Replayed => "replayed",
            Event::Local => "local",
        }
    }
}

pub(crate) fn kind_index(kind: ServiceKind) -> usize {
    match kind {
        ServiceKind::Partner => 0,
        ServiceKind::Auth => 1,
        ServiceKind::Balance => 2,
        ServiceKind::Rating => 3,
        ServiceKind::Routing => 4,
        ServiceKind::Cdr => 5,
    }
}

/// Lock-free counters, one per (service, event).
#[derive(Debug, Default)]
pub struct Counters {
    /// Indexed by service, then by the event's position in [`Event::ALL`].
    counts: [[AtomicU64; Event::ALL.len()]; ServiceKind::ALL.len()],
}

impl Counters {
    /// Counts one `event` of service `kind`.
    pub fn count(&self, kind: ServiceKind, event: Event) {
        self.counts[kind_index(kind)][event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many `event`s of service `kind` so far.
    pub fn get(&self, kind: ServiceKind, event: Event) -> u64 {
        self.counts[kind_index(kind)][event as usize].load(Ordering::Relaxed)
    }

    /// Every non-zero counter, for `rtc_core metrics` and the metrics endpoint.
    pub fn snapshot(&self) -> Vec<CounterValue> {
        ServiceKind::ALL
            .iter()
            .flat_map(|&service| {
                Event::ALL.iter().filter_map(move |&event| {
                    let value = self.get(service, event);
                    (value > 0).then_some(CounterValue {
                        service,
                        event,
                        value,
                    })
                })
            })
            .collect()
    }
}

/// One counter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CounterValue {
    /// Which service.
    pub service: ServiceKind,
    /// What happened.
    pub event: Event,
    /// How many times since start.
    pub value: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_index_their_own_slot() {
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{}", e.name());
        }
        let c = Counters::default();
        c.count(ServiceKind::Routing, Event::Timeout);
        c.count(ServiceKind::Routing, Event::Timeout);
        c.count(ServiceKind::Cdr, Event::Spooled);
        assert_eq!(c.get(ServiceKind::Routing, Event::Timeout), 2);
        assert_eq!(c.get(ServiceKind::Partner, Event::Timeout), 0);
        let snap = c.snapshot();
        assert_eq!(snap.len(), 2);
        let json = serde_json::to_value(snap[0]).unwrap();
        assert_eq!(json["service"], "routing");
        assert_eq!(json["event"], "timeout");
    }
}
