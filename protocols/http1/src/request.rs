//! Request heads: bytes from a client in, a validated [`RequestHead`] out.
//!
//! Owns: the request line and header section rules a reverse proxy at the edge must enforce —
//! limits (414/431), the request-smuggling defences (Content-Length vs Transfer-Encoding,
//! duplicate lengths, unknown codings, obs-fold, whitespace before the colon, bare LF), the
//! target forms (origin, absolute with Host taken from it, asterisk for OPTIONS; CONNECT
//! refused), Host presence and syntax, and the body framing and connection options the proxy
//! loop acts on. httparse does the tokenising; this module decides what the tokens mean.
//!
//! Does not own: reading the body (see [`crate::chunked`] and [`BodyFraming`]), or choosing a
//! route (the caller looks at [`RequestHead::host`] and [`RequestHead::path`]).

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::head::{
    classify_header_name_error, content_length, is_exactly_chunked, span_within, HeadScanner,
    HeaderList, MAX_HEADERS_CAP,
};
use crate::{BodyFraming, ConnectionOptions, Http1Error, Limits, ParseStatus, Version};

/// A request method. Methods outside this list are kept as [`Method::Extension`]; their
/// bytes are in [`RequestHead::method_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD — the response never has a body.
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PATCH
    Patch,
    /// Any other token (WebDAV methods and the like); forwarded as received.
    Extension,
}

impl Method {
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            _ => Method::Extension,
        }
    }
}

/// Which form the request target had (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://host/path?query` — the Host comes from the authority, the Host field is ignored.
    Absolute,
    /// `*`, only with OPTIONS.
    Asterisk,
}

/// The scheme of an absolute-form target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A validated request head. Everything in it has passed the rules of this module: its
/// framing is unambiguous, its Host is present (HTTP/1.1) and well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The form the target was sent in.
    pub target_form: TargetForm,
    /// For absolute-form targets, the scheme the client named.
    pub target_scheme: Option<Scheme>,
    /// How the request body is delimited: never `UntilClose` for a request.
    pub framing: BodyFraming,
    /// What `Connection`, `Upgrade` and `Expect` ask for.
    pub connection: ConnectionOptions,
    /// The header fields as received.
    pub headers: HeaderList,
    method_span: Range<usize>,
    target_span: Range<usize>,
    /// The origin-form part of the target (path and query).
    path_span: Range<usize>,
    /// The effective authority: from the absolute-form target, else from the Host field.
    host_span: Option<Range<usize>>,
}

impl RequestHead {
    /// The method as sent (for [`Method::Extension`]).
    pub fn method_bytes(&self) -> &[u8] {
        self.headers.slice(&self.method_span)
    }

    /// The request target exactly as sent.
    pub fn target(&self) -> &[u8] {
        self.headers.slice(&self.target_span)
    }

    /// The path and query in origin form (`/` for an absolute-form target without a path,
    /// `*` for the asterisk form) — what is sent upstream.
    pub fn path(&self) -> &[u8] {
        self.headers.slice(&self.path_span)
    }

    /// The effective `host[:port]` (absolute-form authority wins over the Host field);
    /// `None` only for HTTP/1.0 requests without Host.
    pub fn host(&self) -> Option<&[u8]> {
        self.host_span.as_ref().map(|r| self.headers.slice(r))
    }

    /// The host without its port and without IPv6 brackets, lower-cased, for routing.
    pub fn host_name(&self) -> Option<String> {
        let host = self.host()?;
        let name = split_host_port(host).0;
        let name = name
            .strip_prefix(b"[")
            .and_then(|n| n.strip_suffix(b"]"))
            .unwrap_or(name);
        Some(String::from_utf8_lossy(name).to_ascii_lowercase())
    }

    /// What a response parser must know about this request.
    pub fn response_context(&self) -> crate::response::ResponseContext {
        crate::response::ResponseContext {
            head_request: self.method == Method::Head,
            upgrade_requested: self.connection.upgrade.is_some(),
        }
    }
}

/// Parses request heads from a client connection's read buffer, incrementally.
///
/// The caller owns the buffer: append what the socket gave, call [`RequestParser::parse`]
/// with the whole unread buffer, and on `Complete { consumed, .. }` drop `consumed` bytes
/// (the body or a pipelined request follows). The parser remembers how far it has scanned,
/// so a head that trickles in is scanned once; httparse runs once, when the head is whole.
#[derive(Debug, Clone, Default)]
pub struct RequestParser {
    limits: Limits,
    scanner: HeadScanner,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            scanner: HeadScanner::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets any partial scan (after the caller discarded its buffer).
    pub fn reset(&mut self) {
        self.scanner = HeadScanner::default();
    }

