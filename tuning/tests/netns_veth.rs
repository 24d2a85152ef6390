//! Plan / apply / verify / revert through the real `/sys` and `/proc/sys/net` of a network
//! namespace this test creates, holding multi-queue veth pairs
//! (`ip link add ... numtxqueues 4 numrxqueues 4`). Never touches the host's own settings.
//!
//! `main` (no libtest harness) creates the namespace and re-runs this binary inside it with
//! `ip netns exec`, which gives the child a sysfs of that namespace; the child does the
//! tuning against root `/` and refuses to run in the host's namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use shardgate_tuning::{plan, revert, verify, Consent, Finding, SysctlProfile};

/// Env var that tells the re-run binary it is inside the namespace, naming the state dir.
const INSIDE_NETNS_STATE_DIR: &str = "SHARDGATE_TUNING_NETNS_STATE_DIR";
/// Printed by the child when every check passed.
const SUCCESS_MARKER: &str = "netns tuning checks passed";
/// Env var carrying the parent's (host) network namespace, which the child must not be in.
const PARENT_NETNS: &str = "SHARDGATE_TUNING_PARENT_NETNS";

fn main() {
    match std::env::var_os(INSIDE_NETNS_STATE_DIR) {
        Some(state_dir) => inside_namespace(Path::new(&state_dir)),
        None => outside_namespace(),
    }
}

/// A network namespace deleted (with its veths) on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed: {status}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
}

