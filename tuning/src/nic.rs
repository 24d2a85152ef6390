//! NIC discovery: an interface's RX/TX queues and the MSI-X IRQs that serve them.
//!
//! Owns: reading `sys/class/net/IF/queues/{rx-N,tx-N}`, the device's `msi_irqs` (for virtio-net
//! they sit on the PCI parent of the `virtioN` device), `proc/interrupts`, and recognising which
//! IRQ serves which queue from the names drivers give them:
//!
//! | driver family             | queue IRQ names                                  |
//! |---------------------------|--------------------------------------------------|
//! | ixgbe, igb, i40e, ice     | `eth0-TxRx-3` (or split `eth0-rx-3`, `eth0-tx-3`), i40e/ice prefix `i40e-` |
//! | mlx5_core                 | `mlx5_comp3@pci:0000:3b:00.0`                    |
//! | virtio_net                | `virtio0-input.3`, `virtio0-output.3`             |
//!
//! Other vectors (`eth0` link vector, `mlx5_async`, `virtio0-config`) are not queue IRQs.
//! Does not own: deciding which CPU a queue goes to (that is the plan).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::TuningError;
use crate::root::HostRoot;

/// Which direction of a queue an IRQ serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqDirection {
    /// One vector for the RX and TX rings of a queue pair (`eth0-TxRx-0`, `mlx5_comp0`).
    Combined,
    /// RX ring only (`eth0-rx-0`, `virtio0-input.0`).
    Rx,
    /// TX ring only (`eth0-tx-0`, `virtio0-output.0`).
    Tx,
}

/// One IRQ that serves queue `queue` of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueIrq {
    /// Queue number the IRQ serves.
    pub queue: usize,
    /// IRQ number (`proc/irq/<irq>`).
    pub irq: u32,
    /// Name from `proc/interrupts`.
    pub name: String,
    /// Which ring(s) of the queue it serves.
    pub direction: IrqDirection,
}

/// What discovery found for one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicQueues {
    /// Interface name (`eth0`).
    pub interface: String,
    /// Driver name from `device/driver`, when the interface has a device.
    pub driver: Option<String>,
    /// Number of `rx-N` queue directories.
    pub rx_queues: usize,
    /// Number of `tx-N` queue directories.
    pub tx_queues: usize,
    /// The queue IRQs, ordered by queue then IRQ number.
    pub queue_irqs: Vec<QueueIrq>,
}

impl NicQueues {
    /// Read the queues and queue IRQs of `interface` under `root`.
    pub fn discover(root: &HostRoot, interface: &str) -> Result<Self, TuningError> {
        let if_dir = PathBuf::from("sys/class/net").join(interface);
        if !root.exists(&if_dir) {
            return Err(TuningError::UnknownInterface(interface.to_string()));
        }
        let queue_names = root.list_dir(&if_dir.join("queues"))?;
        let count = |prefix: &str| {
            queue_names
                .iter()
                .filter(|name| {
                    name.strip_prefix(prefix)
                        .is_some_and(|n| n.parse::<usize>().is_ok())
                })
                .count()
        };
        let rx_queues = count("rx-");
        let tx_queues = count("tx-");
        if rx_queues == 0 || tx_queues == 0 {
            return Err(TuningError::NoQueues(interface.to_string()));
        }
        let device_dir = if_dir.join("device");
        let driver = root.link_name(&device_dir.join("driver"));
        let queue_irqs = if root.exists(&device_dir) {
            let device_name = root.link_name(&device_dir);
            let device_irqs = device_msi_irqs(root, &device_dir)?;
            let names = read_interrupt_names(root)?;
            let mut found: Vec<QueueIrq> = names
                .into_iter()
                .filter(|(irq, _)| device_irqs.as_ref().is_none_or(|own| own.contains(irq)))
                .filter_map(|(irq, name)| {
                    let (queue, direction) =
                        queue_of_irq_name(&name, interface, device_name.as_deref())?;
                    Some(QueueIrq {
                        queue,
                        irq,
                        name,
                        direction,
                    })
                })
                .collect();
            found.sort_by_key(|irq| (irq.queue, irq.irq));
            found
        } else {
            // Virtual interfaces (veth, bridges) have no device and no IRQs.
            Vec::new()
        };
        Ok(Self {
            interface: interface.to_string(),
            driver,
            rx_queues,
            tx_queues,
            queue_irqs,
        })
    }
}

/// Interfaces under `sys/class/net` backed by a device (physical or virtio NICs), sorted.
pub fn discover_interfaces(root: &HostRoot) -> Result<Vec<String>, TuningError> {
    let names = root.list_dir(Path::new("sys/class/net"))?;
    Ok(names
        .into_iter()
        .filter(|name| root.exists(&Path::new("sys/class/net").join(name).join("device")))
        .collect())
}

/// The device's MSI/MSI-X IRQ numbers, or `None` when it has no `msi_irqs` (legacy INTx).
fn device_msi_irqs(root: &HostRoot, device_dir: &Path) -> Result<Option<Vec<u32>>, TuningError> {
    // PCI NICs have device/msi_irqs; a virtio-net device is a child of the PCI function that
    // owns the vectors, so look one level up too.
    for candidate in [device_dir.join("msi_irqs"), device_dir.join("../msi_irqs")] {
        if root.exists(&candidate) {
            let irqs = root
                .list_dir(&candidate)?
                .iter()
                .filter_map(|name| name.parse().ok())
                .collect();
            return Ok(Some(irqs));
        }
    }
    Ok(None)
}

