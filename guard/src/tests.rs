//! The guard's rules, one pattern at a time, each beside normal traffic of the same partner.

use std::time::Duration;

use super::*;

fn units(n: i64) -> Money {
    Money(n * Money::MICROS_PER_UNIT)
}

fn rules() -> FraudRules {
    FraudRules {
        enabled: true,
        block_for: Duration::from_secs(600),
        block_hangup: true,
        ..FraudRules::default()
    }
}

fn call<'a>(partner: PartnerKey, destination: &'a str) -> NewCall<'a> {
    NewCall {
        partner,
        destination,
        reserve: units(1),
        own: None,
    }
}

fn ended<'a>(partner: PartnerKey, destination: &'a str, talk_s: u64) -> EndedCall<'a> {
    EndedCall {
        partner,
        destination,
        admitted: true,
        reserved: units(1),
        charged: Money::ZERO,
        answered: true,
        talk_s,
    }
}

#[test]
fn destinations_are_digits_and_at_most_e164_long() {
    assert_eq!(normalize_destination("+4420", 15), Ok("4420"));
    assert_eq!(normalize_destination("4420", 15), Ok("4420"));
    assert_eq!(
        normalize_destination("", 15),
        Err(InvalidDestination::Empty)
    );
    assert_eq!(
        normalize_destination("+", 15),
        Err(InvalidDestination::Empty)
    );
    assert_eq!(
        normalize_destination("44a0", 15),
        Err(InvalidDestination::NotDigits(2))
    );
    assert_eq!(
        normalize_destination("++44", 15),
        Err(InvalidDestination::NotDigits(1))
    );
    assert_eq!(
        normalize_destination(&"9".repeat(16), 15),
        Err(InvalidDestination::TooLong(16))
    );
    assert_eq!(
        normalize_destination(&"9".repeat(504), 0).map(str::len),
        Ok(504)
    );
    assert!(
        InvalidDestination::NotDigits(2)
            .to_string()
            .contains("position 3")
    );
}

#[test]
fn nothing_runs_when_disabled() {
    let mut g = Guard::new(FraudRules {
        pumping: Some(Pumping {
            per_number: 1,
            per_prefix: 0,
            prefix_digits: 6,
            action: FraudAction::Refuse,
        }),
        ..FraudRules::default()
    });
    for _ in 0..5 {
        assert!(g.admit(call(1, "4420"), 0).passes());
    }
}

#[test]
fn risky_classes_are_refused_unless_the_partner_is_allowed_and_carry_their_caps() {
    let mut g = Guard::new(FraudRules {
        classes: vec![DestClass {
            name: "premium".into(),
            prefixes: vec!["1900".into(), "44870".into()],
            action: Some(FraudAction::Refuse),
            max_call_cost: Some(units(5)),
            max_duration: Some(Duration::from_secs(300)),
        }],
        ..rules()
    });
    let v = g.admit(call(1, "+19005550000"), 1000);
    assert_eq!(v.refused, Some(Rule::RiskyDestination));
    assert_eq!(v.hits.len(), 1);
    assert_eq!(v.hits[0].class.as_deref(), Some("premium"));
    assert!(v.hits[0].detail.contains("premium"), "{}", v.hits[0].detail);
    // The same partner's normal calls pass.
    let v = g.admit(call(1, "4420123"), 1000);
    assert!(v.passes() && v.hits.is_empty() && v.class == 0);
    // A partner allowed the class passes, with the class's caps.
    let own = PartnerFraud {
        allow: vec!["premium".into()],
        ..PartnerFraud::default()
    };
    let v = g.admit(
        NewCall {
            own: Some(&own),
            ..call(2, "448701234")
        },
        1000,
    );
    assert!(v.passes() && v.hits.is_empty());
    let class = g.class(v.class).unwrap();
    assert_eq!(
        (class.max_call_cost, class.max_duration),
        (Some(units(5)), Some(Duration::from_secs(300)))
    );
    assert_eq!(
        g.stats().hits[Rule::RiskyDestination.index()][FraudAction::Refuse.index()],
        1
    );
}

