//! The control core: the one thread that owns slow, stateful work.
//!
//! Today it owns config generations (load, check, hot-apply on SIGHUP, refuse a bad one and
//! keep serving the old), the listening sockets, TCP and UDP (opened here in shard order,
//! handed to shards; ports that stay are never closed and re-opened), the RADIUS policy
//! (compiled once per generation, shared read-only by the shards), the RADIUS accounting
//! session table ([`SessionStore`]: fed by the shards' accounting records, expired and
//! persisted each tick when changed, and at stop), the DNS zones ([`DnsZones`]: configured
//! zones plus the dynamic records added through the admin socket, persisted, sent to every
//! shard as one new catalog per change), stats merging (each shard's latest
//! snapshot and its latency histograms → `<data_dir>/stats.json` and the admin API's feed),
//! config replacement from the admin API (`ToControl::ReplaceConfig`: the reload path, then
//! the file rewritten atomically), the mail delivery engine and its admin operations
//! (`crate::mail::delivery::service`), the SMTP listeners and the durable mail queue
//! (`crate::mail::queue`: opened and recovered at start or when `[email]` first appears, its
//! writer thread answering the shards), and the graceful stop. Later issues add DKIM keys here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::doorbell::Mailbox;
use super::messages::{ShardSnapshot, ToControl, ToShard};
use shardgate_radius::policy::Policy as RadiusPolicy;

use crate::config::{Config, ConfigErrors};
use crate::net::{open_listener_group, open_udp_group, UdpService};
use crate::dns::dynamic::{DnsChange, DnsChangeError, DnsUpdated, DnsZones};
use crate::radius::session_store::SessionStore;
use crate::route::RouteTable;
use crate::stats::{MergedStats, ShardStats};

/// Where the running config comes from, so a reload reads the same place again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// The embedded default.
    Embedded,
}

impl ConfigSource {
    /// Loads and checks the config from this source.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        self.load_with_text().map(|(config, _)| config)
    }

    /// Loads and checks the config, and returns the text it was read from.
    pub fn load_with_text(&self) -> Result<(Config, String), ConfigErrors> {
        match self {
            ConfigSource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Config::parse(&text, &self.name()).map(|config| (config, text)),
                // Config::load reports the unreadable file.
                Err(_) => Config::load(path).map(|config| (config, String::new())),
            },
            ConfigSource::Embedded => Config::embedded_default().map(|config| (config, crate::config::EMBEDDED_DEFAULT.to_string())),
        }
    }

    /// The text of the config as it reads now (empty if the file cannot be read).
    pub fn text(&self) -> String {
        match self {
            ConfigSource::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
            ConfigSource::Embedded => crate::config::EMBEDDED_DEFAULT.to_string(),
        }
    }

    /// The name problems are reported under (the path, or the embedded default's name).
    pub fn name(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => crate::config::EMBEDDED_DEFAULT_NAME.to_string(),
        }
    }

    /// The file a replaced config is persisted to.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(path) => Some(path),
            ConfigSource::Embedded => None,
        }
    }
}

/// Every address:port the config listens on.
pub fn listen_addresses(config: &Config) -> BTreeSet<SocketAddr> {
    let ports = config.route_ports();
    config
        .proxy
        .listen
        .iter()
        .flat_map(|ip| ports.iter().map(move |p| SocketAddr::new(*ip, *p)))
        .collect()
}

/// Opens a reuseport group (one socket per shard CPU, in shard order) for each address;
/// returns, per shard, its sockets. With `steer`, each group gets the CPU-steering program.
pub fn open_groups(
    addrs: &BTreeSet<SocketAddr>,
    shard_cpus: &[usize],
    steer: bool,
) -> Result<Vec<Vec<(SocketAddr, socket2::Socket)>>, (SocketAddr, std::io::Error)> {
    let mut per_shard: Vec<Vec<(SocketAddr, socket2::Socket)>> = shard_cpus.iter().map(|_| Vec::new()).collect();
    for addr in addrs {
        let group = open_listener_group(*addr, shard_cpus.len()).map_err(|e| (*addr, e))?;
        if steer {
            if let Some(first) = group.first() {
                use std::os::fd::AsRawFd;
                shardgate_tuning::attach_reuseport_cpu_steering(first.as_raw_fd(), shard_cpus)
                    .map_err(|e| (*addr, std::io::Error::other(format!("reuseport CPU steering: {e}"))))?;
            }
        }
        for (i, socket) in group.into_iter().enumerate() {
            per_shard[i].push((*addr, socket));
        }
    }
    Ok(per_shard)
}

