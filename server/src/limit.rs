//! Rate limits: for the one agent call anyone can make without a certificate, `Enroll`, and
//! for exemption requests from enrolled laptops ([`ExemptionLimiter`]).
//!
//! Two token buckets: one per source address (an IPv6 address counts by its /64, since one
//! host easily holds a whole /64) and one for the whole server. A flood from one address runs
//! out of its own bucket without touching anyone else's; a flood from many addresses runs into
//! the global bucket before it can use up the CPU that issuing certificates takes. A refused
//! caller gets `RESOURCE_EXHAUSTED`, which the agent treats as "try again later" and backs off.
//!
//! Pure: the caller passes the time, so the tests drive a clock of their own.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many enrollments are allowed, per second and in a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_s: f64,
    pub burst: f64,
}

impl Rate {
    /// No limit at all (for benchmarks that measure enrollment itself).
    pub const UNLIMITED: Rate = Rate {
        per_s: f64::INFINITY,
        burst: f64::INFINITY,
    };

    fn unlimited(&self) -> bool {
        self.per_s.is_infinite()
    }
}

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnrollLimits {
    pub per_source: Rate,
    pub global: Rate,
}

impl Default for EnrollLimits {
    /// A school behind one NAT address enrolls its 20 laptops at once and then 5 a second; the
    /// whole server takes 100 a second (bursts of 500), far below what issuing certificates
    /// costs on two cores (BENCHMARKS.md) and far above any real roll-out.
    fn default() -> Self {
        Self {
            per_source: Rate {
                per_s: 5.0,
                burst: 20.0,
            },
            global: Rate {
                per_s: 100.0,
                burst: 500.0,
            },
        }
    }
}

/// Why a call was refused, with how long until a token is there again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Limited {
    #[error("too many enrollments from {source_addr}; try again in {retry_after_ms} ms")]
    Source {
        source_addr: String,
        retry_after_ms: u64,
    },
    #[error("too many enrollments at once on this server; try again in {retry_after_ms} ms")]
    Global { retry_after_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Refills for the time passed since the last look.
    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_s).min(rate.burst);
        self.at = now;
    }

    /// Milliseconds until a whole token is there (0 when one is).
    fn wait_ms(&self, rate: Rate) -> u64 {
        if self.tokens >= 1.0 || rate.per_s <= 0.0 {
            return 0;
        }
        // Whole milliseconds, rounded up; the cast saturates for absurd rates.
        ((1.0 - self.tokens) / rate.per_s * 1000.0).ceil() as u64
    }
}

/// The address a bucket is kept for: IPv4 as is, IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
    }
}

/// How many per-source buckets are kept before full (idle) ones are dropped.
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
struct Inner {
    global: Bucket,
    sources: HashMap<IpAddr, Bucket>,
}

/// The enrollment limiter the agent API consults before it does any work.
#[derive(Debug)]
pub struct EnrollLimiter {
    limits: EnrollLimits,
    inner: Mutex<Inner>,
}

impl EnrollLimiter {
    pub fn new(limits: EnrollLimits, now: Instant) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner {
                global: Bucket::full(limits.global, now),
                sources: HashMap::new(),
            }),
        }
    }

    pub fn limits(&self) -> EnrollLimits {
        self.limits
    }

    /// Takes a token for a call from `source` (unknown when the transport does not say), or
    /// says why not. A refused call takes nothing.
    pub fn check(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        let EnrollLimits { per_source, global } = self.limits;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        if inner.sources.len() >= PRUNE_AT {
            // A bucket that has refilled completely holds nothing worth remembering.
            inner.sources.retain(|_, b| {
                b.refill(per_source, now);
                b.tokens < per_source.burst
            });
        }
        let key = source.map(source_key);
        if !per_source.unlimited()
            && let Some(k) = key
        {
            let b = inner
                .sources
                .entry(k)
                .or_insert_with(|| Bucket::full(per_source, now));
            b.refill(per_source, now);
            if b.tokens < 1.0 {
                return Err(Limited::Source {
                    source_addr: k.to_string(),
                    retry_after_ms: b.wait_ms(per_source),
                });
            }
        }
        if !global.unlimited() {
            inner.global.refill(global, now);
            if inner.global.tokens < 1.0 {
                return Err(Limited::Global {
                    retry_after_ms: inner.global.wait_ms(global),
                });
            }
            inner.global.tokens -= 1.0;
        }
        if !per_source.unlimited()
            && let Some(b) = key.and_then(|k| inner.sources.get_mut(&k))
        {
            b.tokens -= 1.0;
        }
        Ok(())
    }
}

/// Exemption requests one laptop may make per [`EXEMPTION_WINDOW`] (granted or refused as
/// already in force): each granted one writes an exemption, an audit entry and a mail.
pub const EXEMPTIONS_PER_WINDOW: usize = 3;
/// The window of [`EXEMPTIONS_PER_WINDOW`].
pub const EXEMPTION_WINDOW: Duration = Duration::from_secs(3600);

