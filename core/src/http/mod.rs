//! The HTTP/1.1 reverse proxy on the shards: what a shard does with a connection of an HTTP
//! route, plain or TLS-terminated.
//!
//! Owns: the per-connection loop ([`serve`]): read a request head (header timeout → 408,
//! limits → 414/431, smuggling defences → 400/501, all from `shardgate_http1`), route the
//! request on its own by client address, Host and path ([`RouteTable::select_request`]),
//! apply the route's `security` (403) and `limits` (429 with `Retry-After`), then answer:
//! `forward` (one exchange with a backend, see below), `redirect`, `serve` ([`files`]) or
//! `reject` (403). Keep-alive on both sides; the backend side uses a per-shard pool of idle
//! connections ([`upstream`]). Every head written here carries the shard's `Date`, formatted
//! once a second ([`date_now`]).
//!
//! One forwarded exchange: the request head is rewritten (hop-by-hop fields out,
//! `X-Forwarded-*` and `Forwarded` in) and the body streamed with its framing re-made
//! (content-length copied, chunked decoded and re-encoded; never buffered whole).
//! `Expect: 100-continue` is answered here before the body is read. The response head is
//! parsed (invalid → 502; no answer in `upstream_timeout` → 504; unreachable → 502),
//! interim 1xx heads are passed on, a 101 turns the connection into a tunnel (WebSocket),
//! and the body is streamed back, re-chunked for HTTP/1.1 clients when the backend closes
//! to end it. A pooled connection that fails before any response byte is retried once on a
//! new connection when the request had no body (the backend may close idle connections at
//! any time).
//!
//! Does not own: TLS (the caller terminates it and hands over a [`ClientStream`]), the rules
//! of HTTP/1.1 (the sans-I/O `shardgate_http1` crate), routing tables (see `route`).

pub mod doh;
pub mod files;
pub mod stream;
pub mod upstream;

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shardgate_http1::chunked::{self, ChunkedDecoder};
use shardgate_http1::date::HttpDate;
use shardgate_http1::ratelimit::{ConnectionLimiter, ConnectionSlot, RateDecision, RateLimiter};
use shardgate_http1::reply::{self, ErrorStatus};
use shardgate_http1::request::{RequestHead, RequestParser, Scheme};
use shardgate_http1::response::{ResponseClass, ResponseParser};
use shardgate_http1::rewrite::{self, ForwardingContext};
use shardgate_http1::{BodyFraming, Http1Error, ParseStatus};

use crate::config::{Forward, HttpSettings, Route, RouteAction, RouteLimits};
use crate::proxy::{RouteRuntime, RouteState};
use crate::relay::{relay, RelayEnd};
use crate::route::RouteId;
use crate::stats::{bump, RouteCounters};
use stream::ClientStream;
use upstream::{AcquireError, Upstream, UpstreamPool};

/// Bytes read per socket read.
const READ_CHUNK: usize = 16 * 1024;
/// Body bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;

/// What a shard keeps for HTTP across config generations: the backend connection pool, the
/// shard's DNS (for DNS-over-HTTPS) and whether the shard is draining.
pub struct ShardHttp {
    /// Idle backend connections by address.
    pub pool: UpstreamPool,
    /// The shard's DNS state, which answers DoH requests.
    pub dns: Rc<crate::dns::ShardDns>,
    /// Set by a graceful stop: idle keep-alive connections close within a second, busy ones
    /// after their current response (`Connection: close`).
    pub draining: std::cell::Cell<bool>,
}

impl ShardHttp {
    /// HTTP state for a shard whose DNS is `dns`.
    pub fn new(dns: Rc<crate::dns::ShardDns>) -> ShardHttp {
        ShardHttp { pool: UpstreamPool::default(), dns, draining: std::cell::Cell::new(false) }
    }
}

thread_local! {
    /// This shard's `Date` for the current second, formatted once per second (as nginx
    /// caches its time strings).
    static DATE: std::cell::Cell<HttpDate> = std::cell::Cell::new(HttpDate::from_unix_secs(0));
}

/// The `Date` of a response made or forwarded now.
pub(crate) fn date_now() -> HttpDate {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    DATE.with(|cached| {
        let date = cached.get();
        if date.unix_secs() == secs {
            return date;
        }
        let date = HttpDate::from_unix_secs(secs);
        cached.set(date);
        date
    })
}

/// How often an idle keep-alive connection looks at the drain flag.
const DRAIN_POLL: Duration = Duration::from_secs(1);

