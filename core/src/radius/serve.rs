//! A shard's RADIUS service: its member socket of each RADIUS reuseport group, one task per
//! socket that receives a datagram, hands it to the shard's [`RadiusServer`] with the policy
//! in force *now*, and sends the reply (if any) from the same socket.
//!
//! Owns per shard: the [`RadiusServer`] (duplicate cache + counters; shared by the auth and
//! acct tasks through a `RefCell`, borrowed only for the synchronous `handle` call, never
//! across an `.await`) and the current policy (swapped by a snapshot; the next datagram uses
//! the new one, so a reload drops nothing and keeps the duplicate cache). Accounting records
//! are sent to the control core as [`ToControl::RadiusAccounting`]. Dropped datagrams are
//! counted by the server and logged at target `shardgate::security` (debug: floods are
//! expected and counted, not worth a line each at info).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use glommio::net::UdpSocket;
use shardgate_radius::duplicate::DuplicateCache;
use shardgate_radius::policy::Policy;
use shardgate_radius::server::{DropReason, Outcome, PortKind, RadiusCounters, RadiusServer};

use crate::net::udp_batch::serve_batches;
use crate::runtime::messages::ToControl;

/// Largest RADIUS packet (RFC 2865 §3); a bigger datagram is truncated and then refused by
/// the framing check.
pub const MAX_DATAGRAM: usize = 4096;

/// One shard's RADIUS state.
pub struct ShardRadius {
    shard: usize,
    server: RefCell<RadiusServer>,
    policy: RefCell<Option<Arc<Policy>>>,
    to_control: Sender<ToControl>,
}

impl ShardRadius {
    /// A shard's RADIUS state with an empty duplicate cache and no policy yet.
    pub fn new(shard: usize, to_control: Sender<ToControl>) -> ShardRadius {
        ShardRadius {
            shard,
            server: RefCell::new(RadiusServer::new(DuplicateCache::new(
                DuplicateCache::DEFAULT_CAPACITY,
                DuplicateCache::DEFAULT_LIFETIME,
            ))),
            policy: RefCell::new(None),
            to_control,
        }
    }

    /// Uses `policy` from the next datagram on (`None`: `[radius]` was removed; datagrams
    /// still arriving before the sockets close are ignored).
    pub fn set_policy(&self, policy: Option<Arc<Policy>>) {
        *self.policy.borrow_mut() = policy;
    }

    /// The counters so far.
    pub fn counters(&self) -> RadiusCounters {
        *self.server.borrow().counters()
    }

    /// Drops expired duplicate-cache entries (called from the shard's periodic timer).
    pub fn expire(&self, now: Instant) {
        self.server.borrow_mut().expire(now);
    }

    /// Handles one datagram; `reply` holds what to send back (empty: nothing).
    fn handle(&self, source: SocketAddr, datagram: &[u8], port: PortKind, now: Instant, reply: &mut Vec<u8>) -> Option<Outcome> {
        reply.clear();
        let policy = self.policy.borrow();
        let policy = policy.as_ref()?;
        Some(self.server.borrow_mut().handle(policy, source, datagram, now, port, reply))
    }
}

/// Serves one RADIUS socket until the task is dropped (reload removing the port, or stop), in
/// batches ([`crate::net::udp_batch`]: `recvmmsg`/`sendmmsg`).
pub async fn serve_socket(radius: Rc<ShardRadius>, socket: UdpSocket, addr: SocketAddr, port: PortKind) {
    let label = format!("radius {addr} shard {}", radius.shard);
    serve_batches(
        &socket,
        &label,
        |datagram, reply| {
            let Some(source) = datagram.source else { return false };
            // A cut datagram is handed on as received: the framing check refuses it.
            let Some(outcome) = radius.handle(source, datagram.bytes, port, datagram.received, reply) else { return false };
            crate::latency::record_since(crate::latency::Operation::RadiusRequest, datagram.received);
            match outcome {
                Outcome::Accounting(Some(event)) => {
                    let _ = radius.to_control.send(ToControl::RadiusAccounting(event));
                }
                Outcome::Drop(reason) => log_drop(radius.shard, addr, source, &reason),
                _ => {}
            }
            !reply.is_empty()
        },
        |errors| tracing::debug!(shard = radius.shard, %addr, errors, "RADIUS replies not sent"),
    )
    .await;
}

fn log_drop(shard: usize, local: SocketAddr, source: SocketAddr, reason: &DropReason) {
    match reason {
        DropReason::UnknownClient => {
            crate::security_event!(WARN, "radius.unknown_client", shard, %local, %source, "RADIUS datagram from an unknown client dropped")
        }
        DropReason::BadMessageAuthenticator | DropReason::BadRequestAuthenticator => crate::security_event!(
            WARN, "radius.bad_authenticator", shard, %local, %source, ?reason,
            "RADIUS datagram with a bad authenticator dropped (wrong shared secret or forgery)"
        ),
        DropReason::MissingMessageAuthenticator => crate::security_event!(
            WARN, "radius.missing_message_authenticator", shard, %local, %source,
            "RADIUS request without Message-Authenticator dropped (required: BlastRADIUS mitigation)"
        ),
        other => crate::security_event!(INFO, "radius.dropped", shard, %local, %source, reason = ?other, "RADIUS datagram dropped"),
    }
}
