//! Authoritative DNS on the appliance: the I/O around the sans-I/O core in `shardgate-dns`.
//!
//! - [`udp`] (shards): each shard's member socket of every DNS UDP reuseport group, served in
//!   batches — `recvmmsg` up to [`crate::net::udp_batch::BATCH`] queries, answer each into a reused buffer, apply
//!   response rate limiting, `sendmmsg` the answers — with readiness from glommio's io_uring
//!   (the module doc says how).
//! - [`tcp`] (shards): DNS over TCP on the shard's member of every DNS TCP reuseport group:
//!   length-framed messages, several per connection answered in order, an idle timeout and
//!   a per-shard connection cap.
//! - [`dynamic`] (control core): the records added and removed at run time
//!   (`shardgate dns add|remove`), persisted crash-safely in the storage layer (`dns/dynamic.json`),
//!   re-applied onto the configured zones at start and on every reload; it owns the current
//!   [`Catalog`] that every shard receives (in a `ShardSnapshot`, or alone in
//!   `ToShard::DnsCatalog` after a dynamic change).
//! - [`ShardDns`] (shards): one shard's DNS state — the catalog in force (an `Arc` swapped
//!   whole, used from the next query on), the answer settings, its rate limiter and its
//!   counters ([`DnsCounters`], merged on the control core into `shardgate stats`).
//!
//! Not here: parsing, answering, RRL accounting and zone building (the `shardgate-dns`
//! crate), opening sockets (`net`, on the control core), config validation (`config`), the
//! admin channel the CLI talks through (`runtime::admin`).

pub mod dynamic;
pub mod tcp;
pub mod udp;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shardgate_dns::config::RrlConfig;
use shardgate_dns::{
    answer, truncate_for_slip, AnswerConfig, AnswerStats, Catalog, DnsConfig, ResponseInfo, ResponseRateLimiter,
    RrlDecision, RrlStats, Transport,
};

/// DNS counters of one shard, or summed over shards (`shardgate stats` → `dns`): the answer
/// path's counters by outcome (flattened: `answers`, `nxdomain`, `refused`, `dropped`, ...),
/// the rate limiter's under `rrl`, and the socket side's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsCounters {
    /// Responses by outcome (answers, referrals, nxdomain, nodata, refused, formerr, notimp,
    /// badvers), truncated ones, and messages dropped without a response.
    #[serde(flatten)]
    pub outcomes: AnswerStats,
    /// Response rate limiting: sent, slipped (sent truncated), dropped, table evictions.
    pub rrl: RrlStats,
    /// Queries received over UDP.
    pub udp_queries: u64,
    /// Queries received over TCP.
    pub tcp_queries: u64,
    /// UDP responses the kernel refused to send.
    pub udp_send_errors: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP connections refused because the shard was at its connection cap.
    pub tcp_refused: u64,
    /// TCP connections closed by the idle timeout.
    pub tcp_idle_timeouts: u64,
    /// Queries received over DNS-over-HTTPS (RFC 8484 and JSON).
    pub doh_queries: u64,
}

impl DnsCounters {
    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &DnsCounters) {
        self.outcomes.merge(&other.outcomes);
        self.rrl.merge(&other.rrl);
        self.udp_queries += other.udp_queries;
        self.tcp_queries += other.tcp_queries;
        self.udp_send_errors += other.udp_send_errors;
        self.tcp_connections += other.tcp_connections;
        self.tcp_refused += other.tcp_refused;
        self.tcp_idle_timeouts += other.tcp_idle_timeouts;
        self.doh_queries += other.doh_queries;
    }
}

/// Counters of the socket side (the answer path counts into [`AnswerStats`]).
#[derive(Debug, Default)]
struct IoCounters {
    udp_queries: Cell<u64>,
    tcp_queries: Cell<u64>,
    udp_send_errors: Cell<u64>,
    tcp_connections: Cell<u64>,
    tcp_refused: Cell<u64>,
    tcp_idle_timeouts: Cell<u64>,
    doh_queries: Cell<u64>,
}