/// Per-generation state of one HTTP route on a shard: its `limits`.
#[derive(Default, Debug)]
pub struct HttpRouteLimits {
    requests: Option<RefCell<RateLimiter>>,
    connections: Option<RefCell<ConnectionLimiter>>,
}

impl HttpRouteLimits {
    /// Limiters for `limits` (the connection limit is shared out across shards).
    pub fn new(limits: &RouteLimits, shard_count: usize) -> HttpRouteLimits {
        HttpRouteLimits {
            requests: limits.requests.map(|c| RefCell::new(RateLimiter::new(c))),
            connections: limits
                .connections_per_ip
                .map(|n| RefCell::new(ConnectionLimiter::new(n.div_ceil(shard_count.max(1) as u32).max(1)))),
        }
    }
}

/// A connection slot held against a route's `connections_per_ip`, released on drop.
struct HeldSlot {
    state: Rc<RouteState>,
    route: RouteId,
    slot: Option<ConnectionSlot>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        if let (Some(slot), Some(runtime)) = (self.slot.take(), self.state.runtimes.get(self.route)) {
            if let Some(limiter) = &runtime.http_limits.connections {
                limiter.borrow_mut().release(slot);
            }
        }
    }
}

/// Who and where a connection is.
pub struct ConnectionInfo {
    /// The client.
    pub peer: SocketAddr,
    /// Our address it connected to.
    pub local: SocketAddr,
}

/// A growing read buffer: unread bytes are `buf[start..end]`, `buf[end..]` is room for the
/// next read. The room is zeroed once when the buffer grows, not before every read, and a
/// read that is abandoned (a timer, a drain) leaves the buffer as it was.
#[derive(Default)]
pub(crate) struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// Least room offered to a read; the buffer grows (or compacts) to have it.
const MIN_READ_ROOM: usize = 4 * 1024;

impl InBuf {
    /// A buffer holding `bytes` as unread data.
    pub(crate) fn holding(bytes: Vec<u8>) -> InBuf {
        InBuf { end: bytes.len(), buf: bytes, start: 0 }
    }

    /// A shard's spare buffer (see [`InBuf::recycle`]), or a new one.
    fn reused() -> InBuf {
        SPARE_BUFFERS.with(|spare| spare.borrow_mut().pop()).unwrap_or_default()
    }

