//! The floor: the least work any proxy can do for a workload, as a yardstick for the others.
//!
//! Owns: [`run`], a single-threaded epoll (mio) relay that copies bytes between each client
//! connection and its own connection to one target through a 16 KiB buffer. No parsing, no
//! timeouts, no pools, no stats, no limits: one `recv` and one `send` per message and one
//! `epoll_wait` per batch of ready sockets. For HTTP keep-alive traffic it forwards the same
//! bytes a proxy would, so its CPU per request is a lower bound for every real HTTP proxy on
//! the same machine (each of them does at least these syscalls, plus its HTTP work). Used by
//! `peer-load ... floor`; never a product path.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

/// Bytes read per `recv`.
const CHUNK: usize = 16 * 1024;

/// One side of a relayed pair: its socket and the token of the other side.
struct Side {
    stream: TcpStream,
    peer: Token,
}

/// Relays every connection accepted on `listen` to `target` until the process is killed.
pub fn run(listen: std::net::TcpListener, target: SocketAddr) -> io::Result<()> {
    listen.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listen);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut sides: HashMap<Token, Side> = HashMap::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; CHUNK];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            let token = event.token();
            if token == LISTENER {
                while let Ok((client, _)) = listener.accept() {
                    let Ok(target) = std::net::TcpStream::connect(target) else { continue };
                    let _ = target.set_nonblocking(true);
                    let _ = target.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let (a, b) = (Token(next), Token(next + 1));
                    next += 2;
                    let mut client = Side { stream: client, peer: b };
                    let mut target = Side { stream: TcpStream::from_std(target), peer: a };
                    poll.registry().register(&mut client.stream, a, Interest::READABLE)?;
                    poll.registry().register(&mut target.stream, b, Interest::READABLE)?;
                    sides.insert(a, client);
                    sides.insert(b, target);
                }
                continue;
            }
            if !forward_once(&mut sides, token, &mut buf) {
                close_pair(&mut poll, &mut sides, token);
            }
        }
    }
}

/// Reads until the socket is drained (edge-triggered: a read shorter than the buffer means
/// it is) and writes each read whole to the peer; false when the pair should close.
fn forward_once(sides: &mut HashMap<Token, Side>, token: Token, buf: &mut [u8]) -> bool {
    loop {
        let Some(side) = sides.get_mut(&token) else { return true };
        let peer = side.peer;
        let n = match side.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let Some(other) = sides.get_mut(&peer) else { return false };
        if write_whole(&mut other.stream, &buf[..n]).is_err() {
            return false;
        }
        if n < buf.len() {
            return true;
        }
    }
}

/// Writes all of `data`, waiting in `poll(2)` when the socket is full (rare with small
/// messages; the floor does not model back-pressure beyond that).
fn write_whole(stream: &mut TcpStream, mut data: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd for a socket we own, for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, 1000) };
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn close_pair(poll: &mut Poll, sides: &mut HashMap<Token, Side>, token: Token) {
    if let Some(mut side) = sides.remove(&token) {
        let _ = poll.registry().deregister(&mut side.stream);
        if let Some(mut other) = sides.remove(&side.peer) {
            let _ = poll.registry().deregister(&mut other.stream);
        }
    }
}
