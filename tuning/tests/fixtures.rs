//! Plan / apply / verify / revert against fake hosts laid out like real ixgbe, mlx5 and
//! virtio-net machines, asserting the exact files and values written.

mod common;

use std::path::PathBuf;

use common::{ixgbe, FakeHost, FakeIrq, FakeNic};
use shardgate_tuning::{
    plan, revert, verify, ChangeKind, Consent, Finding, SysctlProfile, TuningConfig, TuningError,
};

/// (path, old, new) of every change, for exact comparison.
fn triples(plan: &shardgate_tuning::Plan) -> Vec<(String, String, String)> {
    plan.changes
        .iter()
        .map(|c| (c.path.display().to_string(), c.old.clone(), c.new.clone()))
        .collect()
}

fn t(path: &str, old: &str, new: &str) -> (String, String, String) {
    (path.to_string(), old.to_string(), new.to_string())
}

/// ixgbe: 8 combined queues for 3 shards on CPUs 1,2,3 of a 4-CPU host (CPU 0 = control core).
fn ixgbe_host() -> FakeHost {
    let mut host = FakeHost::new(4);
    host.add_nic(&ixgbe("eth0", "0000:03:00.0", 40, 8, 4));
    // The second port's vectors must not be touched when only eth0 is tuned.
    host.add_nic(&ixgbe("eth1", "0000:03:00.1", 60, 2, 4));
    host.add_foreign_irq(16, "ahci[0000:00:17.0]");
    host.stock_sysctls(true);
    host
}

#[test]
fn ixgbe_more_queues_than_shards_spreads_irqs_and_xps() {
    let host = ixgbe_host();
    let state = tempfile::tempdir().unwrap();
    let before = host.snapshot();
    let plan = plan(
        host.root(),
        &["eth0".to_string()],
        &[1, 2, 3],
        &SysctlProfile::none(),
    )
    .unwrap();

    assert_eq!(plan.nics.len(), 1);
    assert_eq!(plan.nics[0].driver.as_deref(), Some("ixgbe"));
    assert_eq!(
        plan.nics[0].queue_irqs.len(),
        8,
        "the link vector `eth0` is not a queue IRQ"
    );
    assert_eq!(
        triples(&plan),
        vec![
            t("proc/irq/40/smp_affinity_list", "0-3", "1"),
            t("proc/irq/41/smp_affinity_list", "0-3", "2"),
            t("proc/irq/42/smp_affinity_list", "0-3", "3"),
            t("proc/irq/43/smp_affinity_list", "0-3", "1"),
            t("proc/irq/44/smp_affinity_list", "0-3", "2"),
            t("proc/irq/45/smp_affinity_list", "0-3", "3"),
            t("proc/irq/46/smp_affinity_list", "0-3", "1"),
            t("proc/irq/47/smp_affinity_list", "0-3", "2"),
            t("sys/class/net/eth0/queues/tx-0/xps_cpus", "1", "2"),
            t("sys/class/net/eth0/queues/tx-1/xps_cpus", "2", "4"),
            t("sys/class/net/eth0/queues/tx-2/xps_cpus", "4", "8"),
            t("sys/class/net/eth0/queues/tx-3/xps_cpus", "8", "2"),
            t("sys/class/net/eth0/queues/tx-4/xps_cpus", "1", "4"),
            t("sys/class/net/eth0/queues/tx-5/xps_cpus", "2", "8"),
            t("sys/class/net/eth0/queues/tx-6/xps_cpus", "4", "2"),
            t("sys/class/net/eth0/queues/tx-7/xps_cpus", "8", "4"),
        ]
    );
    assert!(plan.findings.contains(&Finding::MoreQueuesThanShards {
        interface: "eth0".into(),
        queues: 8,
        shards: 3
    }));
    let printed = plan.to_string();
    assert!(
        printed.contains("eth0 (driver ixgbe): 8 rx / 8 tx queues, 8 queue IRQs"),
        "{printed}"
    );
    assert!(printed.contains("/proc/irq/43/smp_affinity_list: 0-3 -> 1  (eth0 queue 3 IRQ eth0-TxRx-3 -> shard 0 on CPU 1)"), "{printed}");
    assert!(
        printed.contains("isolcpus=nohz,domain,1-3 nohz_full=1-3 rcu_nocbs=1-3 irqaffinity=0"),
        "{printed}"
    );

    let applied = plan
        .apply(host.root(), state.path(), Consent::NicOnly)
        .unwrap();
    assert_eq!(applied.written.len(), 16);
    assert!(applied.skipped.is_empty());
    assert_eq!(host.read("proc/irq/40/smp_affinity_list"), "1\n");
    assert_eq!(host.read("proc/irq/45/smp_affinity_list"), "3\n");
    assert_eq!(
        host.read("proc/irq/48/smp_affinity_list"),
        "0-3\n",
        "link vector untouched"
    );
    assert_eq!(
        host.read("proc/irq/60/smp_affinity_list"),
        "0-3\n",
        "eth1 untouched"
    );
    assert_eq!(host.read("sys/class/net/eth0/queues/tx-3/xps_cpus"), "2\n");
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"), "0\n");

    let report = verify(host.root(), state.path()).unwrap();
    assert_eq!((report.checked, report.holds()), (16, true));
    let again = shardgate_tuning::plan(
        host.root(),
        &["eth0".to_string()],
        &[1, 2, 3],
        &SysctlProfile::none(),
    )
    .unwrap();
    assert!(again.is_satisfied(), "{again}");

    // Something (irqbalance) moves an IRQ: verify reports it.
    host.file("proc/irq/44/smp_affinity_list", "0-3");
    let report = verify(host.root(), state.path()).unwrap();
    assert_eq!(report.drift.len(), 1);
    assert_eq!(
        report.drift[0].path,
        PathBuf::from("proc/irq/44/smp_affinity_list")
    );
    assert_eq!(report.drift[0].expected, "2");
    assert_eq!(report.drift[0].found.as_deref(), Some("0-3"));
    assert!(report
        .to_string()
        .contains("/proc/irq/44/smp_affinity_list: expected 2, found 0-3"));

    let reverted = revert(host.root(), state.path()).unwrap();
    assert_eq!(reverted.restored.len(), 16);
    assert_eq!(
        host.snapshot(),
        before,
        "revert restores every file byte for byte"
    );
    assert!(!state.path().join("tuning-state.json").exists());
}