    /// Gives an emptied buffer back for [`InBuf::reused`] (up to a few per shard).
    fn recycle(mut self) {
        self.start = 0;
        self.end = 0;
        if self.buf.len() <= 4 * READ_CHUNK {
            let _ = SPARE_BUFFERS.try_with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < SPARE_BUFFER_COUNT {
                    spare.push(self);
                }
            });
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for one read; call [`InBuf::filled`] with what was read into it.
    fn spare(&mut self) -> &mut [u8] {
        if self.buf.len() - self.end < MIN_READ_ROOM {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < MIN_READ_ROOM {
                let grown = (self.end + READ_CHUNK).max(self.buf.len() * 2);
                self.buf.resize(grown, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    fn take_all(&mut self) -> Vec<u8> {
        let rest = self.data().to_vec();
        self.start = 0;
        self.end = 0;
        rest
    }
}

/// Spare buffers a shard keeps for backend responses.
const SPARE_BUFFER_COUNT: usize = 64;

thread_local! {
    static SPARE_BUFFERS: RefCell<Vec<InBuf>> = const { RefCell::new(Vec::new()) };
}

/// Why a read ended without bytes.
pub(crate) enum ReadEnd {
    Eof,
    Timeout,
    Failed(io::Error),
}

async fn with_deadline<T>(deadline: Instant, work: impl std::future::Future<Output = io::Result<T>>) -> Result<T, ReadEnd> {
    let timer = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        Err(ReadEnd::Timeout)
    };
    future::or(async { work.await.map_err(ReadEnd::Failed) }, timer).await
}

pub(crate) async fn fill_client(inbuf: &mut InBuf, client: &mut ClientStream, deadline: Instant) -> Result<usize, ReadEnd> {
    let spare = inbuf.spare();
    let result = with_deadline(deadline, client.read(spare)).await;
    if let Ok(n) = result {
        inbuf.filled(n);
    }
    match result {
        Ok(0) => Err(ReadEnd::Eof),
        other => other,
    }
}

async fn fill_upstream(inbuf: &mut InBuf, upstream: &mut TcpStream, timeout: Duration) -> Result<usize, ReadEnd> {
    let spare = inbuf.spare();
    let result = with_deadline(Instant::now() + timeout, upstream.read(spare)).await;
    if let Ok(n) = result {
        inbuf.filled(n);
    }
    match result {
        Ok(0) => Err(ReadEnd::Eof),
        other => other,
    }
}

/// What happens to the client connection after an exchange.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close (politely).
    Close,
    /// The connection became a tunnel and is finished.
    Done,
}

/// Serves HTTP/1.1 requests on `client` until it closes, times out, fails or a response
/// closes it. `first_bytes` were read before (they start the first request).
pub async fn serve(state: Rc<RouteState>, shard_http: Rc<ShardHttp>, info: ConnectionInfo, mut client: ClientStream, first_bytes: Vec<u8>) {
    let settings = &state.http;
    let mut parser = RequestParser::new(settings.limits);
    let mut inbuf = InBuf::holding(first_bytes);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut slots: Vec<HeldSlot> = Vec::new();
    let mut idle_deadline = Instant::now() + settings.header_timeout;
    loop {
        // The request head: the keep-alive timeout runs until its first byte arrives (looking
        // at the drain flag every second), then the header timeout for the whole head. The
        // idle wait is a read itself: an abandoned read loses nothing (see `InBuf`).
        let mut head_deadline: Option<Instant> = None;
        let head = loop {
            if !inbuf.is_empty() {
                match parser.parse(inbuf.data()) {
                    Ok(ParseStatus::Complete { head, consumed }) => {
                        inbuf.consume(consumed);
                        parser.reset();
                        break head;
                    }
                    Ok(ParseStatus::Partial) => {}
                    Err(e) => {
                        tracing::debug!(peer = %info.peer, error = %e, "bad request head");
                        out.clear();
                        reply::error(e.status(), false, &date_now(), &mut out);
                        let _ = client.write_all(&out).await;
                        close_lingering(&mut client).await;
                        return;
                    }
                }
            }
            let now = Instant::now();
            let deadline = if inbuf.is_empty() {
                if shard_http.draining.get() || now >= idle_deadline {
                    client.close().await;
                    return;
                }
                idle_deadline.min(now + DRAIN_POLL)
            } else {
                *head_deadline.get_or_insert(now + settings.header_timeout)
            };
            match fill_client(&mut inbuf, &mut client, deadline).await {
                Ok(_) => {}
                // Idle between requests: look at the drain flag and the keep-alive deadline.
                Err(ReadEnd::Timeout) if inbuf.is_empty() && head_deadline.is_none() => {}
                Err(ReadEnd::Timeout) if !inbuf.is_empty() => {
                    out.clear();
                    reply::error(ErrorStatus::RequestTimeout, false, &date_now(), &mut out);
                    let _ = client.write_all(&out).await;
                    close_lingering(&mut client).await;
                    return;
                }
                // Readable but nothing came (TLS records that were not data) within the header
                // timeout, or the client closed between requests: close quietly.
                Err(ReadEnd::Timeout) | Err(ReadEnd::Eof) => {
                    client.close().await;
                    return;
                }
                Err(ReadEnd::Failed(_)) => return,
            }
        };
        let request_started = Instant::now();
        let next = match answer(&state, &shard_http, &info, &mut client, &mut inbuf, &mut out, &mut slots, head).await {
            Ok(next) => {
                crate::latency::record_since(crate::latency::Operation::HttpRequest, request_started);
                next
            }
            Err(e) => {
                tracing::debug!(peer = %info.peer, error = %e, "HTTP connection ended by an error");
                return;
            }
        };
        match next {
            Next::KeepAlive => idle_deadline = Instant::now() + settings.keepalive_timeout,
            Next::Close => {
                close_lingering(&mut client).await;
                return;
            }
            Next::Done => return,
        }
    }
}

/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Closes our side, then reads and discards what the client still sends (a request body we
/// did not read) for a moment, as nginx's `lingering_close` does: closing a socket with unread
/// bytes sends a reset, which can destroy the answer before the client reads it.
async fn close_lingering(client: &mut ClientStream) {
    client.close().await;
    let deadline = Instant::now() + LINGER;
    let mut sink = InBuf::default();
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match fill_client(&mut sink, client, deadline).await {
            Ok(n) => {
                discarded += n;
                sink.consume(n);
            }
            Err(_) => return,
        }
    }
}

/// Counts a response status on the route.
fn count_status(counters: &RouteCounters, status: u16) {
    let cell = match status {
        0..=299 => &counters.http_2xx,
        300..=399 => &counters.http_3xx,
        400..=499 => &counters.http_4xx,
        _ => &counters.http_5xx,
    };
    bump(cell, 1);
}

/// Answers one request.
#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &Rc<RouteState>,
    shard_http: &ShardHttp,
    info: &ConnectionInfo,
    client: &mut ClientStream,
    inbuf: &mut InBuf,
    out: &mut Vec<u8>,
    slots: &mut Vec<HeldSlot>,
    head: RequestHead,
) -> io::Result<Next> {
    let has_body = !matches!(head.framing, BodyFraming::None | BodyFraming::ContentLength(0));
    // A request we answer ourselves leaves its body unread: close after the answer.
    let local_keep_alive = head.connection.keep_alive && !has_body && !shard_http.draining.get();
    // ACME HTTP-01: the control core's tokens are answered before any route (so a route that
    // redirects everything to HTTPS does not hide them).
    if head.path().starts_with(crate::acme::http01::CHALLENGE_PATH.as_bytes()) {
        let path = String::from_utf8_lossy(head.path()).into_owned();
        if let Some(key_authorization) = crate::acme::http01::answer(&path) {
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            date_now().write_field(out);
            let _ = write!(
                out,
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n{}\r\n",
                key_authorization.len(),
                if local_keep_alive { "" } else { "Connection: close\r\n" }
            );
            if head.method != shardgate_http1::request::Method::Head {
                out.extend_from_slice(key_authorization.as_bytes());
            }
            client.write_all(out).await?;
            return Ok(if local_keep_alive { Next::KeepAlive } else { Next::Close });
        }
    }
    let host = head.host_name();
    if let Some(doh_domain) = state.doh_domain.as_deref() {
        if doh::is_doh_request(&head, host.as_deref(), doh_domain) && shard_http.dns.is_serving() {
            let deadline = Instant::now() + state.http.header_timeout;
            let keep = doh::answer(&shard_http.dns, &head, info.peer.ip(), client, inbuf, deadline, out).await?;
            return Ok(if keep { Next::KeepAlive } else { Next::Close });
        }
    }
    let route_id = state.table.select_request(info.local.port(), info.peer.ip(), client.is_tls(), host.as_deref(), head.path());
    let (Some(route_id), Some(route)) = (route_id, route_id.and_then(|id| state.table.route(id))) else {
        tracing::debug!(peer = %info.peer, host = ?host, "no HTTP route for the request");
        return local_reply(client, out, ErrorStatus::NotFound, local_keep_alive, None).await;
    };
    let Some(runtime) = state.runtimes.get(route_id) else {
        return local_reply(client, out, ErrorStatus::InternalServerError, false, None).await;
    };
    let counters = &runtime.counters;
    bump(&counters.http_requests, 1);
    if !route.security.permits(info.peer.ip()) {
        bump(&counters.refused, 1);
        crate::security_event!(INFO, "http.ip_refused", route = %route.name, peer = %info.peer, "request refused by ip rules");
        return local_reply(client, out, ErrorStatus::Forbidden, local_keep_alive, Some(counters)).await;
    }
    if let Some(limiter) = &runtime.http_limits.connections {
        if !slots.iter().any(|s| s.route == route_id && Rc::ptr_eq(&s.state, state)) {
            let acquired = limiter.borrow_mut().try_acquire(info.peer.ip());
            match acquired {
                Some(slot) => slots.push(HeldSlot { state: state.clone(), route: route_id, slot: Some(slot) }),
                None => {
                    bump(&counters.http_rate_limited, 1);
                    crate::security_event!(INFO, "http.connection_limit", route = %route.name, peer = %info.peer, "connection limit per client reached");
                    out.clear();
                    reply::too_many_requests(1, false, &date_now(), out);
                    count_status(counters, 429);
                    client.write_all(out).await?;
                    return Ok(Next::Close);
                }
            }
        }
    }
    if let Some(limiter) = &runtime.http_limits.requests {
        let decision = limiter.borrow_mut().check(info.peer.ip(), Instant::now());
        match decision {
            RateDecision::Allow => {}
            RateDecision::Delay(wait) => glommio::timer::sleep(wait).await,
            RateDecision::Reject { retry_after_secs } => {
                bump(&counters.http_rate_limited, 1);
                crate::security_event!(INFO, "http.rate_limited", route = %route.name, peer = %info.peer, "request rate limit reached");
                out.clear();
                let keep = reply::too_many_requests(retry_after_secs, local_keep_alive, &date_now(), out);
                count_status(counters, 429);
                client.write_all(out).await?;
                return Ok(if keep { Next::KeepAlive } else { Next::Close });
            }
        }
    }
    match &route.action {
        RouteAction::Reject => {
            bump(&counters.rejected, 1);
            local_reply(client, out, ErrorStatus::Forbidden, local_keep_alive, Some(counters)).await
        }
        RouteAction::Redirect(redirect) => {
            out.clear();
            let location = redirect.to.expand(&head);
            if reply::redirect(redirect.status, &location, local_keep_alive, &date_now(), out).is_err() {
                return local_reply(client, out, ErrorStatus::BadRequest, false, Some(counters)).await;
            }
            count_status(counters, redirect.status);
            client.write_all(out).await?;
            Ok(if local_keep_alive { Next::KeepAlive } else { Next::Close })
        }
        RouteAction::Serve(serve) => {
            let served = files::serve_file(serve, &head, local_keep_alive, client, out).await?;
            count_status(counters, served.status);
            Ok(if served.keep_alive { Next::KeepAlive } else { Next::Close })
        }
        RouteAction::Forward(forward) => {
            forward_request(state, shard_http, info, route, runtime, forward, client, inbuf, out, head).await
        }
    }
}

async fn local_reply(client: &mut ClientStream, out: &mut Vec<u8>, status: ErrorStatus, keep_alive: bool, counters: Option<&RouteCounters>) -> io::Result<Next> {
    out.clear();
    let keep = reply::error(status, keep_alive, &date_now(), out);
    if let Some(c) = counters {
        count_status(c, status.code());
    }
    client.write_all(out).await?;
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// How a forwarded exchange failed before a response head reached the client.
enum ExchangeError {
    /// Answer the client with this status and close.
    Status(ErrorStatus),
    /// The pooled connection failed before any response byte: try again on a new one.
    RetryFresh,
    /// The client went away or failed: just close.
    Client(io::Error),
}

/// Forwards one request to the route's backends and streams the response back.
#[allow(clippy::too_many_arguments)]
async fn forward_request(
    state: &Rc<RouteState>,
    shard_http: &ShardHttp,
    info: &ConnectionInfo,
    route: &Route,
    runtime: &RouteRuntime,
    forward: &Forward,
    client: &mut ClientStream,
    inbuf: &mut InBuf,
    out: &mut Vec<u8>,
    head: RequestHead,
) -> io::Result<Next> {
    let settings = &state.http;
    if let Some(limit) = runtime.shard_limit {
        if runtime.counters.active.get() >= limit {
            bump(&runtime.counters.limited, 1);
            return local_reply(client, out, ErrorStatus::ServiceUnavailable, false, Some(&runtime.counters)).await;
        }
    }
    let _active = ActiveGuard::new(&runtime.counters);
    let mut fresh = false;
    loop {
        let mut upstream = match upstream::acquire(forward, runtime, &shard_http.pool, info.local.port(), settings.upstream_keepalive_timeout, fresh).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(route = %route.name, peer = %info.peer, "no backend could be connected");
                let status = match e {
                    AcquireError::TimedOut => ErrorStatus::GatewayTimeout,
                    AcquireError::Unreachable => ErrorStatus::BadGateway,
                };
                return local_reply(client, out, status, false, Some(&runtime.counters)).await;
            }
        };
        runtime.balancer.opened(upstream.target);
        let result = exchange(settings, info, runtime, forward, &mut upstream, client, inbuf, out, &head, !shard_http.draining.get()).await;
        runtime.balancer.closed(upstream.target);
        if upstream.reusable {
            shard_http.pool.put(upstream.addr, upstream.stream, settings.upstream_idle_per_target);
        }
        match result {
            Ok(next) => return Ok(next),
            Err(ExchangeError::RetryFresh) if !fresh => {
                tracing::debug!(route = %route.name, "pooled backend connection was closed; retrying on a new one");
                fresh = true;
            }
            Err(ExchangeError::RetryFresh) => {
                return local_reply(client, out, ErrorStatus::BadGateway, false, Some(&runtime.counters)).await;
            }
            Err(ExchangeError::Status(status)) => {
                tracing::info!(route = %route.name, peer = %info.peer, status = status.code(), "backend exchange failed");
                return local_reply(client, out, status, false, Some(&runtime.counters)).await;
            }
            Err(ExchangeError::Client(e)) => return Err(e),
        }
    }
}

