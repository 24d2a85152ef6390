//! Prints one line per side-by-side comparison found in criterion's results:
//! `<group> <peer> ratio=<shardgate/peer, higher is better>`.
//!
//! Every function of a group measured the same work per iteration, so the throughput ratio
//! is `peer mean time / shardgate mean time`. Reads `target/criterion` (or the folder given
//! as the first argument).
//!
//! Latency runs that write `<group>.txt` files of `<group> <peer> ... p99_us=N ...` lines
//! (the HTTP open-loop run does) add `<group>_p99 <peer> ratio=<peer p99 / shardgate p99>`:
//! above 1.0 shardgate's p99 is lower (better).
//!
//! Runs measured in alternating rounds write `<name>.ratios` files of `<group> <peer>
//! ratio=<x> ...` lines (`shardgate_benches::alternating`); each is printed as `<group> <peer>
//! ratio=<x>`.

use std::path::{Path, PathBuf};

fn mean_ns(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new").join("estimates.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
    });
    let Ok(groups) = std::fs::read_dir(&root) else {
        eprintln!("no criterion results in {} (run the benches first)", root.display());
        std::process::exit(1);
    };
    let mut groups: Vec<PathBuf> = groups.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    groups.sort();
    let mut printed = 0;
    for group in groups {
        let Some(ours) = mean_ns(&group.join("shardgate")) else { continue };
        let name = group.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(&group) else { continue };
        let mut peers: Vec<(String, f64)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let peer = e.file_name().to_string_lossy().into_owned();
                if peer == "shardgate" || peer == "report" {
                    return None;
                }
                mean_ns(&e.path()).map(|t| (peer, t))
            })
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        for (peer, theirs) in peers {
            println!("{name} {peer} ratio={:.3}", theirs / ours);
            printed += 1;
        }
    }
    printed += print_latency_ratios(&root);
    printed += print_alternating_ratios(&root);
    if printed == 0 {
        eprintln!("no side-by-side groups (with a `shardgate` function) under {}", root.display());
        std::process::exit(1);
    }
}

/// The p99 comparisons of every `<group>.txt` latency file under `root`; returns how many.
fn print_latency_ratios(root: &Path) -> usize {
    let mut printed = 0;
    for text in files_ending(root, "txt") {
        let rows: Vec<(String, String, f64)> = text.lines().filter_map(parse_p99).collect();
        let Some(ours) = rows.iter().find(|(_, peer, _)| peer == "shardgate").map(|r| r.2) else { continue };
        for (group, peer, theirs) in rows.iter().filter(|(_, peer, _)| peer != "shardgate") {
            println!("{group}_p99 {peer} ratio={:.3}", theirs / ours.max(1.0));
            printed += 1;
        }
    }
    printed
}

/// The text of every `*.<extension>` file directly under `root`, in name order (unreadable
/// ones left out).
fn files_ending(root: &Path, extension: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == extension)).collect();
    files.sort();
    files.iter().filter_map(|file| std::fs::read_to_string(file).ok()).collect()
}

/// The comparisons of every `<name>.ratios` file under `root`; returns how many.
fn print_alternating_ratios(root: &Path) -> usize {
    let mut printed = 0;
    for text in files_ending(root, "ratios") {
        for (group, peer, ratio) in text.lines().filter_map(shardgate_benches::alternating::parse_ratio_line) {
            println!("{group} {peer} ratio={ratio:.3}");
            printed += 1;
        }
    }
    printed
}

/// `<group> <peer> ... p99_us=N ...` → (group, peer, N).
fn parse_p99(line: &str) -> Option<(String, String, f64)> {
    let mut words = line.split_whitespace();
    let group = words.next()?.to_string();
    let peer = words.next()?.to_string();
    let p99 = words.find_map(|w| w.strip_prefix("p99_us="))?.parse().ok()?;
    Some((group, peer, p99))
}

#[cfg(test)]
mod tests {
    use super::parse_p99;

    #[test]
    fn reads_the_p99_of_a_latency_line() {
        let line = "http_latency_at_5000rps nginx p50_us=80 p99_us=412 p999_us=900 max_us=2000 requests=25000 failed_clients=0";
        assert_eq!(parse_p99(line), Some(("http_latency_at_5000rps".into(), "nginx".into(), 412.0)));
        assert_eq!(parse_p99("garbage"), None);
    }
}
