//! The runtime: shards, the control core, and the messages between them.
pub mod cpu;
