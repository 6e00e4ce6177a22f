//! The service layer against real HTTP services on 127.0.0.1: answers right, slow, with errors, garbage,
//! huge bodies, or never; timeouts, breakers, degradation, settlement retries and the spool.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use crossbeam_channel::{Receiver, unbounded};
use rtc_config::services::{Backend, ServiceConfig, ServicesConfig, SettlementConfig};
use rtc_engine::config::FailMode;
use rtc_engine::domain::{Cdr, Money, PartnerInfo, Rate, Reservation, Route};
use rtc_engine::service::{
    Outcome, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult, ServiceSink,
};
use rtc_engine::{CallId, HangupCause};
use rtc_services::spool::SpoolRecord;
use rtc_services::stats::Event;
use rtc_services::{
    AsyncServices, BreakerState, IoRuntime, RuntimeConfig, ServicesError, ServicesMonitor,
};

/// How the test service behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Answers right, per the contract.
    Ok,
    /// Answers right after a delay.
    Slow(Duration),
    /// Answers with this status and an error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a valid-looking body of 1 MiB (Content-Length set).
    Huge,
    /// 200 with a chunked body that never ends.
    Endless,
    /// 200 with 17 routes (one more than allowed).
    TooManyRoutes,
    /// Never answers.
    Never,
    /// Answers `{"partner": null}`.
    NoPartner,
}

/// A request the service received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
}

struct ServerState {
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

/// A test service on 127.0.0.1, on its own runtime (like a real remote service).
struct TestServer {
    base: String,
    state: Arc<ServerState>,
    _runtime: tokio::runtime::Runtime,
}

impl TestServer {
    fn start(mode: Mode) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(ServerState {
            mode: Mutex::new(mode),
            hits: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        TestServer {
            base: format!("http://{addr}"),
            state,
            _runtime: runtime,
        }
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

fn ok_answer(path: &str) -> serde_json::Value {
    use serde_json::json;
    match path {
        "/partner" => json!({"partner": {"id": 7, "name": "acme", "max_concurrent": 30}}),
        "/auth" => json!({"allowed": true}),
        "/balance/reserve" => {
            json!({"reserved": true, "reservation_id": 555, "amount": "1.000000"})
        }
        "/rating" => {
            json!({"rate": {"per_minute": "0.012000", "increment": 6, "minimum": 0, "prefix": "4420"}})
        }
        "/routing" => json!({"routes": [
            {"carrier": "a", "dial_string": "sofia/gateway/a/442071234567", "cost_per_minute": "0.005000"},
            {"carrier": "b", "dial_string": "sofia/gateway/b/442071234567", "cost_per_minute": "0.006000"}
        ]}),
        _ => json!({}),
    }
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let path = uri.path().to_owned();
    state.received.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    let mode = *state.mode.lock().unwrap();
    let json = |status: u16, value: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(value.to_string()))
            .unwrap()
    };
    match mode {
        Mode::Ok => json(200, ok_answer(&path)),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            json(200, ok_answer(&path))
        }
        Mode::Status(status) => json(status, serde_json::json!({"error": "database unavailable"})),
        Mode::Garbage => Response::new(Body::from("<html>502 Bad Gateway</html>")),
        Mode::Huge => {
            let mut text = String::from(r#"{"partner":null,"pad":""#);
            text.push_str(&"x".repeat(1 << 20));
            text.push_str("\"}");
            json_raw(text)
        }
        Mode::Endless => {
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, Infallible>(Bytes::from_static(&[b' '; 8192]))
            });
            Response::new(Body::from_stream(chunks))
        }
        Mode::TooManyRoutes => {
            let route = serde_json::json!({"carrier": "a", "dial_string": "sofia/gateway/a/1", "cost_per_minute": "0"});
            json(200, serde_json::json!({ "routes": vec![route; 17] }))
        }
        Mode::Never => std::future::pending().await,
        Mode::NoPartner => json(200, serde_json::json!({"partner": null})),
    }
}

fn json_raw(text: String) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(text))
        .unwrap()
}

