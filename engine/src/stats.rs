//! Counters the engine thread keeps. Plain integers: only the engine thread writes them; queries copy
//! them out.

use serde::Serialize;

use crate::call::{CallState, Input};
use crate::fsm::Symbol;
use crate::reason::Reason;

/// Everything the engine counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Channel events received.
    pub events: u64,
    /// Service results received.
    pub results: u64,
    /// Transitions applied (absorbed inputs excluded).
    pub transitions: u64,
    /// Inputs expected in their state that changed nothing (a second CHANNEL_PROGRESS...).
    pub absorbed: u64,
    /// Events already applied once (same once-per-channel kind, or same sequence).
    pub duplicate_events: u64,
    /// Out-of-order events (lower Event-Sequence than one already applied) that no longer applied.
    pub late_events: u64,
    /// Events for calls that already finished (HANGUP_COMPLETE, DESTROY after the hangup...).
    pub after_end_events: u64,
    /// Events for channels the engine never saw created (e.g. calls older than the engine).
    pub unknown_events: u64,
    /// Outbound channels not tied to any call of ours.
    pub foreign_legs: u64,
    /// Inbound channels a call placed itself (the far half of a loopback route), kept apart from new calls.
    pub own_legs: u64,
    /// Events of those channels, ignored.
    pub own_leg_events: u64,
    /// New inbound channels in a dialplan context the engine does not take calls from (`contexts`).
    pub other_context: u64,
    /// Service results for calls gone or past that step.
    pub stale_results: u64,
    /// Calls refused by a limit counted across the nodes sharing the ledger (its reservation refused).
    pub shared_limit_refusals: u64,
    /// Reservations that arrived for calls already gone, released at once.
    pub orphan_reservations_released: u64,
    /// Real-time billing: interval debits asked for, granted (whole or in part), and refused (low balance).
    pub extensions: u64,
    /// Interval debits granted, whole or in part.
    pub extensions_granted: u64,
    /// Interval debits refused.
    pub extensions_refused: u64,
    /// Connected calls warned that their partner's money runs out (`rtc_core::low_balance`).
    pub low_balance: u64,
    /// Connected calls whose next interval would pass their partner's per-call cost cap.
    pub cost_capped: u64,
    /// Live calls hung up (or refused in setup) because a fraud block cut them.
    pub fraud_cuts: u64,
    /// Connected calls whose billing stopped because the balance service failed (fail-closed).
    pub billing_failures: u64,
    /// Inputs not allowed in the call's state, per (state, input).
    pub illegal: Vec<IllegalCount>,
    /// Calls created.
    pub calls_created: u64,
    /// Calls finished, per final state.
    pub completed: u64,
    /// Calls refused.
    pub rejected: u64,
    /// Calls failed.
    pub failed: u64,
    /// Finished calls per reason (index = Reason::index()).
    pub by_reason: Vec<(&'static str, u64)>,
    /// Calls removed by the sweep.
    pub swept: u64,
    /// Live calls whose channel the host said was gone though no hangup was seen (lost events).
    pub channels_gone: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Service requests emitted, and those answered at once by an embedded backend.
    pub requests: u64,
    /// Requests answered at once by an embedded backend.
    pub immediate_results: u64,
    /// Call-control commands emitted.
    pub commands: u64,
    /// CDRs emitted.
    pub cdrs: u64,
    /// Decisions handed to a waiting dialplan app.
    pub decisions_delivered: u64,
    /// Delay from an event's `Event-Date-Timestamp` to its application, sampled (1 event in 8):
    /// how far behind FreeSWITCH the engine runs.
    pub event_lag_p50_us: u64,
    /// Its 99th percentile.
    pub event_lag_p99_us: u64,
    /// Its maximum.
    pub event_lag_max_us: u64,
    /// Events sampled.
    pub event_lag_samples: u64,
    /// The same sampled lag at fixed bounds, for Prometheus (`rtc_engine_event_lag_seconds`): the percentiles
    /// above are since start, these buckets let a scraper judge the last minutes.
    pub event_lag: Buckets,
    /// Time from a call's creation to its decision: routes found (PARKED) or refused (REJECTED).
    pub call_setup: Buckets,
    /// Time calls spent in each state before leaving it, by state name (final states are never left: not listed).
    pub state_time: Vec<(&'static str, Buckets)>,
}

/// A latency distribution as Prometheus histograms report it: samples per bucket at fixed upper bounds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Buckets {
    /// Upper bounds in seconds, ascending. A last bucket above them all (`+Inf`) is implied.
    pub le_s: &'static [f64],
    /// Samples per bucket, not cumulative: `le_s.len() + 1` entries, the last one counting samples above every bound.
    pub counts: Vec<u64>,
    /// Sum of the samples, in seconds.
    pub sum_s: f64,
}

