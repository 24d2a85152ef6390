//! Which CPUs run shards and which runs the control core.
//!
//! The automatic layout (used when `[runtime]` leaves `shards`/`control_cpu` at "auto"):
//! - fewer than 4 usable CPUs: a shard on every CPU, and the control core floats (not pinned):
//!   it sleeps almost always, and taking a whole CPU from 2 would halve the shards;
//! - 4 or more: the lowest usable CPU is the control core (it is also where the kernel tends to
//!   put unsteered interrupts and housekeeping), every other CPU runs a shard.
//!
//! "Usable" is the process's affinity mask, so `taskset` and cgroup cpusets are honoured.

/// Where shards and the control core run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuLayout {
    /// One shard per CPU in this list, in shard order (shard i runs on `shard_cpus[i]`).
    pub shard_cpus: Vec<usize>,
    /// The control core's CPU, or `None` to let it float.
    pub control_cpu: Option<usize>,
}

impl CpuLayout {
    /// The automatic layout for the given usable CPUs (see the module doc).
    pub fn automatic(usable: &[usize]) -> CpuLayout {
        if usable.len() >= 4 {
            CpuLayout { shard_cpus: usable[1..].to_vec(), control_cpu: Some(usable[0]) }
        } else if usable.is_empty() {
            CpuLayout { shard_cpus: vec![0], control_cpu: None }
        } else {
            CpuLayout { shard_cpus: usable.to_vec(), control_cpu: None }
        }
    }

    /// The control CPU when shards were chosen by hand: the lowest usable CPU that runs no
    /// shard, or floating when every CPU runs one.
    pub fn automatic_control(usable: &[usize], shard_cpus: &[usize]) -> Option<usize> {
        usable.iter().copied().find(|c| !shard_cpus.contains(c))
    }
}

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask struct, zero-initialised, and its size is passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE, the size of the mask.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cores_shard_everywhere_and_float_the_control_core() {
        assert_eq!(
            CpuLayout::automatic(&[0, 1]),
            CpuLayout { shard_cpus: vec![0, 1], control_cpu: None }
        );
    }

    #[test]
    fn many_cores_reserve_the_first_for_control() {
        assert_eq!(
            CpuLayout::automatic(&[0, 1, 2, 3, 4, 5, 6, 7]),
            CpuLayout { shard_cpus: vec![1, 2, 3, 4, 5, 6, 7], control_cpu: Some(0) }
        );
        assert_eq!(CpuLayout::automatic_control(&[0, 1, 2], &[1, 2]), Some(0));
        assert_eq!(CpuLayout::automatic_control(&[0, 1], &[0, 1]), None);
    }

    #[test]
    fn allowed_cpus_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
    }
}

/// Pins the calling thread to `cpu`; logs and carries on if the kernel refuses.
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for
    // cpu < CPU_SETSIZE, which the config validation guarantees (it came from the mask).
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "cannot pin the control core");
    }
}
