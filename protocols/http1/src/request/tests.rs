//! Tests for request-head rules, including the request-smuggling suite and a deterministic
//! mutation run.

use super::*;
use crate::reply::ErrorStatus;

fn parse_with(bytes: &[u8], limits: Limits) -> Result<(RequestHead, usize), Http1Error> {
    match RequestParser::new(limits).parse(bytes)? {
        ParseStatus::Complete { head, consumed } => Ok((head, consumed)),
        ParseStatus::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn parse(bytes: &[u8]) -> Result<RequestHead, Http1Error> {
    parse_with(bytes, Limits::default()).map(|(h, _)| h)
}

/// The status a client gets for `bytes` (200 meaning "accepted").
fn status_of(bytes: &[u8]) -> u16 {
    match RequestParser::new(Limits::default()).parse(bytes) {
        Ok(ParseStatus::Complete { .. }) => 200,
        Ok(ParseStatus::Partial) => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        Err(e) => e.status().code(),
    }
}

#[test]
fn simple_get() {
    let bytes = b"GET /index.html?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n";
    let (head, consumed) = parse_with(bytes, Limits::default()).unwrap();
    assert_eq!(consumed, bytes.len());
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.method_bytes(), b"GET");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.target_form, TargetForm::Origin);
    assert_eq!(head.path(), b"/index.html?q=1");
    assert_eq!(head.host(), Some(&b"Example.COM:8080"[..]));
    assert_eq!(head.host_name().as_deref(), Some("example.com"));
    assert_eq!(head.framing, BodyFraming::None);
    assert!(head.connection.keep_alive);
    assert_eq!(head.connection.upgrade, None);
    assert!(!head.connection.expect_continue);
    assert_eq!(head.headers.len(), 2);
    assert_eq!(head.headers.get("accept"), Some(&b"*/*"[..]));
}

#[test]
fn incremental_byte_by_byte() {
    let bytes = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let mut parser = RequestParser::new(Limits::default());
    for n in 0..bytes.len() - 3 {
        assert_eq!(
            parser.parse(&bytes[..n]),
            Ok(ParseStatus::Partial),
            "prefix {n}"
        );
    }
    match parser.parse(bytes).unwrap() {
        ParseStatus::Complete { head, consumed } => {
            assert_eq!(consumed, bytes.len() - 3);
            assert_eq!(head.framing, BodyFraming::ContentLength(3));
        }
        ParseStatus::Partial => panic!("expected complete"),
    }
}

#[test]
fn pipelined_requests_parse_one_after_another() {
    let bytes = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut parser = RequestParser::new(Limits::default());
    let ParseStatus::Complete { head, consumed } = parser.parse(bytes).unwrap() else {
        panic!()
    };
    assert_eq!(head.path(), b"/a");
    let ParseStatus::Complete { head, .. } = parser.parse(&bytes[consumed..]).unwrap() else {
        panic!()
    };
    assert_eq!(head.path(), b"/b");
}

#[test]
fn leading_empty_lines_are_skipped() {
    let head = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(head.path(), b"/");
}

#[test]
fn request_line_limit_is_414() {
    let limits = Limits {
        max_start_line: 32,
        ..Limits::default()
    };
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 40));
    let mut parser = RequestParser::new(limits);
    // refused before the line even ends
    let err = parser.parse(&long).unwrap_err();
    assert_eq!(err, Http1Error::StartLineTooLong { limit: 32 });
    assert_eq!(err.status().code(), 414);
    long.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(parse_with(&long, limits).unwrap_err().status().code(), 414);
    // exactly at the limit is fine
    let mut exact = b"GET /".to_vec();
    exact.extend(std::iter::repeat_n(b'a', 32 - 14));
    exact.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(parse_with(&exact, limits).is_ok());
}