/// Every service over HTTP at `base`, generous timeouts, breakers that stay out of the way.
fn config(base: &str, spool: &Path) -> ServicesConfig {
    let mut config = ServicesConfig {
        services: ServiceKind::ALL
            .iter()
            .map(|&kind| {
                let mut s = ServiceConfig::default_for(kind);
                s.backend = Backend::Http;
                s.url = Some(format!("{base}/{}", kind.name()));
                s.api_key = Some("s3cret".into());
                s.timeout = Duration::from_secs(3);
                s.breaker.min_calls = 1000;
                s
            })
            .collect(),
        settlement: SettlementConfig {
            attempts: 3,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(40),
            give_up_after: Duration::from_secs(5),
            spool_path: spool.to_owned(),
            replay_every: None,
        },
        ..ServicesConfig::default()
    };
    config.partner_cache.ttl = Duration::from_secs(60);
    config
}

fn service_mut(config: &mut ServicesConfig, kind: ServiceKind) -> &mut ServiceConfig {
    config.services.iter_mut().find(|s| s.kind == kind).unwrap()
}

/// The service layer under test, with its runtime and the engine's end of the result channel.
struct Harness {
    services: AsyncServices,
    monitor: ServicesMonitor,
    results: Receiver<ServiceResult>,
    runtime: Option<IoRuntime>,
    _dir: tempfile::TempDir,
    spool: std::path::PathBuf,
}

impl Harness {
    fn new(server: &TestServer, tune: impl FnOnce(&mut ServicesConfig)) -> Harness {
        Harness::with_local(server, tune, None)
    }

    fn with_local(
        server: &TestServer,
        tune: impl FnOnce(&mut ServicesConfig),
        local: Option<Box<dyn ServiceSink>>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool/settlements.jsonl");
        let mut config = config(&server.base, &spool);
        tune(&mut config);
        let runtime = IoRuntime::start(&RuntimeConfig::default()).unwrap();
        let (tx, results) = unbounded();
        let services =
            AsyncServices::new(&config, runtime.handle().clone(), Arc::new(tx), local).unwrap();
        let monitor = services.monitor();
        Harness {
            services,
            monitor,
            results,
            runtime: Some(runtime),
            _dir: dir,
            spool,
        }
    }

    /// Submits a decision request and waits for its answer.
    fn ask(&mut self, request: ServiceRequest) -> Outcome {
        let call = request.call();
        assert_eq!(self.services.submit(request), None);
        let result = self
            .results
            .recv_timeout(Duration::from_secs(10))
            .expect("no answer within 10 s");
        assert_eq!(result.call, call);
        result.outcome
    }

    fn count(&self, kind: ServiceKind, event: Event) -> u64 {
        self.monitor.count(kind, event)
    }

    fn spooled(&self) -> Vec<SpoolRecord> {
        match std::fs::read_to_string(&self.spool) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().handle().block_on(f)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown(Duration::from_secs(2));
        }
    }
}

