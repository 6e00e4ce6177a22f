//! Money is conserved whatever happens: random interleavings of reserve, extend, commit, release, top-up, crash
//! (with requests in flight) and recovery, against a real SQLite file reopened after each crash, checked against
//! a model of what was acknowledged.
//!
//! After every step the journal sums to every balance and every hold (`Store::check`), and the ledger's balances
//! are the model's. After a crash, exactly the reservations the model holds open (plus any in-flight reservation
//! that made it to disk) are recovered, each charged what was debited. At the end every reservation has been
//! settled exactly once, and the money in the ledger is what was paid in less what was charged.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use rtc_ledger::{
    AccountRef, Answer, CallInfo, CallLimits, Ledger, LedgerConfig, LedgerError, Location, Money,
    Op, Request, ReservationId, ReservationState, Store,
};

const ACCOUNTS: usize = 3;
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Step {
    Reserve(usize, i64),
    Extend(usize, i64, bool),
    Commit(usize, i64),
    Release(usize),
    TopUp(usize, i64, u8),
    SettleAgain(usize, bool),
    /// Submits these without waiting, then crashes; reopening recovers.
    CrashWith(Vec<InFlight>),
}

#[derive(Clone, Debug)]
enum InFlight {
    Reserve(usize, i64),
    Commit(usize, i64),
    Release(usize),
    TopUp(usize, i64, u8),
}

fn in_flight() -> impl Strategy<Value = InFlight> {
    prop_oneof![
        (0..ACCOUNTS, 0i64..3_000_000).prop_map(|(a, m)| InFlight::Reserve(a, m)),
        (any::<usize>(), 0i64..4_000_000).prop_map(|(i, c)| InFlight::Commit(i, c)),
        any::<usize>().prop_map(InFlight::Release),
        (0..ACCOUNTS, 1i64..2_000_000, 0u8..6).prop_map(|(a, m, r)| InFlight::TopUp(a, m, r)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..ACCOUNTS, 0i64..3_000_000).prop_map(|(a, m)| Step::Reserve(a, m)),
        6 => (any::<usize>(), 0i64..2_000_000, any::<bool>()).prop_map(|(i, d, p)| Step::Extend(i, d, p)),
        4 => (any::<usize>(), 0i64..4_000_000).prop_map(|(i, c)| Step::Commit(i, c)),
        3 => any::<usize>().prop_map(Step::Release),
        3 => (0..ACCOUNTS, 1i64..2_000_000, 0u8..6).prop_map(|(a, m, r)| Step::TopUp(a, m, r)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, c)| Step::SettleAgain(i, c)),
        1 => proptest::collection::vec(in_flight(), 0..6).prop_map(Step::CrashWith),
    ]
}

/// One reservation as the model knows it.
#[derive(Clone, Debug)]
struct Hold {
    id: ReservationId,
    account: usize,
    held: i64,
    debited: i64,
    state: ReservationState,
}

/// What the acknowledged requests say the ledger holds.
#[derive(Debug, Default)]
struct Model {
    balance: [i64; ACCOUNTS],
    holds: Vec<Hold>,
    /// Top-up references applied, per account, with their amounts.
    references: HashMap<(usize, u8), i64>,
    paid_in: i64,
    charged: i64,
}

impl Model {
    fn reserved(&self, account: usize) -> i64 {
        self.holds
            .iter()
            .filter(|h| h.account == account && h.state == ReservationState::Open)
            .map(|h| h.held)
            .sum()
    }

    fn available(&self, account: usize) -> i64 {
        self.balance[account] - self.reserved(account)
    }

    fn open(&self, pick: usize) -> Option<usize> {
        let open: Vec<usize> = (0..self.holds.len())
            .filter(|&i| self.holds[i].state == ReservationState::Open)
            .collect();
        (!open.is_empty()).then(|| open[pick % open.len()])
    }

    fn settle(&mut self, i: usize, cost: Option<i64>) {
        let h = &mut self.holds[i];
        let charge = cost.unwrap_or(0);
        self.balance[h.account] -= charge;
        self.charged += charge;
        h.state = if cost.is_some() {
            ReservationState::Committed
        } else {
            ReservationState::Released
        };
        h.held = 0;
    }

