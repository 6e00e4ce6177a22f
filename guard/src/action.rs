//! What a rule does when it hits, and the rules' names.

use serde::Serialize;

/// What a rule does when it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FraudAction {
    /// Refuse the call (reason `fraud`).
    Refuse,
    /// Let the call through; raise the event, the metric and the log line.
    Alert,
    /// Refuse the partner's new calls for the cool-down (`block-for`) and, when `block-hangup` is on, hang up its
    /// live calls to the flagged destinations.
    Block,
}

impl FraudAction {
    /// Every action.
    pub const ALL: [FraudAction; 3] = [FraudAction::Refuse, FraudAction::Alert, FraudAction::Block];

    /// The action's name in the configuration, metrics and events.
    pub const fn name(self) -> &'static str {
        match self {
            FraudAction::Refuse => "refuse",
            FraudAction::Alert => "alert",
            FraudAction::Block => "block",
        }
    }

    /// The action named `name`.
    pub fn from_name(name: &str) -> Option<FraudAction> {
        FraudAction::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Dense index.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The rules, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Cost charged and reserved in the rolling hour above the partner's most.
    SpendHour,
    /// The same over the rolling day.
    SpendDay,
    /// A destination in a risky class (premium rate, satellite...) the partner is not allowed.
    RiskyDestination,
    /// Too many live calls of one partner to one destination number.
    PumpingNumber,
    /// Too many live calls of one partner into one destination prefix.
    PumpingPrefix,
    /// Calls to new destinations per second far above the partner's own baseline.
    Burst,
    /// A run of very short answered calls (wangiri, short stopping).
    ShortCalls,
}

impl Rule {
    /// Every rule, in index order.
    pub const ALL: [Rule; 7] = [
        Rule::SpendHour,
        Rule::SpendDay,
        Rule::RiskyDestination,
        Rule::PumpingNumber,
        Rule::PumpingPrefix,
        Rule::Burst,
        Rule::ShortCalls,
    ];

    /// The rule's name in metrics, events, the audit trail and `rtc_core fraud`.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::SpendHour => "spend_hour",
            Rule::SpendDay => "spend_day",
            Rule::RiskyDestination => "risky_destination",
            Rule::PumpingNumber => "pumping_number",
            Rule::PumpingPrefix => "pumping_prefix",
            Rule::Burst => "burst",
            Rule::ShortCalls => "short_calls",
        }
    }

    /// Dense index.
    pub const fn index(self) -> usize {
        self as usize
    }
}
