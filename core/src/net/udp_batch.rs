//! Batched UDP serving: `recvmmsg(2)`/`sendmmsg(2)` on a shard's socket, for every UDP
//! protocol (DNS, RADIUS).
//!
//! # Why this design
//! One `recvfrom`/`sendto` pair per datagram costs two syscalls (or two io_uring submissions
//! and two copies through glommio's buffers), which caps a core well below what the protocol
//! cores can do. So a serving task drains its socket with non-blocking `recvmmsg` of up to
//! [`BATCH`] datagrams into buffers it owns, lets the protocol answer each one into a reused
//! reply buffer (no allocation in the steady state), and sends every reply of the batch with
//! one `sendmmsg`, to the source address exactly as the kernel gave it.
//!
//! glommio 0.9 has no public fd-readiness API (see `relay/splice.rs` for the same problem on
//! TCP), so readiness comes from glommio's own io_uring operations: when `recvmmsg` says
//! `EAGAIN`, the task awaits `UdpSocket::peek_from` of one byte — an io_uring
//! `recvmsg(MSG_PEEK)` that completes when a datagram is queued and consumes nothing — and
//! then drains again. Under load the queue is never empty, so no wait is submitted; the task
//! calls `glommio::yield_if_needed` after every batch so a flood cannot starve the shard's
//! other tasks. If the send buffer is full (`EAGAIN` from `sendmmsg`), the rest of the batch
//! goes one by one through glommio's `send_to`, which waits for room: back-pressure slows the
//! socket down instead of dropping replies. Other send errors drop that reply and are counted.
//!
//! `unsafe` is confined to the two syscall wrappers, the zero-initialisation of their C
//! structs, and [`source_ip`]/[`source_addr`], which read a kernel-filled socket address
//! after checking its family and length.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use glommio::net::UdpSocket;

/// Datagrams received (and replies sent) per syscall.
pub const BATCH: usize = 64;

/// Largest datagram received whole (RADIUS's maximum packet; DNS queries with EDNS options
/// fit easily); a longer one is cut by the kernel (`MSG_TRUNC`) and flagged.
pub const MAX_DATAGRAM: usize = 4096;

/// One received datagram, as a protocol sees it.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Its bytes (at most [`MAX_DATAGRAM`]).
    pub bytes: &'a [u8],
    /// Who sent it (`None` for an address family we do not serve).
    pub source: Option<SocketAddr>,
    /// Whether the kernel cut it at [`MAX_DATAGRAM`].
    pub truncated: bool,
    /// When its batch was received (one clock read per batch).
    pub received: std::time::Instant,
}

/// Buffers and kernel message headers for one batch, owned by one serving task.
pub struct MessageBatch {
    datagrams: Box<[u8]>,
    /// One response per received datagram, reused (capacity kept) across batches.
    responses: Vec<Vec<u8>>,
    /// Sender addresses as the kernel wrote them; answers go back to exactly these.
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    /// Which slots have an answer to send, in order.
    to_send: Vec<usize>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Default for MessageBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageBatch {
    /// Buffers for [`BATCH`] datagrams.
    pub fn new() -> MessageBatch {
        // SAFETY: all-zero is a valid value for these plain C structs (null pointers, zero
        // lengths); the pointers are filled in before every syscall.
        let (name, iovec, header) = unsafe {
            (
                std::mem::zeroed::<libc::sockaddr_storage>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::mmsghdr>(),
            )
        };
        MessageBatch {
            datagrams: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            responses: (0..BATCH).map(|_| Vec::with_capacity(MAX_DATAGRAM)).collect(),
            names: vec![name; BATCH],
            name_lens: vec![0; BATCH],
            lens: vec![0; BATCH],
            truncated: vec![false; BATCH],
            to_send: Vec::with_capacity(BATCH),
            iovecs: vec![iovec; BATCH],
            headers: vec![header; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `Ok(0)` when none is queued.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            let slot = &mut self.datagrams[i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM];
            let full = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            point(&mut self.headers[i], &mut self.iovecs[i], slot, &mut self.names[i], full);
        }
        // SAFETY: every header points at a live iovec, buffer and address slot of `self`
        // (sizes as given), none of which moves during the call; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recvmmsg(fd, self.headers.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(error),
            };
        }
        let n = n as usize;
        for i in 0..n {
            let header = &self.headers[i];
            self.lens[i] = (header.msg_len as usize).min(MAX_DATAGRAM);
            self.truncated[i] = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.name_lens[i] = header.msg_hdr.msg_namelen;
        }
        Ok(n)
    }

    /// The `i`-th received datagram.
    #[cfg(test)]
    fn query(&self, i: usize) -> &[u8] {
        &self.datagrams[i * MAX_DATAGRAM..i * MAX_DATAGRAM + self.lens[i]]
    }

    /// Sends the answers listed in `to_send` from `start` on with as few `sendmmsg` calls as
    /// the kernel allows. Returns how many were handed over before `EAGAIN` (the rest are
    /// still due) and counts other failures in `errors` (those answers are skipped).
    fn send(&mut self, fd: RawFd, start: usize, errors: &mut u64) -> usize {
        let mut next = start;
        while next < self.to_send.len() {
            let count = self.to_send.len() - next;
            for (k, &slot) in self.to_send[next..].iter().enumerate() {
                let (response, name_len) = (&mut self.responses[slot], self.name_lens[slot]);
                point(&mut self.headers[k], &mut self.iovecs[k], response, &mut self.names[slot], name_len);
            }
            // SAFETY: the first `count` headers point at live iovecs, response buffers and
            // address slots of `self` that do not move during the call; MSG_DONTWAIT.
            let sent = unsafe { libc::sendmmsg(fd, self.headers.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
            if sent < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    return next - start;
                }
                // The first message of the rest failed (e.g. an unroutable source): skip it.
                *errors += 1;
                next += 1;
            } else {
                next += sent as usize;
            }
        }
        next - start
    }
}

