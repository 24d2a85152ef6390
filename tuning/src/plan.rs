//! [`Plan`]: what tuning would change on this host, and why.
//!
//! Owns: turning discovered NIC queues, the shard CPU list and a sysctl profile into a list of
//! [`Change`]s (path, current value, new value, reason) plus [`Finding`]s that need a human
//! (queue/shard count mismatches, NICs without queue IRQs, sysctls the kernel lacks). The
//! placement rules, with `S` shards on CPUs `cpu[0..S]`:
//!
//! - IRQ of queue `q` → `cpu[q % S]` (one queue per shard; extra queues spread round-robin).
//! - XPS of TX queue `q`: with `T >= S` queues, `{cpu[q % S]}`; with fewer, the shards
//!   `s` with `s % T == q` share it.
//! - RPS of RX queue `q`: only when the NIC has fewer RX queues than shards (`R < S`): the
//!   shards `s` with `s % R == q`, so every shard CPU receives; otherwise RPS is switched off
//!   because the IRQ already lands on the right CPU.
//!
//! Does not own: writing (see [`crate::state`]) or the reuseport program (see
//! [`crate::steering`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpus::CpuSet;
use crate::error::TuningError;
use crate::isolation::CpuIsolationAdvice;
use crate::nic::{discover_interfaces, NicQueues};
use crate::root::HostRoot;
use crate::sysctl::{same_sysctl_value, SysctlProfile};

/// How a kernel file's value is written, so two spellings of one value compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// Hex CPU mask in 32-bit comma groups (`rps_cpus`, `xps_cpus`).
    CpuMask,
    /// CPU list (`smp_affinity_list`).
    CpuList,
    /// A sysctl value; whitespace runs are insignificant.
    Sysctl,
}

impl ValueFormat {
    /// Whether `a` and `b` denote the same value in this format (unparsable values compare as
    /// text).
    pub fn same_value(self, a: &str, b: &str) -> bool {
        match self {
            ValueFormat::CpuMask => match (CpuSet::parse_mask(a), CpuSet::parse_mask(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a.trim() == b.trim(),
            },
            ValueFormat::CpuList => match (CpuSet::parse_list(a), CpuSet::parse_list(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a.trim() == b.trim(),
            },
            ValueFormat::Sysctl => same_sysctl_value(a, b),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            ValueFormat::CpuMask => "a hex CPU mask",
            ValueFormat::CpuList => "a CPU list",
            ValueFormat::Sysctl => "a sysctl value",
        }
    }
}

/// What a change touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// `proc/irq/N/smp_affinity_list` of a queue IRQ.
    IrqAffinity {
        /// IRQ number.
        irq: u32,
    },
    /// `queues/tx-N/xps_cpus`.
    Xps {
        /// Interface name.
        interface: String,
        /// TX queue number.
        queue: usize,
    },
    /// `queues/rx-N/rps_cpus`.
    Rps {
        /// Interface name.
        interface: String,
        /// RX queue number.
        queue: usize,
    },
    /// A sysctl; written only with [`Consent::NicAndSysctls`].
    Sysctl {
        /// Dotted key.
        key: String,
    },
}

/// One file the plan would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file, relative to the root (`proc/irq/41/smp_affinity_list`).
    pub path: PathBuf,
    /// Its value when the plan was made (trimmed).
    pub old: String,
    /// The value to write.
    pub new: String,
    /// Why, in words for the operator.
    pub why: String,
    /// What the file is.
    pub kind: ChangeKind,
    /// How its value is spelled.
    pub format: ValueFormat,
}

impl Change {
    /// Whether this is a sysctl (and so needs consent).
    pub fn is_sysctl(&self) -> bool {
        matches!(self.kind, ChangeKind::Sysctl { .. })
    }
}

