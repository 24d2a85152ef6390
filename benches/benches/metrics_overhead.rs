//! The hot-path cost of latency histograms: the same shardgate with `[admin]
//! latency_histograms = true` and `= false`, side by side in one run.
//!
//! Both instances run at once, pinned to the same proxy CPU(s); measurements alternate
//! between them round by round (on, off, on, off, ...) so machine noise hits both alike, and
//! the median of the rounds is reported. Workloads:
//! - `metrics_tcp_short_connections`: 16 clients × 50 connections of 1 KiB each way through the
//!   TCP relay (one `tcp_connect` latency recorded per connection);
//! - `metrics_dns_udp_queries`: `dnsperf` for `SHARDGATE_BENCH_DNS_SECS` (default 3) seconds
//!   per round (one `dns_query` latency recorded per query).
//!
//! Prints one line per workload: `<group> on=<rate> off=<rate> cost=<percent>` (cost: how much
//! slower with histograms; negative means noise in favour of "on"). Not a criterion bench:
//! criterion runs functions one after the other, which on a shared machine measures the
//! neighbours more than the switch. Run: `cargo bench -p shardgate-benches --bench
//! metrics_overhead` after `cargo build --release -p shardgate-appliance`.

use std::time::Duration;

use shardgate_benches::dns_peers::{shardgate_dns_named, DnsLoad};
use shardgate_benches::load::{short_connections, Backend, BackendKind};
use shardgate_benches::peers::{admin_section, shardgate_tcp_named};

/// Rounds per workload (each round measures both instances once).
const ROUNDS: usize = 9;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn report(group: &str, on: Vec<f64>, off: Vec<f64>, unit: &str) {
    let (on, off) = (median(on), median(off));
    let cost = if off > 0.0 { 100.0 * (off - on) / off } else { 0.0 };
    println!("{group} on={on:.0} off={off:.0} {unit} cost={cost:.2}%");
}

fn tcp_short_connections() {
    let Ok(backend) = Backend::start(BackendKind::Echo1k, 32) else {
        eprintln!("metrics_tcp_short_connections: no echo backend; skipped");
        return;
    };
    let (Some(on), Some(off)) = (
        shardgate_tcp_named("metrics_on", backend.port, &admin_section(true)),
        shardgate_tcp_named("metrics_off", backend.port, &admin_section(false)),
    ) else {
        eprintln!("metrics_tcp_short_connections: shardgate did not start; skipped");
        return;
    };
    let (clients, per_client) = (16usize, 50usize);
    let rate = |port: u16| {
        let elapsed: Duration = (0..3).map(|_| short_connections(port, clients, per_client)).sum();
        (3 * clients * per_client) as f64 / elapsed.as_secs_f64()
    };
    // Warm-up: connection tables, page cache, backend threads.
    rate(on.port);
    rate(off.port);
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always follows the other.
        if round % 2 == 0 {
            on_rates.push(rate(on.port));
            off_rates.push(rate(off.port));
        } else {
            off_rates.push(rate(off.port));
            on_rates.push(rate(on.port));
        }
    }
    report("metrics_tcp_short_connections", on_rates, off_rates, "conn/s");
}

fn dns_udp_queries() {
    let Ok(dir) = tempfile::tempdir() else { return };
    let secs = std::env::var("SHARDGATE_BENCH_DNS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (Some(on), Some(off)) =
        (shardgate_dns_named("metrics_on", &admin_section(true)), shardgate_dns_named("metrics_off", &admin_section(false)))
    else {
        eprintln!("metrics_dns_udp_queries: shardgate did not start; skipped");
        return;
    };
    let (Ok(load_on), Ok(load_off)) =
        (DnsLoad::new(dir.path(), on.port, Duration::from_secs(secs)), DnsLoad::new(dir.path(), off.port, Duration::from_secs(secs)))
    else {
        return;
    };
    let rate = |load: &DnsLoad| match load.run() {
        Ok(report) => report.queries_per_second(),
        Err(e) => {
            eprintln!("metrics_dns_udp_queries: {e}");
            0.0
        }
    };
    if rate(&load_on) == 0.0 {
        eprintln!("metrics_dns_udp_queries: no answers (dnsperf missing?); skipped");
        return;
    }
    rate(&load_off);
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS.min(5) {
        if round % 2 == 0 {
            on_rates.push(rate(&load_on));
            off_rates.push(rate(&load_off));
        } else {
            off_rates.push(rate(&load_off));
            on_rates.push(rate(&load_on));
        }
    }
    report("metrics_dns_udp_queries", on_rates, off_rates, "queries/s");
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter selects one workload.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("metrics_tcp_short_connections") {
        tcp_short_connections();
    }
    if wanted("metrics_dns_udp_queries") {
        dns_udp_queries();
    }
}
