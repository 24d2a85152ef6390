//! Inbound mail authentication: SPF (RFC 7208), DKIM (RFC 6376), ARC (RFC 8617) and DMARC
//! (RFC 7489) with mail-auth, against a configurable resolver, summed up as an RFC 8601
//! `Authentication-Results` header and a disposition (accept, quarantine, reject).
//!
//! Owns: the resolver ([`authenticator_for`]: `[email.auth] resolver`, or the system's), a
//! shared TXT cache ([`TxtCache`], which tests pre-fill), the check itself ([`authenticate`],
//! async: it is meant for the control core's tokio runtime, never a shard executor) and the
//! typed results ([`AuthVerdict`], [`AuthResult`]) that routes match on.
//! Not here: when the check runs and what the session answers (`crate::smtp`), DKIM keys and
//! signing (`crate::mail::dkim`).

pub mod service;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator, Parameters, ResolverCache, SpfResult,
    Txt,
};

/// Most TXT answers the cache keeps (beyond it, entries are dropped oldest-expiry first).
const TXT_CACHE_ENTRIES: usize = 10_000;

/// Why the checks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The resolver could not be built.
    #[error("mail authentication resolver: {0}")]
    Resolver(String),
}

/// One method's result, as routes match it (`dmarc = "fail"`) and RFC 8601 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// `pass`
    Pass,
    /// `fail`
    Fail,
    /// `softfail` (SPF only)
    SoftFail,
    /// `neutral`
    Neutral,
    /// `none`: nothing to check (no record, no signature).
    None,
    /// `temperror`: a DNS failure; may pass later.
    TempError,
    /// `permerror`: a broken record or signature.
    PermError,
}

impl AuthResult {
    /// The RFC 8601 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    /// Parses an RFC 8601 name (config: route match criteria).
    pub fn parse(text: &str) -> Option<AuthResult> {
        [
            AuthResult::Pass,
            AuthResult::Fail,
            AuthResult::SoftFail,
            AuthResult::Neutral,
            AuthResult::None,
            AuthResult::TempError,
            AuthResult::PermError,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// What the message gets because of DMARC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Nothing to do.
    Accept,
    /// DMARC failed with `p=quarantine`.
    Quarantine,
    /// DMARC failed with `p=reject`.
    Reject,
}

/// The outcome of the checks for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthVerdict {
    /// `Authentication-Results: ...` with its CRLF, to put on top of the message.
    pub header: String,
    /// SPF of the MAIL FROM identity (of the HELO identity for `<>`).
    pub spf: AuthResult,
    /// DKIM: `pass` when any signature passes, else the first signature's result, `none`
    /// without signatures.
    pub dkim: AuthResult,
    /// ARC chain validation.
    pub arc: AuthResult,
    /// DMARC.
    pub dmarc: AuthResult,
    /// The DMARC disposition.
    pub disposition: Disposition,
    /// The RFC 5322 From domain DMARC evaluated.
    pub from_domain: String,
}

/// The envelope facts the checks need.
#[derive(Debug, Clone)]
pub struct InboundFacts {
    /// The client's address.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: String,
    /// The MAIL FROM mailbox (empty for `<>`).
    pub mail_from: String,
    /// Our host name (the `authserv-id`).
    pub hostname: String,
}

/// A TXT answer cache shared by all checks (mail-auth's [`ResolverCache`] for TXT records).
#[derive(Default)]
pub struct TxtCache {
    entries: Mutex<HashMap<Box<str>, (Txt, Instant)>>,
}

impl std::fmt::Debug for TxtCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("TxtCache").field("entries", &len).finish()
    }
}

impl TxtCache {
    /// Puts a parsed record under `name` (for tests and for records we publish ourselves),
    /// valid for an hour.
    pub fn insert_txt(&self, name: &str, txt: Txt) {
        let fqdn = if name.ends_with('.') { name.to_ascii_lowercase() } else { format!("{}.", name.to_ascii_lowercase()) };
        self.insert(fqdn.into_boxed_str(), txt, Instant::now() + Duration::from_secs(3600));
    }
}

impl TxtCache {
    /// Puts a record given as text (`v=DKIM1; ...`, `v=spf1 ...`, `v=DMARC1; ...`) under
    /// `name`; `false` when it does not parse as one of those.
    pub fn insert_text_record(&self, name: &str, text: &str) -> bool {
        use mail_auth::common::parse::TxtRecordParser;
        let bytes = text.as_bytes();
        let txt: Option<Txt> = if text.starts_with("v=DKIM1") {
            mail_auth::common::verify::DomainKey::parse(bytes).ok().map(Txt::from)
        } else if text.starts_with("v=spf1") {
            mail_auth::spf::Spf::parse(bytes).ok().map(Txt::from)
        } else if text.starts_with("v=DMARC1") {
            mail_auth::dmarc::Dmarc::parse(bytes).ok().map(Txt::from)
        } else {
            None
        };
        match txt {
            Some(txt) => {
                self.insert_txt(name, txt);
                true
            }
            None => false,
        }
    }

    /// Records that `name` has no TXT record (an authoritative NXDOMAIN).
    pub fn insert_not_found(&self, name: &str) {
        let nxdomain = mail_auth::DnsError::RecordNotFound(mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain);
        self.insert_txt(name, Txt::Error(mail_auth::Error::Dns(nxdomain)));
    }
}

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(name) {
            Some((txt, expires)) if *expires > Instant::now() => Some(txt.clone()),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.lock().ok()?.remove(name).map(|(txt, _)| txt)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= TXT_CACHE_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= TXT_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, valid_until));
    }
}

