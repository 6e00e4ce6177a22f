//! Call flows through the real engine core, with recorded call control and scripted services.

mod common;

use rtc_engine::{CallEvent, CallId, Direction};
use std::time::Duration;

use common::*;
use rtc_engine::call::CallState;
use rtc_engine::cause::HangupCause;
use rtc_engine::config::FailModes;
use rtc_engine::config::{EngineConfig, FailMode};
use rtc_engine::control::CallCommand;
use rtc_engine::domain::{Money, PartnerInfo, Reservation};
use rtc_engine::event::EventKind;
use rtc_engine::reason::Reason;
use rtc_engine::service::{Outcome, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult};
use rtc_engine::testkit::ScriptedServices;

fn cdrs(r: &Rig) -> Vec<rtc_engine::domain::Cdr> {
    r.requests()
        .into_iter()
        .filter_map(|q| match q {
            ServiceRequest::WriteCdr(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn count<F: Fn(&ServiceRequest) -> bool>(r: &Rig, f: F) -> usize {
    r.requests().iter().filter(|q| f(q)).count()
}

fn commits(r: &Rig) -> usize {
    count(r, |q| matches!(q, ServiceRequest::CommitBalance { .. }))
}

fn releases(r: &Rig) -> usize {
    count(r, |q| matches!(q, ServiceRequest::ReleaseBalance { .. }))
}

#[test]
fn answered_call_goes_through_every_state_and_is_billed() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    // All services answered at once: decided, waiting for the channel to park.
    assert_eq!(r.state(1), Some(CallState::Parked));
    let cmds = r.control.take();
    assert!(matches!(&cmds[..], [CallCommand::SetVariables { vars, .. }]
        if vars.iter().any(|v| v.name == "rtc_partner" && v.value == "acme")
        && vars.iter().any(|v| v.name == "rtc_route" && v.value == "carrier_0")
        && vars.iter().any(|v| v.name == "rtc_rate" && v.value == "0.012000")));
    r.a(1, EventKind::ChannelPark);
    assert_eq!(r.state(1), Some(CallState::Connecting));
    let cmds = r.control.take();
    assert!(
        matches!(&cmds[..], [CallCommand::Bridge { attempt: 0, route, max_duration_s, .. }]
        if route.carrier == "carrier_0" && *max_duration_s == 4998)
    );
    r.b(1, 100, EventKind::ChannelCreate, None);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    assert_eq!(r.state(1), Some(CallState::Connected));
    r.a(1, EventKind::ChannelAnswer);
    r.a(1, EventKind::ChannelBridge);
    r.clock.advance(Duration::from_secs(61));
    r.b(
        1,
        100,
        EventKind::ChannelHangup,
        Some(HangupCause::NORMAL_CLEARING),
    );
    r.hangup(1, HangupCause::NORMAL_CLEARING);
    assert!(!r.live(1));
    let view = r.core.call(&id(1)).expect("finished trace kept");
    assert_eq!(view.state, "COMPLETED");
    let path: Vec<&str> = view.trace.iter().map(|t| t.to).collect();
    assert_eq!(
        path,
        [
            "PARTNER_IDENTIFICATION",
            "AUTHENTICATION",
            "BALANCE_CHECK",
            "RATING",
            "ROUTING",
            "PARKED",
            "CONNECTING",
            "CONNECTED",
            // The first interval's debit granted (real-time billing).
            "CONNECTED",
            "CONNECTED",
            "COMPLETED"
        ]
    );
    let debits: Vec<Money> = r
        .requests()
        .into_iter()
        .filter_map(|q| match q {
            ServiceRequest::ExtendBalance { debit, .. } => Some(debit),
            _ => None,
        })
        .collect();
    // 60 s at 0.012/min, asked for at the answer.
    assert_eq!(debits, [Money(12_000)]);
    let cdr = &cdrs(&r)[0];
    assert_eq!(cdr.final_state, "COMPLETED");
    assert_eq!(cdr.talk_s, 61);
    assert_eq!(cdr.billed_s, 66);
    assert_eq!(cdr.cost, Money(13_200));
    assert_eq!(cdr.carrier.as_deref(), Some("carrier_0"));
    assert_eq!(commits(&r), 1);
    assert_eq!(releases(&r), 0);
    // Late copies after the end are recognised, not mistaken for new calls.
    r.a(1, EventKind::ChannelHangupComplete);
    r.a(1, EventKind::ChannelDestroy);
    r.b(1, 100, EventKind::ChannelDestroy, None);
    let s = r.core.stats();
    assert_eq!(s.after_end_events, 3);
    assert_eq!(s.completed, 1);
    assert_eq!(s.illegal_total(), 0);
    assert_eq!(r.core.live_calls(), 0);
}

fn refused(services: ScriptedServices, reason: Reason, cause: HangupCause) {
    let mut r = rig(services);
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelPark);
    assert_eq!(r.state(1), Some(CallState::Rejected), "{reason:?}");
    let cmds = r.control.take();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, CallCommand::SetVariables { vars, .. }
            if vars.iter().any(|v| v.name == "rtc_reject_reason" && v.value == reason.name()))),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(&CallCommand::Hangup { call: id(1), cause }),
        "{cmds:?}"
    );
    assert!(!cmds.iter().any(|c| matches!(c, CallCommand::Bridge { .. })));
    r.hangup(1, cause);
    assert!(!r.live(1));
    let cdr = &cdrs(&r)[0];
    assert_eq!(
        (cdr.final_state, cdr.reason),
        ("REJECTED", Some(reason.name()))
    );
    // Whatever was reserved went back.
    let trace = r.core.call(&id(1)).unwrap().trace;
    let reserved = trace
        .iter()
        .filter(|t| t.cause == "BALANCE_RESERVED")
        .count();
    assert_eq!(releases(&r), reserved, "{reason:?}");
    assert_eq!(commits(&r), 0);
    assert_eq!(r.core.stats().reason_count(reason), 1);
}

