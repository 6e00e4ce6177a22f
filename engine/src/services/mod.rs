//! The business-service layer: answers the engine's [`ServiceRequest`]s from HTTP services (or the local
//! backends), on the embedded `rtc-io` runtime, with timeouts, circuit breakers and graceful degradation.
//!
//! # Layout
//! - [`runtime`]: the tokio runtime the host starts and stops.
//! - [`AsyncServices`] ([`dispatch`]): the [`ServiceSink`] the engine submits to. Local kinds are forwarded
//!   to the local backends at once; HTTP kinds become one task each, whose answer goes to a [`ResultSink`].
//! - [`http`], [`wire`]: the shared HTTP client and the JSON contract (see `docs/services.md`).
//! - [`breaker`]: one circuit breaker per service.
//! - [`spool`]: settlements that could not be delivered, kept for replay.
//! - [`admission`]: concurrent-call and calls-per-second limits, used by the engine thread directly.
//! - [`stats`]: counters per service and outcome.
//! - [`results`]: the engine as the [`ResultSink`] answers go to.
//!
//! [`ServiceRequest`]: crate::service::ServiceRequest
//! [`ServiceSink`]: crate::service::ServiceSink

pub mod admission;
pub mod breaker;
pub mod dispatch;
pub mod http;
pub mod results;
pub mod runtime;
pub mod spool;
pub mod stats;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::ServiceConfig;
use crate::domain::Route;
use crate::service::{ServiceKind, ServiceResult};

pub use admission::{Admission, AdmissionConfig, AdmitTicket, CpsLimit, Limit, PartnerLimits};
pub use breaker::{BreakerState, BreakerStatus, Change, Transitions};
pub use dispatch::{AsyncServices, DrainReport, ReplayReport, ServicesError, ServicesMonitor};
pub use http::HttpConfig;
pub use results::{LateResults, undelivered_results};
pub use runtime::{IoRuntime, RuntimeConfig, RuntimeError};

/// Where answers go back to the engine. The engine thread's inbound channel implements it; it is called on
/// `rtc-io` threads and must not block (a full engine queue is the engine's to count, not ours to wait on).
pub trait ResultSink: Send + Sync + 'static {
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

/// The partner cache used when the partner service cannot answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerCacheConfig {
    /// How long a partner identified by the service is trusted without asking again, when the service is down.
    pub ttl: Duration,
    /// Most source addresses kept (least recently used go first).
    pub max_entries: u64,
}

impl Default for PartnerCacheConfig {
    fn default() -> Self {
        PartnerCacheConfig {
            ttl: Duration::from_secs(3600),
            max_entries: 100_000,
        }
    }
}

/// How settlement requests (commit, release, CDR) are made sure of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementConfig {
    /// Attempts before spooling (the first one included).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff_initial: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
    /// No retry starts later than this after the first attempt; the request is spooled instead.
    pub give_up_after: Duration,
    /// The spool file (JSON lines).
    pub spool_path: PathBuf,
    /// How often the spool is replayed in the background (`None`: only when asked).
    pub replay_every: Option<Duration>,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            attempts: 4,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
            spool_path: PathBuf::from("/var/spool/rtc_core/settlements.jsonl"),
            replay_every: Some(Duration::from_secs(60)),
        }
    }
}

/// Everything the service layer needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicesConfig {
    /// One entry per service; a service without one gets [`ServiceConfig::default_for`].
    pub services: Vec<ServiceConfig>,
    /// The shared HTTP client.
    pub http: HttpConfig,
    /// The partner cache.
    pub partner_cache: PartnerCacheConfig,
    /// Served when the routing service fails and routing is fail-open. `${destination}` in a dial string
    /// is replaced with the call's destination.
    pub default_routes: Vec<Route>,
    /// Settlement retries and spool.
    pub settlement: SettlementConfig,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            services: ServiceKind::ALL
                .iter()
                .map(|&k| ServiceConfig::default_for(k))
                .collect(),
            http: HttpConfig::default(),
            partner_cache: PartnerCacheConfig::default(),
            default_routes: Vec::new(),
            settlement: SettlementConfig::default(),
        }
    }
}

impl ServicesConfig {
    /// The settings of `kind`: its entry, or the defaults.
    pub fn service(&self, kind: ServiceKind) -> ServiceConfig {
        self.services
            .iter()
            .find(|s| s.kind == kind)
            .cloned()
            .unwrap_or_else(|| ServiceConfig::default_for(kind))
    }
}
