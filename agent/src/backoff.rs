//! Exponential backoff with jitter for reconnecting to the server: after a server restart,
//! thousands of agents must not all come back in the same second.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay: base·2ⁿ capped, then scaled by a random factor in [0.5, 1.0).
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(random_unit())
    }

    /// As [`next_delay`](Self::next_delay) with the random factor's source given (`unit` in
    /// [0, 1)), for tests.
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let full = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(b.next_delay_with(1.0), Duration::from_secs(1));
        assert_eq!(b.next_delay_with(1.0), Duration::from_secs(2));
        assert_eq!(
            b.next_delay_with(0.0),
            Duration::from_secs(2),
            "half of 4 s"
        );
        for _ in 0..30 {
            b.next_delay_with(1.0);
        }
        assert_eq!(b.next_delay_with(1.0), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.next_delay_with(1.0), Duration::from_secs(1));
        let d = b.next_delay();
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
    }
}
