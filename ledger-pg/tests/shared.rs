//! The ledger on a real, throwaway PostgreSQL (tests/pg-harness): the operations, no double spend between
//! nodes racing for the same money, shared call limits, a dead node taken over once, the database stopped and
//! started again mid-traffic. Each test prints one `skipped:` line where PostgreSQL is not installed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rtc_ledger::{
    AccountRef, Answer, CallInfo, CallLimits, CdrRecord, Ledger, LedgerConfig, LedgerError, Money,
    Op, ReservationId,
};
use rtc_ledger_pg::{PgConfig, check, ledger_config, nodes, open};
use rtc_pg_harness::{Postgres, start_or_skip};

const WAIT: Duration = Duration::from_secs(20);

fn units(n: i64) -> Money {
    Money(n * Money::MICROS_PER_UNIT)
}

fn node(pg: &Postgres, id: &str) -> Ledger {
    node_with(pg, id, Duration::from_secs(15), ledger_config())
}

fn node_with(pg: &Postgres, id: &str, lease: Duration, ledger: LedgerConfig) -> Ledger {
    let mut config = PgConfig::new(&pg.url());
    config.node_id = id.into();
    config.lease = lease;
    open(config, ledger).unwrap_or_else(|e| panic!("node {id}: {e}"))
}

fn call(l: &Ledger, op: Op) -> Result<Answer, LedgerError> {
    l.call(op, "test", WAIT)
}

fn extend(l: &Ledger, reservation: ReservationId, debit: Money) -> Result<Answer, LedgerError> {
    call(
        l,
        Op::Extend {
            reservation,
            debit,
            unit: Money::ZERO,
            ttl: Duration::from_secs(3600),
            info: None,
        },
    )
}

fn reserve_op(account: &str, amount: Money, uuid: &str, limits: CallLimits) -> Op {
    Op::Reserve {
        account: AccountRef::Name(account.into()),
        amount,
        call: uuid.into(),
        info: CallInfo {
            caller: "1000".into(),
            destination: "442071234567".into(),
            started_at_us: 1,
            ..CallInfo::default()
        },
        ttl: Duration::from_secs(3600),
        limits,
    }
}

fn cdr(uuid: &str, partner: &str, cost: Money) -> Box<CdrRecord> {
    Box::new(CdrRecord {
        uuid: uuid.into(),
        caller: "1000".into(),
        destination: "442071234567".into(),
        source_ip: None,
        partner: Some(partner.into()),
        final_state: "COMPLETED".into(),
        reason: None,
        hangup_cause: "NORMAL_CLEARING".into(),
        carrier: Some("carrier_a".into()),
        rate_per_minute: None,
        setup_us: None,
        talk_s: 60,
        billed_s: 60,
        cost,
        started_at_us: 1,
        ended_at_us: 2,
    })
}

fn account_with(l: &Ledger, name: &str, balance: Money) {
    call(
        l,
        Op::OpenAccount {
            name: name.into(),
            credit_limit: Money::ZERO,
        },
    )
    .unwrap();
    let moved = call(
        l,
        Op::TopUp {
            account: AccountRef::Name(name.into()),
            amount: balance,
            reference: format!("opening-{name}"),
            actor: "test".into(),
        },
    )
    .unwrap();
    assert!(matches!(moved, Answer::Moved { .. }), "{moved:?}");
}

fn balance_of(l: &Ledger, name: &str) -> (Money, Money, u64) {
    match call(l, Op::Account(AccountRef::Name(name.into()))).unwrap() {
        Answer::Account(a) => (a.balance, a.reserved, a.open_reservations),
        other => panic!("{other:?}"),
    }
}

fn assert_balanced(pg: &Postgres) -> rtc_ledger_pg::Totals {
    let totals = check(&pg.url()).unwrap();
    assert!(
        totals.discrepancies.is_empty(),
        "{:?}",
        totals.discrepancies
    );
    assert_eq!(totals.balances, totals.journal);
    totals
}

