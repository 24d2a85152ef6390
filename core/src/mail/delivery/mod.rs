//! The delivery engine: everything that happens to a message after it is durably queued.
//!
//! Runs on the control core's tokio runtime (`runtime::control_async`), never on a shard.
//!
//! # What it owns
//!
//! - **Scheduling** — [`DeliveryEngine`] asks the queue for due messages (on every
//!   new-message notification and once a second), skips those already in flight, and splits
//!   each message's pending recipients by the route action recorded with them: `deliver`
//!   (local Maildir), `forward` (one next hop per distinct forward target) and `process` (one
//!   destination per recipient domain, found by MX lookup). `priority` messages go to the
//!   front of their destination's line.
//! - **Destinations** — per destination at most `concurrency_per_destination` workers; each
//!   worker keeps its connection open and takes the next job of the same destination from the
//!   line (connection reuse), says QUIT when the line is empty.
//! - **Outcomes** — every recipient ends an attempt as delivered (with the next hop's reply),
//!   deferred (4xx, connection or DNS trouble: next attempt after an exponential backoff from
//!   `retry_initial` doubling up to `retry_max`) or failed (5xx, or still deferred after
//!   `max_age`). Outcomes are recorded through the queue **before** the queue removes the
//!   message, so a crash after a next hop said 250 never delivers it twice. The one window
//!   left is the crash between the next hop's 250 and our journal write: there the message
//!   is sent again (a duplicate, never a loss), as in every MTA.
//! - **Deliverability limits** ([`throttle`], `[email.delivery.limits]`) — before a job
//!   goes to a remote destination, the limiter must grant one message to its domain from
//!   one of the `source_ips` (per-domain and per-source rates, the IP warm-up ramp); the
//!   connection is bound to that address. A job over a limit is deferred to when a slot
//!   frees (its recipients stay queued, never bounced for it).
//! - **Bounces** ([`dsn`]) — failed recipients produce one RFC 3464 report to the envelope
//!   sender (never for `<>`), queued like any message and routed by the sender's address;
//!   recipients a next hop refused as unknown go on the [`suppression`] list, and later mail
//!   to a suppressed address fails at once.
//! - **Counters** ([`DeliveryCounters`]) for `shardgate stats`. (`shardgate queue status`
//!   reads the queue: it keeps the final states of messages that left it.)
//!
//! # What it does not own
//!
//! The queue's files and journal (`crate::mail::queue`, reached through [`MailQueue`]),
//! accepting mail (the shards' SMTP server), and route evaluation (given as a [`Router`]).

pub mod dsn;
pub mod maildir;
pub mod mx;
pub mod next_hop;
pub mod queue_link;
pub mod service;
pub mod suppression;
pub mod throttle;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use shardgate_smtp::client::{RecipientOutcome, ServerReply};
use tokio::io::AsyncReadExt;

use crate::config::{DeliverySettings, EmailAction, MailForward, QueueClass, StartTlsPolicy};
use next_hop::{ConnectOptions, NextHopConnection, NextHopError};
use suppression::SuppressionList;

/// How many due messages one scheduling round takes from the queue.
const DUE_BATCH: usize = 512;
/// How often the queue is asked for due messages without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often a held engine looks whether it was released.
const HOLD_POLL: Duration = Duration::from_millis(200);
/// How long a worker keeps its open connection when its destination has nothing more, in
/// case more arrives (Postfix's `smtp_connection_cache_time_limit`).
const IDLE_CONNECTION: Duration = Duration::from_secs(2);

/// A queue operation failed (the queue's own error, as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mail queue: {0}")]
pub struct QueueAccessError(pub String);

/// A recipient still to be delivered, with the action its route chose when it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRecipient {
    /// Its position in the queued message's recipient list (how outcomes name it).
    pub index: usize,
    /// The address.
    pub address: String,
    /// What to do with it.
    pub action: EmailAction,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A message the queue says is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMessage {
    /// Queue id.
    pub id: String,
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// When it was queued.
    pub received: SystemTime,
    /// Size of the message text in octets.
    pub size: u64,
    /// The message needs SMTPUTF8 (UTF-8 addresses or headers): a next hop without it
    /// cannot take it (RFC 6531 §3.2; no downgrade).
    pub smtputf8: bool,
    /// Recipients not yet delivered or failed.
    pub recipients: Vec<DueRecipient>,
    /// The correlation id of the session that queued it (`crate::correlation`).
    pub correlation_id: Option<String>,
}

impl DueMessage {
    /// The spans its delivery work is logged in: `conn{id=<correlation id>}` — the id of the
    /// SMTP session that queued it, so one id finds both sides — around `mail{queue_id=…}`.
    pub fn span(&self) -> tracing::Span {
        match &self.correlation_id {
            Some(correlation) => {
                let conn = tracing::info_span!("conn", id = %correlation);
                tracing::info_span!(parent: &conn, "mail", queue_id = %self.id)
            }
            None => tracing::info_span!("mail", queue_id = %self.id),
        }
    }
}

