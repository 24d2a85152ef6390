//! Side by side: TLS termination in shardgate (rustls; kTLS where the kernel has it), in
//! HAProxy and in nginx's stream module (both OpenSSL), same certificate, same backend, same
//! CPU(s).
//!
//! - `tls_handshakes`: 8 clients × 40 new connections, full handshakes (no resumption), 1 KiB
//!   each way;
//! - `tls_bulk_1_stream`: 128 MiB through one TLS stream to a sink.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_benches::load::{Backend, BackendKind};
use shardgate_benches::tls_load::{bulk, handshakes};
use shardgate_benches::tls_peers::{haproxy_tls, nginx_tls, shardgate_tls};

fn tls(c: &mut Criterion) {
    let echo = Backend::start(BackendKind::Echo1k, 32).expect("echo backend");
    let sink = Backend::start(BackendKind::Sink, 8).expect("sink backend");
    let (clients, per_client) = (8usize, 40usize);
    let mut group = c.benchmark_group("tls_handshakes");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements((clients * per_client) as u64));
    for peer in [shardgate_tls(echo.port), haproxy_tls(echo.port), nginx_tls(echo.port)].into_iter().flatten() {
        group.bench_function(peer.name, |b| b.iter_custom(|iters| (0..iters).map(|_| handshakes(peer.port, clients, per_client)).sum()));
    }
    group.finish();

    let bytes = 128usize << 20;
    let mut group = c.benchmark_group("tls_bulk_1_stream");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(bytes as u64));
    for peer in [shardgate_tls(sink.port), haproxy_tls(sink.port), nginx_tls(sink.port)].into_iter().flatten() {
        group.bench_function(peer.name, |b| b.iter_custom(|iters| (0..iters).map(|_| bulk(peer.port, 1, bytes)).sum()));
    }
    group.finish();
}

criterion_group!(benches, tls);
criterion_main!(benches);
