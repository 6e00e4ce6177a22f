//! [`AsyncServices`]: the engine's [`ServiceSink`] in front of the HTTP services and the local backends.
//!
//! `submit` never waits. A request for a service configured `local` is handed to the local backends at
//! once, on the engine thread, and their answer (if any) returned as is. A request for an HTTP service
//! becomes one task on the `rtc-io` runtime: breaker check, POST within the service's timeout, answer
//! validated, degraded answer when the service failed (cached partner, default routes), then the result
//! goes to the [`ResultSink`]. Settlements (commit, release, CDR) yield no result: they are retried with
//! backoff and, failing that, written to the spool; [`ServicesMonitor::drain`] spools those still in
//! flight at shutdown, so that none is lost.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use moka::sync::Cache;
use serde::Serialize;
use tokio::runtime::Handle;

use crate::breaker::{Breaker, BreakerStatus, Transitions};
use crate::http::{self, ClientError, Endpoint, EndpointError, HttpClient, HttpError};
use crate::services_settings;
use crate::spool::{Spool, SpoolError, SpoolRecord};
use crate::stats::{CounterValue, Counters, Event, ResponseTime, ResponseTimes, kind_index};
use crate::wire::{self, Operation};
use rtc_config::services::{Backend, ServiceConfig, ServicesConfig, SettlementConfig};
use rtc_engine::config::FailMode;
use rtc_engine::domain::{PartnerInfo, Route, Routes};
use rtc_engine::id::CallId;
use rtc_engine::service::{
    Outcome, ResultSink, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult, ServiceSink,
};

