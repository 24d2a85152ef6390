//! What one latency sample costs a shard: `shardgate_core::latency::record` (thread-local
//! lookup, relaxed load of the on/off switch, hdrhistogram increment), and the same call with
//! recording switched off. Compare with the work per request it is added to (a DNS answer is
//! a few microseconds, a relayed connection tens).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use shardgate_core::latency::{record, set_recording, take_interval, Operation};

fn latency_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency_record");
    let mut micros = 1u64;
    set_recording(true);
    group.bench_function("on", |b| {
        b.iter(|| {
            // Values spread over the histogram's range, like real latencies.
            micros = (micros * 7 + 13) % 50_000 + 1;
            record(Operation::DnsQuery, Duration::from_micros(std::hint::black_box(micros)));
        })
    });
    let _ = take_interval();
    set_recording(false);
    group.bench_function("off", |b| b.iter(|| record(Operation::DnsQuery, Duration::from_micros(std::hint::black_box(37)))));
    set_recording(true);
    group.finish();
}

criterion_group!(benches, latency_record);
criterion_main!(benches);