#[test]
fn pumping_one_number_is_refused_while_other_numbers_pass_and_ended_calls_free_places() {
    let mut g = Guard::new(FraudRules {
        pumping: Some(Pumping {
            per_number: 3,
            per_prefix: 5,
            prefix_digits: 6,
            action: FraudAction::Refuse,
        }),
        ..rules()
    });
    for _ in 0..3 {
        assert!(g.admit(call(1, "37120000001"), 0).passes());
    }
    let v = g.admit(call(1, "37120000001"), 0);
    assert_eq!(v.refused, Some(Rule::PumpingNumber));
    assert_eq!((v.hits[0].value, v.hits[0].limit), (4.0, 3.0));
    // Another partner, and other numbers of the same partner, pass.
    assert!(g.admit(call(2, "37120000001"), 0).passes());
    assert!(g.admit(call(1, "4420000001"), 0).passes());
    // Two more into the same prefix fill it; the next is refused as prefix pumping.
    assert!(g.admit(call(1, "37120000002"), 0).passes());
    assert!(g.admit(call(1, "37120000003"), 0).passes());
    let v = g.admit(call(1, "37120000004"), 0);
    assert_eq!(v.refused, Some(Rule::PumpingPrefix));
    // One call to the number ends: one place frees.
    g.ended(ended(1, "37120000001", 30), 1000);
    g.ended(ended(1, "37120000002", 30), 1000);
    assert!(g.admit(call(1, "37120000001"), 2000).passes());
}

#[test]
fn a_block_refuses_the_partners_new_calls_for_its_cooldown_and_cuts_the_flagged_ones() {
    let mut g = Guard::new(FraudRules {
        pumping: Some(Pumping {
            per_number: 2,
            per_prefix: 0,
            prefix_digits: 6,
            action: FraudAction::Block,
        }),
        ..rules()
    });
    assert!(g.admit(call(1, "88160001"), 0).passes());
    assert!(g.admit(call(1, "88160001"), 0).passes());
    let v = g.admit(call(1, "88160001"), 5_000);
    assert_eq!(v.refused, Some(Rule::PumpingNumber));
    let cut = v.cut.expect("block-hangup cuts");
    assert_eq!(cut.scope, Scope::Number("88160001".into()));
    assert!(g.in_scope(&cut.scope, "+88160001") && !g.in_scope(&cut.scope, "4420"));
    // Blocked: every new call of the partner, any destination, without a new hit.
    let v = g.admit(call(1, "4420"), 6_000);
    assert!(v.blocked && v.hits.is_empty());
    assert!(g.admit(call(2, "4420"), 6_000).passes());
    assert_eq!(g.blocks(6_000).len(), 1);
    assert_eq!(g.stats().blocked_refusals, 1);
    // The cool-down passes.
    assert!(g.admit(call(1, "4420"), 5_000 + 600_000).passes());
    assert!(g.blocks(5_000 + 600_000).is_empty());
    // Blocked again, then lifted by hand.
    g.admit(call(1, "88160001"), 700_000);
    assert!(g.admit(call(1, "4420"), 700_001).blocked);
    assert!(g.unblock(1, 700_002).is_some());
    assert!(g.admit(call(1, "4420"), 700_003).passes());
}

#[test]
fn spend_in_the_rolling_hour_counts_charges_and_reservations() {
    let mut g = Guard::new(FraudRules {
        spend_hour: Some(Limit {
            most: units(10),
            action: FraudAction::Refuse,
        }),
        ..rules()
    });
    // Four calls hold 1.00 each and spend 2.00 each: 4 held + 8 spent.
    for _ in 0..4 {
        assert!(g.admit(call(1, "4420"), 0).passes());
        g.reserved(1, units(1));
    }
    let mut alerts = 0;
    for _ in 0..4 {
        alerts += g.spent(1, "4420", units(2), None, 1000).hits.len();
    }
    // Past 10.00 (4 held + 8 spent) while the calls talk: an alert (reported once a minute), no block.
    assert_eq!(alerts, 1);
    assert!(g.blocks(1000).is_empty());
    assert_eq!(g.spend_hour(1, 1000), units(12));
    let v = g.admit(call(1, "4420"), 2000);
    assert_eq!(v.refused, Some(Rule::SpendHour));
    assert_eq!(v.hits[0].limit, 10.0);
    // The partner's own limit overrides the rule.
    let own = PartnerFraud {
        spend_hour: Some(units(100)),
        ..PartnerFraud::default()
    };
    assert!(
        g.admit(
            NewCall {
                own: Some(&own),
                ..call(1, "4420")
            },
            2000
        )
        .passes()
    );
    // An hour later the charges are out of the window; the live reservations still count.
    for _ in 0..5 {
        g.ended(
            EndedCall {
                charged: Money::ZERO,
                ..ended(1, "4420", 120)
            },
            3_000,
        );
    }
    assert_eq!(g.spend_hour(1, 3_700_000), Money::ZERO);
    assert!(g.admit(call(1, "4420"), 3_700_000).passes());
}