impl Buckets {
    /// Samples in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Prometheus' cumulative buckets: (upper bound in seconds, samples at most that), the last bound infinite.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.le_s.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0, |total, n| {
            *total += n;
            Some(*total)
        }))
    }
}

/// Seconds from microseconds, for bounds written once in microseconds.
const fn seconds<const N: usize>(us: [u64; N]) -> [f64; N] {
    let mut out = [0.0; N];
    let mut i = 0;
    while i < N {
        out[i] = us[i] as f64 / 1e6;
        i += 1;
    }
    out
}

/// Bounds of the event lag (µs): 100 µs to a minute, with one at the 1 s the alert rules watch.
const LAG_LE_US: [u64; 14] = [
    100, 1_000, 5_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000, 60_000_000,
];
static LAG_LE_S: [f64; 14] = seconds(LAG_LE_US);

/// Bounds of call setup (µs): local backends decide in well under a millisecond, HTTP ones in tens of milliseconds
/// to seconds; the setup timeout defaults to 60 s.
const SETUP_LE_US: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
static SETUP_LE_S: [f64; 16] = seconds(SETUP_LE_US);

/// Bounds of time in a state (µs): from a local backend's step (well under a millisecond) to hours of talk.
const STATE_LE_US: [u64; 16] = [
    100,
    1_000,
    10_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    1_800_000_000,
    3_600_000_000,
    7_200_000_000,
];
static STATE_LE_S: [f64; 16] = seconds(STATE_LE_US);

/// One latency histogram the engine thread records into: plain integers, like every other counter here.
#[derive(Clone, Debug)]
struct Timing {
    /// Upper bounds in µs.
    le_us: &'static [u64],
    /// The same in seconds, as reported.
    le_s: &'static [f64],
    /// Samples per bucket, the last one above every bound.
    counts: Vec<u64>,
    /// Sum of the samples, µs.
    sum_us: u64,
}

impl Timing {
    fn new(le_us: &'static [u64], le_s: &'static [f64]) -> Timing {
        Timing {
            le_us,
            le_s,
            counts: vec![0; le_us.len() + 1],
            sum_us: 0,
        }
    }