fn call(n: u128) -> CallId {
    CallId::from_u128(n)
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

fn identify(n: u128, source: &str) -> ServiceRequest {
    ServiceRequest::IdentifyPartner {
        call: call(n),
        source_ip: ip(source),
    }
}

fn route(n: u128) -> ServiceRequest {
    ServiceRequest::Route {
        call: call(n),
        partner: 7,
        destination: "442071234567".into(),
    }
}

fn commit(n: u128) -> ServiceRequest {
    ServiceRequest::CommitBalance {
        call: call(n),
        partner: 7,
        reservation: Reservation {
            id: 555,
            amount: Money(1_000_000),
        },
        cost: Money(13_200),
    }
}

fn acme() -> PartnerInfo {
    PartnerInfo {
        id: 7,
        name: "acme".into(),
        max_concurrent: 30,
        max_cps: 0,
        max_call_cost: None,
        fraud: None,
    }
}

/// Waits (bounded) for a condition that an asynchronous task makes true.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_decision_maps_to_its_outcome_and_follows_the_contract() {
    let server = TestServer::start(Mode::Ok);
    let mut h = Harness::new(&server, |_| {});
    assert_eq!(
        h.ask(identify(1, "203.0.113.7")),
        Outcome::PartnerFound(acme())
    );
    assert_eq!(
        h.ask(ServiceRequest::Authenticate {
            call: call(1),
            partner: 7,
            source_ip: ip("203.0.113.7"),
            caller: "1001".into(),
            destination: "442071234567".into(),
            auth_user: "".into(),
        }),
        Outcome::AuthOk
    );
    assert_eq!(
        h.ask(ServiceRequest::ReserveBalance {
            call: call(1),
            partner: 7,
            amount: Money(1_000_000),
            context: Box::default(),
            ttl: Duration::from_secs(120),
        }),
        Outcome::BalanceReserved {
            available: None,
            reservation: Reservation {
                id: 555,
                amount: Money(1_000_000)
            }
        }
    );
    assert_eq!(
        h.ask(ServiceRequest::Rate {
            call: call(1),
            partner: 7,
            destination: "442071234567".into()
        }),
        Outcome::RateFound(Rate {
            per_minute: Money(12_000),
            connect_fee: Money::ZERO,
            increment_s: 6,
            minimum_s: 0,
            prefix_len: 4
        })
    );
    let Outcome::RoutesFound(routes) = h.ask(route(1)) else {
        panic!("no routes")
    };
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[1].carrier, "b");

    let got = server.received();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/partner",
            "/auth",
            "/balance/reserve",
            "/rating",
            "/routing"
        ]
    );
    for r in &got {
        assert_eq!(r.headers["x-api-key"], "s3cret");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body["call_id"], "00000000-0000-0000-0000-000000000001");
    }
    assert_eq!(got[0].body["source_ip"], "203.0.113.7");
    assert_eq!(got[1].body["partner_id"], 7);
    assert_eq!(got[2].body["amount"], "1.000000");
    assert_eq!(h.count(ServiceKind::Routing, Event::Ok), 1);
}

#[test]
fn settlements_are_posted_once_with_an_idempotency_key_and_yield_no_result() {
    let server = TestServer::start(Mode::Ok);
    let mut h = Harness::new(&server, |_| {});
    assert_eq!(h.services.submit(commit(2)), None);
    assert_eq!(
        h.services.submit(ServiceRequest::ReleaseBalance {
            call: call(3),
            partner: 7,
            reservation: Reservation {
                id: 9,
                amount: Money(500_000)
            },
        }),
        None
    );
    let cdr = Cdr {
        uuid: call(2),
        caller: "1001".into(),
        destination: "442071234567".into(),
        source_ip: ip("203.0.113.7"),
        partner: Some("acme".into()),
        final_state: "COMPLETED",
        reason: None,
        hangup_cause: HangupCause::NORMAL_CLEARING,
        carrier: Some("a".into()),
        rate_per_minute: Some(Money(12_000)),
        setup_us: Some(1500),
        talk_s: 61,
        billed_s: 66,
        cost: Money(13_200),
        started_at_us: 1_700_000_000_000_000,
        ended_at_us: 1_700_000_070_000_000,
    };
    assert_eq!(
        h.services.submit(ServiceRequest::WriteCdr(Box::new(cdr))),
        None
    );
    eventually("three settlements delivered", || server.hits() == 3);
    eventually("none in flight", || h.monitor.settlements_in_flight() == 0);
    let mut got = server.received();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(got[0].path, "/balance/commit");
    assert_eq!(
        got[0].headers["idempotency-key"],
        "00000000-0000-0000-0000-000000000002:commit"
    );
    assert_eq!(got[0].body["reservation_id"], 555);
    assert_eq!(got[0].body["reserved"], "1.000000");
    assert_eq!(got[0].body["cost"], "0.013200");
    assert_eq!(got[1].path, "/balance/release");
    assert_eq!(got[1].body["amount"], "0.500000");
    assert_eq!(got[2].path, "/cdr");
    assert_eq!(got[2].body["hangup_cause"], "NORMAL_CLEARING");
    assert_eq!(got[2].body["billed_s"], 66);
    assert!(h.results.try_recv().is_err(), "settlements yield no result");
    assert!(h.spooled().is_empty());
}

