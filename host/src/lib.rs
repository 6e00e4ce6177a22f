//! The host assembly: everything a host (the FreeSWITCH module, `rtc-core esl`, the simulator) starts at load
//! and stops at unload, in one place so that every host does it in the same order.
//!
//! [`Host::start`] starts the `rtc-io` runtime, loads the local backends when a service is configured
//! `local`, puts the HTTP service layer ([`AsyncServices`]) in front when a service is configured `http`
//! (otherwise the engine talks to the local backends directly), and starts the `rtc-engine` thread.
//! [`Host::shutdown`] undoes it in reverse: the engine stops and joins (its last calls are settled, their
//! settlements submitted), the service layer drains (settlements still in flight are delivered or spooled),
//! then the runtime stops within a bound. Nothing of ours runs once it returns, unless the report says a
//! runtime thread was stuck.
//!
//! Both hosts use it: the FreeSWITCH module (the root crate) and `rtc-core esl` (with `rtc-esl`).
//!
//! # Layout
//! - this file: [`Host`], [`HostOptions`], [`check`] (what `rtc-core check-config` runs).
//! - [`metrics_http`]: the Prometheus scrape endpoint a host may run on the same runtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod metrics_http;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_ledger::LedgerHandle;
use serde::Serialize;

use rtc_config::RtcConfig;
use rtc_engine::audit::AuditSink;
use rtc_engine::clock::Clock;
use rtc_engine::control::CallControl;
use rtc_engine::engine::{Engine, EngineHandle, EngineParts, ShutdownReport};
use rtc_engine::results::LateResults;
use rtc_engine::service::ServiceSink;
use rtc_services::local::{LocalError, LocalServices, ledger};
use rtc_services::stats::{ResponseTime, ResponseTimes};
use rtc_services::{
    AsyncServices, DrainReport, IoRuntime, RuntimeConfig, RuntimeError, ServicesError,
    ServicesMonitor,
};

/// Shortest bound given to the runtime's own shutdown, whatever grace the caller passed: once the engine
/// has stopped and the settlements are drained, only cancelled tasks remain, which end at their next await.
pub const MIN_RUNTIME_BOUND: Duration = Duration::from_millis(500);

