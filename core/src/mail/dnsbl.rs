//! IP reputation at connect time: DNS blocklists (`[email.dnsbl]`), as Postfix's postscreen
//! and `reject_rbl_client` use them.
//!
//! A connecting client `a.b.c.d` is looked up as the A record `d.c.b.a.<zone>` (IPv6: the 32
//! nibbles reversed, RFC 5782) in each zone in order; an answer in `127.0.0.0/8` lists it
//! (`127.255.255.0/24` is the error range lists like Spamhaus use for refused queries and is
//! ignored). NXDOMAIN means not listed. A lookup that fails or times out lets the client in
//! (not cached, so the next connection asks again).
//!
//! The lookups run on the control core's tokio runtime (never on a shard): a shard sends
//! `ToControl::Dnsbl` and its session awaits `ToShard::DnsblChecked` before the greeting,
//! the executor serving other connections meanwhile. Answers are cached for `cache_secs` on
//! the control core (shared by all shards) and on each shard (no cross-core message for a
//! client seen recently).
//!
//! Owns: the query names ([`query_name`]), what an answer means ([`listing_in`]), the
//! [`DnsblService`] and its cache, the typed outcome ([`DnsblVerdict`]) and the shard-side
//! cache ([`VerdictCache`]). Not here: what the session answers (`crate::smtp::serve`:
//! `554 5.7.1` instead of the banner, or an `X-Shardgate-DNSBL` header).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::DnsblSettings;
use crate::mail::delivery::mx::MxResolver;
use crate::runtime::control_async::ControlAsync;
use crate::runtime::doorbell::Mailbox;
use crate::runtime::messages::ToShard;

/// Most clients a cache keeps (beyond it, expired entries go, then all).
const CACHE_ENTRIES: usize = 100_000;

/// A client's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblListing {
    /// The zone that lists it.
    pub zone: String,
    /// The zone's answer (`127.0.0.2`: the list's return code).
    pub answer: Ipv4Addr,
}

/// What the lookups said about a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsblVerdict {
    /// Listed (the first zone, in config order, that lists it).
    Listed(DnsblListing),
    /// No zone lists it.
    NotListed,
    /// No answer (lookup failure or timeout): served as not listed, not cached.
    Unknown,
}

impl DnsblVerdict {
    /// The listing, if listed.
    pub fn listing(&self) -> Option<&DnsblListing> {
        match self {
            DnsblVerdict::Listed(listing) => Some(listing),
            _ => None,
        }
    }
}

/// The name to ask for `ip` in `zone` (`2.0.0.127.zen.example.`).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match crate::config::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

/// The answer that lists a client, among the A records a zone returned.
pub fn listing_in(answers: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    answers.iter().copied().find(|a| a.octets()[0] == 127 && !(a.octets()[1] == 255 && a.octets()[2] == 255))
}

/// Answers kept for `ttl` (shard side: plain, single-threaded).
#[derive(Debug, Default)]
pub struct VerdictCache {
    entries: HashMap<IpAddr, (DnsblVerdict, Instant)>,
}