/// Why the service layer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// A service configured `http` has no URL.
    #[error(
        "{service:?} service is configured for HTTP but has no url (set its url, or use the local backend)"
    )]
    MissingUrl {
        /// The service.
        service: ServiceKind,
    },
    /// A service's URL or key is unusable.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A service configured `local`, with no local backends given.
    #[error(
        "{service:?} service is configured local but no local backends were given (host bug, or set it to http)"
    )]
    NoLocalBackend {
        /// The service.
        service: ServiceKind,
    },
    /// A default route is unusable.
    #[error("default route {index} ({carrier}): {reason}")]
    DefaultRoute {
        /// Its place in `<default-routes>`, from 0.
        index: usize,
        /// Its carrier.
        carrier: CompactString,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The runtime clock: tokio's, so that tests with paused time move breakers and backoffs too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One service's settings and live state.
struct ServiceState {
    /// Its settings.
    config: ServiceConfig,
    /// Where it is reached (HTTP services only).
    endpoint: Option<Endpoint>,
    /// Its breaker, locked only around state checks (never across an await).
    breaker: Mutex<Breaker>,
}

/// Why one attempt gave no answer.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("circuit breaker open (retry in {0:?})")]
    CircuitOpen(Duration),
    #[error("no url configured")]
    NoEndpoint,
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl Failure {
    fn service_failure(&self) -> ServiceFailure {
        match self {
            Failure::CircuitOpen(_) => ServiceFailure::CircuitOpen,
            Failure::NoEndpoint => ServiceFailure::Error,
            Failure::Http(e) => e.failure(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::CircuitOpen(_) => true,
            Failure::NoEndpoint => false,
            Failure::Http(e) => e.retryable(),
        }
    }
}

/// State shared by the sink, its tasks and the monitor.
struct Shared {
    /// The pooled HTTP client.
    http: HttpClient,
    /// Per service, indexed like [`ServiceKind::ALL`].
    services: Vec<ServiceState>,
    /// Partners last identified by the service, by source address: served when it fails.
    partners: Cache<IpAddr, PartnerInfo>,
    /// Served when routing fails and is fail-open.
    default_routes: Vec<Route>,
    /// Settlement retry bounds.
    settlement: SettlementConfig,
    /// Where undelivered settlements go.
    spool: Spool,
    /// Settlements in flight, by a sequence number: spooled by `drain` if still here at shutdown.
    pending: Mutex<HashMap<u64, SpoolRecord>>,
    /// Signalled whenever a settlement leaves `pending`.
    pending_left: Condvar,
    /// Next key of `pending`.
    next_pending: AtomicU64,
    /// Set by `drain`: the runtime is going away, new settlements are spooled directly.
    closed: AtomicBool,
    /// Set while a spool replay runs, so that two never overlap.
    replaying: AtomicBool,
    /// Counters per service and event.
    counters: Counters,
    /// How long each HTTP request took, answered or not (the local backends keep their own).
    times: ResponseTimes,
    /// Where answers go.
    results: Arc<dyn ResultSink>,
}

impl Shared {
    fn service(&self, kind: ServiceKind) -> &ServiceState {
        &self.services[kind_index(kind)]
    }

    /// One attempt: breaker, POST, breaker bookkeeping, counters and log.
    async fn attempt(
        &self,
        operation: Operation,
        call: CallId,
        body: &serde_json::Value,
    ) -> Result<Option<Outcome>, Failure> {
        let kind = operation.service();
        let service = self.service(kind);
        let Some(endpoint) = &service.endpoint else {
            return Err(Failure::NoEndpoint);
        };
        let permit = {
            let mut breaker = service.breaker.lock().unwrap_or_else(|p| p.into_inner());
            let before = breaker.transitions();
            let permit = breaker.try_acquire(now());
            log_transitions(kind, before, &breaker);
            permit
        };
        let permit = match permit {
            Ok(p) => p,
            Err(rejected) => {
                self.counters.count(kind, Event::CircuitOpen);
                log::debug!(
                    "call {call}: {} {operation} not sent: circuit breaker open",
                    kind.name()
                );
                return Err(Failure::CircuitOpen(rejected.retry_in));
            }
        };
        self.counters.count(kind, Event::Sent);
        let sent = tokio::time::Instant::now();
        let result = self
            .http
            .post(endpoint, operation, call, body, service.config.timeout)
            .await;
        self.times.record(kind, Backend::Http, sent.elapsed());
        {
            let mut breaker = service.breaker.lock().unwrap_or_else(|p| p.into_inner());
            let before = breaker.transitions();
            breaker.record(permit, result.is_ok(), now());
            log_transitions(kind, before, &breaker);
        }
        match result {
            Ok(outcome) => {
                self.counters.count(kind, Event::Ok);
                Ok(outcome)
            }
            Err(e) => {
                self.counters.count(kind, e.event());
                log::warn!(
                    "call {call}: {} service {operation} at {}{} failed: {e}",
                    kind.name(),
                    endpoint.base,
                    operation.path()
                );
                Err(Failure::Http(e))
            }
        }
    }

    /// A decision request: attempt, degrade, deliver.
    async fn answer(self: Arc<Self>, request: ServiceRequest) {
        let kind = request.kind();
        let call = request.call();
        let operation = Operation::of(&request);
        let body = wire::encode(&request);
        let outcome = match self.attempt(operation, call, &body).await {
            Ok(Some(outcome)) => outcome,
            // Only settlements answer without an outcome; they do not come here.
            Ok(None) => Outcome::Failed(kind, ServiceFailure::Error),
            Err(e) => Outcome::Failed(kind, e.service_failure()),
        };
        let outcome = self.degrade(&request, outcome);
        self.results.deliver(ServiceResult { call, outcome });
    }

    /// Keeps the partner cache up to date, and replaces a failure by a degraded answer where there is one.
    fn degrade(&self, request: &ServiceRequest, outcome: Outcome) -> Outcome {
        match (request, outcome) {
            (
                ServiceRequest::IdentifyPartner {
                    source_ip: Some(ip),
                    ..
                },
                Outcome::PartnerFound(partner),
            ) => {
                self.partners.insert(*ip, partner.clone());
                Outcome::PartnerFound(partner)
            }
            (
                ServiceRequest::IdentifyPartner {
                    source_ip: Some(ip),
                    ..
                },
                Outcome::PartnerUnknown,
            ) => {
                self.partners.invalidate(ip);
                Outcome::PartnerUnknown
            }
            (
                ServiceRequest::IdentifyPartner {
                    call,
                    source_ip: Some(ip),
                },
                failed @ Outcome::Failed(..),
            ) => match self.partners.get(ip) {
                Some(partner) => {
                    self.counters
                        .count(ServiceKind::Partner, Event::DegradedPartnerCache);
                    log::info!(
                        "call {call}: partner service failed; using cached partner {} for {ip}",
                        partner.name
                    );
                    Outcome::PartnerFound(partner)
                }
                None => failed,
            },
            (
                ServiceRequest::Route {
                    call, destination, ..
                },
                failed @ Outcome::Failed(..),
            ) => {
                let routing = &self.service(ServiceKind::Routing).config;
                if routing.fail_mode == FailMode::Open && !self.default_routes.is_empty() {
                    self.counters
                        .count(ServiceKind::Routing, Event::DegradedDefaultRoute);
                    log::info!("call {call}: routing service failed; using the default routes");
                    Outcome::RoutesFound(default_routes(&self.default_routes, destination))
                } else {
                    failed
                }
            }
            (_, outcome) => outcome,
        }
    }

    fn add_pending(&self, record: SpoolRecord) -> u64 {
        let id = self.next_pending.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, record);
        id
    }

    /// Takes a settlement out of `pending`; `None` when `drain` already spooled it.
    fn take_pending(&self, id: u64) -> Option<SpoolRecord> {
        let record = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.pending_left.notify_all();
        record
    }

    /// A settlement: attempts with backoff within the bounds, then the spool.
    async fn settle(self: Arc<Self>, id: u64, operation: Operation, call: CallId) {
        let Some(body) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|r| r.body.clone())
        else {
            return;
        };
        let kind = operation.service();
        let bounds = &self.settlement;
        let started = tokio::time::Instant::now();
        let mut backoff = bounds.backoff_initial;
        let mut attempts = 0u32;
        let last_error = loop {
            attempts += 1;
            let error = match self.attempt(operation, call, &body).await {
                Ok(_) => {
                    self.take_pending(id);
                    return;
                }
                Err(e) => e,
            };
            let out_of_time = started.elapsed() + backoff > bounds.give_up_after;
            if !error.retryable() || attempts >= bounds.attempts.max(1) || out_of_time {
                break error.to_string();
            }
            self.counters.count(kind, Event::SettlementRetry);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(bounds.backoff_max);
        };
        let Some(mut record) = self.take_pending(id) else {
            return;
        };
        record.attempts = attempts;
        record.last_error = last_error;
        record.spooled_at_ms = SpoolRecord::now_ms();
        // Written here, without an await between taking the record out of `pending` and writing it: a
        // shutdown drain that finds `pending` empty must not be able to stop the runtime before the record
        // is on disk (a queued blocking task may never run once shutdown starts). One short append on a
        // worker thread, on the failure path only.
        self.spool(vec![record]);
    }

    /// Writes settlements to the spool (blocking), counting and logging; a record that cannot be written
    /// is logged in full so that it can still be recovered by hand.
    fn spool(&self, records: Vec<SpoolRecord>) -> usize {
        if records.is_empty() {
            return 0;
        }
        match self.spool.append(&records) {
            Ok(()) => {
                for r in &records {
                    self.counters.count(r.op.service(), Event::Spooled);
                    log::warn!(
                        "call {}: {} not delivered after {} attempt(s) ({}); spooled to {}",
                        r.call_id,
                        r.op,
                        r.attempts,
                        r.last_error,
                        self.spool.path().display()
                    );
                }
                records.len()
            }
            Err(e) => {
                for r in &records {
                    self.counters.count(r.op.service(), Event::SpoolFailed);
                    log::error!(
                        "call {}: {} LOST: {e}; record: {}",
                        r.call_id,
                        r.op,
                        serde_json::to_string(r).unwrap_or_default()
                    );
                }
                0
            }
        }
    }
}