/// Keeps a route's `active` count while an exchange runs.
struct ActiveGuard<'a>(&'a RouteCounters);

impl<'a> ActiveGuard<'a> {
    fn new(counters: &'a RouteCounters) -> Self {
        bump(&counters.active, 1);
        ActiveGuard(counters)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}

fn upstream_read_error(end: ReadEnd, retryable: bool) -> ExchangeError {
    match end {
        ReadEnd::Timeout => ExchangeError::Status(ErrorStatus::GatewayTimeout),
        ReadEnd::Eof | ReadEnd::Failed(_) if retryable => ExchangeError::RetryFresh,
        ReadEnd::Eof | ReadEnd::Failed(_) => ExchangeError::Status(ErrorStatus::BadGateway),
    }
}

/// One request/response exchange on `upstream`.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    settings: &HttpSettings,
    info: &ConnectionInfo,
    runtime: &RouteRuntime,
    forward: &Forward,
    upstream: &mut Upstream,
    client: &mut ClientStream,
    inbuf: &mut InBuf,
    out: &mut Vec<u8>,
    head: &RequestHead,
    server_keep_alive: bool,
) -> Result<Next, ExchangeError> {
    let counters = &runtime.counters;
    let has_body = !matches!(head.framing, BodyFraming::None | BodyFraming::ContentLength(0));
    // Only a body-less request can be replayed on a new connection.
    let retryable = upstream.reused && !has_body;
    let context = ForwardingContext {
        client_ip: info.peer.ip(),
        proto: if client.is_tls() { Scheme::Https } else { Scheme::Http },
        trust_incoming_forwarded: settings.trust_forwarded,
        upstream_keep_alive: true,
    };
    out.clear();
    rewrite::write_upstream_request(head, &context, out);
    if let Err(e) = upstream.stream.write_all(out).await {
        tracing::debug!(backend = %upstream.addr, error = %e, "writing the request head failed");
        return Err(if retryable { ExchangeError::RetryFresh } else { ExchangeError::Status(ErrorStatus::BadGateway) });
    }
    if has_body {
        if head.connection.expect_continue && inbuf.is_empty() {
            client.write_all(reply::CONTINUE).await.map_err(ExchangeError::Client)?;
        }
        send_request_body(settings, upstream, client, inbuf, out, head.framing, counters).await?;
    }

    // The response.
    let mut upbuf = InBuf::reused();
    let result = exchange_response(settings, runtime, forward, upstream, client, inbuf, out, head, server_keep_alive, retryable, &mut upbuf).await;
    upbuf.recycle();
    result
}

