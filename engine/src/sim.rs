//! `rtc-core simulate`: realistic call traffic through the real engine thread.
//!
//! A stand-in FreeSWITCH ([`SimSwitch`], the engine's call control) and a traffic driver play the switch's
//! side: calls arrive at a given rate with the event streams FreeSWITCH raises (both legs), react to the
//! engine's bridge and hangup commands as a switch would (ringing, no answer, talk, hangup), and include
//! the awkward cases — unknown partners, empty balances, unrouted destinations, failover after no answer,
//! callers hanging up during setup, events out of order and twice. Everything runs in real time on real
//! threads; the business services are whatever sink the caller gives the engine (the embedded local
//! backends by default).
//!
//! Where the events go is an [`EventSink`]: straight into the engine's queue ([`EngineHandle`], for
//! `rtc-core simulate`), or out of an event socket server as FreeSWITCH would write them
//! (`rtc_esl::server::EslSwitch`, for ESL mode's tests and benchmarks), whose commands come back as
//! the same [`CallCommand`]s.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::cause::HangupCause;
use crate::control::{CallCommand, CallControl};
use crate::core::epoch_us;
use crate::engine::{EngineHandle, Query, QueryReply};
use crate::event::{CallEvent, Direction, EventKind};
use crate::id::CallId;
use crate::stats::Stats;

/// The stand-in switch: forwards the engine's commands to the traffic driver.
pub struct SimSwitch {
    tx: Sender<CallCommand>,
}

impl SimSwitch {
    /// A switch, and the commands the engine sends it.
    pub fn new() -> (SimSwitch, Receiver<CallCommand>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (SimSwitch { tx }, rx)
    }
}

impl CallControl for SimSwitch {
    fn execute(&mut self, command: CallCommand) {
        let _ = self.tx.send(command);
    }
}

/// Where the traffic driver's channel events go.
pub trait EventSink {
    /// Hands one event on; `false` when it was refused (counted in the report).
    fn emit(&mut self, ev: CallEvent) -> bool;
    /// The engine's live calls and counters, when this sink can ask the engine.
    fn engine_status(&self) -> Option<(usize, Stats)>;
}

impl EventSink for EngineHandle {
    fn emit(&mut self, ev: CallEvent) -> bool {
        self.submit_event(ev).is_ok()
    }

    fn engine_status(&self) -> Option<(usize, Stats)> {
        live_calls(self)
    }
}

/// What a simulated call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// A known partner calls a routed destination; the first carrier answers.
    Answered,
    /// The first carrier does not answer; the next one does.
    NoAnswerFailover,
    /// PARK arrives before CREATE, and events come twice.
    Reordered,
    /// The caller hangs up while the call is being decided.
    CallerCancels,
    /// The source address belongs to no partner.
    UnknownPartner,
    /// The partner's balance is empty.
    NoBalance,
    /// The destination has a rate but no route.
    NoRoute,
    /// A hacked PBX pumps calls to a few numbers (premium rate, or one pumped range), talking long (`--fraud` only).
    Pumping,
    /// The same PBX's partner calling normally, beside the pumping (`--fraud` only).
    PbxNormal,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 9] = [
        Scenario::Answered,
        Scenario::NoAnswerFailover,
        Scenario::Reordered,
        Scenario::CallerCancels,
        Scenario::UnknownPartner,
        Scenario::NoBalance,
        Scenario::NoRoute,
        Scenario::Pumping,
        Scenario::PbxNormal,
    ];

    /// Share of the traffic, in percent.
    fn weight(self) -> u32 {
        match self {
            Scenario::Answered => 66,
            Scenario::NoAnswerFailover => 8,
            Scenario::Reordered => 6,
            Scenario::CallerCancels => 5,
            Scenario::UnknownPartner => 5,
            Scenario::NoBalance => 5,
            Scenario::NoRoute => 5,
            Scenario::Pumping | Scenario::PbxNormal => 0,
        }
    }

    /// The final state the engine should reach.
    pub fn expected(self) -> &'static str {
        match self {
            Scenario::Answered
            | Scenario::NoAnswerFailover
            | Scenario::Reordered
            | Scenario::CallerCancels
            | Scenario::PbxNormal => "COMPLETED",
            // Refused by the fraud rules, or cut by a block, or (below the limits) completed.
            Scenario::Pumping => "REJECTED or COMPLETED",
            _ => "REJECTED",
        }
    }
}

