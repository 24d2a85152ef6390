//! TLS-ALPN-01 (RFC 8737): the self-signed challenge certificate for one name.
//!
//! The CA connects to port 443 of the name with SNI = the name and ALPN `acme-tls/1` only; the
//! server must negotiate `acme-tls/1` and present a certificate for exactly that name carrying
//! the critical `id-pe-acmeIdentifier` extension with the SHA-256 digest of the key
//! authorization. The certificate made here goes into the certificate store's challenge table
//! (`tls::store`), where the resolver picks it for `acme-tls/1` handshakes only.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The ALPN protocol id of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenge certificate for `domain` given the key authorization digest (32 bytes).
pub fn challenge_certificate(domain: &str, key_authorization_digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    if key_authorization_digest.len() != 32 {
        return Err(format!("key authorization digest is {} bytes, not 32", key_authorization_digest.len()));
    }
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_authorization_digest)];
    let key_pair = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key_pair).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_the_name_and_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = challenge_certificate("www.example.net", &digest).expect("certificate");
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).expect("parse");
        let names: Vec<String> = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, vec!["DNSName(www.example.net)".to_string()]);
        // id-pe-acmeIdentifier 1.3.6.1.5.5.7.1.31, critical, OCTET STRING of the digest.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        assert_eq!(ext.value, [&[0x04, 32][..], &digest[..]].concat());
        assert!(challenge_certificate("www.example.net", &[1, 2, 3]).is_err());
    }
}