#[test]
fn each_refusal_has_its_reason_and_cause() {
    let yes = ScriptedServices::all_yes;
    refused(
        ScriptedServices {
            partner: Some(Outcome::PartnerUnknown),
            ..yes()
        },
        Reason::UnknownPartner,
        HangupCause::CALL_REJECTED,
    );
    refused(
        ScriptedServices {
            auth: Some(Outcome::AuthDenied),
            ..yes()
        },
        Reason::AuthDenied,
        HangupCause::CALL_REJECTED,
    );
    refused(
        ScriptedServices {
            balance: Some(Outcome::BalanceInsufficient),
            ..yes()
        },
        Reason::NoBalance,
        HangupCause::OUTGOING_CALL_BARRED,
    );
    refused(
        ScriptedServices {
            rating: Some(Outcome::RateNone),
            ..yes()
        },
        Reason::NoRate,
        HangupCause::INCOMPATIBLE_DESTINATION,
    );
    refused(
        ScriptedServices {
            routing: Some(Outcome::RoutesNone),
            ..yes()
        },
        Reason::NoRoute,
        HangupCause::NO_ROUTE_DESTINATION,
    );
    refused(
        ScriptedServices {
            routing: Some(Outcome::Failed(
                ServiceKind::Routing,
                ServiceFailure::Timeout,
            )),
            ..yes()
        },
        Reason::ServiceDown,
        HangupCause::NORMAL_TEMPORARY_FAILURE,
    );
    refused(
        ScriptedServices {
            partner: Some(Outcome::Failed(
                ServiceKind::Partner,
                ServiceFailure::CircuitOpen,
            )),
            ..yes()
        },
        Reason::ServiceDown,
        HangupCause::NORMAL_TEMPORARY_FAILURE,
    );
}

#[test]
fn fail_open_services_are_skipped() {
    let services = ScriptedServices {
        auth: Some(Outcome::Failed(ServiceKind::Auth, ServiceFailure::Error)),
        ..ScriptedServices::all_yes()
    };
    let mut modes = FailModes::default();
    modes.set(ServiceKind::Auth, FailMode::Open);
    let mut r = rig_with(services, config(), modes);
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::Parked));
    let trace = r.core.call(&id(1)).unwrap().trace;
    assert!(trace.iter().any(|t| t.cause == "STEP_SKIPPED"));
}

#[test]
fn partner_concurrency_limit_refuses_the_extra_call() {
    let services = ScriptedServices {
        partner: Some(Outcome::PartnerFound(PartnerInfo {
            id: 3,
            name: "small".into(),
            max_concurrent: 2,
            max_cps: 0,
            max_call_cost: None,
            fraud: None,
        })),
        ..ScriptedServices::all_yes()
    };
    let mut r = rig(services);
    for n in 1..=3 {
        r.a(n, EventKind::ChannelCreate);
    }
    assert_eq!(r.state(1), Some(CallState::Parked));
    assert_eq!(r.state(2), Some(CallState::Parked));
    assert_eq!(r.state(3), Some(CallState::Rejected));
    assert_eq!(r.core.call(&id(3)).unwrap().reason, Some("limit_reached"));
    // A finished call frees its slot.
    r.hangup(1, HangupCause::NORMAL_CLEARING);
    r.a(4, EventKind::ChannelCreate);
    assert_eq!(r.state(4), Some(CallState::Parked));
}

