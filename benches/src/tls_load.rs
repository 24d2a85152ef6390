//! TLS workloads (rustls clients on the load CPUs): full handshakes per second with a 1 KiB
//! exchange each, and bulk bytes through one TLS stream per client.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::cpus::{load_cpus, pin_current_thread};
use crate::load::EXCHANGE_BYTES;

/// A client config that accepts the bench certificate and never resumes (every connection
/// is a full handshake).
pub fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(shardgate_core::tls::unverified::AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn connect_tls(port: u16, config: &Arc<rustls::ClientConfig>) -> (rustls::ClientConnection, TcpStream) {
    let name = rustls::pki_types::ServerName::try_from("bench.example.test").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy under test");
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    (conn, tcp)
}

/// `clients` threads each make `per_client` new TLS connections (full handshake, 1 KiB each
/// way through an echo backend, close); returns the wall time for all of them.
pub fn handshakes(port: u16, clients: usize, per_client: usize) -> Duration {
    let config = client_config();
    let start = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (start, config) = (start.clone(), config.clone());
            std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let request = vec![7u8; EXCHANGE_BYTES];
                let mut reply = vec![0u8; EXCHANGE_BYTES];
                start.wait();
                for _ in 0..per_client {
                    let (mut conn, mut tcp) = connect_tls(port, &config);
                    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                    tls.write_all(&request).expect("send");
                    tls.read_exact(&mut reply).expect("reply");
                    conn.send_close_notify();
                    let _ = conn.write_tls(&mut tcp);
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for h in handles {
        h.join().expect("client thread");
    }
    began.elapsed()
}

/// `streams` TLS connections each send `bytes_per_stream` to a sink backend, then close and
/// wait for the proxy's close; returns the wall time.
pub fn bulk(port: u16, streams: usize, bytes_per_stream: usize) -> Duration {
    let config = client_config();
    let start = Arc::new(Barrier::new(streams + 1));
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let (start, config) = (start.clone(), config.clone());
            std::thread::spawn(move || {
                pin_current_thread(&load_cpus());
                let chunk = vec![0x5au8; 64 * 1024];
                let (mut conn, mut tcp) = connect_tls(port, &config);
                // Handshake before the clock.
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).expect("handshake");
                }
                start.wait();
                let mut left = bytes_per_stream;
                let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                while left > 0 {
                    let n = left.min(chunk.len());
                    tls.write_all(&chunk[..n]).expect("send");
                    left -= n;
                }
                conn.send_close_notify();
                while conn.wants_write() {
                    conn.write_tls(&mut tcp).expect("flush");
                }
                let _ = tcp.shutdown(Shutdown::Write);
                let mut tail = [0u8; 4096];
                while matches!(tcp.read(&mut tail), Ok(n) if n > 0) {}
                Instant::now()
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let ends: Vec<Instant> = handles.into_iter().map(|h| h.join().expect("stream thread")).collect();
    ends.into_iter().max().unwrap_or(began).saturating_duration_since(began)
}
