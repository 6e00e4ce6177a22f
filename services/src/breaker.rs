//! Circuit breaker: stops asking a failing service, then lets a few probes through to see if it is back.
//!
//! Hand-written rather than taken from a crate: `failsafe` judges a success rate over a time window but
//! reads a global clock (mockable only in its own tests) and lets a single trial call through when half-open;
//! `recloser` counts the last N calls rather than a time window. What is needed here is a sliding time
//! window, a minimum number of calls before judging, N half-open probes that must all succeed, and a clock
//! the caller passes in so that the whole state machine is tested without sleeping. That fits in ~200 lines.
//!
//! # Behaviour
//! - **Closed**: every request goes through; outcomes are counted in a sliding window of `window` length
//!   (kept as [`BUCKETS`] buckets, so the window slides in steps of `window / BUCKETS`). When the window
//!   holds at least `min_calls` outcomes and the failure rate reaches `failure_rate_pct`, the breaker opens.
//! - **Open**: requests are refused without being sent, until `open_for` has passed.
//! - **Half-open**: up to `half_open_probes` requests go through; the others are refused. If all probes
//!   succeed the breaker closes with an empty window; any failed probe re-opens it for another `open_for`.
//!   A round of probes whose outcomes never came back (cancelled requests) is restarted after `open_for`.
//!
//! Each [`Permit`] remembers the breaker's generation (bumped on every state change): an outcome that
//! arrives after the state it was issued in has ended (a slow request that started while closed and
//! finished after the breaker opened) is ignored rather than counted against the new state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use rtc_config::services::BreakerConfig;
use rtc_engine::service::ServiceKind;

/// Number of buckets the sliding window is kept in.
pub const BUCKETS: u32 = 20;

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests go through; failures are counted.
    Closed,
    /// Requests are refused at once until `open-for` has passed.
    Open,
    /// A few probes go through; all must succeed to close again.
    HalfOpen,
}

impl BreakerState {
    /// The state's name, as `rtc_core breakers` and metrics show it.
    pub const fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A breaker's state as shown to operators (`rtc_core breakers`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerStatus {
    /// Which service the breaker guards.
    pub service: ServiceKind,
    /// Closed, open or half-open.
    pub state: BreakerState,
    /// Failures in the window, in percent of the calls in it (0 when the window is empty).
    pub failure_rate: f64,
    /// Outcomes counted in the current window (closed state only; empty otherwise).
    pub calls_in_window: u32,
    /// Failures among them.
    pub failures_in_window: u32,
    /// How long ago the breaker last opened, while it is open or half-open.
    pub opened_ago_ms: Option<u64>,
    /// While open: how long until probes are let through.
    pub ends_in_ms: Option<u64>,
    /// While half-open: probes sent so far in this round, and how many succeeded.
    pub probes_sent: u32,
    /// While half-open: probes that succeeded in this round.
    pub probes_succeeded: u32,
    /// State changes since start.
    pub transitions: Transitions,
    /// The last state changes (at most [`HISTORY`]), oldest first.
    pub history: Vec<Change>,
}

/// One state change of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// How long ago it happened, in milliseconds.
    pub ago_ms: u64,
    /// The state it entered.
    pub to: BreakerState,
}

/// How many times a breaker changed state since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Transitions {
    /// Times it opened (from closed, or from half-open when a probe failed).
    pub opened: u64,
    /// Times it went half-open to probe (restarted rounds of probes are not counted).
    pub half_opened: u64,
    /// Times it closed again after all probes succeeded: recoveries.
    pub closed: u64,
}

/// Leave to send one request; hand it back to [`Breaker::record`] with the outcome.
#[derive(Debug)]
#[must_use = "a permit's outcome must be recorded"]
pub struct Permit {
    /// The breaker generation it was issued in; outcomes of older generations are ignored.
    generation: u64,
    /// Whether it is a half-open probe.
    probe: bool,
}

/// The breaker refused the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// How long until the breaker lets probes through (zero while half-open probes are outstanding).
    pub retry_in: Duration,
}

/// One bucket of the sliding window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which time slot (counted from the breaker's origin, in bucket lengths) the counts belong to.
    slot: u64,
    /// Successful outcomes in that slot.
    ok: u32,
    /// Failed outcomes in that slot.
    failed: u32,
}

