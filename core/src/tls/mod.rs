//! TLS termination: certificates, the rustls handshake on a shard, and the data path after
//! it — in the kernel (kTLS) where it can be, in userspace rustls where it cannot.
//!
//! - [`store`]: the certificate store and choice by SNI (exact, wildcard, default);
//! - [`handshake`]: rustls driven record by record over a glommio socket;
//! - [`ktls`]: probing the kernel once, and installing a session's keys in it;
//! - [`relay`]: the userspace fallback relay (client TLS ⇄ target plaintext);
//! - [`tickets`]: session-ticket keys, rotated by the control core and sent to every shard;
//! - [`unverified`]: the accept-any-certificate verifier of opportunistic STARTTLS clients.
//!
//! After a handshake the session goes to the kernel when [`ktls::probe`] said it can and no
//! encrypted byte is left over; the socket then carries plaintext on our side and the normal
//! zero-copy splice relay moves it. Otherwise rustls keeps the session in userspace. Which
//! path a connection took is counted per route (`ktls` / `userspace_tls`).

pub mod handshake;
pub mod ktls;
pub mod relay;
pub mod store;
pub mod tickets;
pub mod unverified;

use std::sync::Arc;

use rustls::server::ProducesTickets;
use rustls::ServerConfig;

use store::{CertificateResolver, CertificateStore};

/// What a shard's TLS configs are built with: the session-ticket keys in force (the same
/// immutable set on every shard, so a ticket from one shard resumes on another; replaced when
/// the control core rotates them, see [`tickets`]) and whether the kernel takes sessions.
#[derive(Debug, Clone)]
pub struct TlsShared {
    /// Session-ticket keys.
    pub ticketer: Arc<dyn ProducesTickets>,
    /// Whether the kernel takes sessions.
    pub ktls: ktls::KtlsSupport,
}

impl TlsShared {
    /// The first ticket keys and the kTLS probe's answer.
    pub fn new(keys: Arc<tickets::TicketKeys>) -> TlsShared {
        TlsShared { ticketer: keys, ktls: ktls::probe() }
    }

    /// The same, with new ticket keys.
    pub fn with_keys(&self, keys: Arc<tickets::TicketKeys>) -> TlsShared {
        TlsShared { ticketer: keys, ktls: self.ktls.clone() }
    }
}

/// A rustls server config for a route: its pinned certificate or the store by SNI; TLS 1.2
/// and 1.3 with rustls' AEAD-only suites in server order; ALPN `alpn`; resumption by tickets
/// and a session cache; secret extraction on (for kTLS).
pub fn server_config(
    store: &Arc<CertificateStore>,
    pinned: Option<&str>,
    alpn: &[&[u8]],
    shared: &TlsShared,
) -> Result<Arc<ServerConfig>, String> {
    let resolver = match pinned {
        Some(name) => {
            let cert = store.by_name(name).ok_or_else(|| format!("no certificate named `{name}`"))?;
            CertificateResolver::Pinned(cert.key.clone(), store.clone())
        }
        None => CertificateResolver::Store(store.clone()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Our cipher order (AEAD suites, strongest key exchange first), not the client's, as
    // nginx's `ssl_prefer_server_ciphers` and testssl.sh expect.
    config.ignore_client_order = true;
    config.ticketer = shared.ticketer.clone();
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}
