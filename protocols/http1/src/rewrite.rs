//! The heads a proxy sends on: the request to the backend and the response to the client.
//!
//! Owns: removing hop-by-hop fields (`Connection` and every field it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` unless upgrading),
//! writing canonical framing fields (one `Content-Length` or `Transfer-Encoding: chunked`,
//! whatever the sender wrote), origin-form targets upstream, `X-Forwarded-For` /
//! `-Proto` / `-Host` and RFC 7239 `Forwarded`, and deciding keep-alive towards the client.
//! Heads are appended to a caller-supplied `Vec<u8>`; nothing else is allocated.
//!
//! Does not own: bodies. The returned plans say how the body must be framed on the way out;
//! the proxy loop copies content-length bodies and re-encodes chunked ones with
//! [`crate::chunked`].
//!
//! `Expect: 100-continue` is not forwarded: the proxy loop answers it itself with
//! [`crate::reply::CONTINUE`] when it starts reading the body (as nginx does), so the backend
//! sees a plain request with a body.

use std::io::Write;
use std::net::IpAddr;

use crate::date::HttpDate;
use crate::head::{comma_tokens, is_tchar};
use crate::request::{RequestHead, Scheme};
use crate::response::{ResponseClass, ResponseHead};
use crate::{BodyFraming, HeaderList, Version};

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the framing
/// fields this module always rewrites.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request fields replaced by the proxy's own values.
const REPLACED_UPSTREAM: &[&str] = &[
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// Who the client is, for the forwarding fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardingContext {
    /// The client's address (the peer of the client connection, or the PROXY-protocol source).
    pub client_ip: IpAddr,
    /// `https` when the client connection was TLS-terminated here, else `http`.
    pub proto: Scheme,
    /// Append to the `X-Forwarded-For` / `Forwarded` the client sent (the client is a trusted
    /// proxy); when false they are dropped and the chain starts at `client_ip`.
    pub trust_incoming_forwarded: bool,
    /// Leave the backend connection open for the pool after this exchange.
    pub upstream_keep_alive: bool,
}

