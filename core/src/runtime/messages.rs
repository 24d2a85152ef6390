//! The protocol between shards and the control core: every message that crosses a core.
//!
//! Control core → shard ([`ToShard`], through each shard's [`Mailbox`](super::doorbell::Mailbox)):
//! - [`ToShard::Apply`]: a new config snapshot (immutable, shared read-only) plus the
//!   listening sockets this shard must start accepting on and the addresses it must stop
//!   listening on. Sent once at start (generation 1) and after every accepted reload.
//! - [`ToShard::Stop`]: stop accepting, let open connections finish until the deadline, exit.
//!
//! Shard / main thread → control core ([`ToControl`], one crossbeam channel):
//! - [`ToControl::Stats`]: a shard's counters, about once a second;
//! - [`ToControl::ShardStopped`]: a shard finished draining and is exiting;
//! - [`ToControl::Reload`] / [`ToControl::Stop`]: from the signal handler (SIGHUP; SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::route::RouteTable;
use crate::stats::ShardStats;

/// One config generation as a shard receives it.
#[derive(Debug)]
pub struct ShardSnapshot {
    /// 1 at start, +1 per accepted reload.
    pub generation: u64,
    /// The checked config (shared, never mutated).
    pub config: Arc<Config>,
    /// Its routes, indexed; the shard copies this into shard-local memory.
    pub routes: Arc<RouteTable>,
    /// New listening sockets for this shard (its member of each reuseport group).
    pub open: Vec<(SocketAddr, socket2::Socket)>,
    /// Addresses no route uses any more: stop listening there.
    pub close: Vec<SocketAddr>,
}

/// Control core → shard.
#[derive(Debug)]
pub enum ToShard {
    /// Use this config for new connections; open/close listeners as listed.
    Apply(ShardSnapshot),
    /// Graceful stop: stop accepting now, close what is still open at `deadline`.
    Stop {
        /// When remaining connections are closed.
        deadline: Instant,
    },
}

/// Shards and the main thread → control core.
#[derive(Debug)]
pub enum ToControl {
    /// A shard's latest counters.
    Stats(ShardStats),
    /// Shard `0` has drained and is exiting.
    ShardStopped(usize),
    /// Re-read the config (SIGHUP).
    Reload,
    /// Stop gracefully (SIGTERM/SIGINT).
    Stop,
}
