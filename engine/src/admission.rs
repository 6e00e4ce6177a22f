//! Admission control: whether a new call may start, against global and per-partner limits on concurrent
//! calls and calls per second, and against engine overload.
//!
//! Used from the engine thread, synchronously: [`Admission::admit`] when a call has been identified (its
//! partner and limits known), [`Admission::release`] when it ends, [`Admission::shed`] for every new call
//! while the engine's inbound queue lags. Calls per second are limited with GCRA (the `governor` crate),
//! which spreads a rate evenly and allows a configured burst; concurrency is plain counting.
//!
//! Time is passed in (`now`), never read: the engine uses its own clock and tests use a manual one.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Serialize;

use crate::domain::PartnerId;
use crate::reason::Reason;

/// A calls-per-second limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpsLimit {
    /// Sustained calls per second (0: no limit).
    pub per_second: u32,
    /// Calls that may start at once after a quiet spell (0: same as `per_second`, i.e. one second's worth).
    pub burst: u32,
}

/// One partner's limits, as the engine knows them when the call is admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartnerLimits {
    /// Most concurrent calls (0: no limit). Usually [`crate::domain::PartnerInfo::max_concurrent`].
    pub max_concurrent: u32,
    /// Calls per second.
    pub cps: CpsLimit,
}

/// Global limits and overload thresholds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Most concurrent calls over all partners (0: no limit).
    pub max_concurrent: u32,
    /// Calls per second over all partners.
    pub cps: CpsLimit,
    /// New calls are shed while the engine's inbound queue holds more than this many messages (0: off).
    pub shed_queue_depth: usize,
    /// New calls are shed while the oldest queued message has waited longer than this (zero: off).
    pub shed_queue_age: Duration,
}

/// Which limit refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "limit", rename_all = "snake_case")]
pub enum Limit {
    #[error("global concurrent-call limit reached ({max} calls)")]
    /// Too many calls at once (`max-calls`).
    GlobalConcurrent {
        /// The limit.
        max: u32,
    },
    #[error("global calls-per-second limit reached ({per_second}/s)")]
    /// Too many new calls per second (`max-cps`).
    GlobalCps {
        /// The limit.
        per_second: u32,
    },
    #[error("partner {partner}: concurrent-call limit reached ({max} calls)")]
    /// Too many calls at once for the partner.
    PartnerConcurrent {
        /// The partner.
        partner: PartnerId,
        /// Its limit.
        max: u32,
    },
    #[error("partner {partner}: calls-per-second limit reached ({per_second}/s)")]
    /// Too many new calls per second for the partner.
    PartnerCps {
        /// The partner.
        partner: PartnerId,
        /// Its limit.
        per_second: u32,
    },
    #[error("engine overloaded: {depth} messages queued (shed above {max})")]
    /// The engine's queue is too deep (`shed-queue-depth`).
    QueueDepth {
        /// Messages queued.
        depth: usize,
        /// The bound.
        max: usize,
    },
    #[error("engine overloaded: oldest queued message waited {age_ms} ms (shed above {max_ms} ms)")]
    /// The engine's oldest queued message is too old (`shed-queue-age`).
    QueueAge {
        /// How long it waited.
        age_ms: u64,
        /// The bound.
        max_ms: u64,
    },
}

impl Limit {
    /// Short name for counters and logs.
    pub const fn name(&self) -> &'static str {
        match self {
            Limit::GlobalConcurrent { .. } => "global_concurrent",
            Limit::GlobalCps { .. } => "global_cps",
            Limit::PartnerConcurrent { .. } => "partner_concurrent",
            Limit::PartnerCps { .. } => "partner_cps",
            Limit::QueueDepth { .. } => "queue_depth",
            Limit::QueueAge { .. } => "queue_age",
        }
    }

    /// The refusal reason the call gets.
    pub const fn reason(&self) -> Reason {
        Reason::LimitReached
    }
}

/// Proof that a call was admitted; give it back to [`Admission::release`] when the call ends.
/// Deliberately neither `Clone` nor `Copy`: one admission, one release. Four bytes, kept in the call record.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an admitted call must be released"]
pub struct AdmitTicket {
    /// Whose concurrent-call count it holds.
    partner: PartnerId,
}

impl AdmitTicket {
    /// The partner whose limits this ticket counts against.
    pub fn partner(&self) -> PartnerId {
        self.partner
    }
}

