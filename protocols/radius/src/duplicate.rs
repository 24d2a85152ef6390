//! The duplicate-request cache (RFC 5080 §2.2.2): a retransmitted request gets the very same
//! reply octets, without re-running policy or re-counting accounting.
//!
//! This module owns the cache only: bounded in entries, entries expire a fixed time after
//! they were stored, time comes in as `Instant` arguments. A request is a duplicate when client
//! address and port, the local port kind (auth/acct), Identifier and Request Authenticator all
//! match. It is per shard and never shared. It does not decide what to cache;
//! [`crate::server::RadiusServer`] does.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::server::PortKind;

/// What identifies a request for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// NAS address and source port.
    pub client: SocketAddr,
    /// Which of our ports it arrived on.
    pub port: PortKind,
    /// Identifier octet.
    pub identifier: u8,
    /// Request Authenticator.
    pub authenticator: [u8; 16],
}

#[derive(Debug)]
struct CachedReply {
    reply: Vec<u8>,
    stored_at: Instant,
}

/// Bounded, time-expired map from [`RequestKey`] to reply octets.
#[derive(Debug)]
pub struct DuplicateCache {
    entries: HashMap<RequestKey, CachedReply>,
    /// Keys in insertion (= time) order, for expiry and eviction of the oldest.
    order: VecDeque<(RequestKey, Instant)>,
    capacity: usize,
    lifetime: Duration,
}

impl DuplicateCache {
    /// Default number of cached replies per shard.
    pub const DEFAULT_CAPACITY: usize = 16_384;
    /// Default lifetime: covers a NAS's usual 3 retransmissions 5 seconds apart, with margin.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);

    /// A cache holding at most `capacity` replies (at least 1), each for `lifetime`.
    pub fn new(capacity: usize, lifetime: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            lifetime,
        }
    }

    /// The cached reply for `key`, if stored within the lifetime.
    pub fn get(&mut self, key: &RequestKey, now: Instant) -> Option<&[u8]> {
        self.expire(now);
        self.entries.get(key).map(|cached| cached.reply.as_slice())
    }

    /// Stores the reply to `key`. If the key is already cached the first reply is kept (it is
    /// the one the NAS may already have). The oldest entry is evicted when full.
    pub fn insert(&mut self, key: RequestKey, reply: &[u8], now: Instant) {
        self.expire(now);
        if let Entry::Vacant(slot) = self.entries.entry(key) {
            slot.insert(CachedReply { reply: reply.to_vec(), stored_at: now });
            self.order.push_back((key, now));
        }
        while self.entries.len() > self.capacity {
            self.pop_oldest();
        }
    }

    /// Drops every entry older than the lifetime.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(_, stored_at)) = self.order.front() {
            if now.saturating_duration_since(stored_at) < self.lifetime {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, stored_at)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|cached| cached.stored_at == stored_at) {
                self.entries.remove(&key);
            }
        }
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Default for DuplicateCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY, Self::DEFAULT_LIFETIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(identifier: u8) -> RequestKey {
        RequestKey {
            client: "192.0.2.1:1645".parse().unwrap(),
            port: PortKind::Auth,
            identifier,
            authenticator: [identifier; 16],
        }
    }

    #[test]
    fn replies_are_found_until_they_expire() {
        let start = Instant::now();
        let mut cache = DuplicateCache::new(10, Duration::from_secs(5));
        cache.insert(key(1), b"reply-1", start);
        assert_eq!(cache.get(&key(1), start + Duration::from_secs(4)), Some(&b"reply-1"[..]));
        assert_eq!(cache.get(&key(2), start), None);
        assert_eq!(cache.get(&key(1), start + Duration::from_secs(5)), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn every_key_field_matters() {
        let now = Instant::now();
        let mut cache = DuplicateCache::default();
        cache.insert(key(1), b"r", now);
        let mut other_port = key(1);
        other_port.port = PortKind::Acct;
        let mut other_client = key(1);
        other_client.client = "192.0.2.1:1646".parse().unwrap();
        let mut other_authenticator = key(1);
        other_authenticator.authenticator[15] ^= 1;
        for probe in [other_port, other_client, other_authenticator] {
            assert_eq!(cache.get(&probe, now), None);
        }
    }

    #[test]
    fn first_reply_wins_and_capacity_evicts_oldest() {
        let now = Instant::now();
        let mut cache = DuplicateCache::new(2, Duration::from_secs(30));
        cache.insert(key(1), b"first", now);
        cache.insert(key(1), b"second", now);
        assert_eq!(cache.get(&key(1), now), Some(&b"first"[..]));
        cache.insert(key(2), b"2", now + Duration::from_secs(1));
        cache.insert(key(3), b"3", now + Duration::from_secs(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(1), now + Duration::from_secs(2)), None);
        assert_eq!(cache.get(&key(3), now + Duration::from_secs(2)), Some(&b"3"[..]));
    }
}
