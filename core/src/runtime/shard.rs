//! A shard: one glommio executor pinned to one CPU, serving its own listeners.
//!
//! Owns, shard-locally and without locks: the current [`RouteState`] (swapped whole when a
//! snapshot arrives — connections already open keep the `Rc` of the state they started with,
//! so a reload never touches them), its member socket of every reuseport group (one accept
//! task each), its member socket of every UDP service group (one serving task each; RADIUS:
//! [`crate::radius::serve`]; DNS: [`crate::dns::udp`]), its DNS state and DNS TCP listeners
//! ([`crate::dns::ShardDns`]: the zones in force, swapped by `ToShard::DnsCatalog`), and its
//! counters. Every accepted connection runs in a `conn` tracing span carrying its
//! correlation id ([`crate::correlation`]). It listens to the control core through its
//! [`Inbox`](super::doorbell::Inbox) and reports stats every [`STATS_INTERVAL`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use shardgate_radius::server::PortKind;

use super::doorbell::Inbox;
use super::messages::{ShardSnapshot, ToControl, ToShard};
use crate::net::UdpService;
use crate::proxy::{serve_connection, RouteState, ShardCounters};
use crate::radius::serve::{serve_socket as serve_radius_socket, ShardRadius};
use crate::stats::{RouteCounters, ShardStats};

/// How often a shard sends its counters to the control core.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Memory glommio registers per shard for its own I/O buffers (kept small: the relay moves
/// bytes with splice, not through glommio buffers, and `ulimit -l` may be a few MiB).
const SHARD_IO_MEMORY: usize = 1 << 20;

/// What a shard is started with.
pub struct ShardSpec {
    /// Shard index (its position in every reuseport group).
    pub index: usize,
    /// Shards in total.
    pub count: usize,
    /// The CPU it is pinned to.
    pub cpu: usize,
    /// How long the executor polls before parking (see `RuntimeSettings::spin_before_park`).
    pub spin_before_park: Duration,
    /// Its mailbox from the control core.
    pub inbox: Inbox<ToShard>,
    /// The control core's channel.
    pub to_control: Sender<ToControl>,
    /// Session-ticket keys and kTLS support, shared by all shards.
    pub tls: std::sync::Arc<crate::tls::TlsShared>,
}

/// A generation's number, config and routes, as a shard keeps them.
type InForce = (u64, std::sync::Arc<crate::config::Config>, std::sync::Arc<crate::route::RouteTable>);

struct Shard {
    index: usize,
    count: usize,
    cpu: usize,
    state: RefCell<Rc<RouteState>>,
    counters: RefCell<HashMap<String, Rc<RouteCounters>>>,
    shard_counters: Rc<ShardCounters>,
    /// HTTP state that outlives config generations (the backend connection pool).
    http: Rc<crate::http::ShardHttp>,
    listeners: RefCell<HashMap<SocketAddr, glommio::Task<()>>>,
    udp_services: RefCell<HashMap<SocketAddr, glommio::Task<()>>>,
    radius: Rc<ShardRadius>,
    dns: Rc<crate::dns::ShardDns>,
    /// SMTP listeners, sessions waiting for the queue writer, per-IP counts, counters.
    smtp: Rc<crate::smtp::ShardSmtp>,
    /// Ticket keys and kTLS support (new ticket keys replace it, `ToShard::TicketKeys`).
    tls: RefCell<std::sync::Arc<crate::tls::TlsShared>>,
    to_control: Sender<ToControl>,
    /// The generation, config and routes in force, to rebuild the route state when only the
    /// certificates change.
    current: RefCell<Option<InForce>>,
}

/// Starts a shard's thread; it runs until told to stop.
pub fn spawn_shard(spec: ShardSpec) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    let name = format!("shard-{}", spec.index);
    let spin = spec.spin_before_park;
    let builder = LocalExecutorBuilder::new(Placement::Fixed(spec.cpu));
    let builder = if spin.is_zero() { builder } else { builder.spin_before_park(spin) };
    builder
        .name(&name)
        .io_memory(SHARD_IO_MEMORY)
        .spawn(move || async move { run_shard(spec).await })
        .map_err(|e| std::io::Error::other(format!("cannot start {name}: {e}")))
}