/// The rate limiters' clock: the `now` the engine passes in, held in an atomic the limiters read.
/// `governor` reads time through a [`Clock`]; this one only ever shows what [`Admission`] was last told.
#[derive(Clone, Debug)]
struct PassedClock {
    /// Nanoseconds since [`Admission`]'s origin, as of the last call.
    now: Arc<AtomicU64>,
}

impl Clock for PassedClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::new(self.now.load(Ordering::Relaxed))
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, PassedClock, NoOpMiddleware<Nanos>>;

/// A GCRA limiter and the limit it was built for (rebuilt when the limit changes).
struct CpsLimiter {
    /// The limit it enforces.
    limit: CpsLimit,
    /// The limiter state.
    gcra: Gcra,
}

impl CpsLimiter {
    fn new(limit: CpsLimit, clock: &PassedClock) -> Option<CpsLimiter> {
        let per_second = NonZeroU32::new(limit.per_second)?;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(CpsLimiter {
            limit,
            gcra: RateLimiter::direct_with_clock(quota, clock.clone()),
        })
    }
}

/// One partner's live state.
#[derive(Default)]
struct PartnerState {
    /// Calls admitted and not yet released.
    active: u32,
    /// Its calls-per-second limiter, when it has a limit.
    cps: Option<CpsLimiter>,
}

/// Counts of admissions and refusals, for `rtc_core status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdmissionStats {
    /// Calls admitted and not yet released.
    pub active: u32,
    /// Calls admitted since start.
    pub admitted: u64,
    /// Refusals by limit name.
    pub refused: Vec<(&'static str, u64)>,
    /// Calls holding an admission place per partner, for every partner admitted since start (by id).
    pub by_partner: Vec<(PartnerId, u32)>,
}

/// Admission control state. Owned by the engine thread; not shared.
pub struct Admission {
    /// Global limits and shedding thresholds.
    config: AdmissionConfig,
    /// Reference point for the limiters' clock.
    origin: Instant,
    /// The clock all limiters read.
    clock: PassedClock,
    /// Calls admitted and not yet released, over all partners.
    active: u32,
    /// The global calls-per-second limiter.
    global_cps: Option<CpsLimiter>,
    /// Per-partner counts and limiters. Bounded by the number of partners.
    partners: HashMap<PartnerId, PartnerState>,
    /// Admissions since start.
    admitted: u64,
    /// Refusals per limit, in [`Limit::name`] order of `REFUSAL_NAMES`.
    refused: [u64; REFUSAL_NAMES.len()],
}

const REFUSAL_NAMES: [&str; 6] = [
    "global_concurrent",
    "global_cps",
    "partner_concurrent",
    "partner_cps",
    "queue_depth",
    "queue_age",
];

impl Admission {
    /// Starts with no calls; `origin` is any instant not after the first `now` passed in.
    pub fn new(config: AdmissionConfig, origin: Instant) -> Admission {
        let clock = PassedClock {
            now: Arc::new(AtomicU64::new(0)),
        };
        let global_cps = CpsLimiter::new(config.cps, &clock);
        Admission {
            config,
            origin,
            clock,
            active: 0,
            global_cps,
            partners: HashMap::new(),
            admitted: 0,
            refused: [0; REFUSAL_NAMES.len()],
        }
    }

    /// Replaces the global limits (on `rtc_core reload`); live calls keep their tickets.
    pub fn reconfigure(&mut self, config: AdmissionConfig) {
        if config.cps != self.config.cps {
            self.global_cps = CpsLimiter::new(config.cps, &self.clock);
        }
        self.config = config;
    }

    fn set_now(&self, now: Instant) {
        let nanos = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        // Never backwards: GCRA state assumes a monotonic clock.
        self.clock.now.fetch_max(nanos, Ordering::Relaxed);
    }

    fn refuse(&mut self, limit: Limit) -> Limit {
        if let Some(i) = REFUSAL_NAMES.iter().position(|n| *n == limit.name()) {
            self.refused[i] += 1;
        }
        limit
    }

    /// Whether new calls must be shed because the engine lags: `depth` messages queued, the oldest
    /// having waited `oldest_age`. Counted as a refusal when it refuses.
    pub fn shed(&mut self, depth: usize, oldest_age: Duration) -> Result<(), Limit> {
        let max = self.config.shed_queue_depth;
        if max > 0 && depth > max {
            return Err(self.refuse(Limit::QueueDepth { depth, max }));
        }
        let max_age = self.config.shed_queue_age;
        if !max_age.is_zero() && oldest_age > max_age {
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            return Err(self.refuse(Limit::QueueAge {
                age_ms: ms(oldest_age),
                max_ms: ms(max_age),
            }));
        }
        Ok(())
    }

