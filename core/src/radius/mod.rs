//! RADIUS on the appliance: the I/O around the sans-I/O core in the `shardgate-radius` crate.
//!
//! - [`serve`] (shards): each shard's RADIUS UDP sockets, one receive → handle → reply task per
//!   socket, all sharing the shard's one [`RadiusServer`](shardgate_radius::server::RadiusServer)
//!   (duplicate cache and counters, which survive reloads) and reading the current policy per
//!   datagram; accounting records go to the control core.
//! - [`session_store`] (control core): the accounting session table, loaded from and persisted
//!   crash-safely in the storage layer (`radius/sessions.json`), and its rendering for
//!   `shardgate radius sessions`.
//!
//! Not here: packet rules, authenticators, MAB policy and the session table's semantics (the
//! `shardgate-radius` crate), opening the sockets (`net`, on the control core), config
//! validation (`config`).

pub mod serve;
pub mod session_store;