/// The outcome of one attempt for one recipient, as the queue records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered; the next hop's reply.
    Delivered {
        /// `mx.example.net said: 250 2.0.0 Ok: queued as X`.
        reply: String,
    },
    /// Try again at `next_attempt`.
    Deferred {
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt: SystemTime,
    },
    /// Failed for good (a bounce has been queued).
    Failed {
        /// The refusal.
        reply: String,
    },
    /// Not attempted: over a sending limit (`[email.delivery.limits]`) until `next_attempt`.
    /// Not an attempt (the retry backoff does not grow); never bounced for it.
    Postponed {
        /// Which limit.
        reason: String,
        /// When a slot may be free.
        next_attempt: SystemTime,
    },
}

/// A message handed to the queue by the control core (bounces, `shardgate send`).
#[derive(Debug, Clone)]
pub struct Submission {
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// Recipients with the route that took them and its action.
    pub recipients: Vec<(String, String, EmailAction)>,
    /// The message text (all of it, or the part before `file`).
    pub text: Vec<u8>,
    /// The correlation id to log its delivery under (a bounce: the bounced message's).
    pub correlation_id: Option<String>,
    /// A file whose content follows `text` (`shardgate send` of a message file): copied into
    /// the spool in the kernel, never read whole into memory.
    pub file: Option<std::path::PathBuf>,
}

/// What the delivery engine needs from the queue (implemented by `crate::mail::queue`'s
/// handle; a fake in the tests).
pub trait MailQueue: Send + Sync + 'static {
    /// Messages due at `now` (next attempt reached), priority class first, at most `limit`.
    fn due(&self, now: SystemTime, limit: usize) -> impl Future<Output = Result<Vec<DueMessage>, QueueAccessError>> + Send;
    /// Records outcomes (by recipient index) of message `id` durably; the queue removes the
    /// message once every recipient is delivered or failed.
    fn record(&self, id: &str, outcomes: Vec<(usize, AttemptOutcome)>) -> impl Future<Output = Result<(), QueueAccessError>> + Send;
    /// The message text of `id` as it is to be delivered (trace header included), from its
    /// start, for async readers (next hops).
    fn open_text(&self, id: &str) -> impl Future<Output = Result<TextReader, QueueAccessError>> + Send;
    /// The same as a blocking reader (local delivery, on a blocking thread).
    fn open_text_blocking(&self, id: &str) -> Result<Box<dyn std::io::Read + Send>, QueueAccessError>;
    /// Queues a new message durably; returns its id.
    fn submit(&self, submission: Submission) -> impl Future<Output = Result<String, QueueAccessError>> + Send;
    /// A watch that changes when something may have become due (a new message).
    fn arrivals(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// A message text for async reading.
pub type TextReader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// Chooses the route (name, action) for a recipient of a message the control core itself
/// submits (a bounce to the original sender, `shardgate send`): `(sender, recipient)` →
/// the email routes' envelope match.
pub type Router = Arc<dyn Fn(&str, &str) -> Option<(String, EmailAction)> + Send + Sync>;

/// Delivery counters (recipients), for `shardgate stats`.
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    delivered: AtomicU64,
    deferred: AtomicU64,
    bounced: AtomicU64,
    bounces_sent: AtomicU64,
    connections: AtomicU64,
    connections_reused: AtomicU64,
    throttled: AtomicU64,
}

/// [`DeliveryCounters`] as numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStats {
    /// Recipients delivered (next hop said 250, or stored in a Maildir).
    pub delivered: u64,
    /// Attempts that ended in a deferral.
    pub deferred: u64,
    /// Recipients failed for good.
    pub bounced: u64,
    /// Bounce reports (DSNs) queued.
    pub bounces_sent: u64,
    /// Connections opened to next hops.
    pub connections: u64,
    /// Transactions sent on an already used connection.
    pub connections_reused: u64,
    /// Recipients deferred by `[email.delivery.limits]` (sending limits, IP warm-up).
    #[serde(default)]
    pub throttled: u64,
}

impl DeliveryCounters {
    /// The current values.
    pub fn snapshot(&self) -> DeliveryStats {
        DeliveryStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
            bounced: self.bounced.load(Ordering::Relaxed),
            bounces_sent: self.bounces_sent.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            connections_reused: self.connections_reused.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones: `initial` doubled per
/// earlier failure, at most `max`.
pub fn retry_delay(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    initial.saturating_mul(1u32 << doublings).min(max)
}

/// Whether a permanent refusal of a recipient's `RCPT TO` says the *address* is bad (so it
/// is suppressed): any 5xx except the statuses that are about policy (`5.7.x`: relaying
/// denied, spam, authentication), a full or disabled mailbox (`5.2.x`: the address exists)
/// or the message (`5.3.4`, `5.6.x`). Refusals of MAIL or of the message text never are.
pub fn is_hard_bounce(reply: &ServerReply) -> bool {
    if !reply.is_permanent() {
        return false;
    }
    match reply.enhanced_status().map(|status| status.to_string()) {
        Some(status) => !(status.starts_with("5.7.") || status.starts_with("5.2.") || status.starts_with("5.6.") || status == "5.3.4"),
        None => true,
    }
}

/// Where a group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Destination {
    /// Local Maildirs.
    Local,
    /// A fixed next hop.
    Forward(ForwardTarget),
    /// The MX of a domain.
    Mx(String),
}

impl Destination {
    /// The key of the per-domain sending limits: the recipient domain, or a forward host.
    fn limit_key(&self) -> String {
        match self {
            Destination::Local => String::new(),
            Destination::Forward(target) => target.host.to_ascii_lowercase(),
            Destination::Mx(domain) => domain.clone(),
        }
    }