/// Addresses and numbers that produce each scenario with the configured backends. The defaults match
/// the sample data shipped in `conf/rtc_core/`.
#[derive(Clone, Debug)]
pub struct SimProfile {
    /// A partner with money.
    pub known_ip: IpAddr,
    /// An address no partner owns.
    pub unknown_ip: IpAddr,
    /// A partner whose balance is empty.
    pub broke_ip: IpAddr,
    /// Destination prefix with at least one route.
    pub routed_prefix: &'static str,
    /// Destination prefix with at least two routes (for failover).
    pub failover_prefix: &'static str,
    /// Destination prefix with a rate and no route.
    pub unrouted_prefix: &'static str,
    /// The hacked PBX's partner (`--fraud`).
    pub pumping_ip: IpAddr,
    /// The numbers it pumps.
    pub pumped_numbers: &'static [&'static str],
}

impl Default for SimProfile {
    fn default() -> Self {
        SimProfile {
            known_ip: IpAddr::from([127, 0, 0, 1]),
            unknown_ip: IpAddr::from([203, 0, 113, 9]),
            broke_ip: IpAddr::from([127, 0, 9, 1]),
            routed_prefix: "4420",
            failover_prefix: "44",
            unrouted_prefix: "882",
            pumping_ip: IpAddr::from([127, 0, 7, 1]),
            // Four premium-rate numbers (UK 09, a risky class in the shipped rules) and four numbers of one
            // ordinary range that the PBX pumps (international revenue share fraud).
            pumped_numbers: &[
                "449091230001",
                "449091230002",
                "449091230003",
                "449091230004",
                "442079469001",
                "442079469002",
                "442079469003",
                "442079469004",
            ],
        }
    }
}

/// How to run a simulation.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Calls to place.
    pub calls: usize,
    /// New calls per second.
    pub cps: f64,
    /// Talk time of answered calls, drawn uniformly in this range.
    pub talk: (Duration, Duration),
    /// Ringing before an answer (or a no-answer).
    pub ring: Duration,
    /// Seed of the traffic mix and timings, so that a run can be repeated.
    pub seed: u64,
    /// The traffic mix.
    pub profile: SimProfile,
    /// Give up waiting for calls to end after this long past the last arrival.
    pub drain_timeout: Duration,
    /// Percent of the calls from the hacked PBX to its pumped numbers, and as many again from the same partner to
    /// ordinary destinations (0: none).
    pub pumping_percent: u32,
    /// Talk time of the pumped calls, drawn uniformly in this range (pumping talks long).
    pub pumping_talk: (Duration, Duration),
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            calls: 10_000,
            cps: 1_000.0,
            talk: (Duration::from_millis(200), Duration::from_millis(2_000)),
            ring: Duration::from_millis(20),
            seed: 1,
            profile: SimProfile::default(),
            drain_timeout: Duration::from_secs(30),
            pumping_percent: 0,
            pumping_talk: (Duration::from_secs(2), Duration::from_secs(10)),
        }
    }
}