/// IRQ number → action name, from `proc/interrupts`.
pub fn read_interrupt_names(root: &HostRoot) -> Result<BTreeMap<u32, String>, TuningError> {
    let relative = Path::new("proc/interrupts");
    let path = root.path(relative);
    let text = std::fs::read_to_string(&path).map_err(|source| TuningError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(parse_interrupt_names(&text))
}

/// Parse the text of `/proc/interrupts` into IRQ number → name (the last column). Rows that are
/// not numbered IRQs (`NMI`, `LOC`, ...) are skipped.
pub fn parse_interrupt_names(text: &str) -> BTreeMap<u32, String> {
    let mut lines = text.lines();
    let cpu_columns = lines
        .next()
        .map_or(0, |header| header.split_whitespace().count());
    let mut names = BTreeMap::new();
    for line in lines {
        let Some((number, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = number.trim().parse::<u32>() else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Per-CPU counters, then chip, hwirq/trigger and the action name(s).
        if fields.len() <= cpu_columns {
            continue;
        }
        if let Some(name) = fields.last() {
            names.insert(irq, name.trim_end_matches(',').to_string());
        }
    }
    names
}

/// Which queue (and direction) an IRQ named `name` serves on `interface`, whose device is
/// `device_name` (PCI address such as `0000:3b:00.0`, or `virtio0`).
pub fn queue_of_irq_name(
    name: &str,
    interface: &str,
    device_name: Option<&str>,
) -> Option<(usize, IrqDirection)> {
    // Intel family: [<driver>-]<ifname>-TxRx-<n> / -rx-<n> / -tx-<n>
    for (marker, direction) in [
        ("-TxRx-", IrqDirection::Combined),
        ("-rx-", IrqDirection::Rx),
        ("-tx-", IrqDirection::Tx),
    ] {
        if let Some((prefix, number)) = name.rsplit_once(marker) {
            let owner_matches = prefix == interface || prefix.ends_with(&format!("-{interface}"));
            if owner_matches {
                if let Ok(queue) = number.parse() {
                    return Some((queue, direction));
                }
            }
        }
    }
    // mlx5: mlx5_comp<n>[@pci:<address>]
    if let Some(rest) = name.strip_prefix("mlx5_comp") {
        let (number, address) = match rest.split_once("@pci:") {
            Some((number, address)) => (number, Some(address)),
            None => (rest, None),
        };
        let address_matches = match (address, device_name) {
            (Some(address), Some(device)) => address == device,
            _ => true,
        };
        if address_matches {
            if let Ok(queue) = number.parse() {
                return Some((queue, IrqDirection::Combined));
            }
        }
    }
    // virtio-net: <virtioN>-input.<n> / <virtioN>-output.<n>
    if let Some(device) = device_name {
        for (marker, direction) in [
            ("-input.", IrqDirection::Rx),
            ("-output.", IrqDirection::Tx),
        ] {
            if let Some(number) = name
                .strip_prefix(device)
                .and_then(|rest| rest.strip_prefix(marker))
            {
                if let Ok(queue) = number.parse() {
                    return Some((queue, direction));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_interrupts_rows_yield_their_names() {
        let text = "           CPU0       CPU1       \n\
          0:         44          0   IO-APIC   2-edge      timer\n\
         41:     123456          7   PCI-MSI 1572865-edge      eth0-TxRx-0\n\
         62:          0          0  IR-PCI-MSIX-0000:3b:00.0    1-edge      mlx5_comp0@pci:0000:3b:00.0\n\
        NMI:          0          0   Non-maskable interrupts\n\
        ERR:          0\n";
        let names = parse_interrupt_names(text);
        assert_eq!(names.len(), 3);
        assert_eq!(names[&41], "eth0-TxRx-0");
        assert_eq!(names[&62], "mlx5_comp0@pci:0000:3b:00.0");
    }

    #[test]
    fn queue_irq_names_of_each_driver_family() {
        assert_eq!(
            queue_of_irq_name("eth0-TxRx-7", "eth0", None),
            Some((7, IrqDirection::Combined))
        );
        assert_eq!(
            queue_of_irq_name("i40e-ens1f0-TxRx-2", "ens1f0", None),
            Some((2, IrqDirection::Combined))
        );
        assert_eq!(
            queue_of_irq_name("eth0-rx-1", "eth0", None),
            Some((1, IrqDirection::Rx))
        );
        assert_eq!(queue_of_irq_name("eth10-TxRx-1", "eth0", None), None);
        assert_eq!(queue_of_irq_name("eth0", "eth0", None), None);
        assert_eq!(
            queue_of_irq_name("mlx5_comp12@pci:0000:3b:00.0", "ens2", Some("0000:3b:00.0")),
            Some((12, IrqDirection::Combined))
        );
        assert_eq!(
            queue_of_irq_name("mlx5_comp12@pci:0000:3b:00.1", "ens2", Some("0000:3b:00.0")),
            None
        );
        assert_eq!(
            queue_of_irq_name("mlx5_async0@pci:0000:3b:00.0", "ens2", None),
            None
        );
        assert_eq!(
            queue_of_irq_name("virtio0-output.3", "eth0", Some("virtio0")),
            Some((3, IrqDirection::Tx))
        );
        assert_eq!(
            queue_of_irq_name("virtio1-input.0", "eth0", Some("virtio0")),
            None
        );
        assert_eq!(
            queue_of_irq_name("virtio0-config", "eth0", Some("virtio0")),
            None
        );
    }
}
