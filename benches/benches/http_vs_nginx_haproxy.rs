//! Side by side: the HTTP/1.1 reverse proxy in shardgate, nginx and HAProxy, same backend,
//! same CPU.
//!
//! - `http_keepalive_requests`: 32 keep-alive clients × 500 sequential GETs (13-byte
//!   answers) — requests/s through the proxy;
//! - then, outside criterion, latency percentiles at a fixed 5,000 requests/s over 32
//!   connections for 5 s each (open loop, from the scheduled send time), printed as
//!   `http_latency_at_5000rps <peer> p50_us=.. p99_us=.. p999_us=.. max_us=.. requests=..
//!   failed_clients=..` (a client whose response is missing for 10 s stops and is counted, so
//!   the group is bounded in time). The same lines are appended to
//!   `target/criterion/http_latency_at_5000rps.txt`, where `ratio-report` reads the p99s.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_benches::http_load::{fixed_rate_latency, keepalive_requests, HttpBackend};
use shardgate_benches::http_peers::{haproxy_http, nginx_http, shardgate_http};

fn http(c: &mut Criterion) {
    let backend = HttpBackend::start().expect("HTTP backend");
    let (connections, per_connection) = (32usize, 500usize);
    let mut group = c.benchmark_group("http_keepalive_requests");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements((connections * per_connection) as u64));
    for peer in [shardgate_http(backend.port), nginx_http(backend.port), haproxy_http(backend.port)].into_iter().flatten() {
        group.bench_function(peer.name, |b| b.iter_custom(|iters| (0..iters).map(|_| keepalive_requests(peer.port, connections, per_connection)).sum()));
    }
    group.finish();

    let mut lines = String::new();
    for peer in [shardgate_http(backend.port), nginx_http(backend.port), haproxy_http(backend.port)].into_iter().flatten() {
        let result = fixed_rate_latency(peer.port, 32, 5000, Duration::from_secs(5));
        let h = &result.latency;
        let line = format!(
            "http_latency_at_5000rps {} p50_us={} p99_us={} p999_us={} max_us={} requests={} failed_clients={}",
            peer.name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len(),
            result.failed_clients
        );
        println!("{line}");
        lines.push_str(&line);
        lines.push('\n');
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion/http_latency_at_5000rps.txt");
    if let Err(e) = std::fs::create_dir_all(file.parent().unwrap_or(std::path::Path::new("."))).and_then(|()| std::fs::write(&file, lines)) {
        eprintln!("could not write {}: {e}", file.display());
    }
}

criterion_group!(benches, http);
criterion_main!(benches);
