//! Zero-copy relay of one direction of a TCP connection with `splice(2)` through a pipe.
//!
//! # Why this design
//! glommio 0.9 has no public `splice` and no fd-readiness API, and a shard must never block.
//! So the bytes move with plain non-blocking `splice(2)` calls made on the shard thread
//! (socket → pipe, then pipe → socket, both `SPLICE_F_NONBLOCK | SPLICE_F_MOVE` on sockets
//! set `O_NONBLOCK`), and readiness comes from glommio's own io_uring operations:
//!
//! - **readable**: `TcpStream::readable` — an io_uring `POLLIN` poll that completes when
//!   data, EOF or an error is there and reads nothing (a small patch to the vendored glommio,
//!   see `vendor/README.md`). It is only asked after a `splice` found the socket empty (or a
//!   small short fill showed it drained), so there is no synchronous try first. (Before, a
//!   one-byte `recv(MSG_PEEK)` did this: a synchronous try that said `EAGAIN`, then an
//!   io_uring recv with its own poll arming and retry.)
//! - **writable**: when `splice` into the destination says `EAGAIN`, an io_uring `POLLOUT`
//!   poll on it (`TcpStream::writable_shared`, same patch), then `splice` again: no byte
//!   crosses userspace. (Before that patch one byte went through glommio's `AsyncWrite` per
//!   back-pressure event — a 1-byte TCP segment each time, which cost the receiver a wake-up
//!   and halved 16-stream throughput.) Each wait is a poll request of its own, so one
//!   direction can wait to write on a socket while the other waits to read from it.
//!
//! **Unsent bytes are capped** ([`SINK_NOTSENT_LOWAT`], `TCP_NOTSENT_LOWAT` on each sink): a
//! sink socket reports writable, and takes more from a `splice`, only while less than that is
//! queued in the kernel and not yet sent. Without the cap the relay filled the sink's whole
//! send buffer, and what the window did not let out at once was sent later by the kernel
//! from ACK processing, on whichever CPU took the ACK: on loopback that is the receiver's
//! CPU, with a NIC the one its interrupt lands on. The stream was then sent from two CPUs
//! at once, its segments arrived out of order (SACK recovery, D-SACK undo, retransmits), and
//! that other CPU did the shard's sending. With the cap, the shard's own `splice` sends
//! nearly every segment, on the shard's CPU, in order; unsent memory per connection stays
//! bounded. One stream through a 2-CPU loopback bench went from 2.4 to 2.8 GiB/s, HAProxy
//! (which has no such cap) 2.4 (benches/RESULTS.md, 2026-12-03 06:05–06:55).
//!
//! The pipe is enlarged to [`PIPE_BYTES`] when the kernel allows, so one wake-up moves up to
//! that much. Pipes are reused: each shard thread keeps up to [`PIPE_POOL`] empty pipes
//! ([`PooledPipe`]), so a short connection costs no `pipe2`/`F_SETPIPE_SZ`/`close` calls in the
//! steady state (HAProxy keeps a pipe pool for the same reason). A pipe goes back to the pool
//! only when it holds no bytes; one that ended mid-transfer (an error) is closed. The pump alternates fill (socket → pipe until `EAGAIN`/full) and drain (pipe →
//! socket until empty), so the pipe never holds bytes while we wait for input.
//!
//! Fairness: a direction whose source always has data and whose sink always has room never
//! meets `EAGAIN`, so it would never wait and never let the shard run anything else; after
//! [`RUN_BUDGET`] bytes without a wait it yields once (no syscall), as Seastar's
//! `maybe_yield` does.
//!
//! Half-close: EOF on the source is forwarded as `shutdown(SHUT_WR)` on the destination once
//! the pipe is drained; the other direction keeps running. Errors (reset, broken pipe) end
//! this direction with the error; the caller tears down both.
//!
//! kTLS ends ([`KtlsEnds`], a terminated session handed to the kernel): a kTLS source's
//! kernel will not splice or peek a record that is not application data; such a record is
//! taken off with [`ktls::read_control_record`] — the peer's `close_notify` is its EOF, any
//! other alert or record ends the direction with an error. EOF forwarded to a kTLS sink is
//! a `close_notify` alert first, then the TCP half-close.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;

use crate::tls::ktls::{self, ControlRecord};