/// The response half of [`exchange`], read through `upbuf`.
#[allow(clippy::too_many_arguments)]
async fn exchange_response(
    settings: &HttpSettings,
    runtime: &RouteRuntime,
    forward: &Forward,
    upstream: &mut Upstream,
    client: &mut ClientStream,
    inbuf: &mut InBuf,
    out: &mut Vec<u8>,
    head: &RequestHead,
    server_keep_alive: bool,
    retryable: bool,
    upbuf: &mut InBuf,
) -> Result<Next, ExchangeError> {
    let counters = &runtime.counters;
    let mut parser = ResponseParser::new(shardgate_http1::Limits { max_body_bytes: None, ..shardgate_http1::Limits::default() });
    let mut got_bytes = false;
    loop {
        let parsed = parser.parse(upbuf.data(), head.response_context()).map_err(|e: Http1Error| {
            tracing::info!(backend = %upstream.addr, error = %e, "invalid response from the backend");
            ExchangeError::Status(e.upstream_status())
        })?;
        let (response, consumed) = match parsed {
            ParseStatus::Complete { head: response, consumed } => (response, consumed),
            ParseStatus::Partial => {
                match fill_upstream(upbuf, &mut upstream.stream, settings.upstream_timeout).await {
                    Ok(_) => got_bytes = true,
                    Err(end) => return Err(upstream_read_error(end, retryable && !got_bytes)),
                }
                continue;
            }
        };
        upbuf.consume(consumed);
        parser.reset();
        out.clear();
        let plan = rewrite::write_client_response(&response, head, server_keep_alive, &date_now(), out);
        match response.class {
            ResponseClass::Interim => {
                if plan.head_written {
                    client.write_all(out).await.map_err(ExchangeError::Client)?;
                }
                continue;
            }
            ResponseClass::SwitchingProtocols => {
                count_status(counters, response.status);
                client.write_all(out).await.map_err(ExchangeError::Client)?;
                if !upbuf.is_empty() {
                    client.write_all(upbuf.data()).await.map_err(ExchangeError::Client)?;
                }
                let pending = inbuf.take_all();
                if !pending.is_empty() {
                    upstream.stream.write_all(&pending).await.map_err(|_| ExchangeError::Status(ErrorStatus::BadGateway))?;
                }
                tunnel(client, &mut upstream.stream, forward.idle_timeout, counters).await;
                return Ok(Next::Done);
            }
            ResponseClass::Final => {}
        }
        count_status(counters, response.status);
        // From here on the client has (or will have) our head: failures just close.
        let complete = send_response_body(settings, upstream, client, upbuf, out, response.framing, plan.framing, counters).await?;
        upstream.reusable = complete && response.connection.keep_alive && response.framing != BodyFraming::UntilClose && upbuf.is_empty();
        return Ok(if plan.keep_alive && complete { Next::KeepAlive } else { Next::Close });
    }
}

