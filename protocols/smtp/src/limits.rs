//! Hierarchical rate limits for the SMTP server, as in smartmta: **global**, **per sender
//! domain** and **per client IP** — messages per minute, concurrent connections per IP,
//! recipients per message, and authentication failures per IP with a block time.
//!
//! Sans-I/O like the session: the caller passes `Instant`s in and gets a [`LimitRefusal`]
//! (which knows its reply) or `Ok`. One [`RateLimiter`] is meant per shard: counts are
//! shard-local (a client spread over several shards by `SO_REUSEPORT` can reach up to
//! shards × the limit; no cross-shard traffic is spent on it).
//!
//! Rates are token buckets refilled continuously (`n` per minute, bursts up to `n`), so a
//! client is never refused for a whole minute after a burst, only until a token refills.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::reply::{EnhancedStatus, Reply};

/// How many idle per-IP / per-domain entries are kept before idle ones are dropped.
const MAX_TRACKED: usize = 100_000;

/// `[email.limits]`: every limit is optional (absent = unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Messages per minute accepted from all clients together.
    pub global_messages_per_minute: Option<u32>,
    /// Messages per minute per MAIL FROM domain.
    pub domain_messages_per_minute: Option<u32>,
    /// Messages per minute per client IP.
    pub ip_messages_per_minute: Option<u32>,
    /// Concurrent connections per client IP.
    pub connections_per_ip: Option<u32>,
    /// Recipients per message.
    pub recipients_per_message: Option<u32>,
    /// Failed AUTH attempts per client IP before it is blocked.
    pub auth_failures_per_ip: Option<u32>,
    /// How long a blocked IP stays blocked, seconds (default 900).
    pub auth_block_secs: Option<u64>,
}

/// Why a limit refused: each knows its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// At connect: the IP holds `connections_per_ip` connections (`421 4.7.0`, closing).
    TooManyConnections,
    /// At connect or after a failed AUTH: the IP is blocked for auth failures
    /// (`554 5.7.1` at connect — RFC 5321 §3.1 — else `421 4.7.0`, closing).
    Blocked {
        /// Seconds until the block ends.
        remaining_secs: u64,
        /// Whether this is the connection greeting.
        at_connect: bool,
    },
    /// At the first RCPT of a message: a messages-per-minute limit (`450 4.7.1`).
    MessageRate(LimitScope),
    /// At RCPT: `recipients_per_message` reached (`452 4.5.3`).
    TooManyRecipients,
}

/// Which level of the hierarchy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// All clients.
    Global,
    /// The sender domain.
    Domain,
    /// The client IP.
    Ip,
}

impl LimitScope {
    fn name(self) -> &'static str {
        match self {
            LimitScope::Global => "server",
            LimitScope::Domain => "sender domain",
            LimitScope::Ip => "client address",
        }
    }
}

impl LimitRefusal {
    /// The reply to send.
    pub fn reply(self) -> Reply {
        let (code, status, text) = match self {
            LimitRefusal::TooManyConnections => (421, (4, 7, 0), "Too many connections from your address, closing".to_string()),
            LimitRefusal::Blocked { remaining_secs, at_connect: true } => {
                (554, (5, 7, 1), format!("Blocked for {remaining_secs} s after repeated authentication failures"))
            }
            LimitRefusal::Blocked { remaining_secs, at_connect: false } => {
                (421, (4, 7, 0), format!("Too many authentication failures; blocked for {remaining_secs} s, closing"))
            }
            LimitRefusal::MessageRate(scope) => (450, (4, 7, 1), format!("Message rate limit of the {} exceeded, try again later", scope.name())),
            LimitRefusal::TooManyRecipients => (452, (4, 5, 3), "Too many recipients".to_string()),
        };
        let status = EnhancedStatus::new(status.0, status.1, status.2).ok();
        match Reply::new(code, status, &text) {
            Ok(reply) => reply,
            // Every code above is valid; fall back to a plain temporary failure regardless.
            Err(_) => Reply::new(451, None, "Rate limited").unwrap_or_else(|_| unreachable!("451 is a valid reply")),
        }
    }

    /// The reply as wire bytes (`421 4.7.0 ...\r\n`).
    pub fn reply_bytes(self) -> Vec<u8> {
        let mut out = Vec::new();
        self.reply().write_to(&mut out);
        out
    }

