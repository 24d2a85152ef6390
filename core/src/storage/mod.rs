//! The storage layer: everything the appliance keeps between runs, behind one small
//! key-value trait.
//!
//! Owns: the [`Storage`] trait (get / put / delete / list by prefix), the key rules
//! ([`StorageKey`]: `/`-separated segments of `[a-z0-9._-]`, never `..`, never a leading
//! dot), the filesystem backend under the data folder ([`files::FileStorage`]: crash-safe
//! writes, private entries mode 0600), the memory backend for tests ([`memory::MemoryStorage`])
//! and moving every entry between two backends ([`copy_all`], behind `shardgate storage
//! export|import`). Does not own what the entries mean: ACME keeps its account and
//! certificates under `acme/` (see `crate::acme::stored`), the dynamic DNS records are
//! `dns/dynamic.json` (`crate::dns::dynamic`), the RADIUS accounting sessions
//! `radius/sessions.json` (`crate::radius::session_store`); files an older release kept
//! directly in the data folder are moved in once ([`adopt_legacy_file`]).
//!
//! The scale-out plan is an existing distributed store behind the same trait, not a
//! home-made one; the trait is therefore deliberately small and synchronous (entries are a
//! few kilobytes, written rarely, by the control core).

pub mod files;
pub mod memory;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The folder under the data folder where the filesystem backend keeps its entries.
pub const STORAGE_FOLDER: &str = "storage";

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key breaks the key rules.
    #[error("storage key `{key}` is not valid: {why}")]
    BadKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The backend's I/O failed.
    #[error("storage {action} `{key}`: {source}")]
    Io {
        /// What was being done (read, write, delete, list).
        action: &'static str,
        /// The key (or prefix) concerned.
        key: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Who may read an entry once written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// Private keys, account credentials, secrets: readable by the appliance's user only
    /// (mode 0600 on the filesystem).
    Private,
    /// Certificates, state: readable by others (mode 0644).
    Public,
}

/// A checked storage key: `/`-separated segments, each non-empty, made of lower-case ASCII
/// letters, digits, `.`, `_` and `-`, not starting with `.` (so never `..`, and never the
/// backend's own temporary files).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageKey(String);

