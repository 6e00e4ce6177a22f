//! The engine's logic on its one thread: the registry, the timers, and the application of inputs to call
//! state machines. [`Core`] does no I/O and takes no locks; it is driven by [`crate::engine`]'s thread,
//! and directly by tests.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use compact_str::{CompactString, ToCompactString};
use crossbeam_channel::Sender;
use foldhash::fast::RandomState;
use serde::Serialize;

use crate::admission::{Admission, AdmissionStats, CpsLimit, PartnerLimits};
use crate::audit::{AuditRecord, AuditSink, Audited};
use crate::call::{
    Action, Call, CallState, CallTable, CallView, Input, NO_PARTNER, call_table, flags,
};
use crate::cause::HangupCause;
use crate::clock::Clock;
use crate::config::{EngineConfig, FailMode, FailModes, NewSettings};
use crate::control::{CallCommand, CallControl, FraudAlert, LowBalance, Variable};
use crate::domain::{Cdr, Money, PartnerId, Rate, Routes};
use crate::event::{CallEvent, Direction, EventKind};
#[cfg(test)]
use crate::fsm::Table;
use crate::fsm::{Rejected, Symbol};
use crate::id::CallId;
use crate::reason::Reason;
use crate::registry::{Leg, Registry};
use crate::service::{
    CallContext, Outcome, ServiceKind, ServiceRequest, ServiceResult, ServiceSink,
};
use crate::stats::{Counters, Stats};
use rtc_guard::{EndedCall, Guard, NewCall, PartnerFraud, Verdict};

/// What a dialplan app waiting on a call is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Bridge over `routes` in order (failover), after setting `vars`.
    Connect {
        /// The routes, in failover order.
        routes: Routes,
        /// The channel variables to set first.
        vars: Vec<Variable>,
        /// Seconds of talk the reservation pays for (0: no limit beyond the configured maximum).
        max_duration_s: u32,
    },
    /// Hang up with `cause`.
    Refuse {
        /// Why.
        reason: Reason,
        /// The hangup cause the reason maps to.
        cause: HangupCause,
    },
}

/// Answers to queries.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// Seconds since the engine started.
    pub uptime_s: u64,
    /// Calls in the registry.
    pub live_calls: usize,
    /// Live calls per state, by the state's name.
    pub by_state: Vec<(&'static str, u32)>,
    /// The engine's counters.
    pub stats: Stats,
    /// Calls holding an admission place, admitted so far, and refusals per limit.
    pub admission: AdmissionStats,
    /// Live calls per partner (those holding an admission place), with the partner's name as its service gave
    /// it, for every partner seen since start.
    pub by_partner: Vec<PartnerLive>,
    /// Decision requests (an extension among them) sent to services that answer later, not answered yet.
    pub pending_results: u64,
    /// What the fraud rules did.
    pub fraud: FraudSummary,
}

/// What the fraud rules did, for `rtc_core status` and `rtc_core metrics`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FraudSummary {
    /// Whether any rule runs.
    pub enabled: bool,
    /// Hits per (rule, action), with a count for each pair (zeros included when enabled).
    pub hits: Vec<(&'static str, &'static str, u64)>,
    /// Partners blocked now.
    pub blocked_partners: u32,
    /// New calls refused while their partner was blocked.
    pub blocked_refusals: u64,
    /// Live calls a block cut.
    pub calls_cut: u64,
    /// Money charged and reserved in the rolling hour, per partner with counters (by name).
    pub spend_hour: Vec<(CompactString, Money)>,
}

/// `rtc_core fraud`: the blocks in force, the latest hits, and the counters.
#[derive(Clone, Debug, Serialize)]
pub struct FraudReport {
    /// The counters.
    pub summary: FraudSummary,
    /// Blocks in force.
    pub blocks: Vec<BlockView>,
    /// The latest hits, newest first.
    pub recent: Vec<HitView>,
}

/// A block, as `rtc_core fraud` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct BlockView {
    /// The partner's name.
    pub partner: CompactString,
    /// The rule that blocked it.
    pub rule: &'static str,
    /// What the rule said.
    pub detail: CompactString,
    /// When it started and ends (Unix seconds).
    pub since_s: u64,
    /// When it ends (Unix seconds).
    pub until_s: u64,
    /// New calls refused since.
    pub refused: u64,
}

/// A hit, as `rtc_core fraud` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct HitView {
    /// When (Unix seconds).
    pub at_s: u64,
    /// The partner's name.
    pub partner: CompactString,
    /// The rule.
    pub rule: &'static str,
    /// What it did.
    pub action: &'static str,
    /// The destination.
    pub destination: CompactString,
    /// Its class.
    pub class: Option<CompactString>,
    /// The figures in words.
    pub detail: CompactString,
}

/// One partner's live calls, for `rtc_core metrics`.
#[derive(Clone, Debug, Serialize)]
pub struct PartnerLive {
    /// The partner's id.
    pub id: PartnerId,
    /// Its name.
    pub name: CompactString,
    /// Its calls holding an admission place.
    pub active: u32,
}

/// One live call, as `rtc_core calls` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct CallSummary {
    /// The call's (A leg's) UUID.
    pub uuid: CallId,
    /// Its state's name.
    pub state: &'static str,
    /// The partner's name, once identified.
    pub partner: Option<CompactString>,
    /// Caller number.
    pub caller: String,
    /// Destination number.
    pub destination: String,
    /// Milliseconds since the call was created.
    pub age_ms: u64,
}

/// A partner seen by the engine: its name, for `rtc_partner` and CDRs.
struct PartnerSlot {
    name: CompactString,
    /// Most one call may cost (`max_call_cost`): real-time billing stops extending there.
    max_call_cost: Option<Money>,
    /// Its own fraud settings, as its service gave them with its last call.
    fraud: Option<Box<PartnerFraud>>,
}

/// How long before what a call paid for runs out the engine hangs it up (when it is the money that runs out):
/// FreeSWITCH measures the talk a moment after the hangup command, and a talk a few milliseconds past a whole
/// second would be billed a whole increment more than was paid.
const HANGUP_MARGIN_MS: u64 = 200;

/// Channels looked up per sweep at most (`verify-after`): a lookup is a hash probe in FreeSWITCH's session table,
/// about a microsecond; 2000 every 5 s covers 50,000 quiet calls in about two minutes.
const VERIFY_BATCH: usize = 2000;

/// Fraud hits of one partner, rule and action are logged once per this many ms (the rest are counted in the next line).
const FRAUD_LOG_EVERY_MS: u64 = 10_000;

/// The engine's state and logic.
pub struct Core {
    cfg: EngineConfig,
    fail_modes: FailModes,
    table: &'static CallTable,
    pub(crate) registry: Registry,
    /// (absolute deadline in engine ms, call): lazily cleaned — an entry whose call has moved on is skipped.
    timers: BinaryHeap<Reverse<(u64, CallId)>>,
    services: Box<dyn ServiceSink>,
    control: Box<dyn CallControl>,
    /// Results answered at once by embedded backends, applied after the current input.
    immediate: VecDeque<ServiceResult>,
    /// Inputs a transition asked for (e.g. DISPATCH after the decision), applied after the current one.
    followups: VecDeque<(CallId, Input)>,
    partners: HashMap<PartnerId, PartnerSlot, RandomState>,
    /// Global and per-partner limits, and overload shedding.
    admission: Admission,
    /// Instant matching engine time 0, for admission's rate limiters.
    origin: Instant,
    /// Events waiting in the intake queue, as last told by the engine loop (for shedding).
    backlog: usize,
    /// Requests to asynchronous services still waiting for their answer (shutdown waits for them, so that
    /// a reservation answered late is still released).
    pending_results: u64,
    /// Partner of each balance reservation asked for and not yet answered: a reservation that comes back
    /// for a call already gone is released against the right partner.
    reserving: HashMap<CallId, PartnerId, RandomState>,
    /// Digest usernames of calls not yet authenticated; kept aside because most calls have none.
    auth_users: HashMap<CallId, CompactString, RandomState>,
    /// What each partner could still reserve when its call's reservation was made (if the balance service said),
    /// kept from the reservation to the decision for `rtc_max_duration`; aside, since it matters only in setup.
    affordable: HashMap<CallId, Money, RandomState>,
    /// Set while an extension that failed fail-open is applied: talk is carried on unpaid for an interval.
    unpaid_extension: bool,
    /// Inbound channels calls placed themselves (the far half of a loopback route), with the engine time they were
    /// seen: their events are not new calls. Dropped at their CHANNEL_DESTROY, or by the sweep once stale.
    own_legs: HashMap<CallId, u64, RandomState>,
    /// Engine time of the next look at quiet calls' channels (`verify-after`).
    next_verify_us: u64,
    /// Quiet calls whose channel is still to be looked up, [`VERIFY_BATCH`] per sweep.
    verify_queue: Vec<CallId>,
    /// Dialplan apps waiting for a call's decision.
    waiters: HashMap<CallId, Sender<Decision>, RandomState>,
    pub(crate) counters: Counters,
    /// The fraud rules and the counters they decide from.
    guard: Guard,
    /// Where decisions are recorded (the audit trail), when one is kept.
    audit: Option<Box<dyn AuditSink>>,
    /// Per (partner, rule and action): when a fraud hit was last logged, and the hits not logged since.
    fraud_log: HashMap<(PartnerId, u8), (u64, u64), RandomState>,
    clock: Clock,
    /// Engine time of the input being applied.
    now_us: u64,
    /// FreeSWITCH timestamp of the event being applied (0 for other inputs).
    event_ts_us: u64,
    next_sweep_us: u64,
    /// Earliest timer armed since the engine loop last asked ([`Core::take_armed`]); `u64::MAX`: none.
    armed_us: u64,
}

