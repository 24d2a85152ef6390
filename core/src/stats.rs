//! Traffic counters: kept per shard without atomics, merged on the control core.
//!
//! A shard counts into plain `Cell`s ([`RouteCounters`], one per route name, surviving
//! reloads) and sends a [`ShardStats`] snapshot to the control core about once a second;
//! the control core merges the latest snapshot of every shard into [`MergedStats`], which
//! it writes to `<data_dir>/stats.json` for `shardgate stats` (and later the admin API).
//! RADIUS counters are the `shardgate-radius` crate's [`RadiusCounters`], counted by each
//! shard's RADIUS server and merged the same way; so are DNS counters ([`crate::dns::DnsCounters`]).
//! Latency histograms ride along in each snapshot (see [`crate::latency`]).

use std::cell::Cell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shardgate_radius::server::RadiusCounters;

/// Counters of one route (or of a whole shard), as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections refused by `security` IP rules.
    pub refused: u64,
    /// Connections closed by a `reject` action.
    pub rejected: u64,
    /// Connections refused because the route was at `max_connections`.
    pub limited: u64,
    /// Connections for which no target could be connected.
    pub connect_failed: u64,
    /// Target connects that failed and were retried on the next target.
    pub failovers: u64,
    /// Relays ended by the idle timeout.
    pub idle_timeouts: u64,
    /// Relays ended by a socket error (reset, broken pipe).
    pub relay_errors: u64,
    /// TLS handshakes completed (terminate routes).
    #[serde(default)]
    pub tls_handshakes: u64,
    /// TLS handshakes (or kernel offloads) that failed.
    #[serde(default)]
    pub tls_failures: u64,
    /// Terminated sessions carried by kernel TLS.
    #[serde(default)]
    pub ktls_sessions: u64,
    /// Terminated sessions carried by userspace rustls.
    #[serde(default)]
    pub userspace_tls_sessions: u64,
    /// HTTP requests received (HTTP routes).
    #[serde(default)]
    pub http_requests: u64,
    /// HTTP responses with a 1xx or 2xx status.
    #[serde(default)]
    pub http_2xx: u64,
    /// HTTP responses with a 3xx status.
    #[serde(default)]
    pub http_3xx: u64,
    /// HTTP responses with a 4xx status (ours or the backend's).
    #[serde(default)]
    pub http_4xx: u64,
    /// HTTP responses with a 5xx status (ours or the backend's).
    #[serde(default)]
    pub http_5xx: u64,
    /// HTTP requests refused by `limits` (429).
    #[serde(default)]
    pub http_rate_limited: u64,
    /// HTTP requests sent on a pooled (kept-alive) backend connection.
    #[serde(default)]
    pub upstream_reused: u64,
    /// Bytes relayed client → target.
    pub bytes_upstream: u64,
    /// Bytes relayed target → client.
    pub bytes_downstream: u64,
}

impl Counters {
    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Counters) {
        self.accepted += other.accepted;
        self.active += other.active;
        self.refused += other.refused;
        self.rejected += other.rejected;
        self.limited += other.limited;
        self.connect_failed += other.connect_failed;
        self.failovers += other.failovers;
        self.idle_timeouts += other.idle_timeouts;
        self.relay_errors += other.relay_errors;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_failures += other.tls_failures;
        self.ktls_sessions += other.ktls_sessions;
        self.userspace_tls_sessions += other.userspace_tls_sessions;
        self.http_requests += other.http_requests;
        self.http_2xx += other.http_2xx;
        self.http_3xx += other.http_3xx;
        self.http_4xx += other.http_4xx;
        self.http_5xx += other.http_5xx;
        self.http_rate_limited += other.http_rate_limited;
        self.upstream_reused += other.upstream_reused;
        self.bytes_upstream += other.bytes_upstream;
        self.bytes_downstream += other.bytes_downstream;
    }
}