async fn run_shard(spec: ShardSpec) {
    let ShardSpec { index, count, cpu, inbox, to_control, tls, .. } = spec;
    let bell = match inbox.bell() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(shard = index, error = %e, "cannot open the shard doorbell");
            let _ = to_control.send(ToControl::ShardStopped(index));
            return;
        }
    };
    let empty = RouteState::empty();
    let dns = Rc::new(crate::dns::ShardDns::new(index));
    let shard = Rc::new(Shard {
        index,
        count,
        cpu,
        state: RefCell::new(Rc::new(empty)),
        counters: RefCell::new(HashMap::new()),
        shard_counters: Rc::new(ShardCounters::default()),
        http: Rc::new(crate::http::ShardHttp::new(dns.clone())),
        listeners: RefCell::new(HashMap::new()),
        udp_services: RefCell::new(HashMap::new()),
        radius: Rc::new(ShardRadius::new(index, to_control.clone())),
        dns,
        smtp: Rc::new(crate::smtp::ShardSmtp::new(index).with_control(to_control.clone())),
        tls: RefCell::new(tls),
        to_control,
        current: RefCell::new(None),
    });
    let reporter = glommio::spawn_local({
        let shard = shard.clone();
        async move {
            loop {
                glommio::timer::sleep(STATS_INTERVAL).await;
                shard.radius.expire(Instant::now());
                let upstream_idle = shard.state.borrow().http.upstream_keepalive_timeout;
                shard.http.pool.expire(upstream_idle);
                shard.report_stats();
            }
        }
    });
    while let Some(message) = inbox.recv(&bell).await {
        match message {
            ToShard::Apply(snapshot) => shard.apply(snapshot),
            ToShard::DnsCatalog(catalog) => shard.dns.set_catalog(catalog),
            ToShard::Certificates(store) => shard.swap_certificates(store),
            ToShard::TicketKeys(keys) => shard.swap_ticket_keys(keys),
            ToShard::AcmeHttp01(tokens) => crate::acme::http01::install_on_this_shard(tokens),
            ToShard::MailQueued(answers) => {
                for (ticket, result) in answers {
                    shard.smtp.queued(ticket, result);
                }
            }
            ToShard::MailAuthenticated { ticket, report } => shard.smtp.authenticated(ticket, *report),
            ToShard::DnsblChecked { ticket, ip, verdict } => shard.smtp.dnsbl_checked(ticket, ip, verdict),
            ToShard::Barrier(ack) => {
                let _ = ack.send(shard.index);
            }
            ToShard::Stop { deadline } => {
                shard.drain(deadline, &inbox).await;
                break;
            }
        }
    }
    drop(reporter);
    shard.report_stats();
    let _ = shard.to_control.send(ToControl::ShardStopped(shard.index));
}

