//! Listening sockets: one `SO_REUSEPORT` socket per shard per address, created with socket2 —
//! TCP listeners for routes, UDP sockets for datagram services ([`UdpService`]: RADIUS, DNS).
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
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

/// Opens `shards` sockets on `addr`, index i for shard i; all or none.
pub fn open_listener_group(addr: SocketAddr, shards: usize) -> io::Result<Vec<Socket>> {
    (0..shards).map(|_| open_reuseport_listener(addr)).collect()
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
