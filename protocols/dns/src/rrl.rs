//! Response rate limiting (RRL) per client prefix, so the server is not an amplification tool.
//!
//! Owns: the classic BIND/Knot RRL accounting — each client prefix (IPv4 /24, IPv6 /56 by
//! default) earns `responses_per_second` credits per second, may hold at most one second of
//! credit and at most `window_secs` seconds of debt; a response with no credit is *limited*, and
//! every `slip`-th limited response is sent truncated (TC=1, see
//! [`crate::answer::truncate_for_slip`]) instead of dropped, so real clients behind a spoofed
//! flood can still retry over TCP. Memory is a fixed table (2-way set associative, oldest entry
//! evicted). Time comes in as `Instant` arguments. Does not own: deciding which transports are
//! limited (shards call it for UDP only) or building the truncated response.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use foldhash::fast::RandomState;

use crate::config::RrlConfig;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrlDecision {
    /// Within the limit: send as is.
    Send,
    /// Limited, but this one slips: send it truncated (TC=1, no records).
    Slip,
    /// Limited: send nothing.
    Drop,
}

/// Counters, per shard; merge them for totals (serialisable for the appliance's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RrlStats {
    /// Responses sent normally.
    pub sent: u64,
    /// Responses sent truncated.
    pub slipped: u64,
    /// Responses dropped.
    pub dropped: u64,
    /// Table entries reused for another prefix.
    pub evictions: u64,
}

impl RrlStats {
    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &RrlStats) {
        self.sent += other.sent;
        self.slipped += other.slipped;
        self.dropped += other.dropped;
        self.evictions += other.evictions;
    }
}

/// Credits are kept in thousandths of a response so refill works at millisecond resolution.
const MILLI: i64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Client prefix as an IPv6 (IPv4 mapped) address, masked.
    prefix: u128,
    used: bool,
    /// Credit in thousandths of a response; negative is debt.
    balance: i64,
    /// Milliseconds since the limiter's epoch at the last update.
    last_ms: u64,
    /// Limited responses seen, for slip.
    limited: u32,
}

/// A per-shard response rate limiter with bounded memory.
#[derive(Debug, Clone)]
pub struct ResponseRateLimiter {
    enabled: bool,
    rate: i64,
    slip: u32,
    window_secs: i64,
    ipv4_prefix_len: u8,
    ipv6_prefix_len: u8,
    epoch: Instant,
    buckets: Box<[Bucket]>,
    hasher: RandomState,
    stats: RrlStats,
}

