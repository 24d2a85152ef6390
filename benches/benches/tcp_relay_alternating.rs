//! The TCP relay workloads of `tcp_relay_vs_haproxy` — shardgate, HAProxy (mode tcp with
//! splice) and the direct no-proxy baseline, each proxy pinned to the same CPU(s) — measured
//! in **alternating rounds** (`shardgate_benches::alternating`): every round measures each
//! peer once, the order rotates, and each comparison is the median of the per-round ratios.
//!
//! Why besides criterion: on a shared host the speed of the load CPU drifts over seconds
//! (the direct baseline alone ran 1.9–3.8 GiB/s from one minute to the next on the 2-vCPU VM
//! of `benches/RESULTS.md`), and criterion measures one function for ~9 s, then the next, so
//! its ratio against direct measured the drift as much as the relay. Here both sides of every
//! ratio come from the same few seconds.
//!
//! Workloads (the criterion groups' names with `_alternating`):
//! - `tcp_bulk_1_stream_alternating`: one stream of 256 MiB, twice per measurement;
//! - `tcp_bulk_16_streams_alternating`: 16 streams of 64 MiB (1 GiB) per measurement;
//! - `tcp_short_connections_alternating`: 16 clients × 50 connections of 1 KiB each way,
//!   three times per measurement (every step must finish within 10 s).
//!
//! The bulk workloads also measure the **splice floor** (`splice-floor`: blocking threads
//! doing nothing but `splice`, with shardgate's pipe size and unsent cap, on the proxy CPU):
//! the kernel's TCP work on the proxy CPU alone, the most any splice relay could reach here.
//!
//! Goals counted per round (`at_goal`): the ratio >= 1.0 against HAProxy and >= 0.8
//! of the direct baseline for bulk relay (short connections have no goal against direct).
//!
//! Prints a table, and writes one `<group> <peer> ratio=<median> low= high= rounds=N
//! [goal= at_goal=n] shardgate=<rate> <peer>=<rate> <unit>` line per comparison to
//! `target/criterion/tcp_relay_alternating.ratios`, which `ratio-report` prints with the
//! criterion ratios. Bounded in time: `SHARDGATE_BENCH_ROUNDS` rounds per workload (default
//! 15), and no new round once `SHARDGATE_BENCH_BUDGET_SECS` (default 240) are used. An
//! optional argument filters workloads by name. Run: `cargo bench -p shardgate-benches
//! --bench tcp_relay_alternating` after `cargo build --release -p shardgate-appliance`.

use std::time::{Duration, Instant};

use shardgate_benches::alternating::{round_order, AlternatingRuns};
use shardgate_benches::load::{bulk, short_connections_within, Backend, BackendKind};
use shardgate_benches::cpus::proxy_cpus;
use shardgate_benches::peers::{direct, free_port, haproxy_tcp, shardgate_tcp, wait_listening, Peer};

/// How long one relayed short connection may stall before the workload is given up.
const STALL: Duration = Duration::from_secs(10);

/// What one measurement does against a port: wall time and the work done in the unit.
type Measure = fn(u16) -> Result<(Duration, f64), String>;

struct Workload {
    group: &'static str,
    unit: &'static str,
    backend: BackendKind,
    measure: Measure,
}

const GIB: f64 = (1u64 << 30) as f64;

fn bulk_1(port: u16) -> Result<(Duration, f64), String> {
    let elapsed = bulk(port, 1, 256 << 20) + bulk(port, 1, 256 << 20);
    Ok((elapsed, (512u64 << 20) as f64 / GIB))
}

fn bulk_16(port: u16) -> Result<(Duration, f64), String> {
    Ok((bulk(port, 16, 64 << 20), (1024u64 << 20) as f64 / GIB))
}