#[test]
fn failover_tries_the_next_route_and_stops_on_busy() {
    let services = ScriptedServices {
        routing: Some(Outcome::RoutesFound(rtc_engine::testkit::sample_routes(3))),
        ..ScriptedServices::all_yes()
    };
    let mut r = rig(services);
    r.a(1, EventKind::ChannelPark); // park seen first: the call is created from it
    r.a(1, EventKind::ChannelCreate); // the late CREATE changes nothing
    assert_eq!(r.state(1), Some(CallState::Connecting));
    r.b(1, 100, EventKind::ChannelCreate, None);
    r.b(
        1,
        100,
        EventKind::ChannelHangup,
        Some(HangupCause::NO_ANSWER),
    );
    assert_eq!(r.state(1), Some(CallState::Connecting));
    r.b(1, 101, EventKind::ChannelCreate, None);
    r.b(
        1,
        101,
        EventKind::ChannelHangup,
        Some(HangupCause::USER_BUSY),
    );
    assert_eq!(r.state(1), Some(CallState::Failed));
    let bridges: Vec<u8> = r
        .control
        .take()
        .into_iter()
        .filter_map(|c| match c {
            CallCommand::Bridge { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(bridges, [0, 1]);
    let view = r.core.call(&id(1)).unwrap();
    assert_eq!(view.reason, Some("routes_exhausted"));
    assert_eq!(view.hangup_cause.as_deref(), Some("USER_BUSY"));
    assert_eq!(r.core.stats().duplicate_events, 1);
}

#[test]
fn exhausted_routes_fail_with_the_last_cause() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelPark);
    r.b(
        1,
        100,
        EventKind::ChannelHangup,
        Some(HangupCause::NO_ANSWER),
    );
    r.b(
        1,
        101,
        EventKind::ChannelHangup,
        Some(HangupCause::GATEWAY_DOWN),
    );
    assert_eq!(r.state(1), Some(CallState::Failed));
    assert!(r.control.take().contains(&CallCommand::Hangup {
        call: id(1),
        cause: HangupCause::GATEWAY_DOWN
    }));
}

#[test]
fn hangup_in_every_live_state_completes_the_call() {
    // Drive a call to each live state with pending services, then hang up.
    // (state, how many of the services answer before the hangup)
    let steps: [(CallState, usize); 8] = [
        (CallState::PartnerIdentification, 0),
        (CallState::Authentication, 1),
        (CallState::BalanceCheck, 2),
        (CallState::Rating, 3),
        (CallState::Routing, 4),
        (CallState::Parked, 5),
        (CallState::Connecting, 6),
        (CallState::Connected, 7),
    ];
    for (target, answered) in steps {
        let yes = ScriptedServices::all_yes();
        let mut s = ScriptedServices::silent();
        let answers = [
            &yes.partner,
            &yes.auth,
            &yes.balance,
            &yes.rating,
            &yes.routing,
        ];
        let slots = [
            &mut s.partner,
            &mut s.auth,
            &mut s.balance,
            &mut s.rating,
            &mut s.routing,
        ];
        for (i, slot) in slots.into_iter().enumerate() {
            if i < answered {
                *slot = answers[i].clone();
            }
        }
        let mut r = rig(s);
        r.a(1, EventKind::ChannelCreate);
        if answered >= 6 {
            r.a(1, EventKind::ChannelPark);
        }
        if answered >= 7 {
            r.b(1, 100, EventKind::ChannelAnswer, None);
        }
        assert_eq!(r.state(1), Some(target));
        r.hangup(1, HangupCause::ORIGINATOR_CANCEL);
        assert!(!r.live(1), "{target:?}");
        let cdr = &cdrs(&r)[0];
        assert_eq!(cdr.final_state, "COMPLETED", "{target:?}");
        assert_eq!(cdr.hangup_cause, HangupCause::ORIGINATOR_CANCEL);
        let reserved =
            count(&r, |q| matches!(q, ServiceRequest::ReserveBalance { .. })) > 0 && answered >= 3;
        assert_eq!(
            releases(&r) + commits(&r),
            usize::from(reserved),
            "{target:?}: the reservation is settled exactly once"
        );
    }
}

#[test]
fn a_call_the_dialplan_connects_while_its_balance_step_waits_is_connected_once_decided() {
    // Balance answered later, as the ledger answers; the operator's dialplan bridges the call meanwhile.
    let mut r = rig(ScriptedServices {
        balance: None,
        ..ScriptedServices::all_yes()
    });
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::BalanceCheck));
    r.b(1, 100, EventKind::ChannelCreate, None);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    r.advance(Duration::from_millis(400));
    r.a(1, EventKind::ChannelAnswer);
    r.a(1, EventKind::ChannelBridge);
    assert_eq!(r.state(1), Some(CallState::BalanceCheck));
    r.advance(Duration::from_millis(600));
    r.deliver(ServiceResult {
        call: id(1),
        outcome: Outcome::BalanceReserved {
            reservation: Reservation {
                id: 5,
                amount: Money(1_000_000),
            },
            available: None,
        },
    });
    assert_eq!(r.state(1), Some(CallState::Connected));
    assert_eq!(r.core.stats().illegal_total(), 0);
    // It is billed from its answer, not from its decision a second later.
    r.advance(Duration::from_secs(10));
    r.b(
        1,
        100,
        EventKind::ChannelHangup,
        Some(HangupCause::NORMAL_CLEARING),
    );
    r.hangup(1, HangupCause::NORMAL_CLEARING);
    let cdr = &cdrs(&r)[0];
    assert_eq!(cdr.final_state, "COMPLETED");
    assert_eq!(cdr.talk_s, 11);
    assert_eq!(commits(&r), 1);
}