impl ResponseRateLimiter {
    /// A limiter for a validated [`RrlConfig`]; `now` is its time origin.
    pub fn new(config: &RrlConfig, now: Instant) -> Self {
        let size = config.table_size.clamp(2, 1 << 24).next_power_of_two();
        Self {
            enabled: config.enabled && config.responses_per_second > 0,
            rate: i64::from(config.responses_per_second.max(1)),
            slip: config.slip,
            window_secs: i64::from(config.window_secs.max(1)),
            ipv4_prefix_len: config.ipv4_prefix_len.min(32),
            ipv6_prefix_len: config.ipv6_prefix_len.min(128),
            epoch: now,
            buckets: vec![Bucket::default(); size].into_boxed_slice(),
            hasher: RandomState::default(),
            stats: RrlStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RrlStats {
        self.stats
    }

    /// The client's prefix as a masked IPv4-mapped IPv6 address.
    pub fn prefix_of(&self, client: IpAddr) -> u128 {
        let (bits, len) = match client {
            IpAddr::V4(v4) => (
                u128::from(v4.to_ipv6_mapped()),
                96 + u32::from(self.ipv4_prefix_len),
            ),
            IpAddr::V6(v6) => (u128::from(v6), u32::from(self.ipv6_prefix_len)),
        };
        let mask = match len {
            0 => 0,
            len => u128::MAX << (128 - len.min(128)),
        };
        bits & mask
    }

    /// Accounts one response to `client` at `now` and says whether to send, slip or drop it.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> RrlDecision {
        if !self.enabled {
            self.stats.sent += 1;
            return RrlDecision::Send;
        }
        let prefix = self.prefix_of(client);
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let index = self.slot(prefix, now_ms);
        let (rate, window_secs, slip) = (self.rate, self.window_secs, self.slip);
        let bucket = &mut self.buckets[index];

        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        // `rate` responses per 1000 ms = `rate` thousandths per ms.
        let credit = i64::try_from(elapsed)
            .unwrap_or(i64::MAX)
            .saturating_mul(rate);
        bucket.balance = bucket.balance.saturating_add(credit).min(rate * MILLI);
        bucket.balance = (bucket.balance - MILLI).max(-rate * MILLI * window_secs);

        if bucket.balance >= 0 {
            bucket.limited = 0;
            self.stats.sent += 1;
            return RrlDecision::Send;
        }
        bucket.limited = bucket.limited.wrapping_add(1);
        if slip != 0 && bucket.limited.is_multiple_of(slip) {
            self.stats.slipped += 1;
            RrlDecision::Slip
        } else {
            self.stats.dropped += 1;
            RrlDecision::Drop
        }
    }

    /// Finds or allocates the bucket for `prefix` (2-way set associative, oldest evicted).
    fn slot(&mut self, prefix: u128, now_ms: u64) -> usize {
        let mask = self.buckets.len() - 1;
        let first = (self.hasher.hash_one(prefix) as usize) & mask & !1;
        let second = first | 1;
        for index in [first, second] {
            let bucket = &self.buckets[index];
            if bucket.used && bucket.prefix == prefix {
                return index;
            }
        }
        let victim = match (self.buckets[first].used, self.buckets[second].used) {
            (false, _) => first,
            (true, false) => second,
            (true, true) => {
                self.stats.evictions += 1;
                if self.buckets[first].last_ms <= self.buckets[second].last_ms {
                    first
                } else {
                    second
                }
            }
        };
        self.buckets[victim] = Bucket {
            prefix,
            used: true,
            balance: self.rate * MILLI,
            last_ms: now_ms,
            limited: 0,
        };
        victim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(rate: u32, slip: u32, table_size: usize) -> (ResponseRateLimiter, Instant) {
        let now = Instant::now();
        let config = RrlConfig {
            responses_per_second: rate,
            slip,
            table_size,
            ..RrlConfig::default()
        };
        (ResponseRateLimiter::new(&config, now), now)
    }

    #[test]
    fn limits_after_rate_and_slips_every_nth() {
        let (mut rrl, t0) = limiter(5, 2, 1024);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let decisions: Vec<RrlDecision> = (0..9).map(|_| rrl.check(client, t0)).collect();
        use RrlDecision::*;
        assert_eq!(
            decisions,
            vec![Send, Send, Send, Send, Send, Drop, Slip, Drop, Slip]
        );
        assert_eq!(
            rrl.stats(),
            RrlStats {
                sent: 5,
                slipped: 2,
                dropped: 2,
                evictions: 0
            }
        );
    }

    #[test]
    fn refills_over_time_and_caps_debt_at_window() {
        let (mut rrl, t0) = limiter(10, 0, 1024);
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(rrl.check(client, t0), RrlDecision::Send);
        }
        assert_eq!(rrl.check(client, t0), RrlDecision::Drop);
        // 200 ms later two more responses have been earned, minus the one debt.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(rrl.check(client, t1), RrlDecision::Send);
        assert_eq!(rrl.check(client, t1), RrlDecision::Drop);
        // A huge flood cannot push the debt beyond window (15 s) * rate.
        for _ in 0..100_000 {
            rrl.check(client, t1);
        }
        assert_eq!(
            rrl.check(client, t1 + Duration::from_secs(14)),
            RrlDecision::Drop
        );
        assert_eq!(
            rrl.check(client, t1 + Duration::from_secs(16)),
            RrlDecision::Send
        );
    }

    #[test]
    fn groups_clients_by_prefix() {
        let (mut rrl, t0) = limiter(1, 0, 1024);
        let same_a: IpAddr = "203.0.113.1".parse().unwrap();
        let same_b: IpAddr = "203.0.113.200".parse().unwrap();
        let other: IpAddr = "203.0.114.1".parse().unwrap();
        assert_eq!(rrl.check(same_a, t0), RrlDecision::Send);
        assert_eq!(rrl.check(same_b, t0), RrlDecision::Drop);
        assert_eq!(rrl.check(other, t0), RrlDecision::Send);

        let v6_a: IpAddr = "2001:db8:0:1200::1".parse().unwrap();
        let v6_b: IpAddr = "2001:db8:0:12ff:ffff::1".parse().unwrap();
        let v6_other: IpAddr = "2001:db8:0:1300::1".parse().unwrap();
        assert_eq!(rrl.prefix_of(v6_a), rrl.prefix_of(v6_b));
        assert_ne!(rrl.prefix_of(v6_a), rrl.prefix_of(v6_other));
        assert_eq!(rrl.check(v6_a, t0), RrlDecision::Send);
        assert_eq!(rrl.check(v6_b, t0), RrlDecision::Drop);
        assert_eq!(rrl.check(v6_other, t0), RrlDecision::Send);
    }

    #[test]
    fn memory_is_bounded_and_evictions_counted() {
        let (mut rrl, t0) = limiter(1, 1, 8);
        for i in 0..1000u32 {
            let ip = IpAddr::from((i << 8).to_be_bytes());
            rrl.check(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(rrl.buckets.len(), 8);
        assert!(rrl.stats().evictions >= 1000 - 8);
    }

    #[test]
    fn disabled_always_sends() {
        let now = Instant::now();
        let config = RrlConfig {
            enabled: false,
            ..RrlConfig::default()
        };
        let mut rrl = ResponseRateLimiter::new(&config, now);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..1000).all(|_| rrl.check(client, now) == RrlDecision::Send));
    }
}
