//! Business facts the services supply and the engine keeps per call: partners, rates, routes, balances.

use std::net::IpAddr;
use std::sync::Arc;

use compact_str::CompactString;
use serde::Serialize;

use crate::cause::HangupCause;
use crate::id::CallId;

/// An amount of money in millionths of the account currency (the `rtc-money` crate, shared with the ledger).
pub use rtc_money::Money;

/// A partner's id: an index the backends hand out, small enough for the compact call record.
pub type PartnerId = u32;

/// Who is calling, as the partner service identified them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartnerInfo {
    /// The partner's id, as its service hands it out.
    pub id: PartnerId,
    /// The partner's name (its ledger account, CDRs, `rtc_partner`).
    pub name: CompactString,
    /// Most concurrent calls this partner may hold (0: no limit).
    pub max_concurrent: u32,
    /// Most new calls per second this partner may start (0: no limit).
    pub max_cps: u32,
    /// Most one call may cost (its connect fee included): real-time billing stops extending a call there, and the
    /// call is hung up when what it paid for runs out. `None`: no cap.
    pub max_call_cost: Option<Money>,
    /// Its own fraud settings (risky classes it may call, its spend limits), over the configured rules.
    pub fraud: Option<Box<rtc_guard::PartnerFraud>>,
}

/// The price of a destination for a partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Price per minute.
    pub per_minute: Money,
    /// Charged once when the call is answered, on top of its talk (0: none).
    pub connect_fee: Money,
    /// Billing increment in seconds (e.g. 6 for 6/6 billing, 60 for per-minute).
    pub increment_s: u16,
    /// Minimum billed duration in seconds for an answered call.
    pub minimum_s: u16,
    /// Length of the rate-deck prefix that matched, for the trace and the CDR.
    pub prefix_len: u8,
}

impl Rate {
    /// Billed seconds for `talk_s` seconds of conversation: at least the minimum, rounded up to the increment.
    pub fn billed_seconds(&self, talk_s: u64) -> u64 {
        if talk_s == 0 {
            return 0;
        }
        let inc = u64::from(self.increment_s.max(1));
        let s = talk_s.max(u64::from(self.minimum_s));
        s.div_ceil(inc) * inc
    }

    /// Cost of `talk_s` seconds of talk (connect fee apart), rounded up to the micro-unit.
    pub fn cost(&self, talk_s: u64) -> Money {
        let billed = self.billed_seconds(talk_s) as i128;
        let micros = (i128::from(self.per_minute.0) * billed + 59) / 60;
        Money(micros.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// What a call that talked `talk_s` seconds costs: nothing when it never talked, else the connect fee and its
    /// talk.
    pub fn call_cost(&self, talk_s: u64) -> Money {
        if talk_s == 0 {
            return Money::ZERO;
        }
        Money(self.connect_fee.0.saturating_add(self.cost(talk_s).0))
    }

    /// The cost of one billing increment: the unit in which a partial extension is granted.
    pub fn increment_cost(&self) -> Money {
        let micros =
            (i128::from(self.per_minute.0.max(0)) * i128::from(self.increment_s.max(1)) + 59) / 60;
        Money(micros.min(i128::from(i64::MAX)) as i64)
    }

    /// The longest talk, in seconds, that `amount` pays for with the connect fee ([`Rate::call_cost`] of it is at
    /// most `amount`): whole increments, at least the minimum, or 0 when `amount` does not pay the first billed
    /// stretch. `None` when talk is free (a zero price) and `amount` pays the connect fee: no limit.
    pub fn paid_seconds(&self, amount: Money) -> Option<u64> {
        let budget = amount.0.saturating_sub(self.connect_fee.0);
        if budget < 0 {
            return Some(0);
        }
        if self.per_minute.0 <= 0 {
            return None;
        }
        let first = self.billed_seconds(1);
        if self.cost(first).0 > budget {
            return Some(0);
        }
        let inc = u64::from(self.increment_s.max(1));
        let estimate = (i128::from(budget) * 60 / i128::from(self.per_minute.0))
            .min(i128::from(u32::MAX)) as u64;
        let mut t = (estimate / inc * inc).max(first);
        while t > first && self.cost(t).0 > budget {
            t -= inc;
        }
        while self.cost(t + inc).0 <= budget && t < u64::from(u32::MAX) {
            t += inc;
        }
        Some(t)
    }
}

/// One way out for a call: a carrier and the FreeSWITCH dial string that reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Carrier name, for `rtc_route`, the trace and the CDR.
    pub carrier: CompactString,
    /// Dial string for `bridge`, with `${destination}` already substituted, e.g.
    /// `sofia/gateway/carrier_a/4420...`.
    pub dial_string: CompactString,
    /// What the carrier charges per minute, for margin reporting.
    pub cost_per_minute: Money,
}

/// Ordered routes, cheapest (or preferred) first. Shared: a rate deck's route list is handed to many calls.
pub type Routes = Arc<[Route]>;

/// A balance reservation made for one call; committed with the real cost or released at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// The balance service's id for it.
    pub id: u64,
    /// How much is held.
    pub amount: Money,
}

