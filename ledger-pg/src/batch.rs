//! The calls' operations (reserve, extend, commit, release, CDR), set-based: worked out in memory under the row
//! locks the batch takes, then written with a handful of multi-row statements, whatever the batch's size.
//!
//! The batch first locks, in id order, every account it touches and every reservation it names (`FOR UPDATE`), and
//! reads them: from then until its commit no other node can change them, so the arithmetic done here on what was
//! read is that of the operations one after the other, in the batch's order, by the SQLite store's rules
//! (`ledger/src/store.rs`). What it changed is then written in one statement per table (reservations new and
//! changed, journal, accounts, totals, CDRs), pipelined, and committed. An operator's operations in the same batch
//! (a top-up, an import, a query) run before, one server function each (`crate::PgBackend::apply`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rtc_ledger::{
    AccountId, AccountRef, Answer, CdrRecord, EntryKind, LedgerError, Op, ReservationId,
    ReservationState, Settlement,
};
use rtc_money::Money;
use tokio_postgres::types::ToSql;

use crate::all;

/// Whether `op` is what calls do (reserve, extend, commit, release, CDR): run here, set-based.
pub(crate) fn is_call_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Reserve { .. }
            | Op::Extend { .. }
            | Op::Commit { .. }
            | Op::Release { .. }
            | Op::Cdr(_)
    )
}