    /// Admits one call of `partner` at `now`, or names the limit that refuses it.
    ///
    /// Concurrency is checked first (it has no side effects), then the partner's rate, then the global rate,
    /// so that a partner over its own rate does not use up global capacity. A call refused by the global
    /// rate has used one unit of its partner's rate.
    pub fn admit(
        &mut self,
        partner: PartnerId,
        limits: PartnerLimits,
        now: Instant,
    ) -> Result<AdmitTicket, Limit> {
        self.set_now(now);
        let global_max = self.config.max_concurrent;
        if global_max > 0 && self.active >= global_max {
            return Err(self.refuse(Limit::GlobalConcurrent { max: global_max }));
        }
        let state = self.partners.entry(partner).or_default();
        if limits.max_concurrent > 0 && state.active >= limits.max_concurrent {
            let max = limits.max_concurrent;
            return Err(self.refuse(Limit::PartnerConcurrent { partner, max }));
        }
        if state.cps.as_ref().map(|l| l.limit) != Some(limits.cps) {
            state.cps = CpsLimiter::new(limits.cps, &self.clock);
        }
        if let Some(limiter) = &state.cps
            && limiter.gcra.check().is_err()
        {
            let per_second = limits.cps.per_second;
            return Err(self.refuse(Limit::PartnerCps {
                partner,
                per_second,
            }));
        }
        if let Some(limiter) = &self.global_cps
            && limiter.gcra.check().is_err()
        {
            let per_second = self.config.cps.per_second;
            return Err(self.refuse(Limit::GlobalCps { per_second }));
        }
        if let Some(state) = self.partners.get_mut(&partner) {
            state.active += 1;
        }
        self.active += 1;
        self.admitted += 1;
        Ok(AdmitTicket { partner })
    }

    /// Gives back a call's place when it ends.
    pub fn release(&mut self, ticket: AdmitTicket) {
        self.active = self.active.saturating_sub(1);
        if let Some(state) = self.partners.get_mut(&ticket.partner) {
            state.active = state.active.saturating_sub(1);
            if state.active == 0 && state.cps.is_none() {
                self.partners.remove(&ticket.partner);
            }
        }
    }

    /// Calls admitted and not yet released.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Calls of `partner` admitted and not yet released.
    pub fn active_for(&self, partner: PartnerId) -> u32 {
        self.partners.get(&partner).map_or(0, |s| s.active)
    }

    /// Calls held, admitted so far, and refusals per limit.
    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            active: self.active,
            admitted: self.admitted,
            refused: REFUSAL_NAMES
                .iter()
                .copied()
                .zip(self.refused.iter().copied())
                .collect(),
            by_partner: {
                let mut v: Vec<(PartnerId, u32)> = self
                    .partners
                    .iter()
                    .map(|(&id, s)| (id, s.active))
                    .collect();
                v.sort_unstable_by_key(|&(id, _)| id);
                v
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent: u32, per_second: u32) -> PartnerLimits {
        PartnerLimits {
            max_concurrent,
            cps: CpsLimit {
                per_second,
                burst: 0,
            },
        }
    }

