//! Criterion benches: the command parser, and a whole SMTP transaction through the session.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardgate_smtp::{
    ConnectionInfo, Event, ListenerKind, MessageOutcome, RcptDecision, Session, SessionConfig,
    SmtpCommand,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example.org",
    b"MAIL FROM:<sender.name@example.org> SIZE=10240 BODY=8BITMIME",
    b"RCPT TO:<recipient@example.com>",
    b"RCPT TO:<\"quoted local\"@[IPv6:2001:db8::1]>",
    b"DATA",
    b"BDAT 65536 LAST",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"QUIT",
];

fn bench_parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_parse");
    group.throughput(Throughput::Elements(COMMANDS.len() as u64));
    group.bench_function("mixed_commands", |b| {
        b.iter(|| {
            for line in COMMANDS {
                let _ = black_box(SmtpCommand::parse(black_box(line)));
            }
        });
    });
    group.finish();
}

fn message(size: usize) -> Vec<u8> {
    let mut body = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: bench\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(b".leading dot line that needs unstuffing and some more text\r\n");
    }
    body
}

fn run_transaction(config: &Arc<SessionConfig>, wire: &[u8], feed_size: usize) -> usize {
    let connection = ConnectionInfo {
        peer_ip: "192.0.2.1"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        listener: ListenerKind::Smtp,
    };
    let now = Instant::now();
    let mut session = Session::new(config.clone(), connection, now);
    let mut received = 0;
    for piece in wire.chunks(feed_size) {
        session.feed(piece, now);
        while let Some(event) = session.poll_event() {
            match event {
                Event::RcptRequested { .. } => {
                    let _ = session.rcpt_decision(RcptDecision::Accept);
                }
                Event::MessageData(chunk) => received += chunk.len(),
                Event::MessageComplete { .. } => {
                    let _ = session.message_result(MessageOutcome::Accepted {
                        queue_id: "Q".into(),
                    });
                }
                _ => {}
            }
        }
        black_box(session.take_transmit());
    }
    received
}

fn bench_session(c: &mut Criterion) {
    let mut config = SessionConfig::with_defaults("mx.example.com");
    config.local_domains = vec!["example.com".into()];
    let config = Arc::new(config);
    let mut group = c.benchmark_group("session");
    for (name, size) in [("10KiB", 10 * 1024), ("1MiB", 1024 * 1024)] {
        let mut wire = b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n".to_vec();
        wire.extend_from_slice(&message(size));
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("pipelined_transaction_{name}"), |b| {
            b.iter_batched(
                || (),
                |()| run_transaction(&config, &wire, 16 * 1024),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parser, bench_session);
criterion_main!(benches);