#[test]
fn sysctls_are_planned_but_written_only_with_consent() {
    let host = ixgbe_host();
    let state = tempfile::tempdir().unwrap();
    let before = host.snapshot();
    let plan = plan(
        host.root(),
        &["eth0".to_string()],
        &[1, 2, 3],
        &SysctlProfile::edge(),
    )
    .unwrap();
    let sysctls: Vec<_> = triples(&plan)
        .into_iter()
        .filter(|(path, _, _)| path.starts_with("proc/sys"))
        .collect();
    assert_eq!(
        sysctls,
        vec![
            t("proc/sys/net/core/somaxconn", "4096", "65535"),
            t("proc/sys/net/ipv4/tcp_max_syn_backlog", "1024", "65535"),
            t(
                "proc/sys/net/ipv4/ip_local_port_range",
                "32768\t60999",
                "1024 65535"
            ),
            t("proc/sys/net/ipv4/tcp_fastopen", "1", "3"),
            t("proc/sys/net/core/busy_poll", "0", "50"),
            t("proc/sys/net/core/busy_read", "0", "50"),
            t("proc/sys/net/core/rmem_max", "212992", "16777216"),
            t("proc/sys/net/core/wmem_max", "212992", "16777216"),
            t("proc/sys/net/core/netdev_budget", "300", "600"),
            t("proc/sys/net/core/netdev_max_backlog", "1000", "16384"),
            t("proc/sys/fs/nr_open", "1048576", "4194304"),
        ],
        "fs.file-max is already higher and is never lowered"
    );
    assert!(plan.to_string().contains("/proc/sys/net/core/somaxconn: 4096 -> 65535  (net.core.somaxconn: listen() backlog cap: bursts must not overflow accept queues) [sysctl: needs consent]"));

    let applied = plan
        .apply(host.root(), state.path(), Consent::NicOnly)
        .unwrap();
    assert_eq!(applied.written.len(), 16);
    assert_eq!(applied.skipped.len(), 11);
    assert_eq!(host.read("proc/sys/net/core/somaxconn"), "4096\n");
    assert!(applied
        .to_string()
        .contains("skipped /proc/sys/fs/nr_open: sysctl, no consent given"));

    let applied = plan
        .apply(host.root(), state.path(), Consent::NicAndSysctls)
        .unwrap();
    assert_eq!(applied.written.len(), 27);
    assert_eq!(host.read("proc/sys/net/core/somaxconn"), "65535\n");
    assert_eq!(
        host.read("proc/sys/net/ipv4/ip_local_port_range"),
        "1024 65535\n"
    );
    assert_eq!(host.read("proc/sys/net/ipv4/tcp_fastopen"), "3\n");
    assert_eq!(host.read("proc/sys/fs/nr_open"), "4194304\n");
    assert_eq!(host.read("proc/sys/fs/file-max"), "9223372036854775807\n");
    let report = verify(host.root(), state.path()).unwrap();
    assert_eq!((report.checked, report.holds()), (27, true));

    revert(host.root(), state.path()).unwrap();
    assert_eq!(host.snapshot(), before);
}

