//! The loopback services against the engine's side of the contract, and a host driven through them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_engine::HangupCause;
use rtc_engine::control::CallCommand;
use rtc_engine::domain::{Cdr, Money, PartnerInfo, Rate, Reservation, Route};
use rtc_engine::event::{CallEvent, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::service::{Outcome, ServiceKind, ServiceRequest};
use rtc_engine::testkit::RecordingControl;
use rtc_host::Host;
use rtc_ledger::{Answer, Op};
use rtc_loopback::{Fault, Loopback, LoopbackOptions, decode_request, encode_answer};
use rtc_services::local::LocalServices;
use rtc_services::stats::Event;
use rtc_services::wire::{self, Operation};

fn id(n: u128) -> CallId {
    CallId::from_u128(0x1000 + n)
}

#[test]
fn every_request_the_engine_encodes_decodes_to_itself() {
    let reservation = Reservation {
        id: 77,
        amount: Money(1_500_000),
    };
    let requests = vec![
        ServiceRequest::IdentifyPartner {
            call: id(1),
            source_ip: Some("2001:db8::7".parse().unwrap()),
        },
        ServiceRequest::IdentifyPartner {
            call: id(1),
            source_ip: None,
        },
        ServiceRequest::Authenticate {
            call: id(2),
            partner: 3,
            source_ip: Some("192.0.2.1".parse().unwrap()),
            caller: "+441632960001".into(),
            destination: "442071234567".into(),
            auth_user: "alice".into(),
        },
        ServiceRequest::ReserveBalance {
            call: id(3),
            partner: 3,
            amount: Money(1_000_000),
            context: Box::default(),
            ttl: Duration::from_secs(600),
        },
        ServiceRequest::CommitBalance {
            call: id(4),
            partner: 3,
            reservation,
            cost: Money(13_200),
        },
        ServiceRequest::ReleaseBalance {
            call: id(5),
            partner: 3,
            reservation,
        },
        ServiceRequest::ExtendBalance {
            call: id(9),
            partner: 3,
            reservation,
            debit: Money(12_000),
            unit: Money(1_200),
            paid_s: 60,
            context: Box::default(),
            ttl: Duration::from_secs(180),
        },
        ServiceRequest::Rate {
            call: id(6),
            partner: 0,
            destination: "4420".into(),
        },
        ServiceRequest::Route {
            call: id(7),
            partner: 0,
            destination: "4420".into(),
        },
        ServiceRequest::WriteCdr(Box::new(Cdr {
            uuid: id(8),
            caller: "100".into(),
            destination: "4420".into(),
            source_ip: None,
            partner: Some("acme".into()),
            final_state: "REJECTED",
            reason: Some("no_route"),
            hangup_cause: HangupCause::NO_ROUTE_DESTINATION,
            carrier: None,
            rate_per_minute: Some(Money(12_000)),
            setup_us: Some(900),
            talk_s: 0,
            billed_s: 0,
            cost: Money::ZERO,
            started_at_us: 1,
            ended_at_us: 2,
        })),
    ];
    for request in requests {
        let op = Operation::of(&request);
        let body = serde_json::to_vec(&wire::encode(&request)).unwrap();
        assert_eq!(decode_request(op, &body).unwrap(), request, "{op}");
    }
    let e = decode_request(
        Operation::Reserve,
        br#"{"call_id":"x","partner_id":1,"amount":"1"}"#,
    )
    .unwrap_err();
    assert!(e.contains("call_id"), "{e}");
    let e = decode_request(Operation::Route, br#"{"call_id":"x"}"#).unwrap_err();
    assert!(e.contains("missing field"), "{e}");
}

#[test]
fn every_answer_the_loopback_writes_the_engine_reads_back() {
    let routes: Vec<Route> = vec![Route {
        carrier: "carrier_a".into(),
        dial_string: "{absolute_codec_string=PCMU,PCMA}sofia/gateway/a/4420".into(),
        cost_per_minute: Money(4_000),
    }];
    let cases = [
        (
            Operation::IdentifyPartner,
            Outcome::PartnerFound(PartnerInfo {
                id: 4,
                name: "acme".into(),
                max_concurrent: 200,
                max_cps: 0,
                max_call_cost: None,
                fraud: None,
            }),
        ),
        (Operation::IdentifyPartner, Outcome::PartnerUnknown),
        (Operation::Authenticate, Outcome::AuthOk),
        (Operation::Authenticate, Outcome::AuthDenied),
        (
            Operation::Reserve,
            Outcome::BalanceReserved {
                available: None,
                reservation: Reservation {
                    id: 9,
                    amount: Money(1_000_000),
                },
            },
        ),
        (Operation::Reserve, Outcome::BalanceInsufficient),
        (
            Operation::IdentifyPartner,
            Outcome::PartnerFound(PartnerInfo {
                id: 5,
                name: "capped".into(),
                max_concurrent: 0,
                max_cps: 3,
                max_call_cost: Some(Money(25_000_000)),
                fraud: None,
            }),
        ),
        (
            Operation::Reserve,
            Outcome::BalanceReserved {
                available: Some(Money(-2_500_000)),
                reservation: Reservation {
                    id: 10,
                    amount: Money(1_000_000),
                },
            },
        ),
        (
            Operation::Extend,
            Outcome::BalanceExtended {
                granted: Money(7_200),
                available: Some(Money(0)),
            },
        ),
        (Operation::Extend, Outcome::BalanceInsufficient),
        (
            Operation::Rate,
            Outcome::RateFound(Rate {
                per_minute: Money(25_000),
                connect_fee: Money(50_000),
                increment_s: 60,
                minimum_s: 60,
                prefix_len: 2,
            }),
        ),
        (
            Operation::Rate,
            Outcome::RateFound(Rate {
                per_minute: Money(12_000),
                connect_fee: Money::ZERO,
                increment_s: 6,
                minimum_s: 0,
                prefix_len: 4,
            }),
        ),
        (Operation::Rate, Outcome::RateNone),
        (Operation::Route, Outcome::RoutesFound(routes.into())),
        (Operation::Route, Outcome::RoutesNone),
    ];
    for (op, outcome) in cases {
        let answer = encode_answer("442079460000", outcome.clone()).unwrap();
        let body = serde_json::to_vec(&answer).unwrap();
        let read = wire::decode(op, id(1), &body).unwrap().unwrap();
        assert_eq!(read, outcome, "{op}: {answer}");
    }
    assert_eq!(
        encode_answer(
            "1",
            Outcome::Failed(
                ServiceKind::Rating,
                rtc_engine::service::ServiceFailure::Error
            )
        ),
        None
    );
}

/// Waits for the first command of `call`.
fn decision(control: &RecordingControl, call: CallId) -> CallCommand {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = control
            .commands
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.call() == call)
        {
            return c.clone();
        }
        assert!(Instant::now() < deadline, "no decision for {call}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn var<'a>(command: &'a CallCommand, name: &str) -> Option<&'a str> {
    match command {
        CallCommand::SetVariables { vars, .. } => vars
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str()),
        _ => None,
    }
}

fn create(host: &Host, call: CallId, ip: [u8; 4]) {
    let mut ev = CallEvent::new(call, EventKind::ChannelCreate, 1);
    ev.source_ip = Some(IpAddr::from(ip));
    ev.destination = "442079460000".into();
    host.engine().submit_event(ev).unwrap();
}

#[test]
fn a_host_decides_calls_over_loopback_http_and_rides_out_a_partner_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RtcConfig::default();
    let loopback = Loopback::start(
        LocalServices::load(&config.local).unwrap(),
        LoopbackOptions::default(),
    )
    .unwrap();
    loopback.configure(&mut config, &ServiceKind::ALL);
    config.settlement.spool_path = dir.path().join("spool.jsonl");
    // The engine loads no tables of its own: every service is HTTP.
    config.local.rates = "/nonexistent".into();
    let partner = &mut config.services[0];
    partner.breaker.min_calls = 3;
    partner.breaker.open_for = Duration::from_millis(100);
    partner.breaker.half_open_probes = 1;
    let control = RecordingControl::default();
    let host = Host::start(&config, Box::new(control.clone())).unwrap();
    let monitor = host.monitor().unwrap().clone();
    assert_eq!(monitor.breakers().len(), 6);

    // Normal service: routed over HTTP.
    create(&host, id(1), [127, 0, 0, 1]);
    let first = decision(&control, id(1));
    assert_eq!(var(&first, "rtc_partner"), Some("lab"), "{first:?}");
    assert!(var(&first, "rtc_route").is_some(), "{first:?}");
    for kind in [
        ServiceKind::Partner,
        ServiceKind::Auth,
        ServiceKind::Balance,
        ServiceKind::Rating,
        ServiceKind::Routing,
    ] {
        assert_eq!(loopback.counts(kind).requests, 1, "{kind:?}");
    }

    // The partner service goes down: the cached partner is served, the unknown address is refused.
    loopback.set_outage(ServiceKind::Partner, true);
    for n in 2..8 {
        create(&host, id(n), [127, 0, 0, 1]);
        let d = decision(&control, id(n));
        assert_eq!(var(&d, "rtc_partner"), Some("lab"), "call {n}: {d:?}");
    }
    create(&host, id(50), [203, 0, 113, 9]);
    let refused = decision(&control, id(50));
    assert_eq!(var(&refused, "rtc_reject_reason"), Some("service_down"));
    assert!(monitor.count(ServiceKind::Partner, Event::DegradedPartnerCache) >= 6);
    assert!(monitor.count(ServiceKind::Partner, Event::CircuitOpen) > 0);
    let b = &monitor.breakers()[0];
    assert_eq!(b.service, ServiceKind::Partner);
    assert!(b.transitions.opened >= 1, "{b:?}");
    // One success and two failures in the window reach the 50 % rate at min-calls 3.
    assert_eq!(loopback.counts(ServiceKind::Partner).outage_refusals, 2);

    // Back up: after open-for, a probe succeeds and the breaker closes.
    loopback.set_fault(ServiceKind::Partner, Fault::default());
    std::thread::sleep(Duration::from_millis(150));
    create(&host, id(60), [127, 0, 0, 1]);
    assert_eq!(var(&decision(&control, id(60)), "rtc_partner"), Some("lab"));
    let b = &monitor.breakers()[0];
    assert_eq!(b.state, rtc_services::BreakerState::Closed, "{b:?}");
    assert!(b.transitions.closed >= 1, "{b:?}");

    // Shutdown settles the live calls over HTTP: releases and CDRs reach the loopback, none is spooled.
    let report = host.shutdown(Duration::from_secs(5));
    assert!(report.runtime_stopped);
    let drain = report.drain.unwrap();
    assert_eq!((drain.spooled, drain.lost), (0, 0), "{drain:?}");
    let cdrs = loopback.counts(ServiceKind::Cdr).requests;
    assert_eq!(cdrs, 9, "one CDR per call");
    let open = loopback.with_local(|l| {
        match l
            .ledger()
            .call(Op::Accounts, "test", Duration::from_secs(10))
            .unwrap()
        {
            Answer::Accounts(accounts) => accounts.iter().map(|a| a.open_reservations).sum::<u64>(),
            other => panic!("{other:?}"),
        }
    });
    assert_eq!(open, 0, "every reservation was released");
    loopback.stop();
}

