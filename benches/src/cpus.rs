//! CPU split for side-by-side runs: the proxy under test (shardgate or its peer) runs on
//! [`proxy_cpus`]; load generators and backends run on [`load_cpus`]. On the 2-CPU reference
//! machine that is CPU 1 for the proxy and CPU 0 for everything else, so both proxies get
//! exactly one core and compete with nothing.

/// CPUs the proxy under test is pinned to (`SHARDGATE_BENCH_PROXY_CPUS="1"` or "2,3").
pub fn proxy_cpus() -> Vec<usize> {
    from_env("SHARDGATE_BENCH_PROXY_CPUS").unwrap_or_else(|| {
        let n = available();
        if n >= 2 { vec![n - 1] } else { vec![0] }
    })
}

/// CPUs load generators and backends are pinned to.
pub fn load_cpus() -> Vec<usize> {
    from_env("SHARDGATE_BENCH_LOAD_CPUS").unwrap_or_else(|| {
        let proxy = proxy_cpus();
        let rest: Vec<usize> = (0..available()).filter(|c| !proxy.contains(c)).collect();
        if rest.is_empty() { vec![0] } else { rest }
    })
}

fn available() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn from_env(name: &str) -> Option<Vec<usize>> {
    let text = std::env::var(name).ok()?;
    let cpus: Vec<usize> = text.split(',').filter_map(|c| c.trim().parse().ok()).collect();
    (!cpus.is_empty()).then_some(cpus)
}

/// Pins the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; indices are small CPU ids.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `taskset`-style list: "1" or "2,3".
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}
