//! The hot-path cost of latency histograms: the same shardgate with `[admin]
//! latency_histograms = true` and `= false`, side by side in one run.
//!
//! Both instances run at once, pinned to the same proxy CPU(s); measurements alternate
//! between them round by round (on, off, off, on, ...) so machine noise hits both alike, and
//! the median of the rounds is reported. Workloads:
//! - `metrics_tcp_short_connections`: 16 clients × 50 connections of 1 KiB each way through the
//!   TCP relay (one `tcp_connect` latency recorded per connection);
//! - `metrics_dns_udp_queries`: `dnsperf` for `SHARDGATE_BENCH_DNS_SECS` (default 3) seconds
//!   per round (one `dns_query` latency recorded per query).
//!
//! Bounded in time: the whole run stops starting rounds once `SHARDGATE_BENCH_BUDGET_SECS`
//! (default 240) are used, each workload gets its share (half each), every relayed
//! connection must progress within 10 s, and `dnsperf` runs for its fixed duration. A
//! workload reports whatever complete rounds it got (at least three are wanted for a verdict).
//!
//! Prints a table — each workload's median rate with histograms on and off, the cost (how
//! much slower with histograms; negative means noise in favour of "on"), the spread of the
//! rounds (the noise a difference must beat) and a verdict against the 2% goal — then
//! one machine-readable line per workload: `<group> on=<rate> off=<rate> <unit> cost=<percent>
//! noise=<percent> rounds=<n>`. Not a criterion bench: criterion runs functions one after the
//! other, which on a shared machine measures the neighbours more than the switch. Run:
//! `cargo bench -p shardgate-benches --bench metrics_overhead` after
//! `cargo build --release -p shardgate-appliance`.

use std::time::{Duration, Instant};

use shardgate_benches::ab::{median, Comparison};
use shardgate_benches::dns_peers::{shardgate_dns_named, DnsLoad};
use shardgate_benches::load::{short_connections_within, Backend, BackendKind};
use shardgate_benches::peers::{admin_section, shardgate_tcp_named};

/// Rounds per workload at most (each round measures both instances once).
const ROUNDS: usize = 9;

/// How long a relayed connection may stall before the round is given up.
const STALL: Duration = Duration::from_secs(10);

fn rate_text(rate: f64) -> String {
    if rate >= 10_000.0 {
        format!("{:.1}k", rate / 1000.0)
    } else {
        format!("{rate:.0}")
    }
}

fn report(results: &[Comparison], started: Instant) {
    println!();
    println!("metrics overhead: latency histograms on vs off (two instances, alternating rounds, medians)");
    println!("{:<26} {:>13} {:>13} {:>8} {:>8} {:>6}  verdict", "workload", "on", "off", "cost", "noise", "rounds");
    for r in results {
        if r.rounds() == 0 {
            println!("{:<26} {:>13} {:>13} {:>8} {:>8} {:>6}  {}", r.label, "-", "-", "-", "-", 0, r.note.as_deref().unwrap_or("skipped"));
            continue;
        }
        println!(
            "{:<26} {:>13} {:>13} {:>7.2}% {:>7.1}% {:>6}  {}{}",
            r.label,
            format!("{} {}", rate_text(median(&r.on)), r.unit),
            format!("{} {}", rate_text(median(&r.off)), r.unit),
            r.cost_percent(),
            r.noise_percent(),
            r.rounds(),
            r.verdict(),
            r.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
        );
    }
    println!("cost: how much slower with histograms (negative: noise in favour of on); noise: half the range of the rounds");
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    println!();
    for r in results.iter().filter(|r| r.rounds() > 0) {
        println!(
            "{} on={:.0} off={:.0} {} cost={:.2}% noise={:.1}% rounds={}",
            r.group,
            median(&r.on),
            median(&r.off),
            r.unit,
            r.cost_percent(),
            r.noise_percent(),
            r.rounds()
        );
    }
}

