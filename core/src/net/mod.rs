//! Listening sockets: one `SO_REUSEPORT` socket per shard per address, created with socket2.
//!
//! All sockets of one address are created together, in shard order, on the control core and
//! then handed to their shards. Creating them in one place keeps their order in the kernel's
//! reuseport group equal to the shard index (which CPU steering relies on), and lets a reload
//! refuse a new port that cannot be bound before any shard sees the new config.

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
}
