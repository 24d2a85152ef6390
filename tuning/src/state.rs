//! Applying a [`Plan`], and the state file that lets `verify` and `revert` follow it.
//!
//! Owns: the JSON state file `tuning-state.json` in a directory the caller chooses (the data
//! folder), which records for every file tuning wrote the value it held before shardgate first
//! touched it and the value written. Applying again keeps the first recorded old value, so
//! `revert` always returns to the host as it was before shardgate. The state is saved before
//! any kernel file is written, so an interrupted apply can still be reverted.
//! Does not own: deciding what to write (see [`mod@crate::plan`]).

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TuningError;
use crate::plan::{Change, Consent, Plan, ValueFormat};
use crate::root::HostRoot;

/// Name of the state file inside the state directory.
pub const STATE_FILE_NAME: &str = "tuning-state.json";

/// Format version of the state file.
const STATE_VERSION: u32 = 1;

/// One file written by `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEntry {
    /// The file, relative to the root.
    pub path: PathBuf,
    /// Its value before shardgate first wrote it (what `revert` puts back).
    pub previous: String,
    /// The value shardgate wrote (what `verify` expects).
    pub written: String,
    /// How the value is spelled.
    pub format: ValueFormat,
}

/// The content of the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// The root the entries are relative to.
    pub root: PathBuf,
    /// Files written, in the order they were first written.
    pub entries: Vec<AppliedEntry>,
}

/// A change `apply` did not make, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedChange {
    /// The change.
    pub change: Change,
    /// Why it was not written.
    pub reason: SkipReason,
}

/// Why a change was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A sysctl, and the caller did not consent to sysctls.
    NoSysctlConsent,
    /// The kernel refused with EIO: the IRQ's affinity is managed by the kernel (mlx5 and
    /// virtio on recent kernels) and cannot be set from user space.
    KernelManagedIrq,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoSysctlConsent => write!(f, "sysctl, no consent given"),
            SkipReason::KernelManagedIrq => {
                write!(f, "kernel-managed IRQ, affinity fixed by the kernel")
            }
        }
    }
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedState {
    /// Changes written.
    pub written: Vec<Change>,
    /// Changes not written, with the reason.
    pub skipped: Vec<SkippedChange>,
    /// Where the old values are recorded.
    pub state_file: PathBuf,
}

impl fmt::Display for AppliedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "applied {} changes (old values in {})",
            self.written.len(),
            self.state_file.display()
        )?;
        for skipped in &self.skipped {
            writeln!(
                f,
                "  skipped /{}: {}",
                skipped.change.path.display(),
                skipped.reason
            )?;
        }
        Ok(())
    }
}

/// A file that no longer holds what `apply` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The file, relative to the root.
    pub path: PathBuf,
    /// What `apply` wrote.
    pub expected: String,
    /// What it holds now; `None` when it is gone (NIC removed, IRQ freed).
    pub found: Option<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub checked: usize,
    /// Files that drifted.
    pub drift: Vec<Drift>,
}

impl VerifyReport {
    /// Whether everything still holds.
    pub fn holds(&self) -> bool {
        self.drift.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} files, {} drifted",
            self.checked,
            self.drift.len()
        )?;
        for drift in &self.drift {
            match &drift.found {
                Some(found) => writeln!(
                    f,
                    "  /{}: expected {}, found {found}",
                    drift.path.display(),
                    drift.expected
                )?,
                None => writeln!(
                    f,
                    "  /{}: expected {}, file is gone",
                    drift.path.display(),
                    drift.expected
                )?,
            }
        }
        Ok(())
    }
}

/// What `revert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertReport {
    /// Files given back their old value.
    pub restored: Vec<PathBuf>,
    /// Files that no longer exist (their device is gone), so nothing to restore.
    pub vanished: Vec<PathBuf>,
}

impl fmt::Display for RevertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "restored {} files", self.restored.len())?;
        for path in &self.vanished {
            writeln!(f, "  /{}: gone, nothing to restore", path.display())?;
        }
        Ok(())
    }
}

/// Path of the state file in `state_dir`.
pub fn state_file_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE_NAME)
}

/// Read the state file; `None` when there is none.
fn load_state(state_dir: &Path) -> Result<Option<StateFile>, TuningError> {
    let path = state_file_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TuningError::Read { path, source }),
    };
    let state: StateFile =
        serde_json::from_str(&text).map_err(|source| TuningError::CorruptState { path, source })?;
    Ok(Some(state))
}

/// Read the state file for `root`, failing when there is none or it belongs to another root.
fn load_state_for(root: &HostRoot, state_dir: &Path) -> Result<StateFile, TuningError> {
    let path = state_file_path(state_dir);
    let state = load_state(state_dir)?.ok_or_else(|| TuningError::NoAppliedState(path.clone()))?;
    if state.root != root.dir() {
        return Err(TuningError::StateRootMismatch {
            path,
            recorded: state.root,
            given: root.dir().to_path_buf(),
        });
    }
    Ok(state)
}

/// Write the state file atomically (temporary file, then rename).
fn save_state(state_dir: &Path, state: &StateFile) -> Result<PathBuf, TuningError> {
    let path = state_file_path(state_dir);
    let temporary = state_dir.join(format!("{STATE_FILE_NAME}.tmp"));
    serde_json::to_string_pretty(state)
        .map_err(std::io::Error::other)
        .and_then(|json| {
            std::fs::create_dir_all(state_dir)?;
            std::fs::write(&temporary, json.as_bytes())?;
            std::fs::rename(&temporary, &path)
        })
        .map_err(|source| TuningError::StateFileIo {
            path: path.clone(),
            action: "write",
            source,
        })?;
    Ok(path)
}

