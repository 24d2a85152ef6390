//! Admission control per client IP, as nginx users know it: `limit_req` (request rate with a
//! burst) and `limit_conn` (concurrent connections).
//!
//! Owns: the leaky-bucket arithmetic of nginx's `limit_req` (excess in milli-requests, drained
//! at `rate`, a request refused once the excess would pass `burst`), the `nodelay` choice,
//! Retry-After for the 429, bounded memory (idle keys evicted; a full table refuses new keys
//! rather than growing), and per-key connection counts. Time comes in as [`Instant`]s; there
//! is no clock and no timer here. State is per shard: each shard enforces its own share.
//!
//! Does not own: the reply (see [`crate::reply::too_many_requests`]) or delaying a request
//! (the proxy loop sleeps for [`RateDecision::Delay`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::Http1Error;

/// A request rate, stored like nginx in milli-requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    milli_per_second: u64,
}

impl Rate {
    /// Reads nginx syntax: `10r/s` or `600r/m` (n ≥ 1).
    pub fn parse(text: &str) -> Result<Self, Http1Error> {
        let invalid = || Http1Error::InvalidRate {
            rate: text.to_owned(),
        };
        let (count, per) = if let Some(n) = text.strip_suffix("r/s") {
            (n, 1)
        } else if let Some(n) = text.strip_suffix("r/m") {
            (n, 60)
        } else {
            return Err(invalid());
        };
        let count: u64 = count.trim().parse().map_err(|_| invalid())?;
        if count == 0 || count > 1_000_000_000 {
            return Err(invalid());
        }
        Ok(Rate {
            milli_per_second: (count * 1000 / per).max(1),
        })
    }

    /// `n` requests per second.
    pub fn per_second(n: u32) -> Self {
        Rate {
            milli_per_second: u64::from(n.max(1)) * 1000,
        }
    }
}

/// Settings of one `limit_req` zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The sustained rate.
    pub rate: Rate,
    /// Requests allowed above the rate before refusing (nginx `burst`, default 0).
    pub burst: u32,
    /// nginx `nodelay`: requests within the burst are served at once. Without it, a request
    /// within the burst is delayed until it conforms to the rate ([`RateDecision::Delay`]).
    pub nodelay: bool,
    /// Most client keys tracked per shard; beyond it, idle keys are evicted, and if none is
    /// idle a new key is refused (nginx answers 503 when its zone is full; we answer 429).
    pub max_keys: usize,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Serve it now.
    Allow,
    /// Serve it after this delay (burst without `nodelay`).
    Delay(Duration),
    /// Refuse with 429 and `Retry-After: retry_after_secs`.
    Reject {
        /// Whole seconds until a request from this key would be accepted (at least 1).
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests above the rate, in milli-requests, as of `last`.
    excess_milli: u64,
    last: Instant,
}

/// nginx `limit_req` for one zone, keyed by client IP (or any hashable key).
#[derive(Debug, Clone)]
pub struct RateLimiter<K = IpAddr> {
    config: RateLimitConfig,
    buckets: HashMap<K, Bucket>,
    last_sweep: Option<Instant>,
}

/// How often, at most, a full table is swept for idle keys when a new key arrives.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// An empty limiter.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }

    /// Accounts one request from `key` at `now` and says what to do with it. Refused
    /// requests are not counted (as in nginx).
    pub fn check(&mut self, key: K, now: Instant) -> RateDecision {
        let config = self.config;
        let burst_milli = u64::from(config.burst) * 1000;
        if !self.buckets.contains_key(&key) && self.buckets.len() >= config.max_keys {
            let may_sweep = self
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_INTERVAL);
            if may_sweep {
                self.sweep(now);
            }
            if self.buckets.len() >= config.max_keys {
                return RateDecision::Reject {
                    retry_after_secs: 1,
                };
            }
        }
        let Some(bucket) = self.buckets.get_mut(&key) else {
            // nginx: a new key starts with no excess and is served.
            self.buckets.insert(
                key,
                Bucket {
                    excess_milli: 0,
                    last: now,
                },
            );
            return RateDecision::Allow;
        };
        // nginx: excess = max(0, excess - rate * elapsed + 1000)
        let excess =
            (bucket.excess_milli + 1000).saturating_sub(drained_since(bucket, config.rate, now));
        if excess > burst_milli {
            // Refused requests leave the bucket as it was.
            let wait_milli = excess - burst_milli;
            let secs = u128::from(wait_milli).div_ceil(u128::from(config.rate.milli_per_second));
            return RateDecision::Reject {
                retry_after_secs: (secs.min(u128::from(u64::MAX)) as u64).max(1),
            };
        }
        bucket.excess_milli = excess;
        bucket.last = now;
        if excess == 0 || config.nodelay {
            RateDecision::Allow
        } else {
            let nanos =
                u128::from(excess) * 1_000_000_000 / u128::from(config.rate.milli_per_second);
            RateDecision::Delay(Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64))
        }
    }

    /// Forgets every key that has drained enough by `now` to behave exactly as a new key. Call it from a periodic shard timer; [`RateLimiter::check`] also calls it,
    /// at most once a second, when the table is full.
    pub fn sweep(&mut self, now: Instant) {
        let rate = self.config.rate;
        self.buckets
            .retain(|_, bucket| drained_since(bucket, rate, now) < bucket.excess_milli + 1000);
        self.last_sweep = Some(now);
    }
}

