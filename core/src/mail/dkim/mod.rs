//! DKIM for our sending domains (`[[email.domains]]`): keys, their rotation, the DNS records
//! they need, and signing outbound mail.
//!
//! Owns:
//! - [`DkimKeys`]: keys kept through the storage layer (`crate::storage`): per domain the
//!   public state `dkim/<domain>/state.json` ([`rotation::DomainKeyState`]) and each private key
//!   `dkim/<domain>/<selector>.key` stored [`Privacy::Private`] (PKCS#1 DER for RSA, PKCS#8 for
//!   Ed25519). [`DkimKeys::maintain`] generates a domain's first key on first use and runs the
//!   rotation steps that are due ([`rotation`], a pure state machine).
//! - [`records`]: the DNS records a domain needs (DKIM TXT per published key, and the MX, SPF
//!   and DMARC records asked for), as dynamic DNS changes (internal DNS) or zone-file lines
//!   (`shardgate dns-records`).
//! - [`sign_message`]: a `DKIM-Signature` header for a message, with mail-auth.
//!
//! Not here: publishing into the zones (the control core applies [`records`] through
//! `crate::dns::dynamic`), verification of inbound mail (`crate::mail::auth`).

pub mod records;
pub mod rotation;
pub mod service;

use std::sync::Arc;

use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

use crate::config::{DkimAlgorithm, MailDomain};
use crate::storage::{Privacy, Storage, StorageError, StorageKey};
use rotation::{DomainKeyState, KeyEntry, KeyPhase, RotationStep};

/// Headers signed (those present; RFC 6376 §5.4.1's recommended set).
pub const SIGNED_HEADERS: [&str; 12] = [
    "From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID", "In-Reply-To", "References", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding",
];

/// Why a DKIM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored state is not valid JSON.
    #[error("DKIM state of {domain} is damaged: {reason}")]
    State {
        /// The domain.
        domain: String,
        /// Parser message.
        reason: String,
    },
    /// A key could not be generated or loaded.
    #[error("DKIM key {selector} of {domain}: {reason}")]
    Key {
        /// The domain.
        domain: String,
        /// The selector.
        selector: String,
        /// What went wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("DKIM signing for {domain}: {reason}")]
    Sign {
        /// The domain.
        domain: String,
        /// mail-auth's message.
        reason: String,
    },
}

/// What [`DkimKeys::maintain`] changed, for logs and DNS publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    /// A key was made and published (`active` for a domain's first key).
    Generated {
        /// Its selector.
        selector: String,
        /// Whether it signs at once.
        active: bool,
    },
    /// Signing switched to this key.
    Activated {
        /// Its selector.
        selector: String,
    },
    /// This key was withdrawn.
    Withdrawn {
        /// Its selector.
        selector: String,
    },
}

/// A generated key: private DER as stored, and the `p=` value.
struct NewKey {
    private_der: Vec<u8>,
    public_key: String,
}

fn generate_key(algorithm: DkimAlgorithm, bits: u32) -> Result<NewKey, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
            use ring::signature::KeyPair;
            Ok(NewKey { private_der: pkcs8.as_ref().to_vec(), public_key: b64.encode(pair.public_key().as_ref()) })
        }
        DkimAlgorithm::RsaSha256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePublicKey;
            let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits as usize).map_err(|e| e.to_string())?;
            let der = private.to_pkcs1_der().map_err(|e| e.to_string())?;
            let spki = rsa::RsaPublicKey::from(&private).to_public_key_der().map_err(|e| e.to_string())?;
            Ok(NewKey { private_der: der.as_bytes().to_vec(), public_key: b64.encode(spki.as_bytes()) })
        }
    }
}

/// A domain's signing key, loaded.
pub struct SigningKey {
    /// The domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    signer: DkimSigner<DkimKey, mail_auth::dkim::Done>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("domain", &self.domain).field("selector", &self.selector).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a stored private key.
    pub fn from_der(domain: &str, selector: &str, algorithm: &str, der: &[u8]) -> Result<SigningKey, DkimError> {
        let bad = |reason: String| DkimError::Key { domain: domain.to_string(), selector: selector.to_string(), reason };
        let key = match algorithm {
            "ed25519-sha256" => DkimKey::Ed25519(Ed25519Key::from_pkcs8_der(der).map_err(|e| bad(e.to_string()))?),
            "rsa-sha256" => DkimKey::Rsa(
                RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der.to_vec())))
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => return Err(bad(format!("unknown algorithm `{other}`"))),
        };
        let signer = DkimSigner::from_key(key).domain(domain).selector(selector).headers(SIGNED_HEADERS);
        Ok(SigningKey { domain: domain.to_string(), selector: selector.to_string(), signer })
    }
}