#[test]
fn results_for_calls_gone_are_stale_and_reservations_go_back() {
    let mut r = rig(ScriptedServices::silent());
    r.a(1, EventKind::ChannelCreate);
    r.hangup(1, HangupCause::ORIGINATOR_CANCEL);
    let res = Reservation {
        id: 42,
        amount: Money(1_000_000),
    };
    r.deliver(ServiceResult {
        call: id(1),
        outcome: Outcome::BalanceReserved {
            reservation: res,
            available: None,
        },
    });
    r.deliver(ServiceResult {
        call: id(1),
        outcome: Outcome::PartnerUnknown,
    });
    let s = r.core.stats();
    assert_eq!(s.stale_results, 2);
    assert_eq!(s.orphan_reservations_released, 1);
    assert!(r.requests().iter().any(|q| matches!(q,
        ServiceRequest::ReleaseBalance { reservation, .. } if reservation.id == 42)));
    // A result out of step for a live call is stale too, and its reservation also goes back.
    r.a(2, EventKind::ChannelCreate);
    r.deliver(ServiceResult {
        call: id(2),
        outcome: Outcome::BalanceReserved {
            available: None,
            reservation: Reservation {
                id: 43,
                amount: Money(1),
            },
        },
    });
    assert_eq!(r.state(2), Some(CallState::PartnerIdentification));
    assert_eq!(r.core.stats().orphan_reservations_released, 2);
}

#[test]
fn illegal_events_are_counted_per_state_and_input() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelUnbridge); // nothing is bridged yet: the call waits to be parked
    let s = r.core.stats();
    assert_eq!(s.illegal.len(), 1);
    assert_eq!(
        (s.illegal[0].state, s.illegal[0].input, s.illegal[0].count),
        ("PARKED", "CHANNEL_UNBRIDGE", 1)
    );
    assert_eq!(r.state(1), Some(CallState::Parked));
}

#[test]
fn duplicate_and_late_events_are_told_apart() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a_seq(1, EventKind::ChannelCreate, 10);
    r.a_seq(1, EventKind::ChannelCreate, 10); // same event twice
    r.a_seq(1, EventKind::ChannelPark, 12);
    r.a_seq(1, EventKind::ChannelPark, 12); // same sequence: duplicate
    r.b(1, 100, EventKind::ChannelAnswer, None);
    r.a_seq(1, EventKind::ChannelAnswer, 13);
    // A progress from before the park, delivered late by another dispatch thread: no longer applies.
    r.a_seq(1, EventKind::ChannelUnbridge, 11);
    let s = r.core.stats();
    assert_eq!(s.duplicate_events, 2);
    assert_eq!(r.state(1), Some(CallState::Connected));
    assert_eq!(s.illegal_total(), 0);
    // A late event that is not allowed any more is counted as late, not illegal.
    r.a_seq(1, EventKind::ChannelCreate, 1);
    assert_eq!(r.core.stats().duplicate_events, 3);
    let mut r = rig(ScriptedServices::all_yes());
    r.a_seq(2, EventKind::ChannelCreate, 10);
    r.a_seq(2, EventKind::ChannelUnbridge, 5);
    assert_eq!(r.core.stats().late_events, 1);
    assert_eq!(r.core.stats().illegal_total(), 0);
}

