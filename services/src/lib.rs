//! The business services: answers the engine's [`ServiceRequest`]s from HTTP services or from the embedded
//! (local) backends, on the embedded `rtc-io` runtime, with timeouts, circuit breakers and graceful
//! degradation; money and CDRs of the local backends in the ledger (`rtc-ledger`).
//!
//! Built from the services' settings (`rtc-config`), and answering the engine core (`rtc-engine`) through its
//! [`ServiceSink`] contract: the engine knows neither how services are built nor how they are configured.
//!
//! # Layout
//! - [`runtime`]: the tokio runtime the host starts and stops.
//! - [`AsyncServices`] ([`dispatch`]): the [`ServiceSink`] the engine submits to. Local kinds are forwarded
//!   to the local backends at once; HTTP kinds become one task each, whose answer goes to a
//!   [`ResultSink`](rtc_engine::service::ResultSink).
//! - [`http`], [`wire`]: the shared HTTP client and the JSON contract (see `docs/services.md`).
//! - [`breaker`]: one circuit breaker per service.
//! - [`spool`]: settlements that could not be delivered, kept for replay.
//! - [`stats`]: counters per service and outcome.
//! - [`local`]: the embedded backends (partners, authentication, rating, routing from CSV tables; balances
//!   and CDRs in the ledger), behind the same [`ServiceSink`].
//!
//! [`ServiceRequest`]: rtc_engine::service::ServiceRequest
//! [`ServiceSink`]: rtc_engine::service::ServiceSink
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod breaker;
pub mod dispatch;
pub mod http;
pub mod local;
pub mod runtime;
pub mod spool;
pub mod stats;
pub mod wire;

use std::any::Any;

use rtc_config::audit::Numbers;
use rtc_config::services::ServicesConfig;

pub use breaker::{BreakerState, BreakerStatus, Change, Transitions};
pub use dispatch::{AsyncServices, DrainReport, ReplayReport, ServicesError, ServicesMonitor};
pub use runtime::{IoRuntime, RuntimeConfig, RuntimeError};

/// How the configuration's `numbers` (`<audit>`) writes callers' and callees' numbers, as the audit trail and the
/// CDR export apply it.
pub fn number_policy(numbers: &Numbers) -> rtc_audit::NumberPolicy {
    match numbers {
        Numbers::Plain => rtc_audit::NumberPolicy::Plain,
        Numbers::Mask => rtc_audit::NumberPolicy::Mask,
        Numbers::Encrypt(key) => {
            rtc_audit::NumberPolicy::Encrypt(rtc_audit::NumberKey::from_bytes(*key))
        }
    }
}

/// The services' settings out of what `rtc_core reload` hands a sink
/// ([`ServiceSink::reload`](rtc_engine::service::ServiceSink::reload)): a [`ServicesConfig`], or a refusal saying
/// that `who` cannot read what it was offered.
pub(crate) fn services_settings<'a>(
    settings: &'a dyn Any,
    who: &str,
) -> Result<&'a ServicesConfig, String> {
    settings.downcast_ref::<ServicesConfig>().ok_or_else(|| {
        format!(
            "{who} reload from the services' settings of rtc_core.conf, and were offered something else; \
             nothing changed"
        )
    })
}
