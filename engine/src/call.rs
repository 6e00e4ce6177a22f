//! The call state machine: states, inputs, actions, the transition table, and the compact call record.
//!
//! ```text
//! CREATED → PARTNER_IDENTIFICATION → AUTHENTICATION → BALANCE_CHECK → RATING → ROUTING → PARKED
//!         → CONNECTING → CONNECTED → COMPLETED          (and REJECTED / FAILED from the steps above)
//! ```
//! The table below is the whole behaviour; the engine only applies it and carries out the actions.

use std::net::IpAddr;
use std::sync::{LazyLock, OnceLock};

use compact_str::CompactString;
use serde::Serialize;

use crate::admission::AdmitTicket;
use crate::cause::HangupCause;
use crate::domain::{Money, PartnerId, Rate, Reservation, Routes};
use crate::fsm::{Guard, Symbol, Table, Transition};
use crate::id::CallId;
use crate::reason::Reason;
use crate::symbol_enum;

symbol_enum! {
    /// Where a call stands.
    pub enum CallState {
        /// Just seen (CHANNEL_CREATE or the app); nothing asked yet.
        Created => "CREATED",
        /// Asking who is calling.
        PartnerIdentification => "PARTNER_IDENTIFICATION",
        /// Asking whether the partner may place the call.
        Authentication => "AUTHENTICATION",
        /// Holding the call's money.
        BalanceCheck => "BALANCE_CHECK",
        /// Asking what the call costs.
        Rating => "RATING",
        /// Asking where the call goes.
        Routing => "ROUTING",
        /// Decided; waiting for the channel to park.
        Parked => "PARKED",
        /// Bridging to a route (failing over on a fixable failure).
        Connecting => "CONNECTING",
        /// Talking, billed interval by interval.
        Connected => "CONNECTED",
        /// Ended after a connection.
        Completed => "COMPLETED",
        /// Refused, with a reason and a hangup cause.
        Rejected => "REJECTED",
        /// Ended without a connection for a reason other than a refusal (routes exhausted, timeouts, a hangup in setup).
        Failed => "FAILED",
    }
}

impl CallState {
    /// A call in a final state changes no more; it waits only for its hangup (or the sweep) to leave.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CallState::Completed | CallState::Rejected | CallState::Failed
        )
    }

    /// A business step before the decision (CREATED to ROUTING): leaving one for PARKED or REJECTED decides the call.
    pub fn is_deciding(self) -> bool {
        DECIDING.contains(&self)
    }
}

symbol_enum! {
    /// What moves a call: its channel events, its business results, its timers.
    pub enum Input {
        /// The inbound channel exists.
        ChannelCreate => "CHANNEL_CREATE",
        /// The channel parked.
        ChannelPark => "CHANNEL_PARK",
        /// The far end rings.
        ChannelProgress => "CHANNEL_PROGRESS",
        /// The inbound channel was answered.
        ChannelAnswer => "CHANNEL_ANSWER",
        /// The legs were bridged.
        ChannelBridge => "CHANNEL_BRIDGE",
        /// The legs parted.
        ChannelUnbridge => "CHANNEL_UNBRIDGE",
        /// The inbound channel hung up.
        ChannelHangup => "CHANNEL_HANGUP",
        /// The outbound leg answered.
        BLegAnswer => "B_LEG_ANSWER",
        /// The outbound leg hung up.
        BLegHangup => "B_LEG_HANGUP",
        /// The partner service identified the caller.
        PartnerFound => "PARTNER_FOUND",
        /// No partner calls from there.
        PartnerUnknown => "PARTNER_UNKNOWN",
        /// A call or calls-per-second limit refused the call.
        AdmissionDenied => "ADMISSION_DENIED",
        /// A fraud rule refused the call, or its partner is blocked.
        FraudDenied => "FRAUD_DENIED",
        /// The destination is not a number.
        InvalidDestination => "INVALID_DESTINATION",
        /// A fraud block hangs up the partner's live calls to the flagged destinations.
        FraudCut => "FRAUD_CUT",
        /// The partner may place the call.
        AuthOk => "AUTH_OK",
        /// It may not.
        AuthDenied => "AUTH_DENIED",
        /// The money is held.
        BalanceReserved => "BALANCE_RESERVED",
        /// The money cannot cover the call.
        BalanceInsufficient => "BALANCE_INSUFFICIENT",
        /// The call is rated.
        RateFound => "RATE_FOUND",
        /// No rate for the destination.
        RateNone => "RATE_NONE",
        /// Routes found.
        RoutesFound => "ROUTES_FOUND",
        /// No route to the destination.
        RoutesNone => "ROUTES_NONE",
        /// A service failed (error, timeout, breaker open) and is fail-closed.
        ServiceDown => "SERVICE_DOWN",
        /// A service failed and is fail-open: carry on without its answer.
        StepSkipped => "STEP_SKIPPED",
        /// The decision is ready and the channel waits in park: bridge it.
        Dispatch => "DISPATCH",
        /// `setup-timeout` passed before the call connected.
        SetupTimeout => "SETUP_TIMEOUT",
        /// `park-timeout` passed with the decided call not parked.
        ParkTimeout => "PARK_TIMEOUT",
        /// The call talked as long as it may (`max-call-duration`, or what its money paid for).
        DurationTimeout => "DURATION_TIMEOUT",
        /// Real-time billing: time to debit the next interval of a connected call.
        BillingTick => "BILLING_TICK",
        /// The balance service granted an interval's debit.
        BalanceExtended => "BALANCE_EXTENDED",
        /// The sweep found the call finished or lost (no hangup within its bound).
        Swept => "SWEPT",
        /// The engine is shutting down with the call still live.
        EngineShutdown => "ENGINE_SHUTDOWN",
    }
}

