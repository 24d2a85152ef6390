//! The certificate store: every configured certificate, loaded once per config generation,
//! and the choice of certificate for a TLS handshake.
//!
//! Choice by SNI, as nginx and HAProxy users expect: an exact name from a certificate's
//! subject alternative names first, then a wildcard (`*.example.com` covers one label), then
//! the certificate marked `default = true`. A store is immutable; a reload (or, later, ACME)
//! builds a new one and shards swap it in for new handshakes only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    /// The name routes refer to.
    pub name: String,
    /// PEM file with the certificate chain, leaf first.
    pub cert_path: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_path: String,
    /// Serve this one when no name matches.
    pub default: bool,
}

/// One loaded certificate.
#[derive(Debug)]
pub struct LoadedCertificate {
    /// The config name.
    pub name: String,
    /// DNS names from the leaf's subject alternative names (lower-case).
    pub dns_names: Vec<String>,
    /// Seconds since the epoch when the leaf expires.
    pub not_after: i64,
    /// Chain and signing key, ready for rustls.
    pub key: Arc<CertifiedKey>,
}

/// All certificates of one config generation.
#[derive(Debug, Default)]
pub struct CertificateStore {
    by_name: HashMap<String, Arc<LoadedCertificate>>,
    exact: HashMap<String, Arc<LoadedCertificate>>,
    wildcard: HashMap<String, Arc<LoadedCertificate>>,
    default: Option<Arc<LoadedCertificate>>,
    /// Order of insertion (configured first, then ACME), for [`CertificateStore::merged`].
    order: Vec<(Arc<LoadedCertificate>, bool)>,
    /// TLS-ALPN-01 challenge certificates by name (RFC 8737), served only to handshakes that
    /// offer ALPN `acme-tls/1` (see `crate::acme::tls_alpn`).
    alpn_challenges: HashMap<String, Arc<CertifiedKey>>,
}

/// Loads one certificate; the error says which file and why.
pub fn load_certificate(spec: &CertificateSpec) -> Result<LoadedCertificate, (String, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&spec.cert_path)
        .map_err(|e| ("cert".to_string(), format!("cannot read `{}`: {e}", spec.cert_path)))?
        .collect::<Result<_, _>>()
        .map_err(|e| ("cert".to_string(), format!("`{}` is not valid PEM: {e}", spec.cert_path)))?;
    let Some(leaf) = chain.first() else {
        return Err(("cert".into(), format!("`{}` holds no CERTIFICATE block", spec.cert_path)));
    };
    let key = PrivateKeyDer::from_pem_file(Path::new(&spec.key_path))
        .map_err(|e| ("key".to_string(), format!("cannot read a private key from `{}`: {e}", spec.key_path)))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ("key".to_string(), format!("`{}`: unsupported private key: {e}", spec.key_path)))?;
    let (dns_names, not_after) = leaf_names(leaf.as_ref())
        .map_err(|e| ("cert".to_string(), format!("`{}`: cannot parse the leaf certificate: {e}", spec.cert_path)))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| ("key".to_string(), format!("`{}` does not belong to `{}`: {e}", spec.key_path, spec.cert_path)))?;
    Ok(LoadedCertificate { name: spec.name.clone(), dns_names, not_after, key: Arc::new(certified) })
}

