//! Side-by-side comparisons measured in alternating rounds.
//!
//! Every round measures each peer once, in an order that rotates from round to round (no peer
//! always runs first or right after another), and a comparison is the **median of the
//! per-round ratios**: shardgate's rate over the peer's, both from the same round, seconds
//! apart. A host whose speed drifts over seconds then moves both sides of each ratio alike.
//! Criterion runs one function after the other for several seconds each, so on a shared host
//! its ratios carry the drift too: on the 2-vCPU VM of `benches/RESULTS.md` the direct
//! baseline alone ran anywhere from 1.9 to 3.8 GiB/s from one minute to the next.
//!
//! Owns the round order, the ratios and their text form (`<group> <peer> ratio=<x> ...`,
//! written to `target/criterion/<name>.ratios`, read back by `ratio-report`). Does not own
//! the workloads or the peers (`load`, `peers`).

use crate::ab::median;

/// The peer order of round `round` for `peers` peers: `0, 1, ..., n-1` rotated left by
/// `round`.
pub fn round_order(round: usize, peers: usize) -> Vec<usize> {
    (0..peers).map(|i| (i + round) % peers.max(1)).collect()
}

/// One workload's rates: one row per round, one column per peer.
#[derive(Debug, Clone)]
pub struct AlternatingRuns {
    /// The machine-readable name (`tcp_bulk_1_stream_alternating`).
    pub group: String,
    /// The peers, in column order; `shardgate` is the one the others are compared with.
    pub peers: Vec<&'static str>,
    /// The rates' unit (`GiB/s`, `conn/s`).
    pub unit: &'static str,
    /// Complete rounds: every peer measured once.
    pub rounds: Vec<Vec<f64>>,
}

/// One comparison of shardgate with one peer over all rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRatio {
    /// The peer compared with.
    pub peer: &'static str,
    /// Median of the per-round ratios (shardgate / peer; higher is better for shardgate).
    pub median: f64,
    /// The lowest and highest per-round ratio.
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// The goal given to [`AlternatingRuns::ratios`] for this peer, if there is one, and in
    /// how many rounds the ratio reached it.
    pub goal: Option<(f64, usize)>,
    /// Rounds compared.
    pub rounds: usize,
    /// Median rate of shardgate and of the peer over the same rounds.
    pub ours: f64,
    /// See `ours`.
    pub theirs: f64,
}

impl AlternatingRuns {
    /// No rounds yet.
    pub fn new(group: impl Into<String>, peers: Vec<&'static str>, unit: &'static str) -> AlternatingRuns {
        AlternatingRuns { group: group.into(), peers, unit, rounds: Vec::new() }
    }

    /// Shardgate against every other peer; `goal(peer)` is the ratio a round must reach to
    /// count in [`RoundRatio::goal`] (`None`: no goal against that peer). Empty without a
    /// `shardgate` column or rounds.
    pub fn ratios(&self, goal: impl Fn(&str) -> Option<f64>) -> Vec<RoundRatio> {
        let Some(ours) = self.peers.iter().position(|p| *p == "shardgate") else { return Vec::new() };
        if self.rounds.is_empty() {
            return Vec::new();
        }
        let column = |i: usize| self.rounds.iter().map(|r| r[i]).collect::<Vec<f64>>();
        let our_rates = column(ours);
        self.peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ours)
            .map(|(i, peer)| {
                let per_round: Vec<f64> = self.rounds.iter().map(|r| if r[i] > 0.0 { r[ours] / r[i] } else { 0.0 }).collect();
                let goal = goal(peer).map(|g| (g, per_round.iter().filter(|r| **r >= g).count()));
                RoundRatio {
                    peer,
                    median: median(&per_round),
                    low: per_round.iter().copied().fold(f64::MAX, f64::min),
                    high: per_round.iter().copied().fold(0.0, f64::max),
                    goal,
                    rounds: per_round.len(),
                    ours: median(&our_rates),
                    theirs: median(&column(i)),
                }
            })
            .collect()
    }

    /// One line per comparison: `<group> <peer> ratio=<median> low=.. high=.. rounds=N
    /// [goal=.. at_goal=n] shardgate=<rate> <peer>=<rate> <unit>`.
    pub fn report_lines(&self, goal: impl Fn(&str) -> Option<f64>) -> Vec<String> {
        self.ratios(goal)
            .into_iter()
            .map(|r| {
                let goal = r.goal.map(|(g, n)| format!(" goal={g:.2} at_goal={n}")).unwrap_or_default();
                format!(
                    "{} {} ratio={:.3} low={:.3} high={:.3} rounds={}{goal} shardgate={:.3} {}={:.3} {}",
                    self.group, r.peer, r.median, r.low, r.high, r.rounds, r.ours, r.peer, r.theirs, self.unit
                )
            })
            .collect()
    }
}