    /// For the log (never the credentials a forward target holds).
    fn label(&self) -> String {
        match self {
            Destination::Local => "maildir".into(),
            Destination::Forward(target) => format!("{}:{}", target.host, target.port),
            Destination::Mx(domain) => format!("MX of {domain}"),
        }
    }
}

/// A `forward` action as a destination key (credentials and headers are part of it: two
/// routes to one host with different credentials do not share connections).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ForwardTarget {
    host: String,
    port: u16,
    starttls: StartTlsPolicyKey,
    auth: Option<(String, String)>,
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StartTlsPolicyKey {
    Opportunistic,
    Required,
    None,
}

impl From<StartTlsPolicy> for StartTlsPolicyKey {
    fn from(policy: StartTlsPolicy) -> Self {
        match policy {
            StartTlsPolicy::Opportunistic => StartTlsPolicyKey::Opportunistic,
            StartTlsPolicy::Required => StartTlsPolicyKey::Required,
            StartTlsPolicy::None => StartTlsPolicyKey::None,
        }
    }
}

impl ForwardTarget {
    fn from_action(forward: &MailForward) -> ForwardTarget {
        ForwardTarget {
            host: forward.host.clone(),
            port: forward.port,
            starttls: forward.starttls.into(),
            auth: forward.auth.as_ref().map(|a| (a.username.clone(), a.password.clone())),
            headers: forward.headers.clone(),
        }
    }

    fn policy(&self) -> StartTlsPolicy {
        match self.starttls {
            StartTlsPolicyKey::Opportunistic => StartTlsPolicy::Opportunistic,
            StartTlsPolicyKey::Required => StartTlsPolicy::Required,
            StartTlsPolicyKey::None => StartTlsPolicy::None,
        }
    }

    fn header_prefix(&self) -> Vec<u8> {
        let mut prefix = Vec::new();
        for (name, value) in &self.headers {
            prefix.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        prefix
    }
}

/// Removes the message id from the in-flight set when the last job of the message ends.
struct InFlight {
    id: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.id);
    }
}

/// Some recipients of one message, for one destination.
struct Job {
    message: Arc<DueMessage>,
    recipients: Vec<DueRecipient>,
    _in_flight: Arc<InFlight>,
}

#[derive(Default)]
struct DestinationLine {
    jobs: VecDeque<Job>,
    workers: u32,
    /// Workers waiting with an idle connection (a new job goes to them, not a new worker).
    idle: u32,
    /// Wakes a worker that keeps an idle connection open (a new job arrived).
    wake: Arc<tokio::sync::Notify>,
}

/// How one recipient's attempt ended, before it becomes an [`AttemptOutcome`].
#[derive(Debug, Clone)]
enum Verdict {
    Accepted { reply: ServerReply, host: String },
    /// `at_rcpt`: the next hop refused this address in its `RCPT` reply.
    Refused { reply: ServerReply, host: Option<String>, at_rcpt: bool },
    /// Not attempted: over a deliverability limit until then.
    Throttled(throttle::Throttled),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Engine<Q: MailQueue> {
    queue: Q,
    settings: DeliverySettings,
    hostname: String,
    data_dir: PathBuf,
    resolver: Option<mx::MxResolver>,
    tls: Arc<rustls::ClientConfig>,
    router: RwLock<Router>,
    suppression: Mutex<SuppressionList>,
    lines: Mutex<HashMap<Destination, DestinationLine>>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    counters: DeliveryCounters,
    /// Set by [`DeliveryEngine::stop`]: take no new job.
    stopping: std::sync::atomic::AtomicBool,
    /// `[email.delivery] hold`: take no new job, messages stay queued (reloadable).
    hold: std::sync::atomic::AtomicBool,
    /// DKIM keys of our sending domains (`crate::mail::dkim`); `process` and `forward`
    /// deliveries of their mail are signed.
    dkim: RwLock<Option<Arc<crate::mail::dkim::service::SignerTable>>>,
    /// `[email.delivery.limits]` over `source_ips`.
    throttle: Mutex<throttle::DeliveryThrottle>,
}

/// Handle to the running delivery engine.
pub struct DeliveryEngine<Q: MailQueue> {
    engine: Arc<Engine<Q>>,
    task: tokio::task::JoinHandle<()>,
}

impl<Q: MailQueue> std::fmt::Debug for DeliveryEngine<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryEngine").field("hostname", &self.engine.hostname).finish()
    }
}

