//! Backend connections for HTTP routes: a per-shard pool of idle kept-alive connections and
//! connecting with failover.
//!
//! Owns: [`UpstreamPool`] (idle connections by backend address, most recently used first,
//! expired after `upstream_keepalive_timeout`, at most `upstream_idle_per_target` each, and
//! — when idle for more than two seconds — checked with a non-blocking peek before reuse, so
//! a connection the backend closed while idle is not handed out) and [`acquire`] (balancer order, pooled connection or a new
//! one, failover across targets). A pool lives as long as its shard: reloads keep it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use crate::config::Forward;
use crate::proxy::RouteRuntime;
use crate::stats::bump;

/// Idle connections younger than this are reused without the liveness peek.
const RECENT: Duration = Duration::from_secs(2);

/// A backend connection in use by one exchange.
pub struct Upstream {
    /// The connection.
    pub stream: TcpStream,
    /// Where it goes.
    pub addr: SocketAddr,
    /// Index of its target in the route's `targets` (for the balancer).
    pub target: usize,
    /// It came from the pool (it may have been closed by the backend meanwhile).
    pub reused: bool,
    /// The last response was read completely on a kept-alive connection: it may go back
    /// to the pool.
    pub reusable: bool,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Idle backend connections of one shard, by backend address.
#[derive(Default)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<SocketAddr, VecDeque<Idle>>>,
}

impl UpstreamPool {
    /// The most recently parked live connection to `addr`, if any.
    pub fn take(&self, addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let queue = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(entry) = queue.pop_back() {
            let idle = now.duration_since(entry.since);
            // A connection parked a moment ago is taken as is (a backend closing it that fast
            // is caught by the retry of body-less requests); older ones are peeked first.
            if idle < max_idle && (idle < RECENT || still_open(&entry.stream)) {
                return Some(entry.stream);
            }
        }
        None
    }

    /// Parks a connection whose last response was read completely; beyond `max_per_target`
    /// the oldest is closed.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, max_per_target: usize) {
        if max_per_target == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let queue = idle.entry(addr).or_default();
        queue.push_back(Idle { stream, since: Instant::now() });
        while queue.len() > max_per_target {
            queue.pop_front();
        }
    }

    /// Closes connections idle longer than `max_idle` (called from the shard's periodic tick).
    pub fn expire(&self, max_idle: Duration) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for queue in idle.values_mut() {
            queue.retain(|e| now.duration_since(e.since) < max_idle);
        }
        idle.retain(|_, q| !q.is_empty());
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(VecDeque::len).sum()
    }
}

/// Whether an idle connection is still usable: nothing to read (an idle HTTP backend sends
/// nothing) and no EOF. One non-blocking `recv(MSG_PEEK)`.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: recv into a 1-byte buffer we own, on a socket the stream keeps open.
    let n = unsafe { libc::recv(stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Why no backend connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireError {
    /// Every target refused or was unreachable (502).
    Unreachable,
    /// Every target timed out connecting (504).
    TimedOut,
}

/// A backend connection for one request: targets in balancing order, a pooled connection
/// to the first one that has one, else a new connection, failing over to the next target.
/// `fresh` skips the pool (a retry after a pooled connection failed).
pub async fn acquire(forward: &Forward, runtime: &RouteRuntime, pool: &UpstreamPool, local_port: u16, max_idle: Duration, fresh: bool) -> Result<Upstream, AcquireError> {
    let order = runtime.balancer.order();
    let mut timed_out = 0usize;
    let mut tried = 0usize;
    for (attempt, index) in order.into_iter().enumerate() {
        let Some(addr) = forward.targets.get(index).and_then(|t| t.socket_addr(local_port)) else {
            continue;
        };
        if !fresh {
            if let Some(stream) = pool.take(addr, max_idle) {
                bump(&runtime.counters.upstream_reused, 1);
                return Ok(Upstream { stream, addr, target: index, reused: true, reusable: false });
            }
        }
        if attempt > 0 {
            bump(&runtime.counters.failovers, 1);
        }
        tried += 1;
        let connect_started = std::time::Instant::now();
        match crate::net::connect_tcp(addr, forward.connect_timeout).await {
            Ok(stream) => {
                crate::latency::record_since(crate::latency::Operation::TcpConnect, connect_started);
                return Ok(Upstream { stream, addr, target: index, reused: false, reusable: false });
            }
            Err(e) => {
                if matches!(e, crate::net::ConnectError::TimedOut { .. }) {
                    timed_out += 1;
                }
                tracing::info!(%addr, error = %e, "backend connect failed; trying the next");
            }
        }
    }
    bump(&runtime.counters.connect_failed, 1);
    if tried > 0 && timed_out == tried {
        Err(AcquireError::TimedOut)
    } else {
        Err(AcquireError::Unreachable)
    }
}
