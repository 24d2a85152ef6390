//! Correlation ids: one per connection a shard accepts and per message the control core makes,
//! so one id finds a connection's or a message's whole story in the logs.
//!
//! Owns: the id's shape ([`format`]: 16 lower-case hex digits, the shard index in the top
//! 8 bits and a sequence number in the rest), the shard-local sequence ([`next_on_shard`]: a
//! thread-local counter, since a shard is one thread — no atomics on the accept path) and the
//! control core's ([`next_on_control`]: shard byte `ff`, for messages made there such as
//! `shardgate send` or the admin API). Does not own: where the id is shown. By convention it is
//! the `id` field of a `conn` tracing span around everything done for the connection (proxy,
//! SMTP and DNS-over-TCP connections on the shards); an SMTP message carries its session's id
//! in its queue record (`QueuedMessage::correlation_id`), and the delivery engine runs each
//! delivery, deferral and bounce of the message inside a `conn` span with the same id, so
//! `conn{id=…}` in the log (and `/api/logs?id=…`) follows a message from accept through
//! routing, queueing and delivery attempts to its bounce.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shard byte of ids made on the control core.
pub const CONTROL_SHARD: usize = 0xff;

/// An id from a shard index (or [`CONTROL_SHARD`]) and a sequence number: unique in one run.
pub fn format(shard: usize, sequence: u64) -> String {
    format!("{:016x}", ((shard as u64 & 0xff) << 56) | (sequence & 0x00ff_ffff_ffff_ffff))
}

thread_local! {
    /// Ids handed out on this thread (a shard: its connections of every kind).
    static SHARD_SEQUENCE: Cell<u64> = const { Cell::new(0) };
}

/// The next id of the shard running on this thread.
pub fn next_on_shard(shard: usize) -> String {
    let sequence = SHARD_SEQUENCE.with(|s| {
        let next = s.get().wrapping_add(1);
        s.set(next);
        next
    });
    format(shard, sequence)
}

/// The next id for something the control core starts itself (a message it queues).
pub fn next_on_control() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    format(CONTROL_SHARD, SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1)
}

/// Whether `text` has the shape of a correlation id (16 lower-case hex digits).
pub fn is_correlation_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_shard_and_never_repeat_on_a_thread() {
        assert_eq!(format(1, 0xa3), "01000000000000a3");
        assert_eq!(format(CONTROL_SHARD, 1), "ff00000000000001");
        let a = next_on_shard(2);
        let b = next_on_shard(2);
        assert!(a.starts_with("02") && b.starts_with("02") && a != b, "{a} {b}");
        // Another thread (another shard) counts on its own.
        let other = std::thread::spawn(|| next_on_shard(3)).join().expect("thread");
        assert_eq!(other, "0300000000000001");
        let (c, d) = (next_on_control(), next_on_control());
        assert!(c.starts_with("ff") && c != d);
        assert!(is_correlation_id(&a) && is_correlation_id(&c));
        assert!(!is_correlation_id("0001F2A3B4C5D6FF") && !is_correlation_id("x") && !is_correlation_id("01000000000000a3 "));
    }
}
