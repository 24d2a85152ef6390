//! Canned responses the proxy writes itself: errors, 429 with Retry-After, 100 Continue and
//! redirects.
//!
//! Owns: the bytes of every response that does not come from a backend — status line,
//! `Date` (from the caller's [`HttpDate`]), `Content-Type: text/plain`, `Content-Length`, `Connection: close` when the connection
//! cannot continue, and a one-line body. Does not own the decision to send them: that is the
//! proxy loop, helped by [`crate::Http1Error::status`].

use std::io::Write;

use crate::date::HttpDate;
use crate::Http1Error;

/// The interim response sent before reading a body announced with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The error statuses the proxy can answer with on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 400: malformed or ambiguous request.
    BadRequest,
    /// 403: refused by policy (ip_block, ...).
    Forbidden,
    /// 404: no route or no file.
    NotFound,
    /// 405: method not allowed here (CONNECT; non-GET/HEAD on static files).
    MethodNotAllowed,
    /// 408: the client was too slow sending its head.
    RequestTimeout,
    /// 411: a body without Content-Length where one is required (DoH POST).
    LengthRequired,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 414: request line too long.
    UriTooLong,
    /// 415: a body of a media type this endpoint does not take (DoH POST).
    UnsupportedMediaType,
    /// 421: the Host does not belong to this TLS connection's certificate/route.
    MisdirectedRequest,
    /// 429: rate limited (use [`too_many_requests`] to add Retry-After).
    TooManyRequests,
    /// 431: header section too large or too many fields.
    RequestHeaderFieldsTooLarge,
    /// 500: our own fault.
    InternalServerError,
    /// 501: a Transfer-Encoding we do not implement.
    NotImplemented,
    /// 502: the backend sent something invalid or closed early.
    BadGateway,
    /// 503: no backend available or connection limit reached.
    ServiceUnavailable,
    /// 504: the backend did not answer in time.
    GatewayTimeout,
    /// 505: not HTTP/1.0 or HTTP/1.1.
    HttpVersionNotSupported,
}

impl ErrorStatus {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorStatus::BadRequest => 400,
            ErrorStatus::Forbidden => 403,
            ErrorStatus::NotFound => 404,
            ErrorStatus::MethodNotAllowed => 405,
            ErrorStatus::RequestTimeout => 408,
            ErrorStatus::LengthRequired => 411,
            ErrorStatus::UnsupportedMediaType => 415,
            ErrorStatus::PayloadTooLarge => 413,
            ErrorStatus::UriTooLong => 414,
            ErrorStatus::MisdirectedRequest => 421,
            ErrorStatus::TooManyRequests => 429,
            ErrorStatus::RequestHeaderFieldsTooLarge => 431,
            ErrorStatus::InternalServerError => 500,
            ErrorStatus::NotImplemented => 501,
            ErrorStatus::BadGateway => 502,
            ErrorStatus::ServiceUnavailable => 503,
            ErrorStatus::GatewayTimeout => 504,
            ErrorStatus::HttpVersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorStatus::BadRequest => "Bad Request",
            ErrorStatus::Forbidden => "Forbidden",
            ErrorStatus::NotFound => "Not Found",
            ErrorStatus::MethodNotAllowed => "Method Not Allowed",
            ErrorStatus::RequestTimeout => "Request Timeout",
            ErrorStatus::LengthRequired => "Length Required",
            ErrorStatus::UnsupportedMediaType => "Unsupported Media Type",
            ErrorStatus::PayloadTooLarge => "Content Too Large",
            ErrorStatus::UriTooLong => "URI Too Long",
            ErrorStatus::MisdirectedRequest => "Misdirected Request",
            ErrorStatus::TooManyRequests => "Too Many Requests",
            ErrorStatus::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            ErrorStatus::InternalServerError => "Internal Server Error",
            ErrorStatus::NotImplemented => "Not Implemented",
            ErrorStatus::BadGateway => "Bad Gateway",
            ErrorStatus::ServiceUnavailable => "Service Unavailable",
            ErrorStatus::GatewayTimeout => "Gateway Timeout",
            ErrorStatus::HttpVersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// Whether the connection must close after this reply whatever the client asked: the
    /// request's framing is unknown or untrusted (400, 408, 413, 414, 431, 501, 505) — the
    /// same set nginx closes on.
    pub fn forces_close(self) -> bool {
        matches!(
            self,
            ErrorStatus::BadRequest
                | ErrorStatus::RequestTimeout
                | ErrorStatus::LengthRequired
                | ErrorStatus::PayloadTooLarge
                | ErrorStatus::UriTooLong
                | ErrorStatus::RequestHeaderFieldsTooLarge
                | ErrorStatus::NotImplemented
                | ErrorStatus::HttpVersionNotSupported
        )
    }
}