/// One shard's DNS state. Every borrow of a `RefCell` here is for a synchronous call and never
/// held across an `.await`.
pub struct ShardDns {
    shard: usize,
    /// The zones in force; `None` without `[dns]` (datagrams still arriving before the sockets
    /// close are dropped).
    catalog: RefCell<Option<Arc<Catalog>>>,
    answer_config: Cell<AnswerConfig>,
    rrl: RefCell<ResponseRateLimiter>,
    rrl_config: RefCell<RrlConfig>,
    /// RRL counters of limiters replaced by a reload that changed `[dns.rrl]`.
    rrl_retired: Cell<RrlStats>,
    stats: RefCell<AnswerStats>,
    io: IoCounters,
    /// Open TCP connections on this shard.
    tcp_open: Cell<usize>,
    /// The accept task of each DNS TCP listener (dropping it closes the listener).
    tcp_listeners: RefCell<HashMap<SocketAddr, glommio::Task<()>>>,
}

impl ShardDns {
    /// A shard's DNS state with no zones yet.
    pub fn new(shard: usize) -> ShardDns {
        let rrl_config = RrlConfig::default();
        ShardDns {
            shard,
            catalog: RefCell::new(None),
            answer_config: Cell::new(AnswerConfig::default()),
            rrl: RefCell::new(ResponseRateLimiter::new(&rrl_config, Instant::now())),
            rrl_config: RefCell::new(rrl_config),
            rrl_retired: Cell::new(RrlStats::default()),
            stats: RefCell::new(AnswerStats::default()),
            io: IoCounters::default(),
            tcp_open: Cell::new(0),
            tcp_listeners: RefCell::new(HashMap::new()),
        }
    }

    /// Applies a config generation: its `[dns]` settings (the rate limiter keeps its state
    /// unless `[dns.rrl]` changed) and its catalog (`None`: no `[dns]`).
    pub fn configure(&self, config: Option<&DnsConfig>, catalog: Option<Arc<Catalog>>) {
        if let Some(config) = config {
            self.answer_config.set(config.answer_config());
            if *self.rrl_config.borrow() != config.rrl {
                let old = self.rrl.replace(ResponseRateLimiter::new(&config.rrl, Instant::now()));
                let mut retired = self.rrl_retired.get();
                retired.merge(&old.stats());
                self.rrl_retired.set(retired);
                *self.rrl_config.borrow_mut() = config.rrl.clone();
            }
        }
        *self.catalog.borrow_mut() = catalog;
    }