#[test]
fn a_service_that_never_answers_times_out_at_its_bound() {
    let server = TestServer::start(Mode::Never);
    let mut h = Harness::new(&server, |c| {
        service_mut(c, ServiceKind::Rating).timeout = Duration::from_millis(200);
    });
    let started = Instant::now();
    let outcome = h.ask(ServiceRequest::Rate {
        call: call(4),
        partner: 7,
        destination: "4420".into(),
    });
    let took = started.elapsed();
    assert_eq!(
        outcome,
        Outcome::Failed(ServiceKind::Rating, ServiceFailure::Timeout)
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(h.count(ServiceKind::Rating, Event::Timeout), 1);
}

#[test]
fn a_slow_answer_within_the_timeout_is_taken_and_a_slower_one_is_not() {
    let server = TestServer::start(Mode::Slow(Duration::from_millis(100)));
    let mut h = Harness::new(&server, |c| {
        service_mut(c, ServiceKind::Partner).timeout = Duration::from_millis(400);
    });
    assert_eq!(
        h.ask(identify(5, "203.0.113.7")),
        Outcome::PartnerFound(acme())
    );
    server.set(Mode::Slow(Duration::from_millis(800)));
    assert_eq!(
        h.ask(identify(6, "198.51.100.1")),
        Outcome::Failed(ServiceKind::Partner, ServiceFailure::Timeout)
    );
}

#[test]
fn errors_garbage_and_oversized_answers_fail_with_their_reason() {
    let server = TestServer::start(Mode::Status(500));
    let mut h = Harness::new(&server, |_| {});
    let failed = Outcome::Failed(ServiceKind::Routing, ServiceFailure::Error);
    assert_eq!(h.ask(route(10)), failed);
    assert_eq!(h.count(ServiceKind::Routing, Event::HttpStatus), 1);

    server.set(Mode::Garbage);
    assert_eq!(h.ask(route(11)), failed);
    assert_eq!(h.count(ServiceKind::Routing, Event::BadJson), 1);

    server.set(Mode::TooManyRoutes);
    assert_eq!(h.ask(route(12)), failed);
    assert_eq!(h.count(ServiceKind::Routing, Event::InvalidValue), 1);

    server.set(Mode::Huge);
    assert_eq!(h.ask(route(13)), failed);
    assert_eq!(h.count(ServiceKind::Routing, Event::BodyTooLarge), 1);

    // A body that never ends is cut at the limit, well before the 3 s timeout.
    server.set(Mode::Endless);
    let started = Instant::now();
    assert_eq!(h.ask(route(14)), failed);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(h.count(ServiceKind::Routing, Event::BodyTooLarge), 2);
    assert_eq!(h.count(ServiceKind::Routing, Event::Sent), 5);
}

#[test]
fn an_unreachable_service_fails_as_an_error() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start(Mode::Ok);
    let mut h = Harness::new(&server, |c| {
        service_mut(c, ServiceKind::Auth).url = Some(format!("http://127.0.0.1:{port}/auth"));
    });
    let outcome = h.ask(ServiceRequest::Authenticate {
        call: call(20),
        partner: 7,
        source_ip: None,
        caller: "1".into(),
        destination: "2".into(),
        auth_user: "".into(),
    });
    assert_eq!(
        outcome,
        Outcome::Failed(ServiceKind::Auth, ServiceFailure::Error)
    );
    assert_eq!(h.count(ServiceKind::Auth, Event::Connect), 1);
}

fn breaker_status(h: &Harness, kind: ServiceKind) -> rtc_services::BreakerStatus {
    h.monitor
        .breakers()
        .into_iter()
        .find(|b| b.service == kind)
        .unwrap()
}

