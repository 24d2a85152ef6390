//! The control core's ACME manager: which auto certificates exist, which are due, the orders in
//! flight, the challenges published, and the certificate store the shards get.
//!
//! Lives on the control core thread (owned by `ControlCore`); order tasks run on the control
//! core's tokio runtime and talk back through [`AcmeEvent`]s, which [`AcmeManager::handle`]
//! applies here. A certificate is due when there is none in storage, when the stored one does
//! not cover the configured names, when it expires within `renew_before`, or when a renewal
//! was forced (`shardgate certs renew`). After a failed order the next attempt waits
//! `retry_after`, doubled per consecutive failure up to [`MAX_RETRY_AFTER`]; the certificate
//! already served keeps serving meanwhile.
//!
//! The store the shards use is always built here the same way: the config's own
//! `[[certificates]]` first, then every issued auto certificate, plus the TLS-ALPN-01 challenge
//! certificates of orders in flight. It is sent whole (`ToShard::Certificates`) whenever it
//! changes; shards swap it in for new handshakes only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::http01::Http01Challenges;
use super::order::{self, OrderRequest};
use super::{stored, AcmeEvent, PublishedChallenge, ShardsApplied};
use crate::config::{AcmeSettings, Config, MAX_RETRY_AFTER};
use crate::dns::dynamic::{ChangeKind, DnsChange, DnsZones};
use crate::runtime::control_async::ControlAsync;
use crate::runtime::doorbell::Mailbox;
use crate::runtime::messages::{ToControl, ToShard};
use crate::storage::Storage;
use crate::tls::store::{CertificateStore, LoadedCertificate};

/// TTL of `_acme-challenge` TXT records (short: they live for one validation).
const CHALLENGE_TTL: u32 = 5;

/// One auto certificate as `stats.json` and `shardgate certs` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The route it is for.
    pub name: String,
    /// The names configured.
    pub domains: Vec<String>,
    /// `valid`, `missing` (never issued), `ordering` (an order is in flight) or `expired`.
    pub state: String,
    /// When the served certificate expires (seconds since the epoch), if there is one.
    pub not_after: Option<i64>,
    /// Days until then (negative once expired).
    pub expires_in_days: Option<i64>,
    /// Orders that succeeded since start.
    pub issued: u64,
    /// Consecutive failed orders.
    pub failures: u32,
    /// Why the last order failed (cleared by a success).
    pub last_error: Option<String>,
    /// Seconds until the next attempt when one is scheduled (after a failure or for renewal).
    pub next_attempt_in_secs: Option<u64>,
}

#[derive(Debug)]
struct ManagedCertificate {
    domains: Vec<String>,
    served: Option<Arc<LoadedCertificate>>,
    in_flight: bool,
    forced: bool,
    failures: u32,
    issued: u64,
    last_error: Option<String>,
    /// No order before this (backoff after failures).
    not_before: Instant,
}

/// Challenges published for one certificate's order.
#[derive(Debug, Default)]
struct Published {
    dns: Vec<(String, String)>,
    http_tokens: Vec<String>,
    alpn_domains: Vec<String>,
}

/// The ACME manager (see the module doc).
#[derive(Debug)]
pub struct AcmeManager {
    settings: Option<Arc<AcmeSettings>>,
    storage: Arc<dyn Storage>,
    to_control: Sender<ToControl>,
    base: Arc<CertificateStore>,
    certificates: BTreeMap<String, ManagedCertificate>,
    published: BTreeMap<String, Published>,
    alpn: HashMap<String, Arc<CertifiedKey>>,
    http01: Arc<Http01Challenges>,
}

