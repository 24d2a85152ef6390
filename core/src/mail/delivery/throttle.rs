//! Outbound deliverability limits (`[email.delivery.limits]`): messages per minute and per
//! hour to one destination domain and from one source address, and the IP warm-up schedule
//! (a daily volume ramp per source address, as dcrouter's).
//!
//! Sans-I/O: [`DeliveryThrottle::acquire`] takes the time as a `SystemTime` (the warm-up is
//! keyed by UTC calendar day) and answers which source address may send one more message to
//! a domain now, or when to try again. Rates are token buckets (`n` per period, refilled
//! continuously, bursts up to `n`); the daily warm-up count starts over at 00:00 UTC.
//! Over a limit the engine defers the message to the time given (it stays queued; a
//! throttled message is never bounced).
//!
//! Owns: the limiter state. Not here: recording the deferral (`super::Engine::settle`),
//! binding the socket to the chosen source address (`super::next_hop`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::DeliveryLimits;

/// Most destination domains tracked (idle full buckets are dropped beyond it).
const MAX_DOMAINS: usize = 100_000;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY_SECS: u64 = 86_400;

/// A token bucket: `capacity` tokens per `period`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    capacity: u32,
    period: Duration,
    tokens: f64,
    updated: SystemTime,
}

impl Bucket {
    fn new(capacity: u32, period: Duration, now: SystemTime) -> Bucket {
        Bucket { capacity, period, tokens: f64::from(capacity), updated: now }
    }

    fn refill(&mut self, now: SystemTime) {
        let elapsed = now.duration_since(self.updated).unwrap_or_default();
        let rate = f64::from(self.capacity) / self.period.as_secs_f64();
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(f64::from(self.capacity));
        self.updated = self.updated.max(now);
    }

    /// `Ok` if a token is there (not taken), else when one will be.
    fn check(&mut self, now: SystemTime) -> Result<(), SystemTime> {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Ok(());
        }
        let rate = f64::from(self.capacity) / self.period.as_secs_f64();
        let wait = ((1.0 - self.tokens) / rate).max(0.001);
        Err(now + Duration::from_secs_f64(wait))
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }

    fn is_full(&self) -> bool {
        self.tokens >= f64::from(self.capacity)
    }
}

/// The per-minute and per-hour buckets of one key.
#[derive(Debug, Clone, Default)]
struct Rates {
    buckets: Vec<Bucket>,
}

impl Rates {
    fn new(per_minute: Option<u32>, per_hour: Option<u32>, now: SystemTime) -> Rates {
        let mut buckets = Vec::new();
        if let Some(n) = per_minute {
            buckets.push(Bucket::new(n, MINUTE, now));
        }
        if let Some(n) = per_hour {
            buckets.push(Bucket::new(n, HOUR, now));
        }
        Rates { buckets }
    }

    /// `Ok` when every bucket has a token, else the latest time one of them will.
    fn check(&mut self, now: SystemTime) -> Result<(), SystemTime> {
        let mut until: Option<SystemTime> = None;
        for bucket in &mut self.buckets {
            if let Err(at) = bucket.check(now) {
                until = Some(until.map_or(at, |u| u.max(at)));
            }
        }
        until.map_or(Ok(()), Err)
    }

    fn take(&mut self) {
        self.buckets.iter_mut().for_each(Bucket::take);
    }
}

/// One source address's state.
#[derive(Debug, Clone)]
struct Source {
    ip: Option<IpAddr>,
    rates: Rates,
    /// The UTC day `sent_today` counts.
    day: i64,
    sent_today: u32,
}

/// Why a message may not be sent now, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// When a slot may be free.
    pub until: SystemTime,
    /// Which limit (for the queue's last error).
    pub reason: String,
}

/// The deliverability limiter of the delivery engine.
#[derive(Debug)]
pub struct DeliveryThrottle {
    limits: DeliveryLimits,
    sources: Vec<Source>,
    domains: HashMap<String, Rates>,
}

fn unix_day(now: SystemTime) -> i64 {
    (now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / DAY_SECS) as i64
}

