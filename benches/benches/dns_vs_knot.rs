//! Side by side: authoritative UDP queries/s from shardgate, Knot DNS and NSD serving the same
//! zone on the same CPU(s) (see `shardgate_benches::dns_peers`), loaded by Debian's `dnsperf`
//! from the load CPUs.
//!
//! Group `dns_udp_queries`, functions `shardgate`, `knot` and `nsd`; `ratio-report` prints
//! `dns_udp_queries knot ratio=<shardgate/knot>` (and nsd). Each iteration is one `dnsperf`
//! run of `SHARDGATE_BENCH_DNS_SECS` seconds (default 3); it reports to criterion the time the
//! server needed for [`QUERIES`] *answered* queries (run time × QUERIES / completed), so lost
//! queries make a server slower, and they are also counted and printed to stderr after each
//! function with the overall queries/s. A server that cannot start is skipped with a message.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use shardgate_benches::dns_peers::{knot, nsd, shardgate_dns, DnsLoad, DnsLoadReport, DnsPeer};

/// Starts one server under test (`None`: it could not be started; the reason was printed).
type StartPeer = fn() -> Option<DnsPeer>;

/// Answered queries one measured iteration stands for.
const QUERIES: u64 = 100_000;

fn run_secs() -> u64 {
    std::env::var("SHARDGATE_BENCH_DNS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

fn dns_udp_queries(c: &mut Criterion) {
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("dns_udp_queries: no temporary folder; skipped");
        return;
    };
    let mut group = c.benchmark_group("dns_udp_queries");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(QUERIES));
    // One server at a time: each gets the proxy CPUs to itself.
    let starters: [(&str, StartPeer); 3] = [("shardgate", shardgate_dns), ("knot", knot), ("nsd", nsd)];
    for (name, start) in starters {
        let Some(peer) = start() else {
            eprintln!("dns_udp_queries {name}: skipped (the server could not be started)");
            continue;
        };
        let load = match DnsLoad::new(dir.path(), peer.port, Duration::from_secs(run_secs())) {
            Ok(load) => load,
            Err(e) => {
                eprintln!("dns_udp_queries {name}: cannot write the query file: {e}; skipped");
                continue;
            }
        };
        let mut total = DnsLoadReport::default();
        let mut failure = None;
        group.bench_function(peer.name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    match load.run() {
                        Ok(report) if report.completed > 0 => {
                            total.add(&report);
                            elapsed += report.run_time.mul_f64(QUERIES as f64 / report.completed as f64);
                        }
                        Ok(_) => {
                            failure = Some("no query answered".to_string());
                            elapsed += Duration::from_secs(3600);
                        }
                        Err(e) => {
                            failure = Some(e);
                            elapsed += Duration::from_secs(3600);
                        }
                    }
                }
                elapsed
            })
        });
        if let Some(e) = failure {
            eprintln!("dns_udp_queries {name}: load failed: {e}");
        }
        if total.sent == 0 {
            continue; // filtered out on the command line
        }
        eprintln!(
            "dns_udp_queries {name}: {} sent, {} answered, {} lost ({:.3}%), {:.0} answered queries/s overall",
            total.sent,
            total.completed,
            total.lost,
            100.0 * total.lost as f64 / total.sent as f64,
            total.queries_per_second()
        );
    }
    group.finish();
}

criterion_group!(benches, dns_udp_queries);
criterion_main!(benches);
