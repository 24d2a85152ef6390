//! Latency histograms: recorded per shard without atomics, merged on the control core.
//!
//! Owns: the [`Operation`]s whose duration is measured (HTTP request, DNS query service, RADIUS
//! request, TCP connect to a target, TLS handshake), the shard-local recorder (a thread-local
//! set of hdrhistogram histograms: a shard is one thread, so recording is a plain add), the
//! per-interval [`IntervalHistograms`] a shard ships to the control core with its stats, and
//! the control core's [`LatencyBook`] that accumulates them into percentiles
//! ([`LatencySummary`]: p50/p90/p99/max) per shard and per operation, since start and over the
//! last [`RECENT_WINDOW`] intervals.
//!
//! Does not own: when a shard reports (see `runtime::shard`) or where the summaries are shown
//! (`stats::MergedStats`, the admin API).
//!
//! Values are microseconds, two significant figures (1% resolution), from 1 µs to one hour;
//! longer durations count as one hour.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value a histogram holds, in microseconds (one hour).
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Significant figures kept (2: 1% resolution, a few KiB per histogram).
const SIGNIFICANT_FIGURES: u8 = 2;

/// How many intervals (about one second each) the "recent" percentiles cover.
pub const RECENT_WINDOW: usize = 10;

/// Whether shards record latencies (`[admin] latency_histograms`, on by default). Read with a
/// relaxed load on the hot path: written once per config generation, never contended.
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Turns recording on or off for every shard (the control core calls this per generation).
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// A measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// An HTTP request: request head read → response fully sent.
    HttpRequest,
    /// A DNS query: received → answer built (UDP, TCP, DoH).
    DnsQuery,
    /// A RADIUS request: received → reply built.
    RadiusRequest,
    /// A TCP connect to a route's target (TCP and HTTP routes).
    TcpConnect,
    /// A TLS handshake on a terminate route.
    TlsHandshake,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: [Operation; 5] =
        [Operation::HttpRequest, Operation::DnsQuery, Operation::RadiusRequest, Operation::TcpConnect, Operation::TlsHandshake];

    /// The name used in stats, JSON and Prometheus labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::HttpRequest => "http_request",
            Operation::DnsQuery => "dns_query",
            Operation::RadiusRequest => "radius_request",
            Operation::TcpConnect => "tcp_connect",
            Operation::TlsHandshake => "tls_handshake",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_FIGURES).ok()
}

/// One interval's histograms of one shard, one per operation that happened in it.
#[derive(Debug, Clone, Default)]
pub struct IntervalHistograms {
    /// Boxed: this rides in every `ToControl::Stats` message, which stays small.
    by_operation: Box<[Option<Histogram<u64>>; 5]>,
}

impl PartialEq for IntervalHistograms {
    fn eq(&self, other: &Self) -> bool {
        self.by_operation.iter().zip(other.by_operation.iter()).all(|(a, b)| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        })
    }
}

impl Eq for IntervalHistograms {}

impl IntervalHistograms {
    /// Adds one duration.
    pub fn record(&mut self, operation: Operation, duration: Duration) {
        let slot = &mut self.by_operation[operation.index()];
        if slot.is_none() {
            *slot = new_histogram();
        }
        if let Some(histogram) = slot {
            let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).max(1);
            histogram.saturating_record(micros);
        }
    }

    /// The histogram of one operation, if it happened.
    pub fn get(&self, operation: Operation) -> Option<&Histogram<u64>> {
        self.by_operation[operation.index()].as_ref()
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &IntervalHistograms) {
        for (mine, theirs) in self.by_operation.iter_mut().zip(other.by_operation.iter()) {
            let Some(theirs) = theirs else { continue };
            match mine {
                Some(mine) => {
                    // Same bounds on both sides, so this cannot fail; a failure would only
                    // lose this interval's values.
                    let _ = mine.add(theirs);
                }
                None => *mine = Some(theirs.clone()),
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.by_operation.iter().all(Option::is_none)
    }

    /// Percentiles per operation name.
    pub fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        Operation::ALL
            .iter()
            .filter_map(|op| self.get(*op).map(|h| (op.name().to_string(), LatencySummary::of(h))))
            .collect()
    }
}

thread_local! {
    /// This thread's (shard's) histograms since its last report.
    static SHARD_RECORDER: RefCell<IntervalHistograms> = RefCell::new(IntervalHistograms::default());
}

