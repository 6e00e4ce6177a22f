//! The engine's latency histograms: call setup (creation to decision) and time spent in each state.

mod common;

use std::time::Duration;

use common::*;
use rtc_engine::call::CallState;
use rtc_engine::domain::{Money, Reservation};
use rtc_engine::event::EventKind;
use rtc_engine::service::{Outcome, ServiceResult};
use rtc_engine::stats::{Buckets, Stats};
use rtc_engine::testkit::ScriptedServices;

fn state_time<'a>(s: &'a Stats, state: &str) -> &'a Buckets {
    &s.state_time
        .iter()
        .find(|(name, _)| *name == state)
        .unwrap_or_else(|| panic!("{state} not timed"))
        .1
}

/// Samples at most `le` seconds.
fn at_most(b: &Buckets, le: f64) -> u64 {
    b.cumulative()
        .find(|(bound, _)| *bound >= le)
        .map_or(0, |(_, n)| n)
}

#[test]
fn setup_is_timed_from_creation_to_the_decision_and_each_state_until_it_is_left() {
    // The balance answers 300 ms after it was asked, as a slow ledger would; the rest at once.
    let mut r = rig(ScriptedServices {
        balance: None,
        ..ScriptedServices::all_yes()
    });
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::BalanceCheck));
    r.advance(Duration::from_millis(300));
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
    assert_eq!(r.state(1), Some(CallState::Parked));
    let s = r.core.stats();
    assert_eq!(s.call_setup.count(), 1);
    assert!(
        (s.call_setup.sum_s - 0.3).abs() < 1e-9,
        "{:?}",
        s.call_setup
    );
    assert_eq!(at_most(&s.call_setup, 0.25), 0);
    assert_eq!(at_most(&s.call_setup, 0.5), 1);
    let balance = state_time(&s, "BALANCE_CHECK");
    assert_eq!(balance.count(), 1);
    assert!((balance.sum_s - 0.3).abs() < 1e-9, "{balance:?}");
    // The steps answered at once took no engine time; PARKED is not left yet.
    assert_eq!(state_time(&s, "PARTNER_IDENTIFICATION").count(), 1);
    assert_eq!(state_time(&s, "PARTNER_IDENTIFICATION").sum_s, 0.0);
    assert_eq!(state_time(&s, "PARKED").count(), 0);
    // Final states are never left: not listed.
    assert!(s.state_time.iter().all(|(name, _)| *name != "COMPLETED"));

    // Parked 2 s, then connected and billed (billing ticks are transitions to the same state): the time in
    // CONNECTED runs from its entry, not from the last tick.
    r.advance(Duration::from_secs(2));
    r.a(1, EventKind::ChannelPark);
    r.b(1, 100, EventKind::ChannelCreate, None);
    r.b(1, 100, EventKind::ChannelAnswer, None);
    assert_eq!(r.state(1), Some(CallState::Connected));
    for _ in 0..6 {
        r.advance(Duration::from_secs(60));
    }
    r.hangup(1, rtc_engine::cause::HangupCause::NORMAL_CLEARING);
    assert!(!r.live(1));
    let s = r.core.stats();
    let parked = state_time(&s, "PARKED");
    assert_eq!(parked.count(), 1);
    assert!((parked.sum_s - 2.0).abs() < 1e-9, "{parked:?}");
    let connected = state_time(&s, "CONNECTED");
    assert_eq!(connected.count(), 1, "{connected:?}");
    assert!((connected.sum_s - 360.0).abs() < 1e-9, "{connected:?}");
    // One decision only.
    assert_eq!(s.call_setup.count(), 1);
}

#[test]
fn a_refusal_is_a_decision_and_a_failure_is_not() {
    let mut r = rig(ScriptedServices {
        partner: Some(Outcome::PartnerUnknown),
        ..ScriptedServices::all_yes()
    });
    r.a(1, EventKind::ChannelCreate);
    assert_eq!(r.state(1), Some(CallState::Rejected));
    assert_eq!(r.core.stats().call_setup.count(), 1);

    // Services that never answer: the setup timeout fails the call; no decision was made.
    let mut r = rig(ScriptedServices::silent());
    r.a(2, EventKind::ChannelCreate);
    r.advance(Duration::from_secs(61));
    assert_eq!(r.state(2), Some(CallState::Failed));
    let s = r.core.stats();
    assert_eq!(s.call_setup.count(), 0);
    assert_eq!(state_time(&s, "PARTNER_IDENTIFICATION").count(), 1);
    assert_eq!(at_most(state_time(&s, "PARTNER_IDENTIFICATION"), 30.0), 0);
}

#[test]
fn event_lag_is_bucketed_as_sampled() {
    let s = Stats::zero();
    assert_eq!(s.event_lag.count(), 0);
    assert_eq!(s.event_lag.counts.len(), s.event_lag.le_s.len() + 1);
    assert!(
        s.event_lag.le_s.contains(&1.0),
        "the alert's threshold is a bound"
    );
    assert!(s.event_lag.le_s.windows(2).all(|w| w[0] < w[1]));
    assert!(s.call_setup.le_s.windows(2).all(|w| w[0] < w[1]));
}
