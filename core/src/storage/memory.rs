//! The memory backend: a map in process memory, lost at exit. For tests only — `open`
//! warns loudly when a running appliance is configured with it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Privacy, Storage, StorageError, StorageKey};

/// Entries in a map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    entries: Mutex<BTreeMap<StorageKey, (Vec<u8>, Privacy)>>,
}

impl MemoryStorage {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<StorageKey, (Vec<u8>, Privacy)>> {
        // A panic while holding the lock cannot leave a map half-updated (every operation is
        // one map call), so a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries().get(key).map(|(value, _)| value.clone()))
    }

    fn put(&self, key: &StorageKey, value: &[u8], privacy: Privacy) -> Result<(), StorageError> {
        self.entries().insert(key.clone(), (value.to_vec(), privacy));
        Ok(())
    }

    fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        self.entries().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<StorageKey>, StorageError> {
        Ok(self.entries().keys().filter(|k| k.as_str().starts_with(prefix)).cloned().collect())
    }

    fn privacy(&self, key: &StorageKey) -> Result<Privacy, StorageError> {
        Ok(self.entries().get(key).map(|(_, p)| *p).unwrap_or(Privacy::Public))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let store = MemoryStorage::default();
        let a = StorageKey::new("acme/a").expect("key");
        let b = StorageKey::new("other/b").expect("key");
        store.put(&a, b"1", Privacy::Public).expect("put");
        store.put(&b, b"2", Privacy::Private).expect("put");
        assert_eq!(store.list("acme/").expect("list"), vec![a.clone()]);
        assert_eq!(store.get(&a).expect("get").as_deref(), Some(&b"1"[..]));
        store.delete(&a).expect("delete");
        assert_eq!(store.get(&a).expect("get"), None);
        store.delete(&a).expect("deleting a missing key is fine");
        assert_eq!(store.list("").expect("list"), vec![b]);
    }
}
