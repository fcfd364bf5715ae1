//! The limit on new connections per second (`limits.connections_per_sec_max`): a
//! token bucket the listener draws from before each accept. Past the rate the
//! listener stops accepting for a moment and pending connections wait in the
//! kernel's backlog, so a reconnect storm or a flood of connects cannot take the
//! CPU from the clients already connected.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `rate` (one second's
/// burst).
#[derive(Debug)]
pub struct AcceptRate {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl AcceptRate {
    /// `per_sec` new connections a second; 0 means no limit.
    pub fn new(per_sec: u32, now: Instant) -> Self {
        AcceptRate {
            rate: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: now,
        }
    }

    /// How long to wait before the next accept (zero when one may go now); takes
    /// the token when it returns zero.
    pub fn wait(&mut self, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut r = AcceptRate::new(10, t0);
        for _ in 0..10 {
            assert_eq!(r.wait(t0), Duration::ZERO);
        }
        let w = r.wait(t0);
        assert!(
            w > Duration::from_millis(90) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        assert_eq!(r.wait(t0 + Duration::from_millis(100)), Duration::ZERO);
        // Idle time refills, but never beyond one second's worth.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(r.wait(later), Duration::ZERO);
        }
        assert!(r.wait(later) > Duration::ZERO);
    }

    #[test]
    fn zero_means_no_limit() {
        let t0 = Instant::now();
        let mut r = AcceptRate::new(0, t0);
        for _ in 0..10_000 {
            assert_eq!(r.wait(t0), Duration::ZERO);
        }
    }
}
