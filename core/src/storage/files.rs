//! The filesystem backend: one file per key under a root folder (`<data_dir>/storage`).
//!
//! A key `acme/certs/www/cert.pem` is the file `<root>/acme/certs/www/cert.pem`. Writes are
//! crash-safe: the value goes to a temporary file in the same folder (`.<name>.tmp-<pid>`),
//! which is fsynced, renamed over the target, and then the folder itself is fsynced, so after
//! a crash the key holds the old value or the new one, never a torn file, and the rename is
//! on disk once `put` returns. Private entries are created mode 0600 (before any byte is
//! written), public ones 0644. Files whose names break the key rules (temporary files left
//! by a crash, editor backups) are never listed.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Privacy, Storage, StorageError, StorageKey};

/// Files under a root folder.
#[derive(Debug)]
pub struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    /// Uses (and creates, mode 0700) `root`.
    pub fn open(root: &Path) -> Result<FileStorage, StorageError> {
        fs::create_dir_all(root).map_err(|source| io("create", root.display().to_string(), source))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|source| io("create", root.display().to_string(), source))?;
        Ok(FileStorage { root: root.to_path_buf() })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

fn io(action: &'static str, key: impl Into<String>, source: std::io::Error) -> StorageError {
    StorageError::Io { action, key: key.into(), source }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for FileStorage {
    fn get(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        match fs::read(self.path(key)) {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", key.as_str(), e)),
        }
    }

    fn put(&self, key: &StorageKey, value: &[u8], privacy: Privacy) -> Result<(), StorageError> {
        let target = self.path(key);
        let fail = |e| io("write", key.as_str(), e);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(fail)?;
        let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mode = match privacy {
            Privacy::Private => 0o600,
            Privacy::Public => 0o644,
        };
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
            // `mode` applies only when the file is created; a stale temporary file keeps its
            // old mode, so set it explicitly before the value goes in.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.write_all(value)?;
            file.sync_all()?;
            fs::rename(&tmp, &target)?;
            sync_dir(&dir)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(fail)
    }

    fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)).map_err(|e| io("delete", key.as_str(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", key.as_str(), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<StorageKey>, StorageError> {
        let mut keys = Vec::new();
        let mut folders = vec![(self.root.clone(), String::new())];
        while let Some((folder, key_prefix)) = folders.pop() {
            let entries = match fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io("list", prefix, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
                let key = format!("{key_prefix}{name}");
                let kind = entry.file_type().map_err(|e| io("list", prefix, e))?;
                if kind.is_dir() {
                    if StorageKey::new(&key).is_ok() {
                        folders.push((entry.path(), format!("{key}/")));
                    }
                } else if kind.is_file() && key.starts_with(prefix) {
                    if let Ok(key) = StorageKey::new(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn privacy(&self, key: &StorageKey) -> Result<Privacy, StorageError> {
        let meta = fs::metadata(self.path(key)).map_err(|e| io("read", key.as_str(), e))?;
        Ok(if meta.permissions().mode() & 0o077 == 0 { Privacy::Private } else { Privacy::Public })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_entries_are_0600_and_public_0644() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FileStorage::open(&dir.path().join("storage")).expect("open");
        let secret = StorageKey::new("acme/account.json").expect("key");
        let cert = StorageKey::new("acme/certs/www/cert.pem").expect("key");
        store.put(&secret, b"{}", Privacy::Private).expect("put");
        store.put(&cert, b"PEM", Privacy::Public).expect("put");
        let mode = |k: &StorageKey| fs::metadata(store.path(k)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert_eq!(store.privacy(&secret).expect("privacy"), Privacy::Private);
        assert_eq!(fs::metadata(store.root()).expect("meta").permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn put_replaces_atomically_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FileStorage::open(dir.path()).expect("open");
        let key = StorageKey::new("state.json").expect("key");
        store.put(&key, b"old", Privacy::Public).expect("put");
        store.put(&key, b"new", Privacy::Public).expect("put");
        assert_eq!(store.get(&key).expect("get").as_deref(), Some(&b"new"[..]));
        let names: Vec<String> =
            fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["state.json".to_string()]);
    }

    #[test]
    fn list_by_prefix_skips_stray_files_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FileStorage::open(dir.path()).expect("open");
        for k in ["acme/account.json", "acme/certs/a/cert.pem", "radius/sessions.json"] {
            store.put(&StorageKey::new(k).expect("key"), k.as_bytes(), Privacy::Private).expect("put");
        }
        // A temporary file left by a crash and a file a human dropped in are not keys.
        fs::write(dir.path().join("acme/.account.json.tmp-42"), "torn").expect("write");
        fs::write(dir.path().join("acme/Notes.TXT"), "x").expect("write");
        let reopened = FileStorage::open(dir.path()).expect("reopen");
        let acme: Vec<String> = reopened.list("acme/").expect("list").iter().map(|k| k.to_string()).collect();
        assert_eq!(acme, vec!["acme/account.json", "acme/certs/a/cert.pem"]);
        assert_eq!(reopened.list("").expect("list").len(), 3);
        let gone = StorageKey::new("acme/account.json").expect("key");
        reopened.delete(&gone).expect("delete");
        assert_eq!(reopened.get(&gone).expect("get"), None);
    }
}