/// A mail-auth authenticator asking `resolver` (UDP, TCP for truncated answers), or the
/// system's resolvers. Must be called inside a tokio runtime.
pub fn authenticator_for(resolver: Option<SocketAddr>) -> Result<MessageAuthenticator, AuthError> {
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(5);
    options.attempts = 2;
    options.ndots = 0;
    match resolver {
        Some(addr) => {
            let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut name_server.connections {
                connection.port = addr.port();
            }
            MessageAuthenticator::new(ResolverConfig::from_parts(None, Vec::new(), vec![name_server]), options)
                .map_err(|e| AuthError::Resolver(e.to_string()))
        }
        None => MessageAuthenticator::new_system_conf().map_err(|e| AuthError::Resolver(e.to_string())),
    }
}

fn spf_result(result: SpfResult) -> AuthResult {
    match result {
        SpfResult::Pass => AuthResult::Pass,
        SpfResult::Fail => AuthResult::Fail,
        SpfResult::SoftFail => AuthResult::SoftFail,
        SpfResult::Neutral => AuthResult::Neutral,
        SpfResult::TempError => AuthResult::TempError,
        SpfResult::PermError => AuthResult::PermError,
        SpfResult::None => AuthResult::None,
    }
}

fn dkim_result(result: &DkimResult) -> AuthResult {
    match result {
        DkimResult::Pass => AuthResult::Pass,
        DkimResult::Neutral(_) => AuthResult::Neutral,
        DkimResult::Fail(_) => AuthResult::Fail,
        DkimResult::PermError(_) => AuthResult::PermError,
        DkimResult::TempError(_) => AuthResult::TempError,
        DkimResult::None => AuthResult::None,
    }
}

fn dmarc_result(result: &DmarcResult) -> AuthResult {
    match result {
        DmarcResult::Pass => AuthResult::Pass,
        DmarcResult::Fail(_) => AuthResult::Fail,
        DmarcResult::TempError(_) => AuthResult::TempError,
        DmarcResult::PermError(_) => AuthResult::PermError,
        DmarcResult::None => AuthResult::None,
    }
}

/// Runs SPF, DKIM, ARC and DMARC for `message` (the whole message as received, CRLF lines).
/// Never fails: DNS trouble shows as `temperror` results. A message that does not parse as
/// RFC 5322 gets `permerror` for DKIM/ARC/DMARC.
pub async fn authenticate(resolver: &MessageAuthenticator, cache: &TxtCache, facts: &InboundFacts, message: &[u8]) -> AuthVerdict {
    let helo = if facts.helo.is_empty() { "unknown" } else { facts.helo.as_str() };
    let spf_params = if facts.mail_from.is_empty() {
        SpfParameters::verify_ehlo(facts.client_ip, helo, &facts.hostname)
    } else {
        SpfParameters::verify_mail_from(facts.client_ip, helo, &facts.hostname, &facts.mail_from)
    };
    let spf = resolver.verify_spf(Parameters::new(spf_params).with_txt_cache(cache)).await;
    let mut header = AuthenticationResults::new(&facts.hostname);
    header = if facts.mail_from.is_empty() {
        header.with_spf_ehlo_result(&spf, facts.client_ip, helo)
    } else {
        header.with_spf_mailfrom_result(&spf, facts.client_ip, &facts.mail_from, helo)
    };
    let spf_summary = spf_result(spf.result());
    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        return AuthVerdict {
            header: header.to_header(),
            spf: spf_summary,
            dkim: AuthResult::PermError,
            arc: AuthResult::PermError,
            dmarc: AuthResult::PermError,
            disposition: Disposition::Accept,
            from_domain: String::new(),
        };
    };
    let dkim = resolver.verify_dkim(Parameters::new(&parsed).with_txt_cache(cache)).await;
    let arc = resolver.verify_arc(Parameters::new(&parsed).with_txt_cache(cache)).await;
    let mail_from_domain = match facts.mail_from.rsplit_once('@') {
        Some((_, domain)) => domain,
        None => helo,
    };
    let dmarc = resolver
        .verify_dmarc(Parameters::new(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf)).with_txt_cache(cache))
        .await;
    let from_domain = parsed.from().rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
    header = header.with_dkim_results(&dkim, parsed.from()).with_arc_result(&arc, facts.client_ip).with_dmarc_result(&dmarc);
    let dkim_summary = if dkim.iter().any(|o| o.result() == &DkimResult::Pass) {
        AuthResult::Pass
    } else {
        dkim.first().map(|o| dkim_result(o.result())).unwrap_or(AuthResult::None)
    };
    let dmarc_summary = dmarc_result(&dmarc.result());
    let disposition = match (dmarc_summary, dmarc.policy()) {
        (AuthResult::Fail, Policy::Reject) => Disposition::Reject,
        (AuthResult::Fail, Policy::Quarantine) => Disposition::Quarantine,
        _ => Disposition::Accept,
    };
    AuthVerdict {
        header: header.to_header(),
        spf: spf_summary,
        dkim: dkim_summary,
        arc: dkim_result(arc.result()),
        dmarc: dmarc_summary,
        disposition,
        from_domain,
    }
}

#[cfg(test)]
mod tests;