/// What a transition asks the engine to do. Data comes from the call record, not the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the partner service who is calling.
    LookupPartner,
    /// Ask the auth service whether the partner may place the call.
    Authenticate,
    /// Ask the balance service to hold the call's money.
    Reserve,
    /// Ask the rating service what the call costs.
    Rate,
    /// Ask the routing service where the call goes.
    Route,
    /// Remember that the channel is parked (waiting for us).
    MarkParked,
    /// Remember that the call was answered (by the dialplan) before the decision, and when.
    MarkAnswered,
    /// The decision is made: set `rtc_*` variables, arm the park timer, answer any waiting dialplan app,
    /// and dispatch at once if the channel is already parked.
    Decide,
    /// Bridge to the next route.
    Bridge,
    /// Talk started: arm the max-duration timer.
    Connected,
    /// The outbound leg hung up while connected: talk time ends here.
    TalkEnded,
    /// Refuse the call: record the reason and hang up with its cause.
    Reject(Reason),
    /// Give up on the call: record the reason and hang up with its cause (or the last outbound cause).
    Fail(Reason),
    /// Hang up a connected call (e.g. its balance runs out) without changing state.
    HangupFor(Reason),
    /// Real-time billing: ask the balance service to debit the call's next interval.
    Extend,
    /// The debit was granted (or the balance service failed fail-open): talk is paid further; a debit granted only
    /// in part warns of low balance.
    Extended,
    /// The partner's money cannot pay the next interval: warn (`rtc_core::low_balance`) and stop extending; the call
    /// is hung up when what it paid for runs out.
    LowBalance,
    /// The balance service failed fail-closed while the call talks: stop extending; the call is hung up when what
    /// it paid for runs out.
    BillingStopped,
    /// The channel is gone: settle the balance, write the CDR, remove the call.
    Finalize,
}

/// The guard context: the call as it stands, with the input's data already noted.
pub type CallTable = Table<CallState, Input, Call, Action>;
type Row = Transition<CallState, Input, Call, Action>;

const CAN_FAILOVER: Guard<Call> = Guard {
    name: "can_failover",
    check: |c: &Call| c.can_failover(),
};

macro_rules! rows {
    ($($from:ident, $on:ident $(if $guard:ident)? => $to:ident $([$($act:expr),*])?;)*) => {
        &[$(Row {
            from: CallState::$from,
            on: Input::$on,
            guard: rows!(@guard $($guard)?),
            to: CallState::$to,
            actions: &[$($($act),*)?],
        }),*]
    };
    (@guard) => { None };
    (@guard $g:ident) => { Some($g) };
}

