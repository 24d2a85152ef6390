//! A RADIUS load generator: keeps N MAB Access-Requests in flight over UDP against one server
//! and counts the answers. radclient sends one request at a time per packet list and cannot
//! load a server; this can, and it does the same work for every server it is pointed at.
//!
//! Each request is fresh (its own Request Authenticator, so no server can answer it from a
//! duplicate cache), carries what a switch doing MAB sends (User-Name = User-Password = the
//! MAC, Calling-Station-Id, NAS-IP-Address, NAS-Port) and a Message-Authenticator, and is
//! built and signed with `shardgate-radius`'s own packet and authenticator functions before
//! the clock starts. Load threads run on [`load_cpus`] and send and receive in batches
//! (`sendmmsg`/`recvmmsg`); in-flight requests are spread over several sockets because an
//! Identifier is one octet (at most 256 outstanding per socket).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use shardgate_radius::auth;
use shardgate_radius::mac::MacAddress;
use shardgate_radius::packet::{Attribute, Code, Packet};

use crate::cpus::{load_cpus, pin_current_thread};

/// Most requests one socket keeps outstanding (Identifiers are reused only once answered).
const PER_SOCKET_IN_FLIGHT: usize = 128;

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct AccessLoad {
    /// The server's authentication address.
    pub target: SocketAddr,
    /// The shared secret the server has for 127.0.0.1.
    pub secret: Vec<u8>,
    /// Stations to authenticate, used in turn.
    pub macs: Vec<MacAddress>,
    /// Requests kept in flight in total.
    pub in_flight: usize,
    /// A request unanswered for this long counts as a timeout (and frees its slot).
    pub timeout: Duration,
}

