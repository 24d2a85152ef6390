//! The crate's one error type, [`TuningError`].
//!
//! Owns: every way planning, applying, verifying, reverting or steering can fail, each with the
//! path or value involved so the message tells the operator what to fix. Does not own: drift
//! (a finding of `verify`, not an error) or changes skipped for lack of consent.

use std::path::PathBuf;

/// Everything that can go wrong in `shardgate-tuning`.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// A file under the tuning root could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Absolute path that was read.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file under the tuning root could not be written.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// Absolute path that was written.
        path: PathBuf,
        /// The value we tried to write.
        value: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A kernel file held something that is not in its documented format.
    #[error("{path}: cannot parse {content:?} as {expected}")]
    Parse {
        /// Absolute path that was read.
        path: PathBuf,
        /// What the file held (trimmed).
        content: String,
        /// The format we expected, e.g. "a hex CPU mask".
        expected: &'static str,
    },
    /// The named network interface does not exist under `<root>/sys/class/net`.
    #[error("interface `{0}` not found under sys/class/net")]
    UnknownInterface(String),
    /// An interface name that the kernel would never accept (empty, too long, `/`, whitespace).
    #[error("interface name {0:?} is invalid (1-15 bytes, no `/`, whitespace, `.` or `..`)")]
    InvalidInterfaceName(String),
    /// The same interface was named twice.
    #[error("interface `{0}` is listed twice")]
    DuplicateInterface(String),
    /// `sys/class/net/IF/queues` holds no `rx-N` or no `tx-N` directory.
    #[error("interface `{0}` has no rx-N/tx-N queue directories")]
    NoQueues(String),
    /// No shard CPUs were given.
    #[error("no shard CPUs given: tuning needs the CPU of every shard, in shard order")]
    NoShardCpus,
    /// A CPU appears twice in the shard CPU list.
    #[error("CPU {0} is listed for two shards")]
    DuplicateShardCpu(usize),
    /// A shard CPU is not in `sys/devices/system/cpu/possible`.
    #[error("shard CPU {cpu} does not exist on this host (possible CPUs: {possible})")]
    CpuNotPresent {
        /// The CPU asked for.
        cpu: usize,
        /// The host's possible CPU list, as the kernel prints it.
        possible: String,
    },
    /// Too many shards for one classic-BPF steering program.
    #[error("{0} shards exceed what one reuseport CBPF program can steer (max {max})", max = crate::steering::MAX_STEERED_SHARDS)]
    TooManyShards(usize),
    /// A sysctl key that does not name a file under `proc/sys`.
    #[error("sysctl key {0:?} is invalid (dot-separated names, no `/` or `..`)")]
    InvalidSysctlKey(String),
    /// The state file written by `apply` is missing.
    #[error("no applied tuning recorded in {0}: nothing to verify or revert (run `shardgate tune apply` first)")]
    NoAppliedState(PathBuf),
    /// The state file exists but is not valid JSON of the expected shape.
    #[error("state file {path} is corrupt: {source}")]
    CorruptState {
        /// Path of the state file.
        path: PathBuf,
        /// What the JSON decoder said.
        source: serde_json::Error,
    },
    /// The state file could not be written, replaced or removed.
    #[error("cannot {action} state file {path}: {source}")]
    StateFileIo {
        /// Path of the state file.
        path: PathBuf,
        /// What we were doing: "write", "remove".
        action: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The state file was written for a different root than the one given now.
    #[error("state file {path} was written for root {recorded}, not {given}")]
    StateRootMismatch {
        /// Path of the state file.
        path: PathBuf,
        /// Root recorded at apply time.
        recorded: PathBuf,
        /// Root passed now.
        given: PathBuf,
    },
    /// `setsockopt(SO_ATTACH_REUSEPORT_CBPF)` failed.
    #[error("attaching the reuseport CPU steering program to fd {fd} failed: {source}")]
    AttachSteering {
        /// The listener's file descriptor.
        fd: i32,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// `[tuning]` config section is inconsistent.
    #[error("[tuning] {0}")]
    InvalidConfig(String),
}
