//! Destination classes (premium rate, satellite, high-cost ranges...) by prefix, longest prefix first.

use std::collections::HashMap;
use std::time::Duration;

use compact_str::CompactString;
use foldhash::fast::RandomState;
use rtc_money::Money;

use crate::action::FraudAction;

/// One class of destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct DestClass {
    /// Its name (`premium`, `satellite`): in hits, `fraud_allow`, the audit trail.
    pub name: CompactString,
    /// Destination prefixes (digits) that belong to it.
    pub prefixes: Vec<CompactString>,
    /// What a call into it does unless its partner is allowed the class (`None`: nothing, only the caps apply).
    pub action: Option<FraudAction>,
    /// Most one call into the class may cost (its billing stops there).
    pub max_call_cost: Option<Money>,
    /// Most one call into the class may talk.
    pub max_duration: Option<Duration>,
}

/// Longest digits a prefix may have (a destination has at most 15, E.164).
pub const MAX_PREFIX_DIGITS: usize = 18;

/// The classes' prefixes, looked up longest first. Index 0 is "no class"; class `i` is `classes[i - 1]`.
#[derive(Clone, Debug, Default)]
pub struct ClassTable {
    /// (digits as a number << 5 | length) → class number.
    by_prefix: HashMap<u64, u8, RandomState>,
    /// Lengths in use, longest first.
    lengths: Vec<u8>,
}

impl ClassTable {
    /// The table of `classes` (at most 255; a prefix in two classes belongs to the later one).
    pub fn build(classes: &[DestClass]) -> ClassTable {
        let mut table = ClassTable::default();
        for (i, class) in classes.iter().enumerate().take(255) {
            for prefix in &class.prefixes {
                let Some(key) = key_of(prefix) else {
                    continue;
                };
                table.by_prefix.insert(key, (i + 1) as u8);
                let len = prefix.len() as u8;
                if !table.lengths.contains(&len) {
                    table.lengths.push(len);
                }
            }
        }
        table.lengths.sort_unstable_by(|a, b| b.cmp(a));
        table
    }

    /// The class number of `digits` (0: none).
    pub fn class_of(&self, digits: &str) -> u8 {
        if self.lengths.is_empty() {
            return 0;
        }
        let bytes = digits.as_bytes();
        let mut values = [0u64; MAX_PREFIX_DIGITS + 1];
        let n = bytes.len().min(MAX_PREFIX_DIGITS);
        let mut v = 0u64;
        for (i, b) in bytes[..n].iter().enumerate() {
            if !b.is_ascii_digit() {
                return 0;
            }
            v = v * 10 + u64::from(b - b'0');
            values[i + 1] = v;
        }
        for &len in &self.lengths {
            let len = usize::from(len);
            if len <= n
                && let Some(&class) = self.by_prefix.get(&(values[len] << 5 | len as u64))
            {
                return class;
            }
        }
        0
    }
}

/// The key of a prefix of digits, if it is one.
fn key_of(prefix: &str) -> Option<u64> {
    if prefix.is_empty()
        || prefix.len() > MAX_PREFIX_DIGITS
        || !prefix.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let v: u64 = prefix.parse().ok()?;
    Some(v << 5 | prefix.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, prefixes: &[&str]) -> DestClass {
        DestClass {
            name: name.into(),
            prefixes: prefixes.iter().map(|p| (*p).into()).collect(),
            action: Some(FraudAction::Refuse),
            max_call_cost: None,
            max_duration: None,
        }
    }

    #[test]
    fn longest_prefix_wins_and_leading_zeros_count() {
        let t = ClassTable::build(&[
            class("premium", &["1900", "44870"]),
            class("satellite", &["8816", "881"]),
            class("zero", &["0044"]),
        ]);
        assert_eq!(t.class_of("19005551234"), 1);
        assert_eq!(t.class_of("448701234"), 1);
        assert_eq!(t.class_of("88161234"), 2);
        assert_eq!(t.class_of("8812"), 2);
        assert_eq!(t.class_of("44871"), 0);
        assert_eq!(t.class_of("044"), 0);
        assert_eq!(t.class_of("00441234"), 3);
        assert_eq!(t.class_of("190"), 0);
        assert_eq!(t.class_of("1900x"), 0);
        assert_eq!(ClassTable::default().class_of("1900"), 0);
    }
}
