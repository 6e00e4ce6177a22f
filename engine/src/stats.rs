//! Counters the engine thread keeps. Plain integers: only the engine thread writes them; queries copy
//! them out.

use serde::Serialize;

use crate::call::{CallState, Input};
use crate::fsm::Symbol;
use crate::reason::Reason;

/// Everything the engine counts.
#[derive(Clone, Debug, Serialize)]
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
    /// Service results for calls gone or past that step.
    pub stale_results: u64,
    /// Reservations that arrived for calls already gone, released at once.
    pub orphan_reservations_released: u64,
    /// Inputs not allowed in the call's state, per (state, input).
    pub illegal: Vec<IllegalCount>,
    /// Calls created.
    pub calls_created: u64,
    /// Calls finished, per final state.
    pub completed: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Finished calls per reason (index = Reason::index()).
    pub by_reason: Vec<(&'static str, u64)>,
    /// Calls removed by the sweep.
    pub swept: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Service requests emitted, and those answered at once by an embedded backend.
    pub requests: u64,
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
    pub event_lag_p99_us: u64,
    pub event_lag_max_us: u64,
    pub event_lag_samples: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IllegalCount {
    pub state: &'static str,
    pub input: &'static str,
    pub count: u64,
}

/// The engine's mutable counters; [`Counters::snapshot`] gives a [`Stats`].
pub(crate) struct Counters {
    pub events: u64,
    pub results: u64,
    pub transitions: u64,
    pub absorbed: u64,
    pub duplicate_events: u64,
    pub late_events: u64,
    pub after_end_events: u64,
    pub unknown_events: u64,
    pub foreign_legs: u64,
    pub stale_results: u64,
    pub orphan_reservations_released: u64,
    /// Dense (state × input) grid.
    pub illegal: Vec<u64>,
    pub calls_created: u64,
    pub completed: u64,
    pub rejected: u64,
    pub failed: u64,
    pub by_reason: [u64; Reason::ALL.len()],
    pub swept: u64,
    pub timers_fired: u64,
    pub requests: u64,
    pub immediate_results: u64,
    pub commands: u64,
    pub cdrs: u64,
    pub decisions_delivered: u64,
    /// Sampled event lag in microseconds, 3 significant digits, up to an hour.
    pub lag: hdrhistogram::Histogram<u64>,
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            events: 0,
            results: 0,
            transitions: 0,
            absorbed: 0,
            duplicate_events: 0,
            late_events: 0,
            after_end_events: 0,
            unknown_events: 0,
            foreign_legs: 0,
            stale_results: 0,
            orphan_reservations_released: 0,
            illegal: vec![0; CallState::COUNT * Input::COUNT],
            calls_created: 0,
            completed: 0,
            rejected: 0,
            failed: 0,
            by_reason: [0; Reason::ALL.len()],
            swept: 0,
            timers_fired: 0,
            requests: 0,
            immediate_results: 0,
            commands: 0,
            cdrs: 0,
            decisions_delivered: 0,
            // Constant, valid bounds (low ≥ 1, high ≥ 2 × low, 3 digits): this cannot fail.
            lag: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Records one event's lag (saturating at the histogram's bound).
    pub fn record_lag(&mut self, lag_us: u64) {
        self.lag.saturating_record(lag_us.max(1));
    }

    pub fn illegal(&mut self, state: CallState, input: Input) {
        self.illegal[state.index() * Input::COUNT + input.index()] += 1;
    }

    pub fn snapshot(&self) -> Stats {
        let mut illegal = Vec::new();
        for (i, &count) in self.illegal.iter().enumerate() {
            if count > 0
                && let (Some(state), Some(input)) = (
                    CallState::from_index(i / Input::COUNT),
                    Input::from_index(i % Input::COUNT),
                )
            {
                illegal.push(IllegalCount {
                    state: state.name(),
                    input: input.name(),
                    count,
                });
            }
        }
        Stats {
            events: self.events,
            results: self.results,
            transitions: self.transitions,
            absorbed: self.absorbed,
            duplicate_events: self.duplicate_events,
            late_events: self.late_events,
            after_end_events: self.after_end_events,
            unknown_events: self.unknown_events,
            foreign_legs: self.foreign_legs,
            stale_results: self.stale_results,
            orphan_reservations_released: self.orphan_reservations_released,
            illegal,
            calls_created: self.calls_created,
            completed: self.completed,
            rejected: self.rejected,
            failed: self.failed,
            by_reason: Reason::ALL
                .iter()
                .map(|r| (r.name(), self.by_reason[r.index()]))
                .collect(),
            swept: self.swept,
            timers_fired: self.timers_fired,
            requests: self.requests,
            immediate_results: self.immediate_results,
            commands: self.commands,
            cdrs: self.cdrs,
            decisions_delivered: self.decisions_delivered,
            event_lag_p50_us: self.lag.value_at_quantile(0.5),
            event_lag_p99_us: self.lag.value_at_quantile(0.99),
            event_lag_max_us: self.lag.max(),
            event_lag_samples: self.lag.len(),
        }
    }
}

impl Stats {
    /// Total of illegal inputs over all (state, input) pairs.
    pub fn illegal_total(&self) -> u64 {
        self.illegal.iter().map(|c| c.count).sum()
    }

    pub fn reason_count(&self, reason: Reason) -> u64 {
        self.by_reason
            .iter()
            .find(|(n, _)| *n == reason.name())
            .map_or(0, |(_, c)| *c)
    }
}