/// Records one duration on the calling shard.
pub fn record(operation: Operation, duration: Duration) {
    if !RECORDING.load(Ordering::Relaxed) {
        return;
    }
    SHARD_RECORDER.with(|recorder| recorder.borrow_mut().record(operation, duration));
}

/// Records the time since `started` on the calling shard.
pub fn record_since(operation: Operation, started: std::time::Instant) {
    record(operation, started.elapsed());
}

/// Takes the calling shard's histograms since its last report (and starts a new interval).
pub fn take_interval() -> IntervalHistograms {
    SHARD_RECORDER.with(|recorder| std::mem::take(&mut *recorder.borrow_mut()))
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest value.
    pub max_us: u64,
}

impl LatencySummary {
    /// The summary of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        }
    }
}

/// The control core's accumulated histograms: per shard since start, all shards since start,
/// and all shards over the last [`RECENT_WINDOW`] intervals.
#[derive(Debug, Default)]
pub struct LatencyBook {
    per_shard: BTreeMap<usize, IntervalHistograms>,
    total: IntervalHistograms,
    recent: VecDeque<IntervalHistograms>,
    /// What arrived since the last [`LatencyBook::close_interval`].
    current: IntervalHistograms,
}

impl LatencyBook {
    /// Adds one shard's interval.
    pub fn add(&mut self, shard: usize, interval: &IntervalHistograms) {
        if interval.is_empty() {
            return;
        }
        self.per_shard.entry(shard).or_default().add(interval);
        self.total.add(interval);
        self.current.add(interval);
    }

    /// Ends the current interval (called once per stats write, about every second).
    pub fn close_interval(&mut self) {
        self.recent.push_back(std::mem::take(&mut self.current));
        while self.recent.len() > RECENT_WINDOW {
            self.recent.pop_front();
        }
    }

    /// Percentiles of one shard since start.
    pub fn shard_summaries(&self, shard: usize) -> BTreeMap<String, LatencySummary> {
        self.per_shard.get(&shard).map(IntervalHistograms::summaries).unwrap_or_default()
    }

    /// Percentiles of all shards since start.
    pub fn total_summaries(&self) -> BTreeMap<String, LatencySummary> {
        self.total.summaries()
    }

    /// Percentiles of all shards over the last [`RECENT_WINDOW`] intervals.
    pub fn recent_summaries(&self) -> BTreeMap<String, LatencySummary> {
        let mut window = IntervalHistograms::default();
        for interval in &self.recent {
            window.add(interval);
        }
        window.summaries()
    }

    /// The histograms of all shards since start (Prometheus buckets).
    pub fn total(&self) -> &IntervalHistograms {
        &self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_recorder_collects_an_interval_and_starts_a_new_one() {
        record(Operation::DnsQuery, Duration::from_micros(40));
        record(Operation::DnsQuery, Duration::from_micros(60));
        record(Operation::TcpConnect, Duration::from_millis(2));
        let interval = take_interval();
        assert_eq!(interval.get(Operation::DnsQuery).map(|h| h.len()), Some(2));
        assert_eq!(interval.get(Operation::TcpConnect).map(|h| h.len()), Some(1));
        assert!(interval.get(Operation::HttpRequest).is_none());
        assert!(take_interval().is_empty());
    }

    #[test]
    fn book_merges_shards_into_percentiles() {
        let mut a = IntervalHistograms::default();
        let mut b = IntervalHistograms::default();
        for micros in 1..=90 {
            a.record(Operation::HttpRequest, Duration::from_micros(micros * 10));
        }
        for micros in 91..=100 {
            b.record(Operation::HttpRequest, Duration::from_micros(micros * 10));
        }
        b.record(Operation::TlsHandshake, Duration::from_secs(7200));
        let mut book = LatencyBook::default();
        book.add(0, &a);
        book.add(1, &b);
        book.close_interval();
        let total = book.total_summaries();
        let http = total["http_request"];
        assert_eq!(http.count, 100);
        assert!((495..=505).contains(&http.p50_us), "{http:?}");
        assert!((895..=905).contains(&http.p90_us), "{http:?}");
        assert!((995..=1005).contains(&http.max_us), "{http:?}");
        // Over the highest trackable value: counted as one hour, not lost.
        assert_eq!(total["tls_handshake"].count, 1);
        assert_eq!(book.shard_summaries(1)["http_request"].count, 10);
        assert_eq!(book.recent_summaries()["http_request"].count, 100);
        for _ in 0..RECENT_WINDOW {
            book.close_interval();
        }
        assert!(book.recent_summaries().is_empty());
        assert_eq!(book.total_summaries()["http_request"].count, 100);
    }
}