use Action::*;
use Reason::*;

/// The transitions that belong to one state (or a few): the path of a call.
static PATH: &[Row] = rows! {
    Created, ChannelCreate => PartnerIdentification [LookupPartner];
    // Shed before any work while the engine is overloaded.
    Created, AdmissionDenied => Rejected [Reject(LimitReached)];
    // Not a number: refused before any service is asked.
    Created, InvalidDestination => Rejected [Reject(Reason::InvalidDestination)];

    PartnerIdentification, PartnerFound => Authentication [Authenticate];
    PartnerIdentification, PartnerUnknown => Rejected [Reject(UnknownPartner)];
    PartnerIdentification, AdmissionDenied => Rejected [Reject(LimitReached)];
    PartnerIdentification, FraudDenied => Rejected [Reject(Fraud)];
    PartnerIdentification, ServiceDown => Rejected [Reject(Reason::ServiceDown)];

    Authentication, AuthOk => BalanceCheck [Reserve];
    Authentication, StepSkipped => BalanceCheck [Reserve];
    Authentication, AuthDenied => Rejected [Reject(Reason::AuthDenied)];
    Authentication, ServiceDown => Rejected [Reject(Reason::ServiceDown)];

    BalanceCheck, BalanceReserved => Rating [Action::Rate];
    BalanceCheck, StepSkipped => Rating [Action::Rate];
    BalanceCheck, BalanceInsufficient => Rejected [Reject(NoBalance)];
    // A limit counted across the nodes sharing the ledger.
    BalanceCheck, AdmissionDenied => Rejected [Reject(LimitReached)];
    BalanceCheck, ServiceDown => Rejected [Reject(Reason::ServiceDown)];

    Rating, RateFound => Routing [Action::Route];
    Rating, StepSkipped => Routing [Action::Route];
    Rating, RateNone => Rejected [Reject(NoRate)];
    Rating, ServiceDown => Rejected [Reject(Reason::ServiceDown)];

    Routing, RoutesFound => Parked [Decide];
    Routing, RoutesNone => Rejected [Reject(NoRoute)];
    Routing, ServiceDown => Rejected [Reject(Reason::ServiceDown)];

    Parked, ChannelPark => Connecting [Action::Bridge];
    Parked, Dispatch => Connecting [Action::Bridge];
    // A dialplan app bridging by itself answers from PARKED; its own failover is absorbed.
    Parked, ChannelAnswer => Connected [Connected];
    Parked, ChannelBridge => Connected [Connected];
    Parked, BLegAnswer => Connected [Connected];
    Parked, BLegHangup => Parked;
    Parked, ParkTimeout => Failed [Fail(ParkTimeout)];

    Connecting, ChannelAnswer => Connected [Connected];
    Connecting, ChannelBridge => Connected [Connected];
    Connecting, BLegAnswer => Connected [Connected];
    Connecting, BLegHangup if CAN_FAILOVER => Connecting [Action::Bridge];
    Connecting, BLegHangup => Failed [Fail(RoutesExhausted)];
    Connecting, ChannelPark => Connecting;
    Connecting, ChannelUnbridge => Connecting;

    Connected, ChannelAnswer => Connected;
    Connected, ChannelBridge => Connected;
    Connected, BLegAnswer => Connected;
    Connected, ChannelUnbridge => Connected;
    Connected, ChannelPark => Connected;
    Connected, BLegHangup => Connected [TalkEnded];
    Connected, DurationTimeout => Connected [HangupFor(MaxDuration)];
    // A fraud block cuts the partner's calls that already talk.
    Connected, FraudCut => Connected [HangupFor(Fraud)];
    // Real-time billing: one interval at a time, while the partner's money pays.
    Connected, BillingTick => Connected [Extend];
    Connected, BalanceExtended => Connected [Extended];
    Connected, StepSkipped => Connected [Extended];
    Connected, BalanceInsufficient => Connected [Action::LowBalance];
    Connected, ServiceDown => Connected [BillingStopped];
    // Shutdown bills a connected call for its talk so far.
    Connected, EngineShutdown => Completed [Finalize];
};

/// Where the rows of a [`Family`] lead.
enum To {
    /// Each state to itself.
    Same,
    /// Every state to this one.
    State(CallState),
}