/// Every UDP address:port the config serves, and what is served there.
pub fn udp_listen_addresses(config: &Config) -> BTreeMap<SocketAddr, UdpService> {
    let mut addresses = BTreeMap::new();
    if let Some(radius) = &config.radius {
        for ip in &radius.listen {
            addresses.insert(SocketAddr::new(*ip, radius.auth_port), UdpService::RadiusAuth);
            addresses.insert(SocketAddr::new(*ip, radius.acct_port), UdpService::RadiusAcct);
        }
    }
    if let Some(dns) = &config.dns {
        for addr in &dns.udp {
            addresses.insert(*addr, UdpService::Dns);
        }
    }
    addresses
}

/// Every DNS TCP address:port the config serves (opened as reuseport groups like route ports,
/// but accepted by the shards' DNS service).
pub fn dns_tcp_listen_addresses(config: &Config) -> BTreeSet<SocketAddr> {
    config.dns.as_ref().map(|dns| dns.tcp.iter().copied().collect()).unwrap_or_default()
}

/// Every SMTP address:port the config serves, and the kind of port it is.
pub fn smtp_listen_addresses(config: &Config) -> BTreeMap<SocketAddr, shardgate_smtp::ListenerKind> {
    config.email.as_ref().map(|email| email.listen_addresses()).unwrap_or_default()
}

/// Per shard, its SMTP sockets with their kind.
pub type SmtpSockets = Vec<Vec<(SocketAddr, shardgate_smtp::ListenerKind, socket2::Socket)>>;

/// Opens a TCP reuseport group per SMTP address (like route ports); returns, per shard, its
/// sockets with the kind of port.
pub fn open_smtp_groups(
    addrs: &BTreeMap<SocketAddr, shardgate_smtp::ListenerKind>,
    shard_cpus: &[usize],
    steer: bool,
) -> Result<SmtpSockets, (SocketAddr, std::io::Error)> {
    let keys: BTreeSet<SocketAddr> = addrs.keys().copied().collect();
    let groups = open_groups(&keys, shard_cpus, steer)?;
    Ok(groups
        .into_iter()
        .map(|sockets| {
            sockets
                .into_iter()
                .filter_map(|(addr, socket)| addrs.get(&addr).map(|kind| (addr, *kind, socket)))
                .collect()
        })
        .collect())
}

/// Opens and recovers the mail queue under the data folder (`<data_dir>/mail/queue`); the
/// writer is started separately, once the shards' mailboxes exist.
pub fn open_mail_queue(data_dir: &Path) -> std::io::Result<crate::mail::queue::MailQueue> {
    let dir = crate::config::EmailSettings::mail_dir(data_dir).join("queue");
    let started = Instant::now();
    let (queue, report) = crate::mail::queue::MailQueue::open(&dir)?;
    tracing::info!(
        dir = %dir.display(),
        messages = report.messages,
        records = report.records,
        truncated_tail = report.truncated_tail,
        orphan_spool_files = report.orphan_spool_files,
        missing_spool_files = report.missing_spool_files,
        spool_listed = report.spool_listed,
        upgraded_from_json = report.upgraded_from_json,
        compacted = report.compacted,
        took = ?started.elapsed(),
        "mail queue recovered"
    );
    Ok(queue)
}

/// Per shard, its UDP sockets: one reuseport group per address, opened in shard order.
pub type UdpSockets = Vec<Vec<(SocketAddr, UdpService, socket2::Socket)>>;

/// Opens a UDP reuseport group (one socket per shard, in shard order) for each address;
/// returns, per shard, its sockets. All or none: the first address that cannot be bound is
/// returned with its error.
pub fn open_udp_groups(
    addrs: &BTreeMap<SocketAddr, UdpService>,
    shard_count: usize,
) -> Result<UdpSockets, (SocketAddr, std::io::Error)> {
    let mut per_shard: UdpSockets = (0..shard_count).map(|_| Vec::new()).collect();
    for (addr, service) in addrs {
        let group = open_udp_group(*addr, shard_count).map_err(|e| (*addr, e))?;
        for (i, socket) in group.into_iter().enumerate() {
            per_shard[i].push((*addr, *service, socket));
        }
    }
    Ok(per_shard)
}

/// The config's `[radius]` section compiled for the shards (`None` without one). A loaded
/// config was already compiled once by validation, so an error here is not expected.
pub fn compile_radius_policy(config: &Config) -> Result<Option<Arc<RadiusPolicy>>, shardgate_radius::RadiusError> {
    config.radius.as_ref().map(|radius| RadiusPolicy::from_config(radius).map(Arc::new)).transpose()
}

