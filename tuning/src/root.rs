//! [`HostRoot`]: the directory that stands for `/` when tuning reads and writes kernel files.
//!
//! Owns: joining kernel-relative paths (`sys/class/net/...`, `proc/irq/...`) onto the root and
//! the small file I/O every other module uses. On a real host the root is `/`; tests point it at
//! a fake `/sys` + `/proc` tree. Does not own: what the files mean.

use std::path::{Path, PathBuf};

use crate::error::TuningError;

/// The root directory tuning works under (`/` on a real host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    dir: PathBuf,
}

impl HostRoot {
    /// A root at `dir` (use `/` on a real host).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `relative` (e.g. `proc/irq/24/smp_affinity_list`) resolved under the root.
    pub fn path(&self, relative: &Path) -> PathBuf {
        self.dir.join(relative)
    }

    /// Whether `relative` exists under the root.
    pub fn exists(&self, relative: &Path) -> bool {
        self.path(relative).exists()
    }

    /// Whether `relative` has any write permission bit set. Sysctls that the kernel exposes
    /// read-only (host-wide ones seen from a network namespace, e.g. `net.core.rmem_max`) have
    /// mode 0444 even for root.
    pub fn has_write_permission(&self, relative: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.path(relative))
            .is_ok_and(|metadata| metadata.permissions().mode() & 0o222 != 0)
    }

    /// The content of `relative`, with surrounding whitespace trimmed.
    pub fn read_trimmed(&self, relative: &Path) -> Result<String, TuningError> {
        let path = self.path(relative);
        match std::fs::read_to_string(&path) {
            Ok(content) => Ok(content.trim().to_string()),
            Err(source) => Err(TuningError::Read { path, source }),
        }
    }

    /// Write `value` followed by a newline to `relative`, the way `echo value > file` does.
    pub fn write_value(&self, relative: &Path, value: &str) -> Result<(), TuningError> {
        let path = self.path(relative);
        let line = format!("{value}\n");
        // Kernel attribute files must be written in one write() call on an existing file:
        // no truncating rename, no partial writes.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        result.map_err(|source| TuningError::Write {
            path,
            value: value.to_string(),
            source,
        })
    }

    /// Names of the entries of directory `relative`, sorted; empty when it does not exist.
    pub fn list_dir(&self, relative: &Path) -> Result<Vec<String>, TuningError> {
        let path = self.path(relative);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(TuningError::Read { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TuningError::Read {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// The last component of the target of the symlink `relative` (e.g. a device's PCI address
    /// or driver name), or `None` when it is not a symlink.
    pub fn link_name(&self, relative: &Path) -> Option<String> {
        let target = std::fs::read_link(self.path(relative)).ok()?;
        target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }
}

impl Default for HostRoot {
    /// The real host: `/`.
    fn default() -> Self {
        Self::new("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_trims_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        std::fs::write(dir.path().join("knob"), "1\n").unwrap();
        root.write_value(Path::new("knob"), "2,00000000").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("knob")).unwrap(),
            "2,00000000\n"
        );
        assert_eq!(root.read_trimmed(Path::new("knob")).unwrap(), "2,00000000");
    }

    #[test]
    fn writing_a_missing_attribute_fails_instead_of_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let err = root.write_value(Path::new("absent"), "1").unwrap_err();
        assert!(matches!(err, TuningError::Write { .. }), "{err}");
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn listing_a_missing_directory_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        assert!(root.list_dir(Path::new("nope")).unwrap().is_empty());
    }
}
