//! The engine's monotonic clock: real time in production, a hand-driven clock in tests so that timers
//! are tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Microseconds since the clock's start.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Real time, since the instant held.
    System(Instant),
    /// Moved by hand ([`ManualClock`]).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Real time.
    pub fn system() -> Clock {
        Clock::System(Instant::now())
    }

    /// A clock that moves only when the returned [`ManualClock`] advances it.
    pub fn manual() -> (Clock, ManualClock) {
        let t = Arc::new(AtomicU64::new(0));
        (Clock::Manual(t.clone()), ManualClock(t))
    }

    /// Microseconds since the clock was made (a hand-driven one: as far as it was advanced).
    #[inline]
    pub fn now_us(&self) -> u64 {
        match self {
            Clock::System(start) => start.elapsed().as_micros() as u64,
            Clock::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Whether this clock is driven by hand (tests).
    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }
}

/// The driving end of a manual clock.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Moves the hand-driven clock on by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as u64, Ordering::AcqRel);
    }

    /// Microseconds the clock was advanced by so far.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}