/// The accounts `ops` touch: by name, by id, and through the reservations they name (sorted, for the lock).
pub(crate) fn accounts_named(ops: &[(&Op, &'static str)]) -> (Vec<String>, Vec<i64>, Vec<i64>) {
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut reservations = BTreeSet::new();
    let mut name_of = |account: &AccountRef| match account {
        AccountRef::Id(id) => {
            ids.insert(id.0);
        }
        AccountRef::Name(n) => {
            names.insert(n.clone());
        }
    };
    for (op, _) in ops {
        match op {
            Op::Reserve { account, .. }
            | Op::TopUp { account, .. }
            | Op::Adjust { account, .. } => name_of(account),
            Op::Import { name, .. } => name_of(&AccountRef::Name(name.clone())),
            Op::Extend { reservation, .. } => {
                reservations.insert(reservation.0 as i64);
            }
            Op::Commit {
                reservation,
                account,
                ..
            }
            | Op::Release {
                reservation,
                account,
                ..
            } => {
                reservations.insert(reservation.0 as i64);
                if let Some(account) = account {
                    name_of(account);
                }
            }
            _ => {}
        }
    }
    (
        names.into_iter().collect(),
        ids.into_iter().collect(),
        reservations.into_iter().collect(),
    )
}

/// An account as the batch holds it (locked).
struct Account {
    balance: i64,
    reserved: i64,
    credit_limit: i64,
    open_calls: i32,
    cps_second: i64,
    cps_count: i32,
    changed: bool,
}

impl Account {
    fn available(&self) -> i64 {
        self.balance
            .saturating_add(self.credit_limit)
            .saturating_sub(self.reserved)
    }
}

/// A reservation as the batch holds it (locked, or made by the batch).
struct Reservation {
    account: i64,
    call: String,
    held: i64,
    debited: i64,
    state: ReservationState,
    extensions: i32,
    created_at_us: i64,
    updated_at_us: i64,
    expires_at_us: i64,
    settled_at_us: Option<i64>,
    settled_by: Option<String>,
    charged: Option<i64>,
    info: Option<String>,
    /// Made by this batch (inserted), else changed (updated).
    new: bool,
    changed: bool,
}

/// One journal row to insert.
struct Entry {
    account: i64,
    kind: EntryKind,
    balance_delta: i64,
    reserved_delta: i64,
    balance_after: i64,
    reserved_after: i64,
    reservation: i64,
    call: String,
    actor: &'static str,
}

/// Everything the batch read, and what it changed.
struct Snapshot<'n> {
    node: &'n str,
    now: i64,
    accounts: BTreeMap<i64, Account>,
    by_name: HashMap<String, i64>,
    reservations: BTreeMap<i64, Reservation>,
    /// Ids taken from the sequence for the batch's new reservations, in order.
    fresh: std::vec::IntoIter<i64>,
    journal: Vec<Entry>,
    /// CDRs to store, the first per call kept; with the answer slot of a `Cdr` op when there is one.
    cdrs: Vec<(&'n CdrRecord, Option<usize>)>,
    /// All the nodes' calls (`rtc_ledger.totals`, locked): open, and this second's.
    totals: Totals,
}

/// `rtc_ledger.totals` as the batch holds it.
struct Totals {
    open_calls: i32,
    cps_second: i64,
    cps_count: i32,
    changed: bool,
}

/// Runs a set-based batch inside `tx` (the caller commits). Answers in order, like the functions would give.
pub(crate) async fn run(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &str,
    ops: &[(&Op, &'static str)],
    now: i64,
) -> Result<Vec<Result<Answer, LedgerError>>, tokio_postgres::Error> {
    let (names, ids, reservation_ids) = accounts_named(ops);
    let new_reservations = ops
        .iter()
        .filter(|(op, _)| matches!(op, Op::Reserve { .. }))
        .count() as i64;
    // Accounts first, in id order, then the reservations (their accounts are among those locked): the same order
    // as every other writer, so no deadlock.
    let (accounts, reservations, fresh, totals) = futures_util::future::join4(
        all(
            tx,
            "SELECT id, name, balance, reserved, credit_limit, open_calls, cps_second, cps_count
             FROM rtc_ledger.accounts
             WHERE name = ANY($1) OR id = ANY($2)
                OR id IN (SELECT account FROM rtc_ledger.reservations WHERE id = ANY($3))
             ORDER BY id FOR UPDATE",
            &[&names, &ids, &reservation_ids],
        ),
        all(
            tx,
            "SELECT id, account, call, held, debited, state, extensions, created_at_us, updated_at_us,
                    expires_at_us, settled_at_us, settled_by, charged, info
             FROM rtc_ledger.reservations WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&reservation_ids],
        ),
        all(
            tx,
            "SELECT nextval('rtc_ledger.reservations_id_seq') FROM generate_series(1, $1::bigint)",
            &[&new_reservations],
        ),
        // Sent after the accounts' lock on the same connection, so taken after it, as everywhere.
        all(
            tx,
            "SELECT open_calls, cps_second, cps_count FROM rtc_ledger.totals WHERE id = 1 FOR UPDATE",
            &[],
        ),
    )
    .await;
    let totals = totals?;
    let totals = totals.first().map_or(
        Totals {
            open_calls: 0,
            cps_second: 0,
            cps_count: 0,
            changed: false,
        },
        |r| Totals {
            open_calls: r.get(0),
            cps_second: r.get(1),
            cps_count: r.get(2),
            changed: false,
        },
    );
    let mut snap = Snapshot {
        node,
        now,
        accounts: BTreeMap::new(),
        by_name: HashMap::new(),
        reservations: BTreeMap::new(),
        fresh: fresh?
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<Vec<_>>()
            .into_iter(),
        journal: Vec::new(),
        cdrs: Vec::new(),
        totals,
    };
    for r in accounts? {
        let id: i64 = r.get(0);
        let name: String = r.get(1);
        snap.by_name.insert(name, id);
        snap.accounts.insert(
            id,
            Account {
                balance: r.get(2),
                reserved: r.get(3),
                credit_limit: r.get(4),
                open_calls: r.get(5),
                cps_second: r.get(6),
                cps_count: r.get(7),
                changed: false,
            },
        );
    }
    for r in reservations? {
        let state: String = r.get(5);
        snap.reservations.insert(
            r.get(0),
            Reservation {
                account: r.get(1),
                call: r.get(2),
                held: r.get(3),
                debited: r.get(4),
                state: ReservationState::from_name(&state).unwrap_or(ReservationState::Committed),
                extensions: r.get(6),
                created_at_us: r.get(7),
                updated_at_us: r.get(8),
                expires_at_us: r.get(9),
                settled_at_us: r.get(10),
                settled_by: r.get(11),
                charged: r.get(12),
                info: r.get(13),
                new: false,
                changed: false,
            },
        );
    }
    let mut answers: Vec<Result<Answer, LedgerError>> = Vec::with_capacity(ops.len());
    for (i, (op, actor)) in ops.iter().enumerate() {
        let answer = match op.check_amounts() {
            Err(e) => Err(e),
            Ok(()) => snap.apply(op, actor, i),
        };
        if let Some(cdr) = op.settlement_cdr() {
            snap.cdrs.push((cdr, None));
        }
        answers.push(answer);
    }
    let stored = snap.write(tx).await?;
    // A `Cdr` op's answer says whether its record was the one stored.
    for (i, (op, _)) in ops.iter().enumerate() {
        if let Op::Cdr(cdr) = op
            && let Ok(Answer::CdrStored(s)) = &mut answers[i]
        {
            *s = stored.contains(&(cdr.uuid.as_str(), i));
        }
    }
    Ok(answers)
}

fn kind_of(state: ReservationState) -> EntryKind {
    match state {
        ReservationState::Committed => EntryKind::Commit,
        _ => EntryKind::Release,
    }
}

impl<'n> Snapshot<'n> {
    fn account_id(&self, account: &AccountRef) -> Option<i64> {
        match account {
            AccountRef::Id(id) => self.accounts.contains_key(&id.0).then_some(id.0),
            AccountRef::Name(name) => self.by_name.get(name).copied(),
        }
    }

    /// Moves an account's money and journals it; the figures after.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        account: i64,
        kind: EntryKind,
        balance_delta: i64,
        reserved_delta: i64,
        calls_delta: i32,
        reservation: i64,
        call: &str,
        actor: &'static str,
    ) -> Result<(i64, i64), LedgerError> {
        let a = self
            .accounts
            .get_mut(&account)
            .ok_or_else(|| LedgerError::UnknownAccount(format!("account id {account}")))?;
        let balance = a
            .balance
            .checked_add(balance_delta)
            .ok_or(LedgerError::Overflow(Money(balance_delta)))?;
        let reserved = a
            .reserved
            .checked_add(reserved_delta)
            .ok_or(LedgerError::Overflow(Money(reserved_delta)))?;
        a.balance = balance;
        a.reserved = reserved;
        a.open_calls += calls_delta;
        a.changed = true;
        if calls_delta != 0 {
            self.totals.open_calls += calls_delta;
            self.totals.changed = true;
        }
        self.journal.push(Entry {
            account,
            kind,
            balance_delta,
            reserved_delta,
            balance_after: balance,
            reserved_after: reserved,
            reservation,
            call: call.to_string(),
            actor,
        });
        Ok((balance, reserved))
    }

    fn apply(
        &mut self,
        op: &'n Op,
        actor: &'static str,
        index: usize,
    ) -> Result<Answer, LedgerError> {
        match op {
            Op::Reserve {
                account,
                amount,
                call,
                info,
                ttl,
                limits,
            } => {
                let fresh = self.fresh.next();
                let id = self
                    .account_id(account)
                    .ok_or_else(|| LedgerError::UnknownAccount(account.to_string()))?;
                let second = self.now / 1_000_000;
                let a = &self.accounts[&id];
                if limits.max_concurrent > 0
                    && a.open_calls as i64 >= i64::from(limits.max_concurrent)
                {
                    return Err(LedgerError::LimitReached {
                        which: "max_concurrent",
                        max: limits.max_concurrent,
                    });
                }
                if limits.max_cps > 0
                    && a.cps_second == second
                    && a.cps_count as i64 >= i64::from(limits.max_cps)
                {
                    return Err(LedgerError::LimitReached {
                        which: "max_cps",
                        max: limits.max_cps,
                    });
                }
                let t = &self.totals;
                if limits.global_concurrent > 0
                    && i64::from(t.open_calls) >= i64::from(limits.global_concurrent)
                {
                    return Err(LedgerError::LimitReached {
                        which: "global_concurrent",
                        max: limits.global_concurrent,
                    });
                }
                if limits.global_cps > 0
                    && t.cps_second == second
                    && i64::from(t.cps_count) >= i64::from(limits.global_cps)
                {
                    return Err(LedgerError::LimitReached {
                        which: "global_cps",
                        max: limits.global_cps,
                    });
                }
                let avail = a.available();
                if avail < amount.0 {
                    return Ok(Answer::Insufficient {
                        available: Money(avail),
                    });
                }
                let reservation = fresh.ok_or_else(|| {
                    LedgerError::Storage("the batch ran out of reservation ids".into())
                })?;
                let expires = self
                    .now
                    .saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64);
                self.reservations.insert(
                    reservation,
                    Reservation {
                        account: id,
                        call: call.clone(),
                        held: amount.0,
                        debited: 0,
                        state: ReservationState::Open,
                        extensions: 0,
                        created_at_us: self.now,
                        updated_at_us: self.now,
                        expires_at_us: expires,
                        settled_at_us: None,
                        settled_by: None,
                        charged: None,
                        info: Some(serde_json::to_string(info).unwrap_or_default()),
                        new: true,
                        changed: true,
                    },
                );
                {
                    let a = self.accounts.get_mut(&id).expect("account read above");
                    if a.cps_second == second {
                        a.cps_count += 1;
                    } else {
                        a.cps_second = second;
                        a.cps_count = 1;
                    }
                }
                {
                    let t = &mut self.totals;
                    if t.cps_second == second {
                        t.cps_count += 1;
                    } else {
                        t.cps_second = second;
                        t.cps_count = 1;
                    }
                }
                self.post(
                    id,
                    EntryKind::Reserve,
                    0,
                    amount.0,
                    1,
                    reservation,
                    call,
                    actor,
                )?;
                Ok(Answer::Reserved {
                    reservation: ReservationId(reservation as u64),
                    amount: *amount,
                    available: Money(self.accounts[&id].available()),
                })
            }
            Op::Extend {
                reservation,
                debit,
                unit,
                ttl,
                info,
            } => {
                let rid = reservation.0 as i64;
                let now = self.now;
                let expires = now.saturating_add(ttl.as_micros().min(i64::MAX as u128) as i64);
                let r = self
                    .reservations
                    .get(&rid)
                    .ok_or(LedgerError::UnknownReservation(*reservation))?;
                if r.state != ReservationState::Open {
                    return Err(LedgerError::NotOpen {
                        id: *reservation,
                        state: r.state,
                    });
                }
                let avail = self.accounts[&r.account].available();
                let wanted = r
                    .debited
                    .checked_add(debit.0)
                    .ok_or(LedgerError::Overflow(*debit))?;
                let room = r
                    .held
                    .saturating_add(avail.max(0))
                    .saturating_sub(r.debited)
                    .max(0);
                let granted = if wanted <= r.held || room >= debit.0 {
                    debit.0
                } else if unit.0 > 0 {
                    room / unit.0 * unit.0
                } else {
                    0
                };
                let info = info
                    .as_ref()
                    .map(|i| serde_json::to_string(i).unwrap_or_default());
                let r = self.reservations.get_mut(&rid).expect("looked up above");
                r.updated_at_us = now;
                r.expires_at_us = expires;
                if info.is_some() {
                    r.info = info;
                }
                r.changed = true;
                if granted == 0 && debit.0 > 0 {
                    return Ok(Answer::Insufficient {
                        available: Money(avail),
                    });
                }
                let debited = r.debited + granted;
                let grow = (debited - r.held).max(0);
                let held = r.held + grow;
                r.debited = debited;
                r.held = held;
                r.extensions += 1;
                let (account, call) = (r.account, r.call.clone());
                if grow > 0 {
                    self.post(account, EntryKind::Extend, 0, grow, 0, rid, &call, actor)?;
                }
                Ok(Answer::Extended {
                    granted: Money(granted),
                    held: Money(held),
                    debited: Money(debited),
                    available: Money(self.accounts[&account].available()),
                })
            }
            Op::Commit {
                reservation,
                account,
                cost,
                ..
            } => self
                .settle(*reservation, account.as_ref(), Some(cost.0), actor)
                .map(Answer::Settled),
            Op::Release {
                reservation,
                account,
                ..
            } => self
                .settle(*reservation, account.as_ref(), None, actor)
                .map(Answer::Settled),
            Op::Cdr(cdr) => {
                self.cdrs.push((cdr, Some(index)));
                // Whether it was the one stored is known once the CDRs are written.
                Ok(Answer::CdrStored(false))
            }
            _ => Err(LedgerError::Storage(format!(
                "{} cannot run in a set-based batch",
                op.name()
            ))),
        }
    }

    fn settle(
        &mut self,
        reservation: ReservationId,
        claim: Option<&AccountRef>,
        cost: Option<i64>,
        actor: &'static str,
    ) -> Result<Settlement, LedgerError> {
        let rid = reservation.0 as i64;
        let r = self
            .reservations
            .get(&rid)
            .ok_or(LedgerError::UnknownReservation(reservation))?;
        if r.state != ReservationState::Open {
            return Err(LedgerError::NotOpen {
                id: reservation,
                state: r.state,
            });
        }
        if let Some(claim) = claim {
            let claimed = self
                .account_id(claim)
                .ok_or_else(|| LedgerError::UnknownAccount(claim.to_string()))?;
            if claimed != r.account {
                return Err(LedgerError::AccountMismatch {
                    id: reservation,
                    owner: AccountId(r.account),
                    claimed: AccountId(claimed),
                });
            }
        }
        let state = match cost {
            Some(_) => ReservationState::Committed,
            None => ReservationState::Released,
        };
        let charged = cost.unwrap_or(0);
        let (account, held, call) = (r.account, r.held, r.call.clone());
        let (balance, _) = self.post(
            account,
            kind_of(state),
            -charged,
            -held,
            -1,
            rid,
            &call,
            actor,
        )?;
        let (now, node) = (self.now, self.node.to_string());
        let r = self.reservations.get_mut(&rid).expect("looked up above");
        r.state = state;
        r.held = 0;
        r.settled_at_us = Some(now);
        r.settled_by = Some(node);
        r.charged = Some(charged);
        r.changed = true;
        Ok(Settlement {
            account: AccountId(account),
            charged: Money(charged),
            released: Money((held - charged).max(0)),
            excess: Money((charged - held).max(0)),
            balance: Money(balance),
        })
    }

    /// Writes what the batch changed: one statement per table, pipelined. Returns the CDRs stored (call, the
    /// answer slot of their `Cdr` op or `usize::MAX`).
    async fn write(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Vec<(&'n str, usize)>, tokio_postgres::Error> {
        let node = self.node;
        // Reservations: new ones inserted as they stand at the batch's end, the others updated.
        let mut new = ReservationColumns::default();
        let mut changed = ReservationColumns::default();
        for (id, r) in &self.reservations {
            if r.changed {
                if r.new { &mut new } else { &mut changed }.push(*id, r);
            }
        }
        let mut account_ids = Vec::new();
        let (mut balances, mut reserved, mut calls, mut seconds, mut counts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, a) in &self.accounts {
            if a.changed {
                account_ids.push(*id);
                balances.push(a.balance);
                reserved.push(a.reserved);
                calls.push(a.open_calls);
                seconds.push(a.cps_second);
                counts.push(a.cps_count);
            }
        }
        let j = &self.journal;
        let j_account: Vec<i64> = j.iter().map(|e| e.account).collect();
        let j_kind: Vec<&str> = j.iter().map(|e| e.kind.name()).collect();
        let j_balance: Vec<i64> = j.iter().map(|e| e.balance_delta).collect();
        let j_reserved: Vec<i64> = j.iter().map(|e| e.reserved_delta).collect();
        let j_balance_after: Vec<i64> = j.iter().map(|e| e.balance_after).collect();
        let j_reserved_after: Vec<i64> = j.iter().map(|e| e.reserved_after).collect();
        let j_reservation: Vec<i64> = j.iter().map(|e| e.reservation).collect();
        let j_call: Vec<&str> = j.iter().map(|e| e.call.as_str()).collect();
        let j_actor: Vec<&str> = j.iter().map(|e| e.actor).collect();
        // CDRs: the first per call in the batch.
        let mut seen = BTreeSet::new();
        let cdrs: Vec<(&CdrRecord, usize)> = self
            .cdrs
            .iter()
            .filter(|(c, _)| seen.insert(c.uuid.as_str()))
            .map(|(c, slot)| (*c, slot.unwrap_or(usize::MAX)))
            .collect();
        let c_uuid: Vec<&str> = cdrs.iter().map(|(c, _)| c.uuid.as_str()).collect();
        let c_partner: Vec<Option<&str>> = cdrs.iter().map(|(c, _)| c.partner.as_deref()).collect();
        let c_started: Vec<i64> = cdrs.iter().map(|(c, _)| c.started_at_us as i64).collect();
        let c_ended: Vec<i64> = cdrs.iter().map(|(c, _)| c.ended_at_us as i64).collect();
        let c_cost: Vec<i64> = cdrs.iter().map(|(c, _)| c.cost.0).collect();
        let c_reason: Vec<Option<&str>> = cdrs.iter().map(|(c, _)| c.reason.as_deref()).collect();
        let c_record: Vec<String> = cdrs
            .iter()
            .map(|(c, _)| serde_json::to_string(c).unwrap_or_default())
            .collect();
        let now = self.now;
        let insert_reservations = async {
            if new.id.is_empty() {
                return Ok(());
            }
            one_statement(tx, INSERT_RESERVATIONS, &new.params(&node)).await
        };
        let update_reservations = async {
            if changed.id.is_empty() {
                return Ok(());
            }
            one_statement(tx, UPDATE_RESERVATIONS, &changed.params(&node)).await
        };
        let insert_journal = async {
            if j.is_empty() {
                return Ok(());
            }
            one_statement(
                tx,
                "INSERT INTO rtc_ledger.journal(at_us, account, kind, balance_delta, reserved_delta, balance_after,
                                                reserved_after, reservation, call, reference, actor, node)
                 SELECT $1, u.account, u.kind, u.bd, u.rd, u.ba, u.ra, u.res, u.call, NULL, u.actor, $2
                 FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
                             $9::bigint[], $10::text[], $11::text[])
                      WITH ORDINALITY AS u(account, kind, bd, rd, ba, ra, res, call, actor, n)
                 ORDER BY u.n",
                &[
                    &now,
                    &node,
                    &j_account,
                    &j_kind,
                    &j_balance,
                    &j_reserved,
                    &j_balance_after,
                    &j_reserved_after,
                    &j_reservation,
                    &j_call,
                    &j_actor,
                ],
            )
            .await
        };
        let update_accounts = async {
            if account_ids.is_empty() {
                return Ok(());
            }
            one_statement(
                tx,
                "UPDATE rtc_ledger.accounts a
                 SET balance = u.balance, reserved = u.reserved, open_calls = u.calls, cps_second = u.second,
                     cps_count = u.count
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::bigint[], $6::int[])
                      AS u(id, balance, reserved, calls, second, count)
                 WHERE a.id = u.id",
                &[&account_ids, &balances, &reserved, &calls, &seconds, &counts],
            )
            .await
        };
        let insert_cdrs = async {
            if c_uuid.is_empty() {
                return Ok(Vec::new());
            }
            all(
                tx,
                "INSERT INTO rtc_ledger.cdrs(uuid, partner, started_at_us, ended_at_us, cost, reason, node, record)
                 SELECT u.uuid, u.partner, u.started, u.ended, u.cost, u.reason, $1, u.record
                 FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[],
                             $8::text[]) AS u(uuid, partner, started, ended, cost, reason, record)
                 ON CONFLICT (uuid) DO NOTHING RETURNING uuid",
                &[
                    &node, &c_uuid, &c_partner, &c_started, &c_ended, &c_cost, &c_reason, &c_record,
                ],
            )
            .await
        };
        let totals = async {
            if !self.totals.changed {
                return Ok(());
            }
            let t = &self.totals;
            one_statement(
                tx,
                "UPDATE rtc_ledger.totals SET open_calls = $1, cps_second = $2, cps_count = $3 WHERE id = 1",
                &[&t.open_calls, &t.cps_second, &t.cps_count],
            )
            .await
        };
        let ((a, b, c, d, e), f) = futures_util::future::join(
            futures_util::future::join5(
                insert_reservations,
                update_reservations,
                insert_journal,
                update_accounts,
                insert_cdrs,
            ),
            totals,
        )
        .await;
        a?;
        b?;
        c?;
        d?;
        f?;
        let stored: BTreeSet<String> = e?.iter().map(|r| r.get::<_, String>(0)).collect();
        Ok(cdrs
            .iter()
            .filter(|(c, _)| stored.contains(&c.uuid))
            .map(|(c, slot)| (c.uuid.as_str(), *slot))
            .collect())
    }
}