/// How much one pipe holds (the kernel may grant less; see [`SplicePipe::new`]).
/// 128 KiB, with [`SINK_NOTSENT_LOWAT`] of the same size: one stream then ran at 2.7–2.8
/// GiB/s and 16 streams at 3.3–6.4 GiB/s, against 2.4–2.5 and 1.9–2.0 with 64 KiB pipes and
/// no cap, and 2.9 and 2.7 with 256 KiB pipes (benches/RESULTS.md, 2026-12-03). Without the
/// cap, 64 KiB had been the best size (16:44–16:49 and 20:40 on 2026-12-02).
pub const PIPE_BYTES: usize = 128 * 1024;

/// `TCP_NOTSENT_LOWAT` of every sink socket: most bytes the kernel holds for it that are not
/// sent yet before `splice` into it says `EAGAIN` (see the module doc).
pub const SINK_NOTSENT_LOWAT: usize = 128 * 1024;

/// A fill shorter than this (and than the room in the pipe) ends the filling: the socket's
/// queue was empty, and the next look at it is the wait for readability (see
/// [`splice_direction`]).
const DRAINED_BELOW: usize = 16 * 1024;

/// Most bytes one direction moves without giving way: when its source always has data and
/// its sink always has room, no `splice` says `EAGAIN` and the direction never waits, so
/// after this much it yields to the shard's other tasks (other connections, timers) once.
/// 1 MiB is 8 pipe-fulls: a few hundred µs, and the yield costs no syscall.
const RUN_BUDGET: usize = 1024 * 1024;

/// A pipe used as the in-kernel buffer of one relay direction.
#[derive(Debug)]
pub struct SplicePipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    capacity: usize,
    /// Bytes spliced in and not yet spliced out.
    held: usize,
}

impl SplicePipe {
    /// Creates a non-blocking pipe, enlarged to [`PIPE_BYTES`] where permitted.
    pub fn new() -> io::Result<SplicePipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned from here on.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our own pipe. It fails for a user over
        // `pipe-user-pages-soft` without CAP_SYS_RESOURCE; the pipe keeps the size it was made
        // with (which the kernel shrinks to two pages for such a user), so ask for it.
        let mut granted = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int) };
        if granted <= 0 {
            // SAFETY: F_GETPIPE_SZ on our own pipe.
            granted = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        let capacity = if granted > 0 { granted as usize } else { 4096 };
        Ok(SplicePipe { read_end, write_end, capacity, held: 0 })
    }
}

/// Most empty pipes one shard thread keeps for reuse. Enlarged pipes count against the
/// kernel's `pipe-user-pages-soft` (16384 pages per user by default, i.e. 128 pipes of 128 KiB
/// for a user without CAP_SYS_RESOURCE, after which new pipes get two pages), so the pool
/// stays modest.
pub const PIPE_POOL: usize = 64;

thread_local! {
    /// This shard thread's empty pipes (shard-local: no lock, no sharing).
    static IDLE_PIPES: std::cell::RefCell<Vec<SplicePipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A pipe taken from this thread's pool (or created), returned to it on drop when empty.
#[derive(Debug)]
pub struct PooledPipe(Option<SplicePipe>);

impl PooledPipe {
    /// An empty pipe: a pooled one if any, else a new one.
    pub fn take() -> io::Result<PooledPipe> {
        let reused = IDLE_PIPES.with(|pool| pool.borrow_mut().pop());
        match reused {
            Some(pipe) => Ok(PooledPipe(Some(pipe))),
            None => Ok(PooledPipe(Some(SplicePipe::new()?))),
        }
    }

    /// Empty pipes in this thread's pool now.
    pub fn idle() -> usize {
        IDLE_PIPES.with(|pool| pool.borrow().len())
    }
}

impl std::ops::Deref for PooledPipe {
    type Target = SplicePipe;
    fn deref(&self) -> &SplicePipe {
        // Invariant: `Some` until drop.
        self.0.as_ref().unwrap_or_else(|| unreachable!("a PooledPipe holds its pipe until dropped"))
    }
}

impl std::ops::DerefMut for PooledPipe {
    fn deref_mut(&mut self) -> &mut SplicePipe {
        self.0.as_mut().unwrap_or_else(|| unreachable!("a PooledPipe holds its pipe until dropped"))
    }
}

impl Drop for PooledPipe {
    fn drop(&mut self) {
        if let Some(pipe) = self.0.take() {
            if pipe.held == 0 {
                // `try_with`: during thread teardown the pool may be gone; the pipe just closes.
                let _ = IDLE_PIPES.try_with(|pool| {
                    let mut pool = pool.borrow_mut();
                    if pool.len() < PIPE_POOL {
                        pool.push(pipe);
                    }
                });
            }
        }
    }
}

/// Sets `O_NONBLOCK` on a socket so `splice` on it never blocks the shard.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let mut on: libc::c_int = 1;
    // SAFETY: FIONBIO on a descriptor the caller keeps open, with a pointer to a live int
    // (one syscall, where F_GETFL + F_SETFL are two).
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &mut on) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Caps the bytes the kernel queues unsent on `fd` at [`SINK_NOTSENT_LOWAT`]. A kernel
/// without `TCP_NOTSENT_LOWAT` (before 3.12) refuses it; the relay then works as before,
/// with the whole send buffer as its queue, so the refusal is not an error.
pub fn cap_unsent(fd: RawFd) {
    // SAFETY: the caller keeps `fd` open for the duration of this call.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&socket).set_tcp_notsent_lowat(SINK_NOTSENT_LOWAT as u32);
}

