//! Call control: what the engine tells FreeSWITCH to do with a call.
//!
//! One trait, several implementations: in-process (the FreeSWITCH C API, from the module), over ESL
//! (`bgapi`/`sendmsg`), and recording ones for tests and the simulator.

use compact_str::CompactString;

use crate::cause::HangupCause;
use crate::domain::Route;
use crate::id::CallId;

/// A channel variable the engine sets, always named `rtc_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The variable's name (`rtc_partner`, ...).
    pub name: &'static str,
    /// Its value.
    pub value: CompactString,
}

/// One instruction for one call.
#[derive(Clone, Debug, PartialEq)]
pub enum CallCommand {
    /// Set `rtc_*` channel variables (the decision: partner, rate, route, max duration, reject reason).
    SetVariables {
        /// The call.
        call: CallId,
        /// The variables, in the order they are set.
        vars: Vec<Variable>,
    },
    /// Bridge the (parked) call to `route`; `attempt` counts from 0 for failover. The implementation sets
    /// `rtc_a_leg=<call>` on the outbound leg so its events can be tied back to this call.
    Bridge {
        /// The call.
        call: CallId,
        /// Which attempt, from 0.
        attempt: u8,
        /// Where to.
        route: Route,
        /// Hang the call up after this many seconds of talk (what the reserved balance pays for); 0: none.
        max_duration_s: u32,
    },
    /// Hang the call up with `cause`.
    Hangup {
        /// The call.
        call: CallId,
        /// The cause FreeSWITCH hangs it up with.
        cause: HangupCause,
    },
    /// The partner's money cannot pay the call's next interval: set `rtc_low_balance` on the channel and raise
    /// the CUSTOM event `rtc_core::low_balance`. The engine hangs the call up when what it paid for runs out.
    LowBalance(Box<LowBalance>),
    /// A fraud rule hit (`<fraud>`): raise the CUSTOM event `rtc_core::fraud` with the partner, the rule and the
    /// figures. Fired whether or not the call goes on; the refusal or the hangup, if any, is its own command.
    Fraud(Box<FraudAlert>),
}

/// What a fraud event says.
#[derive(Clone, Debug, PartialEq)]
pub struct FraudAlert {
    /// The call that hit the rule (or whose end or debit did).
    pub call: CallId,
    /// The partner's name.
    pub partner: CompactString,
    /// The rule's name (`pumping_number`, `spend_hour`...).
    pub rule: &'static str,
    /// What it did: `refuse`, `alert` or `block`.
    pub action: &'static str,
    /// The call's destination.
    pub destination: CompactString,
    /// The destination's class, when it has one.
    pub class: Option<CompactString>,
    /// The figure that hit, and the most the rule allows (calls, calls per second, or money).
    pub value: f64,
    /// The most allowed.
    pub limit: f64,
    /// The same in words.
    pub detail: CompactString,
    /// For a block: seconds it lasts.
    pub block_s: Option<u64>,
}

impl FraudAlert {
    /// The CUSTOM event's subclass.
    pub const SUBCLASS: &'static str = "rtc_core::fraud";

    /// The event's headers, in order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Unique-ID", self.call.to_string()),
            ("rtc_partner", self.partner.to_string()),
            ("rtc_fraud_rule", self.rule.to_owned()),
            ("rtc_fraud_action", self.action.to_owned()),
            ("rtc_destination", self.destination.to_string()),
            ("rtc_fraud_value", trim_float(self.value)),
            ("rtc_fraud_limit", trim_float(self.limit)),
            ("rtc_fraud_detail", self.detail.to_string()),
        ];
        if let Some(c) = &self.class {
            h.push(("rtc_fraud_class", c.to_string()));
        }
        if let Some(s) = self.block_s {
            h.push(("rtc_fraud_block_seconds", s.to_string()));
        }
        h
    }
}

/// A figure without trailing zeros (`12`, `5.3`).
fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What a low-balance warning says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowBalance {
    /// The call.
    pub call: CallId,
    /// The partner's name.
    pub partner: CompactString,
    /// What the partner can still reserve, when the balance service said.
    pub available: Option<crate::domain::Money>,
    /// Seconds of talk paid for, from the answer; the call is hung up when they run out.
    pub paid_s: u32,
    /// Seconds of talk left from now.
    pub remaining_s: u32,
}

impl LowBalance {
    /// The CUSTOM event's subclass.
    pub const SUBCLASS: &'static str = "rtc_core::low_balance";

    /// The event's headers (and the channel variable's value, `remaining_s`), in order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Unique-ID", self.call.to_string()),
            ("rtc_partner", self.partner.to_string()),
            ("rtc_paid_seconds", self.paid_s.to_string()),
            ("rtc_remaining_seconds", self.remaining_s.to_string()),
        ];
        if let Some(a) = self.available {
            h.push(("rtc_available", a.to_string()));
        }
        h
    }
}

impl CallCommand {
    /// The call the command is about.
    pub fn call(&self) -> CallId {
        match self {
            CallCommand::SetVariables { call, .. }
            | CallCommand::Bridge { call, .. }
            | CallCommand::Hangup { call, .. } => *call,
            CallCommand::LowBalance(w) => w.call,
            CallCommand::Fraud(f) => f.call,
        }
    }
}

/// Where the engine sends call control.
pub trait CallControl: Send {
    /// Carries out one command; must not block the engine thread.
    fn execute(&mut self, command: CallCommand);

    /// Whether the call's channel is known to be gone. `false` when it is there, or when the host cannot tell
    /// at once (ESL mode, whose link reconciles on its own). Asked by the sweep about live calls quiet for
    /// `verify-after`, so that a call whose hangup event was lost (a full queue) is settled within minutes, not
    /// at `stale-after`.
    fn channel_gone(&mut self, _call: CallId) -> bool {
        false
    }
}