/// Live counters of one route on one shard (no atomics: only this shard touches them).
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// See [`Counters::accepted`].
    pub accepted: Cell<u64>,
    /// See [`Counters::active`].
    pub active: Cell<u64>,
    /// See [`Counters::refused`].
    pub refused: Cell<u64>,
    /// See [`Counters::rejected`].
    pub rejected: Cell<u64>,
    /// See [`Counters::limited`].
    pub limited: Cell<u64>,
    /// See [`Counters::connect_failed`].
    pub connect_failed: Cell<u64>,
    /// See [`Counters::failovers`].
    pub failovers: Cell<u64>,
    /// See [`Counters::idle_timeouts`].
    pub idle_timeouts: Cell<u64>,
    /// See [`Counters::relay_errors`].
    pub relay_errors: Cell<u64>,
    /// See [`Counters::tls_handshakes`].
    pub tls_handshakes: Cell<u64>,
    /// See [`Counters::tls_failures`].
    pub tls_failures: Cell<u64>,
    /// See [`Counters::ktls_sessions`].
    pub ktls_sessions: Cell<u64>,
    /// See [`Counters::userspace_tls_sessions`].
    pub userspace_tls_sessions: Cell<u64>,
    /// See [`Counters::http_requests`].
    pub http_requests: Cell<u64>,
    /// See [`Counters::http_2xx`].
    pub http_2xx: Cell<u64>,
    /// See [`Counters::http_3xx`].
    pub http_3xx: Cell<u64>,
    /// See [`Counters::http_4xx`].
    pub http_4xx: Cell<u64>,
    /// See [`Counters::http_5xx`].
    pub http_5xx: Cell<u64>,
    /// See [`Counters::http_rate_limited`].
    pub http_rate_limited: Cell<u64>,
    /// See [`Counters::upstream_reused`].
    pub upstream_reused: Cell<u64>,
    /// See [`Counters::bytes_upstream`].
    pub bytes_upstream: Cell<u64>,
    /// See [`Counters::bytes_downstream`].
    pub bytes_downstream: Cell<u64>,
}

/// Adds `n` to a counter cell.
pub fn bump(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

impl RouteCounters {
    /// The current values.
    pub fn snapshot(&self) -> Counters {
        Counters {
            accepted: self.accepted.get(),
            active: self.active.get(),
            refused: self.refused.get(),
            rejected: self.rejected.get(),
            limited: self.limited.get(),
            connect_failed: self.connect_failed.get(),
            failovers: self.failovers.get(),
            idle_timeouts: self.idle_timeouts.get(),
            relay_errors: self.relay_errors.get(),
            tls_handshakes: self.tls_handshakes.get(),
            tls_failures: self.tls_failures.get(),
            ktls_sessions: self.ktls_sessions.get(),
            userspace_tls_sessions: self.userspace_tls_sessions.get(),
            http_requests: self.http_requests.get(),
            http_2xx: self.http_2xx.get(),
            http_3xx: self.http_3xx.get(),
            http_4xx: self.http_4xx.get(),
            http_5xx: self.http_5xx.get(),
            http_rate_limited: self.http_rate_limited.get(),
            upstream_reused: self.upstream_reused.get(),
            bytes_upstream: self.bytes_upstream.get(),
            bytes_downstream: self.bytes_downstream.get(),
        }
    }
}

/// What one shard reports to the control core.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// The shard's index.
    pub shard: usize,
    /// The CPU it runs on.
    pub cpu: usize,
    /// Connections accepted on a port with no matching route (closed at once).
    pub unrouted: u64,
    /// Connections whose first bytes were not a usable ClientHello where one was needed.
    pub bad_client_hello: u64,
    /// Per-route counters, by route name.
    pub routes: BTreeMap<String, Counters>,
    /// This shard's RADIUS counters (all zero without `[radius]`).
    #[serde(default)]
    pub radius: RadiusCounters,
    /// This shard's DNS counters (all zero without `[dns]`).
    #[serde(default)]
    pub dns: crate::dns::DnsCounters,
    /// Latency histograms of the interval since the shard's previous report (shipped as
    /// values through the in-process channel; the control core folds them into its
    /// [`crate::latency::LatencyBook`]).
    #[serde(skip)]
    pub latency_interval: crate::latency::IntervalHistograms,
    /// This shard's latency percentiles since start, per operation (filled by the control core).
    #[serde(default)]
    pub latency: BTreeMap<String, crate::latency::LatencySummary>,
}