/// Why a host could not start. Whatever was started before the failure has been stopped again.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The `rtc-io` runtime would not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A local table, or the ledger, would not load.
    #[error("local backends: {0}")]
    Local(#[from] LocalError),
    /// The HTTP service layer could not be set up.
    #[error("business services: {0}")]
    Services(#[from] ServicesError),
    /// The engine thread would not start.
    #[error("cannot start the rtc-engine thread: {0}")]
    Engine(#[source] std::io::Error),
    /// The audit trail (`<audit>`) would not open.
    #[error("audit trail: {0}")]
    Audit(#[source] rtc_audit::AuditError),
}

pub mod trail;

/// What a host may be given besides its configuration.
pub struct HostOptions {
    /// The engine's clock (real time, except in tests).
    pub clock: Clock,
    /// Local backends already loaded (tests, the simulator); when `None` and a service is configured
    /// `local`, they are loaded from the configuration's `<local>` tables.
    pub local: Option<LocalServices>,
    /// Where this host keeps its ledger when the configuration does not say (`rtc_core.db` there), and what a
    /// relative `ledger` path is under: the module gives FreeSWITCH's db directory, `rtc-core esl` its working
    /// directory. `None`: a ledger the configuration does not place is kept in memory (tests, the simulator).
    pub ledger_dir: Option<PathBuf>,
    /// What a relative audit trail file (`<audit>` `file`) is under: FreeSWITCH's log directory for the module, the
    /// working directory for `rtc-core esl`. `None`: the ledger's directory, else the working directory.
    pub audit_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            clock: Clock::system(),
            local: None,
            ledger_dir: None,
            audit_dir: None,
        }
    }
}

/// What [`Host::shutdown`] did, step by step.
#[derive(Clone, Debug, Serialize)]
pub struct HostShutdownReport {
    /// The engine thread's shutdown: events drained, calls settled, final counters.
    pub engine: ShutdownReport,
    /// The HTTP service layer's drain (`None` when no service is HTTP).
    pub drain: Option<DrainReport>,
    /// Whether every `rtc-io` thread ended within its bound.
    pub runtime_stopped: bool,
    /// How long the whole shutdown took.
    pub took_ms: u64,
}

/// The parts, held until shutdown takes them apart in order.
struct Parts {
    /// The engine thread.
    engine: Engine,
    /// The HTTP service layer's view, when any service is HTTP.
    monitor: Option<ServicesMonitor>,
    /// The `rtc-io` runtime.
    runtime: IoRuntime,
    /// The audit trail's writer, stopped last (the engine's settlements are recorded first).
    audit: Option<rtc_audit::AuditWriter>,
}

/// A running engine with its services and runtime. Stop it with [`Host::shutdown`]; dropping it shuts it
/// down too, with a grace of [`Host::DROP_GRACE`].
pub struct Host {
    /// `None` only once shut down.
    parts: Option<Parts>,
    /// A handle kept outside `parts`, so that accessors never fail.
    handle: EngineHandle,
    /// Its `rtc-io` runtime handle, for hosts that run more tasks on it (ESL connection, metrics).
    io: tokio::runtime::Handle,
    /// The HTTP service layer's view, cloned for accessors.
    monitor: Option<ServicesMonitor>,
    /// The local ledger (when balances or CDRs are local), for operators' commands.
    ledger: Option<LedgerHandle>,
    /// The audit trail (`<audit>`), for operators' actions.
    audit: Option<rtc_audit::AuditLog>,
    /// The local backends' response times (when a service is local).
    local_times: Option<Arc<ResponseTimes>>,
}

/// What [`Host::assemble`] started, before the host holds it.
struct Assembled {
    /// The engine thread.
    engine: Engine,
    /// The HTTP service layer's view, when any service is HTTP.
    monitor: Option<ServicesMonitor>,
    /// The local ledger, when balances or CDRs are local.
    ledger: Option<LedgerHandle>,
    /// The local backends' response times, when a service is local.
    local_times: Option<Arc<ResponseTimes>>,
}

/// The business services' response times, the local backends' and the HTTP services', readable from any thread.
#[derive(Clone, Default)]
pub struct ServiceTimes {
    /// Recorded by the local backends (engine thread, ledger thread).
    local: Option<Arc<ResponseTimes>>,
    /// The HTTP layer, which records its own.
    http: Option<ServicesMonitor>,
}

impl ServiceTimes {
    /// Every (service, backend) asked something so far.
    pub fn snapshot(&self) -> Vec<ResponseTime> {
        let mut out = self
            .local
            .as_ref()
            .map(|t| t.snapshot())
            .unwrap_or_default();
        if let Some(monitor) = &self.http {
            out.extend(monitor.response_times());
        }
        out
    }
}

impl Host {
    /// Grace used when a host is dropped without [`Host::shutdown`].
    pub const DROP_GRACE: Duration = Duration::from_secs(2);

    /// Starts runtime, services and engine as `config` says, with real time.
    pub fn start(config: &RtcConfig, control: Box<dyn CallControl>) -> Result<Host, HostError> {
        Host::start_with(config, control, HostOptions::default())
    }

    /// Starts runtime, services and engine as `config` says, with the given clock and local backends.
    pub fn start_with(
        config: &RtcConfig,
        control: Box<dyn CallControl>,
        options: HostOptions,
    ) -> Result<Host, HostError> {
        let runtime = IoRuntime::start(&RuntimeConfig {
            worker_threads: config.io_threads,
            ..RuntimeConfig::default()
        })?;
        let audit_dir = options
            .audit_dir
            .as_deref()
            .or(options.ledger_dir.as_deref());
        let trail = match trail::start(config, audit_dir) {
            Ok(t) => t,
            Err(e) => {
                runtime.shutdown(MIN_RUNTIME_BOUND);
                return Err(HostError::Audit(e));
            }
        };
        let sink = trail
            .as_ref()
            .map(|t| Box::new(trail::TrailSink::new(t.log.clone(), config)) as Box<dyn AuditSink>);
        match Host::assemble(config, control, options, &runtime, sink) {
            Ok(Assembled {
                engine,
                monitor,
                ledger,
                local_times,
            }) => {
                let handle = engine.handle();
                let io = runtime.handle().clone();
                let (audit, writer) = match trail {
                    Some(t) => (Some(t.log), Some(t.writer)),
                    None => (None, None),
                };
                Ok(Host {
                    parts: Some(Parts {
                        engine,
                        monitor: monitor.clone(),
                        runtime,
                        audit: writer,
                    }),
                    handle,
                    io,
                    monitor,
                    ledger,
                    audit,
                    local_times,
                })
            }
            Err(e) => {
                runtime.shutdown(MIN_RUNTIME_BOUND);
                if let Some(t) = trail {
                    t.writer.stop();
                }
                Err(e)
            }
        }
    }

    fn assemble(
        config: &RtcConfig,
        control: Box<dyn CallControl>,
        options: HostOptions,
        runtime: &IoRuntime,
        audit: Option<Box<dyn AuditSink>>,
    ) -> Result<Assembled, HostError> {
        let mut local = match options.local {
            Some(local) => Some(local),
            None if config.any_local() => {
                let location = ledger::location(
                    &config.local.ledger,
                    &config.local.shared,
                    options.ledger_dir.as_deref(),
                );
                Some(LocalServices::load_at(&config.local, location)?)
            }
            None => None,
        };
        if let Some(local) = local.as_mut() {
            local.set_balance_timeout(
                config
                    .service(rtc_engine::service::ServiceKind::Balance)
                    .timeout,
            );
        }
        let ledger = local.as_ref().map(LocalServices::ledger_handle);
        let local_times = local.as_ref().map(LocalServices::response_times);
        let recovered: Vec<rtc_engine::domain::Cdr> = local
            .as_ref()
            .map(|l| l.recovered_cdrs().to_vec())
            .unwrap_or_default();
        let results = Arc::new(LateResults::new());
        let (services, monitor): (Box<dyn ServiceSink>, _) = if config.any_http() {
            let services = AsyncServices::new(
                &config.services_config(),
                runtime.handle().clone(),
                results.clone(),
                local.map(|l| Box::new(l) as Box<dyn ServiceSink>),
            )?;
            let monitor = services.monitor();
            (Box::new(services), Some(monitor))
        } else {
            match local {
                Some(local) => (Box::new(local), None),
                // Neither HTTP nor local: impossible with a parsed configuration (every service is one of
                // the two); refuse rather than start an engine nobody answers.
                None => {
                    return Err(HostError::Services(ServicesError::NoLocalBackend {
                        service: rtc_engine::service::ServiceKind::Partner,
                    }));
                }
            }
        };
        let mut services = services;
        // CDRs of calls the ledger settled at open (a process that died): to the exports too (`cdr-file`, an HTTP
        // CDR service); the ledger keeps the one it has.
        for cdr in recovered {
            services.submit(rtc_engine::service::ServiceRequest::WriteCdr(Box::new(cdr)));
        }
        let engine = Engine::start_audited(
            EngineParts {
                config: config.engine.clone(),
                fail_modes: config.fail_modes(),
                services,
                control,
                clock: options.clock,
            },
            audit,
        )
        .map_err(HostError::Engine)?;
        results.attach(engine.handle());
        Ok(Assembled {
            engine,
            monitor,
            ledger,
            local_times,
        })
    }

    /// Takes a new configuration (`rtc_core reload`), all or nothing; see [`EngineHandle::reload`].
    pub fn reload(
        &self,
        config: RtcConfig,
        timeout: Duration,
    ) -> Result<String, rtc_engine::engine::ReloadError> {
        self.engine().reload(config.for_reload(), timeout)
    }

    /// The engine, for events, decisions and queries.
    pub fn engine(&self) -> &EngineHandle {
        &self.handle
    }

    /// The HTTP service layer (breakers for `rtc_core breakers`, counters, spool replay); `None` when every
    /// service is local.
    pub fn monitor(&self) -> Option<&ServicesMonitor> {
        self.monitor.as_ref()
    }

    /// The local ledger (balances, top-ups, CDRs), when balances or CDRs are local.
    pub fn ledger(&self) -> Option<&LedgerHandle> {
        self.ledger.as_ref()
    }

    /// The audit trail, when `<audit>` keeps one: for operators' actions.
    pub fn audit(&self) -> Option<&rtc_audit::AuditLog> {
        self.audit.as_ref()
    }

    /// The business services' response times (`rtc_service_request_seconds`).
    pub fn service_times(&self) -> ServiceTimes {
        ServiceTimes {
            local: self.local_times.clone(),
            http: self.monitor.clone(),
        }
    }

    /// The `rtc-io` runtime, for other I/O the host runs (the ESL connection, a metrics endpoint).
    pub fn io(&self) -> &tokio::runtime::Handle {
        &self.io
    }

    /// Stops everything in order: the engine (joined, its live calls settled), then the service layer's
    /// settlements (at most `grace` to deliver them, the rest spooled), then the runtime (at most `grace`,
    /// and at least [`MIN_RUNTIME_BOUND`]). The engine's own bound is its `shutdown-grace` setting.
    pub fn shutdown(mut self, grace: Duration) -> HostShutdownReport {
        // `parts` is taken only here and in `drop`, and `shutdown` consumes `self`: it is always there.
        match self.parts.take() {
            Some(parts) => stop(parts, grace),
            None => HostShutdownReport::nothing(),
        }
    }
}

/// Checks what [`Host::start`] would check — the local tables when a service is local, the service URLs,
/// API keys, CA file and default routes when one is HTTP — without starting the engine, and stops whatever
/// the check started. For `rtc-core check-config`.
pub fn check(config: &RtcConfig) -> Result<(), HostError> {
    let local = if config.any_local() {
        Some(LocalServices::load(&config.local)?)
    } else {
        None
    };
    if !config.any_http() {
        return Ok(());
    }
    let runtime = IoRuntime::start(&RuntimeConfig {
        worker_threads: 1,
        max_blocking_threads: 1,
    })?;
    let mut config = config.services_config();
    // Nothing runs long enough to replay the spool.
    config.settlement.replay_every = None;
    let built = AsyncServices::new(
        &config,
        runtime.handle().clone(),
        Arc::new(LateResults::new()),
        local.map(|l| Box::new(l) as Box<dyn ServiceSink>),
    );
    let result = built.map(drop).map_err(HostError::from);
    runtime.shutdown(MIN_RUNTIME_BOUND);
    result
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            let report = stop(parts, Host::DROP_GRACE);
            log::debug!("host dropped without shutdown; stopped: {report:?}");
        }
    }
}