impl Plan {
    /// Write the plan's changes under `root` (sysctls only with [`Consent::NicAndSysctls`]),
    /// recording old values in `state_dir` first so [`revert`] can restore them.
    pub fn apply(
        &self,
        root: &Path,
        state_dir: &Path,
        consent: Consent,
    ) -> Result<AppliedState, TuningError> {
        let root = HostRoot::new(root);
        let mut state = match load_state(state_dir)? {
            Some(state) if state.root != root.dir() => {
                return Err(TuningError::StateRootMismatch {
                    path: state_file_path(state_dir),
                    recorded: state.root,
                    given: root.dir().to_path_buf(),
                })
            }
            Some(state) => state,
            None => StateFile {
                version: STATE_VERSION,
                root: root.dir().to_path_buf(),
                entries: Vec::new(),
            },
        };

        let mut skipped = Vec::new();
        let mut to_write = Vec::new();
        for change in &self.changes {
            if consent.allows(change) {
                to_write.push(change.clone());
            } else {
                skipped.push(SkippedChange {
                    change: change.clone(),
                    reason: SkipReason::NoSysctlConsent,
                });
            }
        }

        // Record what each file holds right now (not at plan time) before writing anything.
        let mut newly_recorded = Vec::new();
        for change in &to_write {
            let current = root.read_trimmed(&change.path)?;
            match state
                .entries
                .iter_mut()
                .find(|entry| entry.path == change.path)
            {
                Some(entry) => entry.written = change.new.clone(),
                None => {
                    newly_recorded.push(change.path.clone());
                    state.entries.push(AppliedEntry {
                        path: change.path.clone(),
                        previous: current,
                        written: change.new.clone(),
                        format: change.format,
                    });
                }
            }
        }
        let state_file = save_state(state_dir, &state)?;

        let mut written = Vec::new();
        for change in to_write {
            match root.write_value(&change.path, &change.new) {
                Ok(()) => written.push(change),
                Err(TuningError::Write { source, .. })
                    if source.raw_os_error() == Some(libc::EIO)
                        && matches!(change.kind, crate::plan::ChangeKind::IrqAffinity { .. }) =>
                {
                    if newly_recorded.contains(&change.path) {
                        state.entries.retain(|entry| entry.path != change.path);
                    }
                    skipped.push(SkippedChange {
                        change,
                        reason: SkipReason::KernelManagedIrq,
                    });
                }
                Err(err) => return Err(err),
            }
        }
        let state_file = if skipped
            .iter()
            .any(|s| s.reason == SkipReason::KernelManagedIrq)
        {
            save_state(state_dir, &state)?
        } else {
            state_file
        };
        Ok(AppliedState {
            written,
            skipped,
            state_file,
        })
    }
}

/// Check that every file `apply` wrote under `root` (per the state in `state_dir`) still holds
/// the value written.
pub fn verify(root: &Path, state_dir: &Path) -> Result<VerifyReport, TuningError> {
    let root = HostRoot::new(root);
    let state = load_state_for(&root, state_dir)?;
    let mut drift = Vec::new();
    for entry in &state.entries {
        let found = match root.read_trimmed(&entry.path) {
            Ok(found) => Some(found),
            Err(TuningError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let holds = found
            .as_deref()
            .is_some_and(|found| entry.format.same_value(found, &entry.written));
        if !holds {
            drift.push(Drift {
                path: entry.path.clone(),
                expected: entry.written.clone(),
                found,
            });
        }
    }
    Ok(VerifyReport {
        checked: state.entries.len(),
        drift,
    })
}

/// Put back every value `apply` replaced under `root` (newest first) and delete the state file.
pub fn revert(root: &Path, state_dir: &Path) -> Result<RevertReport, TuningError> {
    let root = HostRoot::new(root);
    let state = load_state_for(&root, state_dir)?;
    let mut restored = Vec::new();
    let mut vanished = Vec::new();
    for entry in state.entries.iter().rev() {
        if !root.exists(&entry.path) {
            vanished.push(entry.path.clone());
            continue;
        }
        root.write_value(&entry.path, &entry.previous)?;
        restored.push(entry.path.clone());
    }
    let path = state_file_path(state_dir);
    std::fs::remove_file(&path).map_err(|source| TuningError::StateFileIo {
        path,
        action: "remove",
        source,
    })?;
    Ok(RevertReport { restored, vanished })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_and_revert_without_state_say_so() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let err = verify(root.path(), state.path()).unwrap_err();
        assert!(matches!(err, TuningError::NoAppliedState(_)), "{err}");
        let err = revert(root.path(), state.path()).unwrap_err();
        assert!(matches!(err, TuningError::NoAppliedState(_)), "{err}");
    }

    #[test]
    fn a_corrupt_state_file_is_reported_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state_file_path(state.path()), "{\"version\": 1").unwrap();
        let err = verify(root.path(), state.path()).unwrap_err();
        assert!(matches!(err, TuningError::CorruptState { .. }), "{err}");
    }

    #[test]
    fn an_unwritable_state_dir_is_a_state_file_error() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "").unwrap();
        let file = StateFile {
            version: STATE_VERSION,
            root: PathBuf::from("/"),
            entries: Vec::new(),
        };
        let err = save_state(&not_a_dir, &file).unwrap_err();
        assert!(matches!(err, TuningError::StateFileIo { action: "write", .. }), "{err}");
    }

    #[test]
    fn state_for_another_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let file = StateFile {
            version: STATE_VERSION,
            root: PathBuf::from("/elsewhere"),
            entries: Vec::new(),
        };
        save_state(state.path(), &file).unwrap();
        let err = revert(root.path(), state.path()).unwrap_err();
        assert!(
            matches!(err, TuningError::StateRootMismatch { .. }),
            "{err}"
        );
    }
}