impl Shard {
    fn apply(self: &Rc<Self>, snapshot: ShardSnapshot) {
        let ShardSnapshot {
            generation,
            config,
            routes,
            open,
            close,
            udp_open,
            udp_close,
            radius,
            dns_catalog,
            dns_tcp_open,
            dns_tcp_close,
            smtp_open,
            smtp_close,
            mail_queue,
        } = snapshot;
        self.smtp.configure(&config, mail_queue, &self.tls.borrow());
        for addr in &smtp_close {
            self.smtp.close(addr);
        }
        for (addr, kind, socket) in smtp_open {
            self.smtp.open(addr, kind, socket);
        }
        self.radius.set_policy(radius);
        self.dns.configure(config.dns.as_ref(), dns_catalog);
        for addr in &dns_tcp_close {
            self.dns.close_tcp(addr);
        }
        for (addr, socket) in dns_tcp_open {
            self.dns.open_tcp(addr, socket);
        }
        let table = (*routes).clone();
        let state = RouteState::new(generation, table, self.count, &mut self.counters.borrow_mut(), &config, &self.tls.borrow());
        *self.state.borrow_mut() = Rc::new(state);
        *self.current.borrow_mut() = Some((generation, config.clone(), routes.clone()));
        let mut listeners = self.listeners.borrow_mut();
        for addr in close {
            // Dropping the accept task drops (closes) its listener.
            listeners.remove(&addr);
        }
        for (addr, socket) in open {
            // SAFETY: the socket is a bound, listening TCP socket whose ownership moves here.
            let listener_fd = socket.into_raw_fd();
            // SAFETY: as above; the listener owns the descriptor from here on.
            let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };
            let task = glommio::spawn_local(accept_loop(self.clone(), listener, listener_fd, addr));
            listeners.insert(addr, task);
        }
        let mut udp_services = self.udp_services.borrow_mut();
        for addr in udp_close {
            // Dropping the serving task drops (closes) its socket.
            udp_services.remove(&addr);
        }
        for (addr, service, socket) in udp_open {
            // SAFETY: the socket is a bound UDP socket whose ownership moves here (glommio's own
            // `From<socket2::Socket>` is for an older socket2, hence the raw descriptor).
            let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
            let task = match service {
                UdpService::RadiusAuth => glommio::spawn_local(serve_radius_socket(self.radius.clone(), socket, addr, PortKind::Auth)),
                UdpService::RadiusAcct => glommio::spawn_local(serve_radius_socket(self.radius.clone(), socket, addr, PortKind::Acct)),
                UdpService::Dns => glommio::spawn_local(crate::dns::udp::serve_socket(self.dns.clone(), socket, addr)),
            };
            udp_services.insert(addr, task);
        }
        tracing::debug!(shard = self.index, generation, listeners = listeners.len(), udp = udp_services.len(), "snapshot applied");
    }

    /// New handshakes use `store` (same routes, same generation); open connections keep the
    /// route state, and so the certificates, they started with.
    fn swap_certificates(&self, store: std::sync::Arc<crate::tls::store::CertificateStore>) {
        let Some((generation, config, routes)) = self.current.borrow().clone() else { return };
        let mut swapped = (*config).clone();
        swapped.certificates = store;
        let swapped = std::sync::Arc::new(swapped);
        self.rebuild_routes(generation, swapped, routes);
        tracing::debug!(shard = self.index, generation, "certificate store swapped");
    }

    /// New handshakes seal tickets with `keys` (the previous key still opens older ones).
    fn swap_ticket_keys(&self, keys: std::sync::Arc<crate::tls::tickets::TicketKeys>) {
        let tls = std::sync::Arc::new(self.tls.borrow().with_keys(keys));
        *self.tls.borrow_mut() = tls;
        let Some((generation, config, routes)) = self.current.borrow().clone() else { return };
        self.rebuild_routes(generation, config, routes);
        tracing::debug!(shard = self.index, generation, "TLS ticket keys swapped");
    }

    /// The route state for the same generation rebuilt with `config` and the TLS state in force.
    fn rebuild_routes(
        &self,
        generation: u64,
        config: std::sync::Arc<crate::config::Config>,
        routes: std::sync::Arc<crate::route::RouteTable>,
    ) {
        let state = RouteState::new(
            generation,
            (*routes).clone(),
            self.count,
            &mut self.counters.borrow_mut(),
            &config,
            &self.tls.borrow(),
        );
        *self.state.borrow_mut() = Rc::new(state);
        // STARTTLS and implicit TLS use the same certificates and ticket keys.
        self.smtp.configure(&config, None, &self.tls.borrow());
        *self.current.borrow_mut() = Some((generation, config, routes));
    }

    async fn drain(&self, deadline: Instant, inbox: &Inbox<ToShard>) {
        self.http.draining.set(true);
        let closed = self.listeners.borrow_mut().drain().count()
            + self.udp_services.borrow_mut().drain().count()
            + self.dns.close_all_tcp()
            + self.smtp.close_all();
        tracing::debug!(shard = self.index, closed, "stopped accepting; draining");
        // SMTP sessions: 421 4.3.2 at their next command boundary (idle ones now).
        self.smtp.drain_sessions();
        let open = || self.shard_counters.open_connections.get() + self.smtp.open_sessions();
        while open() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            // Sessions finishing a message wait for the queue writer's (and the inbound
            // checks') answers, which arrive in the inbox the main loop no longer reads.
            while let Some(message) = inbox.try_recv() {
                match message {
                    ToShard::MailQueued(answers) => {
                        for (ticket, result) in answers {
                            self.smtp.queued(ticket, result);
                        }
                    }
                    ToShard::MailAuthenticated { ticket, report } => self.smtp.authenticated(ticket, *report),
                    ToShard::Barrier(ack) => {
                        let _ = ack.send(self.index);
                    }
                    // Config, certificates, catalogs: nothing new starts while draining.
                    _ => {}
                }
            }
        }
        let left = open();
        if left > 0 {
            tracing::warn!(shard = self.index, left, "drain deadline passed; closing open connections");
        }
        // Messages still being received never got a 250: their spool files go now, so the
        // queue journal can be closed cleanly (no orphan for the next start to look for).
        let removed = self.smtp.remove_unfinished_spools();
        if removed > 0 {
            tracing::info!(shard = self.index, removed, "spool files of unfinished messages removed");
        }
    }

    fn report_stats(&self) {
        let mut stats = ShardStats {
            shard: self.index,
            cpu: self.cpu,
            unrouted: self.shard_counters.unrouted.get(),
            bad_client_hello: self.shard_counters.bad_client_hello.get(),
            routes: Default::default(),
            radius: self.radius.counters(),
            dns: self.dns.counters(),
            latency_interval: crate::latency::take_interval(),
            latency: Default::default(),
            smtp: self.smtp.counters(),
        };
        for (name, counters) in self.counters.borrow().iter() {
            stats.routes.insert(name.clone(), counters.snapshot());
        }
        let _ = self.to_control.send(ToControl::Stats(stats));
    }
}