/// Appends the request head to send to the backend and returns how the request body must be
/// framed upstream (the same framing the client used; chunked bodies are re-encoded).
///
/// The request line is always `METHOD origin-form HTTP/1.1`; `Host` is the effective
/// authority (from an absolute-form target if there was one).
pub fn write_upstream_request(
    head: &RequestHead,
    ctx: &ForwardingContext,
    out: &mut Vec<u8>,
) -> BodyFraming {
    out.extend_from_slice(head.method_bytes());
    out.push(b' ');
    let path = head.path();
    if path.first() != Some(&b'/') && path != b"*" {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let host = head.host().unwrap_or_default();
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");

    for (name, value) in head.headers.iter() {
        if is_hop_by_hop(name, &head.headers) || is_one_of(name, REPLACED_UPSTREAM) {
            continue;
        }
        write_field(out, name, value);
    }

    // X-Forwarded-For: the chain so far (if trusted), then the client.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if ctx.trust_incoming_forwarded {
        for value in head.headers.get_all("x-forwarded-for") {
            for element in comma_tokens(value) {
                out.extend_from_slice(element);
                out.extend_from_slice(b", ");
            }
        }
    }
    let _ = write!(
        out,
        "{}\r\nX-Forwarded-Proto: {}\r\n",
        ctx.client_ip,
        ctx.proto.as_str()
    );
    if !host.is_empty() {
        write_field(out, b"X-Forwarded-Host", host);
    }

    // Forwarded (RFC 7239): earlier elements if trusted, then ours.
    out.extend_from_slice(b"Forwarded: ");
    if ctx.trust_incoming_forwarded {
        for value in head.headers.get_all("forwarded") {
            for element in comma_tokens(value) {
                out.extend_from_slice(element);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(b"for=");
    match ctx.client_ip {
        IpAddr::V4(v4) => {
            let _ = write!(out, "{v4}");
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "\"[{v6}]\"");
        }
    }
    let _ = write!(out, ";proto={}", ctx.proto.as_str());
    if !host.is_empty() {
        out.extend_from_slice(b";host=");
        write_forwarded_value(out, host);
    }
    out.extend_from_slice(b"\r\n");

    match head.framing {
        BodyFraming::ContentLength(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    if let Some(protocol) = &head.connection.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        write_field(out, b"Upgrade", protocol);
    } else if !ctx.upstream_keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    head.framing
}

/// What the proxy loop does after writing a response head to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownstreamPlan {
    /// Whether a head was written at all (interim responses are not sent to HTTP/1.0 clients).
    pub head_written: bool,
    /// How to frame the body towards the client. A close-delimited or chunked backend body
    /// becomes chunked for HTTP/1.1 clients (so their connection survives) and
    /// close-delimited for HTTP/1.0 clients.
    pub framing: BodyFraming,
    /// Keep the client connection open after the body. Meaningless for interim heads.
    pub keep_alive: bool,
    /// After this head (101) both directions are an opaque byte tunnel.
    pub tunnel: bool,
}

/// Appends the head to send to the client for `response`, the backend's answer to `request`.
/// `server_keep_alive` is false when this side wants to close anyway (draining, request
/// count limit, an unread request body). `received` is when the head arrived: a final
/// response without a `Date` gets it (RFC 9110 §6.6.1).
pub fn write_client_response(
    response: &ResponseHead,
    request: &RequestHead,
    server_keep_alive: bool,
    received: &HttpDate,
    out: &mut Vec<u8>,
) -> DownstreamPlan {
    let client_http11 = request.version == Version::Http11;
    let (framing, keep_alive, tunnel) = match response.class {
        ResponseClass::Interim => {
            if !client_http11 {
                return DownstreamPlan {
                    head_written: false,
                    framing: BodyFraming::None,
                    keep_alive: true,
                    tunnel: false,
                };
            }
            (BodyFraming::None, true, false)
        }
        ResponseClass::SwitchingProtocols => (BodyFraming::None, false, true),
        ResponseClass::Final => {
            let framing = match response.framing {
                BodyFraming::Chunked | BodyFraming::UntilClose if client_http11 => {
                    BodyFraming::Chunked
                }
                BodyFraming::Chunked | BodyFraming::UntilClose => BodyFraming::UntilClose,
                other => other,
            };
            let keep_alive = server_keep_alive
                && request.connection.keep_alive
                && framing != BodyFraming::UntilClose;
            (framing, keep_alive, false)
        }
    };

    let _ = write!(out, "HTTP/1.1 {} ", response.status);
    out.extend_from_slice(response.reason());
    out.extend_from_slice(b"\r\n");
    // A body-less response to HEAD or a 304 keeps the backend's Content-Length: it describes
    // the representation, not this message.
    let keep_original_length = response.class == ResponseClass::Final
        && response.framing == BodyFraming::None
        && response.status != 204;
    for (name, value) in response.headers.iter() {
        if is_hop_by_hop(name, &response.headers) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") && !keep_original_length {
            continue;
        }
        write_field(out, name, value);
    }
    if response.class == ResponseClass::Final && response.headers.get("date").is_none() {
        received.write_field(out);
    }
    match framing {
        BodyFraming::ContentLength(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
    if tunnel {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        if let Some(protocol) = response
            .connection
            .upgrade
            .as_ref()
            .or(request.connection.upgrade.as_ref())
        {
            write_field(out, b"Upgrade", protocol);
        }
    } else if response.class == ResponseClass::Final {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if !client_http11 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    DownstreamPlan {
        head_written: true,
        framing,
        keep_alive,
        tunnel,
    }
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn is_one_of(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Hop-by-hop: one of the fixed list, or named by a `Connection` field of the same head.
fn is_hop_by_hop(name: &[u8], headers: &HeaderList) -> bool {
    is_one_of(name, HOP_BY_HOP)
        || headers
            .get_all("connection")
            .flat_map(comma_tokens)
            .any(|t| t.eq_ignore_ascii_case(name))
}

/// A Forwarded parameter value: a token as is, anything else as a quoted-string.
fn write_forwarded_value(out: &mut Vec<u8>, value: &[u8]) {
    if value.iter().all(|&b| is_tchar(b)) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::test_head as request;
    use crate::response::ResponseParser;
    use crate::{Limits, ParseStatus};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn response(bytes: &[u8], req: &RequestHead) -> ResponseHead {
        match ResponseParser::new(Limits::default())
            .parse(bytes, req.response_context())
            .unwrap()
        {
            ParseStatus::Complete { head, .. } => head,
            ParseStatus::Partial => panic!("partial"),
        }
    }

    fn ctx(ip: IpAddr, trust: bool) -> ForwardingContext {
        ForwardingContext {
            client_ip: ip,
            proto: Scheme::Https,
            trust_incoming_forwarded: trust,
            upstream_keep_alive: true,
        }
    }

    fn upstream(req: &[u8], ctx: &ForwardingContext) -> String {
        let mut out = Vec::new();
        write_upstream_request(&request(req), ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_fields_are_removed_upstream() {
        let out = upstream(
            b"GET /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n\
Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nX-Secret: 1\r\nAccept: */*\r\n\r\n",
            &ctx(Ipv4Addr::new(192, 0, 2, 7).into(), false),
        );
        assert_eq!(
            out,
            "GET /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\
X-Forwarded-Host: h\r\nForwarded: for=192.0.2.7;proto=https;host=h\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_chain_appended_only_when_trusted() {
        let req =
            b"GET / HTTP/1.1\r\nHost: h.example:8443\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\
Forwarded: for=10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n";
        let v6: IpAddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().into();
        let trusted = upstream(req, &ctx(v6, true));
        assert!(
            trusted.contains("\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 2001:db8::1\r\n"),
            "{trusted}"
        );
        assert!(
            trusted.contains("\r\nForwarded: for=10.0.0.1, for=\"[2001:db8::1]\";proto=https;host=\"h.example:8443\"\r\n"),
            "{trusted}"
        );
        assert_eq!(trusted.matches("X-Forwarded-Proto").count(), 1);
        assert!(trusted.contains("\r\nX-Forwarded-Host: h.example:8443\r\n"));
        let untrusted = upstream(req, &ctx(v6, false));
        assert!(
            untrusted.contains("\r\nX-Forwarded-For: 2001:db8::1\r\n"),
            "{untrusted}"
        );
        assert!(!untrusted.contains("10.0.0.1"));
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host() {
        let out = upstream(
            b"GET http://a.example/x?y HTTP/1.1\r\nHost: evil\r\n\r\n",
            &ctx(Ipv4Addr::LOCALHOST.into(), false),
        );
        assert!(
            out.starts_with("GET /x?y HTTP/1.1\r\nHost: a.example\r\n"),
            "{out}"
        );
        assert!(!out.contains("evil"));
        let out = upstream(
            b"GET http://a.example?q HTTP/1.1\r\nHost: a\r\n\r\n",
            &ctx(Ipv4Addr::LOCALHOST.into(), false),
        );
        assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
    }

    #[test]
    fn framing_is_canonical_upstream() {
        let c = ctx(Ipv4Addr::LOCALHOST.into(), false);
        let out = upstream(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
            &c,
        );
        assert_eq!(out.matches("Content-Length").count(), 1);
        assert!(out.contains("\r\nContent-Length: 5\r\n"));
        let out = upstream(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n", &c);
        assert!(out.contains("\r\nTransfer-Encoding: chunked\r\n"));
        assert!(!out.contains("Expect"));
        let out = upstream(
            b"GET / HTTP/1.0\r\n\r\n",
            &ForwardingContext {
                upstream_keep_alive: false,
                ..c
            },
        );
        assert!(out.starts_with("GET / HTTP/1.1\r\nHost: \r\n"));
        assert!(out.contains("\r\nConnection: close\r\n"));
    }

    #[test]
    fn upgrade_is_forwarded_when_requested() {
        let out = upstream(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
            &ctx(Ipv4Addr::LOCALHOST.into(), false),
        );
        assert!(
            out.contains("\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nSec-WebSocket-Key: k\r\n"));
    }

    fn client(resp: &[u8], req: &[u8], server_keep_alive: bool) -> (String, DownstreamPlan) {
        let req = request(req);
        let resp = response(resp, &req);
        let mut out = Vec::new();
        let plan = write_client_response(&resp, &req, server_keep_alive, &HttpDate::from_unix_secs(784_111_777), &mut out);
        // The added Date is checked in its own test; the others compare the rest.
        let out = String::from_utf8(out).unwrap().replacen(ADDED_DATE, "", 1);
        (out, plan)
    }

    const ADDED_DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    #[test]
    fn a_final_response_without_date_gets_one_and_a_dated_one_keeps_its_own() {
        let req = request(GET11);
        let mut out = Vec::new();
        let received = HttpDate::from_unix_secs(784_111_777);
        let undated = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &req);
        write_client_response(&undated, &req, true, &received, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), format!("HTTP/1.1 200 OK\r\n{ADDED_DATE}Content-Length: 0\r\n\r\n"));
        out.clear();
        let dated = response(b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n", &req);
        write_client_response(&dated, &req, true, &received, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("Date: ").count(), 1, "{text}");
        assert!(text.contains("Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"));
        out.clear();
        let interim = response(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", &req);
        write_client_response(&interim, &req, true, &received, &mut out);
        assert!(!String::from_utf8_lossy(&out).contains("Date: "));
    }

    const GET11: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    const GET10: &[u8] = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

    #[test]
    fn response_hop_by_hop_removed_and_length_kept() {
        let (out, plan) = client(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\nContent-Length: 2\r\nServer: b\r\n\r\n",
            GET11,
            true,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nServer: b\r\nContent-Length: 2\r\n\r\n"
        );
        assert_eq!(
            plan,
            DownstreamPlan {
                head_written: true,
                framing: BodyFraming::ContentLength(2),
                keep_alive: true,
                tunnel: false
            }
        );
    }

    #[test]
    fn close_delimited_body_is_rechunked_for_http11() {
        let (out, plan) = client(b"HTTP/1.0 200 OK\r\n\r\n", GET11, true);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            (plan.framing, plan.keep_alive),
            (BodyFraming::Chunked, true)
        );
        let (out, plan) = client(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            GET10,
            true,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(
            (plan.framing, plan.keep_alive),
            (BodyFraming::UntilClose, false)
        );
    }

    #[test]
    fn keep_alive_decided_by_us() {
        let (out, plan) = client(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            GET11,
            true,
        );
        assert!(plan.keep_alive, "backend closing does not close the client");
        assert!(!out.contains("Connection"));
        let (out, plan) = client(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            GET11,
            false,
        );
        assert!(!plan.keep_alive);
        assert!(out.contains("\r\nConnection: close\r\n"));
        let (out, plan) = client(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", GET10, true);
        assert!(plan.keep_alive);
        assert!(out.contains("\r\nConnection: keep-alive\r\n"));
    }

    #[test]
    fn head_and_304_keep_content_length_204_drops_it() {
        let (out, plan) = client(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
            true,
        );
        assert!(out.contains("\r\nContent-Length: 99\r\n"));
        assert_eq!(plan.framing, BodyFraming::None);
        let (out, _) = client(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n",
            GET11,
            true,
        );
        assert!(out.contains("\r\nContent-Length: 99\r\n"));
        let (out, _) = client(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            GET11,
            true,
        );
        assert!(!out.contains("Content-Length"));
    }

    #[test]
    fn interim_and_switching_protocols() {
        let (out, plan) = client(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
            GET11,
            true,
        );
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n");
        assert!(plan.head_written);
        let (out, plan) = client(b"HTTP/1.1 100 Continue\r\n\r\n", GET10, true);
        assert!(out.is_empty());
        assert!(!plan.head_written);
        let (out, plan) = client(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
        );
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        assert!(plan.tunnel);
    }

    #[test]
    fn forwarded_value_quoting() {
        let mut out = Vec::new();
        write_forwarded_value(&mut out, b"example.com");
        out.push(b' ');
        write_forwarded_value(&mut out, b"a\"b\\c:1");
        assert_eq!(out, b"example.com \"a\\\"b\\\\c:1\"");
    }
}