#[test]
fn the_breaker_opens_refuses_without_sending_and_recovers_through_half_open() {
    let server = TestServer::start(Mode::Status(503));
    let mut h = Harness::new(&server, |c| {
        let b = &mut service_mut(c, ServiceKind::Rating).breaker;
        b.min_calls = 4;
        b.failure_rate_pct = 50;
        b.open_for = Duration::from_millis(300);
        b.half_open_probes = 2;
    });
    let rate = |n| ServiceRequest::Rate {
        call: call(n),
        partner: 7,
        destination: "4420".into(),
    };
    let error = Outcome::Failed(ServiceKind::Rating, ServiceFailure::Error);
    let open = Outcome::Failed(ServiceKind::Rating, ServiceFailure::CircuitOpen);
    for n in 0..4 {
        assert_eq!(h.ask(rate(n)), error);
    }
    let status = breaker_status(&h, ServiceKind::Rating);
    assert_eq!(status.state, BreakerState::Open);
    assert!(status.ends_in_ms.unwrap() <= 300);
    // Open: refused without a request.
    assert_eq!(h.ask(rate(4)), open);
    assert_eq!(server.hits(), 4);
    assert_eq!(h.count(ServiceKind::Rating, Event::CircuitOpen), 1);

    // After the open period a failing probe re-opens it.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(
        breaker_status(&h, ServiceKind::Rating).state,
        BreakerState::HalfOpen
    );
    assert_eq!(h.ask(rate(5)), error);
    assert_eq!(server.hits(), 5);
    assert_eq!(h.ask(rate(6)), open);

    // The service is back: two good probes close it.
    server.set(Mode::Ok);
    std::thread::sleep(Duration::from_millis(350));
    assert!(matches!(h.ask(rate(7)), Outcome::RateFound(_)));
    assert_eq!(
        breaker_status(&h, ServiceKind::Rating).state,
        BreakerState::HalfOpen
    );
    assert!(matches!(h.ask(rate(8)), Outcome::RateFound(_)));
    let status = breaker_status(&h, ServiceKind::Rating);
    assert_eq!(status.state, BreakerState::Closed);
    assert_eq!(status.calls_in_window, 0);
    assert!(matches!(h.ask(rate(9)), Outcome::RateFound(_)));
    assert_eq!(server.hits(), 8);
    // Other services have breakers of their own, untouched.
    assert_eq!(
        breaker_status(&h, ServiceKind::Routing).state,
        BreakerState::Closed
    );
    let json = serde_json::to_value(h.monitor.breakers()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);
}

#[test]
fn half_open_probes_are_limited_while_outstanding() {
    let server = TestServer::start(Mode::Status(500));
    let mut h = Harness::new(&server, |c| {
        let s = service_mut(c, ServiceKind::Auth);
        s.timeout = Duration::from_secs(2);
        s.breaker.min_calls = 1;
        s.breaker.failure_rate_pct = 100;
        s.breaker.open_for = Duration::from_millis(100);
        s.breaker.half_open_probes = 1;
    });
    let auth = |n| ServiceRequest::Authenticate {
        call: call(n),
        partner: 7,
        source_ip: None,
        caller: "1".into(),
        destination: "2".into(),
        auth_user: "".into(),
    };
    assert_eq!(
        h.ask(auth(1)),
        Outcome::Failed(ServiceKind::Auth, ServiceFailure::Error)
    );
    std::thread::sleep(Duration::from_millis(150));
    server.set(Mode::Slow(Duration::from_millis(600)));
    // One probe goes out and is slow; a second request meanwhile is refused.
    assert_eq!(h.services.submit(auth(2)), None);
    eventually("probe sent", || server.hits() == 2);
    assert_eq!(
        h.ask(auth(3)),
        Outcome::Failed(ServiceKind::Auth, ServiceFailure::CircuitOpen)
    );
    let probe = h.results.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(probe.call, call(2));
    assert_eq!(probe.outcome, Outcome::AuthOk);
    assert_eq!(h.ask(auth(4)), Outcome::AuthOk);
}

#[test]
fn cached_partners_are_served_while_the_partner_service_is_down() {
    let server = TestServer::start(Mode::Ok);
    let mut h = Harness::new(&server, |c| {
        service_mut(c, ServiceKind::Partner).timeout = Duration::from_millis(200);
    });
    assert_eq!(
        h.ask(identify(1, "203.0.113.7")),
        Outcome::PartnerFound(acme())
    );
    assert_eq!(h.monitor.cached_partners(), 1);

    for mode in [Mode::Status(500), Mode::Never, Mode::Garbage] {
        server.set(mode);
        assert_eq!(
            h.ask(identify(2, "203.0.113.7")),
            Outcome::PartnerFound(acme()),
            "{mode:?}"
        );
        // An address never seen before gets the failure, for the engine's fail mode.
        assert!(matches!(
            h.ask(identify(3, "198.51.100.9")),
            Outcome::Failed(ServiceKind::Partner, _)
        ));
    }
    assert_eq!(
        h.count(ServiceKind::Partner, Event::DegradedPartnerCache),
        3
    );
}