#[test]
fn every_operation_answers_as_the_embedded_ledger_does() {
    let Some(pg) = start_or_skip("every_operation_answers_as_the_embedded_ledger_does") else {
        return;
    };
    let l = node(&pg, "a");
    account_with(&l, "acme", units(10));
    // The same top-up again is a duplicate; the same reference with another amount is refused.
    let again = call(
        &l,
        Op::TopUp {
            account: AccountRef::Name("acme".into()),
            amount: units(10),
            reference: "opening-acme".into(),
            actor: "test".into(),
        },
    )
    .unwrap();
    assert_eq!(
        again,
        Answer::Moved {
            balance: units(10),
            duplicate: true
        }
    );
    let reused = call(
        &l,
        Op::TopUp {
            account: AccountRef::Name("acme".into()),
            amount: units(3),
            reference: "opening-acme".into(),
            actor: "test".into(),
        },
    );
    assert!(
        matches!(reused, Err(LedgerError::ReferenceReused { .. })),
        "{reused:?}"
    );
    // An import into an account that moved money is skipped.
    assert_eq!(
        call(
            &l,
            Op::Import {
                name: "acme".into(),
                amount: units(99),
                reference: "balances.csv:2".into()
            }
        )
        .unwrap(),
        Answer::Imported(false)
    );
    assert_eq!(
        call(
            &l,
            Op::Import {
                name: "globex".into(),
                amount: units(5),
                reference: "balances.csv:3".into()
            }
        )
        .unwrap(),
        Answer::Imported(true)
    );
    let r = match call(
        &l,
        reserve_op("acme", units(1), "c1", CallLimits::default()),
    )
    .unwrap()
    {
        Answer::Reserved {
            reservation,
            amount,
            available,
        } => {
            assert_eq!((amount, available), (units(1), units(9)));
            reservation
        }
        other => panic!("{other:?}"),
    };
    // Two debits: the first inside the hold, the second grows it.
    let e = extend(&l, r, Money(600_000)).unwrap();
    assert_eq!(
        e,
        Answer::Extended {
            granted: Money(600_000),
            held: units(1),
            debited: Money(600_000),
            available: units(9)
        }
    );
    let e = extend(&l, r, Money(600_000)).unwrap();
    assert_eq!(
        e,
        Answer::Extended {
            granted: Money(600_000),
            held: Money(1_200_000),
            debited: Money(1_200_000),
            available: Money(8_800_000)
        }
    );
    let settled = call(
        &l,
        Op::Commit {
            reservation: r,
            account: Some(AccountRef::Name("acme".into())),
            cost: Money(1_100_000),
            cdr: Some(cdr("c1", "acme", Money(1_100_000))),
        },
    )
    .unwrap();
    match settled {
        Answer::Settled(s) => {
            assert_eq!(s.charged, Money(1_100_000));
            assert_eq!(s.released, Money(100_000));
            assert_eq!(s.balance, Money(8_900_000));
        }
        other => panic!("{other:?}"),
    }
    // Settled at most once.
    let twice = call(
        &l,
        Op::Release {
            reservation: r,
            account: None,
            cdr: None,
        },
    );
    assert!(
        matches!(twice, Err(LedgerError::NotOpen { .. })),
        "{twice:?}"
    );
    assert!(matches!(
        call(
            &l,
            Op::Commit {
                reservation: ReservationId(999_999),
                account: None,
                cost: Money::ZERO,
                cdr: None
            }
        ),
        Err(LedgerError::UnknownReservation(_))
    ));
    assert!(matches!(
        call(
            &l,
            reserve_op("nobody", units(1), "c2", CallLimits::default())
        ),
        Err(LedgerError::UnknownAccount(_))
    ));
    assert_eq!(
        call(
            &l,
            reserve_op("globex", units(6), "c3", CallLimits::default())
        )
        .unwrap(),
        Answer::Insufficient {
            available: units(5)
        }
    );
    // A CDR stored once.
    assert_eq!(
        call(&l, Op::Cdr(cdr("c1", "acme", Money::ZERO))).unwrap(),
        Answer::CdrStored(false)
    );
    assert_eq!(
        call(&l, Op::Cdr(cdr("c4", "acme", Money::ZERO))).unwrap(),
        Answer::CdrStored(true)
    );
    assert_eq!(balance_of(&l, "acme"), (Money(8_900_000), Money::ZERO, 0));
    let totals = assert_balanced(&pg);
    assert_eq!(totals.open, 0);
    let cdrs = pg
        .psql("postgres", "SELECT count(*) FROM rtc_ledger.cdrs")
        .unwrap();
    assert_eq!(cdrs.trim(), "2");
    l.close();
}