#[test]
fn unknown_and_foreign_channels_are_counted_not_created() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(5, EventKind::ChannelAnswer);
    r.a(6, EventKind::ChannelHangup);
    r.b(77, 700, EventKind::ChannelCreate, None);
    let s = r.core.stats();
    assert_eq!(
        (s.unknown_events, s.foreign_legs, s.calls_created),
        (2, 1, 0)
    );
    assert_eq!(r.core.live_calls(), 0);
}

#[test]
fn the_route_whose_leg_answered_is_the_carrier_when_the_host_fails_over_itself() {
    // The app flow: the host bridges over every route at once, each leg with the UUID `CallId::leg` gives its
    // route; the first route fails without a channel (`error/...`), the second one's leg answers.
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::Parked));
    let leg = |kind, seq| {
        let mut ev = CallEvent::new(id(1).leg(1), kind, seq);
        ev.direction = Direction::Outbound;
        ev.other_leg = Some(id(1));
        ev
    };
    r.core.on_event(leg(EventKind::ChannelCreate, 10));
    r.core.on_event(leg(EventKind::ChannelAnswer, 11));
    assert_eq!(r.state(1), Some(CallState::Connected));
    r.hangup(1, HangupCause::NORMAL_CLEARING);
    let cdr = cdrs(&r).pop().expect("cdr");
    assert_eq!(cdr.carrier.as_deref(), Some("carrier_1"));
    // Without the route's leg UUID (another host's leg), the first route stays the carrier on record.
    let mut r = rig(ScriptedServices::all_yes());
    r.a(2, EventKind::ChannelCreate);
    r.b(2, 77, EventKind::ChannelAnswer, None);
    r.hangup(2, HangupCause::NORMAL_CLEARING);
    assert_eq!(
        cdrs(&r).pop().expect("cdr").carrier.as_deref(),
        Some("carrier_0")
    );
}

#[test]
fn a_call_whose_channel_is_gone_without_a_hangup_is_settled_after_verify_after() {
    let mut r = rig(ScriptedServices::all_yes());
    for call in [1, 2] {
        r.a(call, EventKind::ChannelCreate);
        r.a(call, EventKind::ChannelPark);
        r.b(call, 100 + call, EventKind::ChannelCreate, None);
        r.b(call, 100 + call, EventKind::ChannelAnswer, None);
        assert_eq!(r.state(call), Some(CallState::Connected));
    }
    // Call 1's hangup events were lost (say, a full queue): its channel is gone. Call 2 talks on, quietly.
    r.control.gone.lock().unwrap().push(id(1));
    r.advance(Duration::from_secs(30));
    assert_eq!(
        r.state(1),
        Some(CallState::Connected),
        "not quiet for long enough"
    );
    for _ in 0..30 {
        r.advance(Duration::from_secs(5));
    }
    assert!(!r.live(1), "settled once its channel was found gone");
    assert_eq!(
        r.state(2),
        Some(CallState::Connected),
        "a quiet call still up is left alone"
    );
    let s = r.core.stats();
    assert_eq!((s.channels_gone, s.swept), (1, 0));
    assert_eq!(commits(&r), 1, "call 1's reservation settled");
    let cdr = cdrs(&r).pop().expect("cdr");
    assert_eq!((cdr.uuid, cdr.reason), (id(1), Some("stale")));
}

#[test]
fn inbound_channels_a_call_placed_are_its_own_legs_not_new_calls() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.core.live_calls(), 1);
    // The far half of a loopback route call 1 placed: created naming call 1, then parked and answered by its own
    // dialplan without naming it any more. None of it is a call.
    let far_half = |kind, seq, placed_by: Option<u128>| {
        let mut ev = CallEvent::new(id(900), kind, seq);
        ev.other_leg = placed_by.map(id);
        ev
    };
    r.core
        .on_event(far_half(EventKind::ChannelCreate, 50, Some(1)));
    r.core.on_event(far_half(EventKind::ChannelPark, 51, None));
    r.core
        .on_event(far_half(EventKind::ChannelAnswer, 52, None));
    r.core
        .on_event(far_half(EventKind::ChannelDestroy, 53, None));
    let s = r.core.stats();
    assert_eq!(
        (
            s.own_legs,
            s.own_leg_events,
            s.calls_created,
            s.unknown_events
        ),
        (1, 4, 1, 0)
    );
    assert_eq!(r.core.live_calls(), 1);
    // Forgotten at its destroy: a later park of the same UUID is a channel never seen created (a call).
    r.core.on_event(far_half(EventKind::ChannelPark, 54, None));
    assert_eq!(r.core.stats().calls_created, 2);
}