/// Something the operator should know that no file write can fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The NIC has more queues than there are shards: extra queues are spread round-robin.
    MoreQueuesThanShards {
        /// Interface name.
        interface: String,
        /// RX queues.
        queues: usize,
        /// Shards.
        shards: usize,
    },
    /// The NIC has fewer RX queues than shards: RPS carries packets to the other shards.
    FewerQueuesThanShards {
        /// Interface name.
        interface: String,
        /// RX queues.
        queues: usize,
        /// Shards.
        shards: usize,
    },
    /// No queue IRQs were recognised (virtual device, legacy INTx, unknown naming).
    NoQueueIrqs {
        /// Interface name.
        interface: String,
        /// Driver, when known.
        driver: Option<String>,
    },
    /// A queue IRQ without an `smp_affinity_list` file.
    IrqWithoutAffinityFile {
        /// IRQ number.
        irq: u32,
    },
    /// The kernel does not offer this sysctl here; it is left out.
    SysctlUnsupported {
        /// Dotted key.
        key: String,
    },
    /// The sysctl exists but is read-only here (mode 0444); it is left out.
    SysctlReadOnly {
        /// Dotted key.
        key: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::MoreQueuesThanShards { interface, queues, shards } => write!(
                f,
                "{interface}: {queues} queues for {shards} shards; extra queues are spread round-robin over the shard CPUs (or `ethtool -L {interface} combined {shards}`)"
            ),
            Finding::FewerQueuesThanShards { interface, queues, shards } => write!(
                f,
                "{interface}: {queues} RX queues for {shards} shards; RPS steers packets to the shards without a queue of their own"
            ),
            Finding::NoQueueIrqs { interface, driver } => write!(
                f,
                "{interface} (driver {}): no queue IRQs recognised; only XPS/RPS are set",
                driver.as_deref().unwrap_or("none, virtual device")
            ),
            Finding::IrqWithoutAffinityFile { irq } => {
                write!(f, "IRQ {irq} has no smp_affinity_list; its affinity is left alone")
            }
            Finding::SysctlUnsupported { key } => write!(
                f,
                "sysctl {key} is not available here (kernel built without it, or host-wide and seen from a network namespace); skipped"
            ),
            Finding::SysctlReadOnly { key } => write!(
                f,
                "sysctl {key} is read-only here (host-wide, seen from a network namespace or container); skipped"
            ),
        }
    }
}

/// Whether `apply` may write sysctls as well as NIC files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// IRQ affinity, XPS and RPS only; sysctl changes are reported as skipped.
    NicOnly,
    /// Everything in the plan, sysctls included.
    NicAndSysctls,
}

impl Consent {
    /// `NicAndSysctls` when the operator said yes (`--sysctl`, `[tuning] sysctl = true`).
    pub fn from_sysctl_flag(sysctl_consent: bool) -> Self {
        if sysctl_consent {
            Consent::NicAndSysctls
        } else {
            Consent::NicOnly
        }
    }

    /// Whether `change` may be written under this consent.
    pub fn allows(self, change: &Change) -> bool {
        self == Consent::NicAndSysctls || !change.is_sysctl()
    }
}

/// Everything tuning would do on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Shard CPUs, in shard order.
    pub shard_cpus: Vec<usize>,
    /// What discovery found per interface.
    pub nics: Vec<NicQueues>,
    /// Files to write, in order.
    pub changes: Vec<Change>,
    /// Things to tell the operator.
    pub findings: Vec<Finding>,
    /// Kernel command-line advice (printed, never applied).
    pub isolation: CpuIsolationAdvice,
}