/// What one run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Access-Accepts received.
    pub accepts: u64,
    /// Other replies received (Access-Reject, ...).
    pub other_replies: u64,
    /// Requests that got no reply within the timeout.
    pub timeouts: u64,
    /// Wall time from the first send to the last answer or timeout.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Adds another run's numbers (elapsed times add up too).
    pub fn add(&mut self, other: &LoadReport) {
        self.sent += other.sent;
        self.accepts += other.accepts;
        self.other_replies += other.other_replies;
        self.timeouts += other.timeouts;
        self.elapsed += other.elapsed;
    }

    /// Answered requests per second.
    pub fn replies_per_second(&self) -> f64 {
        (self.accepts + self.other_replies) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `count` MACs of the locally administered range `02:00:00:00:xx:yy`.
pub fn bench_macs(count: usize) -> Vec<MacAddress> {
    (0..count).map(|i| MacAddress::new([0x02, 0, 0, 0, (i >> 8) as u8, i as u8])).collect()
}

/// The MAC as a Cisco switch puts it in User-Name: `020000000a0b`.
pub fn user_name(mac: &MacAddress) -> String {
    mac.octets().iter().map(|o| format!("{o:02x}")).collect()
}

impl AccessLoad {
    /// Sends `requests` Access-Requests, keeping [`AccessLoad::in_flight`] outstanding, and
    /// waits for every answer or timeout. The requests are built and signed before the clock
    /// starts, so the measured time is the server's, not the generator's MD5 work.
    pub fn run(&self, requests: usize) -> std::io::Result<LoadReport> {
        let sockets = self.in_flight.div_ceil(PER_SOCKET_IN_FLIGHT).max(1);
        let window = self.in_flight.div_ceil(sockets).clamp(1, PER_SOCKET_IN_FLIGHT);
        let start = Arc::new(Barrier::new(sockets + 1));
        let mut workers = Vec::with_capacity(sockets);
        for index in 0..sockets {
            let quota = requests / sockets + usize::from(index < requests % sockets);
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(self.target)?;
            socket.set_read_timeout(Some(Duration::from_millis(5)))?;
            let load = self.clone();
            let start = start.clone();
            workers.push(std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let prepared = load.prepare(index, quota);
                start.wait();
                load.drive(&socket, prepared?, window)
            }));
        }
        start.wait();
        let began = Instant::now();
        let mut report = LoadReport::default();
        for worker in workers {
            let part = worker.join().map_err(|_| std::io::Error::other("load thread panicked"))??;
            report.add(&part);
        }
        report.elapsed = began.elapsed();
        Ok(report)
    }

    /// One socket's requests, request `i` with Identifier `i mod 256`, each with a fresh
    /// Request Authenticator.
    fn prepare(&self, worker: usize, quota: usize) -> std::io::Result<Vec<Vec<u8>>> {
        let mut random = SplitMix64::new((worker as u64) << 48 ^ nanos_since_epoch());
        (0..quota)
            .map(|i| {
                let mac = &self.macs[(i * 7 + worker) % self.macs.len()];
                let mut packet = Vec::with_capacity(128);
                self.build_request(i as u8, mac, random.authenticator(), &mut packet)?;
                Ok(packet)
            })
            .collect()
    }

    /// Sends `requests` at most `window` outstanding, batching sends and receives.
    fn drive(&self, socket: &UdpSocket, requests: Vec<Vec<u8>>, window: usize) -> std::io::Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut sent_at: [Option<Instant>; 256] = [None; 256];
        let mut outstanding = 0usize;
        let mut next = 0usize;
        let mut replies = [[0u8; REPLY_PREFIX]; BATCH];
        let mut last_scan = Instant::now();
        while next < requests.len() || outstanding > 0 {
            let room = window.saturating_sub(outstanding).min(requests.len() - next).min(BATCH);
            if room > 0 {
                let batch: Vec<&[u8]> = requests[next..next + room].iter().map(Vec::as_slice).collect();
                let sent = match batch::send(socket, &batch) {
                    Ok(sent) => sent,
                    // The socket buffer is full: collect answers first.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                let now = Instant::now();
                for packet in &batch[..sent] {
                    if sent_at[usize::from(packet[1])].replace(now).is_some() {
                        // A request 256 sends ago is still unanswered: it is lost.
                        report.timeouts += 1;
                    } else {
                        outstanding += 1;
                    }
                }
                report.sent += sent as u64;
                next += sent;
            }
            match batch::receive(socket, &mut replies) {
                Ok(received) => {
                    for reply in &replies[..received] {
                        if sent_at[usize::from(reply[1])].take().is_some() {
                            outstanding -= 1;
                            if reply[0] == Code::AccessAccept.octet() {
                                report.accepts += 1;
                            } else {
                                report.other_replies += 1;
                            }
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // ECONNREFUSED from an ICMP port unreachable: the server is not (yet) there.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
            if last_scan.elapsed() >= Duration::from_millis(20) {
                last_scan = Instant::now();
                for slot in sent_at.iter_mut() {
                    if slot.is_some_and(|at| last_scan.saturating_duration_since(at) >= self.timeout) {
                        *slot = None;
                        outstanding -= 1;
                        report.timeouts += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    fn build_request(&self, identifier: u8, mac: &MacAddress, authenticator: [u8; 16], out: &mut Vec<u8>) -> std::io::Result<()> {
        let name = user_name(mac);
        let hidden = auth::hide_password(name.as_bytes(), &self.secret, &authenticator).map_err(std::io::Error::other)?;
        let o = mac.octets();
        let packet = Packet {
            code: Code::AccessRequest,
            identifier,
            authenticator,
            attributes: vec![
                Attribute::MessageAuthenticator([0; 16]),
                Attribute::UserName(name),
                Attribute::UserPassword(hidden),
                Attribute::CallingStationId(format!(
                    "{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
                    o[0], o[1], o[2], o[3], o[4], o[5]
                )),
                Attribute::NasIpAddress([10, 0, 0, 1].into()),
                Attribute::NasPort(50_000 + u32::from(identifier)),
            ],
        };
        out.clear();
        packet.encode(out).map_err(std::io::Error::other)?;
        auth::sign_request(out, &self.secret).map_err(std::io::Error::other)
    }
}

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 32;
/// Octets of each reply kept: the Code and Identifier are all the generator reads.
const REPLY_PREFIX: usize = 64;

/// `sendmmsg(2)`/`recvmmsg(2)` on a connected UDP socket: one system call per batch keeps
/// the generator's CPU cost per request well below the servers'.
mod batch {
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Sends `packets` (at most `super::BATCH`); returns how many went out.
    pub fn send(socket: &UdpSocket, packets: &[&[u8]]) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> =
            packets.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
        // SAFETY: a zeroed mmsghdr is valid (no name, no control data); each points at one
        // iovec of `iovecs`, which outlives the call, describing a packet borrowed for it.
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        // SAFETY: `headers` holds `headers.len()` initialised entries for the open socket.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), headers.len() as u32, 0) };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
    }

    /// Waits (up to the socket's read timeout) for at least one datagram, then takes what
    /// else is queued, up to `buffers.len()`; each buffer gets the start of one datagram.
    pub fn receive<const N: usize>(socket: &UdpSocket, buffers: &mut [[u8; N]]) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> =
            buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: N }).collect();
        // SAFETY: as in `send`; the iovecs point at the caller's buffers, writable for N octets.
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        // SAFETY: `headers` holds `headers.len()` initialised entries for the open socket; no
        // timeout pointer (SO_RCVTIMEO bounds the wait for the first datagram).
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 { Err(io::Error::last_os_error()) } else { Ok(received as usize) }
    }
}

fn nanos_since_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Request Authenticators: unique per request, which is all a load generator needs (RFC 2865
/// wants them unpredictable on a real network; the benchmark's loopback is not one).
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn authenticator(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next().to_le_bytes());
        out[8..].copy_from_slice(&self.next().to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use shardgate_radius::duplicate::DuplicateCache;
    use shardgate_radius::packet::RawPacket;
    use shardgate_radius::policy::Policy;
    use shardgate_radius::server::{Outcome, PortKind, RadiusServer};

    use super::*;

    #[test]
    fn requests_are_fresh_signed_mab_requests_our_server_accepts() {
        let macs = bench_macs(3);
        let allowed: Vec<String> = macs.iter().map(MacAddress::to_string).collect();
        let config = shardgate_radius::config::RadiusConfig {
            clients: vec![shardgate_radius::config::ClientConfig {
                name: "load".into(),
                source: "127.0.0.1".into(),
                secret: "s3cret".into(),
            }],
            mac_auth: shardgate_radius::config::MacAuthConfig { allowed, default_vlan: Some(10), ..Default::default() },
            ..Default::default()
        };
        let policy = Policy::from_config(&config).expect("policy");
        let load = AccessLoad {
            target: "127.0.0.1:1812".parse().expect("addr"),
            secret: b"s3cret".to_vec(),
            macs: macs.clone(),
            in_flight: 1,
            timeout: Duration::from_secs(1),
        };
        let mut server = RadiusServer::new(DuplicateCache::new(16, Duration::from_secs(30)));
        let mut random = SplitMix64::new(1);
        let (mut first, mut second, mut reply) = (Vec::new(), Vec::new(), Vec::new());
        load.build_request(9, &macs[1], random.authenticator(), &mut first).expect("build");
        load.build_request(9, &macs[1], random.authenticator(), &mut second).expect("build");
        assert_ne!(first, second, "two requests must differ (no duplicate-cache hits)");
        assert_eq!(RawPacket::parse(&first).expect("framed").identifier(), 9);
        let source = "127.0.0.1:5000".parse().expect("addr");
        let outcome = server.handle(&policy, source, &first, Instant::now(), PortKind::Auth, &mut reply);
        assert!(matches!(outcome, Outcome::AccessAccept { vlan: Some(10), known: true, .. }), "{outcome:?}");
        assert_eq!(user_name(&macs[1]), "020000000001");
    }
}
