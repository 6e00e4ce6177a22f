//! Where the services' answers go: the engine thread, through its [`EngineHandle`].
//!
//! An answer can arrive after the engine has stopped (a request still in flight at shutdown). It is then
//! counted ([`undelivered_results`]) and logged, never a panic: nobody is left to act on it. A reservation
//! among them is logged at warning level with its id and amount, because it was made and will not be used
//! by this call: the balance service must let it expire (the local backend is reloaded at start anyway).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::engine::EngineHandle;
use crate::service::{Outcome, ResultSink, ServiceResult};

/// Answers that found no engine to take them, since the process started.
static UNDELIVERED: AtomicU64 = AtomicU64::new(0);

/// How many service answers arrived when no engine was running to take them (since the process started).
pub fn undelivered_results() -> u64 {
    UNDELIVERED.load(Ordering::Relaxed)
}

/// Counts and logs an answer nobody will apply.
fn undelivered(result: &ServiceResult, why: &str) {
    let n = UNDELIVERED.fetch_add(1, Ordering::Relaxed) + 1;
    match &result.outcome {
        Outcome::BalanceReserved { reservation: r, .. } => log::warn!(
            "call {}: reservation {} of {} arrived after {why}; it is not used by the call and must expire at the balance service",
            result.call,
            r.id,
            r.amount
        ),
        // One line per power of two: a shutdown with thousands of calls in flight must not flood the log.
        _ if n.is_power_of_two() => log::info!(
            "call {}: a service answer arrived after {why} and was dropped ({n} so far)",
            result.call
        ),
        _ => log::debug!(
            "call {}: a service answer arrived after {why} and was dropped",
            result.call
        ),
    }
}

impl ResultSink for EngineHandle {
    fn deliver(&self, result: ServiceResult) {
        // `EngineHandle::deliver` only fails once the engine thread has stopped.
        if EngineHandle::deliver(self, result.clone()).is_err() {
            undelivered(&result, "the engine stopped");
        }
    }
}

/// A [`ResultSink`] whose engine is attached after it is built: the services must exist before the engine
/// they answer (the engine owns them), and the engine's handle exists only once it runs. Answers that come
/// before [`LateResults::attach`] (none can, since requests come from the engine) are counted and dropped.
#[derive(Default)]
pub struct LateResults {
    /// The engine (or, in tests and the loopback services, another sink), once attached.
    sink: OnceLock<Arc<dyn ResultSink>>,
}

impl LateResults {
    /// A sink with no engine attached yet.
    pub fn new() -> LateResults {
        LateResults::default()
    }

    /// Sends answers to `engine` from now on. Only the first attach has an effect.
    pub fn attach(&self, engine: EngineHandle) {
        self.attach_sink(Arc::new(engine));
    }

    /// Sends answers to `sink` from now on (tests, a host without an engine). Only the first attach has an effect.
    pub fn attach_sink(&self, sink: Arc<dyn ResultSink>) {
        let _ = self.sink.set(sink);
    }
}

impl ResultSink for LateResults {
    fn deliver(&self, result: ServiceResult) {
        match self.sink.get() {
            Some(sink) => sink.deliver(result),
            None => undelivered(&result, "before the engine started"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::EngineConfig;
    use crate::config::FailModes;
    use crate::domain::{Money, Reservation};
    use crate::engine::{Engine, EngineParts};
    use crate::id::CallId;
    use crate::service::{ServiceFailure, ServiceKind};
    use crate::testkit::{RecordingControl, ScriptedServices};

    fn engine() -> Engine {
        Engine::start(EngineParts {
            config: EngineConfig::default(),
            fail_modes: FailModes::default(),
            services: Box::new(ScriptedServices::silent()),
            control: Box::new(RecordingControl::default()),
            clock: Clock::system(),
        })
        .unwrap()
    }

    fn result(outcome: Outcome) -> ServiceResult {
        ServiceResult {
            call: CallId::from_u128(7),
            outcome,
        }
    }

    #[test]
    fn answers_after_the_engine_stopped_are_counted_not_panicked_on() {
        let engine = engine();
        let handle = engine.handle();
        let late = LateResults::new();
        let before = undelivered_results();
        late.deliver(result(Outcome::AuthOk));
        assert!(undelivered_results() > before);
        late.attach(handle.clone());
        // Running: taken (an answer for an unknown call is the engine's to ignore).
        ResultSink::deliver(&late, result(Outcome::AuthOk));
        drop(engine.shutdown());
        let before = undelivered_results();
        ResultSink::deliver(
            &handle,
            result(Outcome::Failed(
                ServiceKind::Rating,
                ServiceFailure::Timeout,
            )),
        );
        ResultSink::deliver(
            &late,
            result(Outcome::BalanceReserved {
                reservation: Reservation {
                    id: 3,
                    amount: Money(1_000_000),
                },
                available: None,
            }),
        );
        assert!(undelivered_results() >= before + 2);
    }
}