#[test]
fn setup_timeout_fails_a_call_whose_services_never_answer() {
    let mut r = rig(ScriptedServices::silent());
    r.a(1, EventKind::ChannelCreate);
    r.advance(Duration::from_secs(59));
    assert_eq!(r.state(1), Some(CallState::PartnerIdentification));
    r.advance(Duration::from_secs(1));
    assert_eq!(r.state(1), Some(CallState::Failed));
    assert!(r.control.take().contains(&CallCommand::Hangup {
        call: id(1),
        cause: HangupCause::RECOVERY_ON_TIMER_EXPIRE
    }));
    // FreeSWITCH hangs it up; the call leaves.
    r.hangup(1, HangupCause::RECOVERY_ON_TIMER_EXPIRE);
    assert!(!r.live(1));
    assert_eq!(r.core.stats().reason_count(Reason::SetupTimeout), 1);
}

#[test]
fn park_timeout_fails_a_decided_call_that_never_parks() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::Parked));
    r.advance(Duration::from_secs(29));
    assert_eq!(r.state(1), Some(CallState::Parked));
    r.advance(Duration::from_secs(2));
    assert_eq!(r.state(1), Some(CallState::Failed));
    assert_eq!(r.core.call(&id(1)).unwrap().reason, Some("park_timeout"));
}

#[test]
fn real_time_billing_debits_interval_by_interval_and_hangs_up_when_the_money_runs_out() {
    // 0.012/min in 6 s increments is 0.0012 an increment, 0.012 a 60 s interval. The partner's money pays two
    // whole intervals and half a third.
    let services = ScriptedServices {
        extension_money: Some(Money(30_000)),
        ..ScriptedServices::all_yes()
    };
    let mut r = rig(services);
    r.a(1, EventKind::ChannelCreate);
    let vars = r.control.take();
    assert!(
        matches!(&vars[..], [CallCommand::SetVariables { vars, .. }]
            if vars.iter().any(|v| v.name == "rtc_max_duration" && v.value == "4998")),
        "{vars:?}"
    );
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    r.control.take();
    // Each interval is asked for 5 s before the paid time runs out: at 55 s and at 115 s.
    r.advance(Duration::from_secs(54));
    assert_eq!(extensions(&r), [Money(12_000)]);
    r.advance(Duration::from_secs(2));
    assert_eq!(extensions(&r), [Money(12_000), Money(12_000)]);
    assert!(r.control.take().is_empty());
    r.advance(Duration::from_secs(60));
    assert_eq!(
        extensions(&r),
        [Money(12_000), Money(12_000), Money(12_000)]
    );
    // Half an interval granted: a warning, and no more extensions.
    let warned = r.control.take();
    assert!(
        matches!(&warned[..], [CallCommand::LowBalance(w)] if w.partner == "acme" && w.paid_s == 150
            && (33..=35).contains(&w.remaining_s)),
        "{warned:?}"
    );
    r.advance(Duration::from_secs(33));
    assert!(
        !r.control
            .take()
            .iter()
            .any(|c| matches!(c, CallCommand::Hangup { .. }))
    );
    assert_eq!(extensions(&r).len(), 3);
    r.advance(Duration::from_secs(2));
    assert!(r.control.take().contains(&CallCommand::Hangup {
        call: id(1),
        cause: HangupCause::ALLOTTED_TIMEOUT
    }));
    assert_eq!(r.state(1), Some(CallState::Connected));
    r.hangup(1, HangupCause::ALLOTTED_TIMEOUT);
    let cdr = &cdrs(&r)[0];
    assert_eq!(cdr.reason, Some("max_duration"));
    assert_eq!(cdr.talk_s, 151);
    // 151 s bill as 156 s: 0.0312, a little past what was debited (0.030), charged all the same.
    assert_eq!(cdr.cost, Money(31_200));
    let s = r.core.stats();
    assert_eq!(
        (s.extensions, s.extensions_granted, s.low_balance),
        (3, 3, 1)
    );
}

#[test]
fn a_call_whose_first_interval_cannot_be_paid_is_hung_up_at_once() {
    let services = ScriptedServices {
        extension_money: Some(Money(1_000)),
        ..ScriptedServices::all_yes()
    };
    let mut r = rig(services);
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    let cmds = r.control.take();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, CallCommand::LowBalance(w) if w.remaining_s == 0)),
        "{cmds:?}"
    );
    r.advance(Duration::from_millis(10));
    assert!(r.control.take().contains(&CallCommand::Hangup {
        call: id(1),
        cause: HangupCause::ALLOTTED_TIMEOUT
    }));
    assert_eq!(r.core.stats().extensions_refused, 1);
}

