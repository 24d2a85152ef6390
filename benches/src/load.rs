//! Backends and workloads for side-by-side runs. Everything here runs on the load CPUs.
//!
//! - [`Backend`]: a pool of worker threads on one listener; `Sink` reads to EOF then closes
//!   (bulk), `Echo1k` reads 1 KiB, answers 1 KiB, then closes after the client's EOF;
//! - [`bulk`]: N streams each sending a fixed number of bytes, half-closing and waiting for
//!   the backend's close, so the time covers delivery of every byte;
//! - [`short_connections`]: N clients each doing connect → 1 KiB each way → close, in turn
//!   ([`short_connections_within`]: the same, every step bounded in time).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::cpus::{load_cpus, pin_current_thread};

/// What a backend does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum BackendKind {
    /// Read until EOF, then close.
    Sink,
    /// Read 1 KiB, write 1 KiB, read until EOF, close.
    Echo1k,
}

/// A backend server on 127.0.0.1.
pub struct Backend {
    /// Its port.
    pub port: u16,
}

/// Bytes in the short-connection exchange, each way.
pub const EXCHANGE_BYTES: usize = 1024;

impl Backend {
    /// Starts `workers` threads accepting on one listener.
    pub fn start(kind: BackendKind, workers: usize) -> std::io::Result<Backend> {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0")?);
        let port = listener.local_addr()?.port();
        for _ in 0..workers {
            let listener = listener.clone();
            std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    match kind {
                        BackendKind::Sink => while matches!(stream.read(&mut buf), Ok(n) if n > 0) {},
                        BackendKind::Echo1k => {
                            if stream.read_exact(&mut buf[..EXCHANGE_BYTES]).is_ok() {
                                let _ = stream.write_all(&buf[..EXCHANGE_BYTES]);
                                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                            }
                        }
                    }
                }
            });
        }
        Ok(Backend { port })
    }
}

/// `streams` connections to `port` each send `bytes_per_stream` and wait for the far end to
/// close; returns the wall time from the common start to the last stream's end.
pub fn bulk(port: u16, streams: usize, bytes_per_stream: usize) -> Duration {
    let start = Arc::new(Barrier::new(streams + 1));
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let chunk = vec![0x5au8; 256 * 1024];
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy under test");
                start.wait();
                let mut left = bytes_per_stream;
                while left > 0 {
                    let n = left.min(chunk.len());
                    stream.write_all(&chunk[..n]).expect("send");
                    left -= n;
                }
                stream.shutdown(Shutdown::Write).expect("half-close");
                let mut tail = [0u8; 64];
                while matches!(stream.read(&mut tail), Ok(n) if n > 0) {}
                Instant::now()
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let ends: Vec<Instant> = handles.into_iter().map(|h| h.join().expect("stream thread")).collect();
    ends.into_iter().max().unwrap_or(began).saturating_duration_since(began)
}

/// `clients` threads each make `per_client` short connections in turn (connect, send 1 KiB,
/// read 1 KiB, close); returns the wall time for all of them. Panics if a connection fails or
/// stalls for a minute.
pub fn short_connections(port: u16, clients: usize, per_client: usize) -> Duration {
    match short_connections_within(port, clients, per_client, Duration::from_secs(60)) {
        Ok(elapsed) => elapsed,
        Err(e) => panic!("short connections to port {port}: {e}"),
    }
}

/// [`short_connections`] where every connect, write and read must finish within `stall`:
/// the first failure or stall ends that client and is returned (a bench stays bounded in
/// time even when the proxy under test hangs).
pub fn short_connections_within(port: u16, clients: usize, per_client: usize, stall: Duration) -> Result<Duration, String> {
    let start = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || -> Result<(), String> {
                pin_current_thread(&load_cpus());
                let request = vec![i as u8; EXCHANGE_BYTES];
                let mut reply = vec![0u8; EXCHANGE_BYTES];
                let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                start.wait();
                for n in 0..per_client {
                    let failed = |what: &str, e: std::io::Error| format!("client {i}, connection {n}: {what}: {e}");
                    let mut s = TcpStream::connect_timeout(&address, stall).map_err(|e| failed("connect", e))?;
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(stall)).map_err(|e| failed("timeout", e))?;
                    s.set_write_timeout(Some(stall)).map_err(|e| failed("timeout", e))?;
                    s.write_all(&request).map_err(|e| failed("send", e))?;
                    s.read_exact(&mut reply).map_err(|e| failed("reply", e))?;
                    // Close without TIME_WAIT on the client side (RST after the exchange),
                    // so thousands of iterations do not exhaust loopback ports; the proxy
                    // sees the same close for every peer.
                    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                    // SAFETY: setsockopt with a valid linger struct on an open socket.
                    unsafe {
                        use std::os::fd::AsRawFd;
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&linger as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                }
                Ok(())
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut first_error = None;
    for h in handles {
        let outcome = h.join().unwrap_or_else(|_| Err("client thread panicked".into()));
        if let (Err(e), None) = (outcome, &first_error) {
            first_error = Some(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(began.elapsed()),
    }
}