fn next_midnight(now: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs((unix_day(now) as u64 + 1) * DAY_SECS)
}

impl DeliveryThrottle {
    /// A limiter for `limits` over `source_ips` (empty: one source, the kernel's choice).
    pub fn new(limits: DeliveryLimits, source_ips: &[IpAddr], now: SystemTime) -> DeliveryThrottle {
        let ips: Vec<Option<IpAddr>> = if source_ips.is_empty() { vec![None] } else { source_ips.iter().copied().map(Some).collect() };
        let sources = ips
            .into_iter()
            .map(|ip| Source { ip, rates: Rates::new(limits.ip_per_minute, limits.ip_per_hour, now), day: unix_day(now), sent_today: 0 })
            .collect();
        DeliveryThrottle { limits, sources, domains: HashMap::new() }
    }

    /// Whether this limiter was made for `limits` over `source_ips`.
    pub fn is_configured_as(&self, limits: &DeliveryLimits, source_ips: &[IpAddr]) -> bool {
        let ips: Vec<Option<IpAddr>> = self.sources.iter().map(|s| s.ip).collect();
        let wanted: Vec<Option<IpAddr>> = if source_ips.is_empty() { vec![None] } else { source_ips.iter().copied().map(Some).collect() };
        self.limits == *limits && ips == wanted
    }

    /// Whether any limit is configured (without one, [`Self::acquire`] always grants the
    /// first source).
    pub fn is_active(&self) -> bool {
        let l = &self.limits;
        l.domain_per_minute.is_some() || l.domain_per_hour.is_some() || l.ip_per_minute.is_some() || l.ip_per_hour.is_some() || l.warmup.is_some()
    }