#[test]
fn applying_twice_keeps_the_first_old_values_so_revert_is_exact() {
    let host = ixgbe_host();
    let state = tempfile::tempdir().unwrap();
    let before = host.snapshot();
    let cpus = [1, 2, 3];
    let interfaces = ["eth0".to_string()];
    plan(host.root(), &interfaces, &cpus, &SysctlProfile::none())
        .unwrap()
        .apply(host.root(), state.path(), Consent::NicOnly)
        .unwrap();
    // Drift, then a start-up apply with a different shard layout.
    host.file("sys/class/net/eth0/queues/tx-0/xps_cpus", "f");
    let second = plan(host.root(), &interfaces, &[3, 2, 1], &SysctlProfile::none()).unwrap();
    assert!(second.changes.iter().any(|c| c.path.as_path()
        == std::path::Path::new("sys/class/net/eth0/queues/tx-0/xps_cpus")
        && c.old == "f"
        && c.new == "8"));
    second
        .apply(host.root(), state.path(), Consent::NicOnly)
        .unwrap();
    assert_eq!(host.read("proc/irq/40/smp_affinity_list"), "3\n");
    assert!(verify(host.root(), state.path()).unwrap().holds());
    revert(host.root(), state.path()).unwrap();
    assert_eq!(host.snapshot(), before);
}

/// mlx5: 4 channels on a 40-CPU host (two 32-bit mask groups), shards on CPUs 4,5,36,37.
fn mlx5_host() -> FakeHost {
    let mut host = FakeHost::new(40);
    for (function, interface, first_irq) in [(0, "ens2f0np0", 98u32), (1, "ens2f1np1", 110)] {
        let address = format!("0000:3b:00.{function}");
        let device_dir = format!("sys/devices/pci0000:3a/0000:3a:00.0/{address}");
        let mut irqs = vec![FakeIrq {
            irq: first_irq,
            name: format!("mlx5_async0@pci:{address}"),
            affinity: "0-39".into(),
        }];
        irqs.extend((0..4).map(|channel| FakeIrq {
            irq: first_irq + 1 + channel,
            name: format!("mlx5_comp{channel}@pci:{address}"),
            affinity: channel.to_string(),
        }));
        host.add_nic(&FakeNic {
            interface: interface.into(),
            msi_dir: device_dir.clone(),
            device_dir,
            driver: "mlx5_core".into(),
            rps: vec!["00,00000000".into(); 4],
            xps: (0..4)
                .map(|channel| format!("00,{:08x}", 1 << channel))
                .collect(),
            irqs,
        });
    }
    host.stock_sysctls(true);
    host
}