    fn record(&mut self, us: u64) {
        let i = self.le_us.partition_point(|&le| le < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    fn buckets(&self) -> Buckets {
        Buckets {
            le_s: self.le_s,
            counts: self.counts.clone(),
            sum_s: self.sum_us as f64 / 1e6,
        }
    }
}

/// Inputs refused in one state, by input.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IllegalCount {
    /// The state's name.
    pub state: &'static str,
    /// The input's name.
    pub input: &'static str,
    /// How many times.
    pub count: u64,
}

/// The engine's mutable counters: the [`Stats`] themselves (reached through `Deref`), kept up to date in
/// place, plus the lag histogram their percentiles are read from.
pub(crate) struct Counters {
    /// Every counter, as queries report them (the lag percentiles filled at snapshot time).
    totals: Stats,
    /// Sampled event lag in microseconds, 3 significant digits, up to an hour.
    lag: hdrhistogram::Histogram<u64>,
    /// The same samples at the fixed bounds Prometheus reports.
    lag_buckets: Timing,
    /// Creation to decision, per call decided.
    setup: Timing,
    /// Time spent in a state before leaving it, indexed by the state's index.
    states: Vec<Timing>,
}

impl std::ops::Deref for Counters {
    type Target = Stats;
    fn deref(&self) -> &Stats {
        &self.totals
    }
}

impl std::ops::DerefMut for Counters {
    fn deref_mut(&mut self) -> &mut Stats {
        &mut self.totals
    }
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            totals: Stats {
                by_reason: Reason::ALL.iter().map(|r| (r.name(), 0)).collect(),
                ..Stats::default()
            },
            // Constant, valid bounds (low ≥ 1, high ≥ 2 × low, 3 digits): this cannot fail.
            lag: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            lag_buckets: Timing::new(&LAG_LE_US, &LAG_LE_S),
            setup: Timing::new(&SETUP_LE_US, &SETUP_LE_S),
            states: vec![Timing::new(&STATE_LE_US, &STATE_LE_S); CallState::COUNT],
        }
    }

    /// Times a transition from `from` to `to`: `in_from_us` spent in `from` (when the state changes), and, when
    /// it is the call's decision (a business step to PARKED or REJECTED), `age_us` since the call was created.
    pub fn timed(&mut self, from: CallState, to: CallState, in_from_us: u64, age_us: u64) {
        if from == to {
            return;
        }
        if let Some(t) = self.states.get_mut(from.index()) {
            t.record(in_from_us);
        }
        if matches!(to, CallState::Parked | CallState::Rejected) && from.is_deciding() {
            self.setup.record(age_us);
        }
    }

    /// Counts an input refused in `state` (a rare path: a short list is enough).
    pub fn illegal(&mut self, state: CallState, input: Input) {
        let (state, input) = (state.name(), input.name());
        match self
            .totals
            .illegal
            .iter_mut()
            .find(|c| c.state == state && c.input == input)
        {
            Some(c) => c.count += 1,
            None => self.totals.illegal.push(IllegalCount {
                state,
                input,
                count: 1,
            }),
        }
    }

    /// Counts a call that finished for `reason`.
    pub fn finished_for(&mut self, reason: Reason) {
        if let Some(entry) = self.totals.by_reason.get_mut(reason.index()) {
            entry.1 += 1;
        }
    }

    /// Records one event's lag (saturating at the histogram's bound).
    pub fn record_lag(&mut self, lag_us: u64) {
        self.lag.saturating_record(lag_us.max(1));
        self.lag_buckets.record(lag_us);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            event_lag_p50_us: self.lag.value_at_quantile(0.5),
            event_lag_p99_us: self.lag.value_at_quantile(0.99),
            event_lag_max_us: self.lag.max(),
            event_lag_samples: self.lag.len(),
            event_lag: self.lag_buckets.buckets(),
            call_setup: self.setup.buckets(),
            state_time: CallState::ALL
                .iter()
                .filter(|s| !s.is_final())
                .map(|s| (s.name(), self.states[s.index()].buckets()))
                .collect(),
            ..self.totals.clone()
        }
    }
}

impl Stats {
    /// Nothing counted yet (every refusal reason listed at zero): what an engine that never ran reports.
    pub fn zero() -> Stats {
        Counters::new().snapshot()
    }

    /// Total of illegal inputs over all (state, input) pairs.
    pub fn illegal_total(&self) -> u64 {
        self.illegal.iter().map(|c| c.count).sum()
    }

    /// Calls ended for `reason` so far.
    pub fn reason_count(&self, reason: Reason) -> u64 {
        self.by_reason
            .iter()
            .find(|(n, _)| *n == reason.name())
            .map_or(0, |(_, c)| *c)
    }
}