    fn top_up(&mut self, account: usize, amount: i64, reference: u8) {
        self.balance[account] += amount;
        self.paid_in += amount;
        self.references.insert((account, reference), amount);
    }
}

fn account_name(a: usize) -> String {
    format!("partner-{a}")
}

fn open_ledger(path: &Path) -> Ledger {
    Ledger::open(LedgerConfig::new(Location::File(path.to_owned()))).expect("ledger opens")
}

fn ask(l: &Ledger, op: Op) -> Result<Answer, LedgerError> {
    l.call(op, "test", WAIT)
}

fn reserve_op(account: usize, amount: i64, call: String) -> Op {
    Op::Reserve {
        account: AccountRef::Name(account_name(account)),
        amount: Money(amount),
        call,
        info: CallInfo::default(),
        ttl: Duration::from_secs(86_400),
        limits: CallLimits::default(),
    }
}

fn top_up_op(account: usize, amount: i64, reference: u8) -> Op {
    Op::TopUp {
        account: AccountRef::Name(account_name(account)),
        amount: Money(amount),
        reference: format!("ref-{reference}"),
        actor: "test".into(),
    }
}

/// Checks the file (read-only, beside the writer) and the model's balances against it.
fn verify(path: &Path, model: &Model) -> Result<(), TestCaseError> {
    let (store, _) = Store::open(path, rtc_ledger::Access::Read).expect("reader opens");
    let report = store.check().expect("check runs");
    prop_assert!(report.ok(), "{:#?}", report);
    for a in store.accounts().expect("accounts") {
        let i: usize = a
            .name
            .trim_start_matches("partner-")
            .parse()
            .expect("model account");
        prop_assert_eq!(a.balance.0, model.balance[i], "balance of {}", a.name);
        prop_assert_eq!(a.reserved.0, model.reserved(i), "reserved of {}", a.name);
    }
    let total: i64 = model.balance.iter().sum();
    prop_assert_eq!(total, model.paid_in - model.charged);
    Ok(())
}

