//! Side by side: the same TCP workloads through shardgate, through HAProxy (mode tcp with
//! splice) and directly to the backend, the proxy pinned to the same CPU(s) each time.
//!
//! Groups (each has `shardgate`, `haproxy` and `direct` functions):
//! - `tcp_bulk_1_stream`: one stream of 256 MiB;
//! - `tcp_bulk_16_streams`: 16 streams of 64 MiB (1 GiB an iteration: with 16 MiB streams one
//!   iteration took anywhere from 33 to 98 ms for the same peer, as the load CPU's scheduling
//!   of 48 threads changed, and the group's ratio was noise; benches/RESULTS.md, 2026-12-03);
//! - `tcp_short_connections`: 16 clients × 50 connections of 1 KiB each way.
//!
//! A peer that cannot be started (not installed) is skipped with a message; `ratio-report`
//! then prints nothing for it.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_benches::load::{bulk, short_connections, Backend, BackendKind};
use shardgate_benches::peers::{direct, haproxy_tcp, shardgate_tcp, Peer};

fn peers(backend_port: u16) -> Vec<Peer> {
    let mut peers = Vec::new();
    peers.extend(shardgate_tcp(backend_port));
    peers.extend(haproxy_tcp(backend_port));
    peers.push(direct(backend_port));
    peers
}

fn bulk_groups(c: &mut Criterion) {
    let backend = Backend::start(BackendKind::Sink, 32).expect("sink backend");
    let peers = peers(backend.port);
    for (group_name, streams, bytes) in [("tcp_bulk_1_stream", 1usize, 256usize << 20), ("tcp_bulk_16_streams", 16, 64 << 20)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
        group.throughput(Throughput::Bytes((streams * bytes) as u64));
        for peer in &peers {
            group.bench_function(peer.name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| bulk(peer.port, streams, bytes)).sum())
            });
        }
        group.finish();
    }
}

fn short_connection_group(c: &mut Criterion) {
    let backend = Backend::start(BackendKind::Echo1k, 32).expect("echo backend");
    let peers = peers(backend.port);
    let (clients, per_client) = (16usize, 50usize);
    let mut group = c.benchmark_group("tcp_short_connections");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements((clients * per_client) as u64));
    for peer in &peers {
        group.bench_function(peer.name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| short_connections(peer.port, clients, per_client)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, bulk_groups, short_connection_group);
criterion_main!(benches);
