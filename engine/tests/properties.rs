//! Property: whatever order, duplication or loss the events and results come in, every call ends in
//! COMPLETED, REJECTED or FAILED, leaves the registry, gets exactly one CDR, and every reservation is
//! settled exactly once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use rtc_engine::cause::HangupCause;
use rtc_engine::domain::{Money, PartnerInfo, Reservation};
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::service::{Outcome, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult};
use rtc_engine::testkit::{ScriptedServices, sample_rate, sample_routes};

#[derive(Clone, Debug)]
enum Op {
    A(u8, EventKind),
    B(u8, u8, EventKind, HangupCause),
    Result(u8, u8),
    Advance(u16),
}

const CALLS: u8 = 4;

fn kind() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

fn cause() -> impl Strategy<Value = HangupCause> {
    prop::sample::select(vec![
        HangupCause::NO_ANSWER,
        HangupCause::USER_BUSY,
        HangupCause::NORMAL_CLEARING,
        HangupCause::GATEWAY_DOWN,
    ])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CALLS, kind()).prop_map(|(c, k)| Op::A(c, k)),
        2 => (0..CALLS, 0..3u8, kind(), cause()).prop_map(|(c, l, k, h)| Op::B(c, l, k, h)),
        4 => (0..CALLS, 0..16u8).prop_map(|(c, o)| Op::Result(c, o)),
        1 => (0..120u16).prop_map(Op::Advance),
    ]
}

fn outcome(n: u8, reservation: u64) -> Outcome {
    match n {
        0 => Outcome::PartnerFound(PartnerInfo {
            id: 1,
            name: "p".into(),
            max_concurrent: 3,
            max_cps: 0,
            max_call_cost: None,
            fraud: None,
        }),
        1 => Outcome::PartnerUnknown,
        2 => Outcome::AuthOk,
        3 => Outcome::AuthDenied,
        4 | 5 => Outcome::BalanceReserved {
            available: None,
            reservation: Reservation {
                id: reservation,
                amount: Money(500_000),
            },
        },
        6 => Outcome::BalanceInsufficient,
        7 => Outcome::RateFound(sample_rate()),
        8 => Outcome::RateNone,
        9 => Outcome::RoutesFound(sample_routes(2)),
        10 => Outcome::RoutesNone,
        11 => Outcome::Failed(ServiceKind::Partner, ServiceFailure::Timeout),
        12 => Outcome::Failed(ServiceKind::Auth, ServiceFailure::Error),
        13 => Outcome::Failed(ServiceKind::Balance, ServiceFailure::CircuitOpen),
        14 => Outcome::Failed(ServiceKind::Routing, ServiceFailure::Timeout),
        _ => Outcome::PartnerFound(PartnerInfo {
            id: 2,
            name: "q".into(),
            max_concurrent: 0,
            max_cps: 0,
            max_call_cost: None,
            fraud: None,
        }),
    }
}

fn run(
    services: ScriptedServices,
    ops: Vec<Op>,
    swaps: Vec<bool>,
    lose_hangups: bool,
) -> Result<(), TestCaseError> {
    let mut r = rig(services);
    // Number the events in generation order, then let neighbours swap: late delivery.
    let mut numbered: Vec<(u64, Op)> = ops
        .into_iter()
        .enumerate()
        .map(|(i, o)| (i as u64 + 1, o))
        .collect();
    for (i, swap) in swaps.into_iter().enumerate() {
        if swap && i + 1 < numbered.len() {
            numbered.swap(i, i + 1);
        }
    }
    let mut reservations = 0u64;
    let mut reserved = Vec::new();
    for (seq, op) in numbered {
        match op {
            Op::A(c, k) => {
                let mut ev = a_event(u128::from(c) + 1, k, seq, r.clock.now_us());
                ev.hangup_cause = Some(HangupCause::NORMAL_CLEARING);
                r.core.on_event(ev);
            }
            Op::B(c, l, k, h) => {
                let mut ev = CallEvent::new(id(1000 + u128::from(c) * 10 + u128::from(l)), k, seq);
                ev.direction = Direction::Outbound;
                ev.other_leg = Some(id(u128::from(c) + 1));
                ev.hangup_cause = Some(h);
                r.core.on_event(ev);
            }
            Op::Result(c, o) => {
                reservations += 1;
                if matches!(o, 4 | 5) {
                    reserved.push(reservations);
                }
                r.deliver(ServiceResult {
                    call: id(u128::from(c) + 1),
                    outcome: outcome(o, reservations),
                });
            }
            Op::Advance(s) => r.advance(Duration::from_secs(u64::from(s))),
        }
    }
    // FreeSWITCH always ends a channel in the end — unless its events were lost: then the sweep must.
    if !lose_hangups {
        for c in 0..CALLS {
            let seq = r.next_seq() + 1_000_000;
            r.a_seq(u128::from(c) + 1, EventKind::ChannelHangup, seq);
        }
    }
    let cfg = config();
    r.advance(cfg.stale_after + cfg.linger + cfg.sweep_interval * 2);
    r.advance(cfg.sweep_interval * 2);

    prop_assert_eq!(r.core.live_calls(), 0);
    let stats = r.core.stats();
    let requests = r.requests();
    let cdrs: Vec<_> = requests
        .iter()
        .filter_map(|q| match q {
            ServiceRequest::WriteCdr(c) => Some(c),
            _ => None,
        })
        .collect();
    prop_assert_eq!(cdrs.len() as u64, stats.calls_created);
    prop_assert_eq!(
        stats.completed + stats.rejected + stats.failed,
        stats.calls_created
    );
    for c in &cdrs {
        prop_assert!(
            ["COMPLETED", "REJECTED", "FAILED"].contains(&c.final_state),
            "{:?}",
            c
        );
    }
    // Every reservation handed to the engine is settled exactly once, whether or not a call took it.
    let mut settled: HashMap<u64, u32> = HashMap::new();
    for q in &requests {
        if let ServiceRequest::CommitBalance { reservation, .. }
        | ServiceRequest::ReleaseBalance { reservation, .. } = q
        {
            *settled.entry(reservation.id).or_default() += 1;
        }
    }
    for n in reserved {
        let times = settled.get(&n).copied().unwrap_or(0);
        prop_assert_eq!(times, 1, "reservation {} settled {} times", n, times);
    }
    // Reservations made by the scripted services (ids above the delivered ones) are settled too.
    for (n, times) in &settled {
        prop_assert_eq!(*times, 1, "reservation {} settled {} times", n, times);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn every_call_ends_and_leaves(
        ops in prop::collection::vec(op(), 0..80),
        swaps in prop::collection::vec(prop::bool::weighted(0.2), 0..80),
        lose_hangups in prop::bool::weighted(0.3),
    ) {
        run(ScriptedServices::silent(), ops, swaps, lose_hangups)?;
    }

    /// The same with services that answer at once, so that many calls get all the way through.
    #[test]
    fn every_answered_call_ends_and_leaves(
        ops in prop::collection::vec(op(), 0..80),
        swaps in prop::collection::vec(prop::bool::weighted(0.2), 0..80),
        lose_hangups in prop::bool::weighted(0.3),
    ) {
        let mut services = ScriptedServices::all_yes();
        services.next_reservation = 1_000_000;
        run(services, ops, swaps, lose_hangups)?;
    }
}