/// The control core's state.
pub struct ControlCore {
    source: ConfigSource,
    config: Arc<Config>,
    generation: u64,
    shards: Vec<Mailbox<ToShard>>,
    inbox: Receiver<ToControl>,
    listening: BTreeSet<SocketAddr>,
    udp_listening: BTreeMap<SocketAddr, UdpService>,
    radius_sessions: Option<SessionStore>,
    /// The storage layer (RADIUS sessions, dynamic DNS records, ACME state).
    storage: Arc<dyn crate::storage::Storage>,
    /// The DNS zones (configured + dynamic records); `None` without `[dns]`.
    dns: Option<DnsZones>,
    dns_tcp_listening: BTreeSet<SocketAddr>,
    smtp_listening: BTreeMap<SocketAddr, shardgate_smtp::ListenerKind>,
    /// The durable mail queue and its writer thread (`None` until a generation has `[email]`).
    mail_queue: Option<crate::mail::queue::MailQueue>,
    /// Delivery of what is queued, and the mail admin operations (started with the queue).
    delivery: Option<crate::mail::delivery::service::MailService>,
    latest: BTreeMap<usize, ShardStats>,
    /// Latency histograms folded from the shards' reports.
    latency: crate::latency::LatencyBook,
    /// The control core's tokio runtime (ACME, delivery, admin API); stopped when the control
    /// core ends.
    async_tasks: super::control_async::ControlAsync,
    stats_path: PathBuf,
    /// ACME auto certificates (see `crate::acme::manager`).
    acme: Option<crate::acme::manager::AcmeManager>,
    /// TLS session-ticket keys: rotated here, sent to every shard (`crate::tls::tickets`).
    tickets: Option<crate::tls::tickets::TicketKeyRotation>,
    /// What the admin API reads (stats, running config); `None` when not wired.
    admin_feed: Option<crate::admin_api::feed::AdminFeed>,
    /// The text of the config in force (for the admin API and config replacement).
    config_text: String,
    /// DKIM keys, their rotation and DNS records (`[[email.domains]]`, `crate::mail::dkim`).
    dkim: Option<crate::mail::dkim::service::DkimService>,
    /// Inbound SPF/DKIM/ARC/DMARC checks (`[email.auth]`, `crate::mail::auth::service`).
    inbound_auth: Option<crate::mail::auth::service::InboundAuthService>,
    /// DNS blocklist lookups for connecting clients (`[email.dnsbl]`, `crate::mail::dnsbl`).
    dnsbl: Option<crate::mail::dnsbl::DnsblService>,
    stopping: Option<Instant>,
    stopped: BTreeSet<usize>,
}

impl ControlCore {
    /// A control core for shards already sent generation 1 of `config`.
    pub fn new(
        source: ConfigSource,
        config: Arc<Config>,
        shards: Vec<Mailbox<ToShard>>,
        inbox: Receiver<ToControl>,
        listening: BTreeSet<SocketAddr>,
        udp_listening: BTreeMap<SocketAddr, UdpService>,
        async_tasks: super::control_async::ControlAsync,
        storage: Arc<dyn crate::storage::Storage>,
    ) -> ControlCore {
        let stats_path = config.runtime.data_dir.join("stats.json");
        let radius_sessions = config.radius.as_ref().map(|radius| {
            SessionStore::open(
                storage.clone(),
                &config.runtime.data_dir,
                Duration::from_secs(radius.session_stale_timeout_secs),
                Instant::now(),
            )
        });
        let dkim = crate::mail::dkim::service::DkimService::open(&config);
        let inbound_auth = config
            .mail_auth
            .inbound
            .as_ref()
            .and_then(|settings| crate::mail::auth::service::InboundAuthService::start(settings, &async_tasks));
        let dnsbl = config.mail_auth.dnsbl.as_ref().map(|settings| {
            let fallback = config.mail_auth.inbound.as_ref().and_then(|auth| auth.resolver);
            crate::mail::dnsbl::DnsblService::start(settings, fallback, &async_tasks)
        });
        ControlCore {
            dkim,
            inbound_auth,
            dnsbl,
            source,
            config,
            generation: 1,
            shards,
            inbox,
            listening,
            udp_listening,
            radius_sessions,
            storage,
            dns: None,
            dns_tcp_listening: BTreeSet::new(),
            smtp_listening: BTreeMap::new(),
            mail_queue: None,
            delivery: None,
            latest: BTreeMap::new(),
            latency: crate::latency::LatencyBook::default(),
            async_tasks,
            stats_path,
            acme: None,
            tickets: None,
            admin_feed: None,
            config_text: String::new(),
            stopping: None,
            stopped: BTreeSet::new(),
        }
    }

