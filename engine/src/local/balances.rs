//! Prepaid balances of the local backend: opening amounts from `balances.csv` (columns `partner,balance`),
//! then kept in memory with reservations.
//!
//! A call reserves an amount when it starts (only if the partner's available money — balance less
//! outstanding reservations — covers it), and at its end either commits the real cost (the rest of the
//! reservation is freed; a cost above the reservation is still charged and may take the balance below
//! zero) or releases the reservation untouched. Money is never created or lost: every micro-unit that
//! leaves a balance is a committed cost.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::partners::Partners;
use super::table::{self, Column, LineProblem, LocalError, required};
use crate::domain::{Money, PartnerId, Reservation};

const COLUMNS: &[Column] = &[required("partner"), required("balance")];

/// One partner's money.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    /// What the partner has paid in, less what its calls cost so far. Negative when calls overran their
    /// reservations.
    pub balance: Money,
    /// Sum of the partner's outstanding reservations.
    pub reserved: Money,
}

impl Account {
    /// Money the partner can still reserve: balance less outstanding reservations.
    pub fn available(&self) -> Money {
        Money(self.balance.0.saturating_sub(self.reserved.0))
    }
}

/// The answer to a reservation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The amount is held for the call.
    Reserved(Reservation),
    /// The partner's available money does not cover the amount; nothing was held.
    Insufficient {
        /// What the partner could have reserved.
        available: Money,
    },
}

/// What settling a reservation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Whose reservation it was.
    pub partner: PartnerId,
    /// Taken from the balance (the cost; zero for a release).
    pub charged: Money,
    /// Part of the reservation given back to the available money.
    pub released: Money,
    /// Cost above the reservation, charged anyway: the call ran past what was held for it.
    pub excess: Money,
    /// The partner's balance afterwards.
    pub balance: Money,
}

/// Why a balance operation was refused. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("partner id {0} has no account in the local balances")]
    UnknownPartner(PartnerId),
    #[error("reservation {0} is not open (never made here, or already committed or released)")]
    UnknownReservation(u64),
    #[error("reservation {id} holds {held}, but the request says {claimed}")]
    AmountMismatch {
        id: u64,
        held: Money,
        claimed: Money,
    },
    #[error(
        "reservation {id} belongs to partner id {owner}, but the request names partner id {claimed}"
    )]
    PartnerMismatch {
        id: u64,
        owner: PartnerId,
        claimed: PartnerId,
    },
    #[error("negative amount {0}: reservations and costs are at least 0")]
    NegativeAmount(Money),
    #[error("amount {0} would overflow the account")]
    Overflow(Money),
}

/// An outstanding reservation.
#[derive(Clone, Copy, Debug)]
struct Hold {
    /// Whose money is held.
    partner: PartnerId,
    /// How much.
    amount: Money,
}

/// Balances and outstanding reservations of every partner.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Accounts by partner id.
    accounts: Vec<Account>,
    /// Outstanding reservations by id.
    open: HashMap<u64, Hold>,
    /// Id of the next reservation (ids start at 1 and are never reused).
    next_id: u64,
}

impl Ledger {
    /// A ledger of `partners` accounts, all at zero.
    pub fn new(partners: usize) -> Ledger {
        Ledger {
            accounts: vec![Account::default(); partners],
            open: HashMap::new(),
            next_id: 1,
        }
    }

    /// Loads `balances.csv`; partner names must be in `partners`, and partners without a row start at 0.
    pub fn load(path: &Path, partners: &Partners) -> Result<Ledger, LocalError> {
        Ledger::from_reader(path, table::open(path)?, partners)
    }

    /// Reads the table from `data`; `file` names it in messages.
    pub fn from_reader(
        file: &Path,
        data: impl Read,
        partners: &Partners,
    ) -> Result<Ledger, LocalError> {
        let mut ledger = Ledger::new(partners.id_space());
        let mut lines: HashMap<PartnerId, u64> = HashMap::new();
        table::read(file, data, COLUMNS, |row| {
            let partner = partners.resolve(row)?;
            let balance = row.parse(
                "balance",
                "a decimal amount with at most 6 decimals, such as 250.00",
                Money::parse,
            )?;
            if let Some(&first_line) = lines.get(&partner) {
                return Err(row.error(LineProblem::Duplicate {
                    what: format!("the balance of partner {:?}", row.get("partner")),
                    first_line,
                }));
            }
            lines.insert(partner, row.line);
            ledger.accounts[partner as usize].balance = balance;
            Ok(())
        })?;
        Ok(ledger)
    }

