//! Automatic certificates over ACME (RFC 8555), obtained and renewed by the control core.
//!
//! Owns:
//! - [`manager`]: the control core's view of every `certificate = "auto"` certificate — what is
//!   stored, when it is due (missing, or expiring within `renew_before`), the order in flight,
//!   backoff after failures, the challenges currently published, the status shown in
//!   `stats.json` and `shardgate certs`;
//! - [`order`]: one order from account to certificate, with instant-acme, as a task on the
//!   control core's tokio runtime (`runtime::control_async`); it asks the control loop to
//!   publish and withdraw challenges with [`AcmeEvent`] messages and reports the outcome the
//!   same way, so every state change stays on the control core thread;
//! - [`stored`]: the account credentials and issued certificates in the storage layer
//!   (`acme/…` keys, private keys mode 0600);
//! - [`http01`]: the HTTP-01 token set ([`http01::Http01Challenges`]), sent to every shard and
//!   answered there for `/.well-known/acme-challenge/<token>`;
//! - [`tls_alpn`]: the TLS-ALPN-01 challenge certificate (RFC 8737), served by the TLS
//!   resolver (`tls::store`) when a ClientHello offers ALPN `acme-tls/1`.
//!
//! DNS-01 goes through our own authoritative DNS server: `_acme-challenge.<name>` TXT records
//! are added to and removed from the dynamic zones (`dns::dynamic::DnsZones`) by the control
//! core, and every shard gets the new catalog at once. Does not own the certificate store or
//! the handshake (see `tls`): issued certificates are merged into a new store snapshot that
//! shards swap in for new handshakes only.

pub mod http01;
pub mod manager;
pub mod order;
pub mod stored;
pub mod tls_alpn;

use std::sync::Arc;

use rustls::sign::CertifiedKey;

/// Why obtaining a certificate failed; the message is what `shardgate certs` shows.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with an error or could not be reached.
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The CA offers no challenge of the configured type for a name.
    #[error("the CA offers no {challenge} challenge for `{identifier}`")]
    NoChallenge {
        /// The configured type.
        challenge: &'static str,
        /// The name.
        identifier: String,
    },
    /// An authorization is in a state we cannot continue from.
    #[error("authorization for `{identifier}` is {status}")]
    Authorization {
        /// The name.
        identifier: String,
        /// Its state.
        status: String,
    },
    /// The order did not become ready (a challenge failed validation).
    #[error("order is {status} after the challenges: {detail}")]
    OrderNotReady {
        /// The order's state.
        status: String,
        /// The CA's reasons, per name, where it gave them.
        detail: String,
    },
    /// The control core could not publish a challenge.
    #[error("cannot publish the challenge: {0}")]
    Publish(String),
    /// Storage failed.
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The stored list of published DNS-01 records is unreadable.
    #[error("stored ACME challenge list `{key}` is unreadable: {reason}")]
    StoredChallenges {
        /// The storage key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The issued certificate or a stored one could not be used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The control core is stopping.
    #[error("the appliance is stopping")]
    Stopping,
}

/// A challenge an order needs published while the CA validates it.
#[derive(Debug, Clone)]
pub enum PublishedChallenge {
    /// DNS-01: a TXT record `name` (`_acme-challenge.<domain>`) holding `value`.
    Dns {
        /// Owner name.
        name: String,
        /// Base64url SHA-256 of the key authorization.
        value: String,
    },
    /// HTTP-01: `/.well-known/acme-challenge/<token>` answers `key_authorization`.
    Http {
        /// The token.
        token: String,
        /// The body to answer.
        key_authorization: String,
    },
    /// TLS-ALPN-01: this certificate is served for `domain` to `acme-tls/1` handshakes.
    TlsAlpn {
        /// The name being validated.
        domain: String,
        /// The self-signed challenge certificate with its key.
        certificate: Arc<CertifiedKey>,
    },
}

/// A freshly issued certificate, as PEM.
#[derive(Debug, Clone)]
pub struct IssuedPem {
    /// The chain, leaf first.
    pub chain: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// Acknowledgements of a change sent to every shard: each shard answers a
/// `ToShard::Barrier` once it has applied everything sent before it, so an order tells the CA
/// to validate only when every shard can answer the challenge.
#[derive(Debug)]
pub struct ShardsApplied {
    acks: tokio::sync::mpsc::UnboundedReceiver<usize>,
    shards: usize,
}

impl ShardsApplied {
    /// Sends a barrier to every shard and returns what to wait on.
    pub fn barrier(shards: &[crate::runtime::doorbell::Mailbox<crate::runtime::messages::ToShard>]) -> ShardsApplied {
        let (ack, acks) = tokio::sync::mpsc::unbounded_channel();
        for shard in shards {
            let _ = shard.send(crate::runtime::messages::ToShard::Barrier(ack.clone()));
        }
        ShardsApplied { acks, shards: shards.len() }
    }

    /// Waits until every shard has acknowledged, at most `timeout`; returns how many did.
    pub async fn wait(mut self, timeout: std::time::Duration) -> usize {
        let mut acknowledged = 0;
        let _ = tokio::time::timeout(timeout, async {
            while acknowledged < self.shards && self.acks.recv().await.is_some() {
                acknowledged += 1;
            }
        })
        .await;
        acknowledged
    }

    /// How many shards were asked.
    pub fn shards(&self) -> usize {
        self.shards
    }
}

/// Order tasks and the admin socket → the control core's ACME manager (inside
/// `ToControl::Acme`).
#[derive(Debug)]
pub enum AcmeEvent {
    /// Publish a challenge for `certificate`'s order; `reply` carries the shards'
    /// acknowledgements ([`ShardsApplied`]) or why it could not be published.
    Publish {
        /// The auto certificate's name.
        certificate: String,
        /// What to publish.
        challenge: PublishedChallenge,
        /// Sent to every shard, or why not.
        reply: tokio::sync::oneshot::Sender<Result<ShardsApplied, String>>,
    },
    /// Withdraw every challenge published for `certificate`.
    Withdraw {
        /// The auto certificate's name.
        certificate: String,
    },
    /// An order ended.
    Finished {
        /// The auto certificate's name.
        certificate: String,
        /// The certificate, or why there is none.
        outcome: Result<IssuedPem, String>,
    },
    /// Renew now (all auto certificates when `certificate` is `None`), whatever the expiry.
    Renew {
        /// Which one.
        certificate: Option<String>,
        /// The names renewal was started for, or why not.
        reply: crossbeam_channel::Sender<Result<Vec<String>, String>>,
    },
    /// The state of every auto certificate.
    Status {
        /// Where it goes.
        reply: crossbeam_channel::Sender<Vec<manager::CertificateStatus>>,
    },
}
