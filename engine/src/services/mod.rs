//! The business-service layer: answers the engine's [`ServiceRequest`]s from HTTP services (or the local
//! backends), on the embedded `rtc-io` runtime, with timeouts, circuit breakers and graceful degradation.
//!
//! # Layout
//! - [`runtime`]: the tokio runtime the host starts and stops.
//! - [`AsyncServices`] ([`dispatch`]): the [`ServiceSink`] the engine submits to. Local kinds are forwarded
//!   to the local backends at once; HTTP kinds become one task each, whose answer goes to a
//!   [`ResultSink`](crate::service::ResultSink).
//! - [`http`], [`wire`]: the shared HTTP client and the JSON contract (see `docs/services.md`).
//! - [`breaker`]: one circuit breaker per service.
//! - [`spool`]: settlements that could not be delivered, kept for replay.
//! - [`stats`]: counters per service and outcome.
//!
//! [`ServiceRequest`]: crate::service::ServiceRequest
//! [`ServiceSink`]: crate::service::ServiceSink

pub mod breaker;
pub mod dispatch;
pub mod http;
pub mod runtime;
pub mod spool;
pub mod stats;
pub mod wire;

use std::any::Any;

use crate::settings::services::ServicesConfig;

pub use breaker::{BreakerState, BreakerStatus, Change, Transitions};
pub use dispatch::{AsyncServices, DrainReport, ReplayReport, ServicesError, ServicesMonitor};
pub use runtime::{IoRuntime, RuntimeConfig, RuntimeError};

/// The services' settings out of what `rtc_core reload` hands a sink
/// ([`ServiceSink::reload`](crate::service::ServiceSink::reload)): a [`ServicesConfig`], or a refusal saying
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