#[test]
fn a_partners_cost_cap_ends_billing_and_the_call() {
    let mut r = rig(ScriptedServices {
        partner: Some(Outcome::PartnerFound(PartnerInfo {
            max_call_cost: Some(Money(20_000)),
            ..rtc_engine::testkit::sample_partner()
        })),
        ..ScriptedServices::all_yes()
    });
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    r.advance(Duration::from_secs(56));
    // The second interval would pass 0.02: 0.0072 of it (6 increments, 36 s) is asked for, then nothing more.
    assert_eq!(extensions(&r), [Money(12_000), Money(7_200)]);
    assert_eq!(r.core.stats().cost_capped, 1);
    r.advance(Duration::from_secs(39));
    let cmds = r.control.take();
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, CallCommand::Hangup { .. } | CallCommand::LowBalance(_))),
        "{cmds:?}"
    );
    r.advance(Duration::from_secs(2));
    assert!(r.control.take().contains(&CallCommand::Hangup {
        call: id(1),
        cause: HangupCause::ALLOTTED_TIMEOUT
    }));
    assert_eq!(extensions(&r).len(), 2);
}

fn extensions(r: &Rig) -> Vec<Money> {
    r.requests()
        .into_iter()
        .filter_map(|q| match q {
            ServiceRequest::ExtendBalance { debit, .. } => Some(debit),
            _ => None,
        })
        .collect()
}

#[test]
fn sweep_removes_refused_calls_without_hangup_and_lost_calls() {
    let services = ScriptedServices {
        partner: Some(Outcome::PartnerUnknown),
        ..ScriptedServices::all_yes()
    };
    let mut r = rig(services);
    r.a(1, EventKind::ChannelCreate); // refused; its hangup never comes
    assert_eq!(r.state(1), Some(CallState::Rejected));
    r.advance(Duration::from_secs(25));
    assert!(r.live(1));
    r.advance(Duration::from_secs(10));
    assert!(!r.live(1));
    assert_eq!(r.core.stats().swept, 1);
    assert_eq!(cdrs(&r)[0].final_state, "REJECTED");

    // A connected call whose events stop (link lost, hangup missed) goes after `stale_after`.
    let mut cfg = config();
    cfg.stale_after = Duration::from_secs(600);
    cfg.max_call_duration = Duration::from_secs(3600);
    let mut r = rig_with(ScriptedServices::all_yes(), cfg, FailModes::default());
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    r.advance(Duration::from_secs(599));
    assert!(r.live(1));
    r.advance(Duration::from_secs(10));
    assert!(!r.live(1));
    let cdr = &cdrs(&r)[0];
    assert_eq!((cdr.final_state, cdr.reason), ("FAILED", Some("stale")));
    assert_eq!(releases(&r) + commits(&r), 1);
}

#[test]
fn shutdown_settles_every_live_call() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate); // parked, waiting
    r.a(2, EventKind::ChannelCreate);
    r.a(2, EventKind::ChannelPark);
    r.b(2, 200, EventKind::ChannelAnswer, None); // connected
    r.clock.advance(Duration::from_secs(30));
    assert_eq!(r.core.shutdown_calls(), 2);
    assert_eq!(r.core.live_calls(), 0);
    let cdrs = cdrs(&r);
    let c1 = cdrs.iter().find(|c| c.uuid == id(1)).unwrap();
    let c2 = cdrs.iter().find(|c| c.uuid == id(2)).unwrap();
    assert_eq!((c1.final_state, c1.reason), ("FAILED", Some("shutdown")));
    assert_eq!((c2.final_state, c2.reason), ("COMPLETED", Some("shutdown")));
    assert_eq!(c2.talk_s, 30);
    assert_eq!((commits(&r), releases(&r)), (1, 1));
    // Kept up by default: the only hangup is the call in setup's.
    let hangups: Vec<CallId> = r
        .control
        .take()
        .into_iter()
        .filter_map(|c| match c {
            CallCommand::Hangup { call, .. } => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(hangups, [id(1)]);
}

#[test]
fn shutdown_calls_hangup_ends_connected_calls_too() {
    let cfg = EngineConfig {
        hangup_connected_on_shutdown: true,
        ..config()
    };
    let mut r = rig_with(ScriptedServices::all_yes(), cfg, FailModes::default());
    r.a(2, EventKind::ChannelCreate);
    r.a(2, EventKind::ChannelPark);
    r.b(2, 200, EventKind::ChannelAnswer, None);
    r.control.take();
    assert_eq!(r.core.shutdown_calls(), 1);
    assert!(matches!(
        &r.control.take()[..],
        [CallCommand::Hangup { call, cause }] if *call == id(2) && *cause == HangupCause::SYSTEM_SHUTDOWN
    ));
    let c2 = cdrs(&r).pop().unwrap();
    assert_eq!((c2.final_state, c2.reason), ("COMPLETED", Some("shutdown")));
}

#[test]
fn a_failed_attempts_late_events_do_not_touch_the_next_attempt() {
    let mut r = rig(ScriptedServices::all_yes());
    r.a(1, EventKind::ChannelCreate);
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelCreate, None);
    r.b(
        1,
        100,
        EventKind::ChannelHangup,
        Some(HangupCause::NO_ANSWER),
    );
    r.b(1, 101, EventKind::ChannelCreate, None); // second attempt ringing
    r.b(
        1,
        100,
        EventKind::ChannelDestroy,
        Some(HangupCause::NO_ANSWER),
    ); // first attempt's last word
    assert_eq!(r.state(1), Some(CallState::Connecting));
    r.b(1, 101, EventKind::ChannelAnswer, None);
    assert_eq!(r.state(1), Some(CallState::Connected));
    assert_eq!(r.core.stats().after_end_events, 1);
}