/// Milli-requests drained from the bucket between its last request and `now`.
fn drained_since(bucket: &Bucket, rate: Rate, now: Instant) -> u64 {
    let elapsed = now.saturating_duration_since(bucket.last).as_nanos();
    let drained = elapsed.saturating_mul(u128::from(rate.milli_per_second)) / 1_000_000_000;
    drained.min(u128::from(u64::MAX)) as u64
}

/// nginx `limit_conn`: concurrent connections per key.
///
/// [`ConnectionLimiter::try_acquire`] hands out a [`ConnectionSlot`] that must be given back
/// with [`ConnectionLimiter::release`] when the connection ends; the slot cannot be cloned, so
/// it cannot be released twice. Memory is bounded by the live connections: a key whose count
/// drops to zero is removed.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter<K = IpAddr> {
    max_per_key: u32,
    counts: HashMap<K, u32>,
}

/// Proof that a connection was admitted; give it back to [`ConnectionLimiter::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a slot must be released when the connection ends"]
pub struct ConnectionSlot<K = IpAddr> {
    key: K,
}

impl<K> ConnectionSlot<K> {
    /// The key this slot counts against.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Copy> ConnectionLimiter<K> {
    /// A limiter allowing `max_per_key` concurrent connections per key (per shard).
    pub fn new(max_per_key: u32) -> Self {
        ConnectionLimiter {
            max_per_key,
            counts: HashMap::new(),
        }
    }