impl Plan {
    /// Whether the host already matches the plan (nothing to write).
    pub fn is_satisfied(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus: Vec<String> = self.shard_cpus.iter().map(|cpu| cpu.to_string()).collect();
        writeln!(
            f,
            "shards on CPUs [{}] (shard i = reuseport group index i)",
            cpus.join(", ")
        )?;
        for nic in &self.nics {
            writeln!(
                f,
                "{} (driver {}): {} rx / {} tx queues, {} queue IRQs",
                nic.interface,
                nic.driver.as_deref().unwrap_or("none"),
                nic.rx_queues,
                nic.tx_queues,
                nic.queue_irqs.len()
            )?;
        }
        if self.changes.is_empty() {
            writeln!(f, "no changes: the host already matches")?;
        } else {
            writeln!(f, "changes ({}):", self.changes.len())?;
            for change in &self.changes {
                let consent = if change.is_sysctl() {
                    " [sysctl: needs consent]"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "  /{}: {} -> {}  ({}){consent}",
                    change.path.display(),
                    change.old,
                    change.new,
                    change.why
                )?;
            }
        }
        for finding in &self.findings {
            writeln!(f, "note: {finding}")?;
        }
        writeln!(f, "{}", self.isolation)
    }
}

/// The host's possible CPUs from `sys/devices/system/cpu/possible`, if the file exists.
pub fn possible_cpus(root: &HostRoot) -> Result<Option<CpuSet>, TuningError> {
    let relative = Path::new("sys/devices/system/cpu/possible");
    if !root.exists(relative) {
        return Ok(None);
    }
    let text = root.read_trimmed(relative)?;
    CpuSet::parse_list(&text)
        .map(Some)
        .map_err(|_| TuningError::Parse {
            path: root.path(relative),
            content: text,
            expected: "a CPU list",
        })
}

/// Check the shard CPU list: non-empty, no repeats, every CPU possible on this host.
fn validate_shard_cpus(shard_cpus: &[usize], possible: Option<&CpuSet>) -> Result<(), TuningError> {
    if shard_cpus.is_empty() {
        return Err(TuningError::NoShardCpus);
    }
    let mut seen = CpuSet::new();
    for &cpu in shard_cpus {
        if seen.contains(cpu) {
            return Err(TuningError::DuplicateShardCpu(cpu));
        }
        seen.insert(cpu);
        if let Some(possible) = possible {
            if !possible.contains(cpu) {
                return Err(TuningError::CpuNotPresent {
                    cpu,
                    possible: possible.to_list_string(),
                });
            }
        }
    }
    Ok(())
}

/// Plan the tuning of `interfaces` (all device-backed interfaces when empty) for shards on
/// `shard_cpus` (in shard order), with the sysctls of `profile`, reading the host under `root`.
pub fn plan(
    root: &Path,
    interfaces: &[String],
    shard_cpus: &[usize],
    profile: &SysctlProfile,
) -> Result<Plan, TuningError> {
    let root = HostRoot::new(root);
    let possible = possible_cpus(&root)?;
    validate_shard_cpus(shard_cpus, possible.as_ref())?;
    let nr_cpu_ids = possible
        .as_ref()
        .and_then(CpuSet::max)
        .or_else(|| shard_cpus.iter().copied().max())
        .map_or(1, |cpu| cpu + 1);
    let interfaces = if interfaces.is_empty() {
        discover_interfaces(&root)?
    } else {
        interfaces.to_vec()
    };

    let mut planner = Planner {
        root: &root,
        changes: Vec::new(),
        findings: Vec::new(),
    };
    let mut nics = Vec::new();
    for interface in &interfaces {
        let nic = NicQueues::discover(&root, interface)?;
        planner.plan_nic(&nic, shard_cpus, nr_cpu_ids)?;
        nics.push(nic);
    }
    planner.plan_sysctls(profile)?;
    let possible = possible.unwrap_or_else(|| CpuSet::from_cpus(0..nr_cpu_ids));
    Ok(Plan {
        shard_cpus: shard_cpus.to_vec(),
        nics,
        changes: planner.changes,
        findings: planner.findings,
        isolation: CpuIsolationAdvice::new(&root, shard_cpus, &possible),
    })
}

/// CPUs of the shards `s` with `s % queue_count == queue`: the shards sharing `queue` when the
/// NIC has fewer queues than shards.
fn cpus_sharing_queue(cpus: &[usize], queue_count: usize, queue: usize) -> CpuSet {
    CpuSet::from_cpus(
        cpus.iter()
            .enumerate()
            .filter(|(shard, _)| shard % queue_count == queue)
            .map(|(_, &cpu)| cpu),
    )
}

