//! ACME state in the storage layer.
//!
//! Keys (see `crate::storage` for the key rules):
//! - `acme/accounts/<directory>.json` — the account credentials (private key included) for one
//!   CA directory, private; created once, reused by every later order;
//! - `acme/certificates/<name>/chain.pem` — an issued chain, leaf first, public;
//! - `acme/certificates/<name>/key.pem` — its private key, private;
//! - `acme/dns-challenges.json` — DNS-01 records published and not yet withdrawn, public.
//!
//! `<directory>` and `<name>` are slugs: lower-case, anything outside `[a-z0-9._-]` turned into
//! `-`. The key is written before the chain, so a chain found in storage always has its key.

use instant_acme::AccountCredentials;

use super::{AcmeError, IssuedPem};
use crate::storage::{Privacy, Storage, StorageKey};
use crate::tls::store::{certificate_from_pem, LoadedCertificate};

/// `text` as one storage key segment.
pub fn slug(text: &str) -> String {
    let mut out: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' })
        .collect();
    while out.starts_with('.') || out.starts_with('-') {
        out.remove(0);
    }
    if out.is_empty() {
        out.push('x');
    }
    out.truncate(200);
    out
}

fn key(text: &str) -> Result<StorageKey, AcmeError> {
    Ok(StorageKey::new(text)?)
}

/// The account key for a directory URL.
pub fn account_key(directory: &str) -> Result<StorageKey, AcmeError> {
    let bare = directory.strip_prefix("https://").unwrap_or(directory);
    key(&format!("acme/accounts/{}.json", slug(bare)))
}

/// The stored account for `directory`, if one was created before.
pub fn load_account(storage: &dyn Storage, directory: &str) -> Result<Option<AccountCredentials>, AcmeError> {
    let Some(bytes) = storage.get(&account_key(directory)?)? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AcmeError::Certificate(format!("stored ACME account for {directory} is unreadable: {e}")))
}

/// Stores the account for `directory` (private).
pub fn save_account(storage: &dyn Storage, directory: &str, credentials: &AccountCredentials) -> Result<(), AcmeError> {
    let bytes = serde_json::to_vec_pretty(credentials).map_err(|e| AcmeError::Certificate(e.to_string()))?;
    storage.put(&account_key(directory)?, &bytes, Privacy::Private)?;
    Ok(())
}

fn certificate_keys(name: &str) -> Result<(StorageKey, StorageKey), AcmeError> {
    let folder = format!("acme/certificates/{}", slug(name));
    Ok((key(&format!("{folder}/chain.pem"))?, key(&format!("{folder}/key.pem"))?))
}

/// Stores an issued certificate of the auto certificate `name`.
pub fn save_certificate(storage: &dyn Storage, name: &str, issued: &IssuedPem) -> Result<(), AcmeError> {
    let (chain, key) = certificate_keys(name)?;
    storage.put(&key, issued.key.as_bytes(), Privacy::Private)?;
    storage.put(&chain, issued.chain.as_bytes(), Privacy::Public)?;
    Ok(())
}

/// The stored certificate of `name`, loaded; `None` when none was ever stored.
pub fn load_certificate(storage: &dyn Storage, name: &str) -> Result<Option<LoadedCertificate>, AcmeError> {
    let (chain_key, key_key) = certificate_keys(name)?;
    let (Some(chain), Some(key)) = (storage.get(&chain_key)?, storage.get(&key_key)?) else { return Ok(None) };
    certificate_from_pem(name, &chain, &key)
        .map(Some)
        .map_err(|e| AcmeError::Certificate(format!("stored certificate `{chain_key}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[test]
    fn slugs_are_valid_key_segments() {
        assert_eq!(slug("127.0.0.1:14000/dir"), "127.0.0.1-14000-dir");
        assert_eq!(slug("Site A"), "site-a");
        assert_eq!(slug("..x"), "x");
        assert_eq!(slug("///"), "x");
        assert!(account_key("https://acme-v02.api.letsencrypt.org/directory").is_ok());
    }

    #[test]
    fn certificates_round_trip_and_keys_are_private() {
        let storage = MemoryStorage::default();
        assert!(load_certificate(&storage, "site").expect("load").is_none());
        let made = rcgen::generate_simple_self_signed(vec!["www.example.net".to_string()]).expect("cert");
        let issued = IssuedPem { chain: made.cert.pem(), key: made.signing_key.serialize_pem() };
        save_certificate(&storage, "site", &issued).expect("save");
        let loaded = load_certificate(&storage, "site").expect("load").expect("stored");
        assert_eq!(loaded.dns_names, vec!["www.example.net".to_string()]);
        let (chain, key) = certificate_keys("site").expect("keys");
        assert_eq!(storage.privacy(&key).expect("privacy"), Privacy::Private);
        assert_eq!(storage.privacy(&chain).expect("privacy"), Privacy::Public);
        // A damaged entry is an error that names it, not a panic.
        storage.put(&chain, b"garbage", Privacy::Public).expect("put");
        let e = load_certificate(&storage, "site").expect_err("damaged");
        assert!(e.to_string().contains("acme/certificates/site/chain.pem"), "{e}");
    }
}

/// `acme/dns-challenges.json`: the DNS-01 TXT records (owner name, value) the ACME manager has
/// put into our zones and not yet withdrawn. Written before the record is published and after
/// it is withdrawn, so after a crash the next start removes exactly the records an interrupted
/// order left behind — never a `_acme-challenge` record an operator (or another ACME client)
/// added with `shardgate dns add`.
const PUBLISHED_DNS_KEY: &str = "acme/dns-challenges.json";

/// The DNS-01 records the manager published and has not withdrawn (empty when none or unreadable).
pub fn load_published_dns(storage: &dyn Storage) -> Result<Vec<(String, String)>, AcmeError> {
    match storage.get(&key(PUBLISHED_DNS_KEY)?)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| AcmeError::StoredChallenges { key: PUBLISHED_DNS_KEY, reason: e.to_string() }),
    }
}

/// Records the DNS-01 records published now (an empty list deletes the entry).
pub fn save_published_dns(storage: &dyn Storage, records: &[(String, String)]) -> Result<(), AcmeError> {
    let key = key(PUBLISHED_DNS_KEY)?;
    if records.is_empty() {
        storage.delete(&key)?;
        return Ok(());
    }
    let bytes = serde_json::to_vec(records)
        .map_err(|e| AcmeError::StoredChallenges { key: PUBLISHED_DNS_KEY, reason: e.to_string() })?;
    storage.put(&key, &bytes, Privacy::Public)?;
    Ok(())
}