impl StorageKey {
    /// Checks `key` against the key rules.
    pub fn new(key: &str) -> Result<StorageKey, StorageError> {
        let bad = |why| StorageError::BadKey { key: key.to_string(), why };
        if key.is_empty() {
            return Err(bad("it is empty"));
        }
        if key.len() > 512 {
            return Err(bad("it is longer than 512 bytes"));
        }
        for segment in key.split('/') {
            if segment.is_empty() {
                return Err(bad("it has an empty segment (`//`, or a leading or trailing `/`)"));
            }
            if segment.starts_with('.') {
                return Err(bad("a segment starts with `.`"));
            }
            if !segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')) {
                return Err(bad("only a-z, 0-9, `.`, `_`, `-` and `/` are allowed"));
            }
        }
        Ok(StorageKey(key.to_string()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key-value store for what the appliance keeps.
///
/// Every method is synchronous and may be called from any thread (the control core, its
/// async runtime, the CLI). A `put` is atomic: a reader (or a crash) sees the old value or
/// the new one, never a mix.
pub trait Storage: fmt::Debug + Send + Sync {
    /// The value under `key`, or `None` when there is none.
    fn get(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores `value` under `key`, replacing what was there.
    fn put(&self, key: &StorageKey, value: &[u8], privacy: Privacy) -> Result<(), StorageError>;
    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &StorageKey) -> Result<(), StorageError>;
    /// Every key that starts with `prefix` (`""` for all), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<StorageKey>, StorageError>;
    /// Whether the entry is stored private (export keeps the privacy of each entry).
    fn privacy(&self, key: &StorageKey) -> Result<Privacy, StorageError>;
}

/// Which backend the config asks for (`[storage] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageBackend {
    /// Files under `<data_dir>/storage` (the default).
    #[default]
    Files,
    /// Process memory: lost at exit. For tests only.
    Memory,
}

/// Opens the configured backend for a data folder. The memory backend logs a loud warning:
/// nothing survives a restart.
pub fn open(backend: StorageBackend, data_dir: &Path) -> Result<Arc<dyn Storage>, StorageError> {
    match backend {
        StorageBackend::Files => Ok(Arc::new(files::FileStorage::open(&data_dir.join(STORAGE_FOLDER))?)),
        StorageBackend::Memory => {
            tracing::warn!(
                "STORAGE IS IN MEMORY ([storage] backend = \"memory\"): the ACME account, certificates and every other \
                 stored entry are LOST when the appliance stops. This backend is for tests only."
            );
            Ok(Arc::new(memory::MemoryStorage::default()))
        }
    }
}

/// Moves a file an older release kept directly in the data folder (`<data_dir>/<file>`) into
/// storage under `key`, once: only when `key` is still empty. The file is removed after the
/// entry is written, so a crash in between leaves both and the next start adopts it again.
pub fn adopt_legacy_file(storage: &dyn Storage, key: &StorageKey, file: &Path, privacy: Privacy) -> Result<bool, StorageError> {
    if storage.get(key)?.is_some() {
        return Ok(false);
    }
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(StorageError::Io { action: "read", key: file.display().to_string(), source }),
    };
    storage.put(key, &bytes, privacy)?;
    std::fs::remove_file(file).map_err(|source| StorageError::Io { action: "delete", key: file.display().to_string(), source })?;
    tracing::info!(file = %file.display(), key = %key, "moved into storage");
    Ok(true)
}

/// Copies every entry of `from` into `to` (same keys, same privacy); returns how many.
/// Entries already in `to` under the same keys are replaced; others are left alone.
pub fn copy_all(from: &dyn Storage, to: &dyn Storage) -> Result<usize, StorageError> {
    let keys = from.list("")?;
    for key in &keys {
        if let Some(value) = from.get(key)? {
            to.put(key, &value, from.privacy(key)?)?;
        }
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        for good in ["acme/account.json", "acme/certs/www-example-com/cert.pem", "a", "x_1-2.3"] {
            assert!(StorageKey::new(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("acme//x", "empty segment"),
            ("/abs", "empty segment"),
            ("acme/", "empty segment"),
            ("acme/../etc", "starts with `.`"),
            ("acme/.tmp", "starts with `.`"),
            ("Acme", "only a-z"),
            ("acme/a b", "only a-z"),
        ] {
            let e = StorageKey::new(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_legacy_file_is_adopted_once_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let legacy = dir.path().join("old.json");
        std::fs::write(&legacy, b"{}").expect("write");
        let storage = memory::MemoryStorage::default();
        let key = StorageKey::new("dns/dynamic.json").expect("key");
        assert!(adopt_legacy_file(&storage, &key, &legacy, Privacy::Private).expect("adopt"));
        assert_eq!(storage.get(&key).expect("get").as_deref(), Some(&b"{}"[..]));
        assert_eq!(storage.privacy(&key).expect("privacy"), Privacy::Private);
        assert!(!legacy.exists());
        // A second file under the same name never overwrites the stored entry.
        std::fs::write(&legacy, b"{\"stale\":1}").expect("write");
        assert!(!adopt_legacy_file(&storage, &key, &legacy, Privacy::Private).expect("adopt"));
        assert_eq!(storage.get(&key).expect("get").as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn copy_all_moves_every_entry_with_its_privacy() {
        let from = memory::MemoryStorage::default();
        let to = memory::MemoryStorage::default();
        let secret = StorageKey::new("acme/account.json").expect("key");
        let public = StorageKey::new("acme/certs/a/cert.pem").expect("key");
        from.put(&secret, b"secret", Privacy::Private).expect("put");
        from.put(&public, b"cert", Privacy::Public).expect("put");
        assert_eq!(copy_all(&from, &to).expect("copy"), 2);
        assert_eq!(to.get(&secret).expect("get").as_deref(), Some(&b"secret"[..]));
        assert_eq!(to.privacy(&secret).expect("privacy"), Privacy::Private);
        assert_eq!(to.privacy(&public).expect("privacy"), Privacy::Public);
    }
}
