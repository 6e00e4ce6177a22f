//! Fraud patterns driven through the real engine core: each is refused, alerted or blocked as configured, and the
//! same partner's normal traffic goes on untouched.

mod common;

use std::time::Duration;

use common::*;
use rtc_engine::call::CallState;
use rtc_engine::cause::HangupCause;
use rtc_engine::config::{EngineConfig, FailModes};
use rtc_engine::control::{CallCommand, FraudAlert};
use rtc_engine::domain::Money;
use rtc_engine::event::EventKind;
use rtc_engine::fraud::{
    Burst, DestClass, FraudAction, FraudRules, Limit, PartnerFraud, Pumping, ShortCalls,
};
use rtc_engine::reason::Reason;
use rtc_engine::service::{Outcome, ServiceRequest};
use rtc_engine::testkit::{ScriptedServices, sample_partner};

fn units(n: i64) -> Money {
    Money(n * Money::MICROS_PER_UNIT)
}

fn with_rules(rules: FraudRules) -> EngineConfig {
    EngineConfig {
        fraud: FraudRules {
            enabled: true,
            block_for: Duration::from_secs(600),
            ..rules
        },
        ..config()
    }
}

fn rig_rules(rules: FraudRules) -> Rig {
    rig_with(
        ScriptedServices::all_yes(),
        with_rules(rules),
        FailModes::default(),
    )
}

/// A new call to `destination`: CHANNEL_CREATE (the services answer at once).
fn create(r: &mut Rig, call: u128, destination: &str) {
    let seq = r.next_seq();
    let mut ev = a_event(call, EventKind::ChannelCreate, seq, r.clock.now_us());
    ev.destination = destination.into();
    r.core.on_event(ev);
}

/// A new call to `destination`, parked, bridged and answered.
fn talk(r: &mut Rig, call: u128, destination: &str) {
    create(r, call, destination);
    assert_eq!(r.state(call), Some(CallState::Parked), "call {call}");
    r.a(call, EventKind::ChannelPark);
    r.b(call, call + 10_000, EventKind::ChannelAnswer, None);
    assert_eq!(r.state(call), Some(CallState::Connected), "call {call}");
}

fn fraud_events(r: &Rig) -> Vec<FraudAlert> {
    r.control
        .take()
        .into_iter()
        .filter_map(|c| match c {
            CallCommand::Fraud(f) => Some(*f),
            _ => None,
        })
        .collect()
}

fn hangups(cmds: &[CallCommand]) -> Vec<(u128, HangupCause)> {
    cmds.iter()
        .filter_map(|c| match c {
            CallCommand::Hangup { call, cause } => {
                Some((u128::from_be_bytes(*call.as_bytes()), *cause))
            }
            _ => None,
        })
        .collect()
}

fn reason(r: &Rig, call: u128) -> Option<String> {
    r.core
        .call(&id(call))
        .and_then(|v| v.reason.map(str::to_owned))
}

#[test]
fn a_destination_that_is_not_a_number_is_refused_before_any_service_is_asked() {
    let mut r = rig(ScriptedServices::all_yes());
    let long = "1".repeat(504);
    for (call, dest) in [(1, long.as_str()), (2, "44207abc"), (3, ""), (4, "+")] {
        create(&mut r, call, dest);
        assert_eq!(r.state(call), Some(CallState::Rejected), "{dest:?}");
        assert_eq!(reason(&r, call).as_deref(), Some("invalid_destination"));
    }
    let cmds = r.control.take();
    assert_eq!(
        hangups(&cmds),
        (1..=4)
            .map(|c| (c, HangupCause::INVALID_NUMBER_FORMAT))
            .collect::<Vec<_>>()
    );
    assert!(
        !r.requests()
            .iter()
            .any(|q| matches!(q, ServiceRequest::IdentifyPartner { .. })),
        "no service asked"
    );
    // E.164 numbers, with or without +, go on.
    create(&mut r, 5, "+442079460000");
    create(&mut r, 6, "999999999999999");
    assert_eq!(r.state(5), Some(CallState::Parked));
    assert_eq!(r.state(6), Some(CallState::Parked));
    let s = r.core.stats();
    assert_eq!(
        s.reason_count(Reason::InvalidDestination),
        0,
        "counted at the end"
    );
    for c in 1..=4 {
        r.hangup(c, HangupCause::INVALID_NUMBER_FORMAT);
    }
    assert_eq!(r.core.stats().reason_count(Reason::InvalidDestination), 4);
    // 0 turns the check off.
    let mut r = rig_with(
        ScriptedServices::all_yes(),
        EngineConfig {
            destination_digits: 0,
            ..config()
        },
        FailModes::default(),
    );
    create(&mut r, 1, &long);
    assert_eq!(r.state(1), Some(CallState::Parked));
}

