//! Response heads: bytes from a backend in, a validated [`ResponseHead`] out.
//!
//! Owns: the status line and header rules for what backends send, the interim (1xx) vs final
//! distinction, 101 Switching Protocols only after an Upgrade request, and body framing per
//! RFC 9112 §6.3 (HEAD, 1xx, 204 and 304 have no body; Transfer-Encoding with a final
//! `chunked`; Content-Length; else close-delimited). Every error here means "answer the
//! client 502 and close the backend connection" ([`crate::Http1Error::upstream_status`]).
//!
//! Does not own: what is forwarded to the client (see [`crate::rewrite`]).

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::head::{
    classify_header_name_error, content_length, final_coding_is_chunked, span_within, HeadScanner,
    HeaderList, MAX_HEADERS_CAP,
};
use crate::{BodyFraming, ConnectionOptions, Http1Error, Limits, ParseStatus, Version};

/// What the response parser must know about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseContext {
    /// The request was HEAD: the response has no body whatever its fields say.
    pub head_request: bool,
    /// The request asked to upgrade: a 101 is acceptable.
    pub upgrade_requested: bool,
}

/// Where a response stands in the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    /// 100, 102, 103…: forward (to HTTP/1.1 clients) and keep reading for the final response.
    /// For 100 Continue the client may now send its body.
    Interim,
    /// 101: after this head both directions are an opaque tunnel.
    SwitchingProtocols,
    /// 2xx–5xx: the response to the request.
    Final,
}

/// A validated response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The version the backend spoke.
    pub version: Version,
    /// The status code, 100–599.
    pub status: u16,
    /// Interim, switching protocols or final.
    pub class: ResponseClass,
    /// How the response body is delimited.
    pub framing: BodyFraming,
    /// Whether the backend keeps the connection (`keep_alive`) and, for 101, the protocol
    /// it switched to (`upgrade`). `expect_continue` is always false.
    pub connection: ConnectionOptions,
    /// The header fields as received.
    pub headers: HeaderList,
    reason_span: Range<usize>,
}

impl ResponseHead {
    /// The reason phrase (may be empty).
    pub fn reason(&self) -> &[u8] {
        self.headers.slice(&self.reason_span)
    }
}

/// Parses response heads from a backend connection's read buffer, incrementally; used like
/// [`crate::request::RequestParser`].
#[derive(Debug, Clone, Default)]
pub struct ResponseParser {
    limits: Limits,
    scanner: HeadScanner,
}

impl ResponseParser {
    /// A parser enforcing `limits` (`max_body_bytes` is not applied to responses).
    pub fn new(limits: Limits) -> Self {
        ResponseParser {
            limits,
            scanner: HeadScanner::default(),
        }
    }

    /// Forgets any partial scan.
    pub fn reset(&mut self) {
        self.scanner = HeadScanner::default();
    }

    /// Parses the head at the start of `buf`, the response to a request described by `ctx`.
    /// After an [`ResponseClass::Interim`] head, call again on the rest of the buffer.
    pub fn parse(
        &mut self,
        buf: &[u8],
        ctx: ResponseContext,
    ) -> Result<ParseStatus<ResponseHead>, Http1Error> {
        let Some(end) = self.scanner.scan(buf, &self.limits)? else {
            return Ok(ParseStatus::Partial);
        };
        let head = parse_complete_head(&buf[..end], &self.limits, ctx)?;
        Ok(ParseStatus::Complete {
            head,
            consumed: end,
        })
    }
}

fn parse_complete_head(
    head: &[u8],
    limits: &Limits,
    ctx: ResponseContext,
) -> Result<ResponseHead, Http1Error> {
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut scratch = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, head, &mut scratch[..max_headers])
        .map_err(|e| match e {
            httparse::Error::HeaderName => classify_header_name_error(head),
            httparse::Error::HeaderValue => Http1Error::InvalidHeaderValue,
            httparse::Error::Version => Http1Error::UnsupportedVersion,
            httparse::Error::TooManyHeaders => Http1Error::TooManyHeaders { limit: max_headers },
            httparse::Error::NewLine | httparse::Error::Status | httparse::Error::Token => {
                Http1Error::MalformedStatusLine
            }
        })?;
    if status.is_partial() {
        return Err(Http1Error::MalformedStatusLine);
    }
    let (Some(minor), Some(code), Some(reason)) = (resp.version, resp.code, resp.reason) else {
        return Err(Http1Error::MalformedStatusLine);
    };
    let version = Version::from_minor(minor)?;
    if !(100..=599).contains(&code) {
        return Err(Http1Error::MalformedStatusLine);
    }
    let reason_span = span_within(head, reason.as_bytes());
    let headers = HeaderList::from_httparse(head, resp.headers);

    let class = match code {
        101 => {
            if !ctx.upgrade_requested {
                return Err(Http1Error::UnsolicitedSwitchingProtocols);
            }
            ResponseClass::SwitchingProtocols
        }
        100..=199 => ResponseClass::Interim,
        _ => ResponseClass::Final,
    };
    let framing = response_framing(&headers, code, ctx)?;
    let close = headers.has_token("connection", "close");
    let keep_alive = framing != BodyFraming::UntilClose
        && match version {
            Version::Http11 => !close,
            Version::Http10 => !close && headers.has_token("connection", "keep-alive"),
        };
    let upgrade = (class == ResponseClass::SwitchingProtocols)
        .then(|| headers.get("upgrade").map(<[u8]>::to_vec))
        .flatten();
    Ok(ResponseHead {
        version,
        status: code,
        class,
        framing,
        connection: ConnectionOptions {
            keep_alive,
            upgrade,
            expect_continue: false,
        },
        headers,
        reason_span,
    })
}

