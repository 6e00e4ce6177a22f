//! Counters over time: money in the rolling hour and day, and a partner's rate of calls to new destinations
//! against its own baseline. Fixed rings advanced by the clock of the input, so that memory per partner is constant
//! and a check is a few additions.

use rtc_money::Money;

/// Money spent in the rolling hour (60 one-minute buckets) and day (24 one-hour buckets).
#[derive(Clone, Debug)]
pub struct SpendWindow {
    minutes: [i64; 60],
    hours: [i64; 24],
    /// The minute (since the engine's start) the rings were last advanced to.
    minute: u64,
    hour_total: i64,
    day_total: i64,
}

impl Default for SpendWindow {
    fn default() -> Self {
        SpendWindow {
            minutes: [0; 60],
            hours: [0; 24],
            minute: 0,
            hour_total: 0,
            day_total: 0,
        }
    }
}

impl SpendWindow {
    /// Moves the window to `now_ms`, forgetting what fell out of it.
    fn advance(&mut self, now_ms: u64) {
        let now = now_ms / 60_000;
        if now <= self.minute {
            return;
        }
        let gap = now - self.minute;
        if gap >= 60 {
            self.minutes = [0; 60];
            self.hour_total = 0;
        } else {
            for m in self.minute + 1..=now {
                let slot = &mut self.minutes[(m % 60) as usize];
                self.hour_total -= *slot;
                *slot = 0;
            }
        }
        let (old_h, new_h) = (self.minute / 60, now / 60);
        if new_h - old_h >= 24 {
            self.hours = [0; 24];
            self.day_total = 0;
        } else {
            for h in old_h + 1..=new_h {
                let slot = &mut self.hours[(h % 24) as usize];
                self.day_total -= *slot;
                *slot = 0;
            }
        }
        self.minute = now;
    }

    /// Adds `amount` spent at `now_ms`.
    pub fn add(&mut self, amount: Money, now_ms: u64) {
        self.advance(now_ms);
        let m = amount.0;
        self.minutes[(self.minute % 60) as usize] += m;
        self.hours[((self.minute / 60) % 24) as usize] += m;
        self.hour_total += m;
        self.day_total += m;
    }

    /// Spent in the last hour and the last day, as of `now_ms`.
    pub fn totals(&mut self, now_ms: u64) -> (Money, Money) {
        self.advance(now_ms);
        (Money(self.hour_total), Money(self.day_total))
    }
}

/// Calls to new destinations per second, over a short window, and the baseline it is compared with.
#[derive(Clone, Debug)]
pub struct BurstMeter {
    /// Calls per second over the last `window` seconds (ring).
    seconds: [u32; 60],
    window: u8,
    /// The second (since the engine's start) the ring was last advanced to.
    second: u64,
    /// Calls in the window.
    in_window: u32,
    /// The partner's usual rate of new destinations per second (exponential moving average).
    pub baseline: f64,
    /// The current second was part of a burst: it does not feed the baseline (a burst must not teach the
    /// baseline that bursts are usual).
    flagged: bool,
}

impl BurstMeter {
    /// A meter over `window` seconds (1 to 60).
    pub fn new(window: u8) -> Self {
        BurstMeter {
            seconds: [0; 60],
            window: window.clamp(1, 60),
            second: 0,
            in_window: 0,
            baseline: 0.0,
            flagged: false,
        }
    }

    /// The count of the current second (before it is advanced past).
    fn last_count(&self) -> u32 {
        self.seconds[(self.second % u64::from(self.window)) as usize]
    }

    /// Counts one call to a new destination at `now_ms`; returns the calls in the window, this one included.
    pub fn count(&mut self, now_ms: u64, alpha: f64) -> u32 {
        self.advance_keeping_current(now_ms, alpha);
        let w = u64::from(self.window);
        self.seconds[(self.second % w) as usize] += 1;
        self.in_window += 1;
        self.in_window
    }

    /// Advances, feeding the second that ended into the baseline before its slot can be reused.
    fn advance_keeping_current(&mut self, now_ms: u64, alpha: f64) {
        let now = now_ms / 1000;
        if now <= self.second {
            return;
        }
        let ended = self.last_count();
        let gap = now - self.second;
        let w = u64::from(self.window);
        for k in 1..=gap.min(w) {
            let slot = &mut self.seconds[((self.second + k) % w) as usize];
            self.in_window -= *slot;
            *slot = 0;
        }
        if !std::mem::take(&mut self.flagged) {
            self.baseline += alpha * (f64::from(ended) - self.baseline);
        }
        let quiet = gap - 1;
        if quiet > 0 {
            self.baseline *= (1.0 - alpha).powf(quiet.min(1 << 20) as f64);
        }
        self.second = now;
    }

    /// Calls counted in the current second.
    pub fn current(&self) -> u32 {
        self.last_count()
    }

    /// Marks the current second as part of a burst.
    pub fn flag(&mut self) {
        self.flagged = true;
    }

    /// Calls in the window as of `now_ms`, without counting one.
    pub fn in_window(&mut self, now_ms: u64, alpha: f64) -> u32 {
        self.advance_keeping_current(now_ms, alpha);
        self.in_window
    }

    /// The window in seconds.
    pub fn window_s(&self) -> u32 {
        u32::from(self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn spend_falls_out_of_the_hour_and_the_day() {
        let mut w = SpendWindow::default();
        w.add(Money(10), 0);
        w.add(Money(5), 30 * MIN);
        assert_eq!(w.totals(59 * MIN), (Money(15), Money(15)));
        assert_eq!(w.totals(60 * MIN), (Money(5), Money(15)));
        assert_eq!(w.totals(90 * MIN), (Money(0), Money(15)));
        w.add(Money(7), 23 * 60 * MIN);
        assert_eq!(w.totals(24 * 60 * MIN - 1), (Money(7), Money(22)));
        assert_eq!(w.totals(24 * 60 * MIN), (Money(0), Money(7)));
        assert_eq!(w.totals(100 * 60 * MIN), (Money(0), Money(0)));
    }

    #[test]
    fn burst_window_and_baseline() {
        let alpha = 1.0 / 60.0;
        let mut b = BurstMeter::new(10);
        // Two new destinations a second for ten minutes: the baseline learns about 2/s.
        for s in 0..600u64 {
            b.count(s * 1000, alpha);
            b.count(s * 1000 + 500, alpha);
        }
        assert!((b.baseline - 2.0).abs() < 0.1, "{}", b.baseline);
        assert_eq!(b.in_window(600_000 - 1, alpha), 20);
        // Quiet for a minute: the window empties, the baseline decays.
        assert_eq!(b.in_window(660_000, alpha), 0);
        assert!(b.baseline < 1.0, "{}", b.baseline);
        // A burst: 50 in one second.
        let mut n = 0;
        for _ in 0..50 {
            n = b.count(661_000, alpha);
        }
        assert_eq!(n, 50);
    }
}