    /// One more message to `domain` at `now`: the source address to send it from (preferring
    /// `preferred`, the one an open connection uses), counted; or when to try again.
    pub fn acquire(&mut self, domain: &str, preferred: Option<Option<IpAddr>>, now: SystemTime) -> Result<Option<IpAddr>, Throttled> {
        let (per_minute, per_hour) = (self.limits.domain_per_minute, self.limits.domain_per_hour);
        if self.domains.len() >= MAX_DOMAINS {
            self.domains.retain(|_, rates| rates.buckets.iter().any(|b| !b.is_full()));
        }
        let domain_rates = self.domains.entry(domain.to_ascii_lowercase()).or_insert_with(|| Rates::new(per_minute, per_hour, now));
        if let Err(until) = domain_rates.check(now) {
            return Err(Throttled { until, reason: format!("sending limit for {domain} reached") });
        }
        let today = unix_day(now);
        let cap = self.limits.warmup.as_ref().and_then(|w| w.cap(today));
        let mut order: Vec<usize> = (0..self.sources.len()).collect();
        if let Some(position) = preferred.and_then(|ip| self.sources.iter().position(|s| s.ip == ip)) {
            order.retain(|i| *i != position);
            order.insert(0, position);
        }
        let mut earliest: Option<SystemTime> = None;
        let mut warmup_full = false;
        for index in order {
            let source = &mut self.sources[index];
            if source.day != today {
                source.day = today;
                source.sent_today = 0;
            }
            if cap.is_some_and(|cap| source.sent_today >= cap) {
                warmup_full = true;
                let at = next_midnight(now);
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
                continue;
            }
            match source.rates.check(now) {
                Ok(()) => {
                    source.rates.take();
                    source.sent_today += 1;
                    if let Some(rates) = self.domains.get_mut(&domain.to_ascii_lowercase()) {
                        rates.take();
                    }
                    return Ok(source.ip);
                }
                Err(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
            }
        }
        let reason = if warmup_full {
            format!("IP warm-up: daily volume of every source address reached ({} today)", cap.unwrap_or(0))
        } else {
            "sending limit of every source address reached".to_string()
        };
        Err(Throttled { until: earliest.unwrap_or(now + MINUTE), reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WarmupSchedule;

    fn at(secs: u64) -> SystemTime {
        // A day boundary: 2026-12-01 00:00:00 UTC.
        UNIX_EPOCH + Duration::from_secs(20_788 * DAY_SECS + secs)
    }

    #[test]
    fn per_domain_rate_defers_until_a_token_refills() {
        let limits = DeliveryLimits { domain_per_minute: Some(2), ..Default::default() };
        let mut throttle = DeliveryThrottle::new(limits, &[], at(0));
        assert!(throttle.is_active());
        assert_eq!(throttle.acquire("example.org", None, at(0)), Ok(None));
        assert_eq!(throttle.acquire("EXAMPLE.org", None, at(0)), Ok(None));
        let refused = throttle.acquire("example.org", None, at(0)).expect_err("third in a minute");
        assert_eq!(refused.until, at(30), "one token every 30 s");
        assert!(refused.reason.contains("example.org"));
        // Another domain is not affected.
        assert_eq!(throttle.acquire("example.net", None, at(0)), Ok(None));
        assert_eq!(throttle.acquire("example.org", None, at(30)), Ok(None));
        assert!(throttle.acquire("example.org", None, at(31)).is_err());
    }

    #[test]
    fn hourly_limits_hold_when_the_minute_allows() {
        let limits = DeliveryLimits { ip_per_minute: Some(10), ip_per_hour: Some(3), ..Default::default() };
        let mut throttle = DeliveryThrottle::new(limits, &[], at(0));
        for n in 0..3 {
            assert!(throttle.acquire("d.test", None, at(n * 61)).is_ok());
        }
        let refused = throttle.acquire("d.test", None, at(200)).expect_err("hour used up");
        // 3 per hour: a token every 1200 s; 200 s of refill were there already (3 taken by 122 s).
        assert!(refused.until > at(200) && refused.until <= at(1400), "{:?}", refused.until.duration_since(at(0)));
    }

    #[test]
    fn a_limited_source_hands_over_to_the_next_and_prefers_the_open_one() {
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let limits = DeliveryLimits { ip_per_minute: Some(1), ..Default::default() };
        let mut throttle = DeliveryThrottle::new(limits, &[a, b], at(0));
        assert_eq!(throttle.acquire("x.test", Some(Some(b)), at(0)), Ok(Some(b)));
        assert_eq!(throttle.acquire("x.test", Some(Some(b)), at(1)), Ok(Some(a)));
        let refused = throttle.acquire("x.test", None, at(2)).expect_err("both used");
        assert_eq!(refused.until, at(60));
    }

    #[test]
    fn warmup_ramps_daily_volume_and_starts_over_at_midnight() {
        let start_day = unix_day(at(0));
        let warmup = WarmupSchedule { start_day, steps: vec![(1, 2), (2, 3), (3, 5)] };
        let limits = DeliveryLimits { warmup: Some(warmup), ..Default::default() };
        let mut throttle = DeliveryThrottle::new(limits, &[], at(0));
        // Day 1: 2 messages.
        assert!(throttle.acquire("a.test", None, at(10)).is_ok());
        assert!(throttle.acquire("b.test", None, at(20)).is_ok());
        let refused = throttle.acquire("c.test", None, at(30)).expect_err("day 1 cap");
        assert_eq!(refused.until, at(DAY_SECS), "until midnight UTC");
        assert!(refused.reason.contains("warm-up"), "{}", refused.reason);
        // Day 2: 3 messages.
        for n in 0..3 {
            assert!(throttle.acquire("c.test", None, at(DAY_SECS + n)).is_ok(), "day 2 message {n}");
        }
        assert!(throttle.acquire("c.test", None, at(DAY_SECS + 5)).is_err());
        // Day 4: past the last step, no cap.
        for n in 0..50 {
            assert!(throttle.acquire("c.test", None, at(3 * DAY_SECS + n)).is_ok());
        }
    }

    #[test]
    fn no_limits_always_grant() {
        let mut throttle = DeliveryThrottle::new(DeliveryLimits::default(), &[], at(0));
        assert!(!throttle.is_active());
        for _ in 0..1000 {
            assert_eq!(throttle.acquire("x.test", None, at(0)), Ok(None));
        }
    }
}
