//! `peer-load WORKLOAD PEER [ROUNDS]`: one side-by-side workload against one peer, outside
//! criterion, printing per round the rate and the **CPU time the proxy spent per operation**
//! (user + system of the peer's process and its children, from `/proc`). CPU per operation
//! is the number to compare on a noisy host: it moves far less than the rate does. `load`
//! is the same for this process (clients and backend), which is what limits a run in which
//! the proxy's CPU is not saturated. The
//! peer stays up for the whole run, so `perf record -p PID` can be pointed at it (the pid is
//! printed first).
//!
//! WORKLOAD: `tcp-short` (16 clients × 500 connections, 1 KiB each way), `tcp-bulk-1`
//! (256 MiB), `tcp-bulk-16` (16 × 16 MiB), `http-keepalive` (32 connections × 2,000 GETs).
//! PEER: `shardgate`, `haproxy`, `nginx` (HTTP only), `direct` (TCP only).

use std::time::Duration;

use shardgate_benches::http_load::{keepalive_requests, HttpBackend};
use shardgate_benches::http_peers::{haproxy_http, nginx_http, shardgate_http};
use shardgate_benches::load::{bulk, short_connections, Backend, BackendKind};
use shardgate_benches::peers::{direct, haproxy_tcp, shardgate_tcp, Peer};

/// One round of a workload against a port: wall time, operations done, and their unit
/// (`"byte"` for bulk, else per-operation).
type Round = Box<dyn Fn(u16) -> (Duration, f64, &'static str)>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(workload), Some(peer_name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: peer-load tcp-short|tcp-bulk-1|tcp-bulk-16|http-keepalive shardgate|haproxy|nginx|direct [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    // Backends live as long as the run.
    let (peer, run): (Option<Peer>, Round) = match workload.as_str() {
        "tcp-short" | "tcp-bulk-1" | "tcp-bulk-16" => {
            let kind = if workload == "tcp-short" { BackendKind::Echo1k } else { BackendKind::Sink };
            let backend = match Backend::start(kind, 32) {
                Ok(b) => b,
                Err(e) => fail(&format!("backend: {e}")),
            };
            let peer = match peer_name.as_str() {
                "shardgate" => shardgate_tcp(backend.port),
                "haproxy" => haproxy_tcp(backend.port),
                "direct" => Some(direct(backend.port)),
                other => fail(&format!("no TCP peer {other}")),
            };
            let run: Round = match workload.as_str() {
                "tcp-short" => Box::new(|port| (short_connections(port, 16, 500), 8000.0, "conn")),
                "tcp-bulk-1" => Box::new(|port| (bulk(port, 1, 256 << 20), (256u64 << 20) as f64, "byte")),
                _ => Box::new(|port| (bulk(port, 16, 16 << 20), (256u64 << 20) as f64, "byte")),
            };
            (peer, run)
        }
        "http-keepalive" => {
            let backend = match HttpBackend::start() {
                Ok(b) => b,
                Err(e) => fail(&format!("backend: {e}")),
            };
            let port = backend.port;
            std::mem::forget(backend);
            let peer = match peer_name.as_str() {
                "shardgate" => shardgate_http(port),
                "haproxy" => haproxy_http(port),
                "nginx" => nginx_http(port),
                other => fail(&format!("no HTTP peer {other}")),
            };
            (peer, Box::new(|port| (keepalive_requests(port, 32, 2000), 64_000.0, "req")))
        }
        other => fail(&format!("unknown workload {other}")),
    };
    let Some(peer) = peer else { fail("the peer did not start") };
    let pid = peer.pid();
    println!("peer {} pid {}", peer.name, pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()));
    for _ in 0..rounds {
        let cpu_before = pid.map(tree_cpu_seconds).unwrap_or(0.0);
        // This process's threads only (the peer is a child, counted above).
        let load_before = tree_cpu_seconds(std::process::id()) - pid.map(tree_cpu_seconds).unwrap_or(0.0);
        let (elapsed, ops, unit) = run(peer.port);
        let cpu = pid.map(tree_cpu_seconds).unwrap_or(0.0) - cpu_before;
        let load = tree_cpu_seconds(std::process::id()) - pid.map(tree_cpu_seconds).unwrap_or(0.0) - load_before;
        let rate = ops / elapsed.as_secs_f64();
        if unit == "byte" {
            println!(
                "{workload} {} {:.2} GiB/s  cpu {:.1} µs/MiB  ({:.0}% of a core)  load {:.1} µs/MiB",
                peer.name,
                rate / (1u64 << 30) as f64,
                cpu * 1e6 / (ops / (1u64 << 20) as f64),
                100.0 * cpu / elapsed.as_secs_f64(),
                load * 1e6 / (ops / (1u64 << 20) as f64)
            );
        } else {
            println!(
                "{workload} {} {:.0} {unit}/s  cpu {:.1} µs/{unit}  ({:.0}% of a core)  load {:.1} µs/{unit}",
                peer.name,
                rate,
                cpu * 1e6 / ops,
                100.0 * cpu / elapsed.as_secs_f64(),
                load * 1e6 / ops
            );
        }
    }
}

fn fail(why: &str) -> ! {
    eprintln!("peer-load: {why}");
    std::process::exit(1);
}

/// CPU seconds (user + system) of `pid`'s threads and of its descendants' threads (nginx's
/// workers are children), from each thread's `/proc/PID/task/TID/schedstat` (nanoseconds).
fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut nanos: u64 = 0;
    let mut pending = vec![pid];
    while let Some(p) = pending.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let path = task.path();
            if let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) {
                nanos += stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
            if let Ok(children) = std::fs::read_to_string(path.join("children")) {
                pending.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    nanos as f64 / 1e9
}