/// Loads a certificate from PEM text already in memory (issued by ACME, or read from
/// storage): `chain_pem` leaf first, `key_pem` the private key.
pub fn certificate_from_pem(name: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCertificate, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the chain is not valid PEM: {e}"))?;
    let Some(leaf) = chain.first() else { return Err("the chain holds no CERTIFICATE block".into()) };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("no private key: {e}"))?;
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let (dns_names, not_after) = leaf_names(leaf.as_ref()).map_err(|e| format!("cannot parse the leaf certificate: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(LoadedCertificate { name: name.to_string(), dns_names, not_after, key: Arc::new(certified) })
}

fn leaf_names(der: &[u8]) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Old certificates name the host only in the subject CN.
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

impl CertificateStore {
    /// Builds a store from loaded certificates (the first `default = true` one is the default;
    /// earlier certificates win a name claimed twice).
    pub fn new(certificates: Vec<(LoadedCertificate, bool)>) -> CertificateStore {
        CertificateStore::from_shared(certificates.into_iter().map(|(c, d)| (Arc::new(c), d)).collect())
    }

    fn from_shared(certificates: Vec<(Arc<LoadedCertificate>, bool)>) -> CertificateStore {
        let mut store = CertificateStore::default();
        for (cert, is_default) in certificates {
            store.order.push((cert.clone(), is_default));
            for name in &cert.dns_names {
                match name.strip_prefix("*.") {
                    Some(suffix) => store.wildcard.entry(suffix.to_string()).or_insert_with(|| cert.clone()),
                    None => store.exact.entry(name.clone()).or_insert_with(|| cert.clone()),
                };
            }
            if is_default && store.default.is_none() {
                store.default = Some(cert.clone());
            }
            store.by_name.insert(cert.name.clone(), cert);
        }
        store
    }

    /// A new store: this one's certificates first (they keep the names they claim and the
    /// default), then `issued` (ACME certificates, named after their route), with
    /// `alpn_challenges` as the TLS-ALPN-01 challenge table. `self` is untouched: shards still
    /// holding it keep serving it.
    pub fn merged(&self, issued: &[Arc<LoadedCertificate>], alpn_challenges: HashMap<String, Arc<CertifiedKey>>) -> CertificateStore {
        let configured = self.order.iter().filter(|(c, _)| !issued.iter().any(|i| i.name == c.name || Arc::ptr_eq(i, c)));
        let mut all: Vec<(Arc<LoadedCertificate>, bool)> = configured.cloned().collect();
        all.extend(issued.iter().map(|c| (c.clone(), false)));
        let mut store = CertificateStore::from_shared(all);
        store.alpn_challenges = alpn_challenges;
        store
    }

    /// The TLS-ALPN-01 challenge certificate for `server_name`, if an order published one.
    pub fn alpn_challenge(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        self.alpn_challenges.get(&server_name.trim_end_matches('.').to_ascii_lowercase())
    }

    /// The certificate a config names.
    pub fn by_name(&self, name: &str) -> Option<&Arc<LoadedCertificate>> {
        self.by_name.get(name)
    }

    /// Every certificate, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<LoadedCertificate>> {
        self.by_name.values()
    }

    /// The certificate for `server_name`: exact, then wildcard, then the default.
    pub fn select(&self, server_name: Option<&str>) -> Option<&Arc<LoadedCertificate>> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(cert) = self.exact.get(&name) {
                return Some(cert);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(cert) = self.wildcard.get(parent) {
                    return Some(cert);
                }
            }
        }
        self.default.as_ref()
    }
}

/// rustls' view of the store: by SNI, or always one pinned certificate (a route's
/// `certificate = NAME`). Either way, a ClientHello offering ALPN `acme-tls/1` (a CA
/// validating TLS-ALPN-01) gets the store's challenge certificate for its SNI, or none.
#[derive(Debug)]
pub enum CertificateResolver {
    /// Choose from the whole store by SNI.
    Store(Arc<CertificateStore>),
    /// Always this one (the store is kept for ACME challenges).
    Pinned(Arc<CertifiedKey>, Arc<CertificateStore>),
}