impl Core {
    /// A core with no calls, answering through `services` and acting through `control`, on `clock`.
    pub fn new(
        cfg: EngineConfig,
        fail_modes: FailModes,
        services: Box<dyn ServiceSink>,
        control: Box<dyn CallControl>,
        clock: Clock,
    ) -> Self {
        let now = clock.now_us();
        let origin = Instant::now() - Duration::from_micros(now);
        Core {
            admission: Admission::new(cfg.admission.clone(), origin),
            guard: Guard::new(cfg.fraud.clone()),
            fraud_log: HashMap::default(),
            audit: None,
            origin,
            backlog: 0,
            registry: Registry::new(cfg.finished_ids, cfg.finished_traces),
            next_sweep_us: now + cfg.sweep_interval.as_micros() as u64,
            cfg,
            fail_modes,
            table: call_table(),
            timers: BinaryHeap::new(),
            services,
            control,
            immediate: VecDeque::new(),
            followups: VecDeque::new(),
            partners: HashMap::default(),
            waiters: HashMap::default(),
            auth_users: HashMap::default(),
            affordable: HashMap::default(),
            unpaid_extension: false,
            own_legs: HashMap::default(),
            next_verify_us: 0,
            verify_queue: Vec::new(),
            pending_results: 0,
            reserving: HashMap::default(),
            counters: Counters::new(),
            clock,
            now_us: now,
            event_ts_us: 0,
            armed_us: u64::MAX,
        }
    }

    /// Records every decision in `sink` from now on (the audit trail).
    pub fn set_audit(&mut self, sink: Box<dyn AuditSink>) {
        self.audit = Some(sink);
    }

    /// Records a decision about the call in `slot`, when a trail is kept.
    fn audit(&mut self, slot: u32, what: Audited) {
        if self.audit.is_none() {
            return;
        }
        let Some(call) = self.registry.get(slot) else {
            return;
        };
        let record = AuditRecord {
            call: call.id,
            partner: self.partners.get(&call.partner).map(|p| p.name.clone()),
            caller: call.caller.clone(),
            destination: call.destination.clone(),
            what,
        };
        if let Some(sink) = self.audit.as_mut() {
            sink.record(record);
        }
    }