/// What a simulation saw.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// Calls placed.
    pub calls: usize,
    /// Calls placed per scenario.
    pub by_scenario: Vec<(Scenario, usize)>,
    /// Calls whose channel ended (a-leg destroyed) within the run.
    pub ended: usize,
    /// Events offered to the engine.
    pub events_sent: u64,
    /// Events the engine refused (queue full): counted by the engine too.
    pub events_refused: u64,
    /// How long the run took.
    pub elapsed_s: f64,
    /// Events offered per second.
    pub events_per_sec: f64,
    /// Wall-clock time from CHANNEL_CREATE sent to the engine's first command (bridge or hangup).
    pub setup_p50_us: u64,
    /// Its 99th percentile.
    pub setup_p99_us: u64,
    /// Its maximum.
    pub setup_max_us: u64,
    /// Most calls live in the engine at once.
    pub peak_live_calls: usize,
    /// Bridges the engine asked for (failovers included).
    pub bridges: u64,
    /// Hangups the engine asked for.
    pub hangups_commanded: u64,
    /// Low-balance warnings the engine gave (`rtc_core::low_balance`).
    pub low_balance_warnings: u64,
    /// Fraud events the engine raised (`rtc_core::fraud`).
    pub fraud_events: u64,
    /// The pumping partner's calls, when the run had one.
    pub pumping: Option<PumpingReport>,
    /// Calls live in the engine when the run ended (0 when every call was settled).
    pub left_live: usize,
    /// The engine's counters at the end.
    pub stats: Stats,
}

/// What became of the hacked PBX's calls.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PumpingReport {
    /// Calls to the pumped numbers.
    pub pumped_calls: u64,
    /// Of those, refused by the engine before they were bridged.
    pub refused: u64,
    /// Of those, hung up by the engine while they talked (a block's cut).
    pub cut: u64,
    /// Talk the pumped calls had planned and did not get (refused: all of it; cut: the rest), per destination in
    /// ms: what the fraud rules saved, at the destination's rate.
    pub stopped_talk_ms: Vec<(compact_str::CompactString, u64)>,
    /// The same partner's ordinary calls.
    pub normal_calls: u64,
    /// Of those, completed as planned (never hung up by the engine).
    pub normal_completed: u64,
}

enum Step {
    Arrive(usize),
    Emit(CallEvent),
}

/// The simulator's view of one call.
struct SimCall {
    scenario: Scenario,
    created: Instant,
    decided: bool,
    source_ip: IpAddr,
    destination: compact_str::CompactString,
    b_legs: u8,
    ended: bool,
    /// Planned talk (pumped calls), and when the talk was to end once bridged.
    planned_talk: Duration,
    talk_ends: Option<Instant>,
    /// The engine hung the call up (refused or cut).
    hung_up_by_engine: bool,
}

struct Driver<S: EventSink> {
    /// Where events go.
    sink: S,
    opts: SimOptions,
    rng: fastrand::Rng,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    steps: Vec<Option<Step>>,
    calls: HashMap<CallId, SimCall>,
    setup: hdrhistogram::Histogram<u64>,
    report_sent: u64,
    refused: u64,
    ended: usize,
    bridges: u64,
    hangups: u64,
    low_balance: u64,
    fraud_events: u64,
    /// When the engine first hung each call up.
    engine_hangups: HashMap<CallId, Instant>,
    order: u64,
}

/// The a-leg id of the simulator's `n`th call in a run seeded `seed`: runs with other seeds (two simulated
/// nodes on one shared ledger) never reuse a call's id, as FreeSWITCH's random UUIDs never do.
pub fn call_id(seed: u64, n: usize) -> CallId {
    CallId::from_u128(
        0x5157_0000_0000_0000_0000_0000_0000_0000
            | (u128::from(seed & 0xFFFF_FFFF) << 64)
            | (n as u128 & 0xFFFF_FFFF_FFFF_FFFF),
    )
}

fn b_leg_id(a: CallId, attempt: u8) -> CallId {
    let mut b = *a.as_bytes();
    b[0] = 0xB0 | (attempt & 0x0F);
    CallId::from_bytes(b)
}