    /// Whether the session must be closed after the reply.
    pub fn closes(self) -> bool {
        matches!(self, LimitRefusal::TooManyConnections | LimitRefusal::Blocked { .. })
    }
}

/// A token bucket of `per_minute` tokens.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(per_minute), updated: now }
    }

    fn refill(&mut self, per_minute: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(per_minute) / 60.0).min(f64::from(per_minute));
        self.updated = now;
    }

    fn has_token(&mut self, per_minute: u32, now: Instant) -> bool {
        self.refill(per_minute, now);
        self.tokens >= 1.0
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

#[derive(Debug, Clone, Copy)]
struct IpState {
    connections: u32,
    messages: Option<Bucket>,
    auth_failures: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

/// Counters of what the limits refused (`shardgate stats` → `smtp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCounters {
    /// Connections refused: too many from one IP.
    pub connections_refused: u64,
    /// Connections or sessions refused: IP blocked for auth failures.
    pub blocked: u64,
    /// Messages refused by a rate limit.
    pub rate_limited: u64,
    /// Recipients refused: too many in one message.
    pub recipients_refused: u64,
}

/// The limits of one shard.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    global: Option<Bucket>,
    domains: HashMap<String, Bucket>,
    ips: HashMap<IpAddr, IpState>,
    /// What was refused so far.
    pub counters: LimitCounters,
}