/// Recent requests per device, in memory: a restart forgets them, which only ever allows a
/// few more (the store's check for an exemption in force still holds).
#[derive(Debug, Default)]
pub struct ExemptionLimiter {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl ExemptionLimiter {
    /// Counts a request of `device` at `now`, or refuses it with how long until the oldest
    /// request leaves the window, when the device has made [`EXEMPTIONS_PER_WINDOW`] within
    /// the last [`EXEMPTION_WINDOW`].
    pub fn take(&self, device: &str, now: Instant) -> Result<(), Duration> {
        // A panic elsewhere cannot leave the map half-changed (one operation at a time).
        let mut map = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget devices with nothing in the window, so the map stays as small as the set of
        // devices that asked lately.
        map.retain(|_, q| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= EXEMPTION_WINDOW)
            {
                q.pop_front();
            }
            !q.is_empty()
        });
        let q = map.entry(device.to_string()).or_default();
        if q.len() >= EXEMPTIONS_PER_WINDOW {
            let wait = q.front().map_or(EXEMPTION_WINDOW, |t| {
                EXEMPTION_WINDOW.saturating_sub(now.duration_since(*t))
            });
            return Err(wait);
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(src: (f64, f64), global: (f64, f64)) -> EnrollLimits {
        EnrollLimits {
            per_source: Rate {
                per_s: src.0,
                burst: src.1,
            },
            global: Rate {
                per_s: global.0,
                burst: global.1,
            },
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn one_flooding_source_does_not_starve_another() {
        let t0 = Instant::now();
        let l = EnrollLimiter::new(limits((1.0, 3.0), (100.0, 100.0)), t0);
        for _ in 0..3 {
            l.check(ip("10.0.0.1"), t0).unwrap();
        }
        let err = l.check(ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!(
            err,
            Limited::Source {
                source_addr: "10.0.0.1".into(),
                retry_after_ms: 1000
            }
        );
        assert_eq!(
            err.to_string(),
            "too many enrollments from 10.0.0.1; try again in 1000 ms"
        );
        l.check(ip("10.0.0.2"), t0).unwrap();
        // Half a second later half a token is back: still refused, with the rest of the wait.
        let t1 = t0 + Duration::from_millis(500);
        let err = l.check(ip("10.0.0.1"), t1).unwrap_err();
        assert!(
            matches!(
                err,
                Limited::Source {
                    retry_after_ms: 500,
                    ..
                }
            ),
            "{err:?}"
        );
        l.check(ip("10.0.0.1"), t0 + Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn the_global_bucket_caps_many_sources_and_refused_calls_take_nothing() {
        let t0 = Instant::now();
        let l = EnrollLimiter::new(limits((10.0, 10.0), (2.0, 4.0)), t0);
        for i in 0..4 {
            l.check(ip(&format!("10.0.1.{i}")), t0).unwrap();
        }
        let err = l.check(ip("10.0.1.9"), t0).unwrap_err();
        assert_eq!(
            err,
            Limited::Global {
                retry_after_ms: 500
            }
        );
        // The refused source kept its whole burst: ten calls once the global bucket allows.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..4 {
            l.check(ip("10.0.1.9"), later).unwrap();
        }
    }

    #[test]
    fn ipv6_counts_by_its_64_and_unknown_sources_only_by_the_global_bucket() {
        let t0 = Instant::now();
        let l = EnrollLimiter::new(limits((1.0, 1.0), (1000.0, 1000.0)), t0);
        l.check(ip("2001:db8:1:2::1"), t0).unwrap();
        let err = l.check(ip("2001:db8:1:2:ffff::7"), t0).unwrap_err();
        assert!(err.to_string().contains("2001:db8:1:2::"), "{err}");
        l.check(ip("2001:db8:1:3::1"), t0).unwrap();
        for _ in 0..50 {
            l.check(None, t0).unwrap();
        }
    }

    #[test]
    fn unlimited_never_refuses_and_idle_buckets_are_pruned() {
        let t0 = Instant::now();
        let l = EnrollLimiter::new(
            EnrollLimits {
                per_source: Rate::UNLIMITED,
                global: Rate::UNLIMITED,
            },
            t0,
        );
        for _ in 0..10_000 {
            l.check(ip("10.0.0.1"), t0).unwrap();
        }
        let l = EnrollLimiter::new(limits((1.0, 2.0), (1e9, 1e9)), t0);
        for i in 0..(PRUNE_AT as u32 + 10) {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            l.check(Some(IpAddr::V4(a)), t0).unwrap();
        }
        // Two seconds on every bucket is full again and the next call prunes them all.
        l.check(ip("192.0.2.1"), t0 + Duration::from_secs(2))
            .unwrap();
        let n = l.inner.lock().unwrap().sources.len();
        assert!(n < 10, "{n} buckets kept");
    }
}
