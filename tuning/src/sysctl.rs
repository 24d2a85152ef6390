//! [`SysctlProfile`]: the kernel settings an edge appliance wants, each with its reason.
//!
//! Owns: the documented edge profile ([`SysctlProfile::edge`]), mapping keys to
//! `proc/sys/...` paths and deciding, for a current value, whether a setting needs a change.
//! Does not own: consent (the plan marks sysctl changes; `apply` writes them only with
//! [`crate::Consent::NicAndSysctls`]) or the kernel command line (see [`crate::isolation`]).
//!
//! The edge profile (values are raised, never lowered, unless marked *exact*):
//!
//! | key                            | value         | why |
//! |--------------------------------|---------------|-----|
//! | `net.core.somaxconn`           | 65535         | listen() backlog cap; SYN floods and bursts must not overflow accept queues |
//! | `net.ipv4.tcp_max_syn_backlog` | 65535         | half-open connections kept while SYN cookies are not yet needed |
//! | `net.ipv4.ip_local_port_range` | 1024 65535 *exact* | ephemeral ports for relay connections to backends |
//! | `net.ipv4.tcp_fastopen`        | 3 *exact*     | TFO for clients (1) and listeners (2) |
//! | `net.core.busy_poll`           | 50 *exact*    | µs of busy polling in poll/epoll, only where the kernel has it |
//! | `net.core.busy_read`           | 50 *exact*    | µs of busy polling on blocking reads, only where the kernel has it |
//! | `net.core.rmem_max`            | 16777216      | lets sockets ask for 16 MiB receive buffers (long fat pipes) |
//! | `net.core.wmem_max`            | 16777216      | same for send buffers |
//! | `net.core.netdev_budget`       | 600           | packets per NAPI softirq round, so busy shards drain their queue |
//! | `net.core.netdev_max_backlog`  | 16384         | per-CPU backlog that RPS steers into |
//! | `fs.file-max`                  | 4194304       | system-wide open files: every connection is two descriptors |
//! | `fs.nr_open`                   | 4194304       | per-process descriptor ceiling (RLIMIT_NOFILE can go up to it) |

use std::path::PathBuf;

use crate::error::TuningError;

/// How a setting compares with the value already in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlRule {
    /// The current value must be at least the wanted number; higher values are left alone.
    AtLeast,
    /// The current value must equal the wanted value (whitespace-insensitive).
    Exact,
}

/// One sysctl of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlSetting {
    /// Dotted key, e.g. `net.core.somaxconn`.
    pub key: String,
    /// Value to write.
    pub value: String,
    /// How it compares with the current value.
    pub rule: SysctlRule,
    /// Why an edge box wants it (printed in the plan).
    pub why: String,
}

impl SysctlSetting {
    /// A setting; fails when `key` does not name a file under `proc/sys`.
    pub fn new(key: &str, value: &str, rule: SysctlRule, why: &str) -> Result<Self, TuningError> {
        let valid = !key.is_empty()
            && key
                .split('.')
                .all(|part| !part.is_empty() && part != ".." && !part.contains('/'));
        if !valid {
            return Err(TuningError::InvalidSysctlKey(key.to_string()));
        }
        Ok(Self {
            key: key.to_string(),
            value: value.to_string(),
            rule,
            why: why.to_string(),
        })
    }

    /// The file for this key, relative to the root: `proc/sys/net/core/somaxconn`.
    pub fn relative_path(&self) -> PathBuf {
        let mut path = PathBuf::from("proc/sys");
        for part in self.key.split('.') {
            path.push(part);
        }
        path
    }

    /// Whether `current` (as read from the kernel) already satisfies this setting.
    pub fn is_satisfied_by(&self, current: &str) -> bool {
        match self.rule {
            SysctlRule::Exact => same_sysctl_value(current, &self.value),
            SysctlRule::AtLeast => match (current.trim().parse::<u64>(), self.value.parse::<u64>())
            {
                (Ok(current), Ok(wanted)) => current >= wanted,
                _ => same_sysctl_value(current, &self.value),
            },
        }
    }
}

/// Whether two sysctl values are the same once whitespace runs are normalised
/// (`ip_local_port_range` reads back as `1024\t65535`).
pub fn same_sysctl_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// A named set of sysctl settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlProfile {
    settings: Vec<SysctlSetting>,
}

impl SysctlProfile {
    /// A profile with exactly these settings.
    pub fn new(settings: Vec<SysctlSetting>) -> Self {
        Self { settings }
    }