impl<S: EventSink> Driver<S> {
    fn schedule(&mut self, at: Instant, step: Step) {
        self.order += 1;
        self.steps.push(Some(step));
        self.queue
            .push(Reverse((at, self.order, self.steps.len() - 1)));
    }

    fn event(&mut self, call: CallId, kind: EventKind) -> CallEvent {
        self.seq += 1;
        let mut ev = CallEvent::new(call, kind, self.seq);
        if let Some(c) = self.calls.get(&call) {
            ev.source_ip = Some(c.source_ip);
            ev.destination = c.destination.clone();
            ev.caller = "441632960001".into();
        }
        ev
    }

    fn b_event(&mut self, a: CallId, attempt: u8, kind: EventKind) -> CallEvent {
        self.seq += 1;
        let mut ev = CallEvent::new(b_leg_id(a, attempt), kind, self.seq);
        ev.direction = Direction::Outbound;
        ev.other_leg = Some(a);
        ev
    }

    fn send(&mut self, mut ev: CallEvent) {
        ev.timestamp_us = epoch_us();
        if ev.kind == EventKind::ChannelDestroy
            && ev.direction == Direction::Inbound
            && let Some(c) = self.calls.get_mut(&ev.uuid)
            && !c.ended
        {
            c.ended = true;
            self.ended += 1;
        }
        self.report_sent += 1;
        if !self.sink.emit(ev) {
            self.refused += 1;
        }
    }

    fn pick_scenario(&mut self) -> Scenario {
        let pumping = self.opts.pumping_percent.min(45);
        if pumping > 0 {
            let n = self.rng.u32(0..100);
            if n < pumping {
                return Scenario::Pumping;
            }
            if n < 2 * pumping {
                return Scenario::PbxNormal;
            }
        }
        let mut n = self.rng.u32(0..100);
        for s in Scenario::ALL {
            if n < s.weight() {
                return s;
            }
            n -= s.weight();
        }
        Scenario::Answered
    }

    fn arrive(&mut self, n: usize, now: Instant) {
        let id = call_id(self.opts.seed, n);
        let scenario = self.pick_scenario();
        let p = &self.opts.profile;
        let (ip, prefix) = match scenario {
            Scenario::UnknownPartner => (p.unknown_ip, p.routed_prefix),
            Scenario::NoBalance => (p.broke_ip, p.routed_prefix),
            Scenario::NoRoute => (p.known_ip, p.unrouted_prefix),
            Scenario::NoAnswerFailover => (p.known_ip, p.failover_prefix),
            Scenario::PbxNormal => (p.pumping_ip, p.routed_prefix),
            Scenario::Pumping => {
                let n = self.rng.usize(0..p.pumped_numbers.len().max(1));
                (
                    p.pumping_ip,
                    p.pumped_numbers.get(n).copied().unwrap_or("4420"),
                )
            }
            _ => (p.known_ip, p.routed_prefix),
        };
        let digits = 12usize.saturating_sub(prefix.len());
        let mut destination = compact_str::CompactString::from(prefix);
        for _ in 0..digits {
            destination.push(char::from(b'0' + self.rng.u8(0..10)));
        }
        let planned_talk = match scenario {
            Scenario::Pumping => {
                let (lo, hi) = self.opts.pumping_talk;
                Duration::from_micros(
                    self.rng
                        .u64(lo.as_micros() as u64..=hi.as_micros().max(lo.as_micros()) as u64),
                )
            }
            // Drawn when the call is answered, as always (the same seed gives the same traffic as before).
            _ => Duration::ZERO,
        };
        self.calls.insert(
            id,
            SimCall {
                scenario,
                created: now,
                decided: false,
                source_ip: ip,
                destination,
                b_legs: 0,
                ended: false,
                planned_talk,
                talk_ends: None,
                hung_up_by_engine: false,
            },
        );
        let create = self.event(id, EventKind::ChannelCreate);
        let park = self.event(id, EventKind::ChannelPark);
        match scenario {
            Scenario::Reordered => {
                // Two dispatch threads: PARK overtakes CREATE, and CREATE is delivered twice.
                self.send(park);
                self.send(create.clone());
                self.send(create);
            }
            Scenario::CallerCancels => {
                self.send(create);
                let mut hangup = self.event(id, EventKind::ChannelHangup);
                hangup.hangup_cause = Some(HangupCause::ORIGINATOR_CANCEL);
                self.send(hangup);
                self.end_a_leg(id, now, HangupCause::ORIGINATOR_CANCEL, false);
            }
            _ => {
                self.send(create);
                self.schedule(now + Duration::from_millis(1), Step::Emit(park));
            }
        }
    }