async fn one_statement(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await.map(drop)
}

const INSERT_RESERVATIONS: &str = "
    INSERT INTO rtc_ledger.reservations(id, account, node, call, held, debited, state, extensions, created_at_us,
                                        updated_at_us, expires_at_us, settled_at_us, settled_by, charged, info)
    SELECT u.id, u.account, $1, u.call, u.held, u.debited, u.state, u.extensions, u.created, u.updated, u.expires,
           u.settled_at, u.settled_by, u.charged, u.info
    FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::int[],
                $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::bigint[], $15::text[])
         AS u(id, account, call, held, debited, state, extensions, created, updated, expires, settled_at,
              settled_by, charged, info)";

const UPDATE_RESERVATIONS: &str = "
    UPDATE rtc_ledger.reservations r
    SET held = u.held, debited = u.debited, state = u.state, extensions = u.extensions, updated_at_us = u.updated,
        expires_at_us = u.expires, settled_at_us = u.settled_at, settled_by = u.settled_by, charged = u.charged,
        info = u.info
    FROM (SELECT $1::text AS node, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                $6::bigint[], $7::text[], $8::int[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                $13::text[], $14::bigint[], $15::text[])
         AS x(id, account, call, held, debited, state, extensions, created, updated, expires, settled_at,
              settled_by, charged, info)) u
    WHERE r.id = u.id";

