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
