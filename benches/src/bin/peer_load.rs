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
//! (256 MiB), `tcp-bulk-16` (16 × 64 MiB), `http-keepalive` (32 connections × 2,000 GETs),
//! `http-latency` (the criterion bench's open loop: 32 connections sharing 5,000 requests/s
//! for 5 s; prints p50/p99/p99.9/max in µs, measured from each request's scheduled time).
//! PEER: `shardgate`, `haproxy`, `nginx` (HTTP only), `direct` (TCP only), `floor` (the
//! least work a proxy can do: an epoll byte relay, `shardgate_benches::floor_relay`, run as
//! a child of this binary on the proxy CPU; a lower bound for every proxy's CPU per op),
//! `splice-floor` (TCP bulk: the least work a `splice(2)` relay can do, blocking threads
//! with shardgate's pipe size and unsent cap, `shardgate_benches::splice_floor`, also a
//! child on the proxy CPU).

use std::time::Duration;

use shardgate_benches::http_load::{fixed_rate_latency, keepalive_requests, HttpBackend};
use shardgate_benches::http_peers::{haproxy_http, nginx_http, shardgate_http};
use shardgate_benches::load::{bulk, short_connections, Backend, BackendKind};
use shardgate_benches::cpus::{pin_current_thread, proxy_cpus};
use shardgate_benches::peers::{direct, free_port, haproxy_tcp, shardgate_tcp, wait_listening, Peer};

/// One round of a workload against a port: wall time, operations done, and their unit
/// (`"byte"` for bulk, else per-operation).
type Round = Box<dyn Fn(u16) -> (Duration, f64, &'static str)>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(FLOOR_CHILD) {
        run_floor_child(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(SPLICE_FLOOR_CHILD) {
        run_splice_floor_child(&args[1..]);
    }
    let (Some(workload), Some(peer_name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: peer-load tcp-short|tcp-bulk-1|tcp-bulk-16|http-keepalive|http-latency shardgate|haproxy|nginx|direct|floor|splice-floor [ROUNDS]");
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
                "floor" => floor(backend.port),
                "splice-floor" => child_relay(SPLICE_FLOOR_CHILD, "splice-floor", backend.port),
                other => fail(&format!("no TCP peer {other}")),
            };
            let run: Round = match workload.as_str() {
                "tcp-short" => Box::new(|port| (short_connections(port, 16, 500), 8000.0, "conn")),
                "tcp-bulk-1" => Box::new(|port| (bulk(port, 1, 256 << 20), (256u64 << 20) as f64, "byte")),
                _ => Box::new(|port| (bulk(port, 16, 64 << 20), (1024u64 << 20) as f64, "byte")),
            };
            (peer, run)
        }
        "http-keepalive" | "http-latency" => {
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
                "floor" => floor(port),
                other => fail(&format!("no HTTP peer {other}")),
            };
            let run: Round = if workload == "http-latency" {
                Box::new(|port| {
                    let started = std::time::Instant::now();
                    let result = fixed_rate_latency(port, 32, 5000, Duration::from_secs(5));
                    let h = &result.latency;
                    println!(
                        "latency µs p50 {} p99 {} p99.9 {} max {} (failed clients {})",
                        h.value_at_quantile(0.5),
                        h.value_at_quantile(0.99),
                        h.value_at_quantile(0.999),
                        h.max(),
                        result.failed_clients
                    );
                    (started.elapsed(), h.len() as f64, "req")
                })
            } else {
                Box::new(|port| (keepalive_requests(port, 32, 2000), 64_000.0, "req"))
            };
            (peer, run)
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

/// The first argument that makes this binary the floor relay instead of the load.
const FLOOR_CHILD: &str = "--floor-relay";

const SPLICE_FLOOR_CHILD: &str = "--splice-floor-relay";

/// Starts this binary again as the floor relay towards `target_port`.
fn floor(target_port: u16) -> Option<Peer> {
    child_relay(FLOOR_CHILD, "floor", target_port)
}

/// Starts this binary again with `flag LISTEN_PORT TARGET_PORT` (a floor relay), as peer
/// `name`.
fn child_relay(flag: &str, name: &'static str, target_port: u16) -> Option<Peer> {
    let port = free_port();
    let exe = std::env::current_exe().ok()?;
    let child = std::process::Command::new(exe)
        .args([flag, &port.to_string(), &target_port.to_string()])
        .spawn()
        .ok()?;
    let peer = Peer::new(name, port, child, tempfile::tempdir().ok()?);
    wait_listening(port).then_some(peer)
}

/// The child side of `splice-floor`: `LISTEN_PORT TARGET_PORT`, every thread on the proxy
/// CPU.
fn run_splice_floor_child(args: &[String]) -> ! {
    let ports: Vec<u16> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [listen, target] = ports[..] else { fail("--splice-floor-relay LISTEN_PORT TARGET_PORT") };
    let listener = std::net::TcpListener::bind(("127.0.0.1", listen)).unwrap_or_else(|e| fail(&format!("bind {listen}: {e}")));
    match shardgate_benches::splice_floor::run(listener, ([127, 0, 0, 1], target).into(), proxy_cpus()) {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(&format!("splice floor: {e}")),
    }
}

/// The child side of [`floor`]: `LISTEN_PORT TARGET_PORT`, pinned to the proxy CPU.
fn run_floor_child(args: &[String]) -> ! {
    let ports: Vec<u16> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [listen, target] = ports[..] else { fail("--floor-relay LISTEN_PORT TARGET_PORT") };
    pin_current_thread(&proxy_cpus());
    let listener = std::net::TcpListener::bind(("127.0.0.1", listen)).unwrap_or_else(|e| fail(&format!("bind {listen}: {e}")));
    match shardgate_benches::floor_relay::run(listener, ([127, 0, 0, 1], target).into()) {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(&format!("floor relay: {e}")),
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
