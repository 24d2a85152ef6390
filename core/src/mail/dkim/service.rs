//! DKIM on the control core: keeps every sending domain's keys current (first key on first
//! use, rotation steps when due), publishes their records into our own zones for
//! `dns_mode = "internal"` domains, and keeps the [`SignerTable`] the delivery engine signs
//! with.
//!
//! Owns: [`DkimService`] (run from the control loop's once-a-second tick; it does real work
//! at most once a minute, and at once after a reload) and [`SignerTable`].
//! Not here: the rotation rules ([`super::rotation`]), the records ([`super::records`]),
//! applying DNS changes and sending the catalog to the shards (the control core does, when
//! [`DkimService::tick`] says the zones changed).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::records::{domain_records, reconcile};
use super::{unix_now, DkimError, DkimKeys, SigningKey};
use crate::config::{Config, DnsMode, MailDomain};
use crate::dns::dynamic::DnsZones;

/// How often keys are looked at.
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

/// The key each signing domain signs with now, shared with the delivery engine.
#[derive(Debug, Default)]
pub struct SignerTable {
    keys: RwLock<HashMap<String, Arc<SigningKey>>>,
}

impl SignerTable {
    /// The key for mail from `sender` (its domain, any case), if that domain signs.
    pub fn key_for(&self, sender: &str) -> Option<Arc<SigningKey>> {
        let (_, domain) = sender.rsplit_once('@')?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(&domain.to_ascii_lowercase()).cloned()
    }

    fn replace(&self, keys: HashMap<String, Arc<SigningKey>>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }
}

/// Streams `text` (a whole message) through the signer of `key`; the `DKIM-Signature` header.
pub async fn sign_reader(key: &SigningKey, text: &mut (dyn tokio::io::AsyncRead + Unpin + Send)) -> Result<String, DkimError> {
    let failed = |reason: String| DkimError::Sign { domain: key.domain.clone(), reason };
    let mut stream = key.signer.sign_streaming();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = text.read(&mut buf).await.map_err(|e| failed(e.to_string()))?;
        if n == 0 {
            break;
        }
        stream.write(&buf[..n]);
    }
    use mail_auth::common::headers::HeaderWriter;
    stream.finish().map(|s| s.to_header()).map_err(|e| failed(e.to_string()))
}

/// The control core's DKIM state.
#[derive(Debug)]
pub struct DkimService {
    keys: DkimKeys,
    domains: Vec<MailDomain>,
    table: Arc<SignerTable>,
    next_run: Instant,
}

impl DkimService {
    /// A service for `config`'s `[[email.domains]]`; `None` without any, or when storage
    /// cannot be opened (logged: mail then leaves unsigned).
    pub fn open(config: &Config) -> Option<DkimService> {
        if config.mail_auth.domains.is_empty() {
            return None;
        }
        match crate::storage::open(config.storage, &config.runtime.data_dir) {
            Ok(storage) => Some(DkimService {
                keys: DkimKeys::new(storage),
                domains: config.mail_auth.domains.clone(),
                table: Arc::new(SignerTable::default()),
                next_run: Instant::now(),
            }),
            Err(e) => {
                tracing::error!(error = %e, "DKIM keys unavailable: storage cannot be opened; mail leaves unsigned");
                None
            }
        }
    }

    /// The table the delivery engine signs with.
    pub fn table(&self) -> Arc<SignerTable> {
        self.table.clone()
    }

    /// New `[[email.domains]]` after a reload: looked at on the next tick.
    pub fn reconfigure(&mut self, config: &Config) {
        self.domains = config.mail_auth.domains.clone();
        self.next_run = Instant::now();
    }

    /// Runs the due rotation steps, refreshes the signer table and brings our zones to the
    /// records wanted. Returns whether `dns` changed (the caller sends the catalog out).
    pub fn tick(&mut self, now: Instant, dns: Option<&mut DnsZones>) -> bool {
        if now < self.next_run {
            return false;
        }
        self.next_run = now + MAINTAIN_EVERY;
        let unix = unix_now();
        let mut signing = HashMap::new();
        let mut wanted = Vec::new();
        for domain in &self.domains {
            match self.keys.maintain(domain, unix) {
                Ok(events) => {
                    for event in events {
                        tracing::info!(domain = %domain.name, ?event, "DKIM key rotation step");
                    }
                }
                Err(e) => tracing::error!(domain = %domain.name, error = %e, "DKIM key maintenance failed"),
            }
            if domain.sign {
                match self.keys.signing_key(&domain.name) {
                    Ok(Some(key)) => {
                        signing.insert(domain.name.clone(), Arc::new(key));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(domain = %domain.name, error = %e, "DKIM signing key unavailable"),
                }
            }
            if domain.dns_mode == DnsMode::Internal {
                match self.keys.state(&domain.name) {
                    Ok(state) => wanted.push((domain, domain_records(domain, &state))),
                    Err(e) => tracing::error!(domain = %domain.name, error = %e, "DKIM state unreadable"),
                }
            }
        }
        self.table.replace(signing);
        let Some(dns) = dns else {
            if !wanted.is_empty() {
                tracing::warn!("[[email.domains]] with dns_mode = \"internal\" but no [dns]: nothing published");
            }
            return false;
        };
        let mut changed = false;
        for (domain, records) in wanted {
            for change in reconcile(domain, &records, dns.changes()) {
                let described = format!("{:?} {} {}", change.kind, change.name, change.rtype);
                match dns.apply(change) {
                    Ok(updated) => {
                        changed = true;
                        tracing::info!(change = %described, zone = %updated.zone, serial = updated.serial, "mail DNS record published");
                    }
                    Err(e) => tracing::warn!(domain = %domain.name, change = %described, error = %e, "mail DNS record not published"),
                }
            }
        }
        changed
    }
}