impl<Q: MailQueue> Drop for DeliveryEngine<Q> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<Q: MailQueue> DeliveryEngine<Q> {
    /// Starts the engine on `runtime` (the control core's tokio runtime).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        queue: Q,
        settings: DeliverySettings,
        hostname: &str,
        data_dir: PathBuf,
        router: Router,
    ) -> DeliveryEngine<Q> {
        let resolver = {
            let _entered = runtime.enter();
            match mx::MxResolver::new(settings.resolver) {
                Ok(resolver) => Some(resolver),
                Err(e) => {
                    tracing::error!(error = %e, "no DNS resolver for MX lookups: `process` deliveries will be deferred");
                    None
                }
            }
        };
        let throttle = Mutex::new(throttle::DeliveryThrottle::new(settings.limits.clone(), &settings.source_ips, SystemTime::now()));
        let hold = std::sync::atomic::AtomicBool::new(settings.hold);
        let engine = Arc::new(Engine {
            queue,
            hold,
            throttle,
            settings,
            hostname: hostname.to_string(),
            suppression: Mutex::new(SuppressionList::open(&data_dir)),
            data_dir,
            resolver,
            tls: next_hop::tls_client_config(),
            router: RwLock::new(router),
            lines: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            counters: DeliveryCounters::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            dkim: RwLock::new(None),
        });
        let task = runtime.spawn(engine.clone().schedule());
        DeliveryEngine { engine, task }
    }

    /// Graceful stop (before the queue writer stops): no new job is started, and the
    /// transactions in progress may finish and record their outcomes for up to `grace`, so a
    /// message a next hop just accepted is not sent again after the restart. Blocking: call
    /// it from the control core thread, not from the runtime.
    pub fn stop(&self, grace: Duration) {
        self.engine.stopping.store(true, Ordering::SeqCst);
        self.task.abort();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            let busy: u32 = lock(&self.engine.lines).values().map(|line| line.workers.saturating_sub(line.idle)).sum();
            if busy == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!("mail delivery still busy at stop; unrecorded deliveries will be attempted again after the restart");
    }

    /// Signs `process` and `forward` deliveries with the keys in `table` (DKIM hook).
    pub fn set_dkim(&self, table: Option<Arc<crate::mail::dkim::service::SignerTable>>) {
        *self.engine.dkim.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
    }

    /// Uses these deliverability limits from now on (after a config reload; counts start
    /// over when they changed).
    pub fn set_limits(&self, limits: &crate::config::DeliveryLimits, source_ips: &[std::net::IpAddr]) {
        let mut current = lock(&self.engine.throttle);
        if !current.is_configured_as(limits, source_ips) {
            *current = throttle::DeliveryThrottle::new(limits.clone(), source_ips, SystemTime::now());
        }
    }

    /// Holds every message in the queue (`true`: no delivery is started; those under way
    /// finish) or releases them (`false`: every due message is picked up at once).
    pub fn set_hold(&self, hold: bool) {
        let was = self.engine.hold.swap(hold, std::sync::atomic::Ordering::SeqCst);
        if was != hold {
            if hold {
                tracing::warn!("mail delivery held ([email.delivery] hold): messages stay queued");
            } else {
                tracing::info!("mail delivery released: queued messages are delivered again");
            }
        }
    }

    /// Uses `router` for messages submitted from now on (after a config reload).
    pub fn set_router(&self, router: Router) {
        *self.engine.router.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = router;
    }

    /// The counters.
    pub fn stats(&self) -> DeliveryStats {
        self.engine.counters.snapshot()
    }

    /// The suppression list.
    pub fn suppressed(&self) -> Vec<suppression::SuppressedAddress> {
        lock(&self.engine.suppression).list()
    }

    /// Removes `address` from the suppression list; false when it was not on it.
    pub fn unsuppress(&self, address: &str) -> std::io::Result<bool> {
        lock(&self.engine.suppression).remove(address)
    }

    /// Routes and queues a message from the control core (`shardgate send`): `text`, then
    /// the content of `file` if given (streamed); returns the queue id. Recipients no route
    /// takes are refused.
    pub async fn submit(&self, sender: &str, recipients: &[String], text: Vec<u8>, file: Option<std::path::PathBuf>) -> Result<String, String> {
        let router = self.engine.router.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut routed = Vec::new();
        for recipient in recipients {
            match router(sender, recipient) {
                Some((_, EmailAction::Reject { code, message })) => return Err(format!("<{recipient}>: {code} {message}")),
                Some((route, action)) => routed.push((recipient.clone(), route, action)),
                None => return Err(format!("<{recipient}>: no email route takes this recipient")),
            }
        }
        if routed.is_empty() {
            return Err("no recipients".into());
        }
        let correlation = crate::correlation::next_on_control();
        let count = routed.len();
        let submission = Submission { sender: sender.to_string(), recipients: routed, text, file, correlation_id: Some(correlation.clone()) };
        let id = self.engine.queue.submit(submission).await.map_err(|e| e.to_string())?;
        tracing::info_span!("conn", id = %correlation).in_scope(|| {
            tracing::info!(queue_id = %id, from = %sender, recipients = count, "message queued by the control core");
        });
        Ok(id)
    }
}