#[test]
fn injected_errors_and_delays_reach_the_calls_as_failures_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RtcConfig::default();
    let loopback = Loopback::start(
        LocalServices::load(&config.local).unwrap(),
        LoopbackOptions::default(),
    )
    .unwrap();
    loopback.configure(&mut config, &[ServiceKind::Rating, ServiceKind::Routing]);
    config.settlement.spool_path = dir.path().join("spool.jsonl");
    config.services[4].timeout = Duration::from_millis(100);
    config.default_routes = vec![Route {
        carrier: "backup".into(),
        dial_string: "sofia/gateway/backup/${destination}".into(),
        cost_per_minute: Money::ZERO,
    }];
    let control = RecordingControl::default();
    let host = Host::start(&config, Box::new(control.clone())).unwrap();
    let monitor = host.monitor().unwrap().clone();

    // Rating answers 500 every time: fail-closed rating refuses the call.
    loopback.set_fault(
        ServiceKind::Rating,
        Fault {
            error_rate: 1.0,
            ..Fault::default()
        },
    );
    create(&host, id(1), [127, 0, 0, 1]);
    let d = decision(&control, id(1));
    assert_eq!(var(&d, "rtc_reject_reason"), Some("service_down"), "{d:?}");
    assert_eq!(loopback.counts(ServiceKind::Rating).injected_errors, 1);
    assert_eq!(monitor.count(ServiceKind::Rating, Event::HttpStatus), 1);

    // Routing answers after its timeout: fail-open routing serves the default route.
    loopback.set_fault(ServiceKind::Rating, Fault::default());
    loopback.set_fault(
        ServiceKind::Routing,
        Fault {
            delay: Duration::from_millis(400),
            ..Fault::default()
        },
    );
    assert_eq!(
        loopback.fault(ServiceKind::Routing).delay,
        Duration::from_millis(400)
    );
    create(&host, id(2), [127, 0, 0, 1]);
    let d = decision(&control, id(2));
    assert_eq!(var(&d, "rtc_route"), Some("backup"), "{d:?}");
    assert_eq!(monitor.count(ServiceKind::Routing, Event::Timeout), 1);
    assert_eq!(
        monitor.count(ServiceKind::Routing, Event::DegradedDefaultRoute),
        1
    );
    host.shutdown(Duration::from_secs(1));
}
