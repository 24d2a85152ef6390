//! Relaying an established client ⇄ target pair: both directions, idle timeout, teardown.
//!
//! [`splice`] moves one direction with zero-copy `splice(2)`; [`relay`] runs both at once
//! and ends when both have seen EOF (each half-close is forwarded as it comes), when either
//! fails (reset, broken pipe — then both sockets are closed), or when no byte moved either way
//! for the idle timeout.
//!
//! An abort is passed on as an abort, as HAProxy does: when the relay fails because the
//! client reset its connection, the target's socket is closed with `SO_LINGER` 0, so the
//! target sees a reset too (not an orderly EOF) and this side keeps no `TIME_WAIT` entry for
//! the connection — under churn of aborted clients those would pile up by the ten thousand
//! and slow every new `connect` to a target. A failing target is not passed on that way: the
//! client socket is closed normally, so bytes already relayed to it are still delivered.

pub mod splice;

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpStream;

use splice::{splice_direction, KtlsEnds, RelayClock};

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending half; every byte was delivered.
    Closed,
    /// No bytes moved for the idle timeout.
    IdleTimeout,
    /// A socket failed (for example the peer reset the connection).
    Failed(io::Error),
}

/// Bytes moved by a relay, by direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayBytes {
    /// Client → target.
    pub upstream: u64,
    /// Target → client.
    pub downstream: u64,
}

/// Relays `client` ⇄ `target` until both finish, one fails, or `idle` passes with no traffic.
/// `client_ktls`: the client socket carries a TLS session in the kernel (its `close_notify`
/// is its EOF, and EOF from the target reaches it as `close_notify`). `target_fresh`: the
/// target was just connected and has had no reason to send yet (its direction starts by
/// waiting for it; see [`splice_direction`]).
/// `on_upstream`/`on_downstream` are told of every batch delivered (for live byte counters).
pub async fn relay(
    client: &TcpStream,
    client_ktls: bool,
    target: &TcpStream,
    target_fresh: bool,
    idle: Duration,
    on_upstream: impl FnMut(u64),
    on_downstream: impl FnMut(u64),
) -> RelayEnd {
    // Every socket a shard relays on is O_NONBLOCK from its creation (see `net`); a blocking
    // one would let a `splice` stall the whole shard.
    debug_assert!(is_nonblocking(client.as_raw_fd()) && is_nonblocking(target.as_raw_fd()), "relay on a blocking socket");
    let clock = RelayClock::new();
    let both = async {
        let up = splice_direction(client, target, KtlsEnds { source: client_ktls, sink: false }, false, &clock, on_upstream);
        let down = splice_direction(target, client, KtlsEnds { source: false, sink: client_ktls }, target_fresh, &clock, on_downstream);
        // Either direction failing ends the relay at once: `try_zip` drops the other.
        match future::try_zip(up, down).await {
            Ok(_) => RelayEnd::Closed,
            Err(e) => {
                if was_reset(client.as_raw_fd()) {
                    abort_on_close(target.as_raw_fd());
                }
                RelayEnd::Failed(e)
            }
        }
    };
    let watchdog = async {
        loop {
            let deadline = clock.last_activity() + idle;
            let now = std::time::Instant::now();
            if now >= deadline {
                return RelayEnd::IdleTimeout;
            }
            glommio::timer::sleep(deadline - now).await;
        }
    };
    future::or(both, watchdog).await
}

/// Whether `fd` is `O_NONBLOCK` (one `fcntl`; for debug assertions).
fn is_nonblocking(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFL on a descriptor the caller keeps open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// The connection on `fd` was reset by its peer (the kernel moved it to `TCP_CLOSE`; one
/// `getsockopt`, only on a failed relay).
fn was_reset(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: all-zero bytes are a valid `tcp_info` (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO into `info` with its size; the kernel writes at most `len` bytes.
    let ok = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len) } == 0;
    ok && info.tcpi_state == TCP_CLOSE
}

/// `TCP_CLOSE` of the kernel's `enum tcp_state` (include/net/tcp_states.h; not in libc).
const TCP_CLOSE: u8 = 7;

/// Makes the close of `fd` an abort: `SO_LINGER` on with 0 seconds, so the kernel sends a
/// reset and drops unsent bytes instead of an orderly FIN.
fn abort_on_close(fd: std::os::fd::RawFd) {
    // SAFETY: the caller holds the socket open for the duration of this call.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
}
