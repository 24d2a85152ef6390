//! [`CpuSet`] and the kernel's two textual CPU formats.
//!
//! Owns: parsing and printing CPU masks (`rps_cpus`, `xps_cpus`, `smp_affinity`: hex, 32-bit
//! groups separated by commas, most significant group first, e.g. `00ff,00000003`) and CPU lists
//! (`smp_affinity_list`, `cpu/possible`, kernel command line: `0-3,8,10-11`), as documented in
//! Documentation/core-api/printk-formats.rst (`%*pb`, `%*pbl`) and
//! Documentation/networking/scaling.rst. Does not own: which CPUs a queue should use.

use std::collections::BTreeSet;
use std::fmt;

/// A set of CPU numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    cpus: BTreeSet<usize>,
}

/// Why a CPU mask or list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFormatError;

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding exactly `cpus`.
    pub fn from_cpus(cpus: impl IntoIterator<Item = usize>) -> Self {
        Self {
            cpus: cpus.into_iter().collect(),
        }
    }

    /// Add `cpu` to the set.
    pub fn insert(&mut self, cpu: usize) {
        self.cpus.insert(cpu);
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.cpus.contains(&cpu)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.cpus.iter().copied()
    }

    /// The highest CPU in the set.
    pub fn max(&self) -> Option<usize> {
        self.cpus.last().copied()
    }

    /// Parse a hex CPU mask such as `ff`, `00000000,00000003` or `0x3`.
    pub fn parse_mask(text: &str) -> Result<Self, CpuFormatError> {
        let text = text.trim();
        let text = text.strip_prefix("0x").unwrap_or(text);
        if text.is_empty() {
            return Err(CpuFormatError);
        }
        let mut set = Self::new();
        // Groups are most significant first; the last group holds CPUs 0-31.
        for (group_index, group) in text.rsplit(',').enumerate() {
            if group.is_empty() || group.len() > 8 {
                return Err(CpuFormatError);
            }
            let bits = u32::from_str_radix(group, 16).map_err(|_| CpuFormatError)?;
            for bit in 0..32 {
                if bits & (1 << bit) != 0 {
                    set.insert(group_index * 32 + bit);
                }
            }
        }
        Ok(set)
    }

    /// Parse a CPU list such as `0-3,8,10-11` (an empty string is the empty set).
    pub fn parse_list(text: &str) -> Result<Self, CpuFormatError> {
        let text = text.trim();
        let mut set = Self::new();
        if text.is_empty() {
            return Ok(set);
        }
        for part in text.split(',') {
            let part = part.trim();
            match part.split_once('-') {
                Some((first, last)) => {
                    let first: usize = first.trim().parse().map_err(|_| CpuFormatError)?;
                    let last: usize = last.trim().parse().map_err(|_| CpuFormatError)?;
                    if first > last {
                        return Err(CpuFormatError);
                    }
                    set.cpus.extend(first..=last);
                }
                None => set.insert(part.parse().map_err(|_| CpuFormatError)?),
            }
        }
        Ok(set)
    }

    /// The mask as the kernel prints it for a host with `nr_cpu_ids` CPU ids: 32-bit hex groups,
    /// the first one zero-padded to the digits its bits need, the others to 8 digits.
    /// `nr_cpu_ids` is raised to cover the highest CPU in the set.
    pub fn to_mask_string(&self, nr_cpu_ids: usize) -> String {
        let nbits = nr_cpu_ids.max(self.max().map_or(1, |cpu| cpu + 1)).max(1);
        let groups = nbits.div_ceil(32);
        let mut out = String::new();
        for group in (0..groups).rev() {
            let mut bits: u32 = 0;
            for bit in 0..32 {
                if self.contains(group * 32 + bit) {
                    bits |= 1 << bit;
                }
            }
            let width = if group == groups - 1 {
                let top_bits = nbits - group * 32;
                top_bits.div_ceil(4)
            } else {
                8
            };
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{bits:0width$x}"));
        }
        out
    }

    /// The list as the kernel prints it (`0-3,8`): runs of two or more CPUs become ranges.
    pub fn to_list_string(&self) -> String {
        let mut parts = Vec::new();
        let mut cpus = self.iter().peekable();
        while let Some(first) = cpus.next() {
            let mut last = first;
            while cpus.peek() == Some(&(last + 1)) {
                last += 1;
                cpus.next();
            }
            if first == last {
                parts.push(first.to_string());
            } else {
                parts.push(format!("{first}-{last}"));
            }
        }
        parts.join(",")
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_strings_match_the_kernel_layout() {
        assert_eq!(CpuSet::from_cpus([0, 1]).to_mask_string(2), "3");
        assert_eq!(CpuSet::new().to_mask_string(2), "0");
        assert_eq!(CpuSet::from_cpus([1]).to_mask_string(4), "2");
        assert_eq!(CpuSet::from_cpus([0, 2]).to_mask_string(8), "05");
        assert_eq!(CpuSet::from_cpus([36]).to_mask_string(40), "10,00000000");
        assert_eq!(
            CpuSet::from_cpus([0, 63]).to_mask_string(64),
            "80000000,00000001"
        );
        assert_eq!(CpuSet::new().to_mask_string(40), "00,00000000");
    }

    #[test]
    fn masks_parse_back_whatever_the_padding() {
        assert_eq!(
            CpuSet::parse_mask("10,00000000").unwrap(),
            CpuSet::from_cpus([36])
        );
        assert_eq!(
            CpuSet::parse_mask("00000003").unwrap(),
            CpuSet::from_cpus([0, 1])
        );
        assert_eq!(CpuSet::parse_mask("0").unwrap(), CpuSet::new());
        assert_eq!(CpuSet::parse_mask("f\n").unwrap(), CpuSet::from_cpus(0..4));
        assert!(CpuSet::parse_mask("").is_err());
        assert!(CpuSet::parse_mask("xyz").is_err());
        assert!(CpuSet::parse_mask("123456789").is_err());
    }

    #[test]
    fn lists_round_trip() {
        let set = CpuSet::parse_list("0-3,8,10-11").unwrap();
        assert_eq!(set, CpuSet::from_cpus([0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(set.to_list_string(), "0-3,8,10-11");
        assert_eq!(CpuSet::from_cpus([4, 5]).to_list_string(), "4-5");
        assert_eq!(CpuSet::parse_list("").unwrap(), CpuSet::new());
        assert!(CpuSet::parse_list("3-1").is_err());
        assert!(CpuSet::parse_list("a").is_err());
    }
}