    /// Hands the control core the DNS zones generation 1 was sent (see [`DnsZones::open`]) and
    /// the DNS TCP addresses it listens on.
    pub fn with_dns(mut self, dns: Option<DnsZones>, tcp_listening: BTreeSet<SocketAddr>) -> ControlCore {
        self.dns = dns;
        self.dns_tcp_listening = tcp_listening;
        self
    }

    /// Hands the control core the admin API's feed and the text of generation 1.
    pub fn with_admin_feed(mut self, feed: crate::admin_api::feed::AdminFeed, config_text: String) -> ControlCore {
        self.admin_feed = Some(feed);
        self.config_text = config_text;
        self
    }

    /// Hands the control core the mail queue (writer started) and the SMTP addresses
    /// generation 1 listens on.
    pub fn with_mail(
        mut self,
        queue: Option<crate::mail::queue::MailQueue>,
        listening: BTreeMap<SocketAddr, shardgate_smtp::ListenerKind>,
    ) -> ControlCore {
        self.mail_queue = queue;
        self.smtp_listening = listening;
        self.start_delivery();
        self
    }

    /// Starts the delivery engine once there is a queue and `[email]`; on later generations
    /// hands it the new routes and templates.
    fn start_delivery(&mut self) {
        match (&self.delivery, &self.mail_queue) {
            (Some(delivery), _) => delivery.reconfigure(&self.config),
            (None, Some(queue)) => {
                self.delivery = crate::mail::delivery::service::MailService::start(queue.handle(), &self.config, &self.async_tasks);
            }
            (None, None) => {}
        }
        // DKIM: keys for the domains of this generation; the delivery engine signs with them.
        match (&mut self.dkim, self.config.mail_auth.domains.is_empty()) {
            (Some(dkim), false) => dkim.reconfigure(&self.config),
            (Some(_), true) => self.dkim = None,
            (None, false) => self.dkim = crate::mail::dkim::service::DkimService::open(&self.config),
            (None, true) => {}
        }
        if let Some(delivery) = &self.delivery {
            delivery.set_dkim(self.dkim.as_ref().map(|dkim| dkim.table()));
        }
        // Inbound checks: a new resolver when `[email.auth]` changed.
        let wanted = self.config.mail_auth.inbound.as_ref();
        if self.inbound_auth.as_ref().map(|service| service.settings()) != wanted {
            self.inbound_auth =
                wanted.and_then(|settings| crate::mail::auth::service::InboundAuthService::start(settings, &self.async_tasks));
        }
        // DNS blocklists: a new service (and an empty cache) when `[email.dnsbl]` changed.
        let wanted = self.config.mail_auth.dnsbl.as_ref();
        let fallback = self.config.mail_auth.inbound.as_ref().and_then(|auth| auth.resolver);
        let current = match (&self.dnsbl, wanted) {
            (Some(service), Some(settings)) => service.is_for(settings, fallback),
            (None, None) => true,
            _ => false,
        };
        if !current {
            self.dnsbl = wanted.map(|settings| crate::mail::dnsbl::DnsblService::start(settings, fallback, &self.async_tasks));
        }
        self.dkim_tick();
    }

    /// The mail queue's API (for the delivery engine), once `[email]` is configured.
    pub fn mail_queue(&self) -> Option<crate::mail::queue::QueueHandle> {
        self.mail_queue.as_ref().map(|queue| queue.handle())
    }

    /// Hands the control core the ACME manager (its store was already in generation 1).
    pub fn with_acme(mut self, acme: crate::acme::manager::AcmeManager) -> ControlCore {
        acme.remove_leftover_challenges(&self.shards, self.dns.as_mut());
        self.acme = Some(acme);
        self
    }

    /// Hands the control core the ticket-key rotation whose first keys generation 1 was sent.
    pub fn with_tickets(mut self, tickets: crate::tls::tickets::TicketKeyRotation) -> ControlCore {
        self.tickets = Some(tickets);
        self
    }