    /// Adds accounts for partners appended to the table (on reload), opening them at the balances in
    /// `opening`; existing accounts keep their live balances and reservations.
    pub fn extend_from(&mut self, opening: &Ledger) {
        for account in opening.accounts.iter().skip(self.accounts.len()) {
            self.accounts.push(Account {
                balance: account.balance,
                reserved: Money::ZERO,
            });
        }
    }

    /// How many accounts the ledger holds.
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// The partner's account, `None` for an id without one.
    pub fn balance(&self, partner: PartnerId) -> Option<Account> {
        self.accounts.get(partner as usize).copied()
    }

    /// Sets a partner's balance (a top-up, a test). Outstanding reservations are kept.
    pub fn set_balance(&mut self, partner: PartnerId, balance: Money) -> Result<(), BalanceError> {
        let account = self
            .accounts
            .get_mut(partner as usize)
            .ok_or(BalanceError::UnknownPartner(partner))?;
        account.balance = balance;
        Ok(())
    }

    /// Holds `amount` of the partner's money for a call, if its available money covers it.
    pub fn reserve(&mut self, partner: PartnerId, amount: Money) -> Result<Reserve, BalanceError> {
        if amount < Money::ZERO {
            return Err(BalanceError::NegativeAmount(amount));
        }
        let account = self
            .accounts
            .get_mut(partner as usize)
            .ok_or(BalanceError::UnknownPartner(partner))?;
        let available = account.available();
        if available < amount {
            return Ok(Reserve::Insufficient { available });
        }
        let reserved = account
            .reserved
            .0
            .checked_add(amount.0)
            .ok_or(BalanceError::Overflow(amount))?;
        account.reserved = Money(reserved);
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, Hold { partner, amount });
        Ok(Reserve::Reserved(Reservation { id, amount }))
    }

    /// Whose reservation `id` is, while it is open.
    pub fn owner(&self, id: u64) -> Option<PartnerId> {
        self.open.get(&id).map(|h| h.partner)
    }

    /// Number of outstanding reservations.
    pub fn open_reservations(&self) -> usize {
        self.open.len()
    }

    /// Checks that `reservation` is open and matches what was held; returns the hold.
    fn check(
        &self,
        reservation: Reservation,
        partner: Option<PartnerId>,
    ) -> Result<Hold, BalanceError> {
        let hold = *self
            .open
            .get(&reservation.id)
            .ok_or(BalanceError::UnknownReservation(reservation.id))?;
        if hold.amount != reservation.amount {
            return Err(BalanceError::AmountMismatch {
                id: reservation.id,
                held: hold.amount,
                claimed: reservation.amount,
            });
        }
        if let Some(claimed) = partner.filter(|p| *p != hold.partner) {
            return Err(BalanceError::PartnerMismatch {
                id: reservation.id,
                owner: hold.partner,
                claimed,
            });
        }
        Ok(hold)
    }

    /// Settles a reservation with the call's cost: the cost leaves the balance, the reservation is freed.
    /// A cost above the reservation is charged all the same and reported as `excess`.
    pub fn commit(
        &mut self,
        reservation: Reservation,
        cost: Money,
    ) -> Result<Settlement, BalanceError> {
        self.commit_for(None, reservation, cost)
    }

    /// [`Ledger::commit`], also checking that the reservation is `partner`'s.
    pub fn commit_for(
        &mut self,
        partner: Option<PartnerId>,
        reservation: Reservation,
        cost: Money,
    ) -> Result<Settlement, BalanceError> {
        if cost < Money::ZERO {
            return Err(BalanceError::NegativeAmount(cost));
        }
        let hold = self.check(reservation, partner)?;
        let account = self
            .accounts
            .get_mut(hold.partner as usize)
            .ok_or(BalanceError::UnknownPartner(hold.partner))?;
        let balance = account
            .balance
            .0
            .checked_sub(cost.0)
            .ok_or(BalanceError::Overflow(cost))?;
        account.balance = Money(balance);
        account.reserved = Money(account.reserved.0 - hold.amount.0);
        self.open.remove(&reservation.id);
        Ok(Settlement {
            partner: hold.partner,
            charged: cost,
            released: Money((hold.amount.0 - cost.0).max(0)),
            excess: Money((cost.0 - hold.amount.0).max(0)),
            balance: Money(balance),
        })
    }

    /// Gives a reservation back untouched.
    pub fn release(&mut self, reservation: Reservation) -> Result<Settlement, BalanceError> {
        self.release_for(None, reservation)
    }

    /// [`Ledger::release`], also checking that the reservation is `partner`'s.
    pub fn release_for(
        &mut self,
        partner: Option<PartnerId>,
        reservation: Reservation,
    ) -> Result<Settlement, BalanceError> {
        let hold = self.check(reservation, partner)?;
        let account = self
            .accounts
            .get_mut(hold.partner as usize)
            .ok_or(BalanceError::UnknownPartner(hold.partner))?;
        account.reserved = Money(account.reserved.0 - hold.amount.0);
        self.open.remove(&reservation.id);
        Ok(Settlement {
            partner: hold.partner,
            charged: Money::ZERO,
            released: hold.amount,
            excess: Money::ZERO,
            balance: account.balance,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn partners() -> Partners {
        Partners::from_reader(
            Path::new("partners.csv"),
            "name,cidrs,max_concurrent,max_cps\nacme,192.0.2.0/24,0,0\nglobex,198.51.100.0/24,0,0\nbroke,203.0.113.0/24,0,0\n"
                .as_bytes(),
        )
        .unwrap()
    }

    fn load(body: &str) -> Result<Ledger, String> {
        let text = format!("partner,balance\n{body}");
        Ledger::from_reader(Path::new("balances.csv"), text.as_bytes(), &partners())
            .map_err(|e| e.to_string())
    }

    fn reserved(r: Result<Reserve, BalanceError>) -> Reservation {
        match r {
            Ok(Reserve::Reserved(r)) => r,
            other => panic!("not reserved: {other:?}"),
        }
    }

    #[test]
    fn reserve_commit_release() {
        let mut ledger = load("acme,10.00\nglobex,1\n").unwrap();
        assert_eq!(ledger.balance(2), Some(Account::default()));
        let a = reserved(ledger.reserve(0, Money(4_000_000)));
        let b = reserved(ledger.reserve(0, Money(4_000_000)));
        assert_ne!(a.id, b.id);
        assert_eq!(
            ledger.reserve(0, Money(4_000_000)),
            Ok(Reserve::Insufficient {
                available: Money(2_000_000)
            })
        );
        assert_eq!(ledger.balance(0).unwrap().available(), Money(2_000_000));

        let s = ledger.commit(a, Money(1_500_000)).unwrap();
        assert_eq!(s.charged, Money(1_500_000));
        assert_eq!(s.released, Money(2_500_000));
        assert_eq!(s.excess, Money::ZERO);
        assert_eq!(s.balance, Money(8_500_000));
        let s = ledger.release(b).unwrap();
        assert_eq!(s.released, Money(4_000_000));
        assert_eq!(
            ledger.balance(0),
            Some(Account {
                balance: Money(8_500_000),
                reserved: Money::ZERO
            })
        );
        // Settling twice is an error, not a panic, and changes nothing.
        assert_eq!(
            ledger.commit(a, Money(1)),
            Err(BalanceError::UnknownReservation(a.id))
        );
        assert_eq!(
            ledger.release(b),
            Err(BalanceError::UnknownReservation(b.id))
        );
        assert_eq!(ledger.balance(0).unwrap().balance, Money(8_500_000));
        assert_eq!(ledger.open_reservations(), 0);
    }

    #[test]
    fn overrun_goes_negative_and_is_reported() {
        let mut ledger = load("globex,1\n").unwrap();
        let r = reserved(ledger.reserve(1, Money(1_000_000)));
        let s = ledger.commit(r, Money(1_250_000)).unwrap();
        assert_eq!(s.excess, Money(250_000));
        assert_eq!(s.balance, Money(-250_000));
        assert_eq!(
            ledger.reserve(1, Money::ZERO),
            Ok(Reserve::Insufficient {
                available: Money(-250_000)
            })
        );
    }

    #[test]
    fn mismatches_and_bad_amounts_are_refused() {
        let mut ledger = load("acme,5\n").unwrap();
        let r = reserved(ledger.reserve(0, Money(1_000_000)));
        assert!(matches!(
            ledger.commit(
                Reservation {
                    id: r.id,
                    amount: Money(2)
                },
                Money(1)
            ),
            Err(BalanceError::AmountMismatch { .. })
        ));
        assert!(matches!(
            ledger.release_for(Some(1), r),
            Err(BalanceError::PartnerMismatch {
                owner: 0,
                claimed: 1,
                ..
            })
        ));
        assert_eq!(
            ledger.commit(r, Money(-1)),
            Err(BalanceError::NegativeAmount(Money(-1)))
        );
        assert_eq!(
            ledger.reserve(0, Money(-5)),
            Err(BalanceError::NegativeAmount(Money(-5)))
        );
        assert_eq!(
            ledger.reserve(9, Money(5)),
            Err(BalanceError::UnknownPartner(9))
        );
        assert_eq!(
            ledger.balance(0).unwrap(),
            Account {
                balance: Money(5_000_000),
                reserved: Money(1_000_000)
            }
        );
        ledger.commit_for(Some(0), r, Money(1)).unwrap();
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        assert_eq!(
            load("acme,lots\n").unwrap_err(),
            "balances.csv:2: field balance: \"lots\" is not a decimal amount with at most 6 decimals, such as 250.00"
        );
        assert_eq!(
            load("acme,1\nacme,2\n").unwrap_err(),
            "balances.csv:3: the balance of partner \"acme\" is already defined at line 2"
        );
        assert_eq!(
            load("*,1\n").unwrap_err(),
            "balances.csv:2: field partner: \"*\" is not a partner of partners.csv"
        );
    }

    /// One step of a random sequence.
    #[derive(Clone, Debug)]
    enum Op {
        Reserve(PartnerId, i64),
        Commit(usize, i64),
        Release(usize),
        /// Settle a reservation that is not open (made up, or already settled).
        Bogus(u64, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..4, 0i64..3_000_000).prop_map(|(p, a)| Op::Reserve(p, a)),
            (any::<usize>(), 0i64..4_000_000).prop_map(|(i, c)| Op::Commit(i, c)),
            any::<usize>().prop_map(Op::Release),
            (any::<u64>(), any::<bool>()).prop_map(|(id, c)| Op::Bogus(id, c)),
        ]
    }

    proptest! {
        #[test]
        fn no_money_is_created_or_lost(
            opening in proptest::collection::vec(0i64..10_000_000, 3),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut ledger = Ledger::new(3);
            for (p, b) in opening.iter().enumerate() {
                ledger.set_balance(p as PartnerId, Money(*b)).unwrap();
            }
            let initial: i64 = opening.iter().sum();
            let mut charged = 0i64;
            let mut open: Vec<Reservation> = Vec::new();
            let mut settled: Vec<Reservation> = Vec::new();
            let mut overrun = [false; 3];
            for op in ops {
                match op {
                    Op::Reserve(p, a) => match ledger.reserve(p, Money(a)) {
                        Ok(Reserve::Reserved(r)) => {
                            prop_assert!(p < 3);
                            open.push(r);
                        }
                        Ok(Reserve::Insufficient { available }) => prop_assert!(available.0 < a),
                        Err(e) => prop_assert_eq!(e, BalanceError::UnknownPartner(p)),
                    },
                    Op::Commit(i, c) if !open.is_empty() => {
                        let r = open.swap_remove(i % open.len());
                        let s = ledger.commit(r, Money(c)).unwrap();
                        prop_assert_eq!(s.charged.0 - s.excess.0 + s.released.0, r.amount.0);
                        if s.excess > Money::ZERO {
                            overrun[s.partner as usize] = true;
                        }
                        charged += c;
                        settled.push(r);
                    }
                    Op::Release(i) if !open.is_empty() => {
                        let r = open.swap_remove(i % open.len());
                        ledger.release(r).unwrap();
                        settled.push(r);
                    }
                    Op::Bogus(id, commit) => {
                        let r = settled
                            .get(id as usize % settled.len().max(1))
                            .copied()
                            .unwrap_or(Reservation { id: id | (1 << 63), amount: Money(1) });
                        let result = if commit {
                            ledger.commit(r, Money(1)).map(|_| ())
                        } else {
                            ledger.release(r).map(|_| ())
                        };
                        prop_assert_eq!(result, Err(BalanceError::UnknownReservation(r.id)));
                    }
                    _ => {}
                }
                let total: i64 = (0..3).map(|p| ledger.balance(p).unwrap().balance.0).sum();
                prop_assert_eq!(total + charged, initial);
                for p in 0..3u32 {
                    let held: i64 = open
                        .iter()
                        .filter(|r| ledger.owner(r.id) == Some(p))
                        .map(|r| r.amount.0)
                        .sum();
                    let account = ledger.balance(p).unwrap();
                    prop_assert_eq!(account.reserved.0, held);
                    if !overrun[p as usize] {
                        prop_assert!(account.available() >= Money::ZERO);
                    }
                }
                prop_assert_eq!(ledger.open_reservations(), open.len());
            }
        }
    }
}
