//! DNS over TCP on a shard (RFC 1035 §4.2.2, RFC 7766).
//!
//! Owns: the accept loop of the shard's member of each DNS TCP reuseport group and one task
//! per connection. A connection carries length-prefixed messages; every complete message in
//! what has arrived is answered in order, and the answers of one read go out in one write
//! (pipelined clients such as `kdig +tcp` with several names, or resolvers reusing a
//! connection, get their answers in query order). Limits, following Knot DNS's defaults:
//! a connection with no complete read for [`IDLE_TIMEOUT`] is closed (`tcp-idle-timeout`),
//! a write that cannot progress for [`IDLE_TIMEOUT`] closes it too, a shard holds at most
//! [`MAX_CONNECTIONS_PER_SHARD`] connections (further ones are closed at once and counted),
//! and a message is at most 65535 bytes by the framing itself. TCP answers are not rate
//! limited (a completed handshake cannot be spoofed) and are never truncated.
//!
//! Does not own: framing rules ([`shardgate_dns::tcp`]), answering (`shardgate_dns::answer`),
//! opening the listeners (the control core does, like the proxy's).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use shardgate_dns::tcp::{append_framed, next_message};
use shardgate_dns::Transport;

use super::ShardDns;
use crate::stats::bump;

/// A connection idle this long is closed (Knot DNS's `tcp-idle-timeout` default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most DNS TCP connections one shard holds open.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 2048;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 4096;

/// Accepts DNS TCP connections until the task is dropped.
pub async fn accept_loop(dns: Rc<ShardDns>, listener: TcpListener, addr: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if dns.tcp_open.get() >= MAX_CONNECTIONS_PER_SHARD {
                    bump(&dns.io.tcp_refused, 1);
                    crate::security_event!(WARN, "dns.tcp_refused", shard = dns.shard, %addr, "DNS TCP connection refused: shard at its connection cap");
                    drop(stream);
                    continue;
                }
                bump(&dns.io.tcp_connections, 1);
                use tracing::Instrument as _;
                // Every line about the connection carries its correlation id (`crate::correlation`).
                let span = tracing::info_span!("conn", id = %crate::correlation::next_on_shard(dns.shard));
                glommio::spawn_local(serve_connection(dns.clone(), stream).instrument(span)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = dns.shard, %addr, error = %e, "DNS TCP accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Decrements the shard's open-connection count when a connection task ends, however it ends.
struct OpenConnection(Rc<ShardDns>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.tcp_open.set(self.0.tcp_open.get().saturating_sub(1));
    }
}

async fn serve_connection(dns: Rc<ShardDns>, mut stream: TcpStream) {
    dns.tcp_open.set(dns.tcp_open.get() + 1);
    let _open = OpenConnection(dns.clone());
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err() || stream.set_write_timeout(Some(IDLE_TIMEOUT)).is_err() {
        return;
    }
    let mut received: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    let mut response = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(1024);
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    bump(&dns.io.tcp_idle_timeouts, 1);
                }
                return;
            }
        };
        received.extend_from_slice(&chunk[..n]);
        let now = Instant::now();
        let mut used = 0;
        while let Some((message, len)) = next_message(&received[used..]) {
            used += len;
            bump(&dns.io.tcp_queries, 1);
            if dns.respond(message, Transport::Tcp, peer.ip(), now, &mut response) && !append_framed(&response, &mut out) {
                // Cannot happen for TCP answers (they are built within 65535 bytes); never panic.
                tracing::debug!(shard = dns.shard, %peer, len = response.len(), "DNS TCP answer too long to frame");
            }
        }
        received.drain(..used);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