/// Accepts on `listener` (whose descriptor is `listener_fd`, valid as long as it lives).
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, listener_fd: std::os::fd::RawFd, addr: SocketAddr) {
    loop {
        // While connections are queued, take them with one `accept4` each; only an empty
        // queue waits in glommio's accept (which costs three `fcntl`s around its own try).
        let accepted = match accept_queued(listener_fd) {
            Some(result) => {
                // A long queue must not starve the connections already accepted.
                glommio::yield_if_needed().await;
                result
            }
            None => listener.accept().await.map_err(std::io::Error::from).and_then(|stream| {
                // glommio's accept leaves the socket blocking; the relay needs O_NONBLOCK
                // (see `net`), which `accept_queued` gets from `accept4` itself.
                use std::os::fd::AsRawFd as _;
                crate::relay::splice::set_nonblocking(stream.as_raw_fd())?;
                let peer = stream.peer_addr()?;
                Ok((stream, peer))
            }),
        };
        match accepted {
            Ok((stream, peer)) => {
                use tracing::Instrument as _;
                // The local address is the listener's unless it listens on a wildcard.
                let local = if addr.ip().is_unspecified() { stream.local_addr() } else { Ok(addr) };
                let Ok(local) = local else { continue };
                let ends = crate::proxy::ConnectionEnds { peer, local };
                let state = shard.state.borrow().clone();
                let span = tracing::info_span!("conn", id = %crate::correlation::next_on_shard(shard.index));
                glommio::spawn_local(
                    serve_connection(state, shard.shard_counters.clone(), shard.http.clone(), stream, ends).instrument(span),
                )
                .detach();
            }
            // The client was gone before we could look at it (reset in the queue, or before
            // `getpeername`): nothing to back off from.
            Err(e) if is_transient_accept_error(&e) || e.raw_os_error() == Some(libc::ENOTCONN) => {
                tracing::debug!(shard = shard.index, %addr, error = %e, "a queued connection was gone before it was served");
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.index, %addr, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Errors `accept4` reports for one queued connection rather than for the listener (the
/// connection was reset while queued, or a network error was pending on it); see accept(2).
fn is_transient_accept_error(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::ENETDOWN | libc::ENOPROTOOPT | libc::EHOSTDOWN | libc::ENONET | libc::EHOSTUNREACH | libc::EOPNOTSUPP | libc::ENETUNREACH)
    )
}

/// Takes one queued connection off a shard's listener (which is `O_NONBLOCK`) with one
/// `accept4` that also returns the peer's address: `None` when the queue is empty (or the
/// call was interrupted).
fn accept_queued(listener_fd: std::os::fd::RawFd) -> Option<std::io::Result<(glommio::net::TcpStream, SocketAddr)>> {
    use std::os::fd::FromRawFd;
    // The new socket is O_NONBLOCK (the relay splices on it) and inherits TCP_NODELAY from the
    // listener (see `net`).
    let (fd, address) = loop {
        // SAFETY: accept4 on the live listener, writing the peer's address into the storage
        // and length socket2 passes.
        let accepted = unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                let fd = libc::accept4(listener_fd, storage.cast(), len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
                if fd < 0 { Err(std::io::Error::last_os_error()) } else { Ok(fd) }
            })
        };
        match accepted {
            Ok(accepted) => break accepted,
            // A connection that died in the queue (reset before we took it) or a pending
            // network error: accept(2) says to retry at once, like EAGAIN, not to back off.
            Err(error) if is_transient_accept_error(&error) => continue,
            Err(error) => {
                return match error.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => None,
                    _ => Some(Err(error)),
                };
            }
        }
    };
    // SAFETY: a fresh connected socket whose ownership moves to the stream.
    let stream = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
    match address.as_socket() {
        Some(peer) => Some(Ok((stream, peer))),
        None => Some(Err(std::io::Error::other("accepted a connection that is not TCP/IP"))),
    }
}