#[test]
fn global_limit_and_overload_shedding_refuse_new_calls_only() {
    let mut cfg = config();
    cfg.admission.max_concurrent = 1;
    cfg.admission.shed_queue_depth = 100;
    let mut r = rig_with(ScriptedServices::all_yes(), cfg, FailModes::default());
    r.a(1, EventKind::ChannelCreate);
    r.a(2, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::Parked));
    assert_eq!(r.core.call(&id(2)).unwrap().reason, Some("limit_reached"));
    r.hangup(1, HangupCause::NORMAL_CLEARING);
    // The engine lags: new calls are shed before any service is asked, live ones carry on.
    r.a(3, EventKind::ChannelCreate);
    r.core.set_backlog(101);
    let asked = r.requests().len();
    r.a(4, EventKind::ChannelCreate);
    assert_eq!(r.state(4), Some(CallState::Rejected));
    assert_eq!(
        r.requests().len(),
        asked,
        "a shed call costs no service request"
    );
    r.a(3, EventKind::ChannelPark);
    assert_eq!(r.state(3), Some(CallState::Connecting));
    let admission = r.core.admission();
    assert!(
        admission
            .refused
            .iter()
            .any(|(n, c)| *n == "queue_depth" && *c == 1)
    );
    assert!(
        admission
            .refused
            .iter()
            .any(|(n, c)| *n == "global_concurrent" && *c == 1)
    );
}

#[test]
fn the_digest_user_reaches_authentication() {
    let mut r = rig(ScriptedServices::all_yes());
    let mut ev = a_event(1, EventKind::ChannelCreate, 1, 0);
    ev.auth_user = "alice".into();
    r.core.on_event(ev);
    assert!(r.requests().iter().any(|q| matches!(q,
        ServiceRequest::Authenticate { auth_user, .. } if auth_user == "alice")));
}

#[test]
fn the_call_states_document_matches_the_table() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/call-states.md"
    ))
    .expect("docs/call-states.md");
    assert!(
        doc == rtc_engine::call::transitions_markdown(),
        "docs/call-states.md is out of date: run `cargo run -p rtc-core -- states > docs/call-states.md`"
    );
}

#[test]
fn partner_calls_per_second_limit_refuses_the_burst_beyond_it() {
    let services = ScriptedServices {
        partner: Some(Outcome::PartnerFound(PartnerInfo {
            id: 4,
            name: "paced".into(),
            max_concurrent: 0,
            max_cps: 2,
            max_call_cost: None,
            fraud: None,
        })),
        ..ScriptedServices::all_yes()
    };
    let mut r = rig(services);
    for n in 1..=3 {
        r.a(n, EventKind::ChannelCreate);
    }
    assert_eq!(r.state(3), Some(CallState::Rejected));
    assert_eq!(r.core.call(&id(3)).unwrap().reason, Some("limit_reached"));
    // A second later the partner may call again.
    r.clock.advance(Duration::from_secs(1));
    r.a(4, EventKind::ChannelCreate);
    assert_eq!(r.state(4), Some(CallState::Parked));
}