/// The dynamic DNS change that adds or removes the DNS-01 TXT record `name` = `value`.
fn challenge_record(kind: ChangeKind, name: &str, value: &str) -> DnsChange {
    DnsChange {
        kind,
        name: name.to_string(),
        rtype: "TXT".into(),
        value: Some(format!("\"{value}\"")),
        ttl: (kind == ChangeKind::Add).then_some(CHALLENGE_TTL),
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// When `cert` should be renewed (seconds since the epoch): `renew_before` ahead of its
/// expiry, or — for a certificate whose whole lifetime is shorter than that (short-lived
/// certificates, test CAs) — after two thirds of its lifetime, so it is not re-ordered in a
/// loop.
pub fn renewal_time(cert: &LoadedCertificate, renew_before: Duration) -> i64 {
    let renew_before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
    let not_before = cert
        .key
        .cert
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
        .map(|(_, parsed)| parsed.validity().not_before.timestamp())
        .unwrap_or(cert.not_after);
    let lifetime = cert.not_after - not_before;
    if lifetime > 0 && lifetime <= renew_before {
        not_before + lifetime * 2 / 3
    } else {
        cert.not_after.saturating_sub(renew_before)
    }
}

/// Whether `cert` names every one of `domains`.
fn covers(cert: &LoadedCertificate, domains: &[String]) -> bool {
    domains.iter().all(|d| cert.dns_names.iter().any(|n| n == d))
}

impl AcmeManager {
    /// A manager for `config`'s auto certificates; stored certificates are loaded (and served
    /// from the first store on), so a restart orders nothing while they are good.
    pub fn new(config: &Config, storage: Arc<dyn Storage>, to_control: Sender<ToControl>) -> AcmeManager {
        let mut manager = AcmeManager {
            settings: None,
            storage,
            to_control,
            base: config.certificates.clone(),
            certificates: BTreeMap::new(),
            published: BTreeMap::new(),
            alpn: HashMap::new(),
            http01: Arc::new(Http01Challenges::default()),
        };
        manager.configure(config);
        manager
    }

    /// Takes a (re)loaded config's `[acme]` and certificates: new auto certificates are loaded
    /// from storage, removed ones forgotten, kept ones keep their state.
    fn configure(&mut self, config: &Config) {
        self.base = config.certificates.clone();
        self.settings = config.acme.clone().map(Arc::new);
        let wanted = config.acme.as_ref().map(|a| a.certificates.clone()).unwrap_or_default();
        self.certificates.retain(|name, _| wanted.iter().any(|w| &w.name == name));
        for auto in wanted {
            if let Some(existing) = self.certificates.get_mut(&auto.name) {
                existing.domains = auto.domains;
                continue;
            }
            let served = match stored::load_certificate(self.storage.as_ref(), &auto.name) {
                Ok(Some(cert)) => {
                    tracing::info!(certificate = %auto.name, names = ?cert.dns_names, not_after = cert.not_after, "stored ACME certificate loaded");
                    Some(Arc::new(cert))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(certificate = %auto.name, error = %e, "stored ACME certificate unusable; ordering a new one");
                    None
                }
            };
            self.certificates.insert(
                auto.name.clone(),
                ManagedCertificate {
                    domains: auto.domains,
                    served,
                    in_flight: false,
                    forced: false,
                    failures: 0,
                    issued: 0,
                    last_error: None,
                    not_before: Instant::now(),
                },
            );
        }
    }

    /// For a reload: takes the new config's settings and puts the merged store into it.
    pub fn reconfigure(&mut self, config: &mut Config) {
        self.configure(config);
        config.certificates = self.store();
    }

    /// The store shards should use now.
    pub fn store(&self) -> Arc<CertificateStore> {
        let issued: Vec<Arc<LoadedCertificate>> = self.certificates.values().filter_map(|c| c.served.clone()).collect();
        Arc::new(self.base.merged(&issued, self.alpn.clone()))
    }

    /// Sends the current store to every shard.
    pub fn send_store(&self, shards: &[Mailbox<ToShard>]) {
        let store = self.store();
        for shard in shards {
            let _ = shard.send(ToShard::Certificates(store.clone()));
        }
    }

    fn due(&self, certificate: &ManagedCertificate, now: Instant) -> bool {
        let Some(settings) = &self.settings else { return false };
        if certificate.in_flight || now < certificate.not_before {
            return false;
        }
        match &certificate.served {
            _ if certificate.forced => true,
            None => true,
            Some(cert) => !covers(cert, &certificate.domains) || renewal_time(cert, settings.renew_before) <= unix_now(),
        }
    }

    /// Whether any route has `certificate = "auto"`.
    pub fn has_certificates(&self) -> bool {
        !self.certificates.is_empty()
    }

    /// Removes the DNS-01 TXT records an order published and never withdrew because the
    /// appliance stopped (or crashed) mid-validation; called once at start. Only records this
    /// manager recorded as published (`stored::load_published_dns`) are removed: an
    /// `_acme-challenge` record an operator added with `shardgate dns add` stays.
    pub fn remove_leftover_challenges(&self, shards: &[Mailbox<ToShard>], dns: Option<&mut DnsZones>) {
        let leftovers = match stored::load_published_dns(self.storage.as_ref()) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ACME challenge list; leftover challenge records are kept");
                return;
            }
        };
        if leftovers.is_empty() {
            return;
        }
        if let Some(dns) = dns {
            for (name, value) in &leftovers {
                let change = challenge_record(ChangeKind::Remove, name, value);
                let present = dns.changes().iter().any(|c| {
                    c.kind == ChangeKind::Add
                        && c.rtype.eq_ignore_ascii_case("TXT")
                        && c.name.trim_end_matches('.').eq_ignore_ascii_case(name.trim_end_matches('.'))
                        && c.value == change.value
                });
                if !present {
                    continue;
                }
                if let Err(e) = dns.apply(change) {
                    tracing::warn!(%name, error = %e, "cannot remove a leftover ACME challenge TXT record");
                }
            }
            tracing::info!(records = leftovers.len(), "removed ACME challenge TXT records left by an interrupted order");
            let catalog = dns.current();
            for shard in shards {
                let _ = shard.send(ToShard::DnsCatalog(catalog.clone()));
            }
        }
        if let Err(e) = stored::save_published_dns(self.storage.as_ref(), &[]) {
            tracing::warn!(error = %e, "cannot clear the ACME challenge list");
        }
    }

    /// Every DNS-01 record published now, over all orders.
    fn published_dns(&self) -> Vec<(String, String)> {
        self.published.values().flat_map(|p| p.dns.iter().cloned()).collect()
    }

    /// Starts an order for every due certificate.
    pub fn start_due_orders(&mut self, now: Instant, tasks: &ControlAsync) {
        let Some(settings) = self.settings.clone() else { return };
        let due: Vec<String> =
            self.certificates.iter().filter(|(_, c)| self.due(c, now)).map(|(name, _)| name.clone()).collect();
        for name in due {
            let Some(certificate) = self.certificates.get_mut(&name) else { continue };
            certificate.in_flight = true;
            certificate.forced = false;
            tracing::info!(certificate = %name, names = ?certificate.domains, challenge = settings.challenge.as_str(), "ACME order started");
            let request = OrderRequest {
                certificate: name.clone(),
                domains: certificate.domains.clone(),
                settings: settings.clone(),
                storage: self.storage.clone(),
                to_control: self.to_control.clone(),
            };
            tasks.spawn(order::run(request));
        }
    }

    /// Applies one event from an order task or the admin socket.
    pub fn handle(&mut self, event: AcmeEvent, shards: &[Mailbox<ToShard>], dns: Option<&mut DnsZones>) {
        match event {
            AcmeEvent::Publish { certificate, challenge, reply } => {
                let _ = reply.send(self.publish(&certificate, challenge, shards, dns));
            }
            AcmeEvent::Withdraw { certificate } => self.withdraw(&certificate, shards, dns),
            AcmeEvent::Finished { certificate, outcome } => self.finished(&certificate, outcome, shards),
            AcmeEvent::Renew { certificate, reply } => {
                let mut started = Vec::new();
                for (name, managed) in &mut self.certificates {
                    if certificate.as_deref().is_none_or(|wanted| wanted == name) {
                        managed.forced = true;
                        managed.not_before = Instant::now();
                        started.push(name.clone());
                    }
                }
                let _ = reply.send(match (&certificate, started.is_empty()) {
                    (Some(name), true) => Err(format!("no auto certificate is named `{name}`")),
                    (None, true) => Err("no route has certificate = \"auto\"".to_string()),
                    _ => Ok(started),
                });
            }
            AcmeEvent::Status { reply } => {
                let _ = reply.send(self.status(Instant::now()));
            }
        }
    }

    fn publish(
        &mut self,
        certificate: &str,
        challenge: PublishedChallenge,
        shards: &[Mailbox<ToShard>],
        dns: Option<&mut DnsZones>,
    ) -> Result<ShardsApplied, String> {
        let published = self.published.entry(certificate.to_string()).or_default();
        match challenge {
            PublishedChallenge::Dns { name, value } => {
                let Some(dns) = dns else { return Err("dns-01 needs the [dns] server, and it is not configured".into()) };
                let change = challenge_record(ChangeKind::Add, &name, &value);
                // Recorded before it is published: a crash in between leaves at most a
                // listed record that is not there, which the next start skips.
                published.dns.push((name, value));
                let listed = self.published_dns();
                stored::save_published_dns(self.storage.as_ref(), &listed).map_err(|e| e.to_string())?;
                dns.apply(change).map_err(|e| e.to_string())?;
                let catalog = dns.current();
                for shard in shards {
                    let _ = shard.send(ToShard::DnsCatalog(catalog.clone()));
                }
            }
            PublishedChallenge::Http { token, key_authorization } => {
                self.http01 = Arc::new(self.http01.with(&token, &key_authorization));
                published.http_tokens.push(token);
                for shard in shards {
                    let _ = shard.send(ToShard::AcmeHttp01(self.http01.clone()));
                }
            }
            PublishedChallenge::TlsAlpn { domain, certificate } => {
                self.alpn.insert(domain.clone(), certificate);
                published.alpn_domains.push(domain);
                self.send_store(shards);
            }
        }
        Ok(ShardsApplied::barrier(shards))
    }

    fn withdraw(&mut self, certificate: &str, shards: &[Mailbox<ToShard>], dns: Option<&mut DnsZones>) {
        let Some(published) = self.published.remove(certificate) else { return };
        if let Some(dns) = dns {
            if !published.dns.is_empty() {
                for (name, value) in published.dns {
                    if let Err(e) = dns.apply(challenge_record(ChangeKind::Remove, &name, &value)) {
                        tracing::warn!(%name, error = %e, "cannot remove an ACME challenge TXT record");
                    }
                }
                if let Err(e) = stored::save_published_dns(self.storage.as_ref(), &self.published_dns()) {
                    tracing::warn!(error = %e, "cannot update the ACME challenge list");
                }
                let catalog = dns.current();
                for shard in shards {
                    let _ = shard.send(ToShard::DnsCatalog(catalog.clone()));
                }
            }
        }
        if !published.http_tokens.is_empty() {
            let mut set = (*self.http01).clone();
            for token in &published.http_tokens {
                set = set.without(token);
            }
            self.http01 = Arc::new(set);
            for shard in shards {
                let _ = shard.send(ToShard::AcmeHttp01(self.http01.clone()));
            }
        }
        if !published.alpn_domains.is_empty() {
            for domain in &published.alpn_domains {
                self.alpn.remove(domain);
            }
            self.send_store(shards);
        }
    }

    fn finished(&mut self, name: &str, outcome: Result<super::IssuedPem, String>, shards: &[Mailbox<ToShard>]) {
        let retry_after = self.settings.as_ref().map(|s| s.retry_after).unwrap_or(Duration::from_secs(60));
        let storage = self.storage.clone();
        let Some(certificate) = self.certificates.get_mut(name) else { return };
        certificate.in_flight = false;
        let loaded = outcome.and_then(|pem| {
            let loaded = crate::tls::store::certificate_from_pem(name, pem.chain.as_bytes(), pem.key.as_bytes())
                .map_err(|e| format!("the CA's certificate is unusable: {e}"))?;
            stored::save_certificate(storage.as_ref(), name, &pem).map_err(|e| e.to_string())?;
            Ok(loaded)
        });
        match loaded {
            Ok(loaded) => {
                tracing::info!(certificate = %name, names = ?loaded.dns_names, not_after = loaded.not_after, "ACME certificate issued, stored and served");
                certificate.served = Some(Arc::new(loaded));
                certificate.failures = 0;
                certificate.issued += 1;
                certificate.last_error = None;
                certificate.not_before = Instant::now();
                self.send_store(shards);
            }
            Err(error) => {
                certificate.failures = certificate.failures.saturating_add(1);
                let wait = retry_after.saturating_mul(1 << (certificate.failures - 1).min(16)).min(MAX_RETRY_AFTER);
                certificate.not_before = Instant::now() + wait;
                tracing::warn!(certificate = %name, error = %error, failures = certificate.failures, retry_in = ?wait, "ACME order failed; the current certificate (if any) keeps serving");
                certificate.last_error = Some(error);
            }
        }
    }

    /// Every auto certificate's state.
    pub fn status(&self, now: Instant) -> Vec<CertificateStatus> {
        let unix = unix_now();
        self.certificates
            .iter()
            .map(|(name, c)| {
                let not_after = c.served.as_ref().map(|s| s.not_after);
                let state = if c.in_flight {
                    "ordering"
                } else {
                    match not_after {
                        None => "missing",
                        Some(t) if t <= unix => "expired",
                        Some(_) => "valid",
                    }
                };
                CertificateStatus {
                    name: name.clone(),
                    domains: c.domains.clone(),
                    state: state.to_string(),
                    not_after,
                    expires_in_days: not_after.map(|t| (t - unix).div_euclid(86400)),
                    issued: c.issued,
                    failures: c.failures,
                    last_error: c.last_error.clone(),
                    next_attempt_in_secs: (c.not_before > now).then(|| c.not_before.duration_since(now).as_secs()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(valid_for: Duration) -> LoadedCertificate {
        let mut params = rcgen::CertificateParams::new(vec!["www.example.net".to_string()]).expect("params");
        let now = time_now();
        params.not_before = now;
        params.not_after = now + valid_for;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        crate::tls::store::certificate_from_pem("site", cert.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("load")
    }

    fn time_now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    fn manager(challenge: crate::config::ChallengeKind) -> (AcmeManager, crossbeam_channel::Receiver<ToControl>) {
        let mut config = Config::parse(
            r#"
            [[routes]]
            name = "site"
            match = { ports = 8443, domains = ["www.example.net"] }
            action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
            [[routes]]
            name = "http"
            match = { ports = 8080 }
            action = { type = "redirect", to = "https://{host}{path}" }
            [acme]
            directory = "https://ca.test/dir"
            retry_after = "10s"
            "#,
            "edge.toml",
        )
        .expect("config");
        if let Some(acme) = &mut config.acme {
            acme.challenge = challenge;
        }
        let (to_control, inbox) = crossbeam_channel::unbounded();
        (AcmeManager::new(&config, Arc::new(crate::storage::memory::MemoryStorage::default()), to_control), inbox)
    }

    #[test]
    fn failures_back_off_doubling_and_a_success_is_stored_and_served() {
        let (mut acme, _inbox) = manager(crate::config::ChallengeKind::Http01);
        let now = Instant::now();
        assert_eq!(acme.status(now)[0].state, "missing");
        assert!(acme.due(&acme.certificates["site"], now), "a missing certificate is due at once");
        for (failures, wait) in [(1u32, 10u64), (2, 20), (3, 40)] {
            acme.certificates.get_mut("site").expect("site").in_flight = true;
            acme.handle(AcmeEvent::Finished { certificate: "site".into(), outcome: Err("CA says no".into()) }, &[], None);
            let status = &acme.status(Instant::now())[0];
            assert_eq!(status.failures, failures);
            assert_eq!(status.last_error.as_deref(), Some("CA says no"));
            let next = status.next_attempt_in_secs.expect("scheduled");
            assert!(next <= wait && next + 2 >= wait, "after {failures} failures: {next}s, expected {wait}s");
            assert!(!acme.due(&acme.certificates["site"], Instant::now()));
        }
        let made = rcgen::generate_simple_self_signed(vec!["www.example.net".to_string()]).expect("cert");
        let pem = super::super::IssuedPem { chain: made.cert.pem(), key: made.signing_key.serialize_pem() };
        acme.handle(AcmeEvent::Finished { certificate: "site".into(), outcome: Ok(pem) }, &[], None);
        let status = &acme.status(Instant::now())[0];
        assert_eq!((status.state.as_str(), status.issued, status.failures, status.last_error.clone()), ("valid", 1, 0, None));
        assert!(acme.store().select(Some("www.example.net")).is_some(), "served from the store");
        assert!(stored::load_certificate(acme.storage.as_ref(), "site").expect("load").is_some(), "stored");
        // A forced renewal makes it due again; an unknown name is refused.
        let (reply, answer) = crossbeam_channel::bounded(1);
        acme.handle(AcmeEvent::Renew { certificate: Some("nope".into()), reply }, &[], None);
        assert!(answer.recv().expect("answer").is_err());
        let (reply, answer) = crossbeam_channel::bounded(1);
        acme.handle(AcmeEvent::Renew { certificate: None, reply }, &[], None);
        assert_eq!(answer.recv().expect("answer"), Ok(vec!["site".to_string()]));
        assert!(acme.due(&acme.certificates["site"], Instant::now()));
    }

    #[test]
    fn challenges_are_published_and_withdrawn() {
        let (mut acme, _inbox) = manager(crate::config::ChallengeKind::Http01);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let challenge = PublishedChallenge::Http { token: "tok".into(), key_authorization: "tok.thumb".into() };
        acme.handle(AcmeEvent::Publish { certificate: "site".into(), challenge, reply }, &[], None);
        assert_eq!(answer.blocking_recv().expect("answer").map(|a| a.shards()), Ok(0));
        assert_eq!(acme.http01.answer("/.well-known/acme-challenge/tok"), Some("tok.thumb"));
        let key = super::super::tls_alpn::challenge_certificate("www.example.net", &[1; 32]).expect("alpn cert");
        let (reply, answer) = tokio::sync::oneshot::channel();
        let challenge = PublishedChallenge::TlsAlpn { domain: "www.example.net".into(), certificate: key };
        acme.handle(AcmeEvent::Publish { certificate: "site".into(), challenge, reply }, &[], None);
        assert_eq!(answer.blocking_recv().expect("answer").map(|a| a.shards()), Ok(0));
        assert!(acme.store().alpn_challenge("WWW.example.net.").is_some());
        // DNS-01 without a DNS server is refused with a reason.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let challenge = PublishedChallenge::Dns { name: "_acme-challenge.www.example.net".into(), value: "v".into() };
        acme.handle(AcmeEvent::Publish { certificate: "site".into(), challenge, reply }, &[], None);
        assert!(answer.blocking_recv().expect("answer").is_err_and(|e| e.contains("[dns]")));
        acme.handle(AcmeEvent::Withdraw { certificate: "site".into() }, &[], None);
        assert!(acme.http01.is_empty());
        assert!(acme.store().alpn_challenge("www.example.net").is_none());
    }

    #[test]
    fn dns01_records_go_into_our_zones_and_leftovers_are_removed_at_start() {
        let config = Config::parse(
            r#"
            [[routes]]
            name = "site"
            match = { ports = 8443, domains = ["www.example.net", "*.example.net"] }
            action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
            [acme]
            directory = "https://ca.test/dir"
            challenge = "dns-01"
            [dns]
            udp = ["127.0.0.1:5300"]
            [[dns.zones]]
            origin = "example.net."
            soa = { mname = "ns1", rname = "hostmaster", serial = 1 }
            records = [{ name = "@", type = "NS", value = "ns1" }, { name = "ns1", type = "A", value = "127.0.0.1" }]
            "#,
            "edge.toml",
        )
        .expect("config");
        let dir = tempfile::tempdir().expect("dir");
        let zone_storage: Arc<dyn Storage> = Arc::new(crate::storage::memory::MemoryStorage::default());
        let mut zones = DnsZones::open(zone_storage.clone(), dir.path(), config.dns_catalog.clone().expect("catalog"));
        let (to_control, _inbox) = crossbeam_channel::unbounded();
        let mut acme = AcmeManager::new(&config, Arc::new(crate::storage::memory::MemoryStorage::default()), to_control);
        // The wildcard and the base name share one owner name: two TXT values at once.
        for value in ["for-www", "for-wildcard"] {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let challenge = PublishedChallenge::Dns { name: "_acme-challenge.example.net".into(), value: value.into() };
            acme.handle(AcmeEvent::Publish { certificate: "site".into(), challenge, reply }, &[], Some(&mut zones));
            assert_eq!(answer.blocking_recv().expect("answer").map(|a| a.shards()), Ok(0));
        }
        assert_eq!(zones.changes().len(), 2);
        acme.handle(AcmeEvent::Withdraw { certificate: "site".into() }, &[], Some(&mut zones));
        assert!(zones.changes().is_empty(), "{:?}", zones.changes());
        // An operator's own `_acme-challenge` record (shardgate dns add) survives a restart.
        let operator = DnsChange {
            kind: ChangeKind::Add,
            name: "_acme-challenge.www.example.net".into(),
            rtype: "TXT".into(),
            value: Some("\"operator\"".into()),
            ttl: Some(5),
        };
        zones.apply(operator).expect("add");
        // An order interrupted mid-validation leaves its record behind (persisted).
        let (reply, _answer) = tokio::sync::oneshot::channel();
        let challenge = PublishedChallenge::Dns { name: "_acme-challenge.example.net".into(), value: "stale".into() };
        acme.handle(AcmeEvent::Publish { certificate: "site".into(), challenge, reply }, &[], Some(&mut zones));
        assert_eq!(zones.changes().len(), 2);
        let storage = acme.storage.clone();
        drop(acme);
        let mut reopened = DnsZones::open(zone_storage, dir.path(), config.dns_catalog.clone().expect("catalog"));
        assert_eq!(reopened.changes().len(), 2);
        let (to_control, _inbox) = crossbeam_channel::unbounded();
        let restarted = AcmeManager::new(&config, storage.clone(), to_control);
        restarted.remove_leftover_challenges(&[], Some(&mut reopened));
        let left: Vec<_> = reopened.changes().iter().map(|c| c.value.clone().unwrap_or_default()).collect();
        assert_eq!(left, ["\"operator\""], "only the order's record is removed");
        assert!(stored::load_published_dns(storage.as_ref()).expect("list").is_empty());
        // A second start has nothing more to remove.
        restarted.remove_leftover_challenges(&[], Some(&mut reopened));
        assert_eq!(reopened.changes().len(), 1);
    }

    #[test]
    fn long_certificates_renew_ahead_of_expiry_short_ones_after_two_thirds() {
        let thirty_days = Duration::from_secs(30 * 86400);
        let long = certificate(Duration::from_secs(90 * 86400));
        assert!((renewal_time(&long, thirty_days) - (long.not_after - 30 * 86400)).abs() <= 1);
        let short = certificate(Duration::from_secs(300));
        let at = renewal_time(&short, thirty_days);
        assert!((at - (short.not_after - 100)).abs() <= 2, "{at} vs {}", short.not_after);
        assert!(covers(&long, &["www.example.net".to_string()]));
        assert!(!covers(&long, &["www.example.net".to_string(), "*.example.net".to_string()]));
    }
}