/// Reservations' columns, as arrays for `unnest`.
#[derive(Default)]
struct ReservationColumns {
    id: Vec<i64>,
    account: Vec<i64>,
    call: Vec<String>,
    held: Vec<i64>,
    debited: Vec<i64>,
    state: Vec<&'static str>,
    extensions: Vec<i32>,
    created: Vec<i64>,
    updated: Vec<i64>,
    expires: Vec<i64>,
    settled_at: Vec<Option<i64>>,
    settled_by: Vec<Option<String>>,
    charged: Vec<Option<i64>>,
    info: Vec<Option<String>>,
}

impl ReservationColumns {
    fn push(&mut self, id: i64, r: &Reservation) {
        self.id.push(id);
        self.account.push(r.account);
        self.call.push(r.call.clone());
        self.held.push(r.held);
        self.debited.push(r.debited);
        self.state.push(r.state.name());
        self.extensions.push(r.extensions);
        self.created.push(r.created_at_us);
        self.updated.push(r.updated_at_us);
        self.expires.push(r.expires_at_us);
        self.settled_at.push(r.settled_at_us);
        self.settled_by.push(r.settled_by.clone());
        self.charged.push(r.charged);
        self.info.push(r.info.clone());
    }

    fn params<'a>(&'a self, node: &'a &'a str) -> [&'a (dyn ToSql + Sync); 15] {
        [
            node,
            &self.id,
            &self.account,
            &self.call,
            &self.held,
            &self.debited,
            &self.state,
            &self.extensions,
            &self.created,
            &self.updated,
            &self.expires,
            &self.settled_at,
            &self.settled_by,
            &self.charged,
            &self.info,
        ]
    }
}