/// RFC 9112 §6.3, in order:
/// 1. HEAD requests, 1xx, 204 and 304 → no body (their Content-Length, if any, is left alone);
/// 2. Transfer-Encoding with Content-Length → error (nginx: "upstream sent both");
/// 3. Transfer-Encoding whose final coding is `chunked` → chunked; any other → close-delimited;
/// 4. Content-Length valid and consistent → that length; invalid or differing → error;
/// 5. otherwise → close-delimited.
fn response_framing(
    headers: &HeaderList,
    code: u16,
    ctx: ResponseContext,
) -> Result<BodyFraming, Http1Error> {
    if ctx.head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        return Ok(BodyFraming::None);
    }
    if headers.count("transfer-encoding") > 0 {
        if headers.count("content-length") > 0 {
            return Err(Http1Error::ContentLengthWithTransferEncoding);
        }
        return Ok(if final_coding_is_chunked(headers) {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        });
    }
    Ok(match content_length(headers)? {
        Some(n) => BodyFraming::ContentLength(n),
        None => BodyFraming::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: ResponseContext = ResponseContext {
        head_request: false,
        upgrade_requested: false,
    };

    fn parse(bytes: &[u8], ctx: ResponseContext) -> Result<ResponseHead, Http1Error> {
        match ResponseParser::new(Limits::default()).parse(bytes, ctx)? {
            ParseStatus::Complete { head, consumed } => {
                assert!(consumed <= bytes.len());
                Ok(head)
            }
            ParseStatus::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn content_length_response() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", GET).unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.reason(), b"OK");
        assert_eq!(h.class, ResponseClass::Final);
        assert_eq!(h.framing, BodyFraming::ContentLength(5));
        assert!(h.connection.keep_alive);
    }

    #[test]
    fn chunked_response_final_coding() {
        let h = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            GET,
        )
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", GET).unwrap();
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.connection.keep_alive);
    }

    #[test]
    fn no_length_is_close_delimited() {
        let h = parse(b"HTTP/1.1 200 OK\r\n\r\n", GET).unwrap();
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.connection.keep_alive);
    }

    #[test]
    fn head_204_304_and_1xx_have_no_body() {
        let head = ResponseContext {
            head_request: true,
            upgrade_requested: false,
        };
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", head).unwrap();
        assert_eq!(h.framing, BodyFraming::None);
        assert_eq!(h.headers.get("content-length"), Some(&b"1000"[..]));
        for status in ["204 No Content", "304 Not Modified"] {
            let bytes = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(
                parse(bytes.as_bytes(), GET).unwrap().framing,
                BodyFraming::None
            );
        }
        let h = parse(b"HTTP/1.1 100 Continue\r\n\r\n", GET).unwrap();
        assert_eq!(
            (h.class, h.framing),
            (ResponseClass::Interim, BodyFraming::None)
        );
        let h = parse(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", GET).unwrap();
        assert_eq!(h.class, ResponseClass::Interim);
    }

    #[test]
    fn switching_protocols_only_after_upgrade_request() {
        let bytes = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            parse(bytes, GET),
            Err(Http1Error::UnsolicitedSwitchingProtocols)
        );
        let ctx = ResponseContext {
            head_request: false,
            upgrade_requested: true,
        };
        let h = parse(bytes, ctx).unwrap();
        assert_eq!(h.class, ResponseClass::SwitchingProtocols);
        assert_eq!(h.connection.upgrade.as_deref(), Some(&b"websocket"[..]));
    }

    #[test]
    fn ambiguous_framing_is_bad_gateway() {
        let e = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            GET,
        )
        .unwrap_err();
        assert_eq!(e, Http1Error::ContentLengthWithTransferEncoding);
        assert_eq!(e.upstream_status().code(), 502);
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                GET
            ),
            Err(Http1Error::ConflictingContentLength)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", GET),
            Err(Http1Error::InvalidContentLength)
        );
    }

    #[test]
    fn http10_backend_keep_alive_only_when_asked() {
        let h = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", GET).unwrap();
        assert!(!h.connection.keep_alive);
        let h = parse(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            GET,
        )
        .unwrap();
        assert!(h.connection.keep_alive);
        let h = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            GET,
        )
        .unwrap();
        assert!(!h.connection.keep_alive);
    }

    #[test]
    fn malformed_backend_heads() {
        assert_eq!(
            parse(b"HTTP/1.1 2000 OK\r\n\r\n", GET),
            Err(Http1Error::MalformedStatusLine)
        );
        assert_eq!(
            parse(b"HTTP/1.1 099 Low\r\n\r\n", GET),
            Err(Http1Error::MalformedStatusLine)
        );
        assert_eq!(
            parse(b"HTTP/2.0 200 OK\r\n\r\n", GET),
            Err(Http1Error::UnsupportedVersion)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", GET),
            Err(Http1Error::ObsoleteLineFolding)
        );
        let mut p = ResponseParser::new(Limits::default());
        assert_eq!(
            p.parse(b"HTTP/1.1 200 OK\nX: a\n\n", GET),
            Err(Http1Error::BareLineFeed)
        );
    }

    #[test]
    fn empty_reason_is_accepted() {
        let h = parse(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", GET).unwrap();
        assert_eq!(h.reason(), b"");
    }
}