/// Appends a complete error response for `status` to `out`. The connection is marked
/// `Connection: close` when `keep_alive` is false or the status forces it; returns whether
/// the connection may stay open afterwards.
pub fn error(status: ErrorStatus, keep_alive: bool, date: &HttpDate, out: &mut Vec<u8>) -> bool {
    write_error(status, keep_alive, date, &[], out)
}

/// Appends a `429 Too Many Requests` with `Retry-After: retry_after_secs` (at least 1).
pub fn too_many_requests(retry_after_secs: u64, keep_alive: bool, date: &HttpDate, out: &mut Vec<u8>) -> bool {
    let mut extra = Vec::with_capacity(24);
    let _ = write!(extra, "Retry-After: {}\r\n", retry_after_secs.max(1));
    write_error(ErrorStatus::TooManyRequests, keep_alive, date, &extra, out)
}

/// Appends a `405 Method Not Allowed` with an `Allow` list, e.g. `"GET, HEAD"`.
pub fn method_not_allowed(allow: &str, keep_alive: bool, date: &HttpDate, out: &mut Vec<u8>) -> bool {
    let mut extra = Vec::with_capacity(16 + allow.len());
    let _ = write!(extra, "Allow: {allow}\r\n");
    write_error(ErrorStatus::MethodNotAllowed, keep_alive, date, &extra, out)
}

fn write_error(
    status: ErrorStatus,
    keep_alive: bool,
    date: &HttpDate,
    extra_fields: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let keep_alive = keep_alive && !status.forces_close();
    let body_len = status.reason().len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.code(),
        status.reason(),
    );
    date.write_field(out);
    let _ = write!(out, "Content-Type: text/plain\r\nContent-Length: {body_len}\r\n");
    out.extend_from_slice(extra_fields);
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(status.reason().as_bytes());
    out.push(b'\n');
    keep_alive
}

/// Appends a redirect (301, 302, 307 or 308) to `location`, with an empty body. The location
/// must not contain control bytes (that would be response splitting).
pub fn redirect(
    status: u16,
    location: &[u8],
    keep_alive: bool,
    date: &HttpDate,
    out: &mut Vec<u8>,
) -> Result<(), Http1Error> {
    let reason = match status {
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        _ => return Err(Http1Error::InvalidRedirectStatus { status }),
    };
    if location.is_empty() || location.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Http1Error::InvalidRedirectLocation);
    }
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    date.write_field(out);
    out.extend_from_slice(b"Location: ");
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// A redirect target from the config, with `{host}` (the request's host name without port,
/// lower-cased, like nginx `$host`) and `{path}` (path and query, like `$request_uri`)
/// placeholders, e.g. `https://{host}{path}` for the classic HTTP→HTTPS redirect. Checked
/// once at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget {
    parts: Vec<TargetPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetPart {
    Literal(String),
    Host,
    Path,
}