#[test]
fn mlx5_one_channel_per_shard_with_two_group_masks() {
    let host = mlx5_host();
    let state = tempfile::tempdir().unwrap();
    let before = host.snapshot();
    let plan = plan(
        host.root(),
        &["ens2f0np0".to_string()],
        &[4, 5, 36, 37],
        &SysctlProfile::none(),
    )
    .unwrap();
    assert_eq!(
        triples(&plan),
        vec![
            t("proc/irq/99/smp_affinity_list", "0", "4"),
            t("proc/irq/100/smp_affinity_list", "1", "5"),
            t("proc/irq/101/smp_affinity_list", "2", "36"),
            t("proc/irq/102/smp_affinity_list", "3", "37"),
            t(
                "sys/class/net/ens2f0np0/queues/tx-0/xps_cpus",
                "00,00000001",
                "00,00000010"
            ),
            t(
                "sys/class/net/ens2f0np0/queues/tx-1/xps_cpus",
                "00,00000002",
                "00,00000020"
            ),
            t(
                "sys/class/net/ens2f0np0/queues/tx-2/xps_cpus",
                "00,00000004",
                "10,00000000"
            ),
            t(
                "sys/class/net/ens2f0np0/queues/tx-3/xps_cpus",
                "00,00000008",
                "20,00000000"
            ),
        ]
    );
    assert!(
        !plan.findings.iter().any(|f| matches!(
            f,
            Finding::MoreQueuesThanShards { .. } | Finding::FewerQueuesThanShards { .. }
        )),
        "4 channels for 4 shards is a match: {:?}",
        plan.findings
    );
    assert!(plan
        .changes
        .iter()
        .all(|c| !matches!(&c.kind, ChangeKind::IrqAffinity { irq } if *irq == 98 || *irq >= 110)));

    plan.apply(host.root(), state.path(), Consent::NicOnly)
        .unwrap();
    assert_eq!(
        host.read("sys/class/net/ens2f0np0/queues/tx-2/xps_cpus"),
        "10,00000000\n"
    );
    assert_eq!(host.read("proc/irq/102/smp_affinity_list"), "37\n");
    assert_eq!(
        host.read("proc/irq/98/smp_affinity_list"),
        "0-39\n",
        "async vector untouched"
    );
    assert_eq!(
        host.read("proc/irq/111/smp_affinity_list"),
        "0\n",
        "other port untouched"
    );
    // The kernel reads masks back in its own spelling; a different but equal spelling holds.
    host.file("sys/class/net/ens2f0np0/queues/tx-0/xps_cpus", "0,10");
    assert!(verify(host.root(), state.path()).unwrap().holds());
    revert(host.root(), state.path()).unwrap();
    let mut expected = before;
    expected.insert(
        PathBuf::from("sys/class/net/ens2f0np0/queues/tx-0/xps_cpus"),
        "00,00000001\n".into(),
    );
    assert_eq!(host.snapshot(), expected);
}

/// virtio-net: 2 queue pairs for 4 shards; vectors belong to the PCI parent of `virtio0`.
fn virtio_host() -> FakeHost {
    let mut host = FakeHost::new(4);
    let pci_dir = "sys/devices/pci0000:00/0000:00:03.0".to_string();
    let mut irqs = vec![FakeIrq {
        irq: 24,
        name: "virtio0-config".into(),
        affinity: "0-3".into(),
    }];
    for queue in 0..2u32 {
        irqs.push(FakeIrq {
            irq: 25 + 2 * queue,
            name: format!("virtio0-input.{queue}"),
            affinity: "0-3".into(),
        });
        irqs.push(FakeIrq {
            irq: 26 + 2 * queue,
            name: format!("virtio0-output.{queue}"),
            affinity: "0-3".into(),
        });
    }
    host.add_nic(&FakeNic {
        interface: "eth0".into(),
        device_dir: format!("{pci_dir}/virtio0"),
        msi_dir: pci_dir,
        driver: "virtio_net".into(),
        rps: vec!["0".into(); 2],
        xps: vec!["3".into(), "c".into()],
        irqs,
    });
    // A virtio block device's vectors on another PCI function.
    host.add_foreign_irq(30, "virtio1-req.0");
    // Loopback: no device, not a tuning candidate.
    host.file("sys/class/net/lo/queues/rx-0/rps_cpus", "0");
    host.file("sys/class/net/lo/queues/tx-0/xps_cpus", "0");
    host.stock_sysctls(false);
    host
}