/// Points one kernel message header at one buffer (whole) and one address slot (`name_len`
/// bytes of it in use), with no control data.
fn point(
    header: &mut libc::mmsghdr,
    iovec: &mut libc::iovec,
    buffer: &mut [u8],
    name: &mut libc::sockaddr_storage,
    name_len: libc::socklen_t,
) {
    *iovec = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
    header.msg_hdr.msg_namelen = name_len;
    header.msg_hdr.msg_iov = iovec;
    header.msg_hdr.msg_iovlen = 1;
    header.msg_hdr.msg_control = std::ptr::null_mut();
    header.msg_hdr.msg_controllen = 0;
    header.msg_hdr.msg_flags = 0;
    header.msg_len = 0;
}

/// The IP address in a kernel-filled socket address (`None` for another family).
pub fn source_ip(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
    let len = len as usize;
    match i32::from(name.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let v4 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The full socket address in a kernel-filled socket address (for the slow send path).
pub fn source_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let ip = source_ip(name, len)?;
    // `sin_port` and `sin6_port` sit at the same offset, right after the family.
    // SAFETY: `source_ip` checked the family and the length of the structure.
    let port = unsafe { (*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port };
    Some(SocketAddr::new(ip, u16::from_be(port)))
}

/// Serves `socket` in batches until the task is dropped. `handle` gets each datagram and a
/// cleared reply buffer and returns whether to send the reply; `send_errors` is told how many
/// replies of each batch could not be sent. `label` names the socket in logs.
pub async fn serve_batches(
    socket: &UdpSocket,
    label: &str,
    mut handle: impl FnMut(Datagram<'_>, &mut Vec<u8>) -> bool,
    mut send_errors: impl FnMut(u64),
) {
    let fd = socket.as_raw_fd();
    let mut batch = MessageBatch::new();
    let mut probe = [0u8; 1];
    loop {
        let n = match batch.receive(fd) {
            Ok(0) => {
                // Nothing queued: wait in io_uring until a datagram is (MSG_PEEK consumes nothing).
                if let Err(e) = socket.peek_from(&mut probe).await {
                    tracing::debug!(socket = label, error = %e, "UDP socket wait failed");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(socket = label, error = %e, "UDP receive failed");
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        batch.to_send.clear();
        let received = std::time::Instant::now();
        for i in 0..n {
            let datagram = Datagram {
                bytes: &batch.datagrams[i * MAX_DATAGRAM..i * MAX_DATAGRAM + batch.lens[i]],
                source: source_addr(&batch.names[i], batch.name_lens[i]),
                truncated: batch.truncated[i],
                received,
            };
            let reply = &mut batch.responses[i];
            reply.clear();
            if handle(datagram, reply) && !reply.is_empty() {
                batch.to_send.push(i);
            }
        }
        let mut errors = 0;
        let mut done = batch.send(fd, 0, &mut errors);
        // Send buffer full: the rest one by one, each waiting for room in io_uring.
        while done < batch.to_send.len() {
            let slot = batch.to_send[done];
            done += 1;
            let Some(peer) = source_addr(&batch.names[slot], batch.name_lens[slot]) else { continue };
            if socket.send_to(&batch.responses[slot], peer).await.is_err() {
                errors += 1;
            }
            done += batch.send(fd, done, &mut errors);
        }
        if errors > 0 {
            send_errors(errors);
        }
        glommio::yield_if_needed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_receives_many_datagrams_and_answers_go_back_to_each_sender() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        server.set_nonblocking(true).expect("nonblocking");
        let addr = server.local_addr().expect("addr");
        let clients: Vec<std::net::UdpSocket> =
            (0..5).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("client")).collect();
        for (i, client) in clients.iter().enumerate() {
            client.send_to(format!("query {i}").as_bytes(), addr).expect("send");
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = MessageBatch::new();
        let n = batch.receive(server.as_raw_fd()).expect("recvmmsg");
        assert_eq!(n, 5);
        assert_eq!(batch.receive(server.as_raw_fd()).expect("empty"), 0);
        batch.to_send.clear();
        for i in 0..n {
            let ip = source_ip(&batch.names[i], batch.name_lens[i]).expect("ipv4 source");
            assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
            let mut reply = b"answer to ".to_vec();
            reply.extend_from_slice(batch.query(i));
            batch.responses[i] = reply;
            batch.to_send.push(i);
        }
        let mut errors = 0;
        assert_eq!(batch.send(server.as_raw_fd(), 0, &mut errors), 5);
        assert_eq!(errors, 0);
        for (i, client) in clients.iter().enumerate() {
            client.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let mut buf = [0u8; 64];
            let (len, from) = client.recv_from(&mut buf).expect("answer");
            assert_eq!(from, addr);
            assert_eq!(&buf[..len], format!("answer to query {i}").as_bytes());
        }
    }

    #[test]
    fn an_oversized_datagram_is_flagged_truncated() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        client.send_to(&vec![7u8; MAX_DATAGRAM + 100], server.local_addr().expect("addr")).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = MessageBatch::new();
        assert_eq!(batch.receive(server.as_raw_fd()).expect("recvmmsg"), 1);
        assert!(batch.truncated[0]);
        assert_eq!(batch.query(0).len(), MAX_DATAGRAM);
    }
}
