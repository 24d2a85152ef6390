//! DNS over UDP on a shard: the batched serving loop of [`crate::net::udp_batch`]
//! (`recvmmsg`/`sendmmsg`, glommio `peek_from` readiness) with the DNS answer path, response
//! rate limiting and counters per datagram.

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::UdpSocket;
use shardgate_dns::Transport;

use super::ShardDns;
use crate::net::udp_batch::serve_batches;

/// Serves one DNS UDP socket until the task is dropped (reload removing the address, or stop).
pub async fn serve_socket(dns: Rc<ShardDns>, socket: UdpSocket, addr: SocketAddr) {
    let label = format!("dns {addr} shard {}", dns.shard);
    serve_batches(
        &socket,
        &label,
        |datagram, reply| {
            crate::stats::bump(&dns.io.udp_queries, 1);
            if datagram.truncated {
                dns.count_oversized();
                return false;
            }
            let Some(client) = datagram.source else { return false };
            dns.respond(datagram.bytes, Transport::Udp, client.ip(), datagram.received, reply)
        },
        |errors| crate::stats::bump(&dns.io.udp_send_errors, errors),
    )
    .await;
}