    /// Parses the head at the start of `buf`. On error, answer with
    /// [`Http1Error::status`] and close the connection.
    pub fn parse(&mut self, buf: &[u8]) -> Result<ParseStatus<RequestHead>, Http1Error> {
        let Some(end) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(ParseStatus::Partial);
        };
        let head = parse_complete_head(&buf[..end], &self.limits)?;
        Ok(ParseStatus::Complete {
            head,
            consumed: end,
        })
    }
}

/// Parses a complete head (`head` ends with the empty line). A later HTTP/1.x minor version
/// (`HTTP/1.2` … `HTTP/1.9`) is taken as HTTP/1.1, the highest 1.x we implement (RFC 9112
/// §2.3; nginx and HAProxy answer such requests too). Other versions are refused with 505.
fn parse_complete_head(head: &[u8], limits: &Limits) -> Result<RequestHead, Http1Error> {
    match parse_head_as_written(head, limits) {
        Err(Http1Error::UnsupportedVersion) => match later_minor_version_at(head) {
            Some(at) => {
                // Same length, same offsets: the spans in the result fit `head` as well.
                let mut as_http11 = head.to_vec();
                as_http11[at] = b'1';
                parse_head_as_written(&as_http11, limits)
            }
            None => Err(Http1Error::UnsupportedVersion),
        },
        other => other,
    }
}

/// Where the minor digit of an `HTTP/1.<2-9>` request-line version is, if the line has one.
fn later_minor_version_at(head: &[u8]) -> Option<usize> {
    let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = &head[..line_end];
    // " HTTP/1.d": the separator, then 8 bytes of version.
    let version = line.get(line.len().checked_sub(9)?..)?;
    version.starts_with(b" HTTP/1.").then_some(())?;
    let digit = *version.get(8)?;
    (b'2'..=b'9').contains(&digit).then_some(line_end - 1)
}

fn parse_head_as_written(head: &[u8], limits: &Limits) -> Result<RequestHead, Http1Error> {
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut scratch = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, head, &mut scratch[..max_headers])
        .map_err(|e| match e {
            httparse::Error::HeaderName => classify_header_name_error(head),
            httparse::Error::HeaderValue => Http1Error::InvalidHeaderValue,
            httparse::Error::Token => Http1Error::InvalidMethod,
            httparse::Error::Version => Http1Error::UnsupportedVersion,
            httparse::Error::TooManyHeaders => Http1Error::TooManyHeaders { limit: max_headers },
            httparse::Error::NewLine | httparse::Error::Status => Http1Error::MalformedRequestLine,
        })?;
    if status.is_partial() {
        return Err(Http1Error::MalformedRequestLine);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Http1Error::MalformedRequestLine);
    };
    let version = Version::from_minor(minor)?;
    let method_span = span_within(head, method.as_bytes());
    let target_span = span_within(head, target.as_bytes());
    let method_kind = Method::from_token(method);
    if method == "CONNECT" {
        return Err(Http1Error::ConnectNotSupported);
    }
    let headers = HeaderList::from_httparse(head, req.headers);

    // Target form; for absolute form the authority becomes the Host.
    let target_bytes = target.as_bytes();
    let (target_form, target_scheme, path_span, authority_span) =
        if target_bytes.first() == Some(&b'/') {
            (TargetForm::Origin, None, target_span.clone(), None)
        } else if target_bytes == b"*" {
            if method_kind != Method::Options {
                return Err(Http1Error::InvalidTarget {
                    reason: "`*` is only allowed with OPTIONS",
                });
            }
            (TargetForm::Asterisk, None, target_span.clone(), None)
        } else {
            let (scheme, rest_offset) = if starts_with_ignore_case(target_bytes, b"http://") {
                (Scheme::Http, 7)
            } else if starts_with_ignore_case(target_bytes, b"https://") {
                (Scheme::Https, 8)
            } else {
                return Err(Http1Error::InvalidTarget {
                    reason: "expected `/path`, `http(s)://host/path` or `*`",
                });
            };
            let rest = &target_bytes[rest_offset..];
            let authority_len = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?' || b == b'#')
                .unwrap_or(rest.len());
            let authority_start = target_span.start + rest_offset;
            let authority = authority_start..authority_start + authority_len;
            if authority_len == 0 {
                return Err(Http1Error::InvalidTarget {
                    reason: "absolute-form target without a host",
                });
            }
            if rest[..authority_len].contains(&b'@') {
                return Err(Http1Error::InvalidTarget {
                    reason: "userinfo in target",
                });
            }
            // A path that starts with '?' (no '/') is sent upstream as-is; '/' is implied by
            // write_upstream_request when the path is empty or starts with '?'.
            let path = authority.end..target_span.end;
            (TargetForm::Absolute, Some(scheme), path, Some(authority))
        };

    // Host (RFC 9112 §3.2): exactly one on HTTP/1.1, and well-formed.
    let host_field_count = headers.count("host");
    if host_field_count > 1 {
        return Err(Http1Error::DuplicateHost);
    }
    let host_field_span = headers_span(&headers, "host");
    if host_field_count == 0 && version == Version::Http11 {
        return Err(Http1Error::MissingHost);
    }
    if let Some(span) = &host_field_span {
        if !is_valid_authority(headers.slice(span)) {
            return Err(Http1Error::InvalidHost);
        }
    }
    let host_span = match authority_span {
        Some(authority) => {
            if !is_valid_authority(headers.slice(&authority)) {
                return Err(Http1Error::InvalidHost);
            }
            Some(authority)
        }
        None => host_field_span.filter(|s| !s.is_empty()),
    };

    let framing = request_framing(&headers, version, limits)?;
    let connection = request_connection_options(&headers, version);
    Ok(RequestHead {
        method: method_kind,
        version,
        target_form,
        target_scheme,
        framing,
        connection,
        headers,
        method_span,
        target_span,
        path_span,
        host_span,
    })
}