/// The record written for every call that the engine saw through, whatever its end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cdr {
    /// The call's (A leg's) UUID.
    pub uuid: CallId,
    /// Caller number.
    pub caller: CompactString,
    /// Destination number.
    pub destination: CompactString,
    /// Where the call came from.
    pub source_ip: Option<IpAddr>,
    /// The partner's name, once identified.
    pub partner: Option<CompactString>,
    /// Final engine state: COMPLETED, REJECTED or FAILED.
    pub final_state: &'static str,
    /// Why the call was refused or failed, if it was.
    pub reason: Option<&'static str>,
    /// The cause the call was hung up with.
    pub hangup_cause: HangupCause,
    /// The carrier the call went out through, if connected.
    pub carrier: Option<CompactString>,
    /// The call's price per minute, once rated.
    pub rate_per_minute: Option<Money>,
    /// Microseconds from CHANNEL_CREATE to the routing decision, when one was made.
    pub setup_us: Option<u64>,
    /// Seconds of conversation (answer to hangup).
    pub talk_s: u64,
    /// Seconds billed (the talk rounded by the rate's increment and minimum).
    pub billed_s: u64,
    /// What the call cost.
    pub cost: Money,
    /// `Event-Date-Timestamp` of the first and last events seen, microseconds since the epoch.
    pub started_at_us: u64,
    /// See `started_at_us`.
    pub ended_at_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_minute: i64, fee: i64, increment_s: u16, minimum_s: u16) -> Rate {
        Rate {
            per_minute: Money(per_minute),
            connect_fee: Money(fee),
            increment_s,
            minimum_s,
            prefix_len: 2,
        }
    }

    #[test]
    fn a_call_costs_its_connect_fee_and_its_billed_talk() {
        let r = rate(12_000, 50_000, 6, 30);
        assert_eq!(r.call_cost(0), Money::ZERO);
        // 1 s bills the 30 s minimum: 0.006, plus the fee.
        assert_eq!(r.call_cost(1), Money(56_000));
        assert_eq!(r.call_cost(61), Money(50_000 + 13_200));
        assert_eq!(r.increment_cost(), Money(1_200));
    }

    #[test]
    fn paid_seconds_is_the_longest_talk_money_pays_for() {
        let r = rate(12_000, 50_000, 6, 30);
        // Not even the fee and the minimum: nothing.
        assert_eq!(r.paid_seconds(Money(55_999)), Some(0));
        assert_eq!(r.paid_seconds(Money(56_000)), Some(30));
        assert_eq!(r.paid_seconds(Money(57_199)), Some(30));
        assert_eq!(r.paid_seconds(Money(57_200)), Some(36));
        assert_eq!(r.paid_seconds(Money(50_000 + 12_000)), Some(60));
        // Free talk: the fee pays for any length.
        assert_eq!(rate(0, 50_000, 6, 0).paid_seconds(Money(50_000)), None);
        assert_eq!(rate(0, 50_000, 6, 0).paid_seconds(Money(1)), Some(0));
        // Whatever the amount, what it pays for costs no more than it.
        for micros in (0..2_000_000).step_by(7_919) {
            for r in [
                rate(12_000, 0, 6, 0),
                rate(85_000, 0, 1, 0),
                rate(250_000, 100_000, 60, 60),
            ] {
                let t = r.paid_seconds(Money(micros)).unwrap();
                assert!(r.call_cost(t) <= Money(micros), "{r:?} {micros}: {t} s");
                let next = if t == 0 {
                    r.billed_seconds(1)
                } else {
                    t + u64::from(r.increment_s)
                };
                assert!(
                    r.call_cost(next) > Money(micros),
                    "{r:?} {micros}: {t} s, not the longest"
                );
            }
        }
    }
}