impl RedirectTarget {
    /// Parses a template; unknown placeholders, stray braces and control bytes are errors.
    pub fn parse(template: &str) -> Result<Self, Http1Error> {
        let invalid = |reason| Http1Error::InvalidRedirectTemplate {
            template: template.to_owned(),
            reason,
        };
        if template.is_empty() {
            return Err(invalid("empty"));
        }
        if template.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(invalid("contains a control character"));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(TargetPart::Literal(rest.to_owned()));
                    break;
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(TargetPart::Literal(rest[..i].to_owned()));
                    }
                    rest = &rest[i..];
                    let part = if let Some(after) = rest.strip_prefix("{host}") {
                        rest = after;
                        TargetPart::Host
                    } else if let Some(after) = rest.strip_prefix("{path}") {
                        rest = after;
                        TargetPart::Path
                    } else {
                        return Err(invalid("only `{host}` and `{path}` are placeholders"));
                    };
                    parts.push(part);
                }
            }
        }
        Ok(RedirectTarget { parts })
    }

    /// The `Location` for `request`.
    pub fn expand(&self, request: &crate::request::RequestHead) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for part in &self.parts {
            match part {
                TargetPart::Literal(text) => out.extend_from_slice(text.as_bytes()),
                TargetPart::Host => {
                    if let Some(host) = request.host() {
                        let name = crate::request::split_host_port(host).0;
                        out.extend(name.iter().map(u8::to_ascii_lowercase));
                    }
                }
                TargetPart::Path => {
                    let path = request.path();
                    if path.first() != Some(&b'/') {
                        out.push(b'/');
                    }
                    if path != b"*" {
                        out.extend_from_slice(path);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE_LINE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    fn date() -> HttpDate {
        HttpDate::from_unix_secs(784_111_777)
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    /// The body length announced equals the body sent.
    fn assert_framed(reply: &[u8]) {
        let text = text(reply);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len(), "{text}");
    }

    #[test]
    fn every_error_is_well_framed() {
        use ErrorStatus::*;
        for status in [
            BadRequest,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            RequestTimeout,
            PayloadTooLarge,
            UriTooLong,
            MisdirectedRequest,
            TooManyRequests,
            RequestHeaderFieldsTooLarge,
            InternalServerError,
            NotImplemented,
            BadGateway,
            ServiceUnavailable,
            GatewayTimeout,
            HttpVersionNotSupported,
        ] {
            let mut out = Vec::new();
            let kept = error(status, true, &date(), &mut out);
            assert!(text(&out).starts_with(&format!("HTTP/1.1 {} ", status.code())));
            assert_framed(&out);
            assert!(text(&out).contains(DATE_LINE));
            assert_eq!(kept, !status.forces_close());
            assert_eq!(
                text(&out).contains("Connection: close\r\n"),
                status.forces_close()
            );
        }
    }

    #[test]
    fn bad_request_closes() {
        let mut out = Vec::new();
        assert!(!error(ErrorStatus::BadRequest, true, &date(), &mut out));
        assert_eq!(
            text(&out),
            "HTTP/1.1 400 Bad Request\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n"
        );
    }

    #[test]
    fn rate_limited_reply_has_retry_after() {
        let mut out = Vec::new();
        assert!(too_many_requests(0, true, &date(), &mut out));
        assert!(text(&out).starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text(&out).contains("\r\nRetry-After: 1\r\n"));
        assert_framed(&out);
    }

    #[test]
    fn redirects() {
        let mut out = Vec::new();
        redirect(308, b"https://example.com/a?b", false, &date(), &mut out).unwrap();
        assert_eq!(
            text(&out),
            "HTTP/1.1 308 Permanent Redirect\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nLocation: https://example.com/a?b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            redirect(303, b"/x", true, &date(), &mut out),
            Err(Http1Error::InvalidRedirectStatus { status: 303 })
        );
        assert_eq!(
            redirect(302, b"/x\r\nSet-Cookie: a", true, &date(), &mut out),
            Err(Http1Error::InvalidRedirectLocation)
        );
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let mut out = Vec::new();
        method_not_allowed("GET, HEAD", true, &date(), &mut out);
        assert!(text(&out).contains("\r\nAllow: GET, HEAD\r\n"));
        assert_framed(&out);
    }

    #[test]
    fn redirect_templates() {
        use crate::request::test_head as head;
        let https = RedirectTarget::parse("https://{host}{path}").unwrap();
        let req = head(b"GET /a/b?c=1 HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n");
        assert_eq!(https.expand(&req), b"https://www.example.com/a/b?c=1");
        let upper = head(b"GET /A HTTP/1.1\r\nHost: WWW.Example.COM\r\n\r\n");
        assert_eq!(https.expand(&upper), b"https://www.example.com/A", "nginx $host is lower-case; the path is not");
        let v6 = head(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n");
        assert_eq!(https.expand(&v6), b"https://[2001:db8::1]/");
        let fixed = RedirectTarget::parse("https://new.example/").unwrap();
        assert_eq!(fixed.expand(&req), b"https://new.example/");
        let mut out = Vec::new();
        redirect(301, &https.expand(&req), true, &date(), &mut out).unwrap();
        assert!(text(&out).contains("\r\nLocation: https://www.example.com/a/b?c=1\r\n"));
        for bad in [
            "",
            "https://{hots}/",
            "https://{host",
            "a}b",
            "https://x/\r\n",
        ] {
            assert!(
                matches!(
                    RedirectTarget::parse(bad),
                    Err(Http1Error::InvalidRedirectTemplate { .. })
                ),
                "{bad}"
            );
        }
    }
}
