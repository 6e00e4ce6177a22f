//! Counters of what the services did, per service and per outcome, readable from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use rtc_config::services::Backend;
use rtc_engine::service::ServiceKind;
use rtc_engine::stats::Buckets;

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

/// Upper bounds of the response-time buckets, in seconds: a local backend answers in microseconds, an HTTP service
/// in milliseconds to its timeout (2 to 5 s by default).
static RESPONSE_LE_S: [f64; 16] = [
    0.000_01, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// The same in nanoseconds, as recorded.
const RESPONSE_LE_NS: [u64; 16] = [
    10_000,
    100_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const RESPONSE_BUCKETS: usize = RESPONSE_LE_NS.len() + 1;

/// One service's response times on one backend: a sample per bucket, and their sum.
#[derive(Debug)]
struct Latency {
    /// Samples per bucket (the last one above every bound).
    counts: [AtomicU64; RESPONSE_BUCKETS],
    /// Sum of the samples, ns.
    sum_ns: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            counts: [const { AtomicU64::new(0) }; RESPONSE_BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// How long each business service took to answer, per service and backend, readable from any thread
/// (`rtc_service_request_seconds`). Recording is two relaxed atomic adds, no lock: the HTTP layer records from the
/// runtime's workers, the local backends from the engine thread and the ledger's.
///
/// Hand-written like the module's handler histogram rather than taken from a metrics crate: the page is rendered
/// by hand from snapshots (see the module's `report.rs`), and fixed Prometheus buckets need no more than this.
#[derive(Debug, Default)]
pub struct ResponseTimes {
    /// Indexed by service, then backend (local, http).
    by_service: [[Latency; 2]; ServiceKind::ALL.len()],
}

fn backend_index(backend: Backend) -> usize {
    match backend {
        Backend::Local => 0,
        Backend::Http => 1,
    }
}

/// A backend's name, as metrics label it.
pub fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Local => "local",
        Backend::Http => "http",
    }
}

impl ResponseTimes {
    /// Records that service `kind` on `backend` answered (or failed) after `took`.
    pub fn record(&self, kind: ServiceKind, backend: Backend, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let latency = &self.by_service[kind_index(kind)][backend_index(backend)];
        let i = RESPONSE_LE_NS.partition_point(|&le| le < ns);
        latency.counts[i].fetch_add(1, Ordering::Relaxed);
        latency.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Every (service, backend) that answered at least once, for `rtc_core metrics`.
    pub fn snapshot(&self) -> Vec<ResponseTime> {
        let mut out = Vec::new();
        for service in ServiceKind::ALL {
            for backend in [Backend::Local, Backend::Http] {
                let latency = &self.by_service[kind_index(service)][backend_index(backend)];
                let counts: Vec<u64> = latency
                    .counts
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect();
                if counts.iter().all(|&n| n == 0) {
                    continue;
                }
                out.push(ResponseTime {
                    service,
                    backend,
                    buckets: Buckets {
                        le_s: &RESPONSE_LE_S,
                        counts,
                        sum_s: latency.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                    },
                });
            }
        }
        out
    }
}

/// One service's response times on one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseTime {
    /// Which service.
    pub service: ServiceKind,
    /// Which backend answered: local or http.
    pub backend: Backend,
    /// The distribution.
    pub buckets: Buckets,
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

    #[test]
    fn response_times_fall_in_their_bucket_per_service_and_backend() {
        for (le, ns) in RESPONSE_LE_S.iter().zip(RESPONSE_LE_NS) {
            assert_eq!((le * 1e9).round() as u64, ns, "{le}");
        }
        let t = ResponseTimes::default();
        assert!(t.snapshot().is_empty());
        t.record(
            ServiceKind::Rating,
            Backend::Local,
            Duration::from_nanos(800),
        );
        t.record(
            ServiceKind::Rating,
            Backend::Local,
            Duration::from_micros(10),
        );
        t.record(
            ServiceKind::Routing,
            Backend::Http,
            Duration::from_millis(30),
        );
        t.record(ServiceKind::Routing, Backend::Http, Duration::from_secs(60));
        let snap = t.snapshot();
        assert_eq!(snap.len(), 2);
        let rating = &snap[0];
        assert_eq!(
            (rating.service, rating.backend),
            (ServiceKind::Rating, Backend::Local)
        );
        // 10 µs is at most the first bound (le is inclusive).
        assert_eq!(rating.buckets.cumulative().next(), Some((0.000_01, 2)));
        assert!((rating.buckets.sum_s - 10.8e-6).abs() < 1e-12);
        let routing = &snap[1];
        assert_eq!(routing.backend, Backend::Http);
        let cumulative: Vec<(f64, u64)> = routing.buckets.cumulative().collect();
        assert_eq!(cumulative[6], (0.01, 0));
        assert_eq!(cumulative[7], (0.025, 0));
        assert_eq!(cumulative[8], (0.05, 1));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 2)));
    }
}