/// Two nodes race for one partner's money: every reservation is covered at the instant it is made, the money
/// held never exceeds the balance, and what was charged is exactly what the balance lost.
#[test]
fn two_nodes_never_spend_the_same_money_twice() {
    let Some(pg) = start_or_skip("two_nodes_never_spend_the_same_money_twice") else {
        return;
    };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    account_with(&a, "acme", units(100));
    let granted = Arc::new(AtomicI64::new(0));
    let charged = Arc::new(AtomicI64::new(0));
    std::thread::scope(|s| {
        for (n, l) in [&a, &b, &a, &b].into_iter().enumerate() {
            let granted = granted.clone();
            let charged = charged.clone();
            s.spawn(move || {
                for i in 0..60 {
                    let uuid = format!("t{n}-{i}");
                    match call(
                        l,
                        reserve_op("acme", units(1), &uuid, CallLimits::default()),
                    ) {
                        Ok(Answer::Reserved { reservation, .. }) => {
                            granted.fetch_add(1, Ordering::Relaxed);
                            // Half the calls are charged a part of their hold, the others released.
                            let op = if i % 2 == 0 {
                                Op::Commit {
                                    reservation,
                                    account: None,
                                    cost: Money(700_000),
                                    cdr: Some(cdr(&uuid, "acme", Money(700_000))),
                                }
                            } else {
                                Op::Release {
                                    reservation,
                                    account: None,
                                    cdr: Some(cdr(&uuid, "acme", Money::ZERO)),
                                }
                            };
                            // Settle only some at once, so that holds pile up and the money runs out.
                            if i % 3 != 0 {
                                if let Ok(Answer::Settled(s)) = call(l, op) {
                                    charged.fetch_add(s.charged.0, Ordering::Relaxed);
                                } else {
                                    panic!("settlement refused");
                                }
                            }
                        }
                        Ok(Answer::Insufficient { .. }) => {}
                        other => panic!("{other:?}"),
                    }
                }
            });
        }
    });
    let (balance, reserved, _) = balance_of(&a, "acme");
    assert!(
        reserved <= balance,
        "held {reserved} over balance {balance}"
    );
    assert_eq!(
        units(100).0 - balance.0,
        charged.load(Ordering::Relaxed),
        "what the balance lost is what was charged"
    );
    assert!(
        granted.load(Ordering::Relaxed) > 100,
        "money was reused after settlements"
    );
    assert_balanced(&pg);
    a.close();
    b.close();
}

