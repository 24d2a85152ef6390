//! What a shard does with an accepted TCP connection: route it, apply the route's rules,
//! connect a target (balanced, with failover), send a PROXY header, relay.
//!
//! Owns: per-shard route state ([`RouteState`]: the shard's copy of a route table plus the
//! balancers and counters of each route) and the connection handler ([`serve_connection`]).
//! Does not own: listeners and snapshots (see `runtime`), byte moving (see `relay`), the
//! ClientHello format (see the `shardgate-tls-hello` crate).

pub mod balance;
pub mod proxy_header;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shardgate_tls_hello::{read_client_hello, HelloError, HelloStatus, MAX_HELLO_BYTES};

use crate::config::{Config, Forward, RouteAction, TlsMode};
use crate::tls::relay as tls_relay;
use crate::tls::{handshake, ktls, TlsShared};
use crate::relay::{relay, RelayEnd};
use crate::route::{RouteTable, Selection, ServerName};
use crate::stats::{bump, RouteCounters};
use balance::Balancer;

/// How long a client may take to send its ClientHello when the route depends on SNI.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The two addresses of an accepted connection, as the accept loop learned them (the peer
/// from `accept4`, the local one from the listener unless it listens on a wildcard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionEnds {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
}

/// Shard-wide counters that belong to no route.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Connections with no matching route.
    pub unrouted: Cell<u64>,
    /// Connections whose first bytes were not a usable ClientHello where one was needed.
    pub bad_client_hello: Cell<u64>,
    /// Connections open on this shard (all routes), for draining.
    pub open_connections: Cell<u64>,
}

/// Per-shard runtime of one route.
#[derive(Debug)]
pub struct RouteRuntime {
    /// Counters, shared with older snapshots' connections of the same route name.
    pub counters: Rc<RouteCounters>,
    /// Target choice for `forward` routes.
    pub balancer: Balancer,
    /// This shard's share of the route's `max_connections`.
    pub shard_limit: Option<u64>,
    /// The rustls config for `terminate` routes.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP routes: the per-client request and connection limiters.
    pub http_limits: crate::http::HttpRouteLimits,
}

/// A shard's view of one config generation.
#[derive(Debug)]
pub struct RouteState {
    /// Config generation.
    pub generation: u64,
    /// Whether terminated sessions go to the kernel (kTLS probed available).
    pub ktls: bool,
    /// The shard's own copy of the route table.
    pub table: RouteTable,
    /// Runtime of each route, indexed by [`crate::route::RouteId`].
    pub runtimes: Vec<RouteRuntime>,
    /// `[http]` settings of this generation.
    pub http: crate::config::HttpSettings,
    /// `[dns] doh_domain`: HTTP requests for this host on `/dns-query` or `/resolve` are
    /// answered by the shard's DNS.
    pub doh_domain: Option<String>,
}

impl RouteState {
    /// A state with no routes (before the first snapshot).
    pub fn empty() -> RouteState {
        RouteState { generation: 0, ktls: false, table: RouteTable::empty(), runtimes: Vec::new(), http: Default::default(), doh_domain: None }
    }