/// The outcome counts of the last `window`.
#[derive(Debug)]
struct Window {
    /// Time reference the slots are counted from.
    origin: Instant,
    /// Length of one bucket.
    bucket_len: Duration,
    /// Ring of buckets, indexed by slot modulo [`BUCKETS`].
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    fn new(window: Duration, origin: Instant) -> Window {
        let bucket_len = (window / BUCKETS).max(Duration::from_millis(1));
        Window {
            origin,
            bucket_len,
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / self.bucket_len.as_nanos()) as u64
    }

    fn record(&mut self, success: bool, now: Instant) {
        let slot = self.slot(now);
        let bucket = &mut self.buckets[(slot % u64::from(BUCKETS)) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ok: 0,
                failed: 0,
            };
        }
        if success {
            bucket.ok = bucket.ok.saturating_add(1);
        } else {
            bucket.failed = bucket.failed.saturating_add(1);
        }
    }

    /// (calls, failures) in the window ending at `now`.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.slot(now);
        let oldest = current.saturating_sub(u64::from(BUCKETS) - 1);
        self.buckets
            .iter()
            .filter(|b| b.slot >= oldest && b.slot <= current && (b.ok, b.failed) != (0, 0))
            .fold((0u32, 0u32), |(calls, failed), b| {
                (
                    calls.saturating_add(b.ok).saturating_add(b.failed),
                    failed.saturating_add(b.failed),
                )
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS as usize];
    }
}

/// The state proper.
#[derive(Clone, Copy, Debug)]
enum State {
    Closed,
    Open {
        /// When it opened (for the status).
        since: Instant,
        /// When probes may start.
        until: Instant,
    },
    HalfOpen {
        /// When it last opened (for the status).
        opened: Instant,
        /// When this round of probes started (to restart a round whose outcomes never came).
        round_started: Instant,
        /// Probes let through in this round.
        sent: u32,
        /// Probes that succeeded in this round.
        succeeded: u32,
    },
}

/// A circuit breaker for one service. Not synchronised: the owner keeps it behind a mutex.
#[derive(Debug)]
pub struct Breaker {
    /// Thresholds.
    config: BreakerConfig,
    /// Closed, open or half-open, with their timings.
    state: State,
    /// Outcomes while closed.
    window: Window,
    /// Bumped on every state change, so that stale outcomes are recognised.
    generation: u64,
    /// State changes counted, for operators and summaries.
    transitions: Transitions,
    /// The last [`HISTORY`] state changes: when, and into which state.
    history: VecDeque<(Instant, BreakerState)>,
}

/// How many state changes a breaker remembers.
pub const HISTORY: usize = 32;