/// One non-blocking `splice` call; `Ok(None)` means `EAGAIN`.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: splice between descriptors the caller keeps open; null offsets because
        // neither side is a seekable file.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => return Ok(None),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}

/// Progress shared by both directions of one connection: last activity, for idle timeouts.
#[derive(Debug)]
pub struct RelayClock {
    last_activity: Cell<Instant>,
}

impl RelayClock {
    /// A clock whose last activity is now.
    pub fn new() -> Rc<RelayClock> {
        Rc::new(RelayClock { last_activity: Cell::new(Instant::now()) })
    }

    /// When bytes last moved in either direction.
    pub fn last_activity(&self) -> Instant {
        self.last_activity.get()
    }

    fn touch(&self) {
        self.last_activity.set(Instant::now());
    }
}

/// Which ends of one direction are kTLS sockets (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KtlsEnds {
    /// The source decrypts in the kernel.
    pub source: bool,
    /// The sink encrypts in the kernel.
    pub sink: bool,
}

/// On a kTLS source, takes the control record the kernel would not splice or peek: `Ok(())`
/// for the peer's `close_notify` (its EOF), an error for anything else.
pub(crate) fn take_close_notify(source_fd: RawFd) -> io::Result<()> {
    match ktls::read_control_record(source_fd)? {
        ControlRecord::CloseNotify => Ok(()),
        ControlRecord::Alert(level, description) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("TLS alert from the peer (level {level}, description {description})"),
        )),
        ControlRecord::Other(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TLS record of content type {kind} on a kTLS session (not supported in the kernel)"),
        )),
    }
}

