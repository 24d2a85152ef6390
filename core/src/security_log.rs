//! Rate-limited logging of security events that a flood can repeat at line rate: refusals by
//! IP rules and connection caps, RRL drops, RADIUS datagrams from unknown clients or with a
//! bad authenticator.
//!
//! Owns: a per-thread (so per-shard, no locks) budget per event kind — at most
//! [`LINES_PER_SECOND`] lines each second — and the count of events it held back, which the
//! next logged line reports as `suppressed = N` (the kernel's `printk_ratelimit`, Knot's
//! RRL log). Every event is still counted in the stats by its caller; only the log line is
//! limited. Events are logged at `target: "shardgate::security"`.
//!
//! Not here: which events are security events (the callers), the counters (`crate::stats`).

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Lines per event kind per shard per second.
pub const LINES_PER_SECOND: u32 = 10;

#[derive(Debug)]
struct Budget {
    kind: &'static str,
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// The budgets of one thread, one per event kind seen.
#[derive(Debug, Default)]
pub struct SecurityLogBudget {
    budgets: Vec<Budget>,
}

impl SecurityLogBudget {
    /// Whether an event of `kind` at `now` may be logged; `Some(n)` says yes and how many
    /// events of that kind were held back since the last line.
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let index = match self.budgets.iter().position(|b| b.kind == kind) {
            Some(index) => index,
            None => {
                self.budgets.push(Budget { kind, window_start: now, logged: 0, suppressed: 0 });
                self.budgets.len() - 1
            }
        };
        let budget = &mut self.budgets[index];
        if now.saturating_duration_since(budget.window_start) >= Duration::from_secs(1) {
            budget.window_start = now;
            budget.logged = 0;
        }
        if budget.logged >= LINES_PER_SECOND {
            budget.suppressed += 1;
            return None;
        }
        budget.logged += 1;
        Some(std::mem::take(&mut budget.suppressed))
    }
}

thread_local! {
    static BUDGET: RefCell<SecurityLogBudget> = RefCell::new(SecurityLogBudget::default());
}

/// [`SecurityLogBudget::admit`] on this thread's budget, now.
pub fn admit(kind: &'static str) -> Option<u64> {
    BUDGET.with(|b| b.borrow_mut().admit(kind, Instant::now()))
}

/// Logs a security event at `level` (`INFO`, `WARN`), rate limited per kind (see the module
/// doc); the line carries `event = kind` and `suppressed` (events held back since the
/// previous line): `security_event!(WARN, "radius.bad_authenticator", %source, "...")`.
#[macro_export]
macro_rules! security_event {
    ($level:ident, $kind:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $crate::security_log::admit($kind) {
            tracing::event!(target: "shardgate::security", tracing::Level::$level, event = $kind, suppressed, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_a_second_per_kind_then_the_held_back_count() {
        let mut budget = SecurityLogBudget::default();
        let start = Instant::now();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(budget.admit("rrl", start), Some(0));
        }
        for _ in 0..25 {
            assert_eq!(budget.admit("rrl", start + Duration::from_millis(500)), None);
        }
        // Another kind has its own budget.
        assert_eq!(budget.admit("radius", start + Duration::from_millis(500)), Some(0));
        // The next second: one line, reporting the 25 held back.
        assert_eq!(budget.admit("rrl", start + Duration::from_millis(1000)), Some(25));
        assert_eq!(budget.admit("rrl", start + Duration::from_millis(1001)), Some(0));
    }

    #[test]
    fn a_clock_going_backwards_does_not_reopen_the_window() {
        let mut budget = SecurityLogBudget::default();
        let start = Instant::now() + Duration::from_secs(5);
        for _ in 0..LINES_PER_SECOND {
            budget.admit("x", start);
        }
        assert_eq!(budget.admit("x", start - Duration::from_secs(2)), None);
    }
}