/// Logs the state changes a breaker made since `before` (at most one per call of `try_acquire`/`record`).
fn log_transitions(kind: ServiceKind, before: Transitions, breaker: &Breaker) {
    let after = breaker.transitions();
    if after.opened > before.opened {
        log::warn!(
            "{} service: circuit breaker opened; requests fail at once (circuit_open) until it probes again",
            kind.name()
        );
    } else if after.half_opened > before.half_opened {
        log::info!(
            "{} service: circuit breaker half-open; probing",
            kind.name()
        );
    } else if after.closed > before.closed {
        log::info!(
            "{} service: circuit breaker closed; the service answers again",
            kind.name()
        );
    }
}

/// The default routes for `destination`.
fn default_routes(routes: &[Route], destination: &str) -> Routes {
    routes
        .iter()
        .map(|r| Route {
            carrier: r.carrier.clone(),
            dial_string: r.dial_string.replace("${destination}", destination).into(),
            cost_per_minute: r.cost_per_minute,
        })
        .collect::<Vec<_>>()
        .into()
}

/// The engine's service sink: local kinds answered at once by the local backends, HTTP kinds on `rtc-io`.
pub struct AsyncServices {
    /// State shared with the tasks and the monitor.
    shared: Arc<Shared>,
    /// The runtime the tasks run on.
    runtime: Handle,
    /// The local backends, for kinds configured `local`. Called only from `submit`, i.e. on the engine
    /// thread: they need no synchronisation and never see a tokio thread.
    local: Option<Box<dyn ServiceSink>>,
}