impl RateLimiter {
    /// A limiter with nothing counted yet.
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter { config, global: None, domains: HashMap::new(), ips: HashMap::new(), counters: LimitCounters::default() }
    }

    /// Replaces the limits (config reload), keeping what was counted.
    pub fn reconfigure(&mut self, config: RateLimitConfig) {
        self.config = config;
    }

    fn block_time(&self) -> Duration {
        Duration::from_secs(self.config.auth_block_secs.unwrap_or(900))
    }

    fn ip(&mut self, ip: IpAddr, now: Instant) -> &mut IpState {
        if self.ips.len() >= MAX_TRACKED && !self.ips.contains_key(&ip) {
            let block = self.block_time();
            self.ips.retain(|_, s| s.connections > 0 || s.blocked_until.is_some_and(|t| t > now) || now.saturating_duration_since(s.last_seen) < block);
        }
        let state = self.ips.entry(ip).or_insert(IpState { connections: 0, messages: None, auth_failures: 0, blocked_until: None, last_seen: now });
        state.last_seen = now;
        state
    }

    fn blocked(&mut self, ip: IpAddr, now: Instant, at_connect: bool) -> Result<(), LimitRefusal> {
        let state = self.ip(ip, now);
        match state.blocked_until {
            Some(until) if until > now => {
                let remaining_secs = until.saturating_duration_since(now).as_secs().max(1);
                self.counters.blocked += 1;
                Err(LimitRefusal::Blocked { remaining_secs, at_connect })
            }
            Some(_) => {
                state.blocked_until = None;
                state.auth_failures = 0;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A client connects: refused when blocked or at its connection limit. On `Ok`, call
    /// [`RateLimiter::connection_closed`] when it goes.
    pub fn connection_opened(&mut self, ip: IpAddr, now: Instant) -> Result<(), LimitRefusal> {
        self.blocked(ip, now, true)?;
        let limit = self.config.connections_per_ip;
        let state = self.ip(ip, now);
        if limit.is_some_and(|max| state.connections >= max) {
            self.counters.connections_refused += 1;
            return Err(LimitRefusal::TooManyConnections);
        }
        state.connections += 1;
        Ok(())
    }

    /// A connection accepted by [`RateLimiter::connection_opened`] ended.
    pub fn connection_closed(&mut self, ip: IpAddr) {
        if let Some(state) = self.ips.get_mut(&ip) {
            state.connections = state.connections.saturating_sub(1);
        }
    }

    /// A recipient is asked for; `accepted` recipients are already in the message. The
    /// first recipient of a message also counts the message against the per-minute rates
    /// (global, sender domain, client IP — all must have a token; only then is one taken
    /// from each, so a refusal costs nothing).
    pub fn recipient(&mut self, ip: IpAddr, sender_domain: &str, accepted: usize, now: Instant) -> Result<(), LimitRefusal> {
        if self.config.recipients_per_message.is_some_and(|max| accepted >= max as usize) {
            self.counters.recipients_refused += 1;
            return Err(LimitRefusal::TooManyRecipients);
        }
        if accepted > 0 {
            return Ok(());
        }
        let config = self.config.clone();
        let domain = sender_domain.to_ascii_lowercase();
        if let Some(per_minute) = config.global_messages_per_minute {
            let bucket = self.global.get_or_insert_with(|| Bucket::full(per_minute, now));
            if !bucket.has_token(per_minute, now) {
                self.counters.rate_limited += 1;
                return Err(LimitRefusal::MessageRate(LimitScope::Global));
            }
        }
        if let (Some(per_minute), false) = (config.domain_messages_per_minute, domain.is_empty()) {
            if self.domains.len() >= MAX_TRACKED && !self.domains.contains_key(&domain) {
                self.domains.retain(|_, b| {
                    b.refill(per_minute, now);
                    b.tokens < f64::from(per_minute)
                });
            }
            let bucket = self.domains.entry(domain.clone()).or_insert_with(|| Bucket::full(per_minute, now));
            if !bucket.has_token(per_minute, now) {
                self.counters.rate_limited += 1;
                return Err(LimitRefusal::MessageRate(LimitScope::Domain));
            }
        }
        if let Some(per_minute) = config.ip_messages_per_minute {
            let state = self.ip(ip, now);
            let bucket = state.messages.get_or_insert_with(|| Bucket::full(per_minute, now));
            if !bucket.has_token(per_minute, now) {
                self.counters.rate_limited += 1;
                return Err(LimitRefusal::MessageRate(LimitScope::Ip));
            }
            bucket.take();
        }
        if config.global_messages_per_minute.is_some() {
            if let Some(bucket) = &mut self.global {
                bucket.take();
            }
        }
        if config.domain_messages_per_minute.is_some() {
            if let Some(bucket) = self.domains.get_mut(&domain) {
                bucket.take();
            }
        }
        Ok(())
    }

    /// An AUTH attempt failed: at `auth_failures_per_ip` failures the IP is blocked for
    /// `auth_block_secs` and the refusal (`421`, closing) is returned.
    pub fn auth_failed(&mut self, ip: IpAddr, now: Instant) -> Result<(), LimitRefusal> {
        let Some(max) = self.config.auth_failures_per_ip else { return Ok(()) };
        let block = self.block_time();
        let state = self.ip(ip, now);
        state.auth_failures += 1;
        if state.auth_failures >= max {
            state.blocked_until = Some(now + block);
            self.counters.blocked += 1;
            return Err(LimitRefusal::Blocked { remaining_secs: block.as_secs(), at_connect: false });
        }
        Ok(())
    }

    /// An AUTH attempt succeeded: the IP's failure count starts over.
    pub fn auth_succeeded(&mut self, ip: IpAddr) {
        if let Some(state) = self.ips.get_mut(&ip) {
            state.auth_failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn connections_per_ip_are_counted_and_released() {
        let mut limiter = RateLimiter::new(RateLimitConfig { connections_per_ip: Some(2), ..Default::default() });
        let now = Instant::now();
        assert!(limiter.connection_opened(ip(1), now).is_ok());
        assert!(limiter.connection_opened(ip(1), now).is_ok());
        let refusal = limiter.connection_opened(ip(1), now).expect_err("third");
        assert_eq!(refusal, LimitRefusal::TooManyConnections);
        assert_eq!(refusal.reply().code(), 421);
        assert!(refusal.closes());
        // Another address is not affected.
        assert!(limiter.connection_opened(ip(2), now).is_ok());
        limiter.connection_closed(ip(1));
        assert!(limiter.connection_opened(ip(1), now).is_ok());
        assert_eq!(limiter.counters.connections_refused, 1);
    }

    #[test]
    fn recipients_per_message_gives_452() {
        let mut limiter = RateLimiter::new(RateLimitConfig { recipients_per_message: Some(2), ..Default::default() });
        let now = Instant::now();
        assert!(limiter.recipient(ip(1), "example.org", 0, now).is_ok());
        assert!(limiter.recipient(ip(1), "example.org", 1, now).is_ok());
        let refusal = limiter.recipient(ip(1), "example.org", 2, now).expect_err("third");
        assert_eq!(String::from_utf8(refusal.reply_bytes()).expect("ascii"), "452 4.5.3 Too many recipients\r\n");
    }

    #[test]
    fn per_ip_rate_refills_over_time_and_counts_messages_not_recipients() {
        let mut limiter = RateLimiter::new(RateLimitConfig { ip_messages_per_minute: Some(2), ..Default::default() });
        let t0 = Instant::now();
        assert!(limiter.recipient(ip(1), "a.org", 0, t0).is_ok());
        // Further recipients of the same message are free.
        assert!(limiter.recipient(ip(1), "a.org", 1, t0).is_ok());
        assert!(limiter.recipient(ip(1), "a.org", 0, t0).is_ok());
        let refusal = limiter.recipient(ip(1), "a.org", 0, t0).expect_err("third message");
        assert_eq!(refusal, LimitRefusal::MessageRate(LimitScope::Ip));
        assert_eq!(refusal.reply().code(), 450);
        assert!(!refusal.closes());
        assert!(limiter.recipient(ip(2), "a.org", 0, t0).is_ok(), "other IPs have their own bucket");
        // One token per 30 s at 2/min.
        assert!(limiter.recipient(ip(1), "a.org", 0, t0 + Duration::from_secs(29)).is_err());
        assert!(limiter.recipient(ip(1), "a.org", 0, t0 + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn hierarchy_global_then_domain_then_ip_and_a_refusal_costs_nothing() {
        let config = RateLimitConfig {
            global_messages_per_minute: Some(3),
            domain_messages_per_minute: Some(2),
            ip_messages_per_minute: Some(10),
            ..Default::default()
        };
        let mut limiter = RateLimiter::new(config);
        let t0 = Instant::now();
        assert!(limiter.recipient(ip(1), "spam.example", 0, t0).is_ok());
        assert!(limiter.recipient(ip(2), "Spam.Example", 0, t0).is_ok());
        assert_eq!(limiter.recipient(ip(3), "spam.example", 0, t0), Err(LimitRefusal::MessageRate(LimitScope::Domain)));
        // The domain refusal took no global token: one is left for another domain.
        assert!(limiter.recipient(ip(3), "other.example", 0, t0).is_ok());
        assert_eq!(limiter.recipient(ip(4), "third.example", 0, t0), Err(LimitRefusal::MessageRate(LimitScope::Global)));
        assert_eq!(limiter.counters.rate_limited, 2);
    }

    #[test]
    fn auth_failures_block_the_ip_until_the_block_time_passes() {
        let config = RateLimitConfig { auth_failures_per_ip: Some(3), auth_block_secs: Some(600), ..Default::default() };
        let mut limiter = RateLimiter::new(config);
        let t0 = Instant::now();
        assert!(limiter.auth_failed(ip(1), t0).is_ok());
        assert!(limiter.auth_failed(ip(1), t0).is_ok());
        let refusal = limiter.auth_failed(ip(1), t0).expect_err("third failure");
        assert_eq!(refusal.reply().code(), 421);
        assert!(refusal.closes());
        let at_connect = limiter.connection_opened(ip(1), t0 + Duration::from_secs(60)).expect_err("blocked");
        assert_eq!(at_connect, LimitRefusal::Blocked { remaining_secs: 540, at_connect: true });
        assert_eq!(String::from_utf8(at_connect.reply_bytes()).expect("ascii"), "554 5.7.1 Blocked for 540 s after repeated authentication failures\r\n");
        assert!(limiter.connection_opened(ip(2), t0).is_ok(), "only that address");
        assert!(limiter.connection_opened(ip(1), t0 + Duration::from_secs(600)).is_ok(), "block over");
        // The count started over.
        assert!(limiter.auth_failed(ip(1), t0 + Duration::from_secs(601)).is_ok());
    }

    #[test]
    fn success_resets_the_failure_count() {
        let config = RateLimitConfig { auth_failures_per_ip: Some(2), ..Default::default() };
        let mut limiter = RateLimiter::new(config);
        let t0 = Instant::now();
        assert!(limiter.auth_failed(ip(1), t0).is_ok());
        limiter.auth_succeeded(ip(1));
        assert!(limiter.auth_failed(ip(1), t0).is_ok());
    }

    #[test]
    fn no_limits_configured_never_refuses() {
        let mut limiter = RateLimiter::new(RateLimitConfig::default());
        let now = Instant::now();
        for n in 0..1000 {
            assert!(limiter.connection_opened(ip(1), now).is_ok());
            assert!(limiter.recipient(ip(1), "a.org", n % 3, now).is_ok());
            assert!(limiter.auth_failed(ip(1), now).is_ok());
        }
    }
}