fn stop(parts: Parts, grace: Duration) -> HostShutdownReport {
    let started = Instant::now();
    let Parts {
        engine,
        monitor,
        runtime,
        audit,
    } = parts;
    let engine = engine.shutdown();
    let drain = monitor.map(|m| m.drain(grace));
    let runtime_stopped = runtime.shutdown(grace.max(MIN_RUNTIME_BOUND));
    // Last: the settlements of the calls the engine ended are recorded by now.
    if let Some(writer) = audit {
        writer.stop();
    }
    let report = HostShutdownReport {
        engine,
        drain,
        runtime_stopped,
        took_ms: started.elapsed().as_millis() as u64,
    };
    if let Some(d) = &report.drain
        && (d.spooled > 0 || d.lost > 0)
    {
        log::warn!(
            "shutdown: {} settlement(s) in flight, {} spooled, {} lost",
            d.in_flight,
            d.spooled,
            d.lost
        );
    }
    report
}

impl HostShutdownReport {
    /// Nothing was running. Not produced in practice: `shutdown` consumes the host, whose parts are only
    /// taken by `shutdown` or `drop`.
    fn nothing() -> HostShutdownReport {
        HostShutdownReport {
            engine: ShutdownReport {
                drained_events: 0,
                settled_calls: 0,
                abandoned: false,
                stats: rtc_engine::stats::Stats::zero(),
            },
            drain: None,
            runtime_stopped: true,
            took_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use rtc_config::services::Backend;
    use rtc_engine::control::CallCommand;
    use rtc_engine::engine::{Query, QueryReply};
    use rtc_engine::event::{CallEvent, EventKind};
    use rtc_engine::id::CallId;
    use rtc_engine::service::ServiceKind;
    use rtc_engine::testkit::RecordingControl;

    fn call(control: &RecordingControl, host: &Host, n: u128) -> CallCommand {
        let id = CallId::from_u128(n);
        let mut ev = CallEvent::new(id, EventKind::ChannelCreate, 1);
        ev.source_ip = Some(IpAddr::from([127, 0, 0, 1]));
        ev.destination = "442079460000".into();
        host.engine().submit_event(ev).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = control.take().into_iter().next() {
                return c;
            }
            assert!(Instant::now() < deadline, "no decision for call {n}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn all_local_runs_without_the_http_layer() {
        let config = RtcConfig::default();
        let control = RecordingControl::default();
        let host = Host::start(&config, Box::new(control.clone())).unwrap();
        assert!(host.monitor().is_none());
        let first = call(&control, &host, 1);
        assert!(
            matches!(first, CallCommand::SetVariables { ref vars, .. } if vars.iter().any(|v| v.name == "rtc_route")),
            "{first:?}"
        );
        let report = host.shutdown(Duration::from_secs(1));
        assert!(report.runtime_stopped);
        assert!(report.drain.is_none());
        assert_eq!(report.engine.settled_calls, 1);
    }

    #[test]
    fn response_times_are_kept_per_service_and_backend() {
        let mut config = RtcConfig::default();
        // Routing over HTTP to a port nothing listens on: the attempt fails at once, and is timed.
        let routing = &mut config.services[4];
        assert_eq!(routing.kind, ServiceKind::Routing);
        routing.backend = Backend::Http;
        routing.url = Some("http://127.0.0.1:9/routing".into());
        let control = RecordingControl::default();
        let host = Host::start(&config, Box::new(control.clone())).unwrap();
        let first = call(&control, &host, 3);
        assert!(
            matches!(first, CallCommand::SetVariables { ref vars, .. }
                if vars.iter().any(|v| v.name == "rtc_reject_reason" && v.value == "service_down")),
            "routing failed, fail-closed: {first:?}"
        );
        let times = host.service_times().snapshot();
        let has = |service, backend: Backend| {
            times
                .iter()
                .any(|t| t.service == service && t.backend == backend && t.buckets.count() >= 1)
        };
        assert!(has(ServiceKind::Partner, Backend::Local), "{times:?}");
        // The reservation is timed until the ledger answered.
        assert!(has(ServiceKind::Balance, Backend::Local), "{times:?}");
        assert!(has(ServiceKind::Routing, Backend::Http), "{times:?}");
        assert!(!has(ServiceKind::Routing, Backend::Local), "{times:?}");
        host.shutdown(Duration::from_millis(200));
    }

    #[test]
    fn an_http_service_puts_the_service_layer_in_front_and_shutdown_spools_its_settlements() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RtcConfig::default();
        // The CDR service is unreachable (nothing listens on port 9 of 127.0.0.1 here: discard is not run).
        let cdr = &mut config.services[5];
        assert_eq!(cdr.kind, ServiceKind::Cdr);
        cdr.backend = Backend::Http;
        cdr.url = Some("http://127.0.0.1:9/cdr".into());
        config.settlement.spool_path = dir.path().join("spool.jsonl");
        config.settlement.backoff_initial = Duration::from_secs(30);
        config.settlement.give_up_after = Duration::from_secs(120);
        config.settlement.replay_every = None;
        let control = RecordingControl::default();
        let host = Host::start(&config, Box::new(control.clone())).unwrap();
        let monitor = host.monitor().expect("an HTTP service").clone();
        let breakers = monitor.breakers();
        assert_eq!(breakers.len(), 1);
        assert_eq!(breakers[0].service, ServiceKind::Cdr);
        // Local services still decide the call at once.
        let first = call(&control, &host, 2);
        assert!(
            matches!(first, CallCommand::SetVariables { .. }),
            "{first:?}"
        );
        match host.engine().query(Query::Status, Duration::from_secs(5)) {
            Ok(QueryReply::Status(s)) => assert_eq!(s.live_calls, 1),
            other => panic!("{other:?}"),
        }
        // Shutdown settles the call: its CDR goes to the unreachable service, waits for a retry, and is
        // spooled by the drain.
        let report = host.shutdown(Duration::from_millis(200));
        assert!(report.runtime_stopped);
        let drain = report.drain.expect("drained");
        assert_eq!(drain.in_flight, 1, "{drain:?}");
        assert_eq!(drain.spooled, 1);
        let spooled = std::fs::read_to_string(dir.path().join("spool.jsonl")).unwrap();
        assert!(spooled.contains("\"op\":\"cdr\""), "{spooled}");
    }

    #[test]
    fn check_finds_what_start_would_refuse() {
        assert!(check(&RtcConfig::default()).is_ok());
        let mut config = RtcConfig::default();
        config.services[3].backend = Backend::Http;
        config.services[3].url = Some("http://127.0.0.1:9/rating".into());
        assert!(check(&config).is_ok());
        config.http.extra_ca_file = Some("/nonexistent/ca.pem".into());
        let e = check(&config).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_bad_table_is_refused_and_nothing_is_left_running() {
        let mut config = RtcConfig::default();
        config.local.rates = "/nonexistent/rates.csv".into();
        let e = Host::start(&config, Box::new(RecordingControl::default()))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("/nonexistent/rates.csv"), "{e}");
        let mut config = RtcConfig::default();
        config.services[0].backend = Backend::Http;
        config.services[0].url = None;
        let e = Host::start(&config, Box::new(RecordingControl::default()))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("no url"), "{e}");
    }
}