    /// No sysctls at all (NIC pinning only).
    pub fn none() -> Self {
        Self::new(Vec::new())
    }

    /// The edge appliance profile documented in this module.
    pub fn edge() -> Self {
        use SysctlRule::{AtLeast, Exact};
        let table: [(&str, &str, SysctlRule, &str); 12] = [
            (
                "net.core.somaxconn",
                "65535",
                AtLeast,
                "listen() backlog cap: bursts must not overflow accept queues",
            ),
            (
                "net.ipv4.tcp_max_syn_backlog",
                "65535",
                AtLeast,
                "half-open connections kept before SYN cookies",
            ),
            (
                "net.ipv4.ip_local_port_range",
                "1024 65535",
                Exact,
                "ephemeral ports for relay connections to backends",
            ),
            (
                "net.ipv4.tcp_fastopen",
                "3",
                Exact,
                "TCP Fast Open for clients and listeners",
            ),
            (
                "net.core.busy_poll",
                "50",
                Exact,
                "busy-poll NIC queues for 50us in poll/epoll before sleeping",
            ),
            (
                "net.core.busy_read",
                "50",
                Exact,
                "busy-poll for 50us on blocking socket reads",
            ),
            (
                "net.core.rmem_max",
                "16777216",
                AtLeast,
                "allow 16 MiB socket receive buffers",
            ),
            (
                "net.core.wmem_max",
                "16777216",
                AtLeast,
                "allow 16 MiB socket send buffers",
            ),
            (
                "net.core.netdev_budget",
                "600",
                AtLeast,
                "packets per NAPI softirq round so busy shards drain their queue",
            ),
            (
                "net.core.netdev_max_backlog",
                "16384",
                AtLeast,
                "per-CPU backlog that RPS steers packets into",
            ),
            (
                "fs.file-max",
                "4194304",
                AtLeast,
                "system-wide open files: each relayed connection holds two",
            ),
            (
                "fs.nr_open",
                "4194304",
                AtLeast,
                "per-process descriptor ceiling for RLIMIT_NOFILE",
            ),
        ];
        Self::new(
            table
                .into_iter()
                .map(|(key, value, rule, why)| SysctlSetting {
                    key: key.to_string(),
                    value: value.to_string(),
                    rule,
                    why: why.to_string(),
                })
                .collect(),
        )
    }

    /// Only the settings whose keys start with `prefix` (e.g. `net.` for a network namespace,
    /// where `fs.*` would reach the whole host).
    pub fn restricted_to(&self, prefix: &str) -> Self {
        Self::new(
            self.settings
                .iter()
                .filter(|setting| setting.key.starts_with(prefix))
                .cloned()
                .collect(),
        )
    }

    /// The settings, in profile order.
    pub fn settings(&self) -> &[SysctlSetting] {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_paths_and_bad_keys_are_refused() {
        let setting =
            SysctlSetting::new("net.ipv4.tcp_fastopen", "3", SysctlRule::Exact, "tfo").unwrap();
        assert_eq!(
            setting.relative_path(),
            PathBuf::from("proc/sys/net/ipv4/tcp_fastopen")
        );
        for bad in ["", "net..core", "net.core/../x", "net.core.."] {
            assert!(
                SysctlSetting::new(bad, "1", SysctlRule::Exact, "").is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn at_least_never_lowers_and_exact_ignores_whitespace() {
        let edge = SysctlProfile::edge();
        let file_max = edge
            .settings()
            .iter()
            .find(|s| s.key == "fs.file-max")
            .unwrap();
        assert!(file_max.is_satisfied_by("9223372036854775807"));
        assert!(!file_max.is_satisfied_by("813452"));
        let range = edge
            .settings()
            .iter()
            .find(|s| s.key == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert!(range.is_satisfied_by("1024\t65535"));
        assert!(!range.is_satisfied_by("32768\t60999"));
    }

    #[test]
    fn edge_profile_keys_are_valid_and_restriction_keeps_only_net() {
        let edge = SysctlProfile::edge();
        for setting in edge.settings() {
            SysctlSetting::new(&setting.key, &setting.value, setting.rule, &setting.why).unwrap();
        }
        let net_only = edge.restricted_to("net.");
        assert_eq!(net_only.settings().len(), edge.settings().len() - 2);
        assert!(net_only
            .settings()
            .iter()
            .all(|s| s.key.starts_with("net.")));
    }
}
