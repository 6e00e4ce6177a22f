//! The engine on its own thread: intake, queries, the dialplan app's wait, a full queue, shutdown.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use rtc_engine::clock::Clock;
use rtc_engine::config::EngineConfig;
use rtc_engine::config::FailModes;
use rtc_engine::control::{CallCommand, CallControl};
use rtc_engine::core::Decision;
use rtc_engine::engine::{Engine, EngineParts, Query, QueryReply, SubmitError};
use rtc_engine::event::EventKind;
use rtc_engine::reason::Reason;
use rtc_engine::service::Outcome;
use rtc_engine::testkit::{RecordingControl, ScriptedServices};

fn start(services: ScriptedServices, control: Box<dyn CallControl>, cfg: EngineConfig) -> Engine {
    Engine::start(EngineParts {
        config: cfg,
        fail_modes: FailModes::default(),
        services: Box::new(services),
        control,
        clock: Clock::system(),
    })
    .expect("engine thread starts")
}

fn live(engine: &Engine) -> usize {
    match engine.handle().query(Query::Status, Duration::from_secs(5)) {
        Ok(QueryReply::Status(s)) => s.live_calls,
        other => panic!("{other:?}"),
    }
}

#[test]
fn events_flow_and_queries_answer() {
    let control = RecordingControl::default();
    let engine = start(
        ScriptedServices::all_yes(),
        Box::new(control.clone()),
        config(),
    );
    let h = engine.handle();
    for n in 1..=10u128 {
        h.submit_event(a_event(n, EventKind::ChannelCreate, n as u64, 0))
            .unwrap();
        h.submit_event(a_event(n, EventKind::ChannelPark, 100 + n as u64, 0))
            .unwrap();
    }
    assert_eq!(live(&engine), 10);
    match h.query(Query::Call(id(3)), Duration::from_secs(5)).unwrap() {
        QueryReply::Call(Some(view)) => assert_eq!(view.state, "CONNECTING"),
        other => panic!("{other:?}"),
    }
    match h
        .query(Query::Calls { limit: 4 }, Duration::from_secs(5))
        .unwrap()
    {
        QueryReply::Calls(calls) => assert_eq!(calls.len(), 4),
        other => panic!("{other:?}"),
    }
    let bridges = control
        .take()
        .iter()
        .filter(|c| matches!(c, CallCommand::Bridge { .. }))
        .count();
    assert_eq!(bridges, 10);
    let report = engine.shutdown();
    assert_eq!(report.settled_calls, 10);
    assert_eq!(report.stats.failed, 10);
}

#[test]
fn dialplan_app_gets_its_decision_even_without_channel_create() {
    let engine = start(
        ScriptedServices::all_yes(),
        Box::new(RecordingControl::default()),
        config(),
    );
    let h = engine.handle();
    let d = h
        .await_decision(
            a_event(1, EventKind::ChannelPark, 1, 0),
            Duration::from_secs(5),
        )
        .unwrap();
    match d {
        Decision::Connect {
            routes,
            vars,
            max_duration_s,
        } => {
            assert_eq!(routes.len(), 2);
            assert!(vars.iter().any(|v| v.name == "rtc_partner"));
            assert_eq!(max_duration_s, 4998);
        }
        other => panic!("{other:?}"),
    }
    // A refused call tells the app why.
    drop(engine);
    let services = ScriptedServices {
        partner: Some(Outcome::PartnerUnknown),
        ..ScriptedServices::all_yes()
    };
    let engine = start(services, Box::new(RecordingControl::default()), config());
    let d = engine
        .handle()
        .await_decision(
            a_event(2, EventKind::ChannelCreate, 1, 0),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        d,
        Decision::Refuse {
            reason: Reason::UnknownPartner,
            cause: rtc_engine::HangupCause::CALL_REJECTED
        }
    );
}