#[test]
fn a_partner_the_service_no_longer_knows_leaves_the_cache() {
    let server = TestServer::start(Mode::Ok);
    let mut h = Harness::new(&server, |_| {});
    assert_eq!(
        h.ask(identify(1, "203.0.113.7")),
        Outcome::PartnerFound(acme())
    );
    server.set(Mode::NoPartner);
    assert_eq!(h.ask(identify(2, "203.0.113.7")), Outcome::PartnerUnknown);
    server.set(Mode::Status(500));
    assert_eq!(
        h.ask(identify(3, "203.0.113.7")),
        Outcome::Failed(ServiceKind::Partner, ServiceFailure::Error)
    );
}

#[test]
fn the_partner_cache_expires_after_its_ttl() {
    let server = TestServer::start(Mode::Ok);
    let mut h = Harness::new(&server, |c| {
        c.partner_cache.ttl = Duration::from_millis(150);
    });
    assert_eq!(
        h.ask(identify(1, "203.0.113.7")),
        Outcome::PartnerFound(acme())
    );
    server.set(Mode::Status(500));
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(
        h.ask(identify(2, "203.0.113.7")),
        Outcome::Failed(ServiceKind::Partner, ServiceFailure::Error)
    );
}

fn backup_route() -> Route {
    Route {
        carrier: "backup".into(),
        dial_string: "sofia/gateway/backup/${destination}".into(),
        cost_per_minute: Money(9_000),
    }
}

#[test]
fn the_default_route_takes_over_when_fail_open_routing_fails() {
    let server = TestServer::start(Mode::Status(502));
    let mut h = Harness::new(&server, |c| {
        c.default_routes = vec![backup_route()];
        service_mut(c, ServiceKind::Routing).fail_mode = FailMode::Open;
    });
    let Outcome::RoutesFound(routes) = h.ask(route(1)) else {
        panic!("expected the default route");
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].carrier, "backup");
    assert_eq!(routes[0].dial_string, "sofia/gateway/backup/442071234567");
    assert_eq!(
        h.count(ServiceKind::Routing, Event::DegradedDefaultRoute),
        1
    );
}

#[test]
fn fail_closed_routing_gets_no_default_route() {
    let server = TestServer::start(Mode::Status(502));
    let mut h = Harness::new(&server, |c| {
        c.default_routes = vec![backup_route()];
        service_mut(c, ServiceKind::Routing).fail_mode = FailMode::Closed;
    });
    assert_eq!(
        h.ask(route(1)),
        Outcome::Failed(ServiceKind::Routing, ServiceFailure::Error)
    );
}

#[test]
fn settlements_are_retried_then_spooled_then_replayed() {
    let server = TestServer::start(Mode::Status(503));
    let mut h = Harness::new(&server, |_| {});
    assert_eq!(h.services.submit(commit(30)), None);
    eventually("spooled", || {
        h.count(ServiceKind::Balance, Event::Spooled) == 1
    });
    assert_eq!(server.hits(), 3, "three attempts");
    assert_eq!(h.count(ServiceKind::Balance, Event::SettlementRetry), 2);
    let spooled = h.spooled();
    assert_eq!(spooled.len(), 1);
    assert_eq!(spooled[0].call_id, "00000000-0000-0000-0000-00000000001e");
    assert_eq!(spooled[0].attempts, 3);
    assert!(spooled[0].last_error.contains("503"), "{:?}", spooled[0]);
    assert_eq!(spooled[0].body["cost"], "0.013200");
    assert_eq!(h.monitor.settlements_in_flight(), 0);

    // Still down: the replay keeps it, one attempt more.
    let report = h.block_on(h.monitor.replay_spool()).unwrap();
    assert_eq!((report.replayed, report.failed), (0, 1));
    assert_eq!(h.spooled()[0].attempts, 4);

    // Back up: replayed once, with the same idempotency key, and the spool is empty.
    server.set(Mode::Ok);
    let report = h.block_on(h.monitor.replay_spool()).unwrap();
    assert_eq!((report.replayed, report.failed), (1, 0));
    assert!(h.spooled().is_empty());
    let last = server.received().pop().unwrap();
    assert_eq!(last.path, "/balance/commit");
    assert_eq!(
        last.headers["idempotency-key"],
        "00000000-0000-0000-0000-00000000001e:commit"
    );
    assert_eq!(h.count(ServiceKind::Balance, Event::Replayed), 1);
    let report = h.block_on(h.monitor.replay_spool()).unwrap();
    assert_eq!(report, Default::default());
}