fn outside_namespace() {
    println!("running 1 test\ntest veth_in_netns_xps_rps_sysctl_apply_verify_revert ...");
    if !is_root() {
        println!("skipping: needs root to create a network namespace (ip netns add)");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("skipping: iproute2 `ip` not installed");
        return;
    }
    let namespace = Namespace(format!("sgtune-{}", std::process::id()));
    run(&["ip", "netns", "add", &namespace.0]);
    let ns = namespace.0.as_str();
    // Four queues each way: more queues than our two shards (XPS spread).
    run(&[
        "ip",
        "-n",
        ns,
        "link",
        "add",
        "sgt0",
        "numtxqueues",
        "4",
        "numrxqueues",
        "4",
        "type",
        "veth",
        "peer",
        "name",
        "sgt1",
        "numtxqueues",
        "4",
        "numrxqueues",
        "4",
    ]);
    // One queue each way: fewer queues than shards (RPS).
    run(&[
        "ip", "-n", ns, "link", "add", "sgt2", "type", "veth", "peer", "name", "sgt3",
    ]);
    let state_dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&exe)
        .env(INSIDE_NETNS_STATE_DIR, state_dir.path())
        .env(
            PARENT_NETNS,
            std::fs::read_link("/proc/self/ns/net").unwrap(),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success() && stdout.contains(SUCCESS_MARKER),
        "child in {ns} failed"
    );
    println!("test veth_in_netns_xps_rps_sysctl_apply_verify_revert ... ok");
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn inside_namespace(state_dir: &Path) {
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host = PathBuf::from(std::env::var_os(PARENT_NETNS).unwrap());
    assert_ne!(
        own, host,
        "refusing to tune: this is the host's network namespace"
    );
    assert!(
        Path::new("/sys/class/net/sgt0").exists(),
        "sysfs is not the namespace's"
    );

    let root = PathBuf::from("/");
    let interfaces = ["sgt0".to_string(), "sgt2".to_string()];
    let shard_cpus = [0, 1];
    // Only net.* sysctls: in a namespace they are the namespace's own; fs.* would be the host's.
    let profile = SysctlProfile::edge().restricted_to("net.");
    let somaxconn_before = read("/proc/sys/net/core/somaxconn");
    let port_range_before = read("/proc/sys/net/ipv4/ip_local_port_range");

    let plan = plan(&root, &interfaces, &shard_cpus, &profile).unwrap();
    println!("{plan}");
    assert!(plan.findings.contains(&Finding::NoQueueIrqs {
        interface: "sgt0".into(),
        driver: None
    }));
    assert!(plan.findings.contains(&Finding::MoreQueuesThanShards {
        interface: "sgt0".into(),
        queues: 4,
        shards: 2
    }));
    assert!(plan.findings.contains(&Finding::SysctlReadOnly {
        key: "net.core.rmem_max".into()
    }));
    assert!(plan.findings.contains(&Finding::FewerQueuesThanShards {
        interface: "sgt2".into(),
        queues: 1,
        shards: 2
    }));
    let nic_changes: Vec<(String, String)> = plan
        .changes
        .iter()
        .filter(|c| !c.is_sysctl())
        .map(|c| (c.path.display().to_string(), c.new.clone()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("sys/class/net/sgt0/queues/tx-0/xps_cpus", "1"),
        ("sys/class/net/sgt0/queues/tx-1/xps_cpus", "2"),
        ("sys/class/net/sgt0/queues/tx-2/xps_cpus", "1"),
        ("sys/class/net/sgt0/queues/tx-3/xps_cpus", "2"),
        ("sys/class/net/sgt2/queues/tx-0/xps_cpus", "3"),
        ("sys/class/net/sgt2/queues/rx-0/rps_cpus", "3"),
    ]
    .iter()
    .map(|(p, v)| (p.to_string(), v.to_string()))
    .collect();
    assert_eq!(nic_changes, expected);

    let applied = plan
        .apply(&root, state_dir, Consent::NicAndSysctls)
        .unwrap();
    println!("{applied}");
    // Read back through the kernel: it accepted the masks and prints them the same way.
    assert_eq!(read("/sys/class/net/sgt0/queues/tx-1/xps_cpus"), "2\n");
    assert_eq!(read("/sys/class/net/sgt0/queues/tx-2/xps_cpus"), "1\n");
    assert_eq!(read("/sys/class/net/sgt2/queues/tx-0/xps_cpus"), "3\n");
    assert_eq!(read("/sys/class/net/sgt2/queues/rx-0/rps_cpus"), "3\n");
    assert_eq!(read("/sys/class/net/sgt0/queues/rx-0/rps_cpus"), "0\n");
    assert_eq!(read("/proc/sys/net/core/somaxconn"), "65535\n");
    assert_eq!(
        read("/proc/sys/net/ipv4/ip_local_port_range"),
        "1024\t65535\n"
    );
    let report = verify(&root, state_dir).unwrap();
    assert!(report.holds(), "{report}");
    assert!(plan_again_is_empty(
        &root,
        &interfaces,
        &shard_cpus,
        &profile
    ));

    std::fs::write("/sys/class/net/sgt0/queues/tx-3/xps_cpus", "1\n").unwrap();
    let report = verify(&root, state_dir).unwrap();
    assert_eq!(report.drift.len(), 1, "{report}");
    assert_eq!(
        report.drift[0].path,
        PathBuf::from("sys/class/net/sgt0/queues/tx-3/xps_cpus")
    );
    assert_eq!(report.drift[0].found.as_deref(), Some("1"));

    let reverted = revert(&root, state_dir).unwrap();
    println!("{reverted}");
    for queue in 0..4 {
        assert_eq!(
            read(&format!("/sys/class/net/sgt0/queues/tx-{queue}/xps_cpus")),
            "0\n"
        );
    }
    assert_eq!(read("/sys/class/net/sgt2/queues/rx-0/rps_cpus"), "0\n");
    assert_eq!(read("/proc/sys/net/core/somaxconn"), somaxconn_before);
    assert_eq!(
        read("/proc/sys/net/ipv4/ip_local_port_range"),
        port_range_before
    );
    println!("{SUCCESS_MARKER}");
}

fn plan_again_is_empty(
    root: &Path,
    interfaces: &[String],
    shard_cpus: &[usize],
    profile: &SysctlProfile,
) -> bool {
    plan(root, interfaces, shard_cpus, profile)
        .unwrap()
        .is_satisfied()
}