impl AsyncServices {
    /// Sets up the services. `local` is required when any service is configured `local`.
    /// Must be called from a thread where a runtime may be entered (not from inside an async task is fine
    /// too: nothing blocks).
    pub fn new(
        config: &ServicesConfig,
        runtime: Handle,
        results: Arc<dyn ResultSink>,
        local: Option<Box<dyn ServiceSink>>,
    ) -> Result<AsyncServices, ServicesError> {
        let mut services = Vec::with_capacity(ServiceKind::ALL.len());
        for kind in ServiceKind::ALL {
            let service = config.service(kind);
            let endpoint = match service.backend {
                Backend::Http => {
                    let url = service
                        .url
                        .as_deref()
                        .ok_or(ServicesError::MissingUrl { service: kind })?;
                    Some(http::endpoint(kind, url, service.api_key.as_deref())?)
                }
                Backend::Local => {
                    if local.is_none() {
                        return Err(ServicesError::NoLocalBackend { service: kind });
                    }
                    None
                }
            };
            services.push(ServiceState {
                breaker: Mutex::new(Breaker::new(service.breaker.clone(), now())),
                config: service,
                endpoint,
            });
        }
        for (index, route) in config.default_routes.iter().enumerate() {
            let problem = |reason: String| ServicesError::DefaultRoute {
                index,
                carrier: route.carrier.clone(),
                reason,
            };
            wire::check_dial_string("dial_string", &route.dial_string)
                .map_err(|e| problem(e.to_string()))?;
            if route.carrier.is_empty() {
                return Err(problem("carrier name is empty".into()));
            }
        }
        let cache = &config.partner_cache;
        let shared = Arc::new(Shared {
            http: HttpClient::new(&config.http)?,
            services,
            partners: Cache::builder()
                .max_capacity(cache.max_entries)
                .time_to_live(cache.ttl)
                .build(),
            default_routes: config.default_routes.clone(),
            settlement: config.settlement.clone(),
            spool: Spool::new(config.settlement.spool_path.clone()),
            pending: Mutex::new(HashMap::new()),
            pending_left: Condvar::new(),
            next_pending: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            replaying: AtomicBool::new(false),
            counters: Counters::default(),
            times: ResponseTimes::default(),
            results,
        });
        if let Some(every) = config.settlement.replay_every {
            let monitor = ServicesMonitor {
                shared: shared.clone(),
            };
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if monitor.shared.closed.load(Ordering::Relaxed) {
                        return;
                    }
                    match monitor.replay_spool().await {
                        Ok(report) if report.replayed + report.failed > 0 => {
                            log::info!("settlement spool replay: {report:?}");
                        }
                        Ok(_) => {}
                        Err(e) => log::error!("settlement spool replay failed: {e}"),
                    }
                }
            });
        }
        Ok(AsyncServices {
            shared,
            runtime,
            local,
        })
    }

    /// A handle for `rtc_core breakers`, metrics, spool replay and shutdown, usable from any thread.
    pub fn monitor(&self) -> ServicesMonitor {
        ServicesMonitor {
            shared: self.shared.clone(),
        }
    }
}

impl ServiceSink for AsyncServices {
    /// Reloads the local backends. HTTP services keep their connections, breakers and caches: a changed
    /// backend, URL, key, timeout or breaker setting is refused (nothing changes) until a restart.
    fn reload(&mut self, settings: &dyn Any) -> Result<String, String> {
        let config = services_settings(settings, "the business services")?;
        for kind in ServiceKind::ALL {
            let running = &self.shared.service(kind).config;
            let wanted = config.service(kind);
            if *running != wanted {
                return Err(format!(
                    "the {} service's settings changed (backend, url, key, timeout, breaker or fail mode); \
                     HTTP service settings take effect when the module is restarted",
                    kind.name()
                ));
            }
        }
        match self.local.as_mut() {
            Some(local) => local.reload(settings),
            None => Ok(String::new()),
        }
    }

