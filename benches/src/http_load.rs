//! HTTP/1.1 load for the proxy benches: a small keep-alive backend and keep-alive clients.
//!
//! The backend answers every request head with a 13-byte body (`hello, world\n`) on
//! keep-alive connections, on threads pinned to the load CPUs. The clients keep one
//! connection each and send requests one after another (closed loop: requests/s), or on a
//! fixed schedule (open loop: latency percentiles at a fixed request rate, measured from the
//! scheduled send time so a stall is not hidden — no coordinated omission).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cpus::{load_cpus, pin_current_thread};

/// The backend's answer to every request.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

/// A keep-alive HTTP/1.1 backend; stops when dropped.
pub struct HttpBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HttpBackend {
    /// Starts the backend (one thread per connection, pinned to the load CPUs).
    pub fn start() -> std::io::Result<HttpBackend> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            pin_current_thread(&load_cpus());
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                std::thread::spawn(move || {
                    pin_current_thread(&load_cpus());
                    serve(stream);
                });
            }
        });
        Ok(HttpBackend { port, stop })
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0usize;
    let mut out = Vec::with_capacity(4096);
    loop {
        let Ok(n) = stream.read(&mut buf[have..]) else { return };
        if n == 0 {
            return;
        }
        have += n;
        // Answer every complete head (requests carry no body).
        let mut used = 0;
        while let Some(end) = find_head_end(&buf[used..have]) {
            used += end;
            out.extend_from_slice(RESPONSE);
        }
        buf.copy_within(used..have, 0);
        have -= used;
        if have == buf.len() {
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Reads one response (head with Content-Length, then the body); `false` on failure.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(buf) {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return buf.starts_with(b"HTTP/1.1 200");
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: bench.example.test\r\nUser-Agent: shardgate-bench\r\nAccept: */*\r\n\r\n";

/// `connections` keep-alive clients each send `per_connection` requests one after another
/// (closed loop); returns the wall time. Panics if a response is wrong (a broken proxy must
/// not look fast).
pub fn keepalive_requests(port: u16, connections: usize, per_connection: usize) -> Duration {
    let start = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
                let _ = stream.set_nodelay(true);
                // A lost response fails the run instead of hanging it.
                let _ = stream.set_read_timeout(Some(RESPONSE_TIMEOUT));
                let mut buf = Vec::with_capacity(4096);
                for _ in 0..per_connection {
                    stream.write_all(REQUEST).expect("send request");
                    assert!(read_response(&mut stream, &mut buf), "bad response through the proxy");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    start.elapsed()
}

/// Longest wait for one response before a client gives up (a lost response must end a
/// bench run, never hang it).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an open-loop run measured.
pub struct FixedRateResult {
    /// Latency of every answered request from its scheduled send time (microseconds).
    pub latency: Histogram<u64>,
    /// Clients that stopped early: a response missing for [`RESPONSE_TIMEOUT`], wrong, or a
    /// failed send or connect.
    pub failed_clients: usize,
}

/// Open loop: `connections` clients share a total rate of `rate` requests/s for `duration`;
/// each request's latency is measured from its scheduled send time. A client whose response
/// is missing for [`RESPONSE_TIMEOUT`] or wrong stops and is counted, so the run is bounded
/// by `duration` plus that timeout.
pub fn fixed_rate_latency(port: u16, connections: usize, rate: u64, duration: Duration) -> FixedRateResult {
    let interval = Duration::from_secs_f64(connections as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    return (histogram, false);
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(RESPONSE_TIMEOUT));
                let mut buf = Vec::with_capacity(4096);
                let offset = interval.mul_f64(i as f64 / connections as f64);
                let mut k = 0u32;
                loop {
                    let due = start + offset + interval * k;
                    if due >= start + duration {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if stream.write_all(REQUEST).is_err() || !read_response(&mut stream, &mut buf) {
                        return (histogram, false);
                    }
                    let _ = histogram.record(due.elapsed().as_micros().max(1) as u64);
                    k += 1;
                }
                (histogram, true)
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut failed_clients = 0;
    for t in threads {
        let (histogram, completed) = t.join().expect("client thread");
        let _ = latency.add(histogram);
        failed_clients += usize::from(!completed);
    }
    FixedRateResult { latency, failed_clients }
}