impl<Q: MailQueue> Engine<Q> {
    async fn schedule(self: Arc<Self>) {
        let mut arrivals = self.queue.arrivals();
        if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::warn!("mail delivery held ([email.delivery] hold): messages stay queued");
        }
        loop {
            if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
                // Nothing is leased while held: a release (reload) is seen within a poll.
                tokio::time::sleep(HOLD_POLL).await;
                continue;
            }
            match self.queue.due(SystemTime::now(), DUE_BATCH).await {
                Ok(messages) => {
                    for message in messages {
                        self.dispatch(message).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read due messages"),
            }
            tokio::select! {
                changed = arrivals.changed() => {
                    if changed.is_err() {
                        // The queue is gone (stopping): poll only.
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Splits a due message into jobs per destination (unless it is already in flight).
    async fn dispatch(self: &Arc<Self>, message: DueMessage) {
        if !lock(&self.in_flight).insert(message.id.clone()) {
            return;
        }
        let in_flight = Arc::new(InFlight { id: message.id.clone(), set: self.in_flight.clone() });
        let message = Arc::new(message);
        let priority = message.recipients.iter().any(|r| matches!(r.action, EmailAction::Process { queue: QueueClass::Priority }));
        let mut groups: Vec<(Destination, Vec<DueRecipient>)> = Vec::new();
        let mut suppressed = Vec::new();
        for recipient in &message.recipients {
            if let Some(entry) = lock(&self.suppression).get(&recipient.address) {
                let reply = ServerReply::new(
                    550,
                    &format!("5.1.1 <{}> is suppressed after a hard bounce ({})", recipient.address, entry.reason),
                );
                suppressed.push((recipient.clone(), Verdict::Refused { reply, host: None, at_rcpt: false }));
                continue;
            }
            let destination = match &recipient.action {
                EmailAction::Deliver => Destination::Local,
                EmailAction::Forward(forward) => Destination::Forward(ForwardTarget::from_action(forward)),
                EmailAction::Process { .. } => {
                    let domain = recipient.address.rsplit_once('@').map(|(_, d)| d.to_lowercase()).unwrap_or_default();
                    Destination::Mx(domain)
                }
                EmailAction::Reject { code, message: text } => {
                    // A reject route is decided at intake; one recorded here is a config
                    // change race. Honour it.
                    let reply = ServerReply::new(*code, text);
                    suppressed.push((recipient.clone(), Verdict::Refused { reply, host: None, at_rcpt: false }));
                    continue;
                }
            };
            match groups.iter_mut().find(|(d, _)| *d == destination) {
                Some((_, list)) => list.push(recipient.clone()),
                None => groups.push((destination, vec![recipient.clone()])),
            }
        }
        if !suppressed.is_empty() {
            use tracing::Instrument as _;
            self.settle(&message, suppressed).instrument(message.span()).await;
        }
        for (destination, recipients) in groups {
            let job = Job { message: message.clone(), recipients, _in_flight: in_flight.clone() };
            self.enqueue_job(destination, job, priority);
        }
    }

    fn enqueue_job(self: &Arc<Self>, destination: Destination, job: Job, priority: bool) {
        let limit = self.settings.concurrency_per_destination.max(1);
        let mut lines = lock(&self.lines);
        let line = lines.entry(destination.clone()).or_default();
        if priority {
            line.jobs.push_front(job);
        } else {
            line.jobs.push_back(job);
        }
        line.wake.notify_one();
        if line.workers < limit && line.idle == 0 {
            line.workers += 1;
            tokio::spawn(self.clone().work(destination));
        }
    }

    /// One worker of a destination: takes jobs until the line is empty, reusing its
    /// connection; with a connection open it waits [`IDLE_CONNECTION`] for more first.
    async fn work(self: Arc<Self>, destination: Destination) {
        let mut connection: Option<NextHopConnection> = None;
        // The source address the open connection is bound to.
        let mut source_in_use: Option<Option<std::net::IpAddr>> = None;
        let mut waited = false;
        loop {
            let next = {
                let mut lines = lock(&self.lines);
                let Some(line) = lines.get_mut(&destination) else { break };
                let stopping = self.stopping.load(Ordering::SeqCst);
                match if stopping { None } else { line.jobs.pop_front() } {
                    Some(job) => Ok(job),
                    None if connection.is_some() && !waited && !stopping => {
                        line.idle += 1;
                        Err(line.wake.clone())
                    }
                    None => {
                        line.workers = line.workers.saturating_sub(1);
                        if line.workers == 0 {
                            lines.remove(&destination);
                        }
                        break;
                    }
                }
            };
            let job = match next {
                Ok(job) => job,
                Err(wake) => {
                    // Idle with an open connection: a new job for this destination wakes us.
                    waited = tokio::time::timeout(IDLE_CONNECTION, wake.notified()).await.is_err();
                    if let Some(line) = lock(&self.lines).get_mut(&destination) {
                        line.idle = line.idle.saturating_sub(1);
                    }
                    continue;
                }
            };
            waited = false;
            // Logged under the message's correlation id (`DueMessage::span`).
            use tracing::Instrument as _;
            async {
                tracing::debug!(destination = %destination.label(), recipients = job.recipients.len(), "delivery attempt");
                let verdicts = match &destination {
                    Destination::Local => self.deliver_locally(&job).await,
                    remote => {
                        // Deliverability hook: a slot for this domain from some source address.
                        let granted = lock(&self.throttle).acquire(&remote.limit_key(), source_in_use.filter(|_| connection.is_some()), SystemTime::now());
                        match granted {
                            Err(throttled) => job.recipients.iter().map(|r| (r.clone(), Verdict::Throttled(throttled.clone()))).collect(),
                            Ok(source) => {
                                if source_in_use != Some(source) {
                                    if let Some(open) = connection.take() {
                                        open.quit().await;
                                    }
                                }
                                source_in_use = Some(source);
                                self.deliver_remote(remote, &job, &mut connection, source).await
                            }
                        }
                    }
                };
                self.settle(&job.message, verdicts).await;
            }
            .instrument(job.message.span())
            .await;
        }
        if let Some(connection) = connection {
            connection.quit().await;
        }
    }

    async fn deliver_locally(&self, job: &Job) -> Vec<(DueRecipient, Verdict)> {
        let mut verdicts = Vec::new();
        for recipient in &job.recipients {
            let verdict = match self.queue.open_text_blocking(&job.message.id) {
                Err(e) => Verdict::Refused { reply: ServerReply::new(451, &format!("4.3.0 {e}")), host: None, at_rcpt: false },
                Ok(mut file) => {
                    let data_dir = self.data_dir.clone();
                    let address = recipient.address.clone();
                    let sender = job.message.sender.clone();
                    let stored = tokio::task::spawn_blocking(move || maildir::deliver(&data_dir, &address, &sender, &mut file)).await;
                    match stored {
                        Ok(Ok(path)) => Verdict::Accepted {
                            reply: ServerReply::new(250, &format!("2.0.0 stored in {}", path.display())),
                            host: "maildir".into(),
                        },
                        Ok(Err(e)) => Verdict::Refused { reply: ServerReply::new(451, &format!("4.3.0 {e}")), host: None, at_rcpt: false },
                        Err(e) => Verdict::Refused { reply: ServerReply::new(451, &format!("4.3.0 local delivery task: {e}")), host: None, at_rcpt: false },
                    }
                }
            };
            verdicts.push((recipient.clone(), verdict));
        }
        verdicts
    }

    /// The `DKIM-Signature` header for the job's message when its sender's domain signs
    /// (`[[email.domains]]`); `None` otherwise or when signing fails (logged; the message
    /// then leaves unsigned rather than not at all).
    async fn dkim_signature(&self, job: &Job) -> Option<String> {
        let table = self.dkim.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()?;
        let key = table.key_for(&job.message.sender)?;
        let mut text = self.queue.open_text(&job.message.id).await.ok()?;
        match crate::mail::dkim::service::sign_reader(&key, &mut *text).await {
            Ok(header) => {
                tracing::info!(domain = %key.domain, selector = %key.selector, "DKIM signed");
                Some(header)
            }
            Err(e) => {
                tracing::warn!(id = %job.message.id, error = %e, "DKIM signing failed; sending unsigned");
                None
            }
        }
    }

    async fn deliver_remote(
        &self,
        destination: &Destination,
        job: &Job,
        connection: &mut Option<NextHopConnection>,
        source: Option<std::net::IpAddr>,
    ) -> Vec<(DueRecipient, Verdict)> {
        let all = |reply: ServerReply, host: Option<String>| -> Vec<(DueRecipient, Verdict)> {
            job.recipients.iter().map(|r| (r.clone(), Verdict::Refused { reply: reply.clone(), host: host.clone(), at_rcpt: false })).collect()
        };
        let mut prefix = match destination {
            Destination::Forward(target) => target.header_prefix(),
            _ => Vec::new(),
        };
        // DKIM hook (crate::mail::dkim): mail of our signing domains leaves signed.
        if let Some(signature) = self.dkim_signature(job).await {
            prefix.splice(0..0, signature.into_bytes());
        }
        let addresses: Vec<String> = job.recipients.iter().map(|r| r.address.clone()).collect();
        // One retry on a fresh connection when a reused one fails (the next hop may have
        // closed it while idle).
        for attempt in 0..2 {
            if connection.is_none() {
                match self.connect(destination, source).await {
                    Ok(opened) => *connection = Some(opened),
                    Err(refusal) => return all(refusal, None),
                }
            }
            let Some(open) = connection.as_mut() else { break };
            let reused = open.transactions > 0;
            if reused {
                self.counters.connections_reused.fetch_add(1, Ordering::Relaxed);
            }
            let mut text = match self.queue.open_text(&job.message.id).await {
                Ok(file) => file,
                Err(e) => return all(ServerReply::new(451, &format!("4.3.0 {e}")), None),
            };
            let host = open.host().to_string();
            if job.message.smtputf8 && !open.capabilities().smtputf8 {
                let reply = ServerReply::new(553, &format!("5.6.7 {host} does not support SMTPUTF8, which this message needs"));
                return all(reply, None);
            }
            match open.send(&job.message.sender, &addresses, job.message.size, job.message.smtputf8, &prefix, &mut *text).await {
                Ok(outcome) => {
                    if outcome.connection_closing {
                        *connection = None;
                    }
                    return job
                        .recipients
                        .iter()
                        .cloned()
                        .zip(outcome.recipients)
                        .map(|(recipient, result)| {
                            let verdict = match result {
                                RecipientOutcome::Accepted(reply) => Verdict::Accepted { reply, host: host.clone() },
                                RecipientOutcome::Refused(reply) => Verdict::Refused { reply, host: Some(host.clone()), at_rcpt: false },
                                RecipientOutcome::RecipientRefused(reply) => {
                                    Verdict::Refused { reply, host: Some(host.clone()), at_rcpt: true }
                                }
                            };
                            (recipient, verdict)
                        })
                        .collect();
                }
                Err(e) => {
                    let text_sent = open.text_sent();
                    *connection = None;
                    // Only when the text was not sent yet: else the next hop may have it.
                    if reused && attempt == 0 && !text_sent {
                        tracing::debug!(error = %e, "reused connection failed; retrying on a new one");
                        continue;
                    }
                    return all(e.as_reply(), Some(host));
                }
            }
        }
        all(ServerReply::new(451, "4.4.1 no connection"), None)
    }

    /// Opens a connection to the destination: the forward target, or the MX hosts in order
    /// (each of their addresses) until one answers. The error is the reply every recipient
    /// gets.
    async fn connect(&self, destination: &Destination, source: Option<std::net::IpAddr>) -> Result<NextHopConnection, ServerReply> {
        let mut options = ConnectOptions {
            ehlo_name: self.hostname.clone(),
            starttls: StartTlsPolicy::Opportunistic,
            auth: None,
            connect_timeout: self.settings.connect_timeout,
            source_ip: source,
        };
        let mut candidates: Vec<(String, std::net::SocketAddr)> = Vec::new();
        match destination {
            Destination::Local => return Err(ServerReply::new(451, "4.3.0 local destination has no connection")),
            Destination::Forward(target) => {
                options.starttls = target.policy();
                options.auth = target.auth.as_ref().map(|(username, password)| crate::config::ForwardAuth {
                    username: username.clone(),
                    password: password.clone(),
                });
                let host = target.host.trim_start_matches('[').trim_end_matches(']');
                match tokio::net::lookup_host((host, target.port)).await {
                    Ok(addrs) => candidates.extend(addrs.map(|a| (target.host.clone(), a))),
                    Err(e) => return Err(ServerReply::new(451, &format!("4.4.3 cannot resolve {}: {e}", target.host))),
                }
            }
            Destination::Mx(domain) => {
                let Some(resolver) = &self.resolver else {
                    return Err(ServerReply::new(451, "4.4.3 no DNS resolver available"));
                };
                let hosts = match resolver.mx_hosts(domain).await {
                    Ok(hosts) => hosts,
                    Err(e) => {
                        let code = if e.is_permanent() { 550 } else { 451 };
                        return Err(ServerReply::new(code, &format!("{} {e}", e.status())));
                    }
                };
                let mut last_error = None;
                for host in hosts {
                    match resolver.addresses(&host.name).await {
                        Ok(ips) => {
                            candidates.extend(ips.into_iter().map(|ip| (host.name.clone(), std::net::SocketAddr::new(ip, mx::SMTP_PORT))))
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                if candidates.is_empty() {
                    let e = last_error.unwrap_or_else(|| mx::MxError::NoAddress(domain.clone()));
                    // An MX host without address is a DNS problem that may get fixed.
                    return Err(ServerReply::new(451, &format!("4.4.3 {e}")));
                }
            }
        }
        // A source address can only reach addresses of its own family.
        if let Some(source) = source {
            candidates.retain(|(_, addr)| addr.is_ipv4() == source.is_ipv4());
        }
        let mut last = ServerReply::new(451, "4.4.1 no address to connect to");
        for (host, addr) in candidates {
            match NextHopConnection::open(addr, &host, &options, &self.tls).await {
                Ok(connection) => {
                    self.counters.connections.fetch_add(1, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(e) => {
                    tracing::debug!(%addr, host, error = %e, "next hop unusable");
                    last = e.as_reply();
                    if matches!(e, NextHopError::TlsNotOffered { .. }) {
                        // Policy failure: another address of the same target would not differ.
                        last = ServerReply::new(451, &format!("4.7.10 {e}"));
                    }
                }
            }
        }
        Err(last)
    }

    /// Turns verdicts into recorded outcomes: bounces first (a duplicate report is better
    /// than a lost one), then the queue record, then the counters.
    async fn settle(&self, message: &DueMessage, verdicts: Vec<(DueRecipient, Verdict)>) {
        let now = SystemTime::now();
        let age = now.duration_since(message.received).unwrap_or_default();
        let mut outcomes = Vec::new();
        let mut failed = Vec::new();
        for (recipient, verdict) in verdicts {
            match verdict {
                Verdict::Throttled(limit) => {
                    // Over a sending limit: postponed whatever the message's age, never bounced.
                    let reason = format!("4.7.0 deferred by shardgate: {}", limit.reason);
                    outcomes.push((recipient.index, AttemptOutcome::Postponed { reason, next_attempt: limit.until }));
                }
                Verdict::Accepted { reply, host } => {
                    let text = format!("{host} said: {reply}");
                    tracing::info!(
                        to = %recipient.address,
                        relay = %host,
                        attempt = recipient.attempts.saturating_add(1),
                        delay_secs = age.as_secs(),
                        reply = %reply.one_line(),
                        "delivered"
                    );
                    outcomes.push((recipient.index, AttemptOutcome::Delivered { reply: text }));
                }
                Verdict::Refused { reply, host, .. } if reply.is_transient() && age < self.settings.max_age => {
                    let attempts = recipient.attempts.saturating_add(1);
                    let delay = retry_delay(attempts, self.settings.retry_initial, self.settings.retry_max);
                    let error = match &host {
                        Some(host) => format!("{host} said: {reply}"),
                        None => reply.one_line(),
                    };
                    tracing::info!(to = %recipient.address, attempt = attempts, retry_in_secs = delay.as_secs(), error = %error, "deferred");
                    outcomes.push((recipient.index, AttemptOutcome::Deferred { error, next_attempt: now + delay }));
                }
                Verdict::Refused { reply, host, at_rcpt } => {
                    let (status, diagnostic) = if reply.is_transient() {
                        ("4.4.7".to_string(), format!("message expired after {} s in the queue; last error: {reply}", age.as_secs()))
                    } else {
                        (dsn::status_from_reply(&reply), reply.one_line())
                    };
                    if at_rcpt && is_hard_bounce(&reply) {
                        if let Err(e) = lock(&self.suppression).add(&recipient.address, &reply.one_line()) {
                            tracing::warn!(recipient = %recipient.address, error = %e, "cannot persist the suppression list");
                        }
                    }
                    let text = match &host {
                        Some(host) => format!("{host} said: {diagnostic}"),
                        None => diagnostic.clone(),
                    };
                    tracing::info!(
                        to = %recipient.address,
                        attempt = recipient.attempts.saturating_add(1),
                        status = %status,
                        error = %text,
                        "bounced"
                    );
                    failed.push(dsn::FailedRecipient { address: recipient.address.clone(), status, remote_mta: host, diagnostic });
                    outcomes.push((recipient.index, AttemptOutcome::Failed { reply: text }));
                }
            }
        }
        if !failed.is_empty() && dsn::may_bounce(&message.sender) {
            self.bounce(message, &failed, now).await;
        }
        let (mut delivered, mut deferred, mut bounced, mut throttled) = (0, 0, 0, 0);
        for (_, outcome) in &outcomes {
            match outcome {
                AttemptOutcome::Delivered { .. } => delivered += 1,
                AttemptOutcome::Deferred { .. } => deferred += 1,
                AttemptOutcome::Failed { .. } => bounced += 1,
                AttemptOutcome::Postponed { .. } => throttled += 1,
            }
        }
        if let Err(e) = self.queue.record(&message.id, outcomes).await {
            // Not recorded: the message stays due and is attempted again.
            tracing::error!(id = %message.id, error = %e, "cannot record delivery outcomes; the message will be attempted again");
            return;
        }
        self.counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.counters.deferred.fetch_add(deferred, Ordering::Relaxed);
        self.counters.throttled.fetch_add(throttled, Ordering::Relaxed);
        self.counters.bounced.fetch_add(bounced, Ordering::Relaxed);
    }

    async fn bounce(&self, message: &DueMessage, failed: &[dsn::FailedRecipient], now: SystemTime) {
        let mut head = vec![0u8; dsn::MAX_ORIGINAL_HEADERS];
        let mut filled = 0;
        if let Ok(mut file) = self.queue.open_text(&message.id).await {
            while filled < head.len() {
                match file.read(&mut head[filled..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => filled += n,
                }
            }
        }
        let report = dsn::BounceReport {
            reporting_mta: &self.hostname,
            from: &self.settings.bounce_sender,
            original_sender: &message.sender,
            original_queue_id: &message.id,
            arrival: message.received,
            recipients: failed,
            original_headers: dsn::header_block(&head[..filled]),
        };
        let text = dsn::build_bounce(&report, now);
        let router = self.router.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let (route, action) = match router("", &message.sender) {
            Some((_, EmailAction::Reject { .. })) | None => {
                tracing::warn!(id = %message.id, sender = %message.sender, "no email route takes the bounce to the sender; bounce dropped");
                return;
            }
            Some(routed) => routed,
        };
        let submission = Submission {
            sender: String::new(),
            recipients: vec![(message.sender.clone(), route, action)],
            text,
            file: None,
            correlation_id: message.correlation_id.clone(),
        };
        match self.queue.submit(submission).await {
            Ok(id) => {
                self.counters.bounces_sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(id = %message.id, bounce = %id, "bounce queued to the sender");
            }
            Err(e) => tracing::error!(id = %message.id, error = %e, "cannot queue the bounce"),
        }
    }
}

#[cfg(test)]
mod tests;