#[test]
fn header_size_and_count_limits_are_431() {
    let limits = Limits {
        max_head_bytes: 100,
        max_headers: 3,
        ..Limits::default()
    };
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'v', 100));
    big.extend_from_slice(b"\r\n\r\n");
    let err = parse_with(&big, limits).unwrap_err();
    assert_eq!(err, Http1Error::HeadTooLarge { limit: 100 });
    assert_eq!(err.status().code(), 431);
    let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let err = parse_with(many, limits).unwrap_err();
    assert_eq!(err, Http1Error::TooManyHeaders { limit: 3 });
    assert_eq!(err.status().code(), 431);
    assert!(parse_with(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", limits).is_ok());
}

#[test]
fn absolute_form_takes_host_from_target() {
    let head = parse(b"GET http://Origin.example:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
    assert_eq!(head.target_form, TargetForm::Absolute);
    assert_eq!(head.target_scheme, Some(Scheme::Http));
    assert_eq!(head.host(), Some(&b"Origin.example:81"[..]));
    assert_eq!(head.path(), b"/p?q");
    let head = parse(b"GET HTTPS://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n").unwrap();
    assert_eq!(head.target_scheme, Some(Scheme::Https));
    assert_eq!(head.path(), b"");
    // HTTP/1.0 absolute form needs no Host field
    assert_eq!(
        parse(b"GET http://a/ HTTP/1.0\r\n\r\n").unwrap().host(),
        Some(&b"a"[..])
    );
}

#[test]
fn bad_targets() {
    for bytes in [
        &b"GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http:/// HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET index.html HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert!(
            matches!(parse(bytes), Err(Http1Error::InvalidTarget { .. })),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(status_of(bytes), 400);
    }
    assert_eq!(
        parse(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .target_form,
        TargetForm::Asterisk
    );
    assert_eq!(
        parse(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
        Err(Http1Error::ConnectNotSupported)
    );
    assert_eq!(
        status_of(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
        405
    );
}

#[test]
fn host_rules() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\n\r\n"),
        Err(Http1Error::MissingHost)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        Err(Http1Error::DuplicateHost)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        Err(Http1Error::InvalidHost)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        Err(Http1Error::InvalidHost)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a:99999x\r\n\r\n"),
        Err(Http1Error::InvalidHost)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"),
        Err(Http1Error::InvalidHost)
    );
    let v6 = parse(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n").unwrap();
    assert_eq!(v6.host_name().as_deref(), Some("2001:db8::1"));
    assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().host(), None);
    // empty Host is allowed on the wire but gives no authority
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").unwrap().host(),
        None
    );
}

#[test]
fn http10_keep_alive_semantics() {
    assert!(
        !parse(b"GET / HTTP/1.0\r\n\r\n")
            .unwrap()
            .connection
            .keep_alive
    );
    assert!(
        parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .connection
            .keep_alive
    );
    assert!(
        !parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .connection
            .keep_alive
    );
    assert!(
        !parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n")
            .unwrap()
            .connection
            .keep_alive
    );
}

#[test]
fn upgrade_and_expect() {
    let ws = parse(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    assert_eq!(ws.connection.upgrade.as_deref(), Some(&b"websocket"[..]));
    assert!(ws.response_context().upgrade_requested);
    // Upgrade without the connection option is not a request to upgrade
    let no = parse(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(no.connection.upgrade, None);
    let no = parse(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(no.connection.upgrade, None);
    let put =
        parse(b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\nExpect: 100-Continue\r\n\r\n")
            .unwrap();
    assert!(put.connection.expect_continue);
    let old =
        parse(b"PUT /f HTTP/1.0\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!old.connection.expect_continue);
}

#[test]
fn header_syntax_rules() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"),
        Err(Http1Error::ObsoleteLineFolding)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n"),
        Err(Http1Error::ObsoleteLineFolding)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        Err(Http1Error::WhitespaceBeforeColon)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
        Err(Http1Error::WhitespaceBeforeColon)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX\"Y: 1\r\n\r\n"),
        Err(Http1Error::InvalidHeaderName)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n"),
        Err(Http1Error::InvalidHeaderName)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"),
        Err(Http1Error::InvalidHeaderName)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
        Err(Http1Error::InvalidHeaderValue)
    );
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
        Err(Http1Error::InvalidHeaderValue)
    );
    // obs-text in values is allowed
    assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n").is_ok());
    assert_eq!(
        parse(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Err(Http1Error::InvalidMethod)
    );
    assert_eq!(status_of(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n"), 400);
}

#[test]
fn extension_methods_are_kept() {
    let head = parse(b"PROPFIND /dav HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(head.method, Method::Extension);
    assert_eq!(head.method_bytes(), b"PROPFIND");
}

#[test]
fn content_length_rules() {
    let h =
        parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n")
            .unwrap();
    assert_eq!(h.framing, BodyFraming::ContentLength(10));
    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10, 10\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::ContentLength(10));
    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::ContentLength(0));
    let limits = Limits {
        max_body_bytes: Some(1000),
        ..Limits::default()
    };
    let err = parse_with(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n",
        limits,
    )
    .unwrap_err();
    assert_eq!(
        (err.clone(), err.status().code()),
        (Http1Error::BodyTooLarge { limit: 1000 }, 413)
    );
}

/// Each case: raw request, exact status the proxy answers (200 = accepted and forwarded with
/// canonical framing). Named after the classic smuggling techniques.
#[test]
fn request_smuggling_suite() {
    let cases: &[(&str, &[u8], u16)] = &[
        ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
        ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
        ("TE.TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("TE.TE xchunked with CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("TE.TE chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501),
        ("TE.TE identity, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501),
        ("TE.TE duplicate lines", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400),
        ("TE.TE duplicate identical", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("TE.TE space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
        ("TE.TE leading space line (obs-fold)", b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n", 400),
        ("TE.TE folded value", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400),
        ("TE.TE OWS around value is fine", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \r\n\r\n", 200),
        ("TE.TE tab before value is fine", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n", 200),
        ("TE.TE mixed case is fine", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", 200),
        ("TE.TE vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", 400),
        ("TE.TE empty", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 501),
        ("TE.TE quoted", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 501),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("CL differing duplicates", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ("CL differing list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
        ("CL identical duplicates merged", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 200),
        ("CL leading plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
        ("CL leading minus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", 400),
        ("CL inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n", 400),
        ("CL surrounding spaces are OWS", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:   5  \r\n\r\n", 200),
        ("CL hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
        ("CL empty list element", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", 400),
        ("CL very large", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        ("CL just over i64", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400),
        ("CL space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400),
        ("bare LF head", b"POST / HTTP/1.1\nHost: a\nContent-Length: 5\n\n", 400),
        ("bare LF in one field", b"POST / HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("bare CR in field", b"POST / HTTP/1.1\r\nHost: a\rTransfer-Encoding: chunked\r\n\r\n", 400),
        ("NUL in TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\0\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(status_of(bytes), *expected, "{name}");
    }
}

#[test]
fn smuggled_chunk_bodies_are_refused() {
    use crate::chunked::ChunkedDecoder;
    // chunk sizes a lenient parser would read differently
    for (name, body) in [
        ("size overflow", &b"10000000000000000\r\nX\r\n0\r\n\r\n"[..]),
        ("size with 0x", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
        ("data longer than size", b"3\r\nhello\r\n0\r\n\r\n"),
        ("space inside size", b"1 0\r\n"),
    ] {
        let mut decoder = ChunkedDecoder::new(None);
        let mut input = body;
        let result = loop {
            match decoder.decode(input) {
                Err(e) => break Err(e),
                Ok(step) if step.done || step.consumed == input.len() => break Ok(()),
                Ok(step) => input = &input[step.consumed..],
            }
        };
        let err = result.expect_err(name);
        assert_eq!(err.status(), ErrorStatus::BadRequest, "{name}");
    }
}

/// A tiny xorshift generator: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const REQUEST_SEEDS: &[&[u8]] = &[
    b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"POST http://h:8/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"PUT / HTTP/1.0\r\nContent-Length: 3, 3\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nabc",
];

const CHUNKED_SEED: &[u8] =
    b"5;e=1\r\nhello\r\n1A\r\n0123456789abcdefghijklmnop\r\n0\r\nT: 1\r\n\r\n";

const RESPONSE_SEED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-A\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";

const INTERESTING: &[u8] = b"\r\n \t:;,0123456789abcdefxX-+\0\x7f\xff/?*[]@";

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        let pos = rng.below(input.len() + 1);
        let byte = if rng.below(2) == 0 {
            INTERESTING[rng.below(INTERESTING.len())]
        } else {
            rng.next() as u8
        };
        match rng.below(4) {
            0 if pos < input.len() => input[pos] = byte,
            1 if pos < input.len() => {
                input.remove(pos);
            }
            2 => {
                let from = rng.below(input.len());
                let len = rng.below(16).min(input.len() - from);
                let chunk = input[from..from + len].to_vec();
                input.splice(pos..pos, chunk);
            }
            _ => input.insert(pos, byte),
        }
    }
    input
}

/// Thousands of mutated heads and bodies, fixed seed: nothing panics, every accepted
/// request has self-consistent framing, a split feed agrees with a whole feed, what we send
/// upstream parses again, and the chunked decoder always makes progress.
#[test]
fn mutation_run_never_panics() {
    use crate::chunked::ChunkedDecoder;
    use crate::response::{ResponseContext, ResponseParser};
    let mut rng = XorShift(0x5eed_1234_abcd_9876);
    let limits = Limits {
        max_body_bytes: Some(1 << 20),
        ..Limits::default()
    };
    let (mut requests_accepted, mut bodies_completed, mut responses_accepted) = (0, 0, 0);
    for round in 0..20_000 {
        let input = mutate(&mut rng, REQUEST_SEEDS[round % REQUEST_SEEDS.len()]);
        let whole = RequestParser::new(limits).parse(&input);
        let split = rng.below(input.len() + 1);
        let mut parser = RequestParser::new(limits);
        let staged = match parser.parse(&input[..split]) {
            Ok(ParseStatus::Partial) => parser.parse(&input),
            other => other,
        };
        if let Ok(ParseStatus::Complete { head, consumed }) = &whole {
            requests_accepted += 1;
            assert!(*consumed <= input.len());
            assert!(head.framing != BodyFraming::UntilClose);
            assert!(head.version == Version::Http10 || head.headers.count("host") == 1);
            assert_eq!(staged.as_ref().ok(), whole.as_ref().ok(), "round {round}");
            let mut out = Vec::new();
            let framing = crate::rewrite::write_upstream_request(
                head,
                &crate::rewrite::ForwardingContext {
                    client_ip: std::net::Ipv6Addr::LOCALHOST.into(),
                    proto: Scheme::Https,
                    trust_incoming_forwarded: round % 2 == 0,
                    upstream_keep_alive: true,
                },
                &mut out,
            );
            let again = RequestParser::new(Limits {
                max_head_bytes: 1 << 20,
                ..Limits::default()
            })
            .parse(&out);
            match again {
                Ok(ParseStatus::Complete { head: upstream, .. }) => {
                    assert_eq!(upstream.framing, framing)
                }
                other => panic!(
                    "round {round}: {other:?} for {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }

        let body = mutate(&mut rng, CHUNKED_SEED);
        let mut decoder = ChunkedDecoder::new(Some(1 << 20));
        let mut rest: &[u8] = &body;
        while let Ok(step) = decoder.decode(rest) {
            assert!(step.consumed <= rest.len());
            if step.done {
                bodies_completed += 1;
                break;
            }
            if rest.is_empty() {
                break;
            }
            assert!(step.consumed > 0, "no progress in round {round}");
            rest = &rest[step.consumed..];
        }

        let response = mutate(&mut rng, RESPONSE_SEED);
        if let Ok(ParseStatus::Complete { .. }) =
            ResponseParser::new(limits).parse(&response, ResponseContext::default())
        {
            responses_accepted += 1;
        }
    }
    // The mutations stay close enough to the seeds to exercise the accepting paths too.
    assert!(requests_accepted > 2_000, "{requests_accepted}");
    assert!(bodies_completed > 1_000, "{bodies_completed}");
    assert!(responses_accepted > 2_000, "{responses_accepted}");
}

#[test]
fn a_later_http1_minor_version_is_served_as_http11() {
    let raw = b"GET /p?q=1 HTTP/1.2\r\nHost: example.test\r\nX-A: b\r\n\r\n";
    let mut parser = RequestParser::new(Limits::default());
    let Ok(ParseStatus::Complete { head, consumed }) = parser.parse(raw) else {
        panic!("HTTP/1.2 was not accepted");
    };
    assert_eq!(consumed, raw.len());
    assert_eq!(head.version, Version::Http11);
    // The spans still point at the right bytes of the original buffer.
    assert_eq!(head.path(), b"/p?q=1");
    assert_eq!(head.host_name().as_deref(), Some("example.test"));
}