    #[test]
    fn partner_concurrency_is_counted_and_released() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        let t1 = a.admit(1, limits(2, 0), t0).unwrap();
        let _t2 = a.admit(1, limits(2, 0), t0).unwrap();
        assert_eq!(
            a.admit(1, limits(2, 0), t0),
            Err(Limit::PartnerConcurrent { partner: 1, max: 2 })
        );
        // Another partner is not affected.
        let _o = a.admit(2, limits(2, 0), t0).unwrap();
        assert_eq!(a.active_for(1), 2);
        a.release(t1);
        assert_eq!(a.active_for(1), 1);
        assert!(a.admit(1, limits(2, 0), t0).is_ok());
        assert_eq!(a.active(), 3);
    }

    #[test]
    fn global_concurrency_comes_first() {
        let t0 = Instant::now();
        let mut a = Admission::new(
            AdmissionConfig {
                max_concurrent: 2,
                ..Default::default()
            },
            t0,
        );
        let _a = a.admit(1, limits(0, 0), t0).unwrap();
        let b = a.admit(2, limits(0, 0), t0).unwrap();
        assert_eq!(
            a.admit(3, limits(1, 0), t0),
            Err(Limit::GlobalConcurrent { max: 2 })
        );
        a.release(b);
        assert!(a.admit(3, limits(1, 0), t0).is_ok());
        let stats = a.stats();
        assert_eq!(stats.active, 2);
        assert_eq!(stats.admitted, 3);
        assert!(stats.refused.contains(&("global_concurrent", 1)));
    }

    #[test]
    fn partner_cps_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        // 10/s, burst 10: ten at once, then one every 100 ms.
        for _ in 0..10 {
            let t = a.admit(7, limits(0, 10), t0).unwrap();
            a.release(t);
        }
        assert_eq!(
            a.admit(7, limits(0, 10), t0),
            Err(Limit::PartnerCps {
                partner: 7,
                per_second: 10
            })
        );
        assert!(
            a.admit(7, limits(0, 10), t0 + Duration::from_millis(50))
                .is_err()
        );
        let t = a
            .admit(7, limits(0, 10), t0 + Duration::from_millis(100))
            .unwrap();
        a.release(t);
        assert!(
            a.admit(7, limits(0, 10), t0 + Duration::from_millis(100))
                .is_err()
        );
        // Another partner has its own budget.
        assert!(a.admit(8, limits(0, 10), t0).is_ok());
    }

    #[test]
    fn sustained_rate_matches_the_limit() {
        let t0 = Instant::now();
        let mut a = Admission::new(
            AdmissionConfig {
                cps: CpsLimit {
                    per_second: 50,
                    burst: 1,
                },
                ..Default::default()
            },
            t0,
        );
        // Offer 1000 calls/s for 10 s: about 50/s get in.
        let mut admitted = 0;
        for ms in 0..10_000u64 {
            if let Ok(t) = a.admit(1, limits(0, 0), t0 + Duration::from_millis(ms)) {
                admitted += 1;
                a.release(t);
            }
        }
        assert!((499..=501).contains(&admitted), "{admitted}");
    }

    #[test]
    fn partner_rate_is_checked_before_global_rate() {
        let t0 = Instant::now();
        let mut a = Admission::new(
            AdmissionConfig {
                cps: CpsLimit {
                    per_second: 2,
                    burst: 2,
                },
                ..Default::default()
            },
            t0,
        );
        let x = a.admit(1, limits(0, 1), t0).unwrap();
        a.release(x);
        // Partner 1 is over its own 1/s: refused by its limit, leaving global capacity for partner 2.
        assert!(matches!(
            a.admit(1, limits(0, 1), t0),
            Err(Limit::PartnerCps { .. })
        ));
        assert!(a.admit(2, limits(0, 0), t0).is_ok());
        assert_eq!(
            a.admit(3, limits(0, 0), t0),
            Err(Limit::GlobalCps { per_second: 2 })
        );
    }

    #[test]
    fn a_changed_partner_limit_takes_effect() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        let x = a.admit(1, limits(0, 1), t0).unwrap();
        a.release(x);
        assert!(a.admit(1, limits(0, 1), t0).is_err());
        assert!(a.admit(1, limits(0, 5), t0).is_ok());
    }

    #[test]
    fn a_clock_going_backwards_does_not_refill() {
        let t0 = Instant::now();
        let mut a = Admission::new(AdmissionConfig::default(), t0);
        let later = t0 + Duration::from_secs(5);
        let x = a.admit(1, limits(0, 1), later).unwrap();
        a.release(x);
        assert!(a.admit(1, limits(0, 1), t0).is_err());
    }

    #[test]
    fn sheds_on_queue_depth_and_age() {
        let t0 = Instant::now();
        let mut a = Admission::new(
            AdmissionConfig {
                shed_queue_depth: 1000,
                shed_queue_age: Duration::from_millis(200),
                ..Default::default()
            },
            t0,
        );
        assert!(a.shed(1000, Duration::from_millis(200)).is_ok());
        assert_eq!(
            a.shed(1001, Duration::ZERO),
            Err(Limit::QueueDepth {
                depth: 1001,
                max: 1000
            })
        );
        let err = a.shed(10, Duration::from_millis(250)).unwrap_err();
        assert_eq!(
            err,
            Limit::QueueAge {
                age_ms: 250,
                max_ms: 200
            }
        );
        assert!(err.to_string().contains("250 ms"));
        assert_eq!(err.reason(), Reason::LimitReached);
        let off = &mut Admission::new(AdmissionConfig::default(), t0);
        assert!(off.shed(usize::MAX, Duration::MAX).is_ok());
    }

    #[test]
    fn refusals_serialise_with_their_limit() {
        let json = serde_json::to_value(Limit::PartnerCps {
            partner: 3,
            per_second: 5,
        })
        .unwrap();
        assert_eq!(json["limit"], "partner_cps");
        assert_eq!(json["partner"], 3);
    }
}