    /// Admits one more connection from `key`, or `None` when it is at its limit (answer 503,
    /// as nginx's `limit_conn_status` default, or close).
    pub fn try_acquire(&mut self, key: K) -> Option<ConnectionSlot<K>> {
        let count = self.counts.entry(key).or_insert(0);
        if *count >= self.max_per_key {
            if *count == 0 {
                self.counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { key })
    }

    /// Ends a connection admitted by [`ConnectionLimiter::try_acquire`].
    pub fn release(&mut self, slot: ConnectionSlot<K>) {
        if let Some(count) = self.counts.get_mut(&slot.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&slot.key);
            }
        }
    }

    /// Live connections from `key`.
    pub fn connections(&self, key: &K) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one live connection.
    pub fn tracked_keys(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn config(rate: &str, burst: u32, nodelay: bool) -> RateLimitConfig {
        RateLimitConfig {
            rate: Rate::parse(rate).unwrap(),
            burst,
            nodelay,
            max_keys: 1000,
        }
    }

    fn ip(n: u8) -> IpAddr {
        Ipv4Addr::new(10, 0, 0, n).into()
    }

    #[test]
    fn rate_syntax() {
        assert_eq!(Rate::parse("10r/s").unwrap(), Rate::per_second(10));
        assert_eq!(Rate::parse("60r/m").unwrap(), Rate::per_second(1));
        assert_eq!(Rate::parse("1r/m").unwrap().milli_per_second, 16);
        for bad in ["", "10", "0r/s", "r/s", "-1r/s", "10r/h", "1.5r/s"] {
            assert!(
                matches!(Rate::parse(bad), Err(Http1Error::InvalidRate { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn without_burst_second_request_in_same_instant_is_refused() {
        let mut limiter = RateLimiter::new(config("10r/s", 0, false));
        let t = Instant::now();
        assert_eq!(limiter.check(ip(1), t), RateDecision::Allow);
        assert_eq!(
            limiter.check(ip(1), t),
            RateDecision::Reject {
                retry_after_secs: 1
            }
        );
        // another key is independent
        assert_eq!(limiter.check(ip(2), t), RateDecision::Allow);
        // 100 ms later the rate allows one more
        assert_eq!(
            limiter.check(ip(1), t + Duration::from_millis(100)),
            RateDecision::Allow
        );
    }

    #[test]
    fn burst_with_nodelay_serves_at_once() {
        let mut limiter = RateLimiter::new(config("1r/s", 3, true));
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(limiter.check(ip(1), t), RateDecision::Allow);
        }
        assert_eq!(
            limiter.check(ip(1), t),
            RateDecision::Reject {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn burst_without_nodelay_delays_to_the_rate() {
        let mut limiter = RateLimiter::new(config("2r/s", 2, false));
        let t = Instant::now();
        assert_eq!(limiter.check(ip(1), t), RateDecision::Allow);
        assert_eq!(
            limiter.check(ip(1), t),
            RateDecision::Delay(Duration::from_millis(500))
        );
        assert_eq!(
            limiter.check(ip(1), t),
            RateDecision::Delay(Duration::from_millis(1000))
        );
        assert!(matches!(
            limiter.check(ip(1), t),
            RateDecision::Reject { .. }
        ));
    }

    #[test]
    fn retry_after_grows_with_excess_at_slow_rates() {
        let mut limiter = RateLimiter::new(config("6r/m", 0, true));
        let t = Instant::now();
        assert_eq!(limiter.check(ip(1), t), RateDecision::Allow);
        // one request every 10 s: the next is allowed 10 s later
        assert_eq!(
            limiter.check(ip(1), t),
            RateDecision::Reject {
                retry_after_secs: 10
            }
        );
        assert_eq!(
            limiter.check(ip(1), t + Duration::from_secs(4)),
            RateDecision::Reject {
                retry_after_secs: 6
            }
        );
        assert_eq!(
            limiter.check(ip(1), t + Duration::from_secs(10)),
            RateDecision::Allow
        );
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_are_evicted() {
        let mut limiter = RateLimiter::new(RateLimitConfig {
            max_keys: 2,
            ..config("1r/s", 0, true)
        });
        let t = Instant::now();
        assert_eq!(limiter.check(ip(1), t), RateDecision::Allow);
        assert_eq!(limiter.check(ip(2), t), RateDecision::Allow);
        // full, nobody idle: a new key is refused, the table does not grow
        assert!(matches!(
            limiter.check(ip(3), t),
            RateDecision::Reject { .. }
        ));
        assert_eq!(limiter.tracked_keys(), 2);
        // two seconds later both buckets drained: the sweep makes room
        assert_eq!(
            limiter.check(ip(3), t + Duration::from_secs(2)),
            RateDecision::Allow
        );
        assert_eq!(limiter.tracked_keys(), 1);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut limiter = RateLimiter::new(config("1r/s", 0, true));
        let t = Instant::now() + Duration::from_secs(10);
        assert_eq!(limiter.check(ip(1), t), RateDecision::Allow);
        assert!(matches!(
            limiter.check(ip(1), t - Duration::from_secs(5)),
            RateDecision::Reject { .. }
        ));
    }

    #[test]
    fn connection_limit() {
        let mut limiter = ConnectionLimiter::new(2);
        let a = limiter.try_acquire(ip(1)).unwrap();
        let b = limiter.try_acquire(ip(1)).unwrap();
        assert!(limiter.try_acquire(ip(1)).is_none());
        assert_eq!(limiter.connections(&ip(1)), 2);
        let c = limiter.try_acquire(ip(2)).unwrap();
        limiter.release(a);
        let d = limiter.try_acquire(ip(1)).unwrap();
        limiter.release(b);
        limiter.release(d);
        limiter.release(c);
        assert_eq!(limiter.tracked_keys(), 0);
        let mut none = ConnectionLimiter::new(0);
        assert!(none.try_acquire(ip(1)).is_none());
        assert_eq!(none.tracked_keys(), 0);
    }
}