/// One input handled alike in several states.
struct Family {
    from: &'static [CallState],
    on: Input,
    to: To,
    actions: &'static [Action],
}

use CallState as S;

/// Deciding the call: the business steps, before any decision.
const DECIDING: &[CallState] = &[
    S::Created,
    S::PartnerIdentification,
    S::Authentication,
    S::BalanceCheck,
    S::Rating,
    S::Routing,
];
/// Until the call connects: the setup timer runs.
const SETTING_UP: &[CallState] = &[
    S::Created,
    S::PartnerIdentification,
    S::Authentication,
    S::BalanceCheck,
    S::Rating,
    S::Routing,
    S::Parked,
    S::Connecting,
];
/// Every state a call is live in.
const LIVE: &[CallState] = &[
    S::Created,
    S::PartnerIdentification,
    S::Authentication,
    S::BalanceCheck,
    S::Rating,
    S::Routing,
    S::Parked,
    S::Connecting,
    S::Connected,
];
/// Refused or failed, waiting for the channel's end.
const ENDED: &[CallState] = &[S::Rejected, S::Failed];

static FAMILIES: &[Family] = &[
    // The channel may reach park (or answer early) while the business steps run.
    Family {
        from: DECIDING,
        on: Input::ChannelPark,
        to: To::Same,
        actions: &[MarkParked],
    },
    // The dialplan may connect the call itself before the decision (a call followed from its creation, bridged
    // by the operator's dialplan while the balance step waits for the ledger): the answer is remembered, and the
    // decided call goes on as connected.
    Family {
        from: DECIDING,
        on: Input::ChannelAnswer,
        to: To::Same,
        actions: &[MarkAnswered],
    },
    Family {
        from: DECIDING,
        on: Input::BLegAnswer,
        to: To::Same,
        actions: &[MarkAnswered],
    },
    Family {
        from: DECIDING,
        on: Input::ChannelBridge,
        to: To::Same,
        actions: &[],
    },
    Family {
        from: DECIDING,
        on: Input::ChannelUnbridge,
        to: To::Same,
        actions: &[],
    },
    Family {
        from: DECIDING,
        on: Input::BLegHangup,
        to: To::Same,
        actions: &[],
    },
    // Progress is expected anywhere before the end, and changes nothing.
    Family {
        from: LIVE,
        on: Input::ChannelProgress,
        to: To::Same,
        actions: &[],
    },
    // The setup timer runs from creation until the call connects.
    Family {
        from: SETTING_UP,
        on: Input::SetupTimeout,
        to: To::State(S::Failed),
        actions: &[Fail(Reason::SetupTimeout)],
    },
    // A fraud block cuts the partner's calls still in setup.
    Family {
        from: SETTING_UP,
        on: Input::FraudCut,
        to: To::State(S::Rejected),
        actions: &[Reject(Fraud)],
    },
    Family {
        from: ENDED,
        on: Input::FraudCut,
        to: To::Same,
        actions: &[],
    },
    // A hangup in any state ends the call.
    Family {
        from: LIVE,
        on: Input::ChannelHangup,
        to: To::State(S::Completed),
        actions: &[Finalize],
    },
    Family {
        from: ENDED,
        on: Input::ChannelHangup,
        to: To::Same,
        actions: &[Finalize],
    },
    // After a refusal FreeSWITCH still reports the channel's last moves; they change nothing.
    Family {
        from: ENDED,
        on: Input::ChannelPark,
        to: To::Same,
        actions: &[],
    },
    Family {
        from: ENDED,
        on: Input::ChannelProgress,
        to: To::Same,
        actions: &[],
    },
    Family {
        from: ENDED,
        on: Input::ChannelAnswer,
        to: To::Same,
        actions: &[],
    },
    Family {
        from: ENDED,
        on: Input::ChannelUnbridge,
        to: To::Same,
        actions: &[],
    },
    Family {
        from: ENDED,
        on: Input::BLegHangup,
        to: To::Same,
        actions: &[],
    },
    // The sweep removes refused calls whose hangup never came, and calls with no event for too long.
    Family {
        from: LIVE,
        on: Input::Swept,
        to: To::State(S::Failed),
        actions: &[Fail(Stale), Finalize],
    },
    Family {
        from: ENDED,
        on: Input::Swept,
        to: To::Same,
        actions: &[Finalize],
    },
    // Shutdown settles every live call: calls in setup are refused (connected ones: see PATH).
    Family {
        from: SETTING_UP,
        on: Input::EngineShutdown,
        to: To::State(S::Failed),
        actions: &[Fail(Shutdown), Finalize],
    },
    Family {
        from: ENDED,
        on: Input::EngineShutdown,
        to: To::Same,
        actions: &[Finalize],
    },
];