impl VerdictCache {
    /// The cached verdict for `ip`, if fresh at `now`.
    pub fn get(&mut self, ip: IpAddr, now: Instant) -> Option<DnsblVerdict> {
        match self.entries.get(&ip) {
            Some((verdict, expires)) if *expires > now => Some(verdict.clone()),
            Some(_) => {
                self.entries.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Keeps `verdict` for `ip` until `now + ttl` (an `Unknown` one is not kept).
    pub fn put(&mut self, ip: IpAddr, verdict: DnsblVerdict, now: Instant, ttl: Duration) {
        if verdict == DnsblVerdict::Unknown || ttl.is_zero() {
            return;
        }
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= CACHE_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(ip, (verdict, now + ttl));
    }
}

/// Asks every zone about `ip`, in order; the first listing wins.
pub async fn lookup(resolver: &MxResolver, zones: &[String], ip: IpAddr) -> DnsblVerdict {
    let mut failed = false;
    for zone in zones {
        match resolver.ipv4(&query_name(ip, zone)).await {
            Ok(answers) => {
                if let Some(answer) = listing_in(&answers) {
                    return DnsblVerdict::Listed(DnsblListing { zone: zone.clone(), answer });
                }
            }
            Err(e) => {
                tracing::debug!(%ip, zone, error = %e, "DNSBL lookup failed");
                failed = true;
            }
        }
    }
    if failed {
        DnsblVerdict::Unknown
    } else {
        DnsblVerdict::NotListed
    }
}

/// The blocklist lookups on the control core.
pub struct DnsblService {
    settings: DnsblSettings,
    fallback: Option<std::net::SocketAddr>,
    resolver: Option<MxResolver>,
    cache: Arc<Mutex<VerdictCache>>,
}

impl std::fmt::Debug for DnsblService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsblService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl DnsblService {
    /// The service for `settings`, asking `settings.resolver`, else `fallback` (`[email.auth]
    /// resolver`), else the system's resolvers.
    pub fn start(settings: &DnsblSettings, fallback: Option<std::net::SocketAddr>, runtime: &ControlAsync) -> DnsblService {
        let _entered = runtime.handle().enter();
        let resolver = match MxResolver::new(settings.resolver.or(fallback)) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                tracing::error!(error = %e, "no resolver for [email.dnsbl]: clients are served unchecked");
                None
            }
        };
        DnsblService { settings: settings.clone(), fallback, resolver, cache: Arc::new(Mutex::new(VerdictCache::default())) }
    }

    /// Whether this service was started for `settings` with `fallback`.
    pub fn is_for(&self, settings: &DnsblSettings, fallback: Option<std::net::SocketAddr>) -> bool {
        self.settings == *settings && self.fallback == fallback
    }

    /// Looks `ip` up (cache first) on `runtime`; the verdict goes to `shard` under `ticket`.
    pub fn check(&self, ticket: u64, ip: IpAddr, runtime: &ControlAsync, shard: Mailbox<ToShard>) {
        let now = Instant::now();
        let cached = self.cache.lock().ok().and_then(|mut cache| cache.get(ip, now));
        if let Some(verdict) = cached {
            let _ = shard.send(ToShard::DnsblChecked { ticket, ip, verdict });
            return;
        }
        let Some(resolver) = self.resolver.clone() else {
            let _ = shard.send(ToShard::DnsblChecked { ticket, ip, verdict: DnsblVerdict::Unknown });
            return;
        };
        let zones = self.settings.zones.clone();
        let timeout = Duration::from_millis(u64::from(self.settings.timeout_ms));
        let ttl = Duration::from_secs(u64::from(self.settings.cache_secs));
        let cache = self.cache.clone();
        runtime.spawn(async move {
            let verdict = tokio::time::timeout(timeout, lookup(&resolver, &zones, ip)).await.unwrap_or(DnsblVerdict::Unknown);
            if let Ok(mut cache) = cache.lock() {
                cache.put(ip, verdict.clone(), Instant::now(), ttl);
            }
            let _ = shard.send(ToShard::DnsblChecked { ticket, ip, verdict });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(query_name("127.0.0.2".parse().expect("ip"), "zen.example"), "2.0.0.127.zen.example.");
        assert_eq!(query_name("::ffff:192.0.2.1".parse().expect("ip"), "bl.test."), "1.2.0.192.bl.test.");
        let v6 = query_name("2001:db8::1".parse().expect("ip"), "bl.test");
        assert_eq!(v6, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.");
    }

    #[test]
    fn only_loopback_range_answers_list_and_the_error_range_does_not() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(listing_in(&[ip("127.0.0.2")]), Some(ip("127.0.0.2")));
        assert_eq!(listing_in(&[ip("127.255.255.254")]), None);
        assert_eq!(listing_in(&[ip("192.0.2.1")]), None);
        assert_eq!(listing_in(&[]), None);
    }

    #[test]
    fn the_cache_keeps_answers_for_their_time_but_not_failures() {
        let mut cache = VerdictCache::default();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.9".parse().expect("ip");
        cache.put(ip, DnsblVerdict::Unknown, now, Duration::from_secs(60));
        assert_eq!(cache.get(ip, now), None);
        cache.put(ip, DnsblVerdict::NotListed, now, Duration::from_secs(60));
        assert_eq!(cache.get(ip, now + Duration::from_secs(59)), Some(DnsblVerdict::NotListed));
        assert_eq!(cache.get(ip, now + Duration::from_secs(61)), None);
    }
}