#[test]
fn a_settlement_refused_with_a_4xx_is_spooled_without_retrying() {
    let server = TestServer::start(Mode::Status(422));
    let mut h = Harness::new(&server, |_| {});
    assert_eq!(h.services.submit(commit(31)), None);
    eventually("spooled", || {
        h.count(ServiceKind::Balance, Event::Spooled) == 1
    });
    assert_eq!(server.hits(), 1);
    assert!(h.spooled()[0].last_error.contains("422"));
}

#[test]
fn a_settlement_that_times_out_is_retried_within_its_bound() {
    let server = TestServer::start(Mode::Never);
    let mut h = Harness::new(&server, |c| {
        service_mut(c, ServiceKind::Cdr).timeout = Duration::from_millis(100);
        c.settlement.attempts = 10;
        c.settlement.backoff_initial = Duration::from_millis(50);
        c.settlement.backoff_max = Duration::from_millis(50);
        c.settlement.give_up_after = Duration::from_millis(400);
    });
    let cdr = Cdr {
        uuid: call(32),
        caller: "1".into(),
        destination: "2".into(),
        source_ip: None,
        partner: None,
        final_state: "REJECTED",
        reason: Some("no_route"),
        hangup_cause: HangupCause::NO_ROUTE_DESTINATION,
        carrier: None,
        rate_per_minute: None,
        setup_us: None,
        talk_s: 0,
        billed_s: 0,
        cost: Money::ZERO,
        started_at_us: 0,
        ended_at_us: 0,
    };
    let started = Instant::now();
    assert_eq!(
        h.services.submit(ServiceRequest::WriteCdr(Box::new(cdr))),
        None
    );
    eventually("spooled", || h.count(ServiceKind::Cdr, Event::Spooled) == 1);
    // Attempts of 100 ms spaced by 50 ms; no retry starts past 400 ms: 3 attempts, not 10.
    assert!(started.elapsed() < Duration::from_secs(2));
    let hits = server.hits();
    assert!((2..=4).contains(&hits), "{hits}");
    assert_eq!(h.spooled()[0].op.name(), "cdr");
}

#[test]
fn drain_spools_settlements_still_in_flight_and_any_submitted_after() {
    let server = TestServer::start(Mode::Never);
    let mut h = Harness::new(&server, |c| {
        service_mut(c, ServiceKind::Balance).timeout = Duration::from_secs(30);
    });
    assert_eq!(h.services.submit(commit(40)), None);
    eventually("sent", || server.hits() == 1);
    let started = Instant::now();
    let report = h.monitor.drain(Duration::from_millis(100));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(report.in_flight, 1);
    assert_eq!(report.spooled, 1);
    assert_eq!(h.spooled().len(), 1);
    assert_eq!(h.spooled()[0].last_error, "still in flight at shutdown");

    // After the drain: settlements go straight to the spool, decisions fail at once.
    assert_eq!(h.services.submit(commit(41)), None);
    assert_eq!(h.spooled().len(), 2);
    assert_eq!(
        h.services.submit(route(42)),
        Some(ServiceResult {
            call: call(42),
            outcome: Outcome::Failed(ServiceKind::Routing, ServiceFailure::Error)
        })
    );
    // The runtime stops in time even with a request hanging.
    let rt = h.runtime.take().unwrap();
    assert!(rt.shutdown(Duration::from_secs(2)));
    // The cancelled task did not spool it a second time.
    assert_eq!(h.spooled().len(), 2);
}

/// A stand-in for the local backends: answers auth at once and records what it saw.
struct FakeLocal {
    seen: Arc<Mutex<Vec<ServiceRequest>>>,
}

impl ServiceSink for FakeLocal {
    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
        let call = request.call();
        self.seen.lock().unwrap().push(request);
        Some(ServiceResult {
            call,
            outcome: Outcome::AuthOk,
        })
    }
}