/// Every transition a call can take: the path, then the families expanded state by state.
pub static CALL_TRANSITIONS: LazyLock<Vec<Row>> = LazyLock::new(|| {
    let mut rows: Vec<Row> = PATH
        .iter()
        .map(|r| Row {
            from: r.from,
            on: r.on,
            guard: r.guard.as_ref().map(|g| Guard {
                name: g.name,
                check: g.check,
            }),
            to: r.to,
            actions: r.actions,
        })
        .collect();
    for family in FAMILIES {
        for &from in family.from {
            rows.push(Row {
                from,
                on: family.on,
                guard: None,
                to: match family.to {
                    To::Same => from,
                    To::State(to) => to,
                },
                actions: family.actions,
            });
        }
    }
    rows
});

/// The compiled call table (built once).
pub fn call_table() -> &'static CallTable {
    static TABLE: OnceLock<CallTable> = OnceLock::new();
    TABLE.get_or_init(|| match Table::new(&CALL_TRANSITIONS) {
        Ok(t) => t,
        // The table is static data checked by a unit test; this cannot fail in a tested build.
        Err(e) => panic!("call transition table is malformed: {e}"),
    })
}

/// One recorded transition, packed into 8 bytes: from (4 bits), to (4 bits), input (8 bits), and the
/// time since the call was created in microseconds (48 bits: 8.9 years).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry(u64);

impl TraceEntry {
    /// Packs one transition, `at_us` after the call was created.
    pub fn new(from: CallState, to: CallState, input: Input, at_us: u64) -> Self {
        TraceEntry(
            (from as u64) << 60
                | (to as u64) << 56
                | (input as u64) << 48
                | (at_us & 0xFFFF_FFFF_FFFF),
        )
    }
    /// The state the call left.
    pub fn from(self) -> CallState {
        CallState::from_index((self.0 >> 60) as usize).unwrap_or(CallState::Created)
    }
    /// The state the call entered.
    pub fn to(self) -> CallState {
        CallState::from_index(((self.0 >> 56) & 0xF) as usize).unwrap_or(CallState::Created)
    }
    /// What moved it.
    pub fn input(self) -> Input {
        Input::from_index(((self.0 >> 48) & 0xFF) as usize).unwrap_or(Input::ChannelCreate)
    }
    /// Microseconds since the call was created.
    pub fn at_us(self) -> u64 {
        self.0 & 0xFFFF_FFFF_FFFF
    }
}

/// A call's transitions, bounded: the first [`Trace::HEAD`] are always kept (how the call was decided),
/// then the most recent ones overwrite each other in the remaining slots.
#[derive(Clone, PartialEq, Eq)]
pub struct Trace {
    entries: [TraceEntry; Trace::CAP],
    /// Entries recorded in all.
    recorded: u16,
    /// When the call entered its current state, µs after its creation, in 48 bits as the entries keep times:
    /// the high 16 and the low 32 bits, apart so that they fill the padding after `recorded` (no byte more per
    /// call). The entries cannot tell once the state's entry has left the ring (a connected call's billing
    /// ticks are transitions to the same state).
    entered_hi: u16,
    entered_lo: u32,
}

// The entry time fills what was padding: a trace is as large as its entries and count alone.
const _: () = assert!(std::mem::size_of::<Trace>() == 8 * Trace::CAP + 8);

impl Trace {
    /// Entries kept at most.
    pub const CAP: usize = 12;
    /// The first entries, always kept: how the call was decided.
    pub const HEAD: usize = 8;

