//! Fuzzes the session: the first byte picks feed sizes and decisions, the rest is the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_smtp::{
    ConnectionInfo, Event, ListenerKind, MessageOutcome, RcptDecision, Reply, Session,
    SessionConfig,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let mut config = SessionConfig::with_defaults("mx.example.com");
    config.local_domains = vec!["example.com".into()];
    config.max_message_size = 256;
    config.auth_without_tls = control & 1 == 1;
    let listener = if control & 2 == 2 { ListenerKind::Submission } else { ListenerKind::Smtp };
    let connection = ConnectionInfo { peer_ip: [192, 0, 2, 1].into(), listener };
    let mut now = Instant::now();
    let mut session = Session::new(Arc::new(config), connection, now);
    let feed_size = usize::from(control >> 2) + 1;
    for piece in wire.chunks(feed_size) {
        session.feed(piece, now);
        now += Duration::from_secs(u64::from(piece[0] % 8));
        session.handle_timeout(now);
        while let Some(event) = session.poll_event() {
            let result = match event {
                Event::RcptRequested { .. } if control & 4 == 0 => session.rcpt_decision(RcptDecision::Accept),
                Event::RcptRequested { .. } => session.rcpt_decision(RcptDecision::Reject(
                    Reply::new(550, None, "no").expect("constant reply is valid"),
                )),
                Event::AuthRequested { .. } => session.auth_result(control & 8 == 0),
                Event::StartTls => session.tls_started(now),
                Event::MessageComplete { .. } => {
                    session.message_result(MessageOutcome::Accepted { queue_id: "Q".into() })
                }
                Event::MessageData(_) | Event::MessageAborted { .. } => Ok(()),
            };
            assert!(result.is_ok());
        }
        let _ = session.take_transmit();
    }
});