    /// Runs the DKIM key steps that are due; sends the catalog out when our zones changed.
    fn dkim_tick(&mut self) {
        let Some(dkim) = &mut self.dkim else { return };
        if dkim.tick(Instant::now(), self.dns.as_mut()) {
            if let Some(dns) = &self.dns {
                let catalog = dns.current();
                for shard in &self.shards {
                    let _ = shard.send(ToShard::DnsCatalog(catalog.clone()));
                }
            }
        }
    }

    /// Applies one dynamic DNS change and sends the new catalog to every shard.
    fn dns_update(&mut self, change: DnsChange) -> Result<DnsUpdated, String> {
        let Some(dns) = &mut self.dns else { return Err(DnsChangeError::NoDns.to_string()) };
        let described = format!("{:?} {} {}", change.kind, change.name, change.rtype);
        let updated = dns.apply(change).map_err(|e| {
            tracing::warn!(change = %described, error = %e, "dynamic DNS change refused");
            e.to_string()
        })?;
        let catalog = dns.current();
        for shard in &self.shards {
            let _ = shard.send(ToShard::DnsCatalog(catalog.clone()));
        }
        tracing::info!(change = %described, zone = %updated.zone, serial = updated.serial, "dynamic DNS change applied");
        Ok(updated)
    }

