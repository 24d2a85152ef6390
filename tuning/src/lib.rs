//! shardgate-tuning: pin shards to NIC queues and tune the host for the appliance.
//!
//! shardgate runs one shard per CPU with one `SO_REUSEPORT` listener per shard per port. This
//! crate makes the host cooperate so that a connection's packets, its socket and its shard all
//! live on one core. It is built in layers, bottom up:
//!
//! - **Host files** ([`root`], [`cpus`]): every read and write goes through a [`HostRoot`]
//!   (`/` on a real host, a fake `/sys` + `/proc` tree in tests), in the kernel's documented
//!   formats (hex CPU masks in 32-bit comma groups, CPU lists).
//! - **Discovery** ([`nic`]): an interface's RX/TX queues and which MSI-X IRQ serves which
//!   queue (ixgbe/i40e `eth0-TxRx-N`, mlx5 `mlx5_compN@pci:...`, virtio `virtio0-input.N`).
//! - **Policy** ([`mod@plan`], [`sysctl`], [`isolation`]): a [`Plan`] of [`Change`]s (path, old
//!   value, new value, why) for IRQ affinity, XPS and RPS, the documented edge
//!   [`SysctlProfile`], [`Finding`]s such as queue/shard count mismatches, and kernel
//!   command-line [`CpuIsolationAdvice`] that is printed, never applied.
//! - **Action** ([`state`]): [`Plan::apply`] writes the plan (sysctls only with
//!   [`Consent::NicAndSysctls`]) after recording old values in a JSON state file; [`verify`]
//!   reports drift; [`revert`] restores exactly what was there before.
//! - **Steering** ([`steering`]): the classic-BPF `SO_ATTACH_REUSEPORT_CBPF` program that
//!   gives each connection to the listener of the shard on the receiving CPU.
//! - **Config** ([`config`]): the `[tuning]` section, [`TuningConfig`].
//!
//! `shardgate tune plan|apply|verify|revert` and `[tuning] apply = true` at start-up call
//! [`plan()`], [`Plan::apply`], [`verify`] and [`revert`]; the listener code calls
//! [`attach_reuseport_cpu_steering`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod cpus;
pub mod error;
pub mod isolation;
pub mod nic;
pub mod plan;
pub mod root;
pub mod state;
pub mod steering;
pub mod sysctl;

pub use config::TuningConfig;
pub use cpus::CpuSet;
pub use error::TuningError;
pub use isolation::CpuIsolationAdvice;
pub use nic::{discover_interfaces, NicQueues, QueueIrq};
pub use plan::{plan, Change, ChangeKind, Consent, Finding, Plan, ValueFormat};
pub use root::HostRoot;
pub use state::{revert, verify, AppliedState, Drift, RevertReport, VerifyReport};
pub use steering::{attach_reuseport_cpu_steering, reuseport_cpu_program};
pub use sysctl::{SysctlProfile, SysctlRule, SysctlSetting};