/// The `DKIM-Signature` header (with its CRLF) for `message` (headers and body, CRLF lines).
pub fn sign_message(key: &SigningKey, message: &[u8]) -> Result<String, DkimError> {
    key.signer
        .sign(message)
        .map(|s| s.to_header())
        .map_err(|e| DkimError::Sign { domain: key.domain.clone(), reason: e.to_string() })
}

/// Keys of every sending domain, through the storage layer.
#[derive(Debug, Clone)]
pub struct DkimKeys {
    storage: Arc<dyn Storage>,
}

fn key_of(text: &str) -> Result<StorageKey, DkimError> {
    Ok(StorageKey::new(text)?)
}

impl DkimKeys {
    /// Keys kept in `storage`.
    pub fn new(storage: Arc<dyn Storage>) -> DkimKeys {
        DkimKeys { storage }
    }

    fn state_key(domain: &str) -> Result<StorageKey, DkimError> {
        key_of(&format!("dkim/{domain}/state.json"))
    }

    fn private_key(domain: &str, selector: &str) -> Result<StorageKey, DkimError> {
        key_of(&format!("dkim/{domain}/{selector}.key"))
    }

    /// The stored state of `domain` (empty before its first key).
    pub fn state(&self, domain: &str) -> Result<DomainKeyState, DkimError> {
        match self.storage.get(&Self::state_key(domain)?)? {
            None => Ok(DomainKeyState::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| DkimError::State { domain: domain.to_string(), reason: e.to_string() }),
        }
    }

    fn save(&self, domain: &str, state: &DomainKeyState) -> Result<(), DkimError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| DkimError::State { domain: domain.to_string(), reason: e.to_string() })?;
        Ok(self.storage.put(&Self::state_key(domain)?, &bytes, Privacy::Public)?)
    }

    /// Runs every rotation step due at `now` (unix seconds) for `domain`, generating keys as
    /// needed; each step is persisted before the next (private key first, then the state).
    pub fn maintain(&self, domain: &MailDomain, now: u64) -> Result<Vec<KeyEvent>, DkimError> {
        let mut state = self.state(&domain.name)?;
        let mut events = Vec::new();
        while let Some(step) = state.next_step(&domain.dkim, now) {
            match step {
                RotationStep::Generate { selector, generation, active } => {
                    let new = generate_key(domain.dkim.algorithm, domain.dkim.key_size).map_err(|reason| DkimError::Key {
                        domain: domain.name.clone(),
                        selector: selector.clone(),
                        reason,
                    })?;
                    self.storage.put(&Self::private_key(&domain.name, &selector)?, &new.private_der, Privacy::Private)?;
                    state.add(KeyEntry {
                        selector: selector.clone(),
                        algorithm: domain.dkim.algorithm.name().to_string(),
                        public_key: new.public_key,
                        generation,
                        phase: if active { KeyPhase::Active } else { KeyPhase::Published },
                        phase_since: now,
                    });
                    events.push(KeyEvent::Generated { selector, active });
                }
                RotationStep::Activate { selector } => {
                    state.activate(&selector, now);
                    events.push(KeyEvent::Activated { selector });
                }
                RotationStep::Withdraw { selector } => {
                    state.withdraw(&selector);
                    // The state first: a crash in between leaves a stray private key, never a
                    // state naming a key that is gone.
                    self.save(&domain.name, &state)?;
                    self.storage.delete(&Self::private_key(&domain.name, &selector)?)?;
                    events.push(KeyEvent::Withdrawn { selector });
                    continue;
                }
            }
            self.save(&domain.name, &state)?;
            if events.len() > 16 {
                break;
            }
        }
        Ok(events)
    }

    /// The key `domain` signs with now, if it has one.
    pub fn signing_key(&self, domain: &str) -> Result<Option<SigningKey>, DkimError> {
        let state = self.state(domain)?;
        let Some(active) = state.active() else { return Ok(None) };
        let Some(der) = self.storage.get(&Self::private_key(domain, &active.selector)?)? else {
            return Err(DkimError::Key {
                domain: domain.to_string(),
                selector: active.selector.clone(),
                reason: "the private key is missing from storage".into(),
            });
        };
        SigningKey::from_der(domain, &active.selector, &active.algorithm, &der).map(Some)
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