    /// HANGUP (unless already sent), HANGUP_COMPLETE and DESTROY of the a-leg.
    fn end_a_leg(&mut self, id: CallId, at: Instant, cause: HangupCause, with_hangup: bool) {
        if with_hangup {
            let mut ev = self.event(id, EventKind::ChannelHangup);
            ev.hangup_cause = Some(cause);
            self.schedule(at, Step::Emit(ev));
        }
        let mut ev = self.event(id, EventKind::ChannelHangupComplete);
        ev.hangup_cause = Some(cause);
        self.schedule(at + Duration::from_millis(1), Step::Emit(ev));
        let mut ev = self.event(id, EventKind::ChannelDestroy);
        ev.hangup_cause = Some(cause);
        self.schedule(at + Duration::from_millis(2), Step::Emit(ev));
    }

    fn on_command(&mut self, cmd: CallCommand, now: Instant) {
        let id = cmd.call();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // The first command of any kind (decision variables, or a hangup) is the decision.
        if !call.decided {
            call.decided = true;
            let us = now.duration_since(call.created).as_micros() as u64;
            self.setup.saturating_record(us.max(1));
        }
        match cmd {
            CallCommand::SetVariables { .. } => {}
            CallCommand::LowBalance(_) => self.low_balance += 1,
            CallCommand::Fraud(_) => self.fraud_events += 1,
            CallCommand::Hangup { cause, .. } => {
                self.hangups += 1;
                call.hung_up_by_engine = true;
                self.engine_hangups.entry(id).or_insert(now);
                if !call.ended {
                    self.end_a_leg(id, now + Duration::from_millis(1), cause, true);
                }
            }
            CallCommand::Bridge { attempt, .. } => {
                self.bridges += 1;
                let scenario = call.scenario;
                let talk = call.planned_talk;
                call.b_legs += 1;
                let ring = self.opts.ring;
                let create = self.b_event(id, attempt, EventKind::ChannelCreate);
                self.send(create);
                let answer_at = now + ring;
                if scenario == Scenario::NoAnswerFailover && attempt == 0 {
                    let mut ev = self.b_event(id, attempt, EventKind::ChannelHangup);
                    ev.hangup_cause = Some(HangupCause::NO_ANSWER);
                    self.schedule(answer_at, Step::Emit(ev));
                    let ev = self.b_event(id, attempt, EventKind::ChannelDestroy);
                    self.schedule(answer_at + Duration::from_millis(1), Step::Emit(ev));
                    return;
                }
                let ev = self.b_event(id, attempt, EventKind::ChannelAnswer);
                self.schedule(answer_at, Step::Emit(ev));
                let ev = self.event(id, EventKind::ChannelAnswer);
                self.schedule(answer_at, Step::Emit(ev));
                let ev = self.event(id, EventKind::ChannelBridge);
                self.schedule(answer_at, Step::Emit(ev));
                if scenario == Scenario::Reordered {
                    // The same ANSWER again, as a second dispatch thread would deliver it.
                    let ev = self.event(id, EventKind::ChannelAnswer);
                    self.schedule(answer_at + Duration::from_millis(1), Step::Emit(ev));
                }
                let talk =
                    match scenario {
                        Scenario::Pumping => talk,
                        _ => {
                            let (lo, hi) = self.opts.talk;
                            Duration::from_micros(self.rng.u64(
                                lo.as_micros() as u64..=hi.as_micros().max(lo.as_micros()) as u64,
                            ))
                        }
                    };
                let end = answer_at + talk;
                if let Some(call) = self.calls.get_mut(&id) {
                    call.talk_ends = Some(end);
                }
                let mut ev = self.b_event(id, attempt, EventKind::ChannelHangup);
                ev.hangup_cause = Some(HangupCause::NORMAL_CLEARING);
                self.schedule(end, Step::Emit(ev));
                let ev = self.event(id, EventKind::ChannelUnbridge);
                self.schedule(end, Step::Emit(ev));
                self.end_a_leg(id, end, HangupCause::NORMAL_CLEARING, true);
                let ev = self.b_event(id, attempt, EventKind::ChannelDestroy);
                self.schedule(end + Duration::from_millis(2), Step::Emit(ev));
            }
        }
    }
}