/// Accumulates changes and findings while planning.
struct Planner<'a> {
    root: &'a HostRoot,
    changes: Vec<Change>,
    findings: Vec<Finding>,
}

impl Planner<'_> {
    /// Add a change for `path` unless its current value already equals `new`.
    fn propose(
        &mut self,
        path: PathBuf,
        new: String,
        format: ValueFormat,
        kind: ChangeKind,
        why: String,
    ) -> Result<(), TuningError> {
        let old = self.root.read_trimmed(&path)?;
        let parsable = match format {
            ValueFormat::CpuMask => CpuSet::parse_mask(&old).is_ok(),
            ValueFormat::CpuList => CpuSet::parse_list(&old).is_ok(),
            ValueFormat::Sysctl => true,
        };
        if !parsable {
            return Err(TuningError::Parse {
                path: self.root.path(&path),
                content: old,
                expected: format.expected(),
            });
        }
        if !format.same_value(&old, &new) {
            self.changes.push(Change {
                path,
                old,
                new,
                why,
                kind,
                format,
            });
        }
        Ok(())
    }

    /// Propose a queue's `xps_cpus`/`rps_cpus` mask, when the kernel has that file (it lacks
    /// them without CONFIG_RPS/CONFIG_XPS).
    fn propose_queue_mask(
        &mut self,
        path: PathBuf,
        set: &CpuSet,
        nr_cpu_ids: usize,
        kind: ChangeKind,
        why: String,
    ) -> Result<(), TuningError> {
        if !self.root.exists(&path) {
            return Ok(());
        }
        // The file exists but a single-queue device answers ENOENT on read (the kernel has
        // no XPS/RPS map for it): nothing to steer there.
        if let Err(TuningError::Read { source, .. }) = self.root.read_trimmed(&path) {
            if source.kind() == std::io::ErrorKind::NotFound {
                return Ok(());
            }
        }
        self.propose(
            path,
            set.to_mask_string(nr_cpu_ids),
            ValueFormat::CpuMask,
            kind,
            why,
        )
    }

    fn plan_nic(
        &mut self,
        nic: &NicQueues,
        cpus: &[usize],
        nr_cpu_ids: usize,
    ) -> Result<(), TuningError> {
        let shards = cpus.len();
        let interface = nic.interface.as_str();
        let queues_dir = PathBuf::from("sys/class/net")
            .join(interface)
            .join("queues");
        if nic.rx_queues > shards {
            self.findings.push(Finding::MoreQueuesThanShards {
                interface: interface.to_string(),
                queues: nic.rx_queues,
                shards,
            });
        } else if nic.rx_queues < shards {
            self.findings.push(Finding::FewerQueuesThanShards {
                interface: interface.to_string(),
                queues: nic.rx_queues,
                shards,
            });
        }

        if nic.queue_irqs.is_empty() {
            self.findings.push(Finding::NoQueueIrqs {
                interface: interface.to_string(),
                driver: nic.driver.clone(),
            });
        }
        for queue_irq in &nic.queue_irqs {
            let shard = queue_irq.queue % shards;
            let path = PathBuf::from("proc/irq")
                .join(queue_irq.irq.to_string())
                .join("smp_affinity_list");
            if !self.root.exists(&path) {
                self.findings
                    .push(Finding::IrqWithoutAffinityFile { irq: queue_irq.irq });
                continue;
            }
            self.propose(
                path,
                cpus[shard].to_string(),
                ValueFormat::CpuList,
                ChangeKind::IrqAffinity { irq: queue_irq.irq },
                format!(
                    "{interface} queue {} IRQ {} -> shard {shard} on CPU {}",
                    queue_irq.queue, queue_irq.name, cpus[shard]
                ),
            )?;
        }

        for queue in 0..nic.tx_queues {
            let (set, why) = if nic.tx_queues >= shards {
                let shard = queue % shards;
                (
                    CpuSet::from_cpus([cpus[shard]]),
                    format!("{interface} tx-{queue} is transmitted on by shard {shard} only"),
                )
            } else {
                let set = cpus_sharing_queue(cpus, nic.tx_queues, queue);
                let why = format!("{interface} tx-{queue} shared by the shards on CPUs {set} (fewer TX queues than shards)");
                (set, why)
            };
            let path = queues_dir.join(format!("tx-{queue}")).join("xps_cpus");
            let kind = ChangeKind::Xps {
                interface: interface.to_string(),
                queue,
            };
            self.propose_queue_mask(path, &set, nr_cpu_ids, kind, why)?;
        }

        for queue in 0..nic.rx_queues {
            let (set, why) = if nic.rx_queues < shards {
                let set = cpus_sharing_queue(cpus, nic.rx_queues, queue);
                let why = format!("{interface} rx-{queue} packets steered to the shards on CPUs {set} (fewer RX queues than shards)");
                (set, why)
            } else {
                (
                    CpuSet::new(),
                    format!("{interface} rx-{queue}: RPS off, the queue IRQ already lands on its shard's CPU"),
                )
            };
            let path = queues_dir.join(format!("rx-{queue}")).join("rps_cpus");
            let kind = ChangeKind::Rps {
                interface: interface.to_string(),
                queue,
            };
            self.propose_queue_mask(path, &set, nr_cpu_ids, kind, why)?;
        }
        Ok(())
    }

    fn plan_sysctls(&mut self, profile: &SysctlProfile) -> Result<(), TuningError> {
        for setting in profile.settings() {
            let path = setting.relative_path();
            if !self.root.exists(&path) {
                self.findings.push(Finding::SysctlUnsupported {
                    key: setting.key.clone(),
                });
                continue;
            }
            let current = self.root.read_trimmed(&path)?;
            if setting.is_satisfied_by(&current) {
                continue;
            }
            if !self.root.has_write_permission(&path) {
                self.findings.push(Finding::SysctlReadOnly {
                    key: setting.key.clone(),
                });
                continue;
            }
            self.changes.push(Change {
                path,
                old: current,
                new: setting.value.clone(),
                why: format!("{}: {}", setting.key, setting.why),
                kind: ChangeKind::Sysctl {
                    key: setting.key.clone(),
                },
                format: ValueFormat::Sysctl,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_formats_compare_meaning_not_spelling() {
        assert!(ValueFormat::CpuMask.same_value("00000000,00000003", "3"));
        assert!(!ValueFormat::CpuMask.same_value("2", "3"));
        assert!(ValueFormat::CpuList.same_value("0-1", "0,1"));
        assert!(ValueFormat::Sysctl.same_value("1024\t65535", "1024 65535"));
    }

    #[test]
    fn shard_cpus_are_checked_before_planning() {
        let possible = CpuSet::from_cpus(0..4);
        assert!(matches!(
            validate_shard_cpus(&[], Some(&possible)),
            Err(TuningError::NoShardCpus)
        ));
        assert!(matches!(
            validate_shard_cpus(&[1, 2, 1], Some(&possible)),
            Err(TuningError::DuplicateShardCpu(1))
        ));
        assert!(matches!(
            validate_shard_cpus(&[1, 9], Some(&possible)),
            Err(TuningError::CpuNotPresent { cpu: 9, .. })
        ));
        assert!(validate_shard_cpus(&[3, 0], Some(&possible)).is_ok());
    }

    #[test]
    fn sysctl_changes_need_consent() {
        let change = Change {
            path: PathBuf::from("proc/sys/net/core/somaxconn"),
            old: "4096".into(),
            new: "65535".into(),
            why: String::new(),
            kind: ChangeKind::Sysctl {
                key: "net.core.somaxconn".into(),
            },
            format: ValueFormat::Sysctl,
        };
        assert!(!Consent::from_sysctl_flag(false).allows(&change));
        assert!(Consent::from_sysctl_flag(true).allows(&change));
    }
}
