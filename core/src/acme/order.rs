//! One ACME order, from account to certificate, as an async task on the control core's tokio
//! runtime.
//!
//! Steps: the stored account for the directory (created once and stored when there is none);
//! a new order for the names; for each pending authorization, the configured challenge is
//! published through the control loop ([`AcmeEvent::Publish`], answered once every shard or
//! the DNS zones have it) and marked ready; then the order is polled until ready, finalized
//! with a fresh key (ECDSA P-256, CSR by instant-acme's rcgen support) and the chain fetched.
//! Whatever happens, the published challenges are withdrawn at the end
//! ([`AcmeEvent::Withdraw`]) and the outcome goes back as [`AcmeEvent::Finished`].

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use super::{stored, tls_alpn, AcmeError, AcmeEvent, IssuedPem, PublishedChallenge};
use crate::config::{AcmeSettings, ChallengeKind};
use crate::runtime::messages::ToControl;
use crate::storage::Storage;

/// How long the CA gets to validate all challenges, and to issue after finalize.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the shards get to confirm a published challenge before the CA is asked anyway.
const SHARD_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole order may take (a CA that accepts connections and never answers must not
/// keep an order in flight for ever).
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// What an order task needs.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// The auto certificate's name.
    pub certificate: String,
    /// The names to certify.
    pub domains: Vec<String>,
    /// `[acme]`.
    pub settings: Arc<AcmeSettings>,
    /// Where the account lives.
    pub storage: Arc<dyn Storage>,
    /// The control loop.
    pub to_control: Sender<ToControl>,
}

/// Runs one order and reports the outcome to the control loop (never panics, never leaves a
/// challenge published).
pub async fn run(request: OrderRequest) {
    // rustls needs a process-wide provider for instant-acme's HTTPS client; ours is ring
    // (the rest of the binary names ring explicitly). Losing a race to install it is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A panic inside the order (a library bug) must still end the order, or it would stay
    // "in flight" forever: it runs as its own task and its failure is reported like any other.
    let inner = request.clone();
    let order = async move {
        match tokio::time::timeout(ORDER_TIMEOUT, obtain(&inner)).await {
            Ok(outcome) => outcome.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the order took longer than {}s", ORDER_TIMEOUT.as_secs())),
        }
    };
    let outcome = match tokio::spawn(order).await {
        Ok(outcome) => outcome,
        Err(e) => Err(format!("the order task failed: {e}")),
    };
    let _ = request.to_control.send(ToControl::Acme(AcmeEvent::Withdraw { certificate: request.certificate.clone() }));
    let _ = request.to_control.send(ToControl::Acme(AcmeEvent::Finished {
        certificate: request.certificate.clone(),
        outcome,
    }));
}

async fn account(request: &OrderRequest) -> Result<Account, AcmeError> {
    let settings = &request.settings;
    let builder = || match &settings.ca_root {
        Some(path) => Account::builder_with_root(path),
        None => Account::builder(),
    };
    if let Some(credentials) = stored::load_account(request.storage.as_ref(), &settings.directory)? {
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?.create(&new, settings.directory.clone(), None).await?;
    stored::save_account(request.storage.as_ref(), &settings.directory, &credentials)?;
    tracing::info!(directory = %settings.directory, id = account.id(), "ACME account created and stored");
    Ok(account)
}

async fn publish(request: &OrderRequest, challenge: PublishedChallenge) -> Result<(), AcmeError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let event = AcmeEvent::Publish { certificate: request.certificate.clone(), challenge, reply };
    request.to_control.send(ToControl::Acme(event)).map_err(|_| AcmeError::Stopping)?;
    let applied = answer.await.map_err(|_| AcmeError::Stopping)?.map_err(AcmeError::Publish)?;
    let shards = applied.shards();
    let acknowledged = applied.wait(SHARD_ACK_TIMEOUT).await;
    if acknowledged < shards {
        tracing::warn!(certificate = %request.certificate, acknowledged, shards, "not every shard confirmed the challenge in time; asking the CA to validate anyway");
    }
    Ok(())
}

async fn obtain(request: &OrderRequest) -> Result<IssuedPem, AcmeError> {
    let account = account(request).await?;
    let identifiers: Vec<Identifier> = request.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let kind = request.settings.challenge;
    let challenge_type = match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Authorization {
                    identifier: authorization.identifier().to_string(),
                    status: format!("{other:?}").to_lowercase(),
                })
            }
        }
        let identifier = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(challenge_type.clone())
            .ok_or_else(|| AcmeError::NoChallenge { challenge: kind.as_str(), identifier: identifier.clone() })?;
        let key_authorization = challenge.key_authorization();
        // The name without a wildcard's `*.`: what DNS and TLS validate.
        let domain = identifier.trim_start_matches("*.").to_string();
        let published = match kind {
            ChallengeKind::Dns01 => {
                PublishedChallenge::Dns { name: format!("_acme-challenge.{domain}"), value: key_authorization.dns_value() }
            }
            ChallengeKind::Http01 => PublishedChallenge::Http {
                token: challenge.token.clone(),
                key_authorization: key_authorization.as_str().to_string(),
            },
            ChallengeKind::TlsAlpn01 => PublishedChallenge::TlsAlpn {
                certificate: tls_alpn::challenge_certificate(&domain, key_authorization.digest().as_ref())
                    .map_err(AcmeError::Certificate)?,
                domain,
            },
        };
        publish(request, published).await?;
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(POLL_TIMEOUT);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "the CA gave no reason".to_string());
        return Err(AcmeError::OrderNotReady { status: format!("{status:?}").to_lowercase(), detail });
    }
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&retries).await?;
    Ok(IssuedPem { chain, key })
}