    fn new() -> Self {
        Trace {
            entries: [TraceEntry(0); Trace::CAP],
            recorded: 0,
            entered_hi: 0,
            entered_lo: 0,
        }
    }

    /// When the call entered its current state, µs after its creation (0: in the state it was created in).
    pub fn entered_us(&self) -> u64 {
        u64::from(self.entered_hi) << 32 | u64::from(self.entered_lo)
    }

    fn push(&mut self, e: TraceEntry) {
        if e.from() != e.to() {
            let at = e.at_us();
            self.entered_hi = (at >> 32) as u16;
            self.entered_lo = at as u32;
        }
        let n = usize::from(self.recorded);
        let slot = if n < Self::CAP {
            n
        } else {
            Self::HEAD + (n - Self::HEAD) % (Self::CAP - Self::HEAD)
        };
        self.entries[slot] = e;
        self.recorded = self.recorded.saturating_add(1);
    }

    /// Entries in time order, and how many were dropped from the middle.
    pub fn entries(&self) -> (Vec<TraceEntry>, usize) {
        let n = usize::from(self.recorded);
        if n <= Self::CAP {
            return (self.entries[..n].to_vec(), 0);
        }
        let tail = Self::CAP - Self::HEAD;
        let mut out = self.entries[..Self::HEAD].to_vec();
        let oldest = Self::HEAD + (n - Self::HEAD) % tail;
        for i in 0..tail {
            out.push(self.entries[Self::HEAD + (oldest - Self::HEAD + i) % tail]);
        }
        (out, n - Self::CAP)
    }

    /// Entries recorded in all (kept or dropped).
    pub fn len(&self) -> usize {
        usize::from(self.recorded)
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.recorded == 0
    }
}

/// Per-call flags.
pub mod flags {
    /// CHANNEL_PARK seen: the channel waits for us to bridge it.
    pub const PARKED: u8 = 1;
    /// A dialplan app asked for the decision and bridges by itself.
    pub const APP: u8 = 2;
    /// Talk has started (answer seen after the decision).
    pub const ANSWERED: u8 = 4;
    /// The channel's hangup was seen.
    pub const HUNG_UP: u8 = 8;
    /// Real-time billing: an extension is asked for and not answered yet.
    pub const EXTENDING: u8 = 16;
    /// Real-time billing is over for this call (low balance, cost cap, maximum duration, balance service down):
    /// it talks on what it paid for.
    pub const BILLING_DONE: u8 = 32;
    /// Answered before the decision (the operator's dialplan connected it): connected once decided.
    pub const ANSWERED_EARLY: u8 = 64;
    /// Let through by the fraud rules: it holds a place in their live counts until it ends.
    pub const GUARDED: u8 = 128;
}