/// What became of the pumping partner's calls; `stopped` maps the engine's hangups to when they came.
fn pumping_report<S: EventSink>(
    d: &Driver<S>,
    hung_up_at: &HashMap<CallId, Instant>,
) -> PumpingReport {
    let mut r = PumpingReport::default();
    for (id, c) in &d.calls {
        match c.scenario {
            Scenario::Pumping => {
                r.pumped_calls += 1;
                if !c.hung_up_by_engine {
                    continue;
                }
                let stopped = match (c.talk_ends, hung_up_at.get(id)) {
                    (None, _) => {
                        r.refused += 1;
                        c.planned_talk
                    }
                    (Some(end), Some(at)) => {
                        r.cut += 1;
                        end.saturating_duration_since(*at)
                    }
                    (Some(_), None) => Duration::ZERO,
                };
                if !stopped.is_zero() {
                    r.stopped_talk_ms
                        .push((c.destination.clone(), stopped.as_millis() as u64));
                }
            }
            Scenario::PbxNormal => {
                r.normal_calls += 1;
                if !c.hung_up_by_engine && c.talk_ends.is_some() {
                    r.normal_completed += 1;
                }
            }
            _ => {}
        }
    }
    r.stopped_talk_ms.sort();
    r
}

fn live_calls(engine: &EngineHandle) -> Option<(usize, Stats)> {
    match engine.query(Query::Status, Duration::from_secs(10)) {
        Ok(QueryReply::Status(s)) => Some((s.live_calls, s.stats)),
        _ => None,
    }
}

/// Runs the traffic against `engine`, whose call control must be the [`SimSwitch`] that gave `commands`.
/// `progress` is called now and then with (calls started, calls ended).
pub fn run(
    engine: EngineHandle,
    commands: Receiver<CallCommand>,
    opts: SimOptions,
    progress: impl FnMut(usize, usize),
) -> SimReport {
    run_with(engine, commands, opts, progress)
}