#[test]
fn virtio_fewer_queues_than_shards_uses_rps() {
    let host = virtio_host();
    let state = tempfile::tempdir().unwrap();
    // Read-only as seen from a container: planned around, not written.
    let rmem_max = host.root().join("proc/sys/net/core/rmem_max");
    std::fs::set_permissions(
        &rmem_max,
        std::os::unix::fs::PermissionsExt::from_mode(0o444),
    )
    .unwrap();
    let before = host.snapshot();
    // No interfaces named: every device-backed interface, i.e. eth0 but not lo.
    let plan = plan(host.root(), &[], &[0, 1, 2, 3], &SysctlProfile::edge()).unwrap();
    assert_eq!(plan.nics.len(), 1);
    assert_eq!(plan.nics[0].interface, "eth0");
    assert_eq!(plan.nics[0].driver.as_deref(), Some("virtio_net"));
    let nic_changes: Vec<_> = triples(&plan)
        .into_iter()
        .filter(|(p, _, _)| !p.starts_with("proc/sys"))
        .collect();
    assert_eq!(
        nic_changes,
        vec![
            t("proc/irq/25/smp_affinity_list", "0-3", "0"),
            t("proc/irq/26/smp_affinity_list", "0-3", "0"),
            t("proc/irq/27/smp_affinity_list", "0-3", "1"),
            t("proc/irq/28/smp_affinity_list", "0-3", "1"),
            t("sys/class/net/eth0/queues/tx-0/xps_cpus", "3", "5"),
            t("sys/class/net/eth0/queues/tx-1/xps_cpus", "c", "a"),
            t("sys/class/net/eth0/queues/rx-0/rps_cpus", "0", "5"),
            t("sys/class/net/eth0/queues/rx-1/rps_cpus", "0", "a"),
        ]
    );
    assert!(plan.findings.contains(&Finding::FewerQueuesThanShards {
        interface: "eth0".into(),
        queues: 2,
        shards: 4
    }));
    assert!(plan.findings.contains(&Finding::SysctlUnsupported {
        key: "net.core.busy_poll".into()
    }));
    assert!(plan.findings.contains(&Finding::SysctlUnsupported {
        key: "net.core.busy_read".into()
    }));
    assert!(plan.findings.contains(&Finding::SysctlReadOnly {
        key: "net.core.rmem_max".into()
    }));
    assert!(!plan.changes.iter().any(|c| c.path.ends_with("rmem_max")));
    assert!(plan
        .to_string()
        .contains("CPU isolation: not advised, every CPU runs a shard"));

    let applied = plan
        .apply(host.root(), state.path(), Consent::NicAndSysctls)
        .unwrap();
    assert_eq!(applied.written.len(), 8 + 8);
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"), "5\n");
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-1/rps_cpus"), "a\n");
    assert_eq!(
        host.read("proc/irq/24/smp_affinity_list"),
        "0-3\n",
        "config vector untouched"
    );
    assert_eq!(
        host.read("proc/irq/30/smp_affinity_list"),
        "0\n",
        "virtio-blk untouched"
    );
    assert_eq!(
        host.read("proc/sys/net/ipv4/tcp_max_syn_backlog"),
        "65535\n"
    );
    assert!(
        !host.root().join("proc/sys/net/core/busy_poll").exists(),
        "unsupported sysctl not created"
    );

    let state_json = std::fs::read_to_string(state.path().join("tuning-state.json")).unwrap();
    assert!(
        state_json.contains("\"previous\": \"32768\\t60999\""),
        "{state_json}"
    );

    let reverted = revert(host.root(), state.path()).unwrap();
    assert_eq!(reverted.restored.len(), 16);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn a_vanished_interface_is_drift_and_is_skipped_on_revert() {
    let host = virtio_host();
    let state = tempfile::tempdir().unwrap();
    plan(
        host.root(),
        &["eth0".to_string()],
        &[0, 1, 2, 3],
        &SysctlProfile::none(),
    )
    .unwrap()
    .apply(host.root(), state.path(), Consent::NicOnly)
    .unwrap();
    std::fs::remove_dir_all(host.root().join("sys/class/net/eth0/queues/rx-1")).unwrap();
    let report = verify(host.root(), state.path()).unwrap();
    assert_eq!(report.drift.len(), 1);
    assert_eq!(report.drift[0].found, None);
    let reverted = revert(host.root(), state.path()).unwrap();
    assert_eq!(
        reverted.vanished,
        vec![PathBuf::from("sys/class/net/eth0/queues/rx-1/rps_cpus")]
    );
    assert_eq!(reverted.restored.len(), 7);
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"), "0\n");
}

#[test]
fn planning_errors_name_what_is_wrong() {
    let host = virtio_host();
    let err = plan(
        host.root(),
        &["eth9".to_string()],
        &[0],
        &SysctlProfile::none(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TuningError::UnknownInterface(ref name) if name == "eth9"),
        "{err}"
    );
    let err = plan(
        host.root(),
        &["eth0".to_string()],
        &[0, 4],
        &SysctlProfile::none(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "shard CPU 4 does not exist on this host (possible CPUs: 0-3)"
    );
    host.file("sys/class/net/eth0/queues/tx-1/xps_cpus", "zz");
    let err = plan(
        host.root(),
        &["eth0".to_string()],
        &[0, 1],
        &SysctlProfile::none(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("cannot parse \"zz\" as a hex CPU mask"),
        "{err}"
    );
    let state = tempfile::tempdir().unwrap();
    let err = verify(host.root(), state.path()).unwrap_err();
    assert!(matches!(err, TuningError::NoAppliedState(_)), "{err}");
}

#[test]
fn startup_tuning_follows_the_config_section() {
    let host = ixgbe_host();
    let state = tempfile::tempdir().unwrap();
    let off: TuningConfig = toml::from_str("apply = false").unwrap();
    assert!(off
        .apply_at_startup(host.root(), &[1, 2, 3], state.path())
        .unwrap()
        .is_none());
    assert!(!state.path().join("tuning-state.json").exists());

    let nic_only: TuningConfig = toml::from_str("apply = true\ninterfaces = [\"eth0\"]").unwrap();
    let (plan, applied) = nic_only
        .apply_at_startup(host.root(), &[1, 2, 3], state.path())
        .unwrap()
        .unwrap();
    assert_eq!(plan.changes.len(), 16 + 11);
    assert_eq!((applied.written.len(), applied.skipped.len()), (16, 11));
    assert_eq!(host.read("proc/irq/41/smp_affinity_list"), "2\n");
    assert_eq!(host.read("proc/sys/net/core/somaxconn"), "4096\n");

    let with_sysctls: TuningConfig =
        toml::from_str("apply = true\ninterfaces = [\"eth0\"]\nsysctl = true").unwrap();
    let (_, applied) = with_sysctls
        .apply_at_startup(host.root(), &[1, 2, 3], state.path())
        .unwrap()
        .unwrap();
    assert_eq!(
        (applied.written.len(), applied.skipped.len()),
        (11, 0),
        "NIC already tuned"
    );
    assert_eq!(host.read("proc/sys/net/core/somaxconn"), "65535\n");

    let bad: TuningConfig = toml::from_str("apply = true\ninterfaces = [\"eth0/\"]").unwrap();
    assert!(matches!(
        bad.apply_at_startup(host.root(), &[1], state.path()),
        Err(TuningError::InvalidInterfaceName(_))
    ));
}