#[test]
fn spend_past_the_limit_while_calls_talk_blocks_and_cuts_the_partner() {
    let mut g = Guard::new(FraudRules {
        spend_day: Some(Limit {
            most: units(3),
            action: FraudAction::Block,
        }),
        ..rules()
    });
    assert!(g.admit(call(1, "4420"), 0).passes());
    assert!(g.spent(1, "4420", units(2), None, 1000).hits.is_empty());
    let v = g.spent(1, "4420", units(2), None, 2000);
    assert_eq!(v.hits[0].rule, Rule::SpendDay);
    assert_eq!(v.hits[0].action, FraudAction::Block);
    assert_eq!(v.cut.unwrap().scope, Scope::Partner);
}

#[test]
fn a_burst_to_new_destinations_hits_and_calls_to_known_ones_pass() {
    let mut g = Guard::new(FraudRules {
        burst: Some(Burst {
            factor: 10.0,
            min_per_second: 2.0,
            window: Duration::from_secs(10),
            baseline: Duration::from_secs(600),
            memory: Duration::from_secs(3600),
            memory_size: 1000,
            action: FraudAction::Refuse,
        }),
        ..rules()
    });
    // Normal traffic: one new destination every two seconds for ten minutes, and the same few known ones.
    for s in 0..600u64 {
        if s % 2 == 0 {
            let d = format!("44200{s:05}");
            assert!(g.admit(call(1, &d), s * 1000).passes());
            g.ended(ended(1, &d, 60), s * 1000 + 1);
        }
        let v = g.admit(call(1, "4420000001"), s * 1000 + 2);
        assert!(v.passes(), "{s}: {:?}", v.hits);
        g.ended(ended(1, "4420000001", 60), s * 1000 + 3);
    }
    // A burst: 20 new destinations a second for ten seconds (a hacked PBX dialling premium numbers).
    let mut refused = 0;
    for s in 0..10u64 {
        for n in 0..20u64 {
            let d = format!("8816{s:02}{n:04}");
            let v = g.admit(call(1, &d), 601_000 + s * 1000 + n * 10);
            if v.refused == Some(Rule::Burst) {
                refused += 1;
            }
        }
    }
    // Past 5/s (10 x its usual 0.5/s): from the sixth call of the first second on.
    assert!(refused >= 190, "{refused}");
    // Meanwhile, a known destination passes.
    assert!(g.admit(call(1, "4420000001"), 601_500).passes());
}

#[test]
fn a_run_of_short_answered_calls_hits_and_a_longer_call_resets_it() {
    let mut g = Guard::new(FraudRules {
        short_calls: Some(ShortCalls {
            max_talk: Duration::from_secs(3),
            run: 5,
            action: FraudAction::Alert,
        }),
        ..rules()
    });
    for _ in 0..4 {
        g.admit(call(1, "4420"), 0);
        assert!(g.ended(ended(1, "4420", 2), 0).hits.is_empty());
    }
    g.admit(call(1, "4420"), 0);
    assert!(g.ended(ended(1, "4420", 60), 0).hits.is_empty());
    for i in 0..5 {
        g.admit(call(1, "4420"), 0);
        let v = g.ended(ended(1, "4420", 1), 0);
        assert_eq!(v.hits.len(), usize::from(i == 4));
    }
    // Alerts let calls through and repeated alerts within a minute are counted, not reported.
    for _ in 0..5 {
        g.admit(call(1, "4420"), 1000);
        g.ended(ended(1, "4420", 1), 1000);
    }
    assert_eq!(
        g.stats().hits[Rule::ShortCalls.index()][FraudAction::Alert.index()],
        2
    );
    assert_eq!(g.recent().count(), 1);
}