#[test]
fn pumping_one_number_is_refused_and_the_partners_other_calls_go_on() {
    let mut r = rig_rules(FraudRules {
        pumping: Some(Pumping {
            per_number: 2,
            per_prefix: 0,
            prefix_digits: 8,
            action: FraudAction::Refuse,
        }),
        ..FraudRules::default()
    });
    talk(&mut r, 1, "37122000001");
    talk(&mut r, 2, "37122000001");
    r.control.take();
    create(&mut r, 3, "37122000001");
    assert_eq!(r.state(3), Some(CallState::Rejected));
    assert_eq!(reason(&r, 3).as_deref(), Some("fraud"));
    let cmds = r.control.take();
    assert_eq!(hangups(&cmds), [(3, HangupCause::CALL_REJECTED)]);
    let event = cmds
        .iter()
        .find_map(|c| match c {
            CallCommand::Fraud(f) => Some(f),
            _ => None,
        })
        .expect("rtc_core::fraud raised");
    assert_eq!(
        (event.rule, event.action, event.partner.as_str()),
        ("pumping_number", "refuse", "acme")
    );
    assert_eq!((event.value, event.limit), (3.0, 2.0));
    let headers = event.headers();
    assert!(headers.contains(&("rtc_fraud_rule", "pumping_number".into())));
    assert!(headers.contains(&("rtc_destination", "37122000001".into())));
    // The same partner's normal traffic: untouched, the two talking calls too.
    talk(&mut r, 4, "442079460000");
    assert_eq!(r.state(1), Some(CallState::Connected));
    assert_eq!(r.state(2), Some(CallState::Connected));
    // One of the two ends: a place frees.
    r.hangup(1, HangupCause::NORMAL_CLEARING);
    talk(&mut r, 5, "37122000001");
    let report = r.core.fraud();
    assert_eq!(report.recent.len(), 1);
    assert!(report.blocks.is_empty());
    let status = r.core.status(1);
    assert!(status.fraud.hits.contains(&("pumping_number", "refuse", 1)));
}

#[test]
fn a_block_refuses_the_partners_new_calls_and_cuts_its_calls_to_the_pumped_number() {
    let mut r = rig_rules(FraudRules {
        block_hangup: true,
        pumping: Some(Pumping {
            per_number: 2,
            per_prefix: 0,
            prefix_digits: 8,
            action: FraudAction::Block,
        }),
        ..FraudRules::default()
    });
    talk(&mut r, 1, "88160000001");
    talk(&mut r, 2, "88160000001");
    talk(&mut r, 3, "442079460000");
    r.control.take();
    create(&mut r, 4, "88160000001");
    assert_eq!(reason(&r, 4).as_deref(), Some("fraud"));
    let cmds = r.control.take();
    let mut cut = hangups(&cmds);
    cut.sort_by_key(|(call, _)| *call);
    // The new call refused, the two talking to the pumped number hung up; the call to another number talks on.
    assert_eq!(
        cut,
        [
            (1, HangupCause::CALL_REJECTED),
            (2, HangupCause::CALL_REJECTED),
            (4, HangupCause::CALL_REJECTED)
        ]
    );
    assert_eq!(r.state(3), Some(CallState::Connected));
    let events: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            CallCommand::Fraud(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].block_s, Some(600));
    assert_eq!(r.core.stats().fraud_cuts, 2);
    // The cut calls end with reason fraud; their money is settled as any other call's.
    r.hangup(1, HangupCause::CALL_REJECTED);
    assert_eq!(reason(&r, 1).as_deref(), Some("fraud"));
    // Blocked: new calls of the partner are refused, whatever the destination, with no new event.
    create(&mut r, 5, "442079460001");
    assert_eq!(reason(&r, 5).as_deref(), Some("fraud"));
    assert!(fraud_events(&r).is_empty());
    let report = r.core.fraud();
    assert_eq!(report.blocks.len(), 1);
    assert_eq!(report.blocks[0].partner, "acme");
    assert_eq!(report.blocks[0].refused, 1);
    assert_eq!(report.summary.blocked_partners, 1);
    // The operator lifts it.
    assert!(r.core.unblock("nobody").is_err());
    let lifted = r.core.unblock("acme").expect("blocked");
    assert!(lifted.contains("pumping_number"), "{lifted}");
    assert!(r.core.unblock("acme").is_err(), "no longer blocked");
    talk(&mut r, 6, "442079460001");
    // Or the cool-down passes.
    create(&mut r, 7, "88160000001");
    create(&mut r, 8, "88160000001");
    create(&mut r, 9, "88160000001");
    assert_eq!(reason(&r, 9).as_deref(), Some("fraud"));
    r.advance(Duration::from_secs(601));
    talk(&mut r, 10, "442079460002");
}