/// Sends `close_notify` on a kTLS sink whose send buffer may be full: retried with a short,
/// growing sleep (a kTLS alert cannot go through glommio's writer); the caller's idle
/// timeout bounds the wait.
pub(crate) async fn send_close_notify(sink_fd: RawFd) -> io::Result<()> {
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match ktls::send_close_notify(sink_fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                glommio::timer::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Moves bytes from `source` to `sink` until EOF on `source` (then half-closes `sink`) or an
/// error; both sockets must be `O_NONBLOCK`. `ktls` says which ends are kTLS sockets.
/// `source_quiet`: the source is not expected to have sent anything yet (a target that was
/// just connected), so the first look at it is the readiness wait, not a `splice` that would
/// only say `EAGAIN`. `on_bytes` is told of each batch delivered.
pub async fn splice_direction(
    source: &TcpStream,
    sink: &TcpStream,
    ktls: KtlsEnds,
    source_quiet: bool,
    clock: &RelayClock,
    mut on_bytes: impl FnMut(u64),
) -> io::Result<u64> {
    let mut pipe = PooledPipe::take()?;
    let source_fd = source.as_raw_fd();
    let sink_fd = sink.as_raw_fd();
    cap_unsent(sink_fd);
    let mut total = 0u64;
    // The last fill ended on a small short splice: the socket had nothing more queued then,
    // so the next look at it is the wait below (whose first, synchronous try sees anything that came
    // since) rather than one more `splice` that would only say `EAGAIN`.
    let mut source_drained = source_quiet;
    // Bytes delivered since this direction last waited (see [`RUN_BUDGET`]).
    let mut moved_since_wait = 0usize;
    loop {
        // Fill: socket → pipe.
        let mut eof = false;
        while !source_drained && pipe.held < pipe.capacity {
            let room = pipe.capacity - pipe.held;
            match splice_once(source_fd, pipe.write_end.as_raw_fd(), room) {
                Ok(Some(0)) => {
                    eof = true;
                    break;
                }
                Ok(Some(n)) => {
                    pipe.held += n;
                    // Small and short: a request or reply, not a stream (whose next bytes
                    // are usually there already, where one more `splice` is the cheaper look).
                    source_drained = n < room && n < DRAINED_BELOW;
                }
                Ok(None) => break,
                Err(e) if ktls.source && ktls::is_control_record_error(&e) => {
                    take_close_notify(source_fd)?;
                    eof = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if pipe.held == 0 && !eof {
            // Nothing buffered and nothing readable: wait for the source (data, EOF or an
            // error; the next `splice` tells which).
            source_drained = false;
            source.readable().await.map_err(io::Error::from)?;
            moved_since_wait = 0;
            continue;
        }
        // Drain: pipe → socket.
        while pipe.held > 0 {
            match splice_once(pipe.read_end.as_raw_fd(), sink_fd, pipe.held)? {
                Some(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "sink accepted no bytes")),
                Some(n) => {
                    pipe.held -= n;
                    moved_since_wait += n;
                    total += n as u64;
                    on_bytes(n as u64);
                    clock.touch();
                }
                None => {
                    // Back-pressure: wait for POLLOUT in io_uring (vendored glommio's
                    // `writable_shared`), then splice again. Nothing crosses userspace.
                    sink.writable_shared().await.map_err(io::Error::from)?;
                    moved_since_wait = 0;
                }
            }
        }
        if moved_since_wait >= RUN_BUDGET {
            // Both sockets kept up, so nothing above had to wait: give the shard's other
            // tasks their turn before going on.
            futures_lite::future::yield_now().await;
            moved_since_wait = 0;
        }
        if eof {
            // Forward the half-close; the other direction may still be sending. A peer that
            // is gone already needs no close_notify, so that error is not one.
            if ktls.sink {
                let _ = send_close_notify(sink_fd).await;
            }
            let _ = sink.shutdown(Shutdown::Write).await;
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::{LocalExecutorBuilder, Placement};

    /// `TCP_NOTSENT_LOWAT` of a socket.
    fn notsent_lowat(fd: RawFd) -> usize {
        // SAFETY: the test keeps the socket open.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket2::SockRef::from(&socket).tcp_notsent_lowat().expect("getsockopt TCP_NOTSENT_LOWAT") as usize
    }

    #[test]
    fn relays_bulk_bytes_in_order_with_back_pressure_and_half_close() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(|| async move {
                let front = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let back = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let front_addr = front.local_addr().expect("addr");
                let back_addr = back.local_addr().expect("addr");
                // 8 MiB of a counting pattern, sent by the client, read slowly by the backend
                // so the relay meets back-pressure.
                let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
                let expected = payload.clone();
                let client = glommio::spawn_local(async move {
                    let mut c = TcpStream::connect(front_addr).await.expect("connect");
                    c.write_all(&payload).await.expect("send");
                    c.shutdown(Shutdown::Write).await.expect("half-close");
                    let mut reply = Vec::new();
                    c.read_to_end(&mut reply).await.expect("reply");
                    reply
                });
                let backend = glommio::spawn_local(async move {
                    let mut s = back.accept().await.expect("accept");
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = s.read(&mut buf).await.expect("read");
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if got.len() % (1 << 20) < 4096 {
                            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                        }
                    }
                    // Answer after the client's half-close arrived.
                    s.write_all(b"done").await.expect("answer");
                    s.close().await.expect("close");
                    got
                });
                let accepted = front.accept().await.expect("accept");
                let upstream = TcpStream::connect(back_addr).await.expect("connect");
                set_nonblocking(accepted.as_raw_fd()).expect("nonblock");
                set_nonblocking(upstream.as_raw_fd()).expect("nonblock");
                let clock = RelayClock::new();
                let forward_bytes = Cell::new(0u64);
                let (a, b) = futures_lite::future::zip(
                    splice_direction(&accepted, &upstream, KtlsEnds::default(), false, &clock, |n| {
                        forward_bytes.set(forward_bytes.get() + n)
                    }),
                    splice_direction(&upstream, &accepted, KtlsEnds::default(), true, &clock, |_| {}),
                )
                .await;
                assert_eq!(a.expect("forward"), expected.len() as u64);
                assert_eq!(b.expect("backward"), 4);
                assert_eq!(forward_bytes.get(), expected.len() as u64);
                // Each direction capped the unsent queue of its sink.
                assert_eq!(notsent_lowat(upstream.as_raw_fd()), SINK_NOTSENT_LOWAT);
                assert_eq!(notsent_lowat(accepted.as_raw_fd()), SINK_NOTSENT_LOWAT);
                assert_eq!(backend.await, expected);
                assert_eq!(client.await, b"done");
                // Both pipes were empty at the end: they wait in this thread's pool.
                assert_eq!(PooledPipe::idle(), 2);
                let again = PooledPipe::take().expect("pipe");
                assert_eq!((again.held, PooledPipe::idle()), (0, 1));
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
