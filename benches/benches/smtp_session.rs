//! SMTP intake benches, quick to run (`cargo bench -p shardgate-benches --bench smtp_session`):
//!
//! - `smtp_command_parse`: the command parser over a mix of commands;
//! - `smtp_session`: a whole pipelined transaction (EHLO, MAIL, RCPT, DATA with 10 KiB of
//!   dot-stuffed content, QUIT) through the sans-I/O session, decisions answered inline;
//! - `email_routes`: the RCPT-time decision over 50 routes, and the content scan of a 10 KiB
//!   message (header block parsed with mail-parser, attachment scan);
//! - `mail_queue_recovery`: `MailQueue::open` (journal replay, spool folder check) of a queue
//!   holding `SHARDGATE_BENCH_QUEUE_MESSAGES` messages (default 20,000; the 1,000,000-message
//!   run in `benches/RESULTS.md` sets it), as after a crash: the spool folder is listed;
//! - `mail_journal_decode`: one message record decoded from its journal payload, format 2
//!   (binary, what replay does per record) and format 1 (JSON, read once at upgrade).

use std::hint::black_box;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::config::{Config, EmailAction, QueueClass};
use shardgate_core::mail::queue::codec::decode_payload;
use shardgate_core::mail::queue::journal::{encode, encode_v1, JournalRecord, MAGIC};
use shardgate_core::mail::queue::{make_queue_id, MailQueue, QueuedMessage, QueuedRecipient, RecipientState};
use shardgate_core::mail::routes::{route_recipient, ContentScanner, EnvelopeFacts};
use shardgate_smtp::{ConnectionInfo, Event, ListenerKind, MessageOutcome, RcptDecision, Session, SessionConfig, SmtpCommand};

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example.org",
    b"MAIL FROM:<sender.name@example.org> SIZE=10240 BODY=8BITMIME",
    b"RCPT TO:<recipient@example.com>",
    b"DATA",
    b"BDAT 65536 LAST",
    b"QUIT",
];

fn message(size: usize) -> Vec<u8> {
    let mut body = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: bench\r\nX-Campaign: weekly\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(b"..a line of text that starts with a dot and needs unstuffing\r\n");
    }
    body
}

fn bench_parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("smtp_command_parse");
    group.throughput(Throughput::Elements(COMMANDS.len() as u64));
    group.bench_function("mixed_commands", |b| {
        b.iter(|| {
            for line in COMMANDS {
                let _ = black_box(SmtpCommand::parse(black_box(line)));
            }
        })
    });
    group.finish();
}

fn bench_session(c: &mut Criterion) {
    let mut config = SessionConfig::with_defaults("mx.example.com");
    config.local_domains = vec!["example.com".into()];
    let config = Arc::new(config);
    let mut wire = b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n".to_vec();
    wire.extend_from_slice(&message(10 * 1024));
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    let peer = ConnectionInfo { peer_ip: IpAddr::from([192, 0, 2, 1]), listener: ListenerKind::Smtp };
    let mut group = c.benchmark_group("smtp_session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pipelined_transaction_10KiB", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut session = Session::new(config.clone(), peer, now);
            let mut received = 0usize;
            for piece in wire.chunks(16 * 1024) {
                session.feed(piece, now);
                while let Some(event) = session.poll_event() {
                    match event {
                        Event::RcptRequested { .. } => {
                            let _ = session.rcpt_decision(RcptDecision::Accept);
                        }
                        Event::MessageData(chunk) => received += chunk.len(),
                        Event::MessageComplete { .. } => {
                            let _ = session.message_result(MessageOutcome::Accepted { queue_id: "Q".into() });
                        }
                        _ => {}
                    }
                }
                black_box(session.take_transmit());
            }
            black_box(received)
        })
    });
    group.finish();
}

