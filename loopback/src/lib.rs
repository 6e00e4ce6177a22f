//! Loopback business services: the HTTP contract of `docs/services.md` served on `127.0.0.1` from inside the
//! process, answered by the embedded local backends, with faults injected on demand.
//!
//! It exists so that benches (`rtc-core bench setup --backend http`), simulations (`rtc-core simulate
//! --backend http`) and tests drive the real HTTP path — client pool, timeouts, breakers, degradation,
//! settlements — without any service outside the machine, and can take a service down partway through a run.
//!
//! # Why a crate of its own
//! The server needs axum; the module (`mod_rtc_core.so`) must not link a web server it never uses. Kept out
//! of the engine crate (rather than behind an engine feature), it cannot reach the module's build even when
//! cargo unifies features across the workspace.
//!
//! # Layout
//! - [`Loopback`]: the server on its own small runtime (`rtc-loopback` threads), apart from the engine's
//!   `rtc-io` runtime, as a real service would be apart from the module.
//! - [`Fault`]: per service, an added delay, a share of injected `500` errors, and an outage (`503`).
//! - The wire side of the contract as a service sees it: request bodies decoded back into
//!   [`ServiceRequest`]s, [`Outcome`]s encoded as answers. The engine's own encoder and decoder are the other
//!   side; each checks the other in every run.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use compact_str::CompactString;
use rtc_config::RtcConfig;
use rtc_config::services::Backend;
use rtc_engine::HangupCause;
use rtc_engine::domain::{Cdr, Money, PartnerId, Reservation};
use rtc_engine::id::CallId;
use rtc_engine::reason::Reason;
use rtc_engine::service::ResultSink;
use rtc_engine::service::{Outcome, ServiceKind, ServiceRequest, ServiceResult, ServiceSink};
use rtc_services::local::LocalServices;
use rtc_services::wire::Operation;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Name of the server's threads.
pub const THREAD_NAME: &str = "rtc-loopback";

/// Most idempotency keys remembered; past it the set starts over (a loopback run, not a ledger).
const MAX_KEYS: usize = 1_000_000;

/// What goes wrong with one service, on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fault {
    /// Added before every answer (a slow service; beyond the service's timeout, a hanging one).
    pub delay: Duration,
    /// Share of requests answered `500` (0.0 to 1.0).
    pub error_rate: f64,
    /// Every request answered `503`: the service is down.
    pub outage: bool,
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct LoopbackOptions {
    /// Worker threads of the server's runtime.
    pub threads: usize,
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        LoopbackOptions { threads: 1 }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("loopback services: cannot start their runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("loopback services: cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
}

/// Counters of one service.
#[derive(Debug, Default)]
struct Counters {
    /// Requests received.
    requests: AtomicU64,
    /// Answered `500` by the error rate.
    injected_errors: AtomicU64,
    /// Answered `503` by an outage.
    outage_refusals: AtomicU64,
    /// Refused `400`: the body did not follow the contract.
    bad_requests: AtomicU64,
    /// Settlements answered without applying them again (a repeated idempotency key).
    repeats: AtomicU64,
}

/// What one service has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceCounts {
    /// Requests received.
    pub requests: u64,
    /// Answered `500` by the error rate.
    pub injected_errors: u64,
    /// Answered `503` by an outage.
    pub outage_refusals: u64,
    /// Refused `400`: the body did not follow the contract.
    pub bad_requests: u64,
    /// Settlements answered without applying them again (a repeated idempotency key).
    pub repeats: u64,
}

/// The server's state, shared by its handlers and the [`Loopback`] handle.
struct Shared {
    /// The backends answering every request; one lock, held only while a request is applied.
    local: Mutex<LocalServices>,
    /// Faults per service, indexed like [`ServiceKind::ALL`].
    faults: Mutex<[Fault; 6]>,
    /// Counters per service, indexed like [`ServiceKind::ALL`].
    counters: [Counters; 6],
    /// Idempotency keys of the settlements applied, so that a repeat is answered without applying it twice.
    applied: Mutex<HashSet<String>>,
    /// Requests waiting for the ledger's answer (reservations, extensions), by call.
    waiting: Arc<Waiting>,
}