#[test]
fn call_limits_hold_across_nodes() {
    let Some(pg) = start_or_skip("call_limits_hold_across_nodes") else {
        return;
    };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    account_with(&a, "acme", units(1000));
    let limits = CallLimits {
        max_concurrent: 5,
        max_cps: 0,
        ..CallLimits::default()
    };
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let l = if i % 2 == 0 { &a } else { &b };
        match call(l, reserve_op("acme", units(1), &format!("c{i}"), limits)) {
            Ok(Answer::Reserved { reservation, .. }) => held.push(reservation),
            Err(LedgerError::LimitReached { which, max }) => {
                assert_eq!((which, max), ("max_concurrent", 5));
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((held.len(), refused), (5, 15));
    // A call that ends frees its place for the next, on any node.
    call(
        &b,
        Op::Release {
            reservation: held[0],
            account: None,
            cdr: None,
        },
    )
    .unwrap();
    assert!(matches!(
        call(&a, reserve_op("acme", units(1), "next", limits)),
        Ok(Answer::Reserved { .. })
    ));
    // Calls per second, counted in the ledger's second across nodes.
    account_with(&a, "globex", units(1000));
    let cps = CallLimits {
        max_concurrent: 0,
        max_cps: 3,
        ..CallLimits::default()
    };
    let clock_second = Instant::now();
    let mut ok = 0;
    for i in 0..8 {
        let l = if i % 2 == 0 { &a } else { &b };
        if let Ok(Answer::Reserved { .. }) =
            call(l, reserve_op("globex", Money::ZERO, &format!("g{i}"), cps))
        {
            ok += 1;
        }
    }
    // All eight were tried within one or two of the ledger's seconds.
    let seconds = if clock_second.elapsed() < Duration::from_millis(900) {
        2
    } else {
        3
    };
    assert!(
        ok >= 3 && ok <= 3 * seconds,
        "{ok} reservations in at most {seconds} s"
    );
    // The global limit, shared: all partners' calls on both nodes together.
    let open = check(&pg.url()).unwrap().open;
    let global = CallLimits {
        global_concurrent: open as u32 + 3,
        ..CallLimits::default()
    };
    let mut admitted = Vec::new();
    for i in 0..10 {
        let (l, partner) = if i % 2 == 0 {
            (&a, "acme")
        } else {
            (&b, "globex")
        };
        match call(
            l,
            reserve_op(partner, Money::ZERO, &format!("all{i}"), global),
        ) {
            Ok(Answer::Reserved { reservation, .. }) => admitted.push(reservation),
            Err(LedgerError::LimitReached { which, max }) => {
                assert_eq!(
                    (which, max),
                    ("global_concurrent", global.global_concurrent)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(admitted.len(), 3);
    call(
        &a,
        Op::Release {
            reservation: admitted[1],
            account: None,
            cdr: None,
        },
    )
    .unwrap();
    assert!(matches!(
        call(&b, reserve_op("acme", Money::ZERO, "all-next", global)),
        Ok(Answer::Reserved { .. })
    ));
    // The same count in a batch with an operator's query in it (run first, by a server function).
    let mixed = a
        .call_all(
            vec![
                Op::Accounts,
                reserve_op("globex", Money::ZERO, "all-mixed", global),
            ],
            "test",
            WAIT,
        )
        .unwrap();
    assert!(
        matches!(
            mixed[1],
            Err(LedgerError::LimitReached {
                which: "global_concurrent",
                ..
            })
        ),
        "{mixed:?}"
    );
    assert_balanced(&pg);
}

/// A node dies with calls open: a survivor settles them once its lease ran out, once, with two survivors racing.
#[test]
fn a_dead_nodes_reservations_are_settled_once_by_a_survivor() {
    let Some(pg) = start_or_skip("a_dead_nodes_reservations_are_settled_once_by_a_survivor") else {
        return;
    };
    let lease = Duration::from_millis(1500);
    let fast = || {
        let mut c = ledger_config();
        c.expiry_every = Duration::from_millis(100);
        c
    };
    let doomed = node_with(&pg, "doomed", lease, fast());
    account_with(&doomed, "acme", units(100));
    let mut talking = Vec::new();
    for i in 0..3 {
        let r = match call(
            &doomed,
            reserve_op("acme", units(1), &format!("d{i}"), CallLimits::default()),
        ) {
            Ok(Answer::Reserved { reservation, .. }) => reservation,
            other => panic!("{other:?}"),
        };
        extend(&doomed, r, Money(250_000)).unwrap();
        talking.push(r);
    }
    let survivors = [
        node_with(&pg, "s1", lease, fast()),
        node_with(&pg, "s2", lease, fast()),
    ];
    let died = Instant::now();
    doomed.crash();
    // Its id is refused to another process while the lease runs.
    let mut same = PgConfig::new(&pg.url());
    same.node_id = "s1".into();
    let in_use = open(same, ledger_config()).unwrap_err().to_string();
    assert!(in_use.contains("in use by a live node"), "{in_use}");
    let deadline = died + lease + Duration::from_secs(10);
    loop {
        let open = check(&pg.url()).unwrap().open;
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} reservations still open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled_after = died.elapsed();
    assert!(
        settled_after >= lease - Duration::from_millis(200),
        "{settled_after:?}"
    );
    let recoveries = pg
        .psql(
            "postgres",
            "SELECT count(*), COALESCE(sum(-balance_delta), 0) FROM rtc_ledger.journal WHERE kind = 'recovery'",
        )
        .unwrap();
    assert_eq!(
        recoveries.trim(),
        "3|750000",
        "each settled once, charged what was debited"
    );
    let cdrs = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM rtc_ledger.cdrs WHERE reason = 'recovered'",
        )
        .unwrap();
    assert_eq!(cdrs.trim(), "3");
    let states = nodes(&pg.url()).unwrap();
    let doomed_row = states.iter().find(|n| n.id == "doomed").unwrap();
    assert_eq!(doomed_row.state, "dead");
    assert!(doomed_row.taken_over_by.is_some());
    let stats: u64 = survivors
        .iter()
        .map(|s| s.stats().recovered_reservations)
        .sum();
    assert_eq!(stats, 3);
    let (balance, reserved, open) = balance_of(&survivors[0], "acme");
    assert_eq!(
        (balance, reserved, open),
        (Money(99_250_000), Money::ZERO, 0)
    );
    assert_balanced(&pg);
    // The dead node comes back under its id: it starts as a new run, nothing left to recover.
    let back = node_with(&pg, "doomed", lease, fast());
    assert!(back.recovered().is_empty());
    back.close();
    for s in survivors {
        s.close();
    }
}

/// A node killed and restarted at once under the same id settles what it left open itself.
#[test]
fn a_restarted_node_recovers_its_own_reservations() {
    let Some(pg) = start_or_skip("a_restarted_node_recovers_its_own_reservations") else {
        return;
    };
    let l = node(&pg, "n1");
    account_with(&l, "acme", units(10));
    let r = match call(
        &l,
        reserve_op("acme", units(2), "x1", CallLimits::default()),
    ) {
        Ok(Answer::Reserved { reservation, .. }) => reservation,
        other => panic!("{other:?}"),
    };
    l.crash();
    let l = node(&pg, "n1");
    let recovered = l.recovered();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].reservation, r);
    assert_eq!(recovered[0].released, units(2));
    assert_eq!(
        recovered[0]
            .cdr
            .as_ref()
            .and_then(|c| c.reason.clone())
            .as_deref(),
        Some("recovered")
    );
    assert_balanced(&pg);
    l.close();
}

/// PostgreSQL stops mid-traffic and comes back: reservations are refused at once meanwhile (the fail mode's
/// business), settlements wait and are applied once when it is back; nothing is charged twice or lost.
#[test]
fn settlements_wait_out_a_database_restart_and_apply_once() {
    let Some(mut pg) = start_or_skip("settlements_wait_out_a_database_restart_and_apply_once")
    else {
        return;
    };
    let mut config = ledger_config();
    config.retry_every = Duration::from_millis(200);
    let l = node_with(&pg, "a", Duration::from_secs(60), config);
    account_with(&l, "acme", units(100));
    let mut open_calls = Vec::new();
    for i in 0..10 {
        match call(
            &l,
            reserve_op("acme", units(1), &format!("p{i}"), CallLimits::default()),
        ) {
            Ok(Answer::Reserved { reservation, .. }) => open_calls.push(reservation),
            other => panic!("{other:?}"),
        }
    }
    pg.stop();
    // New calls: refused without waiting on the database.
    let started = Instant::now();
    let refused = call(
        &l,
        reserve_op("acme", units(1), "during", CallLimits::default()),
    );
    assert!(
        matches!(
            refused,
            Err(LedgerError::Storage(_) | LedgerError::Unavailable(_))
        ),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let quick = Instant::now();
    let again = call(
        &l,
        reserve_op("acme", units(1), "during2", CallLimits::default()),
    );
    assert!(
        matches!(
            again,
            Err(LedgerError::Unavailable(_) | LedgerError::Storage(_))
        ),
        "{again:?}"
    );
    assert!(quick.elapsed() < Duration::from_secs(3));
    // The calls that were up end meanwhile: their settlements wait.
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, r) in open_calls.iter().enumerate() {
        let tx = tx.clone();
        l.submit(rtc_ledger::Request::new(
            Op::Commit {
                reservation: *r,
                account: None,
                cost: Money(300_000),
                cdr: Some(cdr(&format!("p{i}"), "acme", Money(300_000))),
            },
            "test",
            Some(Box::new(move |a| {
                let _ = tx.send(a);
            })),
        ));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert!(l.stats().waiting > 0, "{:?}", l.stats());
    assert!(l.stats().breaker_open);
    pg.start_again().unwrap();
    for _ in 0..10 {
        let a = rx
            .recv_timeout(WAIT)
            .expect("settlement applied after the restart");
        assert!(matches!(a, Ok(Answer::Settled(_))), "{a:?}");
    }
    assert_eq!(l.stats().waiting, 0);
    assert!(!l.stats().breaker_open);
    let (balance, reserved, open) = balance_of(&l, "acme");
    assert_eq!((balance, reserved, open), (units(97), Money::ZERO, 0));
    let commits = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM rtc_ledger.journal WHERE kind = 'commit'",
        )
        .unwrap();
    assert_eq!(commits.trim(), "10");
    assert_balanced(&pg);
    l.close();
}

/// The set-based batch works out a batch's arithmetic itself: the same batches given to the embedded ledger and
/// to PostgreSQL get the same answers, holds draining one account within a batch, partial grants, a settlement
/// refused twice in one batch, a claim naming another account, and the balances after.
#[test]
fn a_batch_answers_as_the_embedded_ledger_answers_it() {
    let Some(pg) = start_or_skip("a_batch_answers_as_the_embedded_ledger_answers_it") else {
        return;
    };
    let shared = node(&pg, "a");
    let embedded = Ledger::open(LedgerConfig::new(rtc_ledger::Location::Memory)).unwrap();
    let mut transcripts = Vec::new();
    for l in [&embedded, &shared] {
        for (name, credit, balance) in [("alpha", 0, 10), ("beta", 2, 3)] {
            call(
                l,
                Op::OpenAccount {
                    name: name.into(),
                    credit_limit: units(credit),
                },
            )
            .unwrap();
            call(
                l,
                Op::TopUp {
                    account: AccountRef::Name(name.into()),
                    amount: units(balance),
                    reference: "opening".into(),
                    actor: "test".into(),
                },
            )
            .unwrap();
        }
        let mut transcript: Vec<String> = Vec::new();
        // One batch of reservations that drains both accounts.
        let reserves: Vec<Op> = (0..24)
            .map(|i| {
                let account = if i % 3 == 0 { "beta" } else { "alpha" };
                reserve_op(
                    account,
                    Money(700_000 + i * 10_000),
                    &format!("p{i}"),
                    CallLimits::default(),
                )
            })
            .collect();
        let answers = l.call_all(reserves, "test", WAIT).unwrap();
        let mut ids = Vec::new();
        for a in &answers {
            match a {
                Ok(Answer::Reserved {
                    reservation,
                    amount,
                    available,
                }) => {
                    transcript.push(format!("reserved #{} {amount} {available}", ids.len()));
                    ids.push(*reservation);
                }
                other => transcript.push(format!("{other:?}")),
            }
        }
        let ordinal = |id: ReservationId| {
            ids.iter()
                .position(|r| *r == id)
                .map_or_else(|| "unknown".to_string(), |p| format!("#{p}"))
        };
        // One batch of what the calls then do, in an order that makes each rule matter.
        let mut ops = Vec::new();
        for (k, r) in ids.iter().enumerate() {
            ops.push(Op::Extend {
                reservation: *r,
                debit: Money(400_000 * (k as i64 % 4)),
                unit: Money(if k % 2 == 0 { 100_000 } else { 0 }),
                ttl: Duration::from_secs(3600),
                info: None,
            });
        }
        for (k, r) in ids.iter().enumerate() {
            let uuid = format!("p{k}");
            ops.push(match k % 3 {
                0 => Op::Commit {
                    reservation: *r,
                    account: None,
                    cost: Money(500_000 + k as i64 * 30_000),
                    cdr: Some(cdr(&uuid, "x", Money(1))),
                },
                1 => Op::Release {
                    reservation: *r,
                    account: None,
                    cdr: Some(cdr(&uuid, "x", Money::ZERO)),
                },
                _ => Op::Commit {
                    reservation: *r,
                    account: Some(AccountRef::Name("beta".into())),
                    cost: Money(100_000),
                    cdr: None,
                },
            });
        }
        ops.push(Op::Release {
            reservation: ids[0],
            account: None,
            cdr: Some(cdr("p0", "x", Money::ZERO)),
        });
        ops.push(Op::Cdr(cdr("p1", "x", Money::ZERO)));
        ops.push(Op::Cdr(cdr("solo", "x", Money::ZERO)));
        ops.push(Op::Commit {
            reservation: ReservationId(987_654),
            account: None,
            cost: Money::ZERO,
            cdr: None,
        });
        for a in l.call_all(ops, "test", WAIT).unwrap() {
            transcript.push(match a {
                Ok(Answer::Settled(s)) => format!(
                    "settled {} {} {} {} {}",
                    s.account.0, s.charged, s.released, s.excess, s.balance
                ),
                Err(LedgerError::NotOpen { id, state }) => {
                    format!("not open {} {state:?}", ordinal(id))
                }
                Err(LedgerError::UnknownReservation(id)) => format!("unknown {}", ordinal(id)),
                Err(LedgerError::AccountMismatch { id, owner, claimed }) => {
                    format!("mismatch {} {} {}", ordinal(id), owner.0, claimed.0)
                }
                other => format!("{other:?}"),
            });
        }
        for name in ["alpha", "beta"] {
            transcript.push(format!("{:?}", balance_of(l, name)));
        }
        transcripts.push(transcript);
    }
    assert_eq!(transcripts[0].len(), transcripts[1].len());
    for (line, (e, s)) in transcripts[0].iter().zip(&transcripts[1]).enumerate() {
        assert_eq!(e, s, "line {line}: embedded against shared");
    }
    assert!(transcripts[0].iter().any(|l| l.contains("Insufficient")));
    assert!(transcripts[0].iter().any(|l| l.starts_with("not open")));
    assert!(transcripts[0].iter().any(|l| l.starts_with("mismatch")));
    assert_balanced(&pg);
}

/// TLS as the HTTP services have it: the ledger speaks TLS to a PostgreSQL that requires it and verifies the
/// server's certificate (a private CA given as `ca_file`); without that CA it refuses to connect.
#[test]
fn the_ledger_speaks_tls_and_verifies_the_servers_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
    let Some(mut pg) = start_or_skip("the_ledger_speaks_tls_and_verifies_the_servers_certificate")
    else {
        return;
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let data = pg.data_dir();
    let owner = std::fs::metadata(&data).unwrap();
    for (file, text) in [
        ("server.crt", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        let path = data.join(file);
        std::fs::write(&path, text).unwrap();
        chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    pg.psql("postgres", "ALTER SYSTEM SET ssl = on").unwrap();
    pg.stop();
    pg.start_again().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut config = PgConfig::new(&format!("{}?sslmode=require", pg.url()));
    config.node_id = "tls".into();
    config.timeout = Duration::from_secs(2);
    let refused = open(config.clone(), ledger_config())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("cannot connect"), "{refused}");
    config.ca_file = Some(ca_file);
    let l = open(config, ledger_config()).unwrap();
    account_with(&l, "acme", units(1));
    assert_eq!(balance_of(&l, "acme").0, units(1));
    let encrypted: i64 = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE s.ssl AND a.application_name = 'mod_rtc_core tls'",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(encrypted >= 1, "the ledger's connections are encrypted");
    l.close();
}
