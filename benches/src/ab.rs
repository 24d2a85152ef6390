//! A/B comparisons of one build with a feature switched on and off (`metrics_overhead`):
//! rounds measured alternately, medians, the noise of the rounds, and a verdict against a cost
//! goal that says when a difference is too small to tell from the noise.

/// Rounds a verdict needs.
pub const MIN_ROUNDS: usize = 3;

/// The goal: histograms cost less than this (percent).
pub const GOAL_PERCENT: f64 = 2.0;

/// One workload's measured rounds.
pub struct Comparison {
    /// The machine-readable name (`metrics_tcp_short_connections`).
    pub group: &'static str,
    /// The name in the table.
    pub label: &'static str,
    /// The rate's unit.
    pub unit: &'static str,
    /// Rates with the feature on, one per round.
    pub on: Vec<f64>,
    /// Rates with the feature off, one per round.
    pub off: Vec<f64>,
    /// Why it stopped early or was skipped, if it did.
    pub note: Option<String>,
}

/// The median (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Half the range of the rounds, as a percent of the median: the noise level.
pub fn noise_percent(values: &[f64]) -> f64 {
    let (lo, hi) = values.iter().fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let mid = median(values);
    if values.is_empty() || mid <= 0.0 {
        0.0
    } else {
        100.0 * (hi - lo) / 2.0 / mid
    }
}

impl Comparison {
    /// No rounds yet.
    pub fn new(group: &'static str, label: &'static str, unit: &'static str) -> Comparison {
        Comparison { group, label, unit, on: Vec::new(), off: Vec::new(), note: None }
    }

    /// Complete rounds (both sides measured).
    pub fn rounds(&self) -> usize {
        self.on.len().min(self.off.len())
    }

    /// How much slower with the feature on, in percent of off (negative: on was faster).
    pub fn cost_percent(&self) -> f64 {
        let (on, off) = (median(&self.on), median(&self.off));
        if off > 0.0 {
            100.0 * (off - on) / off
        } else {
            0.0
        }
    }

    /// The larger side's noise.
    pub fn noise_percent(&self) -> f64 {
        noise_percent(&self.on).max(noise_percent(&self.off))
    }

    /// The cost against [`GOAL_PERCENT`], or why there is no verdict.
    pub fn verdict(&self) -> &'static str {
        let (cost, noise) = (self.cost_percent(), self.noise_percent());
        if self.rounds() < MIN_ROUNDS {
            "too few rounds"
        } else if cost.abs() <= noise {
            if noise <= GOAL_PERCENT {
                "meets the 2% goal"
            } else {
                "within noise: rerun on a quiet machine"
            }
        } else if cost < GOAL_PERCENT {
            "meets the 2% goal"
        } else {
            "over the 2% goal"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_weigh_the_cost_against_the_noise() {
        let mut quiet = Comparison::new("g", "l", "u");
        quiet.on = vec![990.0, 995.0, 992.0];
        quiet.off = vec![1000.0, 1001.0, 999.0];
        assert!((quiet.cost_percent() - 0.8).abs() < 0.01);
        assert_eq!(quiet.verdict(), "meets the 2% goal");
        let mut costly = Comparison::new("g", "l", "u");
        costly.on = vec![900.0, 901.0, 899.0];
        costly.off = vec![1000.0, 1001.0, 999.0];
        assert_eq!(costly.verdict(), "over the 2% goal");
        let mut noisy = Comparison::new("g", "l", "u");
        noisy.on = vec![700.0, 1000.0, 1300.0];
        noisy.off = vec![800.0, 1050.0, 1200.0];
        assert_eq!(noisy.verdict(), "within noise: rerun on a quiet machine");
        let mut short = Comparison::new("g", "l", "u");
        short.on = vec![1.0];
        short.off = vec![1.0];
        assert_eq!(short.verdict(), "too few rounds");
    }
}