    fn attach(&mut self, engine: Arc<dyn ResultSink>) {
        if let Some(local) = self.local.as_mut() {
            local.attach(engine);
        }
    }

    /// A call's end: when both its settlement and its CDR go to the local backends (the ledger), they go
    /// together, in one transaction; otherwise each goes its own way.
    fn finish(&mut self, settlement: Option<ServiceRequest>, cdr: Box<rtc_engine::domain::Cdr>) {
        let local = |kind| self.shared.service(kind).config.backend == Backend::Local;
        if local(ServiceKind::Cdr)
            && (settlement.is_none() || local(ServiceKind::Balance))
            && let Some(backend) = self.local.as_mut()
        {
            if let Some(s) = &settlement {
                self.shared.counters.count(s.kind(), Event::Local);
            }
            self.shared.counters.count(ServiceKind::Cdr, Event::Local);
            backend.finish(settlement, cdr);
            return;
        }
        if let Some(settlement) = settlement {
            self.submit(settlement);
        }
        self.submit(ServiceRequest::WriteCdr(cdr));
    }

    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
        let kind = request.kind();
        let shared = &self.shared;
        if shared.service(kind).config.backend == Backend::Local {
            shared.counters.count(kind, Event::Local);
            return match self.local.as_mut() {
                Some(local) => local.submit(request),
                None => Some(ServiceResult {
                    call: request.call(),
                    outcome: Outcome::Failed(kind, ServiceFailure::Error),
                }),
            };
        }
        let operation = Operation::of(&request);
        let call = request.call();
        if !operation.is_settlement() {
            if shared.closed.load(Ordering::Relaxed) {
                return Some(ServiceResult {
                    call,
                    outcome: Outcome::Failed(kind, ServiceFailure::Error),
                });
            }
            self.runtime.spawn(shared.clone().answer(request));
            return None;
        }
        let mut call_id = [0u8; 36];
        let record = SpoolRecord {
            op: operation,
            call_id: call.encode(&mut call_id).to_owned(),
            spooled_at_ms: 0,
            attempts: 0,
            last_error: String::new(),
            body: wire::encode(&request),
        };
        if shared.closed.load(Ordering::Relaxed) {
            // Shutting down: no task would finish. Rare, and only at shutdown: write it here.
            let mut record = record;
            record.last_error = "submitted during shutdown".into();
            record.spooled_at_ms = SpoolRecord::now_ms();
            shared.spool(vec![record]);
            return None;
        }
        let id = shared.add_pending(record);
        self.runtime
            .spawn(shared.clone().settle(id, operation, call));
        None
    }
}

/// What [`ServicesMonitor::drain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Settlements in flight when the drain began.
    pub in_flight: usize,
    /// Of those, still undelivered at the deadline and written to the spool.
    pub spooled: usize,
    /// Of those, that could not even be spooled (logged in full).
    pub lost: usize,
}

/// What a spool replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Records delivered and removed from the spool.
    pub replayed: usize,
    /// Records that failed again and went back to the spool.
    pub failed: usize,
    /// Lines that were not records, moved to `<spool>.bad`.
    pub unreadable: usize,
    /// Another replay was running: nothing done.
    pub busy: bool,
}

/// Read-only view and housekeeping of the service layer, for the console, metrics and shutdown. Cheap to
/// clone; usable from any thread.
#[derive(Clone)]
pub struct ServicesMonitor {
    /// The service layer's state.
    shared: Arc<Shared>,
}

impl ServicesMonitor {
    /// The breakers of the HTTP services (`rtc_core breakers`).
    pub fn breakers(&self) -> Vec<BreakerStatus> {
        let now = now();
        ServiceKind::ALL
            .iter()
            .map(|&kind| (kind, self.shared.service(kind)))
            .filter(|(_, s)| s.config.backend == Backend::Http)
            .map(|(kind, s)| {
                s.breaker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .status(kind, now)
            })
            .collect()
    }

    /// Every non-zero counter.
    pub fn counters(&self) -> Vec<CounterValue> {
        self.shared.counters.snapshot()
    }

