//! Inbound checks on the control core's tokio runtime, for the shards.
//!
//! A shard that received a message (spool file `fdatasync`ed) sends
//! `ToControl::MailAuth(AuthRequest)` and awaits `ToShard::MailAuthenticated` on its mailbox
//! (matched by ticket, like the queue writer's answer) before its end-of-DATA reply. Here the
//! request becomes a task on the control core's runtime: the spool file is read, the checks
//! run with their DNS lookups (`super::authenticate`, bounded by `[email.auth] timeout_secs`),
//! and the verdict goes back to the shard's mailbox. A shard executor never waits on DNS.
//!
//! The same task scans content for `scan = true` routes (`crate::mail::scan`: attachments,
//! archive file lists, the spam score), so the message is read once; without `[email.auth]` only the scan runs ([`scan_only`]).
//!
//! Owns: [`InboundAuthService`], [`AuthRequest`] and [`InboundReport`]. Not here: the checks
//! themselves (`super`, `crate::mail::scan`), what the session answers (`crate::smtp::serve`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;

use super::{authenticate, authenticator_for, AuthVerdict, InboundFacts, TxtCache};
use crate::config::{InboundAuthSettings, ScanPolicy};
use crate::mail::scan::{scan_message, ScanFinding, ScanReport};
use crate::mail::spam::SpamVerdict;
use crate::runtime::control_async::ControlAsync;
use crate::runtime::doorbell::Mailbox;
use crate::runtime::messages::ToShard;

/// Messages larger than this are not read: SPF still runs, DKIM/ARC/DMARC say `permerror`,
/// attachments are not scanned.
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
    /// Whether to run SPF/DKIM/ARC/DMARC (unauthenticated client and `[email.auth]`).
    pub authenticate: bool,
    /// The attachment policy, when a `scan = true` route may take the message.
    pub scan: Option<ScanPolicy>,
}

/// What the control core found out about a received message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboundReport {
    /// The authentication verdict (`None`: not asked, or none could be had in time).
    pub auth: Option<AuthVerdict>,
    /// Blocked attachments (empty when not asked or none).
    pub blocked: Vec<ScanFinding>,
    /// The spam score (`None` when scanning was not asked or the message does not parse).
    pub spam: Option<SpamVerdict>,
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
            let report = run_checks(Some((&authenticator, &cache)), &request, timeout).await;
            let _ = shard.send(ToShard::MailAuthenticated { ticket: request.ticket, report: Box::new(report) });
        });
    }
}

/// Runs only the attachment scan for `request` (no `[email.auth]`) on `runtime`.
pub fn scan_only(request: AuthRequest, runtime: &ControlAsync, shard: Mailbox<ToShard>) {
    runtime.spawn(async move {
        let report = run_checks(None, &request, Duration::from_secs(1)).await;
        let _ = shard.send(ToShard::MailAuthenticated { ticket: request.ticket, report: Box::new(report) });
    });
}

async fn run_checks(checker: Option<(&MessageAuthenticator, &TxtCache)>, request: &AuthRequest, timeout: Duration) -> InboundReport {
    let size = tokio::fs::metadata(&request.spool).await.map(|m| m.len()).unwrap_or(0);
    let message = if size <= MAX_CHECKED_MESSAGE {
        match tokio::fs::read(&request.spool).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(spool = %request.spool.display(), error = %e, "mail checks: spool file unreadable");
                return InboundReport::default();
            }
        }
    } else {
        Vec::new()
    };
    let ScanReport { blocked, spam } = match &request.scan {
        Some(policy) => scan_message(&message, policy),
        None => ScanReport::default(),
    };
    let auth = match checker.filter(|_| request.authenticate) {
        None => None,
        Some((authenticator, cache)) => {
            match tokio::time::timeout(timeout, authenticate(authenticator, cache, &request.facts, &message)).await {
                Ok(verdict) => Some(verdict),
                Err(_) => {
                    tracing::warn!(ip = %request.facts.client_ip, "mail checks timed out; message accepted without Authentication-Results");
                    None
                }
            }
        }
    };
    InboundReport { auth, blocked, spam }
}
