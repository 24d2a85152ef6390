//! Choosing a target for a new connection, per route and per shard.
//!
//! Round-robin keeps a per-shard cursor; least-connections keeps per-shard open counts (the
//! kernel spreads connections evenly over shards, so per-shard balance is global balance in
//! expectation, with no cross-core traffic). Either way the result is an *order*: the chosen
//! target first, then the others, so a failed connect fails over to the next one.

use std::cell::Cell;

use crate::config::Balance;

/// Per-shard balancing state of one route.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Balance,
    cursor: Cell<usize>,
    open: Vec<Cell<u32>>,
}

impl Balancer {
    /// State for `targets` targets.
    pub fn new(algorithm: Balance, targets: usize) -> Balancer {
        Balancer { algorithm, cursor: Cell::new(0), open: (0..targets).map(|_| Cell::new(0)).collect() }
    }

    /// The order to try targets in for the next connection.
    pub fn order(&self) -> Vec<usize> {
        let n = self.open.len();
        if n == 0 {
            return Vec::new();
        }
        let first = match self.algorithm {
            Balance::RoundRobin => {
                let c = self.cursor.get();
                self.cursor.set((c + 1) % n);
                c % n
            }
            Balance::LeastConnections => {
                // Ties go round-robin so equal targets share the load.
                let start = self.cursor.get();
                self.cursor.set((start + 1) % n);
                (0..n)
                    .map(|k| (start + k) % n)
                    .min_by_key(|&i| self.open[i].get())
                    .unwrap_or(0)
            }
        };
        (0..n).map(|k| (first + k) % n).collect()
    }

    /// Marks a connection to target `i` as open.
    pub fn opened(&self, i: usize) {
        if let Some(c) = self.open.get(i) {
            c.set(c.get() + 1);
        }
    }

    /// Marks a connection to target `i` as closed.
    pub fn closed(&self, i: usize) {
        if let Some(c) = self.open.get(i) {
            c.set(c.get().saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_and_fails_over_in_order() {
        let b = Balancer::new(Balance::RoundRobin, 3);
        assert_eq!(b.order(), vec![0, 1, 2]);
        assert_eq!(b.order(), vec![1, 2, 0]);
        assert_eq!(b.order(), vec![2, 0, 1]);
        assert_eq!(b.order(), vec![0, 1, 2]);
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let b = Balancer::new(Balance::LeastConnections, 3);
        b.opened(0);
        b.opened(0);
        b.opened(1);
        assert_eq!(b.order()[0], 2);
        b.opened(2);
        b.opened(2);
        assert_eq!(b.order()[0], 1);
        b.closed(0);
        b.closed(0);
        assert_eq!(b.order()[0], 0);
    }
}