    /// Response times of the HTTP services that were asked something.
    pub fn response_times(&self) -> Vec<ResponseTime> {
        self.shared.times.snapshot()
    }

    /// One counter.
    pub fn count(&self, kind: ServiceKind, event: Event) -> u64 {
        self.shared.counters.get(kind, event)
    }

    /// Settlements being delivered right now.
    pub fn settlements_in_flight(&self) -> usize {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Source addresses in the partner cache (approximate: expiry is lazy).
    pub fn cached_partners(&self) -> u64 {
        self.shared.partners.run_pending_tasks();
        self.shared.partners.entry_count()
    }

    /// For shutdown, after the engine has stopped submitting and before the runtime is shut down: waits up
    /// to `timeout` for settlements in flight, then writes those still undelivered to the spool. From then
    /// on, decision requests fail at once and settlements are spooled directly. Blocking: call from the
    /// host's thread, never from inside the runtime.
    pub fn drain(&self, timeout: Duration) -> DrainReport {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        let in_flight = pending.len();
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            pending = match shared.pending_left.wait_timeout(pending, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let records: Vec<SpoolRecord> = pending
            .drain()
            .map(|(_, mut r)| {
                r.last_error = "still in flight at shutdown".into();
                r.spooled_at_ms = SpoolRecord::now_ms();
                r
            })
            .collect();
        drop(pending);
        let count = records.len();
        let spooled = shared.spool(records);
        DrainReport {
            in_flight,
            spooled,
            lost: count - spooled,
        }
    }

    /// Sends the spooled settlements again (those of one spool file). Delivered ones are removed; the others
    /// go back with their attempt count raised. Stops sending, and keeps the rest, as soon as a service's
    /// breaker is open.
    pub async fn replay_spool(&self) -> Result<ReplayReport, SpoolError> {
        let shared = &self.shared;
        if shared.replaying.swap(true, Ordering::AcqRel) {
            return Ok(ReplayReport {
                busy: true,
                ..ReplayReport::default()
            });
        }
        let result = self.replay_once().await;
        shared.replaying.store(false, Ordering::Release);
        result
    }

    async fn replay_once(&self) -> Result<ReplayReport, SpoolError> {
        let shared = self.shared.clone();
        let taken = tokio::task::spawn_blocking(move || shared.spool.take_for_replay())
            .await
            .map_err(|e| SpoolError {
                path: self.shared.spool.path().to_owned(),
                action: "replay task",
                source: std::io::Error::other(e),
            })??;
        let Some(mut taken) = taken else {
            return Ok(ReplayReport::default());
        };
        let mut report = ReplayReport::default();
        let mut open = [false; ServiceKind::ALL.len()];
        loop {
            report.unreadable += taken.unreadable.len();
            let mut failed = Vec::new();
            for mut record in std::mem::take(&mut taken.records) {
                let kind = record.op.service();
                let service_open = &mut open[kind_index(kind)];
                if *service_open || self.shared.service(kind).endpoint.is_none() {
                    failed.push(record);
                    continue;
                }
                let call = CallId::parse(&record.call_id).unwrap_or_default();
                match self.shared.attempt(record.op, call, &record.body).await {
                    Ok(_) => {
                        self.shared.counters.count(kind, Event::Replayed);
                        report.replayed += 1;
                    }
                    Err(e) => {
                        if matches!(e, Failure::CircuitOpen(_)) {
                            *service_open = true;
                        } else {
                            record.attempts += 1;
                            record.last_error = e.to_string();
                        }
                        failed.push(record);
                    }
                }
            }
            report.failed += failed.len();
            let shared = self.shared.clone();
            let last = taken.is_last();
            // The last chunk finishes the replay; any other reads the next one (bounded memory for any spool).
            let step = tokio::task::spawn_blocking(move || {
                if last {
                    shared.spool.finish_replay(taken, &failed).map(|()| None)
                } else {
                    shared
                        .spool
                        .next_chunk(&mut taken, &failed)
                        .map(|()| Some(taken))
                }
            })
            .await
            .map_err(|e| SpoolError {
                path: self.shared.spool.path().to_owned(),
                action: "replay task",
                source: std::io::Error::other(e),
            })??;
            match step {
                Some(next) => taken = next,
                None => break,
            }
        }
        Ok(report)
    }
}