    /// Runs until every shard has stopped.
    pub fn run(mut self) {
        // The admin API sees the mail queue (handed over after the feed was made) from now on.
        self.publish_config();
        let mut dirty = false;
        let mut next_write = Instant::now() + Duration::from_secs(1);
        while self.stopped.len() < self.shards.len() {
            let wait = next_write.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(ToControl::Stats(mut stats)) => {
                    self.latency.add(stats.shard, &std::mem::take(&mut stats.latency_interval));
                    self.latest.insert(stats.shard, stats);
                    dirty = true;
                }
                Ok(ToControl::RadiusAccounting(event)) => {
                    // A store exists whenever a generation had `[radius]` (created at start or
                    // by the reload that added the section), so no record is lost.
                    if let Some(store) = &mut self.radius_sessions {
                        store.apply(&event, Instant::now());
                    }
                }
                Ok(ToControl::DnsUpdate { change, reply }) => match self.dns_update(change) {
                    // Answered once every shard has applied the new catalog (a barrier behind
                    // it in each mailbox), so "added" means "served by every shard".
                    Ok(updated) => {
                        let applied = crate::acme::ShardsApplied::barrier(&self.shards);
                        self.async_tasks.spawn(async move {
                            applied.wait(Duration::from_secs(5)).await;
                            let _ = reply.send(Ok(updated));
                        });
                    }
                    Err(refused) => {
                        let _ = reply.send(Err(refused));
                    }
                },
                Ok(ToControl::Acme(event)) => {
                    if let Some(acme) = &mut self.acme {
                        acme.handle(event, &self.shards, self.dns.as_mut());
                    }
                }
                Ok(ToControl::Mail { request, reply }) => {
                    // Without mail the reply channel is dropped: the admin side says so.
                    if let Some(delivery) = &self.delivery {
                        delivery.answer(request, reply, &self.async_tasks);
                    }
                }
                Ok(ToControl::MailAuth(request)) => {
                    let shard = self.shards.get(request.shard).cloned();
                    match (&self.inbound_auth, shard) {
                        (Some(service), Some(shard)) => service.check(*request, &self.async_tasks, shard),
                        // No `[email.auth]` (or switched off by a reload meanwhile): scan only.
                        (None, Some(shard)) => crate::mail::auth::service::scan_only(*request, &self.async_tasks, shard),
                        (_, None) => {}
                    }
                }
                Ok(ToControl::Dnsbl { shard, ticket, ip }) => {
                    if let Some(mailbox) = self.shards.get(shard).cloned() {
                        match &self.dnsbl {
                            Some(service) => service.check(ticket, ip, &self.async_tasks, mailbox),
                            // Switched off by a reload meanwhile: the client is served.
                            None => {
                                let verdict = crate::mail::dnsbl::DnsblVerdict::Unknown;
                                let _ = mailbox.send(ToShard::DnsblChecked { ticket, ip, verdict });
                            }
                        }
                    }
                }
                Ok(ToControl::ShardStopped(index)) => {
                    self.stopped.insert(index);
                }
                Ok(ToControl::ReplaceConfig(change)) => {
                    let outcome = if self.stopping.is_some() {
                        crate::admin_api::feed::ConfigChangeOutcome::Refused { problems: vec!["the appliance is stopping".into()] }
                    } else {
                        self.replace_config(&change.text, &change.user)
                    };
                    let _ = change.reply.send(outcome);
                }
                Ok(ToControl::Reload) => {
                    if self.stopping.is_none() {
                        self.reload();
                    }
                }
                Ok(ToControl::Stop) => self.stop(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_write {
                if let (Some(acme), None) = (&mut self.acme, self.stopping) {
                    acme.start_due_orders(Instant::now(), &self.async_tasks);
                    // Certificate state (countdowns, orders in flight) changes without messages.
                    dirty |= acme.has_certificates();
                }
                self.dkim_tick();
                if let Some(store) = &mut self.radius_sessions {
                    let now = Instant::now();
                    store.expire(now);
                    store.persist_if_changed(now);
                }
                if let Some(keys) = self.tickets.as_mut().and_then(|t| t.due(Instant::now())) {
                    for shard in &self.shards {
                        let _ = shard.send(ToShard::TicketKeys(keys.clone()));
                    }
                }
                if dirty {
                    self.write_stats();
                    dirty = false;
                }
                next_write = Instant::now() + Duration::from_secs(1);
            }
        }
        self.write_stats();
        if let Some(store) = &mut self.radius_sessions {
            store.persist_if_changed(Instant::now());
        }
        // Let deliveries in progress record their outcomes, then (the shards no longer
        // enqueue) commit what is pending and stop the queue writer.
        if let Some(delivery) = self.delivery.take() {
            delivery.stop();
        }
        // Every shard reported `ShardStopped` (the loop only ends early when the inbox is
        // gone): each removed the spool files of messages it did not hand over, so the
        // journal can be marked clean and the next start skips listing the spool folder.
        let every_shard_stopped = self.stopped.len() >= self.shards.len();
        if let Some(queue) = &mut self.mail_queue {
            if every_shard_stopped {
                queue.stop_clean();
            } else {
                queue.stop();
            }
        }
        tracing::info!("all shards stopped");
    }

    fn stop(&mut self) {
        let deadline = match self.stopping {
            // A second signal during the drain: stop now.
            Some(_) => Instant::now(),
            None => Instant::now() + self.config.runtime.drain_timeout,
        };
        self.stopping = Some(deadline);
        tracing::info!(drain_timeout = ?deadline.saturating_duration_since(Instant::now()), "stopping: no new connections, draining open ones");
        for shard in &self.shards {
            let _ = shard.send(ToShard::Stop { deadline });
        }
    }

    fn reload(&mut self) {
        let (new, text) = match self.source.load_with_text() {
            Ok(loaded) => loaded,
            Err(errors) => {
                tracing::error!(generation = self.generation, "reload refused, the running config keeps serving:\n{errors}");
                return;
            }
        };
        if let Err(reason) = self.apply(new, text) {
            tracing::error!(generation = self.generation, "reload refused: {reason}; the running config keeps serving");
        }
    }

    /// Replaces the config with `text` (admin API): checked and applied like a reload, then
    /// written to the config file through a temporary file and a rename.
    fn replace_config(&mut self, text: &str, user: &str) -> crate::admin_api::feed::ConfigChangeOutcome {
        use crate::admin_api::feed::ConfigChangeOutcome;
        let new = match Config::parse(text, &self.source.name()) {
            Ok(config) => config,
            Err(errors) => {
                tracing::warn!(target: "shardgate::audit", user, problems = errors.problems.len(), "config change through the admin API refused:\n{errors}");
                return ConfigChangeOutcome::Refused { problems: errors.problems.iter().map(ToString::to_string).collect() };
            }
        };
        if let Err(reason) = self.apply(new, text.to_string()) {
            tracing::warn!(target: "shardgate::audit", user, "config change through the admin API refused: {reason}");
            return ConfigChangeOutcome::Refused { problems: vec![reason] };
        }
        let (persisted, persist_error) = match self.source.path() {
            None => (false, None),
            Some(path) => match write_atomically(path, text.as_bytes()) {
                Ok(()) => (true, None),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "the applied config could not be written to its file");
                    (false, Some(format!("{}: {e}", path.display())))
                }
            },
        };
        tracing::info!(target: "shardgate::audit", user, generation = self.generation, persisted, "config replaced through the admin API");
        ConfigChangeOutcome::Applied { generation: self.generation, persisted, persist_error }
    }

    /// Hot-applies a checked config: opens and closes listeners, sends every shard the new
    /// generation. `Err` (a listener that cannot be opened): nothing changed.
    fn apply(&mut self, new: Config, text: String) -> Result<(), String> {
        if new.runtime.layout != self.config.runtime.layout {
            tracing::warn!("runtime.shards/control_cpu changed: that takes a restart; keeping the running layout");
        }
        if new.runtime.data_dir != self.config.runtime.data_dir {
            tracing::warn!("runtime.data_dir changed: that takes a restart; keeping {}", self.config.runtime.data_dir.display());
        }
        let wanted = listen_addresses(&new);
        let to_open: BTreeSet<SocketAddr> = wanted.difference(&self.listening).copied().collect();
        let to_close: Vec<SocketAddr> = self.listening.difference(&wanted).copied().collect();
        let udp_wanted = udp_listen_addresses(&new);
        // An address whose service changed (auth ⇄ acct port swap) is closed and re-opened.
        let udp_to_open: BTreeMap<SocketAddr, UdpService> = udp_wanted
            .iter()
            .filter(|(addr, service)| self.udp_listening.get(addr) != Some(service))
            .map(|(addr, service)| (*addr, *service))
            .collect();
        let udp_to_close: Vec<SocketAddr> = self
            .udp_listening
            .iter()
            .filter(|(addr, service)| udp_wanted.get(addr) != Some(service))
            .map(|(addr, _)| *addr)
            .collect();
        let radius = compile_radius_policy(&new).map_err(|e| e.to_string())?;
        let dns_tcp_wanted = dns_tcp_listen_addresses(&new);
        let dns_tcp_to_open: BTreeSet<SocketAddr> = dns_tcp_wanted.difference(&self.dns_tcp_listening).copied().collect();
        let dns_tcp_to_close: Vec<SocketAddr> = self.dns_tcp_listening.difference(&dns_tcp_wanted).copied().collect();
        let smtp_wanted = smtp_listen_addresses(&new);
        // An address whose kind changed (smtp ⇄ submission) is closed and re-opened.
        let smtp_to_open: BTreeMap<SocketAddr, shardgate_smtp::ListenerKind> = smtp_wanted
            .iter()
            .filter(|(addr, kind)| self.smtp_listening.get(addr) != Some(kind))
            .map(|(addr, kind)| (*addr, *kind))
            .collect();
        let smtp_to_close: Vec<SocketAddr> = self
            .smtp_listening
            .iter()
            .filter(|(addr, kind)| smtp_wanted.get(addr) != Some(kind))
            .map(|(addr, _)| *addr)
            .collect();
        let layout = &self.config.runtime.layout;
        // A kind change re-binds the address while the old sockets are still open (they share
        // the reuseport group until the shards close them, as UDP services do).
        let mut smtp_opened = open_smtp_groups(&smtp_to_open, &layout.shard_cpus, new.tuning.steer_connections)
            .map_err(|(addr, e)| format!("cannot listen on SMTP {addr}: {e}"))?;
        let mut dns_tcp_opened = open_groups(&dns_tcp_to_open, &layout.shard_cpus, new.tuning.steer_connections)
            .map_err(|(addr, e)| format!("cannot listen on DNS TCP {addr}: {e}"))?;
        let mut opened = open_groups(&to_open, &layout.shard_cpus, new.tuning.steer_connections)
            .map_err(|(addr, e)| format!("cannot listen on {addr}: {e}"))?;
        let mut udp_opened =
            open_udp_groups(&udp_to_open, layout.shard_cpus.len()).map_err(|(addr, e)| format!("cannot listen on UDP {addr}: {e}"))?;
        // Every listener is open: from here on the reload goes through.
        if new.email.is_some() && self.mail_queue.is_none() {
            match open_mail_queue(&self.config.runtime.data_dir) {
                Ok(mut queue) => match queue.start(self.shards.clone()) {
                    Ok(()) => self.mail_queue = Some(queue),
                    Err(e) => tracing::error!(error = %e, "cannot start the mail queue writer; mail is answered 451"),
                },
                Err(e) => tracing::error!(error = %e, "cannot open the mail queue; mail is answered 451"),
            }
        }
        let mail_link = self.mail_queue.as_ref().map(|queue| queue.link());
        if let (Some(store), Some(policy)) = (&mut self.radius_sessions, &radius) {
            store.set_stale_timeout(policy.session_stale_timeout);
        }
        if self.radius_sessions.is_none() {
            if let Some(policy) = &radius {
                self.radius_sessions =
                    Some(SessionStore::open(self.storage.clone(), &self.config.runtime.data_dir, policy.session_stale_timeout, Instant::now()));
            }
        }
        // The zone files were re-read by the config load; the dynamic records go on top again.
        match (&mut self.dns, &new.dns_catalog) {
            (Some(dns), Some(base)) => dns.rebase(base.clone()),
            (None, Some(base)) => {
                self.dns = Some(DnsZones::open(self.storage.clone(), &self.config.runtime.data_dir, base.clone()))
            }
            (_, None) => self.dns = None,
        }
        let dns_catalog = self.dns.as_ref().map(DnsZones::current);
        self.generation += 1;
        let mut new = new;
        if let Some(acme) = &mut self.acme {
            acme.reconfigure(&mut new);
        }
        let config = Arc::new(new);
        let routes = Arc::new(RouteTable::new(&config));
        for (i, shard) in self.shards.iter().enumerate() {
            let snapshot = ShardSnapshot {
                generation: self.generation,
                config: config.clone(),
                routes: routes.clone(),
                open: std::mem::take(&mut opened[i]),
                close: to_close.clone(),
                udp_open: std::mem::take(&mut udp_opened[i]),
                udp_close: udp_to_close.clone(),
                radius: radius.clone(),
                dns_catalog: dns_catalog.clone(),
                dns_tcp_open: std::mem::take(&mut dns_tcp_opened[i]),
                dns_tcp_close: dns_tcp_to_close.clone(),
                smtp_open: std::mem::take(&mut smtp_opened[i]),
                smtp_close: smtp_to_close.clone(),
                mail_queue: mail_link.clone(),
            };
            let _ = shard.send(ToShard::Apply(snapshot));
        }
        tracing::info!(
            generation = self.generation,
            opened = ?to_open,
            closed = ?to_close,
            udp_opened = ?udp_to_open.keys().collect::<Vec<_>>(),
            udp_closed = ?udp_to_close,
            dns_tcp_opened = ?dns_tcp_to_open,
            dns_tcp_closed = ?dns_tcp_to_close,
            smtp_opened = ?smtp_to_open.keys().collect::<Vec<_>>(),
            smtp_closed = ?smtp_to_close,
            routes = config.routes.len(),
            "reload applied: new connections use the new routes"
        );
        self.listening = wanted;
        self.udp_listening = udp_wanted;
        self.dns_tcp_listening = dns_tcp_wanted;
        crate::latency::set_recording(config.admin.as_ref().is_none_or(|a| a.latency_histograms));
        if let Some(admin) = &config.admin {
            if self.config.admin.as_ref().map(|a| (a.listen, &a.tls)) != Some((admin.listen, &admin.tls)) {
                tracing::warn!("[admin] listen/TLS changed: that takes a restart; users, token_ttl and metrics_open apply now");
            }
        }
        self.smtp_listening = smtp_wanted;
        self.config = config;
        self.start_delivery();
        self.config_text = text;
        self.publish_config();
        Ok(())
    }

    /// Tells the admin API which config is in force.
    fn publish_config(&self) {
        if let Some(feed) = &self.admin_feed {
            feed.publish_config(crate::admin_api::feed::RunningConfig {
                generation: self.generation,
                config: self.config.clone(),
                text: self.config_text.clone(),
                path: self.source.path().map(Path::to_path_buf),
                mail_queue: self.mail_queue(),
            });
        }
    }

    fn write_stats(&mut self) {
        self.latency.close_interval();
        let shards: Vec<ShardStats> = self
            .latest
            .values()
            .map(|s| ShardStats { latency: self.latency.shard_summaries(s.shard), ..s.clone() })
            .collect();
        let mut merged = MergedStats::merge(self.generation, &shards);
        merged.latency = self.latency.total_summaries();
        merged.latency_recent = self.latency.recent_summaries();
        if let Some(acme) = &self.acme {
            merged.certificates = acme.status(Instant::now());
        }
        merged.mail_queue_messages = self.mail_queue.as_ref().map(|queue| queue.handle().len());
        if let Some(delivery) = &self.delivery {
            merged.mail_delivery = delivery.stats();
        }
        if let Err(e) = write_json_atomically(&self.stats_path, &merged) {
            tracing::warn!(path = %self.stats_path.display(), error = %e, "cannot write stats");
        }
        if let Some(feed) = &self.admin_feed {
            feed.publish_stats(merged);
        }
    }
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, so readers never
/// see a half-written file.
fn write_json_atomically(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Writes `bytes` to `path` through a temporary file in the same folder (synced) and a
/// rename, keeping the old file's permissions: a crash leaves the old or the new file whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".shardgate-tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)
}