    /// Builds the shard-local state for `table`, reusing counters by route name from
    /// `counters` (so numbers survive a reload) and adding new ones there; `terminate`
    /// routes get their rustls config from `config`'s certificates.
    pub fn new(
        generation: u64,
        table: RouteTable,
        shard_count: usize,
        counters: &mut HashMap<String, Rc<RouteCounters>>,
        config: &Config,
        tls: &TlsShared,
    ) -> RouteState {
        let runtimes = table
            .routes()
            .iter()
            .map(|route| {
                let counters = counters.entry(route.name.clone()).or_default().clone();
                let (balancer, shard_limit) = match &route.action {
                    RouteAction::Forward(f) => (
                        Balancer::new(f.balance, f.targets.len()),
                        f.max_connections.map(|m| u64::from(m).div_ceil(shard_count.max(1) as u64)),
                    ),
                    RouteAction::Reject | RouteAction::Redirect(_) | RouteAction::Serve(_) => {
                        (Balancer::new(crate::config::Balance::RoundRobin, 0), None)
                    }
                };
                // HTTP routes offer ALPN `http/1.1` (clients that offer only h2 are refused
                // by rustls, as nginx without http2 does).
                let alpn: &[&[u8]] = if route.is_http() { &[b"http/1.1"] } else { &[] };
                let tls = match route.tls() {
                    TlsMode::Terminate { certificate } => {
                        match crate::tls::server_config(&config.certificates, certificate.as_deref(), alpn, tls) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                tracing::error!(route = %route.name, error = %e, "no TLS config; connections will be closed");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let http_limits = crate::http::HttpRouteLimits::new(&route.limits, shard_count);
                RouteRuntime { counters, balancer, shard_limit, tls, http_limits }
            })
            .collect();
        RouteState { generation, ktls: tls.ktls.is_available(), table, runtimes, http: config.http.clone(), doh_domain: config.dns.as_ref().and_then(|d| d.doh_domain.as_ref()).map(|d| d.trim_end_matches('.').to_ascii_lowercase()) }
    }
}

/// Decrements a counter when dropped, so cancelled connections are accounted too.
struct OpenGuard<'a>(&'a Cell<u64>);

impl<'a> OpenGuard<'a> {
    fn new(cell: &'a Cell<u64>) -> Self {
        bump(cell, 1);
        OpenGuard(cell)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Serves one accepted connection start to finish on this shard.
pub async fn serve_connection(
    state: Rc<RouteState>,
    shard: Rc<ShardCounters>,
    shard_http: Rc<crate::http::ShardHttp>,
    mut client: TcpStream,
    ends: ConnectionEnds,
) {
    let _open = OpenGuard::new(&shard.open_connections);
    let ConnectionEnds { peer, local } = ends;
    // Route, reading the ClientHello only when a candidate route needs the SNI.
    let mut first_bytes: Vec<u8> = Vec::new();
    let mut server_name: Option<Option<String>> = None;
    let route_id = loop {
        let name = match &server_name {
            None => ServerName::NotRead,
            Some(n) => ServerName::Read(n.as_deref()),
        };
        match state.table.select(local.port(), peer.ip(), name) {
            Selection::Route(id) => break id,
            Selection::NoRoute => {
                bump(&shard.unrouted, 1);
                crate::security_event!(INFO, "proxy.no_route", %peer, port = local.port(), "no route matches; closed");
                return;
            }
            Selection::NeedServerName => match read_server_name(&mut client, &mut first_bytes).await {
                Ok(name) => server_name = Some(name),
                Err(why) => {
                    bump(&shard.bad_client_hello, 1);
                    tracing::debug!(%peer, %why, "no usable ClientHello; closed");
                    return;
                }
            },
        }
    };
    let (Some(route), Some(runtime)) = (state.table.route(route_id), state.runtimes.get(route_id)) else {
        return;
    };
    let counters = &runtime.counters;
    bump(&counters.accepted, 1);
    if route.is_http() {
        // Requests are routed (and checked against `security` and `limits`) one by one.
        let stream = match route.tls() {
            TlsMode::Terminate { .. } => {
                let Some(config) = runtime.tls.clone() else { return };
                let already_read = std::mem::take(&mut first_bytes);
                match handshake::accept(&mut client, config, already_read, CLIENT_HELLO_TIMEOUT).await {
                    Ok(established) => {
                        bump(&counters.tls_handshakes, 1);
                        if state.ktls && established.leftover.is_empty() {
                            use std::os::fd::AsRawFd;
                            match ktls::offload(client.as_raw_fd(), established.conn) {
                                Ok(()) => {
                                    bump(&counters.ktls_sessions, 1);
                                    crate::http::stream::ClientStream::Ktls(client)
                                }
                                Err(e) => {
                                    bump(&counters.tls_failures, 1);
                                    tracing::warn!(route = %route.name, %peer, error = %e, "kTLS offload failed; connection closed");
                                    return;
                                }
                            }
                        } else {
                            bump(&counters.userspace_tls_sessions, 1);
                            crate::http::stream::ClientStream::rustls(client, established.conn, established.leftover)
                        }
                    }
                    Err(e) => {
                        bump(&counters.tls_failures, 1);
                        tracing::debug!(route = %route.name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                }
            }
            _ => crate::http::stream::ClientStream::Plain(client),
        };
        let info = crate::http::ConnectionInfo { peer, local };
        crate::http::serve(state.clone(), shard_http, info, stream, first_bytes).await;
        return;
    }
    if !route.security.permits(peer.ip()) {
        bump(&counters.refused, 1);
        crate::security_event!(INFO, "proxy.ip_refused", route = %route.name, %peer, "refused by ip rules");
        return;
    }
    let forward = match &route.action {
        RouteAction::Reject => {
            bump(&counters.rejected, 1);
            return;
        }
        RouteAction::Forward(f) => f,
        // HTTP-only actions never reach here (`is_http` above).
        RouteAction::Redirect(_) | RouteAction::Serve(_) => return,
    };
    if let Some(limit) = runtime.shard_limit {
        if counters.active.get() >= limit {
            bump(&counters.limited, 1);
            tracing::debug!(route = %route.name, %peer, "max_connections reached; closed");
            return;
        }
    }
    let _active = OpenGuard::new(&counters.active);
    // TLS termination: the handshake comes first (the ClientHello bytes the router read are
    // its first input, not something for the target).
    let session = match &forward.tls {
        TlsMode::Terminate { .. } => {
            let Some(config) = runtime.tls.clone() else { return };
            let already_read = std::mem::take(&mut first_bytes);
            match handshake::accept(&mut client, config, already_read, CLIENT_HELLO_TIMEOUT).await {
                Ok(established) => {
                    bump(&counters.tls_handshakes, 1);
                    tracing::debug!(route = %route.name, %peer, version = ?established.conn.protocol_version(), suite = ?established.conn.negotiated_cipher_suite().map(|s| s.suite()), "TLS established");
                    Some(established)
                }
                Err(e) => {
                    bump(&counters.tls_failures, 1);
                    tracing::debug!(route = %route.name, %peer, error = %e, "TLS handshake failed");
                    return;
                }
            }
        }
        _ => None,
    };
    let Some((target_index, mut target)) = connect_target(forward, runtime, local.port()).await else {
        bump(&counters.connect_failed, 1);
        tracing::warn!(route = %route.name, %peer, "no target could be connected");
        return;
    };
    runtime.balancer.opened(target_index);
    // Both sockets are O_NONBLOCK and TCP_NODELAY already (see `net`).
    let mut preamble = match forward.proxy_protocol {
        Some(version) => proxy_header::encode(version, peer, local),
        None => Vec::new(),
    };
    preamble.extend_from_slice(&first_bytes);
    let end = if !preamble.is_empty() && target.write_all(&preamble).await.is_err() {
        RelayEnd::Failed(std::io::Error::other("target closed before the first bytes"))
    } else {
        if !first_bytes.is_empty() {
            bump(&counters.bytes_upstream, first_bytes.len() as u64);
        }
        let up = |n| bump(&counters.bytes_upstream, n);
        let down = |n| bump(&counters.bytes_downstream, n);
        match session {
            None => relay(&client, false, &target, true, forward.idle_timeout, up, down).await,
            Some(established) if state.ktls && established.leftover.is_empty() => {
                use std::os::fd::AsRawFd;
                match ktls::offload(client.as_raw_fd(), established.conn) {
                    Ok(()) => {
                        // The socket now carries plaintext on our side: the zero-copy relay.
                        bump(&counters.ktls_sessions, 1);
                        relay(&client, true, &target, true, forward.idle_timeout, up, down).await
                    }
                    Err(e) => {
                        bump(&counters.tls_failures, 1);
                        tracing::warn!(route = %route.name, %peer, error = %e, "kTLS offload failed; connection closed");
                        RelayEnd::Failed(std::io::Error::other(e.to_string()))
                    }
                }
            }
            Some(established) => {
                bump(&counters.userspace_tls_sessions, 1);
                tls_relay::relay_userspace(
                    &mut client,
                    established.conn,
                    established.leftover,
                    &mut target,
                    forward.idle_timeout,
                    up,
                    down,
                )
                .await
            }
        }
    };
    runtime.balancer.closed(target_index);
    match end {
        RelayEnd::Closed => {}
        RelayEnd::IdleTimeout => bump(&counters.idle_timeouts, 1),
        RelayEnd::Failed(e) => {
            bump(&counters.relay_errors, 1);
            tracing::debug!(route = %route.name, %peer, error = %e, "relay ended by an error");
        }
    }
}

/// Reads from the client until its ClientHello is complete; returns its SNI (`None` when
/// the hello has none or the bytes are not TLS). Bytes read are left in `first_bytes` for the target.
async fn read_server_name(client: &mut TcpStream, first_bytes: &mut Vec<u8>) -> Result<Option<String>, String> {
    let reading = async {
        let mut chunk = [0u8; 4096];
        loop {
            match read_client_hello(first_bytes) {
                Ok(HelloStatus::Complete(info)) => return Ok(info.server_name),
                Ok(HelloStatus::NeedMore) => {}
                // Not TLS at all: route as a connection without a server name (only routes
                // without `domains` can take it), as HAProxy's default_backend would.
                Err(HelloError::NotTls(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
            let room = (MAX_HELLO_BYTES - first_bytes.len()).min(chunk.len());
            match client.read(&mut chunk[..room]).await {
                Ok(0) => return Err("client closed before completing its ClientHello".to_string()),
                Ok(n) => first_bytes.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(CLIENT_HELLO_TIMEOUT).await;
        Err("timed out waiting for the ClientHello".to_string())
    };
    future::or(reading, timeout).await
}

/// Connects the first reachable target in balancing order.
async fn connect_target(forward: &Forward, runtime: &RouteRuntime, local_port: u16) -> Option<(usize, TcpStream)> {
    for (attempt, index) in runtime.balancer.order().into_iter().enumerate() {
        let Some(addr): Option<SocketAddr> = forward.targets.get(index).and_then(|t| t.socket_addr(local_port)) else {
            continue;
        };
        if attempt > 0 {
            bump(&runtime.counters.failovers, 1);
        }
        let connect_started = std::time::Instant::now();
        match crate::net::connect_tcp(addr, forward.connect_timeout).await {
            Ok(stream) => {
                crate::latency::record_since(crate::latency::Operation::TcpConnect, connect_started);
                return Some((index, stream));
            }
            Err(e) => tracing::info!(%addr, error = %e, "target connect failed; trying the next"),
        }
    }
    None
}