/// Whether a ClientHello offers ALPN `acme-tls/1`.
pub fn offers_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == crate::acme::tls_alpn::ACME_TLS_ALPN))
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = match self {
            CertificateResolver::Pinned(_, store) | CertificateResolver::Store(store) => store,
        };
        if offers_acme_tls(&hello) {
            return hello.server_name().and_then(|name| store.alpn_challenge(name)).cloned();
        }
        match self {
            CertificateResolver::Pinned(key, _) => Some(key.clone()),
            CertificateResolver::Store(store) => store.select(hello.server_name()).map(|c| c.key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, file: &str, names: &[&str]) -> CertificateSpec {
        let certified = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("cert");
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
        CertificateSpec {
            name: file.into(),
            cert_path: cert_path.display().to_string(),
            key_path: key_path.display().to_string(),
            default: false,
        }
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().expect("dir");
        let exact = load_certificate(&write_cert(dir.path(), "exact", &["api.example.com"])).expect("exact");
        let wild = load_certificate(&write_cert(dir.path(), "wild", &["*.example.com"])).expect("wild");
        let fallback = load_certificate(&write_cert(dir.path(), "fallback", &["fallback.test"])).expect("fallback");
        let store = CertificateStore::new(vec![(exact, false), (wild, false), (fallback, true)]);
        let pick = |n: Option<&str>| store.select(n).map(|c| c.name.clone());
        assert_eq!(pick(Some("API.example.com.")).as_deref(), Some("exact"));
        assert_eq!(pick(Some("www.example.com")).as_deref(), Some("wild"));
        assert_eq!(pick(Some("a.b.example.com")).as_deref(), Some("fallback"));
        assert_eq!(pick(None).as_deref(), Some("fallback"));
        assert!(store.by_name("wild").is_some());
    }

    #[test]
    fn merged_stores_keep_configured_certificates_first_and_carry_alpn_challenges() {
        let dir = tempfile::tempdir().expect("dir");
        let configured = load_certificate(&write_cert(dir.path(), "configured", &["api.example.com"])).expect("configured");
        let fallback = load_certificate(&write_cert(dir.path(), "fallback", &["fallback.test"])).expect("fallback");
        let base = CertificateStore::new(vec![(configured, false), (fallback, true)]);
        let spec = write_cert(dir.path(), "site", &["api.example.com", "www.example.com"]);
        let chain = std::fs::read(&spec.cert_path).expect("chain");
        let key = std::fs::read(&spec.key_path).expect("key");
        let issued = Arc::new(certificate_from_pem("site", &chain, &key).expect("from pem"));
        let challenge = load_certificate(&write_cert(dir.path(), "challenge", &["www.example.com"])).expect("challenge").key;
        let merged = base.merged(std::slice::from_ref(&issued), HashMap::from([("www.example.com".to_string(), challenge)]));
        let pick = |n: Option<&str>| merged.select(n).map(|c| c.name.clone());
        assert_eq!(pick(Some("api.example.com")).as_deref(), Some("configured"), "configured certificates keep their names");
        assert_eq!(pick(Some("www.example.com")).as_deref(), Some("site"));
        assert_eq!(pick(None).as_deref(), Some("fallback"), "the default stays");
        assert!(merged.alpn_challenge("www.example.com").is_some());
        assert!(base.alpn_challenge("www.example.com").is_none() && base.by_name("site").is_none(), "the old store is untouched");
        // Merging again (a renewal) replaces the issued certificate of the same name.
        let again = merged.merged(&[issued], HashMap::new());
        assert_eq!(again.all().count(), 3);
        assert!(again.alpn_challenge("www.example.com").is_none());
        assert!(certificate_from_pem("x", b"junk", &key).is_err());
    }

    #[test]
    fn bad_files_name_the_file_and_field() {
        let dir = tempfile::tempdir().expect("dir");
        let good = write_cert(dir.path(), "good", &["a.test"]);
        let other = write_cert(dir.path(), "other", &["b.test"]);
        let missing = CertificateSpec { cert_path: "/nonexistent.pem".into(), ..good.clone() };
        let (field, msg) = load_certificate(&missing).expect_err("missing file");
        assert_eq!(field, "cert");
        assert!(msg.contains("/nonexistent.pem"), "{msg}");
        let mismatched = CertificateSpec { key_path: other.key_path.clone(), ..good.clone() };
        let (field, msg) = load_certificate(&mismatched).expect_err("wrong key");
        assert_eq!(field, "key");
        assert!(msg.contains("does not belong"), "{msg}");
        let not_pem = dir.path().join("junk.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let junk = CertificateSpec { cert_path: not_pem.display().to_string(), ..good };
        assert!(load_certificate(&junk).is_err());
    }
}