/// All shards' latest snapshots and their sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedStats {
    /// Config generation in force (1 at start, +1 per accepted reload).
    pub config_generation: u64,
    /// Sums over all shards and routes.
    pub total: Counters,
    /// Sums over shards, per route.
    pub routes: BTreeMap<String, Counters>,
    /// RADIUS counters summed over shards.
    #[serde(default)]
    pub radius: RadiusCounters,
    /// DNS counters (queries by outcome, RRL, TCP) summed over shards.
    #[serde(default)]
    pub dns: crate::dns::DnsCounters,
    /// Each shard's own numbers.
    pub shards: Vec<ShardStats>,
    /// ACME auto certificates: names, expiry, last error (filled by the control core).
    #[serde(default)]
    pub certificates: Vec<crate::acme::manager::CertificateStatus>,
    /// Latency percentiles per operation, all shards, since start (filled by the control core).
    #[serde(default)]
    pub latency: BTreeMap<String, crate::latency::LatencySummary>,
    /// Latency percentiles per operation, all shards, over the last few seconds
    /// ([`crate::latency::RECENT_WINDOW`] reports).
    #[serde(default)]
    pub latency_recent: BTreeMap<String, crate::latency::LatencySummary>,
    /// Seconds since the epoch when this was merged.
    #[serde(default)]
    pub unix_time: u64,
}

impl MergedStats {
    /// Merges the latest snapshot of every shard.
    pub fn merge(config_generation: u64, shards: &[ShardStats]) -> MergedStats {
        let mut merged = MergedStats { config_generation, shards: shards.to_vec(), ..Default::default() };
        merged.unix_time =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        for shard in shards {
            merged.radius.merge(&shard.radius);
            merged.dns.merge(&shard.dns);
            for (name, counters) in &shard.routes {
                merged.routes.entry(name.clone()).or_default().add(counters);
                merged.total.add(counters);
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_per_route_and_total() {
        let live = RouteCounters::default();
        bump(&live.accepted, 3);
        bump(&live.bytes_upstream, 100);
        let mut a = ShardStats { shard: 0, ..Default::default() };
        a.routes.insert("web".into(), live.snapshot());
        let mut b = ShardStats { shard: 1, ..Default::default() };
        b.routes.insert("web".into(), Counters { accepted: 2, bytes_upstream: 5, ..Default::default() });
        b.routes.insert("ssh".into(), Counters { accepted: 1, ..Default::default() });
        let merged = MergedStats::merge(4, &[a, b]);
        assert_eq!(merged.config_generation, 4);
        assert_eq!(merged.routes["web"].accepted, 5);
        assert_eq!(merged.routes["web"].bytes_upstream, 105);
        assert_eq!(merged.total.accepted, 6);
        assert_eq!(merged.shards.len(), 2);
    }

    #[test]
    fn merge_sums_radius_counters() {
        let a = ShardStats { radius: RadiusCounters { received: 3, access_accepts: 2, unknown_client: 1, ..Default::default() }, ..Default::default() };
        let b = ShardStats { shard: 1, radius: RadiusCounters { received: 4, access_accepts: 4, ..Default::default() }, ..Default::default() };
        let merged = MergedStats::merge(1, &[a, b]);
        assert_eq!(merged.radius.received, 7);
        assert_eq!(merged.radius.access_accepts, 6);
        assert_eq!(merged.radius.unknown_client, 1);
        let json = serde_json::to_value(&merged).expect("json");
        assert_eq!(json["radius"]["access_accepts"], 6);
    }
}