fn short(port: u16) -> Result<(Duration, f64), String> {
    let mut elapsed = Duration::ZERO;
    for _ in 0..3 {
        elapsed += short_connections_within(port, 16, 50, STALL)?;
    }
    Ok((elapsed, 3.0 * 16.0 * 50.0))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The goal for a comparison: 1.0 against HAProxy, 0.8 of direct for bulk relay,
/// none for short connections against direct or against the floor.
fn goal_for(group: &str) -> impl Fn(&str) -> Option<f64> + '_ {
    move |peer: &str| match peer {
        "direct" if group.starts_with("tcp_bulk") => Some(0.8),
        "haproxy" => Some(1.0),
        _ => None,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else filters workloads by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let rounds = env_number("SHARDGATE_BENCH_ROUNDS", 15).max(1) as usize;
    let budget = Duration::from_secs(env_number("SHARDGATE_BENCH_BUDGET_SECS", 240));
    let started = Instant::now();
    let workloads = [
        Workload { group: "tcp_bulk_1_stream_alternating", unit: "GiB/s", backend: BackendKind::Sink, measure: bulk_1 },
        Workload { group: "tcp_bulk_16_streams_alternating", unit: "GiB/s", backend: BackendKind::Sink, measure: bulk_16 },
        Workload { group: "tcp_short_connections_alternating", unit: "conn/s", backend: BackendKind::Echo1k, measure: short },
    ];
    let mut lines = Vec::new();
    for workload in workloads.iter().filter(|w| filter.as_deref().is_none_or(|f| w.group.contains(f))) {
        let backend = match Backend::start(workload.backend, 32) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: backend did not start: {e}", workload.group);
                continue;
            }
        };
        let mut peers: Vec<Peer> = Vec::new();
        peers.extend(shardgate_tcp(backend.port));
        peers.extend(haproxy_tcp(backend.port));
        peers.push(direct(backend.port));
        if workload.group.starts_with("tcp_bulk") {
            peers.extend(splice_floor(backend.port));
        }
        if !peers.iter().any(|p| p.name == "shardgate") {
            eprintln!("{}: shardgate did not start; skipped", workload.group);
            continue;
        }
        let mut runs = AlternatingRuns::new(workload.group, peers.iter().map(|p| p.name).collect(), workload.unit);
        let mut stopped = None;
        for round in 0..rounds {
            if started.elapsed() > budget {
                stopped = Some(format!("time budget of {} s used", budget.as_secs()));
                break;
            }
            let mut rates = vec![0.0; peers.len()];
            for i in round_order(round, peers.len()) {
                match (workload.measure)(peers[i].port) {
                    Ok((elapsed, work)) => rates[i] = work / elapsed.as_secs_f64().max(1e-9),
                    Err(e) => {
                        stopped = Some(format!("{}: {e}", peers[i].name));
                        break;
                    }
                }
            }
            if stopped.is_some() {
                break;
            }
            runs.rounds.push(rates);
        }
        if let Some(why) = &stopped {
            eprintln!("{}: stopped after {} rounds ({why})", workload.group, runs.rounds.len());
        }
        print_table(&runs);
        lines.extend(runs.report_lines(goal_for(workload.group)));
    }
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    for line in &lines {
        println!("{line}");
    }
    if lines.is_empty() {
        // A filter that matched no workload (run-peers.sh passes criterion filters along):
        // keep the results of the last run that measured something.
        return;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let written = std::fs::create_dir_all(&out).and_then(|()| {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(out.join("tcp_relay_alternating.ratios"), text)
    });
    if let Err(e) = written {
        eprintln!("could not write {}: {e}", out.join("tcp_relay_alternating.ratios").display());
    }
}

/// The splice floor (`shardgate_benches::splice_floor`) on the proxy CPU(s), as threads of
/// this process, towards `target_port`.
fn splice_floor(target_port: u16) -> Option<Peer> {
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
    std::thread::spawn(move || shardgate_benches::splice_floor::run(listener, ([127, 0, 0, 1], target_port).into(), proxy_cpus()));
    wait_listening(port).then(|| Peer::in_process("splice-floor", port))
}

fn print_table(runs: &AlternatingRuns) {
    println!();
    println!("{} ({} rounds, rates in {}; per-round ratio shardgate/peer)", runs.group, runs.rounds.len(), runs.unit);
    let rate = |r: f64| if r >= 1000.0 { format!("{r:.0}") } else { format!("{r:.2}") };
    for (n, round) in runs.rounds.iter().enumerate() {
        let cells: Vec<String> = runs.peers.iter().zip(round).map(|(p, r)| format!("{p} {}", rate(*r))).collect();
        println!("  round {:>2}: {}", n + 1, cells.join("  "));
    }
    for r in runs.ratios(goal_for(&runs.group)) {
        let goal = match r.goal {
            Some((g, n)) => format!("{n}/{} rounds at >= {g:.2}", r.rounds),
            None => format!("{} rounds, no goal", r.rounds),
        };
        println!(
            "  vs {:<8} median ratio {:.3} (low {:.3}, high {:.3}; {goal}); median rates {} / {}",
            r.peer,
            r.median,
            r.low,
            r.high,
            rate(r.ours),
            rate(r.theirs)
        );
    }
}
