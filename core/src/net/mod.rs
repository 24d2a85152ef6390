//! Listening sockets: one `SO_REUSEPORT` socket per shard per address, created with socket2 —
//! TCP listeners for routes, UDP sockets for datagram services ([`UdpService`]: RADIUS, DNS) —
//! and the shards' outgoing TCP connections ([`connect_tcp`]).
//!
//! Every TCP socket a shard relays on is `O_NONBLOCK` and `TCP_NODELAY` from its creation, so
//! no per-connection `ioctl`/`setsockopt` is needed later: TCP listeners are non-blocking and
//! `TCP_NODELAY` (an accepted socket inherits `TCP_NODELAY` from its listener on Linux; the
//! accept loop asks for `SOCK_NONBLOCK`), and [`connect_tcp`] creates its socket that way.
//!
//! All sockets of one address are created together, in shard order, on the control core and
//! then handed to their shards. Creating them in one place keeps their order in the kernel's
//! reuseport group equal to the shard index (which CPU steering relies on), and lets a reload
//! refuse a new port that cannot be bound before any shard sees the new config.

pub mod udp_batch;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog per socket (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Opens one listening TCP socket on `addr` that shares the port with its siblings.
pub fn open_reuseport_listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `::` means IPv6 only; list 0.0.0.0 as well to take IPv4.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Inherited by every accepted connection: replies and relayed bytes go out at once.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// Opens `shards` sockets on `addr`, index i for shard i; all or none.
pub fn open_listener_group(addr: SocketAddr, shards: usize) -> io::Result<Vec<Socket>> {
    (0..shards).map(|_| open_reuseport_listener(addr)).collect()
}

/// Why [`connect_tcp`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No answer within the connect timeout.
    #[error("connect to {addr} timed out after {timeout:?}")]
    TimedOut {
        /// The target.
        addr: SocketAddr,
        /// The timeout that passed.
        timeout: std::time::Duration,
    },
    /// Refused, unreachable, or the socket could not be made.
    #[error("connect to {addr}: {source}")]
    Failed {
        /// The target.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
}

/// Connects a TCP socket to `addr` within `timeout`; the stream is `O_NONBLOCK` and
/// `TCP_NODELAY`. The socket is made non-blocking and `connect(2)` is called on the shard
/// thread: towards a local or near target the handshake is often done when it returns, which
/// one `poll(2)` with no wait tells; otherwise the wait is an io_uring `POLLOUT` (vendored
/// glommio's `writable_shared`) raced against a glommio timer, and `SO_ERROR` says how it
/// ended. This replaces glommio's `connect_timeout` (an io_uring connect plus a linked
/// timeout), which cost two more completions per connection and a blocking socket that
/// needed an `ioctl` before splicing.
pub async fn connect_tcp(addr: SocketAddr, timeout: std::time::Duration) -> Result<glommio::net::TcpStream, ConnectError> {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    let failed = |source: io::Error| ConnectError::Failed { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP)).map_err(failed)?;
    socket.set_tcp_nodelay(true).map_err(failed)?;
    let in_progress = match socket.connect(&addr.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(failed(e)),
    };
    let fd = socket.as_raw_fd();
    let now = if in_progress { poll_now(fd, libc::POLLOUT) } else { libc::POLLOUT };
    if now == 0 {
        // SAFETY: `fd` is the socket just made; ownership moves to the stream, which closes it.
        let stream = unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
        let waited = futures_lite::future::or(async { Some(stream.writable_shared().await.map_err(io::Error::from)) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match waited {
            None => return Err(ConnectError::TimedOut { addr, timeout }),
            Some(Err(e)) => return Err(failed(e)),
            Some(Ok(())) => {}
        }
        return match socket_error(stream.as_raw_fd()) {
            None => Ok(stream),
            Some(e) => Err(failed(e)),
        };
    }
    // Connected, or failed at once (refused): only then is `SO_ERROR` worth a syscall.
    if now & (libc::POLLERR | libc::POLLHUP) != 0 {
        if let Some(e) = socket_error(fd) {
            return Err(failed(e));
        }
    }
    // SAFETY: as above.
    Ok(unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// `poll(2)` without waiting: which of `events` (and error/hangup) `fd` has now, 0 for none.
fn poll_now(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::c_short {
    let mut entry = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut entry, 1, 0) };
    if n == 1 { entry.revents } else { 0 }
}

/// The pending error of a socket (`SO_ERROR`), which also clears it.
fn socket_error(fd: std::os::fd::RawFd) -> Option<io::Error> {
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR into a live int of the size passed.
    let ok = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut error as *mut libc::c_int).cast(), &mut len) } == 0;
    if !ok {
        return Some(io::Error::last_os_error());
    }
    (error != 0).then(|| io::Error::from_raw_os_error(error))
}