    /// The engine settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Calls in the registry.
    pub fn live_calls(&self) -> usize {
        self.registry.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Microseconds on the engine's clock.
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Takes a new configuration: the services first (all or nothing), then the engine's own settings,
    /// fail modes and admission limits.
    pub fn reload(&mut self, settings: NewSettings) -> Result<String, String> {
        let NewSettings {
            engine,
            fail_modes,
            services,
            origin,
        } = settings;
        let services = self.services.reload(services.as_ref())?;
        self.admission.reconfigure(engine.admission.clone());
        self.guard.reconfigure(engine.fraud.clone());
        self.cfg = engine;
        self.fail_modes = fail_modes;
        log::info!("configuration reloaded from {origin}");
        Ok(match services.is_empty() {
            true => format!("engine settings reloaded from {origin}"),
            false => format!("engine settings reloaded from {origin}; {services}"),
        })
    }

    /// How many events wait in the intake queue (told by the engine loop; drives shedding).
    pub fn set_backlog(&mut self, events: usize) {
        self.backlog = events;
    }

    /// Admission's counters: calls held, admitted, refusals per limit.
    pub fn admission(&self) -> AdmissionStats {
        self.admission.stats()
    }

    // ---- intake -------------------------------------------------------------------------------

    /// Applies one channel event.
    pub fn on_event(&mut self, ev: CallEvent) {
        self.now_us = self.clock.now_us();
        self.counters.events += 1;
        if self.counters.events & 7 == 0 && ev.timestamp_us != 0 {
            self.counters
                .record_lag(epoch_us().saturating_sub(ev.timestamp_us));
        }
        self.event_ts_us = ev.timestamp_us;
        match self.registry.find(&ev.uuid) {
            Some(Leg::A(slot)) => self.a_leg_event(slot, &ev),
            Some(Leg::B(slot)) => self.b_leg_event(slot, &ev),
            None => self.new_channel_event(ev, false),
        }
        self.event_ts_us = 0;
        self.drain();
    }

    /// Applies one service result.
    pub fn on_result(&mut self, result: ServiceResult) {
        self.now_us = self.clock.now_us();
        self.counters.results += 1;
        self.pending_results = self.pending_results.saturating_sub(1);
        self.apply_result(result);
        self.drain();
    }

    /// A dialplan app asks for `ev`'s call decision; the call is created if CHANNEL_CREATE was not seen.
    pub fn on_await(&mut self, ev: CallEvent, reply: Sender<Decision>) {
        self.now_us = self.clock.now_us();
        let id = ev.uuid;
        if self.registry.slot_of(&id).is_none() {
            if ev.direction == Direction::Outbound || self.registry.find(&id).is_some() {
                // An outbound leg is never a call to decide.
                let _ = reply.send(Decision::Refuse {
                    reason: Reason::ServiceDown,
                    cause: HangupCause::WRONG_CALL_STATE,
                });
                return;
            }
            let mut ev = ev;
            ev.kind = EventKind::ChannelCreate;
            self.event_ts_us = ev.timestamp_us;
            self.new_channel_event(ev, true);
            self.event_ts_us = 0;
        }
        if let Some(slot) = self.registry.slot_of(&id)
            && let Some(call) = self.registry.get_mut(slot)
        {
            call.flags |= flags::APP;
            match self.ready_decision(slot) {
                Some(d) => {
                    self.counters.decisions_delivered += 1;
                    let _ = reply.send(d);
                }
                None => {
                    self.waiters.insert(id, reply);
                }
            }
        } else {
            // Created and finished at once (e.g. refused synchronously): say why from its trace.
            let refuse = match self.registry.finished_view(&id) {
                Some(v) => v.reason.and_then(Reason::from_name),
                None => None,
            }
            .unwrap_or(Reason::ServiceDown);
            let _ = reply.send(Decision::Refuse {
                reason: refuse,
                cause: self.cfg.causes.cause(refuse),
            });
        }
        self.drain();
    }

    /// An event of a channel the registry does not hold; `asked` when a dialplan app asks for its decision (the
    /// app is the operator's explicit choice: the `contexts` filter does not apply, as to a marked park).
    fn new_channel_event(&mut self, ev: CallEvent, asked: bool) {
        if self.own_legs.contains_key(&ev.uuid) {
            self.counters.own_leg_events += 1;
            if ev.kind == EventKind::ChannelDestroy {
                self.own_legs.remove(&ev.uuid);
            }
            return;
        }
        if ev.direction == Direction::Inbound
            && ev.kind == EventKind::ChannelCreate
            && let Some(a) = ev.other_leg
        {
            // A channel that is part of call `a` already (placed by it), not a new call to decide.
            self.counters.own_legs += 1;
            self.counters.own_leg_events += 1;
            self.own_legs.insert(ev.uuid, self.now_us);
            log::debug!("call {a}: own inbound leg {}", ev.uuid);
            return;
        }
        if self.registry.is_finished(&ev.uuid) {
            self.counters.after_end_events += 1;
            return;
        }
        // Only a creation is filtered: a park reaches the engine only with `rtc_core=true`, the operator's say-so.
        if !asked
            && ev.direction == Direction::Inbound
            && ev.kind == EventKind::ChannelCreate
            && !self.cfg.contexts.is_empty()
            && !self.cfg.contexts.contains(&ev.context)
        {
            // Routed in a context the engine does not take calls from: decided only if it reaches the app.
            self.counters.other_context += 1;
            return;
        }
        if ev.direction == Direction::Outbound {
            if let Some(a) = ev.other_leg
                && let Some(slot) = self.registry.slot_of(&a)
            {
                self.registry.link_b_leg(slot, ev.uuid);
                self.b_leg_event(slot, &ev);
            } else {
                self.counters.foreign_legs += 1;
            }
            return;
        }
        if !matches!(ev.kind, EventKind::ChannelCreate | EventKind::ChannelPark) {
            self.counters.unknown_events += 1;
            log::debug!(
                "call {}: {} for a channel never seen created; ignored",
                ev.uuid,
                ev.kind.name()
            );
            return;
        }
        let mut call = Call::new(ev.uuid, self.now_us);
        call.first_ts_us = ev.timestamp_us;
        call.caller = ev.caller.clone();
        call.destination = ev.destination.clone();
        call.source_ip = ev.source_ip;
        call.last_seq = ev.sequence;
        call.seen = EventKind::ChannelCreate.bit() | ev.kind.bit();
        if !ev.auth_user.is_empty() {
            self.auth_users.insert(ev.uuid, ev.auth_user.clone());
        }
        let slot = match self.registry.insert(call) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("{e}");
                return;
            }
        };
        self.counters.calls_created += 1;
        let deadline = self.cfg.setup_timeout;
        self.arm(slot, Input::SetupTimeout, deadline.as_millis() as u64);
        let age = Duration::from_micros(match ev.timestamp_us {
            0 => 0,
            ts => epoch_us().saturating_sub(ts),
        });
        if let Err(problem) = self.destination_problem(slot) {
            log::info!("call {}: refused (invalid_destination): {problem}", ev.uuid);
            self.apply(slot, Input::InvalidDestination, false);
        } else {
            match self.admission.shed(self.backlog, age) {
                Ok(()) => self.apply(slot, Input::ChannelCreate, false),
                Err(limit) => {
                    log::warn!("call {}: shed: {limit}", ev.uuid);
                    self.apply(slot, Input::AdmissionDenied, false);
                }
            }
        }
        if ev.kind == EventKind::ChannelPark {
            let id = ev.uuid;
            self.followups.push_back((id, Input::ChannelPark));
        }
    }

    fn a_leg_event(&mut self, slot: u32, ev: &CallEvent) {
        let Some(call) = self.registry.get_mut(slot) else {
            return;
        };
        let bit = ev.kind.bit();
        let seen = call.seen & bit != 0;
        if seen && (ev.kind.once_per_channel() || ev.sequence == call.last_seq) {
            self.counters.duplicate_events += 1;
            return;
        }
        let late = ev.sequence != 0 && ev.sequence < call.last_seq;
        call.seen |= bit;
        call.last_seq = call.last_seq.max(ev.sequence);
        call.last_event_ms = ms_since(call.created_us, self.now_us);
        if let Some(cause) = ev.hangup_cause
            && matches!(
                ev.kind,
                EventKind::ChannelHangup
                    | EventKind::ChannelHangupComplete
                    | EventKind::ChannelDestroy
            )
        {
            call.last_cause = cause;
        }
        let input = match ev.kind {
            EventKind::ChannelCreate => Input::ChannelCreate,
            EventKind::ChannelPark => Input::ChannelPark,
            EventKind::ChannelProgress | EventKind::ChannelProgressMedia => Input::ChannelProgress,
            EventKind::ChannelAnswer => Input::ChannelAnswer,
            EventKind::ChannelBridge => Input::ChannelBridge,
            EventKind::ChannelUnbridge => Input::ChannelUnbridge,
            EventKind::ChannelHangup
            | EventKind::ChannelHangupComplete
            | EventKind::ChannelDestroy => {
                // Whichever of the three comes first ends the call; the others find it finished.
                call.flags |= flags::HUNG_UP;
                Input::ChannelHangup
            }
        };
        self.apply(slot, input, late);
    }

    fn b_leg_event(&mut self, slot: u32, ev: &CallEvent) {
        let Some(call) = self.registry.get_mut(slot) else {
            return;
        };
        let kind = match ev.kind {
            EventKind::ChannelHangupComplete | EventKind::ChannelDestroy => {
                EventKind::ChannelHangup
            }
            k => k,
        };
        let bit = kind.bit();
        if call.b_seen & bit != 0 && kind.once_per_channel() {
            self.counters.duplicate_events += 1;
            return;
        }
        call.b_seen |= bit;
        if let Some(routes) = call.routes.as_ref()
            && let Some(i) = call.id.attempt_of(ev.uuid, routes.len())
            && call.route_index <= i
        {
            // The leg of route `i` (by its UUID, `CallId::leg`), placed by the host's own failover bridge (the
            // app flow): the routes before it were tried, and this one is the call's carrier so far.
            call.route_index = i + 1;
        }
        call.last_seq = call.last_seq.max(ev.sequence);
        call.last_event_ms = ms_since(call.created_us, self.now_us);
        let input = match kind {
            EventKind::ChannelAnswer => Input::BLegAnswer,
            EventKind::ChannelHangup => {
                call.last_cause = ev.hangup_cause.unwrap_or(HangupCause::NORMAL_UNSPECIFIED);
                Input::BLegHangup
            }
            _ => {
                // Create, progress, bridge on the outbound leg: the a-leg's events carry the meaning.
                self.counters.absorbed += 1;
                return;
            }
        };
        self.apply(slot, input, false);
    }

    fn apply_result(&mut self, result: ServiceResult) {
        let id = result.call;
        let reserved_for = match result.outcome {
            Outcome::BalanceReserved { .. }
            | Outcome::BalanceInsufficient
            | Outcome::LimitReached { .. }
            | Outcome::Failed(ServiceKind::Balance, _) => self.reserving.remove(&id),
            _ => None,
        };
        let Some(slot) = self.registry.slot_of(&id) else {
            self.counters.stale_results += 1;
            self.release_orphan(&result, reserved_for);
            return;
        };
        let input = match &result.outcome {
            Outcome::PartnerFound(_) => Input::PartnerFound,
            Outcome::PartnerUnknown => Input::PartnerUnknown,
            Outcome::AuthOk => Input::AuthOk,
            Outcome::AuthDenied => Input::AuthDenied,
            Outcome::BalanceReserved { .. } => Input::BalanceReserved,
            Outcome::BalanceInsufficient => Input::BalanceInsufficient,
            Outcome::LimitReached { limit, max } => {
                log::info!("call {id}: refused: {limit} of {max} reached across the nodes");
                self.counters.shared_limit_refusals += 1;
                Input::AdmissionDenied
            }
            Outcome::BalanceExtended { .. } => Input::BalanceExtended,
            Outcome::RateFound(_) => Input::RateFound,
            Outcome::RateNone => Input::RateNone,
            Outcome::RoutesFound(r) if r.is_empty() => Input::RoutesNone,
            Outcome::RoutesFound(_) => Input::RoutesFound,
            Outcome::RoutesNone => Input::RoutesNone,
            Outcome::Failed(kind, failure) => {
                log::info!(
                    "call {id}: {} service gave no answer ({failure:?})",
                    kind.name()
                );
                match (kind, self.fail_modes.get(*kind)) {
                    (
                        ServiceKind::Auth | ServiceKind::Balance | ServiceKind::Rating,
                        FailMode::Open,
                    ) => Input::StepSkipped,
                    _ => Input::ServiceDown,
                }
            }
        };
        let state = self.registry.get(slot).map(|c| c.state);
        let accepted = state.is_some_and(|s| {
            self.table
                .step(s, input, self.registry.get(slot).expect("slot checked"))
                .is_ok()
        });
        if !accepted {
            self.counters.stale_results += 1;
            self.release_orphan(&result, reserved_for);
            return;
        }
        let mut input = input;
        if let Outcome::PartnerFound(p) = &result.outcome {
            let limits = PartnerLimits {
                max_concurrent: p.max_concurrent,
                cps: CpsLimit {
                    per_second: p.max_cps,
                    burst: 0,
                },
            };
            let now = self.origin + Duration::from_micros(self.now_us);
            match self.admission.admit(p.id, limits, now) {
                Ok(ticket) => {
                    if let Some(call) = self.registry.get_mut(slot) {
                        call.admitted = Some(ticket);
                    }
                    if self.guard.enabled() && !self.fraud_admit(slot, p) {
                        input = Input::FraudDenied;
                    }
                }
                Err(limit) => {
                    log::info!("call {id}: refused: {limit}");
                    input = Input::AdmissionDenied;
                }
            }
        }
        let mut spent = None;
        // What the trail needs of the answer, before the call takes it.
        let outcome_audit = match self.audit.is_some() {
            true => Some(result.outcome.clone()),
            false => None,
        };
        if let Some(call) = self.registry.get_mut(slot) {
            match result.outcome {
                Outcome::PartnerFound(p) if input == Input::PartnerFound => {
                    call.partner = p.id;
                    match self.partners.get_mut(&p.id) {
                        Some(slot) => {
                            if slot.name != p.name {
                                slot.name = p.name;
                            }
                            slot.max_call_cost = p.max_call_cost;
                            slot.fraud = p.fraud;
                        }
                        None => {
                            self.partners.insert(
                                p.id,
                                PartnerSlot {
                                    name: p.name,
                                    max_call_cost: p.max_call_cost,
                                    fraud: p.fraud,
                                },
                            );
                        }
                    }
                }
                Outcome::BalanceReserved {
                    reservation,
                    available,
                } => {
                    call.reservation = Some(reservation);
                    self.guard.reserved(call.partner, reservation.amount);
                    if let Some(available) = available {
                        self.affordable.insert(id, available);
                    }
                }
                Outcome::BalanceExtended { granted, .. } => {
                    call.debited = Money(call.debited.0.saturating_add(granted.0.max(0)));
                    if granted > Money::ZERO && self.guard.enabled() {
                        spent = Some((call.partner, granted));
                    }
                }
                Outcome::Failed(ServiceKind::Balance, _)
                    if input == Input::StepSkipped && call.state == CallState::Connected =>
                {
                    self.unpaid_extension = true;
                }
                Outcome::RateFound(r) => call.rate = Some(r),
                Outcome::RoutesFound(r) => call.routes = Some(r),
                _ => {}
            }
        }
        if self.audit.is_some() {
            self.audit_result(slot, &outcome_audit, input);
        }
        self.apply(slot, input, false);
        self.unpaid_extension = false;
        if let Some((partner, granted)) = spent {
            let destination = self
                .registry
                .get(slot)
                .map(|c| c.destination.clone())
                .unwrap_or_default();
            let own = self.partners.get(&partner).and_then(|p| p.fraud.as_deref());
            let now_ms = self.now_us / 1000;
            let verdict = self
                .guard
                .spent(partner, &destination, granted, own, now_ms);
            self.carry_out(id, partner, verdict);
        }
    }

    /// Records a service's answer about the call in `slot` (`input`: what the engine made of it).
    fn audit_result(&mut self, slot: u32, outcome: &Option<Outcome>, input: Input) {
        let Some(outcome) = outcome else {
            return;
        };
        let source_ip = self.registry.get(slot).and_then(|c| c.source_ip);
        let what = match outcome {
            Outcome::PartnerFound(_) => Audited::Partner {
                source_ip,
                found: true,
            },
            Outcome::PartnerUnknown => Audited::Partner {
                source_ip,
                found: false,
            },
            Outcome::AuthOk => Audited::Auth { allowed: true },
            Outcome::AuthDenied => Audited::Auth { allowed: false },
            Outcome::BalanceReserved { reservation, .. } => Audited::Reservation {
                asked: self.cfg.reservation_amount,
                held: Some((reservation.id, reservation.amount)),
                refused: None,
            },
            Outcome::BalanceInsufficient => Audited::Reservation {
                asked: self.cfg.reservation_amount,
                held: None,
                refused: Some(Reason::NoBalance.name()),
            },
            Outcome::LimitReached { .. } => Audited::Reservation {
                asked: self.cfg.reservation_amount,
                held: None,
                refused: Some(Reason::LimitReached.name()),
            },
            Outcome::RateFound(r) => Audited::Rate(Some(*r)),
            Outcome::RateNone => Audited::Rate(None),
            Outcome::RoutesFound(r) => {
                Audited::Routes(r.iter().map(|r| r.carrier.clone()).collect())
            }
            Outcome::RoutesNone => Audited::Routes(Vec::new()),
            Outcome::Failed(kind, failure) => Audited::ServiceFailed {
                service: *kind,
                failure: format!("{failure:?}"),
                skipped: input == Input::StepSkipped,
            },
            // Debits while a call talks: its settlement says what it paid.
            Outcome::BalanceExtended { .. } => return,
        };
        self.audit(slot, what);
    }

    // ---- fraud rules ----------------------------------------------------------------------------

    /// Why the call's destination is not a number, if it is not (`max-destination-digits`).
    fn destination_problem(&self, slot: u32) -> Result<(), String> {
        let digits = self.cfg.destination_digits;
        let Some(call) = self.registry.get(slot) else {
            return Ok(());
        };
        if digits == 0 {
            return Ok(());
        }
        match rtc_guard::normalize_destination(&call.destination, digits) {
            Ok(_) => Ok(()),
            Err(problem) => {
                let d = &call.destination;
                let shown = match d.char_indices().nth(24) {
                    Some((cut, _)) => {
                        format!("{}... ({} characters)", &d[..cut], d.chars().count())
                    }
                    None => d.to_string(),
                };
                Err(format!(
                    "destination {shown:?}: {problem} (digits after one leading +, at most {digits})"
                ))
            }
        }
    }

    /// Asks the fraud rules about a call whose partner `p` was just identified and admitted; `false`: refused.
    fn fraud_admit(&mut self, slot: u32, p: &crate::domain::PartnerInfo) -> bool {
        let now_ms = self.now_us / 1000;
        let Some(call) = self.registry.get_mut(slot) else {
            return true;
        };
        let verdict = self.guard.admit(
            NewCall {
                partner: p.id,
                destination: &call.destination,
                reserve: self.cfg.reservation_amount,
                own: p.fraud.as_deref(),
            },
            now_ms,
        );
        let passes = verdict.passes();
        if passes {
            call.flags |= flags::GUARDED;
            call.fraud_class = verdict.class;
        } else if verdict.blocked {
            log::debug!("call {}: refused: partner {} is blocked", call.id, p.name);
        }
        let id = call.id;
        self.carry_out_named(id, p.id, &p.name, verdict);
        passes
    }

    /// Reports what the fraud rules found (event, log line) and cuts what a block hangs up.
    fn carry_out(&mut self, call: CallId, partner: PartnerId, verdict: Verdict) {
        if verdict.hits.is_empty() && verdict.cut.is_none() {
            return;
        }
        let name = self
            .partners
            .get(&partner)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        self.carry_out_named(call, partner, &name, verdict);
    }

    fn carry_out_named(&mut self, call: CallId, partner: PartnerId, name: &str, verdict: Verdict) {
        let block_s = self.guard.rules().block_for.as_secs();
        let now_ms = self.now_us / 1000;
        for hit in &verdict.hits {
            let block = hit.action == rtc_guard::FraudAction::Block;
            // One line per partner, rule and action every 10 s: pumping refused at 100 calls a second must not
            // flood the log (each hit still raises its event and counts).
            let key = (
                partner,
                hit.rule.index() as u8 * 3 + hit.action.index() as u8,
            );
            let (last_ms, quiet) = self.fraud_log.entry(key).or_insert((0, 0));
            if *last_ms != 0 && now_ms.saturating_sub(*last_ms) < FRAUD_LOG_EVERY_MS {
                *quiet += 1;
            } else {
                let more = std::mem::take(quiet);
                *last_ms = now_ms.max(1);
                log::warn!(
                    "call {call}: fraud rule {} ({}) for partner {name}, destination {}: {}{}{}",
                    hit.rule.name(),
                    hit.action.name(),
                    hit.destination,
                    hit.detail,
                    match block {
                        true => format!("; the partner is blocked for {block_s} s"),
                        false => String::new(),
                    },
                    match more {
                        0 => String::new(),
                        n => format!(
                            " ({n} more hits of this rule for this partner since the last line)"
                        ),
                    }
                );
            }
            if self.audit.is_some()
                && let Some(slot) = self.registry.slot_of(&call)
            {
                self.audit(
                    slot,
                    Audited::Fraud {
                        rule: hit.rule.name(),
                        action: hit.action.name(),
                        value: hit.value,
                        limit: hit.limit,
                        detail: hit.detail.clone(),
                    },
                );
            } else if let Some(sink) = self.audit.as_mut() {
                // The call has ended (a run of short calls is seen at its end).
                sink.record(AuditRecord {
                    call,
                    partner: Some(name.into()),
                    caller: CompactString::default(),
                    destination: hit.destination.clone(),
                    what: Audited::Fraud {
                        rule: hit.rule.name(),
                        action: hit.action.name(),
                        value: hit.value,
                        limit: hit.limit,
                        detail: hit.detail.clone(),
                    },
                });
            }
            self.command(CallCommand::Fraud(Box::new(FraudAlert {
                call,
                partner: name.into(),
                rule: hit.rule.name(),
                action: hit.action.name(),
                destination: hit.destination.clone(),
                class: hit.class.clone(),
                value: hit.value,
                limit: hit.limit,
                detail: hit.detail.clone(),
                block_s: block.then_some(block_s),
            })));
        }
        if let Some(cut) = verdict.cut {
            let ids: Vec<CallId> = self
                .registry
                .iter()
                .filter(|c| {
                    c.partner == partner
                        && c.id != call
                        && !c.state.is_final()
                        && self.guard.in_scope(&cut.scope, &c.destination)
                })
                .map(|c| c.id)
                .collect();
            if !ids.is_empty() {
                log::warn!(
                    "partner {name}: blocked; hanging up {} of its live calls ({:?})",
                    ids.len(),
                    cut.scope
                );
            }
            for id in ids {
                if let Some(slot) = self.registry.slot_of(&id) {
                    self.counters.fraud_cuts += 1;
                    self.apply(slot, Input::FraudCut, false);
                }
            }
        }
    }

    /// The call's longest talk: `max-call-duration`, or its destination class's `max-duration` when shorter.
    fn talk_cap(&self, call: &Call) -> Duration {
        let cap = self.cfg.max_call_duration;
        match self
            .guard
            .class(call.fraud_class)
            .and_then(|c| c.max_duration)
        {
            Some(class) => cap.min(class),
            None => cap,
        }
    }

    /// Most the call may cost: its partner's `max_call_cost`, or its destination class's when lower.
    fn cost_cap(&self, call: &Call) -> Option<Money> {
        let partner = self
            .partners
            .get(&call.partner)
            .and_then(|p| p.max_call_cost);
        let class = self
            .guard
            .class(call.fraud_class)
            .and_then(|c| c.max_call_cost);
        match (partner, class) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A reservation that found no call to hold it goes straight back.
    fn release_orphan(&mut self, result: &ServiceResult, reserved_for: Option<PartnerId>) {
        if let Outcome::BalanceReserved { reservation, .. } = result.outcome {
            self.counters.orphan_reservations_released += 1;
            log::info!(
                "call {}: reservation {} arrived after the call moved on; released",
                result.call,
                reservation.id
            );
            let partner = reserved_for
                .or_else(|| self.registry.by_id(&result.call).map(|c| c.partner))
                .unwrap_or(NO_PARTNER);
            self.submit(ServiceRequest::ReleaseBalance {
                call: result.call,
                partner,
                reservation,
            });
        }
    }

    // ---- the state machine --------------------------------------------------------------------

    fn apply(&mut self, slot: u32, input: Input, late: bool) {
        let Some(call) = self.registry.get(slot) else {
            return;
        };
        let state = call.state;
        let row = match self.table.step(state, input, call) {
            Ok(row) => row,
            Err(rejected) => {
                if late {
                    self.counters.late_events += 1;
                } else {
                    self.counters.illegal(state, input);
                    match rejected {
                        Rejected::NotAllowed { .. } | Rejected::GuardFailed { .. } => {
                            log::debug!("call {}: {rejected}", call.id)
                        }
                    }
                }
                return;
            }
        };
        if row.is_absorb() {
            self.counters.absorbed += 1;
            return;
        }
        if row.to != state {
            self.registry.set_state(slot, row.to);
        }
        let now = self.now_us;
        if let Some(call) = self.registry.get_mut(slot) {
            let in_state_us = call.record(state, row.to, input, now);
            let age_us = now.saturating_sub(call.created_us);
            self.counters.timed(state, row.to, in_state_us, age_us);
        }
        self.counters.transitions += 1;
        for action in row.actions {
            self.act(slot, *action);
        }
    }

    fn act(&mut self, slot: u32, action: Action) {
        let Some(call) = self.registry.get_mut(slot) else {
            return;
        };
        let id = call.id;
        match action {
            Action::LookupPartner => {
                let req = ServiceRequest::IdentifyPartner {
                    call: id,
                    source_ip: call.source_ip,
                };
                self.submit(req);
            }
            Action::Authenticate => {
                let req = ServiceRequest::Authenticate {
                    call: id,
                    partner: call.partner,
                    source_ip: call.source_ip,
                    caller: call.caller.clone(),
                    destination: call.destination.clone(),
                    auth_user: self.auth_users.remove(&id).unwrap_or_default(),
                };
                self.submit(req);
            }
            Action::Reserve => {
                let req = ServiceRequest::ReserveBalance {
                    call: id,
                    partner: call.partner,
                    amount: self.cfg.reservation_amount,
                    context: Box::new(CallContext {
                        caller: call.caller.clone(),
                        destination: call.destination.clone(),
                        source_ip: call.source_ip,
                        started_at_us: call.first_ts_us,
                        ..CallContext::default()
                    }),
                    ttl: self.cfg.reservation_ttl(),
                };
                self.submit(req);
            }
            Action::Rate => {
                let req = ServiceRequest::Rate {
                    call: id,
                    partner: call.partner,
                    destination: call.destination.clone(),
                };
                self.submit(req);
            }
            Action::Route => {
                let req = ServiceRequest::Route {
                    call: id,
                    partner: call.partner,
                    destination: call.destination.clone(),
                };
                self.submit(req);
            }
            Action::MarkParked => call.flags |= flags::PARKED,
            Action::MarkAnswered => {
                if !call.has(flags::ANSWERED_EARLY) {
                    call.flags |= flags::ANSWERED_EARLY;
                    let at = self.event_ms(slot).max(1);
                    let age = self.age_ms(slot).clamp(1, u64::from(u32::MAX)) as u32;
                    if let Some(call) = self.registry.get_mut(slot) {
                        call.answer_ms = at;
                        call.talk_from_ms = age;
                    }
                }
            }
            Action::Decide => {
                let dispatch = call.has(flags::PARKED) && !call.has(flags::APP);
                let answered = call.has(flags::ANSWERED_EARLY);
                let vars = self.decision_vars(slot);
                self.command(CallCommand::SetVariables { call: id, vars });
                let park = self.cfg.park_timeout.as_millis() as u64;
                self.arm_earlier(slot, Input::ParkTimeout, park);
                if let Some(reply) = self.waiters.remove(&id)
                    && let Some(d) = self.ready_decision(slot)
                {
                    self.counters.decisions_delivered += 1;
                    let _ = reply.send(d);
                }
                if answered {
                    // Connected by the dialplan already: it talks from its answer.
                    self.followups.push_back((id, Input::ChannelAnswer));
                } else if dispatch {
                    self.followups.push_back((id, Input::Dispatch));
                }
            }
            Action::Bridge => {
                let Some(route) = call
                    .routes
                    .as_ref()
                    .and_then(|r| r.get(usize::from(call.route_index)))
                    .cloned()
                else {
                    return;
                };
                let attempt = call.route_index;
                call.route_index += 1;
                let max_duration_s = self.max_duration_s(slot);
                self.command(CallCommand::Bridge {
                    call: id,
                    attempt,
                    route,
                    max_duration_s,
                });
            }
            Action::Connected => {
                call.flags |= flags::ANSWERED;
                // Answered before the decision: talk started then.
                let early = call.has(flags::ANSWERED_EARLY);
                let (at, from) = match early {
                    true => (call.answer_ms.max(1), call.talk_from_ms.max(1)),
                    false => (
                        self.event_ms(slot).max(1),
                        self.age_ms(slot).clamp(1, u64::from(u32::MAX)) as u32,
                    ),
                };
                if let Some(call) = self.registry.get_mut(slot) {
                    call.answer_ms = at;
                    call.talk_from_ms = from;
                    call.paid_s = 0;
                    call.debited = Money::ZERO;
                }
                self.affordable.remove(&id);
                if self
                    .registry
                    .get(slot)
                    .is_some_and(|c| c.reservation.is_some())
                {
                    // Real-time billing: the first interval (and the connect fee) is debited now; until the answer
                    // comes, the call talks on what its setup reservation pays for.
                    self.request_extension(slot);
                } else {
                    let cap = self
                        .registry
                        .get(slot)
                        .map_or(self.cfg.max_call_duration, |c| self.talk_cap(c));
                    let cap = cap.as_millis() as u64;
                    self.arm(slot, Input::DurationTimeout, u64::from(from) + cap);
                }
            }
            Action::Extend => self.request_extension(slot),
            Action::Extended => self.extended(slot),
            Action::LowBalance => {
                call.flags &= !flags::EXTENDING;
                call.flags |= flags::BILLING_DONE;
                self.counters.extensions_refused += 1;
                self.warn_low_balance(slot, None);
                self.arm_billing(slot);
            }
            Action::BillingStopped => {
                call.flags &= !flags::EXTENDING;
                call.flags |= flags::BILLING_DONE;
                self.counters.billing_failures += 1;
                log::warn!(
                    "call {id}: the balance service could not extend the call (fail-closed); it is hung up when what \
                     it paid for runs out"
                );
                self.arm_billing(slot);
            }
            Action::TalkEnded => {
                let at = self.event_ms(slot);
                if let Some(call) = self.registry.get_mut(slot)
                    && call.talk_end_ms == 0
                {
                    call.talk_end_ms = at;
                }
            }
            Action::Reject(reason) | Action::Fail(reason) => {
                call.reason = Some(reason);
                call.timer = None;
                call.deadline_ms = 0;
                let cause = match (reason, call.last_cause) {
                    (Reason::RoutesExhausted, c) if c != HangupCause::NONE => c,
                    _ => self.cfg.causes.cause(reason),
                };
                self.audit(
                    slot,
                    Audited::Refused {
                        reason: reason.name(),
                        cause: cause.0,
                    },
                );
                let Some(call) = self.registry.get_mut(slot) else {
                    return;
                };
                let hung_up = call.has(flags::HUNG_UP);
                if let Some(reply) = self.waiters.remove(&id) {
                    self.counters.decisions_delivered += 1;
                    let _ = reply.send(Decision::Refuse { reason, cause });
                }
                if !hung_up {
                    self.command(CallCommand::SetVariables {
                        call: id,
                        vars: vec![Variable {
                            name: "rtc_reject_reason",
                            value: CompactString::const_new(reason.name()),
                        }],
                    });
                    self.command(CallCommand::Hangup { call: id, cause });
                }
            }
            Action::HangupFor(reason) => {
                call.reason = Some(reason);
                call.timer = None;
                call.deadline_ms = 0;
                let cause = self.cfg.causes.cause(reason);
                self.command(CallCommand::Hangup { call: id, cause });
            }
            Action::Finalize => self.finalize(slot),
        }
    }

    /// The call's `rtc_*` variables once routed.
    fn decision_vars(&self, slot: u32) -> Vec<Variable> {
        let Some(call) = self.registry.get(slot) else {
            return Vec::new();
        };
        let mut vars = Vec::with_capacity(4);
        if let Some(p) = self.partners.get(&call.partner) {
            vars.push(Variable {
                name: "rtc_partner",
                value: p.name.clone(),
            });
        }
        if let Some(rate) = call.rate {
            vars.push(Variable {
                name: "rtc_rate",
                value: rate.per_minute.to_compact_string(),
            });
        }
        if let Some(route) = call.routes.as_ref().and_then(|r| r.first()) {
            vars.push(Variable {
                name: "rtc_route",
                value: route.carrier.clone(),
            });
        }
        vars.push(Variable {
            name: "rtc_max_duration",
            value: self.max_duration_s(slot).to_compact_string(),
        });
        vars
    }

    /// Seconds of talk the partner's money can pay for now, at the call's rate: its reservation and what it can
    /// still reserve (when the balance service said), capped by the configured maximum. Real-time billing debits
    /// interval by interval and hangs the call up only when the money runs out; this is what `rtc_max_duration`
    /// tells the dialplan at the decision.
    fn max_duration_s(&self, slot: u32) -> u32 {
        let Some(call) = self.registry.get(slot) else {
            return self
                .cfg
                .max_call_duration
                .as_secs()
                .min(u64::from(u32::MAX)) as u32;
        };
        let cap = self.talk_cap(call).as_secs();
        let paid = match (call.rate, call.reservation) {
            (Some(rate), Some(r)) => {
                let money = match self.affordable.get(&call.id) {
                    Some(available) => Money(r.amount.0.saturating_add(available.0.max(0))),
                    None => r.amount,
                };
                rate.paid_seconds(money).unwrap_or(cap)
            }
            _ => cap,
        };
        paid.min(cap).min(u64::from(u32::MAX)) as u32
    }

    // ---- real-time billing ------------------------------------------------------------------------

    /// The connected call's rate, when its talk costs something per minute.
    fn billed_rate(call: &Call) -> Option<Rate> {
        call.rate
            .filter(|r| r.per_minute > Money::ZERO || r.connect_fee > Money::ZERO)
    }

    /// Seconds of talk, from the answer, after which the call is hung up: what its debits pay for; before the first
    /// debit is answered, what its setup reservation pays for; the configured maximum at most.
    fn talk_deadline_s(&self, call: &Call) -> u64 {
        let cap = self.talk_cap(call).as_secs();
        let Some(rate) = Self::billed_rate(call) else {
            return cap;
        };
        let waiting_first =
            call.debited == Money::ZERO && call.paid_s == 0 && !call.has(flags::BILLING_DONE);
        if waiting_first && !self.unpaid_extension {
            let held = call.reservation.map_or(Money::ZERO, |r| r.amount);
            return rate.paid_seconds(held).unwrap_or(cap).min(cap);
        }
        u64::from(call.paid_s).min(cap)
    }

    /// Asks the balance service to debit the call's next interval (a keep-alive of its reservation when its talk
    /// is free, or its billing is over), and arms the hangup for when what it paid for runs out.
    fn request_extension(&mut self, slot: u32) {
        let interval_s = self.cfg.debit_interval.as_secs().max(1);
        let Some(call) = self.registry.get(slot) else {
            return;
        };
        let cap_s = self.talk_cap(call).as_secs();
        let cost_cap = self.cost_cap(call);
        let Some(reservation) = call.reservation else {
            return;
        };
        if call.has(flags::EXTENDING) {
            // The last one is still unanswered: its answer arms what comes next.
            return;
        }
        let (id, partner, paid_s, debited) = (call.id, call.partner, call.paid_s, call.debited);
        // `done`: billing was over before this request (a keep-alive); `last`: this debit is the last one.
        let mut done = call.has(flags::BILLING_DONE);
        let mut last = false;
        let (mut debit, mut unit) = (Money::ZERO, Money::ZERO);
        if let Some(rate) = Self::billed_rate(call).filter(|_| !done) {
            let target = (u64::from(paid_s) + interval_s).min(cap_s);
            if u64::from(paid_s) >= cap_s {
                done = true;
            } else {
                unit = rate.increment_cost();
                debit = Money(rate.call_cost(target).0.saturating_sub(debited.0).max(0));
                if let Some(cap) = cost_cap
                    && debited.0.saturating_add(debit.0) > cap.0
                {
                    let room = cap.0.saturating_sub(debited.0).max(0);
                    debit = Money(match unit.0 {
                        0 => room,
                        u => room / u * u,
                    });
                    last = true;
                    done = debit == Money::ZERO;
                    self.counters.cost_capped += 1;
                    log::info!(
                        "call {id}: its cost reaches its cap of {cap} (the partner's, or its destination class's); it \
                         is hung up when what it paid for runs out"
                    );
                }
            }
        }
        let context = self.billing_context(slot);
        let Some(call) = self.registry.get_mut(slot) else {
            return;
        };
        if done {
            call.flags |= flags::BILLING_DONE;
            debit = Money::ZERO;
            unit = Money::ZERO;
        }
        if last {
            call.flags |= flags::BILLING_DONE;
        }
        call.flags |= flags::EXTENDING;
        self.counters.extensions += 1;
        self.submit(ServiceRequest::ExtendBalance {
            call: id,
            partner,
            reservation,
            debit,
            unit,
            paid_s,
            context,
            ttl: self.cfg.extension_ttl(),
        });
        let at = self.registry.get(slot).map_or(0, |c| self.hangup_at_ms(c));
        self.arm(slot, Input::DurationTimeout, at);
    }

    /// When (ms after the call's creation) a connected call is hung up unless more talk is paid for: at its talk
    /// deadline, less [`HANGUP_MARGIN_MS`] when it is the money that runs out, so that the talk FreeSWITCH measures
    /// (billed in whole increments, rounded up) stays within what was paid.
    fn hangup_at_ms(&self, call: &Call) -> u64 {
        let cap_ms = self.talk_cap(call).as_millis() as u64;
        let talk_ms = (self.talk_deadline_s(call) * 1000).min(cap_ms);
        let margin = match Self::billed_rate(call) {
            Some(_) if talk_ms < cap_ms => HANGUP_MARGIN_MS.min(talk_ms),
            _ => 0,
        };
        u64::from(call.talk_from_ms) + talk_ms - margin
    }

    /// What the ledger keeps of a connected call, for a CDR should nobody settle its reservation.
    fn billing_context(&self, slot: u32) -> Box<CallContext> {
        let Some(call) = self.registry.get(slot) else {
            return Box::default();
        };
        Box::new(CallContext {
            caller: call.caller.clone(),
            destination: call.destination.clone(),
            source_ip: call.source_ip,
            started_at_us: call.first_ts_us,
            answered_at_us: match call.answer_ms {
                0 => 0,
                ms => call.first_ts_us + u64::from(ms) * 1000,
            },
            rate: call.rate,
            carrier: call
                .routes
                .as_ref()
                .and_then(|r| r.get(usize::from(call.route_index.saturating_sub(1))))
                .map(|r| r.carrier.clone()),
            paid_s: call.paid_s,
        })
    }

    /// An extension was answered: talk is paid further (or, after a fail-open failure, carried on unpaid for an
    /// interval). A debit granted only in part means the partner's money is running out: warn, and extend no more.
    fn extended(&mut self, slot: u32) {
        let cap_s = self
            .registry
            .get(slot)
            .map_or(self.cfg.max_call_duration, |c| self.talk_cap(c))
            .as_secs();
        let interval_s = self.cfg.debit_interval.as_secs().max(1);
        let unpaid = self.unpaid_extension;
        let Some(call) = self.registry.get_mut(slot) else {
            return;
        };
        call.flags &= !flags::EXTENDING;
        let Some(rate) = Self::billed_rate(call) else {
            self.arm_billing(slot);
            return;
        };
        // Billing already over (a cost cap's last debit, a keep-alive): no warning for a short grant.
        let was_done = call.has(flags::BILLING_DONE);
        let before = u64::from(call.paid_s);
        let wanted = (before + interval_s).min(cap_s);
        let paid = if unpaid {
            wanted
        } else {
            rate.paid_seconds(call.debited).unwrap_or(cap_s).min(cap_s)
        };
        call.paid_s = paid.max(before).min(u64::from(u32::MAX)) as u32;
        let short = u64::from(call.paid_s) < wanted;
        if u64::from(call.paid_s) >= cap_s {
            call.flags |= flags::BILLING_DONE;
        }
        self.counters.extensions_granted += 1;
        if short && !was_done {
            if let Some(call) = self.registry.get_mut(slot) {
                call.flags |= flags::BILLING_DONE;
            }
            self.warn_low_balance(slot, None);
        }
        self.arm_billing(slot);
    }

    /// Arms what comes next for a connected call: its next debit (or keep-alive) a little before what it paid for
    /// runs out, or the hangup when nothing more will be debited.
    fn arm_billing(&mut self, slot: u32) {
        let interval_ms = self.cfg.debit_interval.as_millis().max(1000) as u64;
        let lead_ms = self.cfg.debit_lead().as_millis() as u64;
        let age = self.age_ms(slot);
        let Some(call) = self.registry.get(slot) else {
            return;
        };
        let deadline = self.hangup_at_ms(call);
        let next_tick = if Self::billed_rate(call).is_some() && !call.has(flags::BILLING_DONE) {
            deadline.saturating_sub(lead_ms).max(age)
        } else {
            // Free talk, or billing over: keep the reservation alive every interval until the hangup.
            age + interval_ms
        };
        if call.reservation.is_some() && next_tick < deadline {
            self.arm(slot, Input::BillingTick, next_tick);
        } else {
            self.arm(slot, Input::DurationTimeout, deadline);
        }
    }

    /// Tells FreeSWITCH (and the operator) that the call's partner cannot pay its next interval.
    fn warn_low_balance(&mut self, slot: u32, available: Option<Money>) {
        let age = self.age_ms(slot);
        let Some(call) = self.registry.get(slot) else {
            return;
        };
        let deadline_ms = self.hangup_at_ms(call);
        let warning = LowBalance {
            call: call.id,
            partner: self
                .partners
                .get(&call.partner)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            available,
            paid_s: call.paid_s,
            remaining_s: (deadline_ms.saturating_sub(age) / 1000).min(u64::from(u32::MAX)) as u32,
        };
        self.counters.low_balance += 1;
        log::info!(
            "call {}: low balance: partner {} cannot pay the next interval; {} s of paid talk left",
            warning.call,
            warning.partner,
            warning.remaining_s
        );
        self.command(CallCommand::LowBalance(Box::new(warning)));
    }

    fn ready_decision(&self, slot: u32) -> Option<Decision> {
        let call = self.registry.get(slot)?;
        match call.state {
            CallState::Parked | CallState::Connecting | CallState::Connected => {
                Some(Decision::Connect {
                    routes: call.routes.clone()?,
                    vars: self.decision_vars(slot),
                    max_duration_s: self.max_duration_s(slot),
                })
            }
            CallState::Rejected | CallState::Failed => {
                let reason = call.reason.unwrap_or(Reason::ServiceDown);
                Some(Decision::Refuse {
                    reason,
                    cause: self.cfg.causes.cause(reason),
                })
            }
            _ => None,
        }
    }

    /// Ends a call: settles its reservation, writes its CDR, frees its partner slot, removes it.
    fn finalize(&mut self, slot: u32) {
        let now = self.now_us;
        let ended_ms = self.event_ms(slot);
        let Some(mut call) = self.registry.remove(slot, now) else {
            return;
        };
        self.waiters.remove(&call.id);
        self.auth_users.remove(&call.id);
        self.affordable.remove(&call.id);
        if call.has(flags::ANSWERED) && call.talk_end_ms == 0 {
            call.talk_end_ms = ended_ms.max(call.answer_ms);
        }
        let talk_s = call.talk_seconds();
        let (billed_s, cost) = match call.rate {
            Some(rate) => (rate.billed_seconds(talk_s), rate.call_cost(talk_s)),
            None => (0, Default::default()),
        };
        let settlement = call.reservation.map(|reservation| {
            if talk_s > 0 {
                ServiceRequest::CommitBalance {
                    call: call.id,
                    partner: call.partner,
                    reservation,
                    cost,
                }
            } else {
                ServiceRequest::ReleaseBalance {
                    call: call.id,
                    partner: call.partner,
                    reservation,
                }
            }
        });
        if let Some(ticket) = call.admitted.take() {
            self.admission.release(ticket);
        }
        let fraud = self.guard.enabled().then(|| {
            let now_ms = now / 1000;
            self.guard.ended(
                EndedCall {
                    partner: call.partner,
                    destination: &call.destination,
                    admitted: call.has(flags::GUARDED),
                    reserved: call.reservation.map_or(Money::ZERO, |r| r.amount),
                    charged: match call.reservation {
                        Some(_) => Money(cost.0.saturating_sub(call.debited.0).max(0)),
                        None => Money::ZERO,
                    },
                    answered: call.has(flags::ANSWERED),
                    talk_s,
                },
                now_ms,
            )
        });
        let partner = self.partners.get(&call.partner).map(|p| p.name.clone());
        match call.state {
            CallState::Completed => self.counters.completed += 1,
            CallState::Rejected => self.counters.rejected += 1,
            _ => self.counters.failed += 1,
        }
        if let Some(r) = call.reason {
            self.counters.finished_for(r);
        }
        let cdr = Cdr {
            uuid: call.id,
            setup_us: call.setup_us(),
            caller: call.caller,
            destination: call.destination,
            source_ip: call.source_ip,
            partner,
            final_state: call.state.name(),
            reason: call.reason.map(Reason::name),
            hangup_cause: call.last_cause,
            carrier: call
                .routes
                .as_ref()
                .and_then(|r| r.get(usize::from(call.route_index.saturating_sub(1))))
                .map(|r| r.carrier.clone()),
            rate_per_minute: call.rate.map(|r| r.per_minute),
            talk_s,
            billed_s,
            cost,
            started_at_us: call.first_ts_us,
            ended_at_us: call.first_ts_us + u64::from(ended_ms) * 1000,
        };
        self.counters.cdrs += 1;
        self.counters.requests += 1 + u64::from(settlement.is_some());
        let (id, partner_id) = (cdr.uuid, call.partner);
        if let Some(sink) = self.audit.as_mut() {
            sink.record(AuditRecord {
                call: id,
                partner: cdr.partner.clone(),
                caller: cdr.caller.clone(),
                destination: cdr.destination.clone(),
                what: Audited::Settlement {
                    state: cdr.final_state,
                    reservation: call.reservation.map(|r| r.id),
                    committed: match &settlement {
                        Some(ServiceRequest::CommitBalance { cost, .. }) => Some(*cost),
                        _ => None,
                    },
                    talk_s,
                    billed_s,
                },
            });
        }
        self.services.finish(settlement, Box::new(cdr));
        if let Some(verdict) = fraud {
            self.carry_out(id, partner_id, verdict);
        }
    }

    // ---- timers and sweep -----------------------------------------------------------------------

    /// Sets the call's timer to fire `at_ms` after its creation, replacing the current one.
    fn arm(&mut self, slot: u32, timer: Input, at_ms: u64) {
        let Some(call) = self.registry.get_mut(slot) else {
            return;
        };
        let at_ms = at_ms.clamp(1, u64::from(u32::MAX)) as u32;
        call.timer = Some(timer);
        call.deadline_ms = at_ms;
        if call.queued_ms == 0 || at_ms < call.queued_ms {
            call.queued_ms = at_ms;
            let abs = call.created_us / 1000 + u64::from(at_ms);
            self.timers.push(Reverse((abs, call.id)));
            self.armed_us = self.armed_us.min(abs * 1000);
        }
    }

    /// The earliest timer armed since the last call (engine µs), if any: the engine loop wakes up for it rather
    /// than at the time it had planned before the input that armed it.
    pub fn take_armed(&mut self) -> Option<u64> {
        let at = std::mem::replace(&mut self.armed_us, u64::MAX);
        (at != u64::MAX).then_some(at)
    }

    /// Arms `timer` `after_ms` from now unless the current timer fires earlier.
    fn arm_earlier(&mut self, slot: u32, timer: Input, after_ms: u64) {
        let at = self.age_ms(slot) + after_ms;
        let current = self.registry.get(slot).map_or(0, |c| c.deadline_ms);
        if current == 0 || at < u64::from(current) {
            self.arm(slot, timer, at);
        }
    }

    /// Fires every timer due by now. Returns the engine time (µs) of the next one, if any.
    pub fn fire_timers(&mut self) -> Option<u64> {
        self.now_us = self.clock.now_us();
        let now_ms = self.now_us / 1000;
        while let Some(&Reverse((abs, id))) = self.timers.peek() {
            if abs > now_ms {
                return Some(abs * 1000);
            }
            self.timers.pop();
            let Some(slot) = self.registry.slot_of(&id) else {
                continue;
            };
            let Some(call) = self.registry.get_mut(slot) else {
                continue;
            };
            let entry_ms = (abs - call.created_us / 1000) as u32;
            if entry_ms != call.queued_ms {
                continue; // superseded by an earlier entry for the same call
            }
            call.queued_ms = 0;
            let (deadline, timer) = (call.deadline_ms, call.timer);
            let created_ms = call.created_us / 1000;
            match timer {
                Some(input) if deadline != 0 && created_ms + u64::from(deadline) <= now_ms => {
                    call.timer = None;
                    call.deadline_ms = 0;
                    self.counters.timers_fired += 1;
                    self.apply(slot, input, false);
                    self.drain();
                }
                Some(input) if deadline != 0 => {
                    // The deadline moved later: queue it again.
                    self.arm(slot, input, u64::from(deadline));
                }
                _ => {}
            }
        }
        None
    }

    /// Runs the sweep if it is due: finished calls whose hangup never came (after `linger`) and calls with
    /// no event for `stale_after` are removed, settled and written.
    pub fn sweep_if_due(&mut self) -> Option<u64> {
        self.now_us = self.clock.now_us();
        if self.now_us < self.next_sweep_us {
            return Some(self.next_sweep_us);
        }
        self.next_sweep_us = self.now_us + self.cfg.sweep_interval.as_micros() as u64;
        let linger_ms = self.cfg.linger.as_millis() as u64;
        let stale_ms = self.cfg.stale_after.as_millis() as u64;
        let now_us = self.now_us;
        // How long a call has gone without an event, in ms.
        let quiet_for =
            |c: &Call| now_us.saturating_sub(c.created_us) / 1000 - u64::from(c.last_event_ms);
        let due: Vec<CallId> = self
            .registry
            .iter()
            .filter(|c| {
                let quiet_ms = quiet_for(c);
                (c.state.is_final() && quiet_ms >= linger_ms) || quiet_ms >= stale_ms
            })
            .map(|c| c.id)
            .collect();
        let verify_ms = self.cfg.verify_after.as_millis() as u64;
        if verify_ms > 0 && self.verify_queue.is_empty() && now_us >= self.next_verify_us {
            self.next_verify_us = now_us + verify_ms * 1000;
            self.verify_queue = self
                .registry
                .iter()
                .filter(|c| !c.state.is_final() && quiet_for(c) >= verify_ms)
                .map(|c| c.id)
                .collect();
        }
        // A bounded batch per sweep, so that tens of thousands of quiet calls never stall the engine thread.
        let batch = self.verify_queue.len().saturating_sub(VERIFY_BATCH);
        for id in self.verify_queue.split_off(batch) {
            let Some(slot) = self.registry.slot_of(&id) else {
                continue;
            };
            let still_quiet = self
                .registry
                .get(slot)
                .is_some_and(|c| !c.state.is_final() && quiet_for(c) >= verify_ms);
            if still_quiet && self.control.channel_gone(id) {
                self.counters.channels_gone += 1;
                log::warn!(
                    "call {id}: its channel is gone, but no hangup was seen (events lost?); settled now"
                );
                self.apply(slot, Input::Swept, false);
            }
        }
        let stale_us = stale_ms * 1000;
        self.own_legs
            .retain(|_, seen_us| now_us.saturating_sub(*seen_us) < stale_us);
        for id in due {
            if let Some(slot) = self.registry.slot_of(&id) {
                self.counters.swept += 1;
                log::info!("call {id}: swept (no hangup seen in time)");
                self.apply(slot, Input::Swept, false);
            }
        }
        self.drain();
        Some(self.next_sweep_us)
    }

    /// Settles every live call (shutdown): calls in setup are refused, connected ones billed so far.
    pub fn shutdown_calls(&mut self) -> usize {
        self.now_us = self.clock.now_us();
        let ids: Vec<CallId> = self.registry.iter().map(|c| c.id).collect();
        let n = ids.len();
        for id in ids {
            if let Some(slot) = self.registry.slot_of(&id) {
                let mut hang_up = false;
                if let Some(call) = self.registry.get_mut(slot)
                    && call.state == CallState::Connected
                {
                    call.reason = Some(Reason::Shutdown);
                    hang_up = self.cfg.hangup_connected_on_shutdown;
                }
                if hang_up {
                    let cause = self.cfg.causes.cause(Reason::Shutdown);
                    self.command(CallCommand::Hangup { call: id, cause });
                }
                self.apply(slot, Input::EngineShutdown, false);
            }
        }
        self.drain();
        n
    }

    // ---- queries --------------------------------------------------------------------------------

    /// `rtc_core status`: calls by state, counters, admission and live calls per partner.
    pub fn status(&self, uptime_s: u64) -> StatusReport {
        let admission = self.admission.stats();
        let by_partner = admission
            .by_partner
            .iter()
            .map(|&(id, active)| PartnerLive {
                id,
                name: self
                    .partners
                    .get(&id)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                active,
            })
            .collect();
        StatusReport {
            uptime_s,
            live_calls: self.registry.len(),
            by_state: CallState::ALL
                .iter()
                .map(|s| (s.name(), self.registry.count(*s)))
                .collect(),
            stats: self.counters.snapshot(),
            by_partner,
            admission,
            pending_results: self.pending_results,
            fraud: self.fraud_summary(),
        }
    }

    fn fraud_summary(&self) -> FraudSummary {
        let now_ms = self.clock.now_us() / 1000;
        let stats = self.guard.stats();
        let hits = rtc_guard::Rule::ALL
            .iter()
            .flat_map(|r| {
                rtc_guard::FraudAction::ALL
                    .iter()
                    .map(move |a| (r.name(), a.name(), stats.hits[r.index()][a.index()]))
            })
            .collect();
        if !self.guard.enabled() {
            // Every (rule, action) at zero, so that rates over the counters start from zero when rules are enabled.
            return FraudSummary {
                hits,
                calls_cut: self.counters.fraud_cuts,
                ..FraudSummary::default()
            };
        }
        let mut spend_hour: Vec<(CompactString, Money)> = self
            .guard
            .partners()
            .filter_map(|p| {
                let name = self.partners.get(&p)?.name.clone();
                Some((name, self.guard.spend_hour(p, now_ms)))
            })
            .collect();
        spend_hour.sort();
        FraudSummary {
            enabled: true,
            hits,
            blocked_partners: self.guard.blocks(now_ms).len() as u32,
            blocked_refusals: stats.blocked_refusals,
            calls_cut: self.counters.fraud_cuts,
            spend_hour,
        }
    }

    /// Unix seconds of engine time `ms`.
    fn unix_s(&self, ms: u64) -> u64 {
        let offset_us = epoch_us().saturating_sub(self.clock.now_us());
        (offset_us + ms * 1000) / 1_000_000
    }

    fn partner_name(&self, id: PartnerId) -> CompactString {
        self.partners
            .get(&id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| compact_str::format_compact!("#{id}"))
    }

    /// `rtc_core fraud`: blocks in force, the latest hits (newest first), and the counters.
    pub fn fraud(&self) -> FraudReport {
        let now_ms = self.clock.now_us() / 1000;
        FraudReport {
            summary: self.fraud_summary(),
            blocks: self
                .guard
                .blocks(now_ms)
                .into_iter()
                .map(|b| BlockView {
                    partner: self.partner_name(b.partner),
                    rule: b.rule.name(),
                    detail: b.detail.clone(),
                    since_s: self.unix_s(b.since_ms),
                    until_s: self.unix_s(b.until_ms),
                    refused: b.refused,
                })
                .collect(),
            recent: self
                .guard
                .recent()
                .rev()
                .map(|h| HitView {
                    at_s: self.unix_s(h.at_ms),
                    partner: self.partner_name(h.partner),
                    rule: h.rule.name(),
                    action: h.action.name(),
                    destination: h.destination.clone(),
                    class: h.class.clone(),
                    detail: h.detail.clone(),
                })
                .collect(),
        }
    }

    /// `rtc_core unblock <partner>`: lifts the partner's block.
    pub fn unblock(&mut self, partner: &str) -> Result<String, String> {
        let Some(id) = self
            .partners
            .iter()
            .find(|(_, p)| p.name == partner)
            .map(|(id, _)| *id)
        else {
            return Err(format!(
                "partner {partner}: not known to the engine (no call of it seen since start)"
            ));
        };
        let now_ms = self.clock.now_us() / 1000;
        match self.guard.unblock(id, now_ms) {
            Some(b) => {
                log::warn!(
                    "partner {partner}: unblocked by the operator (blocked by {} at {}; {} calls refused meanwhile)",
                    b.rule.name(),
                    self.unix_s(b.since_ms),
                    b.refused
                );
                Ok(format!(
                    "partner {partner} unblocked (was blocked by {}: {}; {} new calls refused meanwhile)",
                    b.rule.name(),
                    b.detail,
                    b.refused
                ))
            }
            None => Err(format!("partner {partner}: not blocked")),
        }
    }

    /// Live calls in `state`.
    pub fn count(&self, state: CallState) -> u32 {
        self.registry.count(state)
    }

    /// At most `limit` live calls, for `rtc_core calls`.
    pub fn calls(&self, limit: usize) -> Vec<CallSummary> {
        let now = self.clock.now_us();
        self.registry
            .iter()
            .take(limit)
            .map(|c| CallSummary {
                uuid: c.id,
                state: c.state.name(),
                partner: self.partners.get(&c.partner).map(|p| p.name.clone()),
                caller: c.caller.to_string(),
                destination: c.destination.to_string(),
                age_ms: now.saturating_sub(c.created_us) / 1000,
            })
            .collect()
    }

    /// A live call's view, or a finished one's while its trace is kept.
    pub fn call(&self, id: &CallId) -> Option<CallView> {
        let now = self.clock.now_us();
        let mut view = match self.registry.by_id(id) {
            Some(c) => CallView::of(c, now),
            None => self.registry.finished_view(id).cloned()?,
        };
        view.partner = view
            .partner_id
            .and_then(|p| self.partners.get(&p))
            .map(|p| p.name.to_string());
        Some(view)
    }

    // ---- plumbing --------------------------------------------------------------------------------

    fn submit(&mut self, req: ServiceRequest) {
        self.counters.requests += 1;
        let asks = match &req {
            ServiceRequest::ReserveBalance { call, partner, .. } => Some((*call, Some(*partner))),
            ServiceRequest::IdentifyPartner { call, .. }
            | ServiceRequest::Authenticate { call, .. }
            | ServiceRequest::ExtendBalance { call, .. }
            | ServiceRequest::Rate { call, .. }
            | ServiceRequest::Route { call, .. } => Some((*call, None)),
            _ => None,
        };
        match self.services.submit(req) {
            Some(result) => {
                self.counters.immediate_results += 1;
                self.immediate.push_back(result);
            }
            None => {
                if let Some((call, reserving)) = asks {
                    self.pending_results += 1;
                    if let Some(partner) = reserving {
                        self.reserving.insert(call, partner);
                    }
                }
            }
        }
    }

    /// Decision requests sent to asynchronous services and not answered yet.
    pub fn pending_results(&self) -> u64 {
        self.pending_results
    }

    fn command(&mut self, cmd: CallCommand) {
        self.counters.commands += 1;
        self.control.execute(cmd);
    }

    /// Applies what the last input queued: immediate results and follow-up inputs.
    fn drain(&mut self) {
        loop {
            if let Some(result) = self.immediate.pop_front() {
                // Each answer is its own moment: the trace (and the CDR's setup time) shows how long the
                // embedded backends took, not one instant for the whole decision.
                self.now_us = self.clock.now_us();
                self.apply_result(result);
            } else if let Some((id, input)) = self.followups.pop_front() {
                if let Some(slot) = self.registry.slot_of(&id) {
                    self.apply(slot, input, false);
                }
            } else {
                break;
            }
        }
    }

    fn age_ms(&self, slot: u32) -> u64 {
        self.registry
            .get(slot)
            .map_or(0, |c| self.now_us.saturating_sub(c.created_us) / 1000)
    }

    /// Milliseconds after the call's first FreeSWITCH timestamp of the current event (or of now, by the
    /// engine's clock, when the input is not an event or carries no timestamp).
    fn event_ms(&self, slot: u32) -> u32 {
        let Some(call) = self.registry.get(slot) else {
            return 0;
        };
        let ms = if self.event_ts_us != 0 && call.first_ts_us != 0 {
            self.event_ts_us.saturating_sub(call.first_ts_us) / 1000
        } else {
            self.now_us.saturating_sub(call.created_us) / 1000
        };
        ms.min(u64::from(u32::MAX)) as u32
    }
}