fn run(opening: [i64; ACCOUNTS], steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rtc_core.db");
    let mut l = open_ledger(&path);
    let mut model = Model::default();
    for (a, amount) in opening.iter().enumerate() {
        ask(
            &l,
            Op::OpenAccount {
                name: account_name(a),
                credit_limit: Money::ZERO,
            },
        )
        .expect("account");
        ask(&l, top_up_op(a, *amount, 200)).expect("opening top-up");
        model.top_up(a, *amount, 200);
    }
    let mut calls = 0u64;
    for step in steps {
        match step {
            Step::Reserve(a, amount) => {
                calls += 1;
                let answer = ask(&l, reserve_op(a, amount, format!("call-{calls}")));
                if model.available(a) >= amount {
                    let Ok(Answer::Reserved { reservation, .. }) = answer else {
                        return Err(TestCaseError::fail(format!("not reserved: {answer:?}")));
                    };
                    model.holds.push(Hold {
                        id: reservation,
                        account: a,
                        held: amount,
                        debited: 0,
                        state: ReservationState::Open,
                    });
                } else {
                    prop_assert_eq!(
                        answer,
                        Ok(Answer::Insufficient {
                            available: Money(model.available(a))
                        })
                    );
                }
            }
            Step::Extend(pick, debit, partial) => {
                let Some(i) = model.open(pick) else { continue };
                let unit = if partial { 100_000 } else { 0 };
                let h = model.holds[i].clone();
                let answer = ask(
                    &l,
                    Op::Extend {
                        reservation: h.id,
                        debit: Money(debit),
                        unit: Money(unit),
                        ttl: Duration::from_secs(86_400),
                        info: None,
                    },
                );
                let room = (h.held + model.available(h.account).max(0) - h.debited).max(0);
                let granted = if h.debited + debit <= h.held || room >= debit {
                    debit
                } else if unit > 0 {
                    room / unit * unit
                } else {
                    0
                };
                if granted == 0 && debit > 0 {
                    prop_assert!(
                        matches!(answer, Ok(Answer::Insufficient { .. })),
                        "{:?}",
                        answer
                    );
                } else {
                    let h = &mut model.holds[i];
                    h.debited += granted;
                    h.held = h.held.max(h.debited);
                    let (held, debited) = (h.held, h.debited);
                    prop_assert!(
                        matches!(answer, Ok(Answer::Extended { granted: g, held: hd, debited: d, .. })
                            if g.0 == granted && hd.0 == held && d.0 == debited),
                        "{:?}",
                        answer
                    );
                }
            }
            Step::Commit(pick, cost) => {
                let Some(i) = model.open(pick) else { continue };
                let answer = ask(
                    &l,
                    Op::Commit {
                        reservation: model.holds[i].id,
                        account: Some(AccountRef::Name(account_name(model.holds[i].account))),
                        cost: Money(cost),
                        cdr: None,
                    },
                );
                prop_assert!(
                    matches!(answer, Ok(Answer::Settled(s)) if s.charged.0 == cost),
                    "{:?}",
                    answer
                );
                model.settle(i, Some(cost));
            }
            Step::Release(pick) => {
                let Some(i) = model.open(pick) else { continue };
                let answer = ask(
                    &l,
                    Op::Release {
                        reservation: model.holds[i].id,
                        account: None,
                        cdr: None,
                    },
                );
                prop_assert!(matches!(answer, Ok(Answer::Settled(_))), "{:?}", answer);
                model.settle(i, None);
            }
            Step::TopUp(a, amount, reference) => {
                let answer = ask(&l, top_up_op(a, amount, reference));
                match model.references.get(&(a, reference)) {
                    Some(&before) if before == amount => prop_assert!(
                        matches!(
                            answer,
                            Ok(Answer::Moved {
                                duplicate: true,
                                ..
                            })
                        ),
                        "{:?}",
                        answer
                    ),
                    Some(_) => prop_assert!(
                        matches!(answer, Err(LedgerError::ReferenceReused { .. })),
                        "{:?}",
                        answer
                    ),
                    None => {
                        prop_assert!(
                            matches!(
                                answer,
                                Ok(Answer::Moved {
                                    duplicate: false,
                                    ..
                                })
                            ),
                            "{:?}",
                            answer
                        );
                        model.top_up(a, amount, reference);
                    }
                }
            }
            Step::SettleAgain(pick, commit) => {
                let settled: Vec<&Hold> = model
                    .holds
                    .iter()
                    .filter(|h| h.state != ReservationState::Open)
                    .collect();
                if settled.is_empty() {
                    continue;
                }
                let h = settled[pick % settled.len()];
                let op = if commit {
                    Op::Commit {
                        reservation: h.id,
                        account: None,
                        cost: Money(1),
                        cdr: None,
                    }
                } else {
                    Op::Release {
                        reservation: h.id,
                        account: None,
                        cdr: None,
                    }
                };
                prop_assert_eq!(
                    ask(&l, op),
                    Err(LedgerError::NotOpen {
                        id: h.id,
                        state: h.state
                    })
                );
            }
            Step::CrashWith(flying) => {
                // Requests sent, not waited for: each may or may not be on disk when the process dies.
                let mut sent_reserves = Vec::new();
                let mut sent_settles = Vec::new();
                let mut sent_top_ups = Vec::new();
                for f in flying {
                    let op = match f {
                        InFlight::Reserve(a, amount) => {
                            calls += 1;
                            let call = format!("call-{calls}");
                            sent_reserves.push((call.clone(), a, amount));
                            reserve_op(a, amount, call)
                        }
                        InFlight::Commit(pick, cost) => {
                            let Some(i) = model.open(pick) else { continue };
                            if sent_settles.iter().any(|(j, _)| *j == i) {
                                continue;
                            }
                            sent_settles.push((i, Some(cost)));
                            Op::Commit {
                                reservation: model.holds[i].id,
                                account: None,
                                cost: Money(cost),
                                cdr: None,
                            }
                        }
                        InFlight::Release(pick) => {
                            let Some(i) = model.open(pick) else { continue };
                            if sent_settles.iter().any(|(j, _)| *j == i) {
                                continue;
                            }
                            sent_settles.push((i, None));
                            Op::Release {
                                reservation: model.holds[i].id,
                                account: None,
                                cdr: None,
                            }
                        }
                        InFlight::TopUp(a, amount, reference) => {
                            if model.references.contains_key(&(a, reference))
                                || sent_top_ups
                                    .iter()
                                    .any(|&(b, _, r)| (b, r) == (a, reference))
                            {
                                continue;
                            }
                            sent_top_ups.push((a, amount, reference));
                            top_up_op(a, amount, reference)
                        }
                    };
                    l.submit(Request::new(op, "test", None));
                }
                l.crash();
                // What reached the disk, read back without recovering anything yet.
                let (store, _) =
                    Store::open(&path, rtc_ledger::Access::Read).expect("reader opens");
                let rows = store.reservations().expect("reservations");
                for (i, cost) in sent_settles {
                    let row = rows
                        .iter()
                        .find(|r| r.id == model.holds[i].id)
                        .expect("row");
                    if row.state != ReservationState::Open {
                        model.settle(i, cost);
                    }
                }
                for (call, a, amount) in sent_reserves {
                    if let Some(row) = rows.iter().find(|r| r.call == call) {
                        model.holds.push(Hold {
                            id: row.id,
                            account: a,
                            held: amount,
                            debited: 0,
                            state: ReservationState::Open,
                        });
                    }
                }
                for (a, amount, reference) in sent_top_ups {
                    let applied = store
                        .history(&AccountRef::Name(account_name(a)), 10_000)
                        .expect("history")
                        .iter()
                        .any(|e| e.reference.as_deref() == Some(&format!("ref-{reference}")));
                    if applied {
                        model.top_up(a, amount, reference);
                    }
                }
                drop(store);
                l = open_ledger(&path);
                let mut expected: Vec<(ReservationId, i64)> = model
                    .holds
                    .iter()
                    .filter(|h| h.state == ReservationState::Open)
                    .map(|h| (h.id, h.debited))
                    .collect();
                expected.sort();
                let mut recovered: Vec<(ReservationId, i64)> = l
                    .recovered()
                    .iter()
                    .map(|r| (r.reservation, r.charged.0))
                    .collect();
                recovered.sort();
                prop_assert_eq!(&recovered, &expected);
                for h in model
                    .holds
                    .iter_mut()
                    .filter(|h| h.state == ReservationState::Open)
                {
                    model.balance[h.account] -= h.debited;
                    model.charged += h.debited;
                    h.state = ReservationState::Recovered;
                    h.held = 0;
                }
            }
        }
        verify(&path, &model)?;
    }
    // Settle what is left, then every reservation must have been settled exactly once.
    while let Some(i) = model.open(0) {
        let answer = ask(
            &l,
            Op::Release {
                reservation: model.holds[i].id,
                account: None,
                cdr: None,
            },
        );
        prop_assert!(answer.is_ok(), "{:?}", answer);
        model.settle(i, None);
    }
    drop(l);
    verify(&path, &model)?;
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let unsettled: i64 = conn
        .query_row(
            "SELECT count(*) FROM reservations r WHERE r.state = 'open' OR 1 != (
                 SELECT count(*) FROM journal j WHERE j.reservation = r.id
                 AND j.kind IN ('commit', 'release', 'expiry', 'recovery'))",
            [],
            |r| r.get(0),
        )
        .expect("query");
    prop_assert_eq!(unsettled, 0, "reservations not settled exactly once");
    let reservations: i64 = conn
        .query_row("SELECT count(*) FROM reservations", [], |r| r.get(0))
        .expect("query");
    prop_assert_eq!(reservations as usize, model.holds.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn money_is_conserved_through_crashes(
        opening in [1i64..8_000_000, 1i64..8_000_000, 1i64..8_000_000],
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        run(opening, steps)?;
    }
}
