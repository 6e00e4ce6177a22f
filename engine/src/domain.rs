//! Business facts the services supply and the engine keeps per call: partners, rates, routes, balances.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use compact_str::CompactString;
use serde::Serialize;

use crate::cause::HangupCause;
use crate::id::CallId;

/// An amount of money in millionths of the account currency. Integer so that billing never rounds by
/// accident; `i64` covers ±9.2 trillion units.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);
    pub const MICROS_PER_UNIT: i64 = 1_000_000;

    /// Parses a decimal amount such as `0.0125` or `-3`, with at most 6 decimals.
    pub fn parse(text: &str) -> Option<Money> {
        let text = text.trim();
        let (neg, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        if whole.is_empty() && frac.is_empty()
            || frac.len() > 6
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut frac_val: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..6 {
            frac_val *= 10;
        }
        let micros = whole
            .checked_mul(Self::MICROS_PER_UNIT)?
            .checked_add(frac_val)?;
        Some(Money(if neg { -micros } else { micros }))
    }

    pub fn micros(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A partner's id: an index the backends hand out, small enough for the compact call record.
pub type PartnerId = u32;

/// Who is calling, as the partner service identified them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartnerInfo {
    pub id: PartnerId,
    pub name: CompactString,
    /// Most concurrent calls this partner may hold (0: no limit).
    pub max_concurrent: u32,
    /// Most new calls per second this partner may start (0: no limit).
    pub max_cps: u32,
}

/// The price of a destination for a partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Price per minute.
    pub per_minute: Money,
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

    /// Cost of `talk_s` seconds, rounded up to the micro-unit.
    pub fn cost(&self, talk_s: u64) -> Money {
        let billed = self.billed_seconds(talk_s) as i128;
        let micros = (i128::from(self.per_minute.0) * billed + 59) / 60;
        Money(micros.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    /// How many seconds `amount` pays for at this rate (whole increments only). `None` when the rate is free.
    pub fn seconds_covered(&self, amount: Money) -> Option<u64> {
        if self.per_minute.0 <= 0 {
            return None;
        }
        let secs = (i128::from(amount.0.max(0)) * 60 / i128::from(self.per_minute.0)) as u64;
        let inc = u64::from(self.increment_s.max(1));
        Some(secs / inc * inc)
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
    pub id: u64,
    pub amount: Money,
}

/// The record written for every call that the engine saw through, whatever its end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cdr {
    pub uuid: CallId,
    pub caller: CompactString,
    pub destination: CompactString,
    pub source_ip: Option<IpAddr>,
    pub partner: Option<CompactString>,
    /// Final engine state: COMPLETED, REJECTED or FAILED.
    pub final_state: &'static str,
    pub reason: Option<&'static str>,
    pub hangup_cause: HangupCause,
    pub carrier: Option<CompactString>,
    pub rate_per_minute: Option<Money>,
    /// Microseconds from CHANNEL_CREATE to the routing decision, when one was made.
    pub setup_us: Option<u64>,
    /// Seconds of conversation (answer to hangup).
    pub talk_s: u64,
    pub billed_s: u64,
    pub cost: Money,
    /// `Event-Date-Timestamp` of the first and last events seen, microseconds since the epoch.
    pub started_at_us: u64,
    pub ended_at_us: u64,
}
