//! Side by side: MAB Access-Requests/s from shardgate and FreeRADIUS with the same policy (the
//! same allowed MACs, PAP check, VLAN reply, Message-Authenticator required), each pinned to
//! the same proxy CPU(s), driven by the same load generator ([`AccessLoad`]) from the load
//! CPUs with `SHARDGATE_BENCH_RADIUS_IN_FLIGHT` (default 128) requests outstanding.
//!
//! Group `radius_access_requests`, functions `shardgate` and `freeradius`; `ratio-report`
//! prints `radius_access_requests freeradius ratio=<shardgate/freeradius>`. A server that
//! cannot be started (not installed) is skipped with a message. After each function the
//! totals (replies/s, timeouts) are printed to stderr.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_benches::radius_load::{bench_macs, AccessLoad, LoadReport};
use shardgate_benches::radius_peers::{freeradius, shardgate_radius};

const SECRET: &str = "bench-shared-secret";
/// Requests per measured iteration.
const REQUESTS: usize = 20_000;
/// MACs on the allow-list of both servers.
const MACS: usize = 256;

fn in_flight() -> usize {
    std::env::var("SHARDGATE_BENCH_RADIUS_IN_FLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

fn radius_access_requests(c: &mut Criterion) {
    let macs = bench_macs(MACS);
    let mut peers = Vec::new();
    peers.extend(shardgate_radius(SECRET, &macs));
    peers.extend(freeradius(SECRET, &macs));
    let mut group = c.benchmark_group("radius_access_requests");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(REQUESTS as u64));
    for peer in &peers {
        let load = AccessLoad {
            target: peer.auth,
            secret: SECRET.as_bytes().to_vec(),
            macs: macs.clone(),
            in_flight: in_flight(),
            timeout: Duration::from_secs(1),
        };
        let mut total = LoadReport::default();
        group.bench_function(peer.name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let report = load.run(REQUESTS).expect("RADIUS load");
                    total.add(&report);
                    elapsed += report.elapsed;
                }
                elapsed
            })
        });
        if total.sent == 0 {
            continue; // filtered out on the command line
        }
        eprintln!(
            "radius_access_requests {}: {} sent, {} accepted, {} other replies, {} timeouts, {:.0} replies/s overall (in flight {})",
            peer.name,
            total.sent,
            total.accepts,
            total.other_replies,
            total.timeouts,
            total.replies_per_second(),
            in_flight()
        );
    }
    group.finish();
}

criterion_group!(benches, radius_access_requests);
criterion_main!(benches);