fn ms_since(created_us: u64, now_us: u64) -> u32 {
    (now_us.saturating_sub(created_us) / 1000).min(u64::from(u32::MAX)) as u32
}

/// Microseconds since the Unix epoch (FreeSWITCH's `Event-Date-Timestamp` clock).
pub fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CALL_TRANSITIONS;
    use crate::testkit::{RecordingControl, ScriptedServices, sample_routes};

    fn core() -> Core {
        let (clock, _) = Clock::manual();
        Core::new(
            EngineConfig::default(),
            FailModes::default(),
            Box::new(ScriptedServices::silent()),
            Box::new(RecordingControl::default()),
            clock,
        )
    }

    /// Every row of the table, applied to a call standing in its `from` state, takes it to its `to`
    /// state — guarded rows with their guard holding, the rows after them with it failing.
    #[test]
    fn every_legal_transition_is_taken() {
        for (i, row) in CALL_TRANSITIONS.iter().enumerate() {
            let mut core = core();
            let id = CallId::from_u128(i as u128 + 1);
            let mut call = Call::new(id, 0);
            call.state = row.from;
            call.routes = Some(sample_routes(2));
            call.route_index = 1;
            call.last_cause = HangupCause::NO_ANSWER;
            // The unguarded row that follows a guarded one is reached when the guard fails.
            let shadowed = CALL_TRANSITIONS[..i]
                .iter()
                .any(|r| r.from == row.from && r.on == row.on && r.guard.is_some());
            if shadowed {
                call.route_index = 2;
            }
            let slot = core.registry.insert(call).unwrap();
            core.apply(slot, row.on, false);
            core.drain();
            let state = match core.registry.by_id(&id) {
                Some(c) => c.state.name(),
                None => core.registry.finished_view(&id).expect("finished").state,
            };
            assert_eq!(
                state,
                row.to.name(),
                "row {i}: {} --{}--> {}",
                row.from,
                row.on,
                row.to
            );
            assert_eq!(core.stats().illegal_total(), 0, "row {i}");
        }
    }

    /// Every (state, input) pair the table does not list is refused and counted, never applied.
    #[test]
    fn every_other_pair_is_refused_and_counted() {
        let table = call_table();
        let mut refused = 0;
        for &state in CallState::ALL {
            for &input in Input::ALL {
                if table.handles(state, input) {
                    continue;
                }
                let mut core = core();
                let mut call = Call::new(CallId::from_u128(1), 0);
                call.state = state;
                let slot = core.registry.insert(call).unwrap();
                core.apply(slot, input, false);
                assert_eq!(core.registry.get(slot).unwrap().state, state);
                assert_eq!(core.stats().illegal_total(), 1);
                refused += 1;
            }
        }
        assert!(refused > 100);
    }

    #[test]
    fn the_table_compiles_and_states_fit_the_trace_encoding() {
        assert!(Table::new(&CALL_TRANSITIONS).is_ok());
        const { assert!(CallState::COUNT <= 16) };
        const { assert!(Input::COUNT <= 256) };
    }

    #[test]
    fn call_record_stays_compact() {
        // 100,000 live calls must fit in 512 bytes each, index and timers included (`bench engine` measures
        // the whole: 24 bytes more for real-time billing took it from 462 to about 486).
        let size = std::mem::size_of::<Call>();
        assert!(size <= 360, "Call is {size} bytes");
    }
}