/// The span of the first value of `name` inside `headers.raw()`.
fn headers_span(headers: &HeaderList, name: &str) -> Option<Range<usize>> {
    Some(span_within(headers.raw(), headers.get(name)?))
}

/// The body framing of a request (RFC 9112 §6.1–6.3, with nginx's strictness):
/// - Transfer-Encoding on HTTP/1.0 → 400;
/// - more than one Transfer-Encoding line → 400;
/// - a Transfer-Encoding other than exactly `chunked` → 501 (nginx "unknown Transfer-Encoding");
/// - Transfer-Encoding together with Content-Length → 400;
/// - Content-Length that is not digits, or lists/lines that differ → 400; over the limit → 413;
/// - neither → no body.
fn request_framing(
    headers: &HeaderList,
    version: Version,
    limits: &Limits,
) -> Result<BodyFraming, Http1Error> {
    let te_lines = headers.count("transfer-encoding");
    let length = content_length(headers);
    if te_lines > 0 {
        if version == Version::Http10 {
            return Err(Http1Error::TransferEncodingOnHttp10);
        }
        if te_lines > 1 {
            return Err(Http1Error::DuplicateTransferEncoding);
        }
        if !headers
            .get("transfer-encoding")
            .is_some_and(is_exactly_chunked)
        {
            return Err(Http1Error::UnsupportedTransferEncoding);
        }
        if headers.count("content-length") > 0 {
            return Err(Http1Error::ContentLengthWithTransferEncoding);
        }
        return Ok(BodyFraming::Chunked);
    }
    match length? {
        None => Ok(BodyFraming::None),
        Some(n) => {
            if let Some(limit) = limits.max_body_bytes {
                if n > limit {
                    return Err(Http1Error::BodyTooLarge { limit });
                }
            }
            Ok(BodyFraming::ContentLength(n))
        }
    }
}

/// Keep-alive (HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`), Upgrade (needs
/// HTTP/1.1, the `upgrade` connection option and an Upgrade field) and 100-continue.
fn request_connection_options(headers: &HeaderList, version: Version) -> ConnectionOptions {
    let close = headers.has_token("connection", "close");
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => !close && headers.has_token("connection", "keep-alive"),
    };
    let upgrade = (version == Version::Http11 && headers.has_token("connection", "upgrade"))
        .then(|| headers.get("upgrade"))
        .flatten()
        .filter(|v| !v.is_empty())
        .map(<[u8]>::to_vec);
    let expect_continue = version == Version::Http11
        && headers
            .get_all("expect")
            .any(|v| crate::head::trim_ows(v).eq_ignore_ascii_case(b"100-continue"));
    ConnectionOptions {
        keep_alive,
        upgrade,
        expect_continue,
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Splits `host[:port]` / `[v6][:port]` into host and optional port bytes.
pub(crate) fn split_host_port(authority: &[u8]) -> (&[u8], Option<&[u8]>) {
    if authority.first() == Some(&b'[') {
        if let Some(close) = authority.iter().position(|&b| b == b']') {
            let (host, rest) = authority.split_at(close + 1);
            return (host, rest.strip_prefix(b":"));
        }
        return (authority, None);
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
        None => (authority, None),
    }
}

/// `uri-host [":" port]` (RFC 3986): a reg-name / IPv4 or a bracketed IPv6 literal, and
/// a port of at most 5 digits. Empty is allowed (RFC 9112 §3.2) only as a Host field value.
fn is_valid_authority(authority: &[u8]) -> bool {
    if authority.is_empty() {
        return true;
    }
    let (host, port) = split_host_port(authority);
    if let Some(port) = port {
        if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    if let Some(inner) = host.strip_prefix(b"[") {
        let Some(inner) = inner.strip_suffix(b"]") else {
            return false;
        };
        return !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !host.is_empty()
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
}

/// Parses a whole request head with default limits, for other modules' tests.
#[cfg(test)]
pub(crate) fn test_head(bytes: &[u8]) -> RequestHead {
    match RequestParser::new(Limits::default()).parse(bytes) {
        Ok(ParseStatus::Complete { head, .. }) => head,
        other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests;
