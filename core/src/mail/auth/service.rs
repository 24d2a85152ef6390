//! Inbound checks on the control core's tokio runtime, for the shards.
//!
//! A shard that received a message (spool file `fdatasync`ed) sends
//! `ToControl::MailAuth(AuthRequest)` and awaits `ToShard::MailAuthenticated` on its mailbox
//! (matched by ticket, like the queue writer's answer) before its end-of-DATA reply. Here the
//! request becomes a task on the control core's runtime: the spool file is read, the checks
//! run with their DNS lookups (`super::authenticate`, bounded by `[email.auth] timeout_secs`),
//! and the verdict goes back to the shard's mailbox. A shard executor never waits on DNS.
//!
//! Owns: [`InboundAuthService`] and [`AuthRequest`]. Not here: the checks themselves
//! (`super`), what the session answers (`crate::smtp::serve`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;

use super::{authenticate, authenticator_for, AuthVerdict, InboundFacts, TxtCache};
use crate::config::InboundAuthSettings;
use crate::runtime::control_async::ControlAsync;
use crate::runtime::doorbell::Mailbox;
use crate::runtime::messages::ToShard;

/// Messages larger than this are not read: SPF still runs, DKIM/ARC/DMARC say `permerror`.
pub const MAX_CHECKED_MESSAGE: u64 = 32 * 1024 * 1024;

/// A shard's request to check one received message.
#[derive(Debug)]
pub struct AuthRequest {
    /// The asking shard.
    pub shard: usize,
    /// Its ticket for the answer.
    pub ticket: u64,
    /// The message's spool file (complete and synced).
    pub spool: PathBuf,
    /// The envelope facts.
    pub facts: InboundFacts,
}

/// The checks' resolver and cache, on the control core.
pub struct InboundAuthService {
    settings: InboundAuthSettings,
    authenticator: Arc<MessageAuthenticator>,
    cache: Arc<TxtCache>,
}

impl std::fmt::Debug for InboundAuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundAuthService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl InboundAuthService {
    /// The service for `settings`; `None` (logged) when its resolver cannot be built.
    pub fn start(settings: &InboundAuthSettings, runtime: &ControlAsync) -> Option<InboundAuthService> {
        let _entered = runtime.handle().enter();
        match authenticator_for(settings.resolver) {
            Ok(authenticator) => Some(InboundAuthService {
                settings: settings.clone(),
                authenticator: Arc::new(authenticator),
                cache: Arc::new(TxtCache::default()),
            }),
            Err(e) => {
                tracing::error!(error = %e, "inbound mail checks disabled");
                None
            }
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &InboundAuthSettings {
        &self.settings
    }

    /// Runs the checks for `request` on `runtime`; the verdict goes to `shard`.
    pub fn check(&self, request: AuthRequest, runtime: &ControlAsync, shard: Mailbox<ToShard>) {
        let authenticator = self.authenticator.clone();
        let cache = self.cache.clone();
        let timeout = Duration::from_secs(u64::from(self.settings.timeout_secs));
        runtime.spawn(async move {
            let verdict = run_checks(&authenticator, &cache, &request, timeout).await;
            let _ = shard.send(ToShard::MailAuthenticated { ticket: request.ticket, verdict: verdict.map(Box::new) });
        });
    }
}

async fn run_checks(authenticator: &MessageAuthenticator, cache: &TxtCache, request: &AuthRequest, timeout: Duration) -> Option<AuthVerdict> {
    let size = tokio::fs::metadata(&request.spool).await.map(|m| m.len()).unwrap_or(0);
    let message = if size <= MAX_CHECKED_MESSAGE {
        match tokio::fs::read(&request.spool).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(spool = %request.spool.display(), error = %e, "mail checks: spool file unreadable");
                return None;
            }
        }
    } else {
        Vec::new()
    };
    match tokio::time::timeout(timeout, authenticate(authenticator, cache, &request.facts, &message)).await {
        Ok(verdict) => Some(verdict),
        Err(_) => {
            tracing::warn!(ip = %request.facts.client_ip, "mail checks timed out; message accepted without Authentication-Results");
            None
        }
    }
}
