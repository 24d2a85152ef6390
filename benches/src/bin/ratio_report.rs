//! Prints one line per side-by-side comparison found in criterion's results:
//! `<group> <peer> ratio=<shardgate/peer, higher is better>`.
//!
//! Every function of a group measured the same work per iteration, so the throughput ratio
//! is `peer mean time / shardgate mean time`. Reads `target/criterion` (or the folder given
//! as the first argument).

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
    if printed == 0 {
        eprintln!("no side-by-side groups (with a `shardgate` function) under {}", root.display());
        std::process::exit(1);
    }
}