/// Runs the traffic into `sink`; the engine's commands come back on `commands`.
pub fn run_with<S: EventSink>(
    sink: S,
    commands: Receiver<CallCommand>,
    opts: SimOptions,
    mut progress: impl FnMut(usize, usize),
) -> SimReport {
    let mut d = Driver {
        sink,
        rng: fastrand::Rng::with_seed(opts.seed),
        opts,
        seq: 0,
        queue: BinaryHeap::new(),
        steps: Vec::new(),
        calls: HashMap::new(),
        setup: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid"),
        report_sent: 0,
        refused: 0,
        ended: 0,
        bridges: 0,
        hangups: 0,
        low_balance: 0,
        fraud_events: 0,
        engine_hangups: HashMap::new(),
        order: 0,
    };
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / d.opts.cps.max(0.001));
    for n in 0..d.opts.calls {
        d.schedule(start + interval * n as u32, Step::Arrive(n));
    }
    let mut peak_live = 0usize;
    let mut last_progress = Instant::now();
    let mut arrived = 0usize;
    let last_arrival = start + interval * d.opts.calls as u32;
    let longest = match d.opts.pumping_percent {
        0 => d.opts.talk.1,
        _ => d.opts.talk.1.max(d.opts.pumping_talk.1),
    };
    let deadline = last_arrival + longest + d.opts.drain_timeout;
    loop {
        let now = Instant::now();
        while let Ok(cmd) = commands.try_recv() {
            d.on_command(cmd, now);
        }
        let mut did = 0;
        while let Some(&Reverse((at, _, i))) = d.queue.peek() {
            if at > now || did > 512 {
                break;
            }
            d.queue.pop();
            did += 1;
            match d.steps[i].take() {
                Some(Step::Arrive(n)) => {
                    arrived += 1;
                    d.arrive(n, now);
                }
                Some(Step::Emit(ev)) => d.send(ev),
                None => {}
            }
        }
        if d.queue.is_empty() {
            d.steps.clear();
        }
        if last_progress.elapsed() >= Duration::from_millis(200) {
            last_progress = Instant::now();
            progress(arrived, d.ended);
            if let Some((live, _)) = d.sink.engine_status() {
                peak_live = peak_live.max(live);
            }
        }
        if arrived == d.opts.calls && d.queue.is_empty() && d.ended == d.calls.len() {
            break;
        }
        if now > deadline {
            break;
        }
        if did == 0 {
            let next = d.queue.peek().map(|Reverse((at, _, _))| *at);
            let wait = next
                .map_or(Duration::from_millis(5), |at| {
                    at.saturating_duration_since(now)
                })
                .min(Duration::from_millis(5));
            if let Ok(cmd) = commands.recv_timeout(wait) {
                d.on_command(cmd, Instant::now());
            }
        }
    }
    // Let the engine apply what is queued and give the last commands time to arrive.
    let observable = d.sink.engine_status().is_some();
    let status = |d: &Driver<S>| {
        d.sink
            .engine_status()
            .unwrap_or((if observable { usize::MAX } else { 0 }, Stats::zero()))
    };
    let (mut left, mut stats) = status(&d);
    let settle = Instant::now() + Duration::from_secs(2);
    while left > 0 && Instant::now() < settle {
        while let Ok(cmd) = commands.try_recv() {
            d.on_command(cmd, Instant::now());
        }
        while let Some(Reverse((_, _, i))) = d.queue.pop() {
            if let Some(Step::Emit(ev)) = d.steps[i].take() {
                d.send(ev);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
        (left, stats) = status(&d);
    }
    progress(arrived, d.ended);
    let elapsed = start.elapsed().as_secs_f64();
    let mut by_scenario: Vec<(Scenario, usize)> = Scenario::ALL
        .iter()
        .map(|s| (*s, d.calls.values().filter(|c| c.scenario == *s).count()))
        .collect();
    by_scenario.retain(|(_, n)| *n > 0);
    let pumping = (d.opts.pumping_percent > 0).then(|| pumping_report(&d, &d.engine_hangups));
    SimReport {
        calls: d.calls.len(),
        by_scenario,
        ended: d.ended,
        events_sent: d.report_sent,
        events_refused: d.refused,
        elapsed_s: elapsed,
        events_per_sec: stats.events as f64 / elapsed.max(1e-9),
        setup_p50_us: d.setup.value_at_quantile(0.5),
        setup_p99_us: d.setup.value_at_quantile(0.99),
        setup_max_us: d.setup.max(),
        peak_live_calls: peak_live,
        bridges: d.bridges,
        hangups_commanded: d.hangups,
        low_balance_warnings: d.low_balance,
        fraud_events: d.fraud_events,
        pumping,
        left_live: left,
        stats,
    }
}