/// What a shard serves on a UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UdpService {
    /// RADIUS authentication (Access-Request, Status-Server).
    RadiusAuth,
    /// RADIUS accounting (Accounting-Request, Status-Server).
    RadiusAcct,
    /// Authoritative DNS (batched with recvmmsg/sendmmsg; see `dns::udp`).
    Dns,
}

/// Receive buffer asked for on each UDP socket, so a burst of datagrams waits in the kernel
/// rather than being dropped while the shard is busy (the kernel caps it at `rmem_max`).
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Opens one nonblocking UDP socket bound to `addr` that shares the port with its siblings;
/// the kernel spreads datagrams over the group by source address and port.
pub fn open_reuseport_udp(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer still works, it only drops earlier under a flood.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Opens `shards` UDP sockets on `addr`, index i for shard i; all or none.
pub fn open_udp_group(addr: SocketAddr, shards: usize) -> io::Result<Vec<Socket>> {
    (0..shards).map(|_| open_reuseport_udp(addr)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_a_foreign_bind_is_refused() {
        let first = open_reuseport_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("addr").as_socket().expect("inet");
        drop(first);
        let group = open_listener_group(addr, 3).expect("group binds");
        assert_eq!(group.len(), 3);
        // A plain socket without SO_REUSEPORT cannot join.
        let plain = std::net::TcpListener::bind(addr);
        assert!(plain.is_err());
    }

    fn flag(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt of an int option into a live int of the size passed.
        let rc = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(rc, 0, "getsockopt");
        value
    }

    fn nonblocking(fd: std::os::fd::RawFd) -> bool {
        // SAFETY: F_GETFL on an open descriptor.
        unsafe { libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK != 0 }
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_and_connect_tcp_makes_relay_ready_sockets() {
        use std::os::fd::AsRawFd;
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async move {
                let listener = open_reuseport_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
                let addr = listener.local_addr().expect("addr").as_socket().expect("inet");
                let timeout = std::time::Duration::from_secs(2);
                let stream = connect_tcp(addr, timeout).await.expect("connect");
                assert!(nonblocking(stream.as_raw_fd()), "connect_tcp gives an O_NONBLOCK socket");
                assert_eq!(flag(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
                let (accepted, _) = listener.accept().expect("accept");
                assert_eq!(flag(accepted.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY), 1, "TCP_NODELAY is inherited");

                // A port nobody listens on: refused, named as such.
                drop(listener);
                drop(accepted);
                match connect_tcp(addr, timeout).await {
                    Err(ConnectError::Failed { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ECONNREFUSED)),
                    other => panic!("expected a refusal, got {other:?}"),
                }
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn connect_tcp_gives_up_after_its_timeout_when_no_answer_comes() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async move {
                // A listener that never accepts, with its accept queue full: the kernel drops
                // further SYNs, so a connect gets no answer at all.
                let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
                listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
                listener.listen(0).expect("listen");
                let addr = listener.local_addr().expect("addr").as_socket().expect("inet");
                let fillers: Vec<_> =
                    (0..3).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()).collect();
                assert!(!fillers.is_empty(), "the accept queue could not be filled");
                let started = std::time::Instant::now();
                match connect_tcp(addr, std::time::Duration::from_millis(300)).await {
                    Err(ConnectError::TimedOut { .. }) => {}
                    other => panic!("expected a timeout, got {other:?}"),
                }
                assert!(started.elapsed() >= std::time::Duration::from_millis(300));
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn a_udp_group_shares_one_port_and_every_member_receives() {
        let first = open_reuseport_udp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("addr").as_socket().expect("inet");
        drop(first);
        let group = open_udp_group(addr, 2).expect("group binds");
        assert_eq!(group.len(), 2);
        assert!(std::net::UdpSocket::bind(addr).is_err(), "a socket without SO_REUSEPORT joined");
        // Datagrams from many source ports reach the group (spread over its members).
        let mut received = 0;
        for _ in 0..16 {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
            client.send_to(b"ping", addr).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
        for socket in &group {
            while socket.recv(&mut buf).is_ok() {
                received += 1;
            }
        }
        assert_eq!(received, 16);
    }
}
