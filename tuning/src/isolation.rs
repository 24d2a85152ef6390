//! [`CpuIsolationAdvice`]: kernel command-line advice that keeps the shard CPUs for the shards.
//!
//! Owns: turning the shard CPU list and the host's possible CPUs into `isolcpus=`,
//! `nohz_full=`, `rcu_nocbs=` and `irqaffinity=` arguments, and saying which are already on the
//! running kernel's command line. It is only ever printed: tuning never edits the boot loader.
//! `isolcpus` deliberately omits `managed_irq`, because the NIC queue IRQs must stay on the
//! shard CPUs; `irqaffinity` sends every other IRQ to the housekeeping CPUs.

use std::fmt;
use std::path::Path;

use crate::cpus::CpuSet;
use crate::root::HostRoot;

/// Advice for the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuIsolationAdvice {
    /// CPUs that run shards.
    pub shard_cpus: CpuSet,
    /// Possible CPUs that run no shard (control core, housekeeping).
    pub housekeeping_cpus: CpuSet,
    /// The running kernel's command line, when `proc/cmdline` could be read.
    pub current_cmdline: Option<String>,
}

impl CpuIsolationAdvice {
    /// Advice for shards on `shard_cpus` on a host whose possible CPUs are `possible`.
    pub fn new(root: &HostRoot, shard_cpus: &[usize], possible: &CpuSet) -> Self {
        let shard_cpus = CpuSet::from_cpus(shard_cpus.iter().copied());
        let housekeeping_cpus =
            CpuSet::from_cpus(possible.iter().filter(|cpu| !shard_cpus.contains(*cpu)));
        let current_cmdline = root.read_trimmed(Path::new("proc/cmdline")).ok();
        Self {
            shard_cpus,
            housekeeping_cpus,
            current_cmdline,
        }
    }

    /// The arguments to add, or `None` when every CPU runs a shard (isolation needs at least
    /// one housekeeping CPU).
    pub fn kernel_arguments(&self) -> Option<Vec<String>> {
        if self.housekeeping_cpus.is_empty() || self.shard_cpus.is_empty() {
            return None;
        }
        let shards = self.shard_cpus.to_list_string();
        Some(vec![
            format!("isolcpus=nohz,domain,{shards}"),
            format!("nohz_full={shards}"),
            format!("rcu_nocbs={shards}"),
            format!("irqaffinity={}", self.housekeeping_cpus.to_list_string()),
        ])
    }

    /// The advised arguments that the running kernel's command line does not already carry.
    pub fn missing_arguments(&self) -> Vec<String> {
        let present: Vec<&str> = self
            .current_cmdline
            .as_deref()
            .map(|line| line.split_whitespace().collect())
            .unwrap_or_default();
        self.kernel_arguments()
            .unwrap_or_default()
            .into_iter()
            .filter(|argument| !present.contains(&argument.as_str()))
            .collect()
    }
}

impl fmt::Display for CpuIsolationAdvice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kernel_arguments() {
            None => write!(
                f,
                "CPU isolation: not advised, every CPU runs a shard (keep one CPU for the control core and IRQs)"
            ),
            Some(arguments) => {
                let missing = self.missing_arguments();
                write!(f, "CPU isolation (kernel command line, never applied by shardgate): {}", arguments.join(" "))?;
                if missing.is_empty() {
                    write!(f, " [already on the running kernel's command line]")
                } else if missing.len() < arguments.len() {
                    write!(f, " [missing: {}]", missing.join(" "))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_isolates_shards_and_sends_other_irqs_to_housekeeping() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/cmdline"),
            "ro quiet nohz_full=2-3,5\n",
        )
        .unwrap();
        let root = HostRoot::new(dir.path());
        let advice = CpuIsolationAdvice::new(&root, &[2, 3, 5], &CpuSet::from_cpus(0..8));
        assert_eq!(
            advice.kernel_arguments().unwrap(),
            vec![
                "isolcpus=nohz,domain,2-3,5",
                "nohz_full=2-3,5",
                "rcu_nocbs=2-3,5",
                "irqaffinity=0-1,4,6-7"
            ]
        );
        assert_eq!(advice.missing_arguments().len(), 3);
        assert!(advice.to_string().contains(
            "[missing: isolcpus=nohz,domain,2-3,5 rcu_nocbs=2-3,5 irqaffinity=0-1,4,6-7]"
        ));
    }

    #[test]
    fn no_advice_when_every_cpu_runs_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let advice = CpuIsolationAdvice::new(&root, &[0, 1], &CpuSet::from_cpus(0..2));
        assert_eq!(advice.kernel_arguments(), None);
        assert!(advice.to_string().contains("not advised"));
    }
}
