//! `shardgate tune plan|apply|verify|revert` through the real binary, against a fake host tree
//! (`--root`) laid out like an ixgbe NIC (the tuning crate's fixtures): the plan names each
//! IRQ, XPS and RPS change, apply writes them and records the old values, verify reports that
//! they hold (and exits non-zero once one drifts), revert puts every file back as it was.

#[path = "../tuning/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{ixgbe, FakeHost};
use shardgate_tests::shardgate_bin;

fn tune(action: &str, config: &std::path::Path, root: &std::path::Path) -> (bool, String) {
    let out = Command::new(shardgate_bin())
        .args(["tune", action, "--config"])
        .arg(config)
        .arg("--root")
        .arg(root)
        .args(["--interface", "eth0"])
        .output()
        .expect("run shardgate tune");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn plan_apply_verify_and_revert_through_the_cli() {
    let mut host = FakeHost::new(2);
    host.add_nic(&ixgbe("eth0", "0000:03:00.0", 40, 4, 2));
    host.stock_sysctls(true);
    let before = host.snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nshards = [1]\ncontrol_cpu = 0\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");

    let (ok, plan) = tune("plan", &config, host.root());
    assert!(ok, "{plan}");
    // Every queue's IRQ lands on the one shard CPU; the plan says which file changes how.
    for irq in 40..44 {
        assert!(plan.contains(&format!("proc/irq/{irq}/smp_affinity_list")), "IRQ {irq} missing:\n{plan}");
    }
    assert_eq!(host.snapshot(), before, "plan changed the host");

    let (ok, applied) = tune("apply", &config, host.root());
    assert!(ok, "{applied}");
    for irq in 40..44 {
        assert_eq!(host.read(&format!("proc/irq/{irq}/smp_affinity_list")).trim(), "1", "IRQ {irq}:\n{applied}");
    }
    let (ok, verified) = tune("verify", &config, host.root());
    assert!(ok, "{verified}");

    // Someone moves an IRQ back: verify names the drift and fails.
    host.file("proc/irq/41/smp_affinity_list", "0-1");
    let (ok, drifted) = tune("verify", &config, host.root());
    assert!(!ok && drifted.contains("proc/irq/41/smp_affinity_list"), "{drifted}");

    let (ok, reverted) = tune("revert", &config, host.root());
    assert!(ok, "{reverted}");
    let after = host.snapshot();
    for (path, content) in &before {
        if path.starts_with("proc/irq/41") {
            continue; // changed by hand after apply: revert leaves a value it did not write
        }
        assert_eq!(after.get(path), Some(content), "{} not restored:\n{reverted}", path.display());
    }
}

#[test]
fn an_unknown_interface_is_a_clear_error() {
    let host = FakeHost::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, format!("[runtime]\nshards = [1]\ndata_dir = \"{}\"\n", dir.path().join("data").display()))
        .expect("config");
    let (ok, text) = tune("plan", &config, host.root());
    assert!(!ok && text.contains("eth0"), "{text}");
}
