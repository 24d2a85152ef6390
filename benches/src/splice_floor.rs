//! The splice floor: the least work a `splice(2)` relay can do for bulk TCP, as a yardstick
//! for shardgate's relay (`shardgate_core::relay::splice`).
//!
//! Owns: [`run`], an accept loop that gives each direction of each connection a blocking
//! thread of its own: `splice` socket → pipe, then pipe → socket, until EOF, then
//! `shutdown(SHUT_WR)`. It uses the relay's pipe size ([`PIPE_BYTES`]) and its cap on each
//! sink's unsent queue ([`SINK_NOTSENT_LOWAT`]), so the kernel does the same work per byte
//! as in shardgate; what it leaves out is everything around that a proxy needs: no readiness
//! waits (the kernel blocks the thread), no event loop, no timeouts, counters, routes or
//! limits, and a thread per direction (which no proxy serving thousands of connections can
//! afford). Every thread stays on the CPU(s) it is given, and threads are reused
//! ([`DirectionThreads`]): none exits, so `peer-load` (which sums each live thread's CPU
//! time) sees all the work. Its throughput is what the
//! kernel's TCP work on the proxy CPU allows, with nothing of the proxy's own on top. Used
//! by `peer-load ... splice-floor` and `--bench tcp_relay_alternating`; never a product
//! path.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use shardgate_core::relay::splice::{PIPE_BYTES, SINK_NOTSENT_LOWAT};

use crate::cpus::pin_current_thread;

/// A pipe of [`PIPE_BYTES`] (or what the kernel grants): (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned from here on.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on our own pipe; a refusal leaves the default size, which only
    // makes the floor slower, never wrong.
    unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int) };
    Ok((read_end, write_end))
}

/// One blocking `splice` of up to `len` bytes (`EINTR` retried).
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice between descriptors the caller keeps open; null offsets because
        // neither side is a seekable file.
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Moves `source` to `sink` until EOF, then half-closes `sink`.
fn one_direction(source: &TcpStream, sink: &TcpStream) -> io::Result<u64> {
    let (read_end, write_end) = pipe()?;
    let mut total = 0u64;
    loop {
        let mut held = splice(source.as_raw_fd(), write_end.as_raw_fd(), PIPE_BYTES)?;
        if held == 0 {
            sink.shutdown(Shutdown::Write)?;
            return Ok(total);
        }
        while held > 0 {
            let n = splice(read_end.as_raw_fd(), sink.as_raw_fd(), held)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "sink accepted no bytes"));
            }
            held -= n;
            total += n as u64;
        }
    }
}

/// Caps the unsent queue of a sink as shardgate's relay does.
fn cap_unsent(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(SINK_NOTSENT_LOWAT as u32);
}

/// One relay direction, run start to end on a thread of its own.
type Direction = Box<dyn FnOnce() + Send>;

/// Threads that each run one [`Direction`] at a time and then wait for the next. Every
/// direction starts at once on a thread of its own (an idle one, else a new one): a
/// direction queued behind another could wait forever, since the other may be waiting for
/// this one's EOF.
pub struct DirectionThreads {
    cpus: Vec<usize>,
    idle: Arc<AtomicUsize>,
    queue: mpsc::Sender<Direction>,
    waiting: Arc<Mutex<mpsc::Receiver<Direction>>>,
}

impl DirectionThreads {
    /// No threads yet; those made later are pinned to `cpus`.
    pub fn new(cpus: Vec<usize>) -> DirectionThreads {
        let (queue, waiting) = mpsc::channel();
        DirectionThreads { cpus, idle: Arc::new(AtomicUsize::new(0)), queue, waiting: Arc::new(Mutex::new(waiting)) }
    }

    /// Runs `direction` now: on an idle thread if one is reserved, else on a new one.
    pub fn start(&self, direction: Direction) {
        let reserved = self.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        let direction = match reserved {
            true => match self.queue.send(direction) {
                Ok(()) => return,
                // Only if every thread is gone; then a new one runs it.
                Err(mpsc::SendError(direction)) => direction,
            },
            false => direction,
        };
        let (cpus, idle, waiting) = (self.cpus.clone(), self.idle.clone(), self.waiting.clone());
        std::thread::spawn(move || {
            pin_current_thread(&cpus);
            direction();
            loop {
                // Counted idle before it waits: a reservation always finds a thread.
                idle.fetch_add(1, Ordering::AcqRel);
                let next = match waiting.lock() {
                    Ok(receiver) => receiver.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(direction) => direction(),
                    Err(_) => return,
                }
            }
        });
    }
}

/// Relays every connection accepted on `listen` to `target` until the process ends; this
/// thread and every relay thread are pinned to `cpus`.
pub fn run(listen: TcpListener, target: SocketAddr, cpus: Vec<usize>) -> io::Result<()> {
    pin_current_thread(&cpus);
    let threads = DirectionThreads::new(cpus);
    loop {
        let (client, _) = listen.accept()?;
        let Ok(upstream) = TcpStream::connect(target) else { continue };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        cap_unsent(&client);
        cap_unsent(&upstream);
        let (client_in, upstream_in) = (client.try_clone()?, upstream.try_clone()?);
        threads.start(Box::new(move || {
            let _ = one_direction(&client_in, &upstream_in);
        }));
        threads.start(Box::new(move || {
            let _ = one_direction(&upstream, &client);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_every_byte_both_ways_and_forwards_the_half_close() {
        let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = backend.local_addr().expect("addr");
        let front = TcpListener::bind("127.0.0.1:0").expect("bind");
        let front_addr = front.local_addr().expect("addr");
        std::thread::spawn(move || run(front, target, vec![0]));
        let server = std::thread::spawn(move || {
            let (mut s, _) = backend.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read to the forwarded EOF");
            s.write_all(&(got.len() as u64).to_be_bytes()).expect("answer");
            got
        });
        let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut c = TcpStream::connect(front_addr).expect("connect");
        c.write_all(&payload).expect("send");
        c.shutdown(Shutdown::Write).expect("half-close");
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).expect("answer and EOF");
        assert_eq!(answer, (payload.len() as u64).to_be_bytes());
        assert_eq!(server.join().expect("server"), payload);
    }

    #[test]
    fn every_direction_starts_at_once_and_threads_are_reused() {
        let threads = DirectionThreads::new(vec![0]);
        // Two directions that each wait for the other: both must run at the same time.
        let (a_tx, a_rx) = mpsc::channel::<()>();
        let (b_tx, b_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<std::thread::ThreadId>();
        for (tx, rx) in [(a_tx, b_rx), (b_tx, a_rx)] {
            let done = done_tx.clone();
            threads.start(Box::new(move || {
                tx.send(()).expect("send");
                rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the other direction ran");
                done.send(std::thread::current().id()).expect("done");
            }));
        }
        let first: Vec<_> = (0..2).map(|_| done_rx.recv().expect("finished")).collect();
        // Both threads go idle; the next two directions reuse them.
        while threads.idle.load(Ordering::Acquire) < 2 {
            std::thread::yield_now();
        }
        for _ in 0..2 {
            let done = done_tx.clone();
            threads.start(Box::new(move || done.send(std::thread::current().id()).expect("done")));
        }
        for _ in 0..2 {
            assert!(first.contains(&done_rx.recv().expect("finished")));
        }
    }
}