/// The local backends answer balance requests once the ledger has them on disk, on the ledger's thread: each
/// waiting handler is told here.
#[derive(Default)]
struct Waiting(Mutex<std::collections::HashMap<CallId, oneshot::Sender<ServiceResult>>>);

impl ResultSink for Waiting {
    fn deliver(&self, result: ServiceResult) {
        let waiter = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&result.call);
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }
}

/// How long a request waits for the ledger's answer.
const LEDGER_WAIT: Duration = Duration::from_secs(10);

fn index(kind: ServiceKind) -> usize {
    ServiceKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

/// The running loopback services. Dropping it stops them.
pub struct Loopback {
    /// Where it listens.
    addr: SocketAddr,
    /// State shared with the handlers.
    shared: Arc<Shared>,
    /// The server's own runtime; `None` once stopped.
    runtime: Option<Runtime>,
    /// Tells the server to stop accepting and finish.
    stop: Option<oneshot::Sender<()>>,
}

impl Loopback {
    /// Starts the services on `127.0.0.1:<free port>`, answered by `local`.
    pub fn start(
        local: LocalServices,
        options: LoopbackOptions,
    ) -> Result<Loopback, LoopbackError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .max_blocking_threads(1)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .map_err(LoopbackError::Runtime)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .map_err(LoopbackError::Listen)?;
        let addr = listener.local_addr().map_err(LoopbackError::Listen)?;
        let waiting = Arc::new(Waiting::default());
        local.answer_to(waiting.clone());
        let shared = Arc::new(Shared {
            local: Mutex::new(local),
            faults: Mutex::new([Fault::default(); 6]),
            counters: Default::default(),
            applied: Mutex::new(HashSet::new()),
            waiting,
        });
        let app = Router::new()
            .route("/partner", axum::routing::post(partner))
            .route("/auth", axum::routing::post(auth))
            .route("/balance/reserve", axum::routing::post(reserve))
            .route("/balance/extend", axum::routing::post(extend))
            .route("/balance/commit", axum::routing::post(commit))
            .route("/balance/release", axum::routing::post(release))
            .route("/rating", axum::routing::post(rating))
            .route("/routing", axum::routing::post(routing))
            .route("/cdr", axum::routing::post(cdr))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = listener.tap_io(|tcp| {
            // Small request/answer exchanges: no Nagle delay.
            let _ = tcp.set_nodelay(true);
        });
        runtime.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                log::error!("loopback services stopped: {e}");
            }
        });
        Ok(Loopback {
            addr,
            shared,
            runtime: Some(runtime),
            stop: Some(stop),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of one service, as configured in `<service url=".."/>` (the balance service's operations
    /// are under it: `/balance/reserve`...).
    pub fn url(&self, kind: ServiceKind) -> String {
        format!("http://{}/{}", self.addr, kind.name())
    }

    /// Points `kinds` of `config` at these services (`backend="http"` with their URL).
    pub fn configure(&self, config: &mut RtcConfig, kinds: &[ServiceKind]) {
        for service in config.services.iter_mut() {
            if kinds.contains(&service.kind) {
                service.backend = Backend::Http;
                service.url = Some(self.url(service.kind));
            }
        }
    }

    /// Sets the fault of one service, from now on (requests already waiting keep theirs).
    pub fn set_fault(&self, kind: ServiceKind, fault: Fault) {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())[index(kind)] = fault;
    }

    /// The fault of one service.
    pub fn fault(&self, kind: ServiceKind) -> Fault {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())[index(kind)]
    }

    /// Takes a service down (every request answered `503`) or brings it back.
    pub fn set_outage(&self, kind: ServiceKind, outage: bool) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults[index(kind)].outage = outage;
    }

    /// What one service has seen.
    pub fn counts(&self, kind: ServiceKind) -> ServiceCounts {
        let c = &self.shared.counters[index(kind)];
        ServiceCounts {
            requests: c.requests.load(Ordering::Relaxed),
            injected_errors: c.injected_errors.load(Ordering::Relaxed),
            outage_refusals: c.outage_refusals.load(Ordering::Relaxed),
            bad_requests: c.bad_requests.load(Ordering::Relaxed),
            repeats: c.repeats.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` on the backends (balances, CDRs written, counters), between requests.
    pub fn with_local<T>(&self, f: impl FnOnce(&mut LocalServices) -> T) -> T {
        f(&mut self.shared.local.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stops accepting, lets open exchanges finish for up to a second, and ends the server's threads.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.shut_down();
    }
}

// ---- handlers -----------------------------------------------------------------------------------

async fn partner(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::IdentifyPartner, &headers, &body).await
}

async fn auth(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Authenticate, &headers, &body).await
}

async fn reserve(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Reserve, &headers, &body).await
}

async fn extend(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Extend, &headers, &body).await
}

async fn commit(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Commit, &headers, &body).await
}

async fn release(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Release, &headers, &body).await
}

async fn rating(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Rate, &headers, &body).await
}

async fn routing(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Route, &headers, &body).await
}

async fn cdr(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, Operation::Cdr, &headers, &body).await
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, text: &str) -> Response {
    json_answer(status, json!({ "error": text }))
}

/// One request: faults first, then the contract, then the backends.
async fn handle(shared: &Shared, op: Operation, headers: &HeaderMap, body: &[u8]) -> Response {
    let kind = op.service();
    let counters = &shared.counters[index(kind)];
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let fault = shared.faults.lock().unwrap_or_else(|p| p.into_inner())[index(kind)];
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    if fault.outage {
        counters.outage_refusals.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable (loopback outage)",
        );
    }
    if fault.error_rate > 0.0 && fastrand::f64() < fault.error_rate {
        counters.injected_errors.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected error (loopback error rate)",
        );
    }
    let request = match decode_request(op, body) {
        Ok(r) => r,
        Err(e) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            log::warn!("loopback {op}: refused a request: {e}");
            return error(StatusCode::BAD_REQUEST, &e);
        }
    };
    if op.is_settlement()
        && let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok())
    {
        let mut applied = shared.applied.lock().unwrap_or_else(|p| p.into_inner());
        if applied.len() >= MAX_KEYS {
            applied.clear();
        }
        if !applied.insert(key.to_owned()) {
            counters.repeats.fetch_add(1, Ordering::Relaxed);
            return json_answer(StatusCode::OK, json!({ "ok": true, "repeat": true }));
        }
    }
    let destination = match &request {
        ServiceRequest::Rate { destination, .. } => destination.clone(),
        _ => CompactString::default(),
    };
    let call = request.call();
    let answered_later = matches!(
        request,
        ServiceRequest::ReserveBalance { .. } | ServiceRequest::ExtendBalance { .. }
    );
    let (tx, rx) = oneshot::channel();
    if answered_later {
        shared
            .waiting
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call, tx);
    }
    let result = shared
        .local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .submit(request);
    let result = match result {
        None if answered_later => match tokio::time::timeout(LEDGER_WAIT, rx).await {
            Ok(Ok(result)) => Some(result),
            _ => {
                shared
                    .waiting
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&call);
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the ledger did not answer in time",
                );
            }
        },
        other => other,
    };
    match result {
        None => json_answer(StatusCode::OK, json!({ "ok": true })),
        Some(result) => match encode_answer(&destination, result.outcome) {
            Some(answer) => json_answer(StatusCode::OK, answer),
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the local backend could not answer",
            ),
        },
    }
}

// ---- the contract, as a service reads and writes it -----------------------------------------------

#[derive(Deserialize)]
struct PartnerRequest {
    call_id: String,
    source_ip: Option<IpAddr>,
}

#[derive(Deserialize)]
struct AuthRequest {
    call_id: String,
    partner_id: PartnerId,
    source_ip: Option<IpAddr>,
    caller: String,
    destination: String,
    auth_user: String,
}

#[derive(Deserialize)]
struct ReserveRequest {
    call_id: String,
    partner_id: PartnerId,
    amount: String,
    /// Optional in the contract: the reservation's life (default an hour).
    #[serde(default)]
    expires_in_s: Option<u64>,
}

#[derive(Deserialize)]
struct ExtendRequest {
    call_id: String,
    partner_id: PartnerId,
    reservation_id: u64,
    reserved: String,
    debit: String,
    unit: String,
    paid_s: u32,
    #[serde(default)]
    expires_in_s: Option<u64>,
}

/// A reservation's life when the request does not say.
const DEFAULT_TTL_S: u64 = 3600;

#[derive(Deserialize)]
struct CommitRequest {
    call_id: String,
    partner_id: PartnerId,
    reservation_id: u64,
    reserved: String,
    cost: String,
}

#[derive(Deserialize)]
struct ReleaseRequest {
    call_id: String,
    partner_id: PartnerId,
    reservation_id: u64,
    amount: String,
}

#[derive(Deserialize)]
struct DestinationRequest {
    call_id: String,
    partner_id: PartnerId,
    destination: String,
}

#[derive(Deserialize)]
struct CdrRequest {
    call_id: String,
    caller: String,
    destination: String,
    source_ip: Option<IpAddr>,
    partner: Option<String>,
    final_state: String,
    reason: Option<String>,
    hangup_cause_code: u16,
    carrier: Option<String>,
    rate_per_minute: Option<String>,
    setup_us: Option<u64>,
    talk_s: u64,
    billed_s: u64,
    cost: String,
    started_at_us: u64,
    ended_at_us: u64,
}

fn call_id(text: &str) -> Result<CallId, String> {
    CallId::parse(text).map_err(|_| format!("call_id: {text:?} is not a channel UUID"))
}

fn money(field: &str, text: &str) -> Result<Money, String> {
    Money::parse(text).ok_or_else(|| format!("{field}: {text:?} is not a decimal amount"))
}

/// A request body back into the request the engine made.
pub fn decode_request(op: Operation, body: &[u8]) -> Result<ServiceRequest, String> {
    let bad = |e: serde_json::Error| format!("body is not the {op} request of the contract: {e}");
    Ok(match op {
        Operation::IdentifyPartner => {
            let r: PartnerRequest = serde_json::from_slice(body).map_err(bad)?;
            ServiceRequest::IdentifyPartner {
                call: call_id(&r.call_id)?,
                source_ip: r.source_ip,
            }
        }
        Operation::Authenticate => {
            let r: AuthRequest = serde_json::from_slice(body).map_err(bad)?;
            ServiceRequest::Authenticate {
                call: call_id(&r.call_id)?,
                partner: r.partner_id,
                source_ip: r.source_ip,
                caller: r.caller.into(),
                destination: r.destination.into(),
                auth_user: r.auth_user.into(),
            }
        }
        Operation::Reserve => {
            let r: ReserveRequest = serde_json::from_slice(body).map_err(bad)?;
            ServiceRequest::ReserveBalance {
                call: call_id(&r.call_id)?,
                partner: r.partner_id,
                amount: money("amount", &r.amount)?,
                context: Box::default(),
                ttl: Duration::from_secs(r.expires_in_s.unwrap_or(DEFAULT_TTL_S)),
            }
        }
        Operation::Extend => {
            let r: ExtendRequest = serde_json::from_slice(body).map_err(bad)?;
            ServiceRequest::ExtendBalance {
                call: call_id(&r.call_id)?,
                partner: r.partner_id,
                reservation: Reservation {
                    id: r.reservation_id,
                    amount: money("reserved", &r.reserved)?,
                },
                debit: money("debit", &r.debit)?,
                unit: money("unit", &r.unit)?,
                paid_s: r.paid_s,
                context: Box::default(),
                ttl: Duration::from_secs(r.expires_in_s.unwrap_or(DEFAULT_TTL_S)),
            }
        }
        Operation::Commit => {
            let r: CommitRequest = serde_json::from_slice(body).map_err(bad)?;
            ServiceRequest::CommitBalance {
                call: call_id(&r.call_id)?,
                partner: r.partner_id,
                reservation: Reservation {
                    id: r.reservation_id,
                    amount: money("reserved", &r.reserved)?,
                },
                cost: money("cost", &r.cost)?,
            }
        }
        Operation::Release => {
            let r: ReleaseRequest = serde_json::from_slice(body).map_err(bad)?;
            ServiceRequest::ReleaseBalance {
                call: call_id(&r.call_id)?,
                partner: r.partner_id,
                reservation: Reservation {
                    id: r.reservation_id,
                    amount: money("amount", &r.amount)?,
                },
            }
        }
        Operation::Rate | Operation::Route => {
            let r: DestinationRequest = serde_json::from_slice(body).map_err(bad)?;
            let (call, partner, destination) =
                (call_id(&r.call_id)?, r.partner_id, r.destination.into());
            if op == Operation::Rate {
                ServiceRequest::Rate {
                    call,
                    partner,
                    destination,
                }
            } else {
                ServiceRequest::Route {
                    call,
                    partner,
                    destination,
                }
            }
        }
        Operation::Cdr => {
            let r: CdrRequest = serde_json::from_slice(body).map_err(bad)?;
            let final_state = match r.final_state.as_str() {
                "COMPLETED" => "COMPLETED",
                "REJECTED" => "REJECTED",
                "FAILED" => "FAILED",
                other => return Err(format!("final_state: {other:?} is not a final state")),
            };
            let reason = match r.reason.as_deref() {
                None => None,
                Some(name) => Some(
                    Reason::from_name(name)
                        .ok_or_else(|| format!("reason: {name:?} is not a refusal reason"))?
                        .name(),
                ),
            };
            let rate_per_minute = match r.rate_per_minute.as_deref() {
                None => None,
                Some(text) => Some(money("rate_per_minute", text)?),
            };
            ServiceRequest::WriteCdr(Box::new(Cdr {
                uuid: call_id(&r.call_id)?,
                caller: r.caller.into(),
                destination: r.destination.into(),
                source_ip: r.source_ip,
                partner: r.partner.map(Into::into),
                final_state,
                reason,
                hangup_cause: HangupCause(r.hangup_cause_code),
                carrier: r.carrier.map(Into::into),
                rate_per_minute,
                setup_us: r.setup_us,
                talk_s: r.talk_s,
                billed_s: r.billed_s,
                cost: money("cost", &r.cost)?,
                started_at_us: r.started_at_us,
                ended_at_us: r.ended_at_us,
            }))
        }
    })
}

/// An outcome as the service answers it; `None` for a failure (answered `500`). `destination` is the rated
/// destination, whose first digits are the matched prefix.
pub fn encode_answer(destination: &str, outcome: Outcome) -> Option<Value> {
    Some(match outcome {
        Outcome::PartnerFound(p) => json!({
            "partner": {
                "id": p.id,
                "name": p.name.as_str(),
                "max_concurrent": p.max_concurrent,
                "max_cps": p.max_cps,
                "max_call_cost": p.max_call_cost.map(|m| m.to_string()),
            }
        }),
        Outcome::PartnerUnknown => json!({ "partner": null }),
        Outcome::AuthOk => json!({ "allowed": true }),
        Outcome::AuthDenied => json!({ "allowed": false, "reason": "denied by the partner table" }),
        Outcome::BalanceReserved {
            reservation: r,
            available,
        } => json!({
            "reserved": true, "reservation_id": r.id, "amount": r.amount.to_string(),
            "available": available.map(|a| a.to_string()),
        }),
        Outcome::BalanceExtended { granted, available } => json!({
            "extended": true, "granted": granted.to_string(), "available": available.map(|a| a.to_string()),
        }),
        Outcome::BalanceInsufficient => json!({ "reserved": false, "extended": false }),
        // Not held: the service's wire has no limit answer, so the caller sees a refusal (with why, for logs).
        Outcome::LimitReached { limit, max } => {
            json!({ "reserved": false, "refused_by": limit, "limit": max })
        }
        Outcome::RateFound(rate) => {
            let digits = destination.strip_prefix('+').unwrap_or(destination);
            let prefix: String = digits.chars().take(usize::from(rate.prefix_len)).collect();
            json!({ "rate": {
                "per_minute": rate.per_minute.to_string(),
                "increment": rate.increment_s,
                "minimum": rate.minimum_s,
                "prefix": prefix,
                "connect_fee": rate.connect_fee.to_string(),
            }})
        }
        Outcome::RateNone => json!({ "rate": null }),
        Outcome::RoutesFound(routes) => json!({
            "routes": routes.iter().map(|r| json!({
                "carrier": r.carrier.as_str(),
                "dial_string": r.dial_string.as_str(),
                "cost_per_minute": r.cost_per_minute.to_string(),
            })).collect::<Vec<_>>()
        }),
        Outcome::RoutesNone => json!({ "routes": [] }),
        Outcome::Failed(..) => return None,
    })
}