#[test]
fn a_waiting_app_is_answered_when_the_services_answer() {
    let engine = start(
        ScriptedServices::silent(),
        Box::new(RecordingControl::default()),
        config(),
    );
    let h = engine.handle();
    h.submit_event(a_event(1, EventKind::ChannelCreate, 1, 0))
        .unwrap();
    let waiter = {
        let h = h.clone();
        std::thread::spawn(move || {
            h.await_decision(
                a_event(1, EventKind::ChannelCreate, 1, 0),
                Duration::from_secs(10),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    for outcome in [
        Outcome::PartnerFound(rtc_engine::testkit::sample_partner()),
        Outcome::AuthOk,
        Outcome::BalanceInsufficient,
    ] {
        h.deliver(rtc_engine::service::ServiceResult {
            call: id(1),
            outcome,
        })
        .unwrap();
    }
    let d = waiter.join().unwrap().unwrap();
    assert!(
        matches!(
            d,
            Decision::Refuse {
                reason: Reason::NoBalance,
                ..
            }
        ),
        "{d:?}"
    );
}

/// Call control that stalls the engine thread until released, to fill its queue.
struct Stall(Arc<Barrier>, bool);

impl CallControl for Stall {
    fn execute(&mut self, _: CallCommand) {
        if !self.1 {
            self.1 = true;
            self.0.wait();
            self.0.wait();
        }
    }
}

#[test]
fn a_full_queue_refuses_and_counts_without_waiting() {
    let barrier = Arc::new(Barrier::new(2));
    let cfg = EngineConfig {
        queue_capacity: 8,
        ..config()
    };
    let engine = start(
        ScriptedServices::all_yes(),
        Box::new(Stall(barrier.clone(), false)),
        cfg,
    );
    let h = engine.handle();
    h.submit_event(a_event(1, EventKind::ChannelCreate, 1, 0))
        .unwrap();
    barrier.wait(); // the engine thread is now stuck in call control
    let mut refused = 0;
    for n in 0..20u64 {
        match h.submit_event(a_event(100 + u128::from(n), EventKind::ChannelCreate, n, 0)) {
            Ok(()) => {}
            Err(SubmitError::QueueFull(8)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 12);
    assert_eq!(h.intake().queue_full, 12);
    assert_eq!(h.intake().queue_depth, 8);
    barrier.wait();
    assert_eq!(live(&engine), 9);
}

#[test]
fn shutdown_waits_for_a_late_reservation_and_releases_it() {
    let services = ScriptedServices {
        balance: None, // the reservation answer is still on its way at shutdown
        ..ScriptedServices::all_yes()
    };
    let engine = start(
        services.clone(),
        Box::new(RecordingControl::default()),
        config(),
    );
    let h = engine.handle();
    h.submit_event(a_event(1, EventKind::ChannelCreate, 1, 0))
        .unwrap();
    assert_eq!(live(&engine), 1);
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let reservation = rtc_engine::domain::Reservation {
            id: 77,
            amount: rtc_engine::domain::Money(1),
        };
        h.deliver(rtc_engine::service::ServiceResult {
            call: id(1),
            outcome: Outcome::BalanceReserved {
                reservation,
                available: None,
            },
        })
    });
    let report = engine.shutdown();
    late.join().unwrap().unwrap();
    assert!(!report.abandoned);
    assert!(services.requests().iter().any(|q| matches!(q,
        rtc_engine::service::ServiceRequest::ReleaseBalance { partner: 7, reservation, .. } if reservation.id == 77)));
}

/// A timer that an input arms (here the park timeout, armed by the decision) fires at its time, not when the
/// engine thread next planned to wake up for an older one (the sweep, seconds away).
#[test]
fn a_timer_armed_by_an_input_fires_on_time() {
    let control = RecordingControl::default();
    let cfg = EngineConfig {
        park_timeout: Duration::from_millis(150),
        ..config()
    };
    let engine = start(ScriptedServices::all_yes(), Box::new(control.clone()), cfg);
    let h = engine.handle();
    // Decided at once, never parked: hung up by the park timeout.
    let started = std::time::Instant::now();
    h.submit_event(a_event(1, EventKind::ChannelCreate, 1, 0))
        .unwrap();
    let deadline = started + Duration::from_secs(10);
    let hung_up = loop {
        if control
            .take()
            .iter()
            .any(|c| matches!(c, CallCommand::Hangup { .. }))
        {
            break started.elapsed();
        }
        assert!(std::time::Instant::now() < deadline, "never hung up");
        std::thread::sleep(Duration::from_millis(5));
    };
    // On time give or take scheduling; the engine's idle wake-up (1 s) or its sweep (5 s) would be far later.
    assert!(
        hung_up < Duration::from_millis(800),
        "the 150 ms park timeout fired after {hung_up:?}"
    );
    drop(engine);
}