#[test]
fn risky_classes_are_refused_unless_the_partner_is_allowed_and_their_caps_apply() {
    let rules = FraudRules {
        classes: vec![DestClass {
            name: "premium".into(),
            prefixes: vec!["1900".into()],
            action: Some(FraudAction::Refuse),
            max_call_cost: Some(units(5)),
            max_duration: Some(Duration::from_secs(300)),
        }],
        ..FraudRules::default()
    };
    let mut r = rig_rules(rules.clone());
    create(&mut r, 1, "19005550100");
    assert_eq!(reason(&r, 1).as_deref(), Some("fraud"));
    let events = fraud_events(&r);
    assert_eq!(events[0].class.as_deref(), Some("premium"));
    assert_eq!(events[0].rule, "risky_destination");
    talk(&mut r, 2, "12125550100");

    // A partner allowed the class calls it, within the class's talk cap.
    let mut services = ScriptedServices::all_yes();
    let mut partner = sample_partner();
    partner.fraud = Some(Box::new(PartnerFraud {
        allow: vec!["premium".into()],
        ..PartnerFraud::default()
    }));
    services.partner = Some(Outcome::PartnerFound(partner));
    let mut r = rig_with(services, with_rules(rules), FailModes::default());
    create(&mut r, 1, "19005550100");
    assert_eq!(r.state(1), Some(CallState::Parked));
    let cmds = r.control.take();
    let max = cmds.iter().find_map(|c| match c {
        CallCommand::SetVariables { vars, .. } => vars
            .iter()
            .find(|v| v.name == "rtc_max_duration")
            .map(|v| v.value.to_string()),
        _ => None,
    });
    assert_eq!(max.as_deref(), Some("300"));
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    // It is hung up at the class's max-duration.
    r.control.take();
    r.advance(Duration::from_secs(301));
    assert!(
        hangups(&r.control.take()).contains(&(1, HangupCause::ALLOTTED_TIMEOUT)),
        "hung up at 300 s"
    );
}

#[test]
fn spend_velocity_counts_reservations_and_refuses_or_alerts_as_configured() {
    // 1.00 reserved per call; most 2.50 an hour.
    for action in [FraudAction::Refuse, FraudAction::Alert] {
        let mut r = rig_rules(FraudRules {
            spend_hour: Some(Limit {
                most: Money(2_500_000),
                action,
            }),
            ..FraudRules::default()
        });
        talk(&mut r, 1, "442079460001");
        talk(&mut r, 2, "442079460002");
        r.control.take();
        create(&mut r, 3, "442079460003");
        let events = fraud_events(&r);
        assert_eq!(events.len(), 1, "{action:?}");
        assert_eq!(events[0].rule, "spend_hour");
        // Two reservations held (2.00), their first minute debited at the answer (2 x 0.012), and this call's 1.00.
        assert_eq!((events[0].value, events[0].limit), (3.024, 2.5));
        match action {
            FraudAction::Refuse => assert_eq!(reason(&r, 3).as_deref(), Some("fraud")),
            _ => assert_eq!(
                r.state(3),
                Some(CallState::Parked),
                "an alert lets it through"
            ),
        }
    }
}

#[test]
fn a_run_of_short_calls_blocks_the_partner() {
    let mut r = rig_rules(FraudRules {
        block_hangup: false,
        short_calls: Some(ShortCalls {
            max_talk: Duration::from_secs(3),
            run: 3,
            action: FraudAction::Block,
        }),
        ..FraudRules::default()
    });
    talk(&mut r, 100, "442079460100");
    for call in 1..=3u128 {
        talk(&mut r, call, &format!("44207946{call:04}"));
        r.clock.advance(Duration::from_secs(1));
        r.hangup(call, HangupCause::NORMAL_CLEARING);
    }
    let events = fraud_events(&r);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].rule, events[0].action), ("short_calls", "block"));
    // Without block-hangup the partner's talking call goes on; new ones are refused.
    assert_eq!(r.state(100), Some(CallState::Connected));
    create(&mut r, 4, "442079460004");
    assert_eq!(reason(&r, 4).as_deref(), Some("fraud"));
}

#[test]
fn a_burst_to_new_destinations_alerts_and_lets_the_calls_through() {
    let mut r = rig_rules(FraudRules {
        burst: Some(Burst {
            factor: 10.0,
            min_per_second: 5.0,
            window: Duration::from_secs(10),
            baseline: Duration::from_secs(3600),
            memory: Duration::from_secs(86_400),
            memory_size: 10_000,
            action: FraudAction::Alert,
        }),
        ..FraudRules::default()
    });
    for call in 1..=20u128 {
        create(&mut r, call, &format!("8816{call:07}"));
        assert_eq!(r.state(call), Some(CallState::Parked), "alerts only");
    }
    // Reported once (a minute per partner and rule), counted for every call past the rate.
    let events = fraud_events(&r);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].rule, "burst");
    let hits = r.core.status(1).fraud.hits;
    assert!(
        hits.iter()
            .any(|&(rule, action, n)| rule == "burst" && action == "alert" && n == 15),
        "{hits:?}"
    );
}
