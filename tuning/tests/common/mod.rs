//! Fake host trees for the integration tests: `/sys` and `/proc` laid out like real multi-queue
//! NICs (ixgbe, mlx5, virtio-net), with the kernel's documented file formats.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// One MSI-X vector of a fake device: IRQ number and the name `/proc/interrupts` shows.
pub struct FakeIrq {
    pub irq: u32,
    pub name: String,
    /// Initial `smp_affinity_list`.
    pub affinity: String,
}

/// A fake NIC.
pub struct FakeNic {
    pub interface: String,
    /// Path of the device directory under `sys/devices`.
    pub device_dir: String,
    /// Directory holding `msi_irqs` (the device itself, or its PCI parent for virtio).
    pub msi_dir: String,
    pub driver: String,
    /// Initial `rps_cpus` per RX queue.
    pub rps: Vec<String>,
    /// Initial `xps_cpus` per TX queue.
    pub xps: Vec<String>,
    pub irqs: Vec<FakeIrq>,
}

/// A fake `/` with `sys` and `proc`.
pub struct FakeHost {
    pub dir: TempDir,
    cpus: usize,
    interrupts: Vec<(u32, String, String)>,
}

impl FakeHost {
    /// A host with CPUs `0..cpus`.
    pub fn new(cpus: usize) -> Self {
        let host = Self {
            dir: tempfile::tempdir().unwrap(),
            cpus,
            interrupts: vec![(0, "IO-APIC   2-edge".into(), "timer".into())],
        };
        host.file(
            "sys/devices/system/cpu/possible",
            &format!("0-{}", cpus - 1),
        );
        host.file(
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet",
        );
        host
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Write `content` plus a newline, the way the kernel shows attribute files.
    pub fn file(&self, relative: &str, content: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{content}\n")).unwrap();
    }

    /// Raw content of a file.
    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(relative)).unwrap()
    }

    fn symlink(&self, link: &str, target: &str) {
        let path = self.dir.path().join(link);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }

    /// The sysctls of the edge profile with stock kernel defaults; busy polling only when
    /// `busy_poll` (kernels built without CONFIG_NET_RX_BUSY_POLL lack it).
    pub fn stock_sysctls(&self, busy_poll: bool) {
        self.file("proc/sys/net/core/somaxconn", "4096");
        self.file("proc/sys/net/ipv4/tcp_max_syn_backlog", "1024");
        self.file("proc/sys/net/ipv4/ip_local_port_range", "32768\t60999");
        self.file("proc/sys/net/ipv4/tcp_fastopen", "1");
        if busy_poll {
            self.file("proc/sys/net/core/busy_poll", "0");
            self.file("proc/sys/net/core/busy_read", "0");
        }
        self.file("proc/sys/net/core/rmem_max", "212992");
        self.file("proc/sys/net/core/wmem_max", "212992");
        self.file("proc/sys/net/core/netdev_budget", "300");
        self.file("proc/sys/net/core/netdev_max_backlog", "1000");
        self.file("proc/sys/fs/file-max", "9223372036854775807");
        self.file("proc/sys/fs/nr_open", "1048576");
    }

    /// Lay out `nic` under `sys` and `proc`.
    pub fn add_nic(&mut self, nic: &FakeNic) {
        let class_dir = format!("sys/class/net/{}", nic.interface);
        for (queue, rps) in nic.rps.iter().enumerate() {
            self.file(&format!("{class_dir}/queues/rx-{queue}/rps_cpus"), rps);
            self.file(&format!("{class_dir}/queues/rx-{queue}/rps_flow_cnt"), "0");
        }
        for (queue, xps) in nic.xps.iter().enumerate() {
            self.file(&format!("{class_dir}/queues/tx-{queue}/xps_cpus"), xps);
            self.file(&format!("{class_dir}/queues/tx-{queue}/tx_maxrate"), "0");
        }
        // sys/class/net/IF/device -> the device directory (real sysfs: ../../../<pci path>).
        self.symlink(
            &format!("{class_dir}/device"),
            &format!("../../../../{}", nic.device_dir),
        );
        self.symlink(
            &format!("{}/driver", nic.device_dir),
            &format!(
                "{}sys/bus/pci/drivers/{}",
                "../".repeat(nic.device_dir.matches('/').count() + 1),
                nic.driver
            ),
        );
        std::fs::create_dir_all(
            self.dir
                .path()
                .join(format!("sys/bus/pci/drivers/{}", nic.driver)),
        )
        .unwrap();
        for irq in &nic.irqs {
            self.file(&format!("{}/msi_irqs/{}", nic.msi_dir, irq.irq), "msix");
            self.file(
                &format!("proc/irq/{}/smp_affinity_list", irq.irq),
                &irq.affinity,
            );
            self.file(&format!("proc/irq/{}/node", irq.irq), "0");
            let chip = if nic.driver == "mlx5_core" {
                let address = nic.msi_dir.rsplit('/').next().unwrap().to_string();
                format!("IR-PCI-MSIX-{address}    {}-edge", irq.irq)
            } else {
                format!("PCI-MSI {}-edge", 1_572_864 + irq.irq)
            };
            self.interrupts.push((irq.irq, chip, irq.name.clone()));
        }
        self.write_interrupts();
    }

    /// An IRQ of some other device, present only in `/proc/interrupts`.
    pub fn add_foreign_irq(&mut self, irq: u32, name: &str) {
        self.file(&format!("proc/irq/{irq}/smp_affinity_list"), "0");
        self.interrupts
            .push((irq, format!("PCI-MSI {irq}-edge"), name.to_string()));
        self.write_interrupts();
    }

    fn write_interrupts(&self) {
        let mut text = String::from("    ");
        for cpu in 0..self.cpus {
            text.push_str(&format!("       CPU{cpu}"));
        }
        text.push('\n');
        let mut rows = self.interrupts.clone();
        rows.sort_by_key(|(irq, _, _)| *irq);
        for (irq, chip, name) in rows {
            text.push_str(&format!("{irq:4}:"));
            for cpu in 0..self.cpus {
                text.push_str(&format!(" {:10}", (irq as usize * 7 + cpu * 13) % 1000));
            }
            text.push_str(&format!("  {chip}      {name}\n"));
        }
        text.push_str(" NMI:");
        for _ in 0..self.cpus {
            text.push_str(&format!(" {:10}", 0));
        }
        text.push_str("   Non-maskable interrupts\n ERR:          0\n");
        std::fs::write(self.dir.path().join("proc/interrupts"), text).unwrap();
    }

    /// Every regular file under the root with its content: to prove `revert` restores exactly.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let kind = entry.file_type().unwrap();
                if kind.is_symlink() {
                    continue;
                }
                if kind.is_dir() {
                    walk(base, &entry.path(), out);
                } else {
                    let content = std::fs::read_to_string(entry.path()).unwrap();
                    out.insert(
                        entry.path().strip_prefix(base).unwrap().to_path_buf(),
                        content,
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }
}

/// An ixgbe port: `queues` combined TxRx vectors plus the link vector, driver-default XPS
/// (queue i on CPU i % cpus) and IRQs unpinned.
pub fn ixgbe(interface: &str, pci: &str, first_irq: u32, queues: usize, cpus: usize) -> FakeNic {
    let device_dir = format!("sys/devices/pci0000:00/0000:00:02.0/{pci}");
    let mut irqs: Vec<FakeIrq> = (0..queues)
        .map(|queue| FakeIrq {
            irq: first_irq + queue as u32,
            name: format!("{interface}-TxRx-{queue}"),
            affinity: format!("0-{}", cpus - 1),
        })
        .collect();
    irqs.push(FakeIrq {
        irq: first_irq + queues as u32,
        name: interface.to_string(),
        affinity: format!("0-{}", cpus - 1),
    });
    FakeNic {
        interface: interface.into(),
        msi_dir: device_dir.clone(),
        device_dir,
        driver: "ixgbe".into(),
        rps: vec!["0".into(); queues],
        xps: (0..queues)
            .map(|queue| format!("{:x}", 1 << (queue % cpus)))
            .collect(),
        irqs,
    }
}