/// `<group> <peer> ratio=<x> ...` → (group, peer, x).
pub fn parse_ratio_line(line: &str) -> Option<(String, String, f64)> {
    let mut words = line.split_whitespace();
    let group = words.next()?.to_string();
    let peer = words.next()?.to_string();
    let ratio = words.next()?.strip_prefix("ratio=")?.parse().ok()?;
    Some((group, peer, ratio))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_takes_every_place_in_turn() {
        assert_eq!(round_order(0, 3), vec![0, 1, 2]);
        assert_eq!(round_order(1, 3), vec![1, 2, 0]);
        assert_eq!(round_order(2, 3), vec![2, 0, 1]);
        assert_eq!(round_order(3, 3), vec![0, 1, 2]);
        assert_eq!(round_order(5, 1), vec![0]);
    }

    #[test]
    fn ratios_are_taken_within_rounds_then_the_median() {
        let mut runs = AlternatingRuns::new("g", vec!["shardgate", "haproxy", "direct"], "GiB/s");
        // The host speeds up threefold in round 2; each round's ratios stay the same.
        runs.rounds.push(vec![2.0, 1.6, 2.5]);
        runs.rounds.push(vec![6.0, 4.8, 7.5]);
        runs.rounds.push(vec![2.2, 2.0, 2.0]);
        let ratios = runs.ratios(|peer| Some(if peer == "direct" { 0.8 } else { 1.0 }));
        assert_eq!(ratios.len(), 2);
        let haproxy = &ratios[0];
        assert_eq!(haproxy.peer, "haproxy");
        assert!((haproxy.median - 1.25).abs() < 1e-9);
        assert!((haproxy.low - 1.1).abs() < 1e-9 && (haproxy.high - 1.25).abs() < 1e-9);
        assert_eq!((haproxy.goal, haproxy.rounds), (Some((1.0, 3)), 3));
        let direct = &ratios[1];
        assert!((direct.median - 0.8).abs() < 1e-9);
        assert_eq!(direct.goal, Some((0.8, 3)));
        // The medians of the rates alone would say 2.2 / 2.5 = 0.88: not what any round saw.
        assert!((direct.ours / direct.theirs - 0.88).abs() < 1e-9);
        let lines = runs.report_lines(|peer| (peer == "haproxy").then_some(1.2));
        assert!(lines[0].starts_with("g haproxy ratio=1.250 low=1.100 high=1.250 rounds=3 goal=1.20 at_goal=2 "), "{}", lines[0]);
        assert!(lines[1].starts_with("g direct ratio=0.800 low=0.800 high=1.100 rounds=3 shardgate="), "{}", lines[1]);
        assert_eq!(parse_ratio_line(&lines[1]), Some(("g".into(), "direct".into(), 0.8)));
    }

    #[test]
    fn no_comparison_without_shardgate_or_rounds() {
        let runs = AlternatingRuns::new("g", vec!["shardgate", "direct"], "GiB/s");
        assert!(runs.ratios(|_| Some(1.0)).is_empty());
        let mut other = AlternatingRuns::new("g", vec!["haproxy", "direct"], "GiB/s");
        other.rounds.push(vec![1.0, 1.0]);
        assert!(other.ratios(|_| Some(1.0)).is_empty());
        assert_eq!(parse_ratio_line("g p ratio=x"), None);
        assert_eq!(parse_ratio_line("g p p99_us=3"), None);
    }
}