#[test]
fn local_kinds_are_answered_at_once_by_the_local_backends() {
    let server = TestServer::start(Mode::Ok);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let local = FakeLocal { seen: seen.clone() };
    let mut h = Harness::with_local(
        &server,
        |c| service_mut(c, ServiceKind::Auth).backend = Backend::Local,
        Some(Box::new(local)),
    );
    let auth = ServiceRequest::Authenticate {
        call: call(50),
        partner: 7,
        source_ip: None,
        caller: "1".into(),
        destination: "2".into(),
        auth_user: "".into(),
    };
    assert_eq!(
        h.services.submit(auth.clone()),
        Some(ServiceResult {
            call: call(50),
            outcome: Outcome::AuthOk
        })
    );
    assert_eq!(seen.lock().unwrap().as_slice(), [auth]);
    assert_eq!(server.hits(), 0);
    assert_eq!(h.count(ServiceKind::Auth, Event::Local), 1);
    // HTTP kinds still go to the service.
    assert_eq!(
        h.ask(identify(51, "203.0.113.7")),
        Outcome::PartnerFound(acme())
    );
    // Only HTTP services have breakers to show.
    assert!(
        h.monitor
            .breakers()
            .iter()
            .all(|b| b.service != ServiceKind::Auth)
    );
}

#[test]
fn configuration_mistakes_are_refused_with_a_clear_message() {
    let rt = IoRuntime::start(&RuntimeConfig::default()).unwrap();
    let (tx, _rx) = unbounded::<ServiceResult>();
    let tx = Arc::new(tx);
    let dir = tempfile::tempdir().unwrap();
    let base = config("http://127.0.0.1:9", &dir.path().join("s"));
    let make = |c: &ServicesConfig, local: Option<Box<dyn ServiceSink>>| {
        AsyncServices::new(c, rt.handle().clone(), tx.clone(), local).err()
    };

    let mut c = base.clone();
    service_mut(&mut c, ServiceKind::Rating).url = None;
    let err = make(&c, None).unwrap();
    assert!(matches!(err, ServicesError::MissingUrl { .. }));
    assert!(err.to_string().contains("Rating service"), "{err}");

    let mut c = base.clone();
    service_mut(&mut c, ServiceKind::Rating).url = Some("ftp://x/rate".into());
    assert!(make(&c, None).unwrap().to_string().contains("ftp"));

    let mut c = base.clone();
    service_mut(&mut c, ServiceKind::Rating).api_key = Some("bad\nkey".into());
    assert!(make(&c, None).unwrap().to_string().contains("api key"));

    let mut c = base.clone();
    service_mut(&mut c, ServiceKind::Cdr).backend = Backend::Local;
    assert!(matches!(
        make(&c, None).unwrap(),
        ServicesError::NoLocalBackend { .. }
    ));

    let mut c = base.clone();
    c.default_routes = vec![Route {
        carrier: "x".into(),
        dial_string: "sofia/gateway/x/1|sofia/gateway/y/1".into(),
        cost_per_minute: Money::ZERO,
    }];
    let err = make(&c, None).unwrap().to_string();
    assert!(err.contains("default route 0 (x)"), "{err}");

    let mut c = base.clone();
    c.http.extra_ca_file = Some(dir.path().join("missing.pem"));
    let err = make(&c, None).unwrap().to_string();
    assert!(err.contains("missing.pem"), "{err}");

    assert!(make(&base, None).is_none());
    rt.shutdown(Duration::from_secs(2));
}

#[test]
fn many_concurrent_requests_share_the_pool() {
    let server = TestServer::start(Mode::Slow(Duration::from_millis(20)));
    let mut h = Harness::new(&server, |_| {});
    let n = 200u128;
    let started = Instant::now();
    for i in 0..n {
        assert_eq!(h.services.submit(identify(1000 + i, "203.0.113.7")), None);
    }
    for _ in 0..n {
        let r = h.results.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(r.outcome, Outcome::PartnerFound(acme()));
    }
    // 200 requests of 20 ms each, answered concurrently.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.count(ServiceKind::Partner, Event::Ok), 200);
}
