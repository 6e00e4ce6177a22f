//! Amounts of money: integer millionths of the account currency, so that billing never rounds by accident.
//!
//! A crate of its own because the ledger, the engine core and the configuration all count in [`Money`], and
//! the engine core must not link the ledger's SQLite to do so.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in millionths of the account currency. Integer so that billing never rounds by
/// accident; `i64` covers ±9.2 trillion units.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);
    /// Millionths in one unit of the account currency.
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

    /// The amount in millionths.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// `self + other`, `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self - other`, `None` on overflow.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_decimals() {
        assert_eq!(Money::parse("0.0125"), Some(Money(12_500)));
        assert_eq!(Money::parse("-3"), Some(Money(-3_000_000)));
        assert_eq!(Money::parse(".5"), Some(Money(500_000)));
        assert_eq!(Money::parse("1.1234567"), None);
        assert_eq!(Money::parse("1,5"), None);
        assert_eq!(Money::parse(""), None);
        assert_eq!(Money::parse("-"), None);
        assert_eq!(Money::parse("99999999999999"), None);
        assert_eq!(Money(-1_250_000).to_string(), "-1.250000");
        assert_eq!(Money(7).to_string(), "0.000007");
    }
}