/// Everything the engine keeps about one live call: small and fixed-size (strings inline when short),
/// so that 100,000 calls fit in a few tens of megabytes.
pub struct Call {
    /// The a-leg channel's UUID.
    pub id: CallId,
    /// Where the call stands.
    pub state: CallState,
    /// [`flags`] bits.
    pub flags: u8,
    /// Index of the next route to try.
    pub route_index: u8,
    /// The destination's fraud class (`<fraud>` `<class>`, 1-based; 0: none), for its per-call caps.
    pub fraud_class: u8,
    /// Why it was refused or failed.
    pub reason: Option<Reason>,
    /// Event kinds already applied to the a-leg (duplicate detection).
    pub seen: u16,
    /// Event kinds already applied to the current outbound leg.
    pub b_seen: u16,
    /// Cause of the a-leg hangup, or of the last outbound leg that failed.
    pub last_cause: HangupCause,
    /// Identified partner (`NO_PARTNER` until then).
    pub partner: PartnerId,
    /// Highest `Event-Sequence` applied to this call's legs.
    pub last_seq: u64,
    /// Engine clock (µs) when the call was created: trace times are relative to it.
    pub created_us: u64,
    /// `Event-Date-Timestamp` of the first event, µs since the epoch (CDR start).
    pub first_ts_us: u64,
    /// Milliseconds after `first_ts_us` (FreeSWITCH's clock) when talk started / ended; 0 = not yet.
    pub answer_ms: u32,
    /// Engine-clock milliseconds after creation when talk started: real-time billing's timers count from here
    /// (FreeSWITCH's timestamps, which `answer_ms` reads, may be coarse or lag).
    pub talk_from_ms: u32,
    /// Milliseconds after `first_ts_us` (FreeSWITCH's clock) when talk ended; 0 = not yet.
    pub talk_end_ms: u32,
    /// Engine-clock milliseconds after creation of the last event: the sweep's staleness measure.
    pub last_event_ms: u32,
    /// Engine-clock milliseconds after creation when the current timer fires; 0 = none.
    pub deadline_ms: u32,
    /// Which timer `deadline_ms` is.
    pub timer: Option<Input>,
    /// Earliest deadline this call has queued in the engine's timer heap; 0 = none.
    pub queued_ms: u32,
    /// The money held for the call, once reserved.
    pub reservation: Option<Reservation>,
    /// Real-time billing: what the balance service has granted to be debited for this call's talk so far.
    pub debited: Money,
    /// Real-time billing: seconds of talk (from the answer) the debits pay for.
    pub paid_s: u32,
    /// The call's rate, once rated.
    pub rate: Option<Rate>,
    /// The call's routes, in failover order, once routed.
    pub routes: Option<Routes>,
    /// The call's place in admission control, given back when it ends.
    pub admitted: Option<AdmitTicket>,
    /// Caller number.
    pub caller: CompactString,
    /// Destination number.
    pub destination: CompactString,
    /// Where the call came from.
    pub source_ip: Option<IpAddr>,
    /// The outbound leg currently tied to this call.
    pub b_leg: Option<CallId>,
    /// The call's transitions, bounded.
    pub trace: Trace,
}

/// The partner id of a call whose partner is not known (yet).
pub const NO_PARTNER: PartnerId = PartnerId::MAX;

impl Call {
    /// A call just created, at `created_us`.
    pub fn new(id: CallId, created_us: u64) -> Self {
        Call {
            id,
            state: CallState::Created,
            flags: 0,
            route_index: 0,
            fraud_class: 0,
            reason: None,
            seen: 0,
            b_seen: 0,
            last_cause: HangupCause::NONE,
            partner: NO_PARTNER,
            last_seq: 0,
            created_us,
            first_ts_us: 0,
            answer_ms: 0,
            talk_from_ms: 0,
            talk_end_ms: 0,
            last_event_ms: 0,
            deadline_ms: 0,
            timer: None,
            queued_ms: 0,
            reservation: None,
            debited: Money::ZERO,
            paid_s: 0,
            rate: None,
            routes: None,
            admitted: None,
            caller: CompactString::const_new(""),
            destination: CompactString::const_new(""),
            source_ip: None,
            b_leg: None,
            trace: Trace::new(),
        }
    }

    /// Whether one of the call's flags is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Another route remains and the last outbound failure is one another carrier could fix.
    pub fn can_failover(&self) -> bool {
        let routes = self.routes.as_ref().map_or(0, |r| r.len());
        usize::from(self.route_index) < routes && self.last_cause.allows_failover()
    }

    /// Records a transition at `now_us` (engine clock) in the trace, and returns the µs the call spent in `from`.
    pub fn record(&mut self, from: CallState, to: CallState, input: Input, now_us: u64) -> u64 {
        let at_us = now_us.saturating_sub(self.created_us);
        let in_from_us = at_us.saturating_sub(self.trace.entered_us());
        self.trace.push(TraceEntry::new(from, to, input, at_us));
        in_from_us
    }

    /// Microseconds from creation to the decision (entering PARKED or a final state), if made.
    pub fn setup_us(&self) -> Option<u64> {
        let (entries, _) = self.trace.entries();
        entries
            .iter()
            .find(|e| {
                e.from() != e.to() && (e.to() == CallState::Parked || e.to() == CallState::Rejected)
            })
            .map(|e| e.at_us())
    }

    /// Seconds of talk, from FreeSWITCH's timestamps.
    pub fn talk_seconds(&self) -> u64 {
        if self.answer_ms == 0 || self.talk_end_ms <= self.answer_ms {
            return 0;
        }
        u64::from(self.talk_end_ms - self.answer_ms).div_ceil(1000)
    }
}