/// The state a [`State`] is, without its timings.
fn kind_of(state: &State) -> BreakerState {
    match state {
        State::Closed => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

impl Breaker {
    /// A closed breaker whose window starts at `now`.
    pub fn new(config: BreakerConfig, now: Instant) -> Breaker {
        let window = Window::new(config.window, now);
        Breaker {
            config,
            state: State::Closed,
            window,
            generation: 0,
            transitions: Transitions::default(),
            history: VecDeque::with_capacity(HISTORY),
        }
    }

    /// State changes so far.
    pub fn transitions(&self) -> Transitions {
        self.transitions
    }

    fn probes(&self) -> u32 {
        self.config.half_open_probes.max(1)
    }

    fn enter(&mut self, state: State, now: Instant) {
        let counter = match (&self.state, &state) {
            (State::HalfOpen { .. }, State::HalfOpen { .. }) => None,
            (_, State::Open { .. }) => Some(&mut self.transitions.opened),
            (_, State::HalfOpen { .. }) => Some(&mut self.transitions.half_opened),
            (_, State::Closed) => Some(&mut self.transitions.closed),
        };
        if let Some(counter) = counter {
            *counter += 1;
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((now, kind_of(&state)));
        }
        self.state = state;
        self.generation = self.generation.wrapping_add(1);
    }

    fn open(&mut self, now: Instant) {
        self.window.clear();
        self.enter(
            State::Open {
                since: now,
                until: now + self.config.open_for,
            },
            now,
        );
    }

    /// Asks leave to send one request at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        let probes = self.probes();
        match self.state {
            State::Closed => {
                return Ok(Permit {
                    generation: self.generation,
                    probe: false,
                });
            }
            State::Open { since, until } => {
                if now < until {
                    return Err(Rejected {
                        retry_in: until - now,
                    });
                }
                self.enter(
                    State::HalfOpen {
                        opened: since,
                        round_started: now,
                        sent: 0,
                        succeeded: 0,
                    },
                    now,
                );
            }
            State::HalfOpen {
                opened,
                round_started,
                sent,
                ..
            } => {
                if sent >= probes
                    && now.saturating_duration_since(round_started) >= self.config.open_for
                {
                    // The round's outcomes never all came back (cancelled requests): start a new round.
                    self.enter(
                        State::HalfOpen {
                            opened,
                            round_started: now,
                            sent: 0,
                            succeeded: 0,
                        },
                        now,
                    );
                }
            }
        }
        if let State::HalfOpen { sent, .. } = &mut self.state
            && *sent < probes
        {
            *sent += 1;
            return Ok(Permit {
                generation: self.generation,
                probe: true,
            });
        }
        Err(Rejected {
            retry_in: Duration::ZERO,
        })
    }

    /// Records the outcome of a request sent under `permit`.
    pub fn record(&mut self, permit: Permit, success: bool, now: Instant) {
        if permit.generation != self.generation {
            return;
        }
        let probes = self.probes();
        match &mut self.state {
            State::Closed => {
                self.window.record(success, now);
                if !success {
                    let (calls, failed) = self.window.totals(now);
                    if calls >= self.config.min_calls.max(1)
                        && u64::from(failed) * 100
                            >= u64::from(self.config.failure_rate_pct) * u64::from(calls)
                    {
                        self.open(now);
                    }
                }
            }
            State::HalfOpen { succeeded, .. } if permit.probe => {
                if !success {
                    self.open(now);
                } else {
                    *succeeded += 1;
                    if *succeeded >= probes {
                        self.window.clear();
                        self.enter(State::Closed, now);
                    }
                }
            }
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    /// The state a request arriving at `now` would meet.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until, .. } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The breaker's state for operators, as of `now`.
    pub fn status(&self, service: ServiceKind, now: Instant) -> BreakerStatus {
        let (calls, failed) = match self.state {
            State::Closed => self.window.totals(now),
            _ => (0, 0),
        };
        let failure_rate = if calls == 0 {
            0.0
        } else {
            f64::from(failed) * 100.0 / f64::from(calls)
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (opened_ago_ms, ends_in_ms, probes_sent, probes_succeeded) = match self.state {
            State::Closed => (None, None, 0, 0),
            State::Open { since, until } => (
                Some(ms(now.saturating_duration_since(since))),
                Some(ms(until.saturating_duration_since(now))),
                0,
                0,
            ),
            State::HalfOpen {
                opened,
                sent,
                succeeded,
                ..
            } => (
                Some(ms(now.saturating_duration_since(opened))),
                None,
                sent,
                succeeded,
            ),
        };
        BreakerStatus {
            service,
            state: self.state(now),
            failure_rate,
            calls_in_window: calls,
            failures_in_window: failed,
            opened_ago_ms,
            ends_in_ms,
            probes_sent,
            probes_succeeded,
            transitions: self.transitions,
            history: self
                .history
                .iter()
                .map(|&(at, to)| Change {
                    ago_ms: ms(now.saturating_duration_since(at)),
                    to,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate_pct: 50,
            open_for: Duration::from_secs(10),
            window: Duration::from_secs(60),
            min_calls: 4,
            half_open_probes: 3,
        }
    }

    /// A manual clock: a fixed origin plus an offset the test moves.
    struct Clock {
        origin: Instant,
        offset: Duration,
    }

    impl Clock {
        fn new() -> Clock {
            Clock {
                origin: Instant::now(),
                offset: Duration::ZERO,
            }
        }
        fn now(&self) -> Instant {
            self.origin + self.offset
        }
        fn advance(&mut self, by: Duration) {
            self.offset += by;
        }
    }

    fn call(b: &mut Breaker, success: bool, now: Instant) -> bool {
        match b.try_acquire(now) {
            Ok(p) => {
                b.record(p, success, now);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn stays_closed_below_min_calls_even_at_full_failure() {
        let clock = Clock::new();
        let mut b = Breaker::new(config(), clock.now());
        for _ in 0..3 {
            assert!(call(&mut b, false, clock.now()));
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        let s = b.status(ServiceKind::Partner, clock.now());
        assert_eq!((s.calls_in_window, s.failures_in_window), (3, 3));
        assert_eq!(s.failure_rate, 100.0);
    }

    #[test]
    fn opens_at_the_threshold_and_refuses_without_sending() {
        let mut clock = Clock::new();
        let mut b = Breaker::new(config(), clock.now());
        assert!(call(&mut b, true, clock.now()));
        assert!(call(&mut b, true, clock.now()));
        assert!(call(&mut b, false, clock.now()));
        assert_eq!(b.state(clock.now()), BreakerState::Closed, "3 calls < min");
        assert!(call(&mut b, false, clock.now()));
        // 4 calls, 2 failed = 50 %: open.
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        clock.advance(Duration::from_secs(3));
        let err = b.try_acquire(clock.now()).unwrap_err();
        assert_eq!(err.retry_in, Duration::from_secs(7));
        let s = b.status(ServiceKind::Partner, clock.now());
        assert_eq!(s.opened_ago_ms, Some(3000));
        assert_eq!(s.ends_in_ms, Some(7000));
        assert_eq!(s.calls_in_window, 0);
    }

    #[test]
    fn below_the_rate_stays_closed() {
        let clock = Clock::new();
        let mut b = Breaker::new(config(), clock.now());
        for i in 0..100 {
            // 1 failure in 3: 33 % < 50 %.
            assert!(call(&mut b, i % 3 != 2, clock.now()));
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let mut clock = Clock::new();
        let mut b = Breaker::new(config(), clock.now());
        for _ in 0..3 {
            assert!(call(&mut b, false, clock.now()));
        }
        // A minute later the three failures are gone: three more make 3 calls, not 6.
        clock.advance(Duration::from_secs(61));
        for _ in 0..3 {
            assert!(call(&mut b, false, clock.now()));
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        assert_eq!(b.status(ServiceKind::Auth, clock.now()).calls_in_window, 3);
        // Within the window they do add up.
        clock.advance(Duration::from_secs(30));
        assert!(call(&mut b, false, clock.now()));
        assert_eq!(b.state(clock.now()), BreakerState::Open);
    }

    #[test]
    fn the_window_slides_bucket_by_bucket() {
        let mut clock = Clock::new();
        let mut b = Breaker::new(config(), clock.now());
        // Buckets are 3 s long. Failures at t=0 and t=30 s.
        assert!(call(&mut b, true, clock.now()));
        clock.advance(Duration::from_secs(30));
        assert!(call(&mut b, true, clock.now()));
        assert_eq!(b.status(ServiceKind::Auth, clock.now()).calls_in_window, 2);
        // At t=62 s the t=0 bucket has left the window, the t=30 s one has not.
        clock.advance(Duration::from_secs(32));
        assert_eq!(b.status(ServiceKind::Auth, clock.now()).calls_in_window, 1);
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.status(ServiceKind::Auth, clock.now()).calls_in_window, 0);
    }

    fn opened(clock: &Clock) -> Breaker {
        let mut b = Breaker::new(config(), clock.now());
        for _ in 0..4 {
            assert!(call(&mut b, false, clock.now()));
        }
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        b
    }

    #[test]
    fn half_open_lets_exactly_n_probes_through_and_closes_when_all_succeed() {
        let mut clock = Clock::new();
        let mut b = opened(&clock);
        clock.advance(Duration::from_secs(10));
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        let p1 = b.try_acquire(clock.now()).unwrap();
        let p2 = b.try_acquire(clock.now()).unwrap();
        let p3 = b.try_acquire(clock.now()).unwrap();
        assert_eq!(
            b.try_acquire(clock.now()).unwrap_err().retry_in,
            Duration::ZERO,
            "a fourth request while 3 probes are out is refused"
        );
        b.record(p1, true, clock.now());
        b.record(p2, true, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        let s = b.status(ServiceKind::Rating, clock.now());
        assert_eq!((s.probes_sent, s.probes_succeeded), (3, 2));
        b.record(p3, true, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        assert_eq!(
            b.status(ServiceKind::Rating, clock.now()).transitions,
            Transitions {
                opened: 1,
                half_opened: 1,
                closed: 1
            }
        );
        // Closed with an empty window: one failure does not re-open it.
        assert!(call(&mut b, false, clock.now()));
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn any_failed_probe_reopens_for_a_full_period() {
        let mut clock = Clock::new();
        let mut b = opened(&clock);
        clock.advance(Duration::from_secs(10));
        let p1 = b.try_acquire(clock.now()).unwrap();
        let p2 = b.try_acquire(clock.now()).unwrap();
        b.record(p1, true, clock.now());
        clock.advance(Duration::from_secs(1));
        b.record(p2, false, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        clock.advance(Duration::from_secs(9));
        assert!(
            b.try_acquire(clock.now()).is_err(),
            "open 10 s from the failed probe"
        );
        clock.advance(Duration::from_secs(1));
        assert!(b.try_acquire(clock.now()).is_ok());
        assert_eq!(
            b.transitions(),
            Transitions {
                opened: 2,
                half_opened: 2,
                closed: 0
            }
        );
        // Opened at 0 s, half-open at 10 s, open again at 11 s, half-open at 21 s; seen from 21 s.
        let history: Vec<(u64, BreakerState)> = b
            .status(ServiceKind::Rating, clock.now())
            .history
            .iter()
            .map(|c| (c.ago_ms, c.to))
            .collect();
        assert_eq!(
            history,
            [
                (21_000, BreakerState::Open),
                (11_000, BreakerState::HalfOpen),
                (10_000, BreakerState::Open),
                (0, BreakerState::HalfOpen)
            ]
        );
    }

    #[test]
    fn late_outcomes_of_an_earlier_state_are_ignored() {
        let mut clock = Clock::new();
        let mut b = Breaker::new(config(), clock.now());
        let slow = b.try_acquire(clock.now()).unwrap();
        for _ in 0..4 {
            assert!(call(&mut b, false, clock.now()));
        }
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire(clock.now()).unwrap();
        // The slow request from the closed state fails now: it must not count as a failed probe.
        b.record(slow, false, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        b.record(probe, true, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
    }

    #[test]
    fn a_probe_round_that_never_reports_is_restarted() {
        let mut clock = Clock::new();
        let mut b = opened(&clock);
        clock.advance(Duration::from_secs(10));
        for _ in 0..3 {
            let lost = b.try_acquire(clock.now()).unwrap();
            drop(lost);
        }
        assert!(b.try_acquire(clock.now()).is_err());
        clock.advance(Duration::from_secs(10));
        let p = b.try_acquire(clock.now()).unwrap();
        b.record(p, true, clock.now());
        assert_eq!(
            b.status(ServiceKind::Routing, clock.now()).probes_succeeded,
            1
        );
        assert_eq!(
            b.transitions().half_opened,
            1,
            "a restarted round is no new transition"
        );
    }

    #[test]
    fn zero_probes_is_taken_as_one() {
        let mut clock = Clock::new();
        let mut cfg = config();
        cfg.half_open_probes = 0;
        let mut b = Breaker::new(cfg, clock.now());
        for _ in 0..4 {
            assert!(call(&mut b, false, clock.now()));
        }
        clock.advance(Duration::from_secs(10));
        assert!(call(&mut b, true, clock.now()));
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn rate_above_100_never_opens_and_zero_opens_on_first_judged_failure() {
        let clock = Clock::new();
        let mut cfg = config();
        cfg.failure_rate_pct = 101;
        let mut b = Breaker::new(cfg.clone(), clock.now());
        for _ in 0..50 {
            assert!(call(&mut b, false, clock.now()));
        }
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        cfg.failure_rate_pct = 0;
        let mut b = Breaker::new(cfg, clock.now());
        for _ in 0..3 {
            assert!(call(&mut b, true, clock.now()));
        }
        assert!(call(&mut b, false, clock.now()));
        assert_eq!(b.state(clock.now()), BreakerState::Open);
    }

    #[test]
    fn status_serialises_for_the_console() {
        let clock = Clock::new();
        let b = opened(&clock);
        let json = serde_json::to_value(b.status(ServiceKind::Balance, clock.now())).unwrap();
        assert_eq!(json["service"], "balance");
        assert_eq!(json["state"], "open");
        assert_eq!(json["ends_in_ms"], 10_000);
    }

    proptest::proptest! {
        /// Whatever the sequence of outcomes and clock steps, the breaker never lets more than N probes out
        /// in one half-open round, and never lets anything through while open.
        #[test]
        fn never_more_probes_than_allowed(steps in proptest::collection::vec((0u8..4, 0u64..4000), 1..300)) {
            let mut clock = Clock::new();
            let mut b = Breaker::new(config(), clock.now());
            let mut outstanding: Vec<Permit> = Vec::new();
            for (action, ms) in steps {
                clock.advance(Duration::from_millis(ms));
                let now = clock.now();
                match action {
                    0 | 1 => {
                        let before = b.state(now);
                        let got = b.try_acquire(now);
                        if before == BreakerState::Open {
                            proptest::prop_assert!(got.is_err());
                        }
                        if let Ok(p) = got {
                            outstanding.push(p);
                        }
                    }
                    2 => if let Some(p) = outstanding.pop() { b.record(p, true, now) },
                    _ => if let Some(p) = outstanding.pop() { b.record(p, false, now) },
                }
                if let State::HalfOpen { sent, succeeded, .. } = b.state {
                    proptest::prop_assert!(sent <= 3 && succeeded <= sent);
                }
            }
        }
    }
}