    /// Uses `catalog` from the next query on (a dynamic record change).
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        *self.catalog.borrow_mut() = Some(catalog);
    }

    /// This shard's counters so far.
    pub fn counters(&self) -> DnsCounters {
        let mut rrl = self.rrl_retired.get();
        rrl.merge(&self.rrl.borrow().stats());
        DnsCounters {
            outcomes: *self.stats.borrow(),
            rrl,
            udp_queries: self.io.udp_queries.get(),
            tcp_queries: self.io.tcp_queries.get(),
            udp_send_errors: self.io.udp_send_errors.get(),
            tcp_connections: self.io.tcp_connections.get(),
            tcp_refused: self.io.tcp_refused.get(),
            tcp_idle_timeouts: self.io.tcp_idle_timeouts.get(),
            doh_queries: self.io.doh_queries.get(),
        }
    }

    /// Starts accepting DNS over TCP on `socket` (this shard's member of the group on `addr`).
    pub fn open_tcp(self: &Rc<Self>, addr: SocketAddr, socket: socket2::Socket) {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the socket is a bound, listening TCP socket whose ownership moves here.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
        let task = glommio::spawn_local(tcp::accept_loop(self.clone(), listener, addr));
        self.tcp_listeners.borrow_mut().insert(addr, task);
    }

    /// Stops accepting DNS over TCP on `addr` (connections already open finish).
    pub fn close_tcp(&self, addr: &SocketAddr) {
        self.tcp_listeners.borrow_mut().remove(addr);
    }

    /// Stops every DNS TCP listener (graceful stop); returns how many were closed.
    pub fn close_all_tcp(&self) -> usize {
        self.tcp_listeners.borrow_mut().drain().count()
    }

    /// Answers one query into `out` (UDP: then rate limited for `client`). Returns whether
    /// `out` is to be sent.
    fn respond(&self, query: &[u8], transport: Transport, client: IpAddr, now: Instant, out: &mut Vec<u8>) -> bool {
        let catalog = self.catalog.borrow();
        let Some(catalog) = catalog.as_ref() else {
            out.clear();
            return false;
        };
        let info: Option<ResponseInfo> = answer(catalog, query, transport, &self.answer_config.get(), out);
        crate::latency::record_since(crate::latency::Operation::DnsQuery, now);
        self.stats.borrow_mut().record(info);
        if info.is_none() {
            return false;
        }
        if transport == Transport::Tcp {
            // TCP needs a completed handshake, so it cannot be spoofed: no rate limiting.
            return true;
        }
        match self.rrl.borrow_mut().check(client, now) {
            RrlDecision::Send => true,
            RrlDecision::Slip => {
                truncate_for_slip(out);
                true
            }
            RrlDecision::Drop => {
                // Rate limited: a flood must not turn into a log flood (all counted in `rrl`).
                crate::security_event!(INFO, "dns.rrl_drop", shard = self.shard, %client, "DNS answer dropped by response rate limiting");
                false
            }
        }
    }

    /// Answers one DNS-over-HTTPS query (a wire message) into `out`, like a TCP query (the
    /// client completed a handshake, so no rate limiting). `false`: no answer (no zones, or a
    /// message that gets none).
    pub fn respond_doh(&self, query: &[u8], client: IpAddr, out: &mut Vec<u8>) -> bool {
        crate::stats::bump(&self.io.doh_queries, 1);
        self.respond(query, Transport::Tcp, client, Instant::now(), out)
    }

    /// Whether `[dns]` is configured (zones to answer from).
    pub fn is_serving(&self) -> bool {
        self.catalog.borrow().is_some()
    }

    /// Counts a datagram the kernel cut short (larger than our receive buffer): dropped.
    fn count_oversized(&self) {
        self.stats.borrow_mut().record(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (DnsConfig, Arc<Catalog>) {
        let text = r#"
            udp = ["127.0.0.1:5300"]
            [rrl]
            responses_per_second = 2
            slip = 2
            [[zones]]
            origin = "example.net."
            soa = { mname = "ns1", rname = "hostmaster", serial = 7 }
            records = [
              { name = "@", type = "NS", value = "ns1" },
              { name = "ns1", type = "A", value = "192.0.2.53" },
            ]
        "#;
        let config: DnsConfig = toml::from_str(text).expect("dns config");
        let catalog = Catalog::load(&config).expect("zones");
        (config, Arc::new(catalog))
    }

    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn answers_rate_limits_udp_only_and_counts() {
        let dns = ShardDns::new(0);
        let client: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut out = Vec::new();
        let now = Instant::now();
        assert!(!dns.respond(&query("ns1.example.net"), Transport::Udp, client, now, &mut out), "no catalog yet");
        let (config, catalog) = catalog();
        dns.configure(Some(&config), Some(catalog));
        let mut sent = 0;
        let mut slipped = 0;
        for _ in 0..10 {
            if dns.respond(&query("ns1.example.net"), Transport::Udp, client, now, &mut out) {
                sent += 1;
                if out[2] & 0x02 != 0 {
                    slipped += 1;
                }
            }
        }
        // 2 within the limit; of the 8 limited, every 2nd slips.
        assert_eq!(sent, 2 + 4, "sent");
        assert_eq!(slipped, 4);
        assert!(dns.respond(&query("ns1.example.net"), Transport::Tcp, client, now, &mut out), "TCP is not limited");
        assert!(!dns.respond(b"\x00\x01", Transport::Udp, client, now, &mut out), "garbage is dropped");
        let counters = dns.counters();
        assert_eq!(counters.outcomes.answers, 11);
        assert_eq!(counters.outcomes.dropped, 1);
        assert_eq!(counters.rrl.sent, 2);
        assert_eq!(counters.rrl.slipped, 4);
        assert_eq!(counters.rrl.dropped, 4);
        // A reload that changes [dns.rrl] keeps the counts of the replaced limiter.
        let mut relaxed = config.clone();
        relaxed.rrl.enabled = false;
        let current = dns.catalog.borrow().clone();
        dns.configure(Some(&relaxed), current);
        assert_eq!(dns.counters().rrl.dropped, 4);
        let mut merged = DnsCounters::default();
        merged.merge(&dns.counters());
        merged.merge(&dns.counters());
        assert_eq!(merged.outcomes.answers, 22);
        // The JSON `shardgate stats` shows: outcomes flat, RRL nested.
        let json = serde_json::to_value(merged).expect("json");
        assert_eq!(json["answers"], 22);
        assert_eq!(json["rrl"]["dropped"], 8);
    }
}