/// A serialisable view of a call, for queries (`rtc_core call <uuid>`).
#[derive(Clone, Debug, Serialize)]
pub struct CallView {
    /// The call's (A leg's) UUID.
    pub uuid: CallId,
    /// Its state's name.
    pub state: &'static str,
    /// Why it was refused or failed, if it was.
    pub reason: Option<&'static str>,
    /// The cause of its hangup (or of the last outbound leg that failed), by name.
    pub hangup_cause: Option<String>,
    /// The partner's name (filled in by the engine when it answers a query).
    pub partner: Option<String>,
    /// The partner's id, once identified.
    pub partner_id: Option<PartnerId>,
    /// Caller number.
    pub caller: String,
    /// Destination number.
    pub destination: String,
    /// Where the call came from.
    pub source_ip: Option<IpAddr>,
    /// Its price per minute, once rated.
    pub rate_per_minute: Option<String>,
    /// Real-time billing: debited so far, and the seconds of talk it pays for.
    pub debited: Option<String>,
    /// Seconds of talk paid for so far.
    pub paid_s: u32,
    /// Its routes' carriers, in failover order.
    pub routes: Vec<String>,
    /// Index of the next route to try.
    pub route_index: u8,
    /// Milliseconds since the call was created.
    pub age_ms: u64,
    /// Its transitions, in time order.
    pub trace: Vec<TraceView>,
    /// Transitions dropped from the middle of a long trace.
    pub trace_dropped: usize,
}

/// One transition of a call's trace, as queries show it.
#[derive(Clone, Debug, Serialize)]
pub struct TraceView {
    /// The state left.
    pub from: &'static str,
    /// The state entered.
    pub to: &'static str,
    /// The input that moved it.
    pub cause: &'static str,
    /// Microseconds after the call was created.
    pub at_us: u64,
}

impl CallView {
    /// What queries show of `call`, at `now_us`.
    pub fn of(call: &Call, now_us: u64) -> Self {
        let (entries, dropped) = call.trace.entries();
        CallView {
            uuid: call.id,
            state: call.state.name(),
            reason: call.reason.map(Reason::name),
            hangup_cause: (call.last_cause != HangupCause::NONE)
                .then(|| call.last_cause.to_string()),
            partner: None,
            partner_id: (call.partner != NO_PARTNER).then_some(call.partner),
            caller: call.caller.to_string(),
            destination: call.destination.to_string(),
            source_ip: call.source_ip,
            rate_per_minute: call.rate.map(|r| r.per_minute.to_string()),
            debited: (call.debited != Money::ZERO).then(|| call.debited.to_string()),
            paid_s: call.paid_s,
            routes: call
                .routes
                .iter()
                .flat_map(|r| r.iter().map(|r| r.carrier.to_string()))
                .collect(),
            route_index: call.route_index,
            age_ms: now_us.saturating_sub(call.created_us) / 1000,
            trace: entries
                .into_iter()
                .map(|e| TraceView {
                    from: e.from().name(),
                    to: e.to().name(),
                    cause: e.input().name(),
                    at_us: e.at_us(),
                })
                .collect(),
            trace_dropped: dropped,
        }
    }
}

/// The transition table as Markdown, for `docs/call-states.md` (kept in step by a test).
pub fn transitions_markdown() -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# Call states\n\n\
         Generated from the engine's transition table (`engine/src/call.rs`) by `rtc-core states`;\n\
         a test fails when this file and the table differ.\n\n\
         Inputs not listed for a state are refused: counted per (state, input) in `rtc_core status` and\n\
         `rtc_core metrics`, logged with the call's uuid, and the call stays where it was. Rows with no\n\
         actions that keep the state are *absorbed*: expected, applied, not traced.\n\n\
         | from | input | guard | to | actions |\n|---|---|---|---|---|\n",
    );
    for row in CALL_TRANSITIONS.iter() {
        let guard = row.guard.as_ref().map_or("", |g| g.name);
        let actions: Vec<String> = row.actions.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.from,
            row.on,
            guard,
            if row.is_absorb() {
                "(absorbed)".to_string()
            } else {
                row.to.to_string()
            },
            actions.join(", ")
        );
    }
    out
}