/// Runs rounds until [`ROUNDS`] or `deadline`, alternating which instance goes first; a
/// failed measurement ends the workload with a note.
fn alternate(result: &mut Comparison, deadline: Instant, mut measure: impl FnMut(bool) -> Result<f64, String>) {
    for round in 0..ROUNDS {
        if Instant::now() >= deadline {
            result.note = Some(format!("time budget used after {round} rounds"));
            return;
        }
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for on in order {
            match measure(on) {
                Ok(rate) if on => result.on.push(rate),
                Ok(rate) => result.off.push(rate),
                Err(e) => {
                    result.note = Some(format!("stopped: {e}"));
                    // Keep only complete rounds.
                    let complete = result.rounds();
                    result.on.truncate(complete);
                    result.off.truncate(complete);
                    return;
                }
            }
        }
    }
}

fn tcp_short_connections(deadline: Instant) -> Comparison {
    let mut result = Comparison::new("metrics_tcp_short_connections", "relay short connections", "conn/s");
    let Ok(backend) = Backend::start(BackendKind::Echo1k, 32) else {
        result.note = Some("no echo backend".into());
        return result;
    };
    let (Some(on), Some(off)) = (
        shardgate_tcp_named("metrics_on", backend.port, &admin_section(true)),
        shardgate_tcp_named("metrics_off", backend.port, &admin_section(false)),
    ) else {
        result.note = Some("shardgate did not start (cargo build --release -p shardgate-appliance first)".into());
        return result;
    };
    let (clients, per_client, batches) = (16usize, 50usize, 3usize);
    let rate = |port: u16| -> Result<f64, String> {
        let mut elapsed = Duration::ZERO;
        for _ in 0..batches {
            elapsed += short_connections_within(port, clients, per_client, STALL)?;
        }
        Ok((batches * clients * per_client) as f64 / elapsed.as_secs_f64())
    };
    // Warm-up: connection tables, page cache, backend threads.
    if let Err(e) = rate(on.port).and_then(|_| rate(off.port)) {
        result.note = Some(format!("warm-up failed: {e}"));
        return result;
    }
    alternate(&mut result, deadline, |histograms| rate(if histograms { on.port } else { off.port }));
    result
}

fn dns_udp_queries(deadline: Instant) -> Comparison {
    let mut result = Comparison::new("metrics_dns_udp_queries", "DNS UDP queries", "q/s");
    let Ok(dir) = tempfile::tempdir() else {
        result.note = Some("no temporary folder".into());
        return result;
    };
    let secs = std::env::var("SHARDGATE_BENCH_DNS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (Some(on), Some(off)) =
        (shardgate_dns_named("metrics_on", &admin_section(true)), shardgate_dns_named("metrics_off", &admin_section(false)))
    else {
        result.note = Some("shardgate did not start (cargo build --release -p shardgate-appliance first)".into());
        return result;
    };
    let (Ok(load_on), Ok(load_off)) =
        (DnsLoad::new(dir.path(), on.port, Duration::from_secs(secs)), DnsLoad::new(dir.path(), off.port, Duration::from_secs(secs)))
    else {
        result.note = Some("cannot write the dnsperf query file".into());
        return result;
    };
    let rate = |load: &DnsLoad| -> Result<f64, String> {
        let rate = load.run()?.queries_per_second();
        if rate > 0.0 {
            Ok(rate)
        } else {
            Err("no answers".into())
        }
    };
    // Warm-up, and the check that dnsperf is there.
    if let Err(e) = rate(&load_on).and_then(|_| rate(&load_off)) {
        result.note = Some(format!("skipped: {e}"));
        return result;
    }
    alternate(&mut result, deadline, |histograms| rate(if histograms { &load_on } else { &load_off }));
    result
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter selects one workload.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let budget = Duration::from_secs(std::env::var("SHARDGATE_BENCH_BUDGET_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(240));
    let started = Instant::now();
    let both = wanted("metrics_tcp_short_connections") && wanted("metrics_dns_udp_queries");
    let mut results = Vec::new();
    if wanted("metrics_tcp_short_connections") {
        // Half the budget when both run; the DNS workload gets what is left.
        let share = if both { budget / 2 } else { budget };
        results.push(tcp_short_connections(started + share));
    }
    if wanted("metrics_dns_udp_queries") {
        results.push(dns_udp_queries(started + budget));
    }
    report(&results, started);
}
