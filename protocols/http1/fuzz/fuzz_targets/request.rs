//! Fuzzes request-head parsing: any bytes, fed whole and split in two. A head that parses
//! must parse the same way when split, and the head we would send upstream must parse back
//! with the same framing.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use shardgate_http1::request::{RequestParser, Scheme};
use shardgate_http1::rewrite::{write_upstream_request, ForwardingContext};
use shardgate_http1::{Limits, ParseStatus};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = RequestParser::new(Limits::default()).parse(data);
    let mut parser = RequestParser::new(Limits::default());
    let split = usize::from(split).min(data.len());
    let staged = match parser.parse(&data[..split]) {
        Ok(ParseStatus::Partial) => parser.parse(data),
        other => other,
    };
    if let Ok(ParseStatus::Complete { head, consumed }) = &whole {
        assert!(*consumed <= data.len());
        assert_eq!(staged.as_ref().ok(), whole.as_ref().ok());
        let ctx = ForwardingContext {
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            proto: Scheme::Http,
            trust_incoming_forwarded: true,
            upstream_keep_alive: true,
        };
        let mut out = Vec::new();
        let framing = write_upstream_request(head, &ctx, &mut out);
        let limits = Limits {
            max_head_bytes: 1 << 20,
            max_headers: 256,
            ..Limits::default()
        };
        match RequestParser::new(limits).parse(&out) {
            Ok(ParseStatus::Complete { head: again, .. }) => assert_eq!(again.framing, framing),
            other => panic!("upstream head does not parse: {other:?}"),
        }
    }
});