/// A stand-in left in an [`Upstream`] whose connection went back to the pool: a socket that
/// was never connected (dropping it just closes it).
fn placeholder_stream() -> Result<TcpStream, ExchangeError> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| ExchangeError::Client(io::Error::other(e)))?;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is a fresh socket whose ownership moves to the stream.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// Streams the request body to the backend with its framing re-made.
async fn send_request_body(
    settings: &HttpSettings,
    upstream: &mut Upstream,
    client: &mut ClientStream,
    inbuf: &mut InBuf,
    out: &mut Vec<u8>,
    framing: BodyFraming,
    counters: &RouteCounters,
) -> Result<(), ExchangeError> {
    let body_deadline = || Instant::now() + settings.keepalive_timeout;
    let backend_failed = |e: io::Error| {
        tracing::debug!(error = %e, "writing the request body to the backend failed");
        ExchangeError::Status(ErrorStatus::BadGateway)
    };
    match framing {
        BodyFraming::ContentLength(mut left) => {
            while left > 0 {
                if inbuf.is_empty() {
                    match fill_client(inbuf, client, body_deadline()).await {
                        Ok(_) => {}
                        Err(ReadEnd::Failed(e)) => return Err(ExchangeError::Client(e)),
                        Err(_) => return Err(ExchangeError::Client(io::Error::new(io::ErrorKind::UnexpectedEof, "client ended the request body early"))),
                    }
                }
                let take = (inbuf.data().len() as u64).min(left) as usize;
                upstream.stream.write_all(&inbuf.data()[..take]).await.map_err(backend_failed)?;
                bump(&counters.bytes_upstream, take as u64);
                inbuf.consume(take);
                left -= take as u64;
            }
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new(settings.limits.max_body_bytes);
            loop {
                out.clear();
                let mut done = false;
                while !inbuf.is_empty() && !done {
                    let step = match decoder.decode(inbuf.data()) {
                        Ok(step) => step,
                        Err(e) => {
                            // The backend already has a partial request: it cannot be reused.
                            return Err(ExchangeError::Status(e.status()));
                        }
                    };
                    if !step.data.is_empty() {
                        bump(&counters.bytes_upstream, step.data.len() as u64);
                        chunked::encode_chunk(step.data, out);
                    }
                    done = step.done;
                    inbuf.consume(step.consumed);
                }
                if done {
                    chunked::encode_last_chunk(decoder.trailers(), out);
                }
                if !out.is_empty() {
                    upstream.stream.write_all(out).await.map_err(backend_failed)?;
                }
                if done {
                    break;
                }
                match fill_client(inbuf, client, body_deadline()).await {
                    Ok(_) => {}
                    Err(ReadEnd::Failed(e)) => return Err(ExchangeError::Client(e)),
                    Err(_) => return Err(ExchangeError::Client(io::Error::new(io::ErrorKind::UnexpectedEof, "client ended the chunked body early"))),
                }
            }
        }
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    Ok(())
}

/// Streams the response body (its head is in `out`, not yet sent) to the client, re-framed
/// as `to`. Returns whether the backend's body was read completely.
#[allow(clippy::too_many_arguments)]
async fn send_response_body(
    settings: &HttpSettings,
    upstream: &mut Upstream,
    client: &mut ClientStream,
    upbuf: &mut InBuf,
    out: &mut Vec<u8>,
    from: BodyFraming,
    to: BodyFraming,
    counters: &RouteCounters,
) -> Result<bool, ExchangeError> {
    let chunk_out = to == BodyFraming::Chunked;
    let emit = |data: &[u8], out: &mut Vec<u8>| {
        if chunk_out {
            chunked::encode_chunk(data, out);
        } else {
            out.extend_from_slice(data);
        }
    };
    let complete = match from {
        BodyFraming::None => true,
        BodyFraming::ContentLength(mut left) => {
            loop {
                let take = (upbuf.data().len() as u64).min(left) as usize;
                if take > 0 {
                    out.extend_from_slice(&upbuf.data()[..take]);
                    bump(&counters.bytes_downstream, take as u64);
                    upbuf.consume(take);
                    left -= take as u64;
                }
                if left == 0 {
                    break true;
                }
                if out.len() >= WRITE_BATCH {
                    client.write_all(out).await.map_err(ExchangeError::Client)?;
                    out.clear();
                }
                match fill_upstream(upbuf, &mut upstream.stream, settings.upstream_timeout).await {
                    Ok(_) => {}
                    Err(_) => break false,
                }
            }
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new(None);
            loop {
                let mut done = false;
                while !upbuf.is_empty() && !done {
                    let step = match decoder.decode(upbuf.data()) {
                        Ok(step) => step,
                        Err(e) => {
                            tracing::info!(backend = %upstream.addr, error = %e, "invalid chunked body from the backend");
                            client.write_all(out).await.map_err(ExchangeError::Client)?;
                            return Ok(false);
                        }
                    };
                    if !step.data.is_empty() {
                        bump(&counters.bytes_downstream, step.data.len() as u64);
                        emit(step.data, out);
                    }
                    done = step.done;
                    upbuf.consume(step.consumed);
                }
                if done {
                    if chunk_out {
                        chunked::encode_last_chunk(decoder.trailers(), out);
                    }
                    break true;
                }
                if out.len() >= WRITE_BATCH || !out.is_empty() && upbuf.is_empty() {
                    client.write_all(out).await.map_err(ExchangeError::Client)?;
                    out.clear();
                }
                match fill_upstream(upbuf, &mut upstream.stream, settings.upstream_timeout).await {
                    Ok(_) => {}
                    Err(_) => break false,
                }
            }
        }
        BodyFraming::UntilClose => loop {
            if !upbuf.is_empty() {
                bump(&counters.bytes_downstream, upbuf.data().len() as u64);
                emit(upbuf.data(), out);
                upbuf.consume(upbuf.data().len());
            }
            if !out.is_empty() {
                client.write_all(out).await.map_err(ExchangeError::Client)?;
                out.clear();
            }
            match fill_upstream(upbuf, &mut upstream.stream, settings.upstream_timeout).await {
                Ok(_) => {}
                Err(ReadEnd::Eof) => {
                    if chunk_out {
                        out.extend_from_slice(chunked::LAST_CHUNK);
                    }
                    break true;
                }
                Err(_) => break false,
            }
        },
    };
    if !out.is_empty() {
        client.write_all(out).await.map_err(ExchangeError::Client)?;
        out.clear();
    }
    Ok(complete)
}

/// After a 101: bytes both ways until either side ends or the route's idle timeout passes.
async fn tunnel(client: &mut ClientStream, upstream: &mut TcpStream, idle: Duration, counters: &RouteCounters) {
    let up = |n| bump(&counters.bytes_upstream, n);
    let down = |n| bump(&counters.bytes_downstream, n);
    let end = match client {
        ClientStream::Plain(tcp) => relay(tcp, false, upstream, false, idle, up, down).await,
        ClientStream::Ktls(tcp) => relay(tcp, true, upstream, false, idle, up, down).await,
        ClientStream::Rustls(_) => {
            let Ok(placeholder) = placeholder_stream() else { return };
            let ClientStream::Rustls(mut session) = std::mem::replace(client, ClientStream::Plain(placeholder)) else {
                return;
            };
            // Plaintext rustls already decrypted goes first.
            let mut early = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut session.conn.reader(), &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => early.extend_from_slice(&chunk[..n]),
                    Err(_) => break,
                }
            }
            if !early.is_empty() && upstream.write_all(&early).await.is_err() {
                return;
            }
            let stream::RustlsStream { mut tcp, conn, pending, .. } = *session;
            crate::tls::relay::relay_userspace(&mut tcp, conn, pending, upstream, idle, up, down).await
        }
    };
    if let RelayEnd::Failed(e) = end {
        tracing::debug!(error = %e, "tunnel ended by an error");
    }
}
