//! The fraud rules as configured (`<fraud>` in `rtc_core.conf.xml`), and a partner's own overrides
//! (partners.csv, or the partner service).

use std::time::Duration;

use compact_str::CompactString;
use rtc_money::Money;
use serde::Serialize;

use crate::action::FraudAction;
use crate::classes::DestClass;

/// A limit and what to do past it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limit<T> {
    /// The most allowed.
    pub most: T,
    /// What happens past it.
    pub action: FraudAction,
}

/// Pumping: live calls of one partner to one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Pumping {
    /// Most live calls to one destination number (0: not checked).
    pub per_number: u32,
    /// Most live calls into one destination prefix of `prefix_digits` digits (0: not checked).
    pub per_prefix: u32,
    /// Digits of the destination that make its prefix (e.g. 7: `4470012`).
    pub prefix_digits: u8,
    /// What happens past either limit.
    pub action: FraudAction,
}

/// Bursts: calls per second to destinations the partner has not called lately, against its own baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Burst {
    /// A burst is this many times the partner's baseline rate of new destinations...
    pub factor: f64,
    /// ...and at least this many new destinations per second (the floor for a partner with no history).
    pub min_per_second: f64,
    /// The rate is measured over this window (whole seconds, 1 to 60).
    pub window: Duration,
    /// The baseline follows the partner's rate with this time constant.
    pub baseline: Duration,
    /// A destination called within this long is not new.
    pub memory: Duration,
    /// Most destinations remembered, all partners together (beyond it the oldest are forgotten).
    pub memory_size: usize,
    /// What happens to a call that makes a burst.
    pub action: FraudAction,
}

/// Runs of very short answered calls.
#[derive(Clone, Debug, PartialEq)]
pub struct ShortCalls {
    /// An answered call that talked at most this long is short.
    pub max_talk: Duration,
    /// This many short calls in a row (no longer call between them) hit.
    pub run: u32,
    /// `alert` or `block` (the calls have ended: there is nothing to refuse).
    pub action: FraudAction,
}

/// The fraud rules, as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct FraudRules {
    /// Whether any rule runs.
    pub enabled: bool,
    /// How long a block lasts.
    pub block_for: Duration,
    /// Whether a block also hangs up the partner's live calls to the flagged destinations.
    pub block_hangup: bool,
    /// Most cost per partner per rolling hour (charged and reserved).
    pub spend_hour: Option<Limit<Money>>,
    /// Most cost per partner per rolling day.
    pub spend_day: Option<Limit<Money>>,
    /// Live calls to one destination.
    pub pumping: Option<Pumping>,
    /// Bursts to new destinations.
    pub burst: Option<Burst>,
    /// Runs of short answered calls.
    pub short_calls: Option<ShortCalls>,
    /// Destination classes by prefix: risky ones refused unless the partner is allowed, per-call caps.
    pub classes: Vec<DestClass>,
    /// Hits kept for `rtc_core fraud`.
    pub recent_hits: usize,
}

impl Default for FraudRules {
    /// No rule: every call passes.
    fn default() -> Self {
        FraudRules {
            enabled: false,
            block_for: Duration::from_secs(15 * 60),
            block_hangup: true,
            spend_hour: None,
            spend_day: None,
            pumping: None,
            burst: None,
            short_calls: None,
            classes: Vec::new(),
            recent_hits: 100,
        }
    }
}

/// A partner's own fraud settings, over the configured ones (partners.csv columns `fraud_allow`, `max_spend_hour`,
/// `max_spend_day`; or the partner service).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartnerFraud {
    /// Risky destination classes this partner may call (their action does not apply; their caps do).
    pub allow: Vec<CompactString>,
    /// Its own most per rolling hour, instead of the rule's.
    pub spend_hour: Option<Money>,
    /// Its own most per rolling day.
    pub spend_day: Option<Money>,
}

impl PartnerFraud {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.spend_hour.is_none() && self.spend_day.is_none()
    }
}
