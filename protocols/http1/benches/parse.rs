//! Hot paths of the HTTP/1.1 core: parsing a typical browser request head (and rewriting it
//! for the backend), and decoding a 64 KiB chunked body.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_http1::chunked::{encode_chunk, encode_last_chunk, ChunkedDecoder};
use shardgate_http1::request::{RequestParser, Scheme};
use shardgate_http1::rewrite::{write_upstream_request, ForwardingContext};
use shardgate_http1::{Limits, ParseStatus};

const BROWSER_REQUEST: &[u8] = b"GET /static/app.3f9a1c.js?v=12 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
If-None-Match: \"1234-3e8-2ebc98a1.5\"\r\n\
Priority: u=2\r\n\r\n";

fn request_head(c: &mut Criterion) {
    let mut group = c.benchmark_group("http1_request_head");
    group.throughput(Throughput::Bytes(BROWSER_REQUEST.len() as u64));
    group.bench_function("parse_browser_get", |b| {
        let mut parser = RequestParser::new(Limits::default());
        b.iter(|| match parser.parse(black_box(BROWSER_REQUEST)) {
            Ok(ParseStatus::Complete { head, consumed }) => black_box((head, consumed)),
            other => panic!("bench request did not parse: {other:?}"),
        })
    });
    let ctx = ForwardingContext {
        client_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23)),
        proto: Scheme::Https,
        trust_incoming_forwarded: false,
        upstream_keep_alive: true,
    };
    group.bench_function("parse_and_rewrite_upstream", |b| {
        let mut parser = RequestParser::new(Limits::default());
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            out.clear();
            if let Ok(ParseStatus::Complete { head, .. }) = parser.parse(black_box(BROWSER_REQUEST))
            {
                write_upstream_request(&head, &ctx, &mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

fn chunked_body(c: &mut Criterion) {
    // 64 KiB in 16 chunks of 4 KiB, as a backend streaming a response would send it.
    let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut body = Vec::new();
    for piece in payload.chunks(4096) {
        encode_chunk(piece, &mut body);
    }
    encode_last_chunk(b"", &mut body);
    let mut group = c.benchmark_group("http1_chunked");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("decode_64k", |b| {
        b.iter(|| {
            let mut decoder = ChunkedDecoder::new(None);
            let mut input: &[u8] = black_box(&body);
            let mut data_bytes = 0usize;
            loop {
                match decoder.decode(input) {
                    Ok(step) => {
                        data_bytes += step.data.len();
                        input = &input[step.consumed..];
                        if step.done || input.is_empty() {
                            break;
                        }
                    }
                    Err(e) => panic!("bench body did not decode: {e}"),
                }
            }
            black_box(data_bytes)
        })
    });
    group.finish();
}

criterion_group!(benches, request_head, chunked_body);
criterion_main!(benches);