fn bench_routes(c: &mut Criterion) {
    let mut text = String::from("[email]\nhostname = \"mx.example.com\"\n[email.ports]\nsmtp = 2525\n");
    for i in 0..50 {
        text.push_str(&format!(
            "[[email.routes]]\nname = \"r{i}\"\npriority = {p}\nmatch = {{ recipients = [\"*@d{i}.example.com\", \"admin@*\"], client_ip = \"10.0.0.0/8\" }}\naction = {{ type = \"deliver\" }}\n",
            p = i % 5
        ));
    }
    text.push_str("[[email.routes]]\nname = \"promo\"\npriority = -1\nmatch = { headers = { \"X-Campaign\" = \"/^promo/\" } }\naction = { type = \"reject\", code = 554 }\n");
    text.push_str("[[email.routes]]\nname = \"rest\"\npriority = -2\naction = { type = \"process\" }\n");
    let config = Config::parse(&text, "bench.toml").expect("valid bench config");
    let routes = config.email.expect("email").routes;
    let facts = EnvelopeFacts {
        sender: "bob@example.org",
        recipient: "someone@d49.example.com",
        client_ip: IpAddr::from([192, 0, 2, 1]),
        authenticated: false,
    };
    let content = message(10 * 1024);
    let mut group = c.benchmark_group("email_routes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rcpt_decision_50_routes", |b| b.iter(|| black_box(route_recipient(&routes, black_box(&facts)))));
    group.bench_function("content_scan_10KiB", |b| {
        b.iter(|| {
            let mut scanner = ContentScanner::new();
            for piece in content.chunks(4096) {
                scanner.feed(piece);
            }
            black_box(scanner.finish())
        })
    });
    group.finish();
}

/// The message record of queue message `n`, as the benches store it.
fn bench_message(n: usize) -> QueuedMessage {
    let id = make_queue_id(1_000_000 + n as u64, 0);
    QueuedMessage {
        id: id.clone(),
        received_at_ms: 1_700_000_000_000,
        sender: "bob@example.org".into(),
        recipients: vec![QueuedRecipient {
            address: format!("user{n}@example.com"),
            route: "outbound".into(),
            action: EmailAction::Process { queue: QueueClass::Normal },
            state: RecipientState::Pending,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        }],
        size: 10240,
        trace_header: format!("Received: from client.example.org ([192.0.2.1])\r\n\tby mx.example.com (shardgate) with ESMTP id {id}; Wed, 02 Dec 2026 05:00:00 +0000\r\n"),
        helo: "client.example.org".into(),
        client_ip: IpAddr::from([192, 0, 2, 1]),
        authenticated_user: None,
        tls: false,
        smtputf8: false,
        body_8bit: false,
        correlation_id: Some(format!("{n:016x}")),
    }
}

fn bench_journal_decode(c: &mut Criterion) {
    let record = JournalRecord::Enqueued(Box::new(bench_message(7)));
    let mut binary = Vec::new();
    encode(&record, &mut binary);
    let mut json = Vec::new();
    encode_v1(&record, &mut json);
    let mut group = c.benchmark_group("mail_journal_decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("enqueued_binary_{}B", binary.len() - 8), |b| {
        b.iter(|| black_box(decode_payload(black_box(&binary[8..])).expect("decode")))
    });
    group.bench_function(format!("enqueued_json_{}B", json.len() - 8), |b| {
        b.iter(|| black_box(serde_json::from_slice::<JournalRecord>(black_box(&json[8..])).expect("decode")))
    });
    group.finish();
}

/// A queue folder with `count` messages: one journal record and one (tiny) spool file each.
fn build_queue(dir: &std::path::Path, count: usize) {
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).expect("spool dir");
    let mut journal = std::io::BufWriter::new(std::fs::File::create(dir.join("journal-00000001.log")).expect("journal"));
    journal.write_all(MAGIC).expect("magic");
    let mut buf = Vec::new();
    for n in 0..count {
        let message = bench_message(n);
        let id = message.id.clone();
        buf.clear();
        encode(&JournalRecord::Enqueued(Box::new(message)), &mut buf);
        journal.write_all(&buf).expect("record");
        std::fs::File::create(spool.join(&id)).expect("spool file");
    }
    journal.flush().expect("flush");
}

fn bench_recovery(c: &mut Criterion) {
    let count: usize = std::env::var("SHARDGATE_BENCH_QUEUE_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let built = Instant::now();
    build_queue(dir.path(), count);
    eprintln!("mail_queue_recovery: built a {count}-message queue in {:?}", built.elapsed());
    let mut group = c.benchmark_group("mail_queue_recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function(format!("open_{count}_messages"), |b| {
        b.iter(|| {
            let (queue, report) = MailQueue::open(dir.path()).expect("open");
            assert_eq!(report.messages, count);
            black_box(queue)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parser, bench_session, bench_routes, bench_recovery, bench_journal_decode);
criterion_main!(benches);
