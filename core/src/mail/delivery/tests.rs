use super::*;

#[test]
fn backoff_doubles_from_initial_up_to_max() {
    let initial = Duration::from_secs(60);
    let max = Duration::from_secs(600);
    let delays: Vec<u64> = (1..=6).map(|n| retry_delay(n, initial, max).as_secs()).collect();
    assert_eq!(delays, [60, 120, 240, 480, 600, 600]);
    assert_eq!(retry_delay(1000, initial, max), max);
    assert_eq!(retry_delay(0, initial, max), initial);
}

#[test]
fn hard_bounces_are_address_failures_only() {
    assert!(is_hard_bounce(&ServerReply::new(550, "5.1.1 no such user")));
    assert!(is_hard_bounce(&ServerReply::new(550, "mailbox unavailable")));
    assert!(is_hard_bounce(&ServerReply::new(500, "5.3.0 Error: command failed")), "smtp-sink -f rcpt");
    assert!(!is_hard_bounce(&ServerReply::new(552, "5.2.2 mailbox full")));
    assert!(!is_hard_bounce(&ServerReply::new(552, "5.3.4 message too big")));
    assert!(!is_hard_bounce(&ServerReply::new(554, "5.7.1 spam")));
    assert!(!is_hard_bounce(&ServerReply::new(450, "4.1.1 try later")));
}

/// A queue in memory: messages with their text in files, outcomes and submissions recorded.
#[derive(Clone)]
struct FakeQueue {
    state: Arc<Mutex<FakeState>>,
    arrivals: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FakeQueue {
    fn new() -> FakeQueue {
        FakeQueue { state: Arc::default(), arrivals: Arc::new(tokio::sync::watch::channel(0).0) }
    }

    fn path_of(&self, id: &str) -> Result<PathBuf, QueueAccessError> {
        lock(&self.state)
            .messages
            .iter()
            .find(|(m, _, _)| m.id == id)
            .map(|(_, p, _)| p.clone())
            .ok_or_else(|| QueueAccessError("no such message".into()))
    }
}

#[derive(Default)]
struct FakeState {
    messages: Vec<(DueMessage, PathBuf, SystemTime)>,
    records: Vec<(String, Vec<(usize, AttemptOutcome)>)>,
    submissions: Vec<Submission>,
}

impl MailQueue for FakeQueue {
    fn due(&self, now: SystemTime, limit: usize) -> impl Future<Output = Result<Vec<DueMessage>, QueueAccessError>> + Send {
        let due: Vec<DueMessage> = lock(&self.state)
            .messages
            .iter()
            .filter(|(m, _, next)| *next <= now && !m.recipients.is_empty())
            .take(limit)
            .map(|(m, _, _)| m.clone())
            .collect();
        async move { Ok(due) }
    }

    fn record(&self, id: &str, outcomes: Vec<(usize, AttemptOutcome)>) -> impl Future<Output = Result<(), QueueAccessError>> + Send {
        let mut state = lock(&self.state);
        if let Some((message, _, next)) = state.messages.iter_mut().find(|(m, _, _)| m.id == id) {
            for (index, outcome) in &outcomes {
                match outcome {
                    AttemptOutcome::Postponed { next_attempt, .. } => *next = *next_attempt,
                    AttemptOutcome::Deferred { next_attempt, .. } => {
                        *next = *next_attempt;
                        for r in message.recipients.iter_mut().filter(|r| r.index == *index) {
                            r.attempts += 1;
                        }
                    }
                    _ => message.recipients.retain(|r| r.index != *index),
                }
            }
        }
        state.records.push((id.to_string(), outcomes));
        async { Ok(()) }
    }

    fn open_text(&self, id: &str) -> impl Future<Output = Result<TextReader, QueueAccessError>> + Send {
        let path = self.path_of(id);
        async move {
            let file = tokio::fs::File::open(path?).await.map_err(|e| QueueAccessError(e.to_string()))?;
            Ok(Box::new(file) as TextReader)
        }
    }

    fn open_text_blocking(&self, id: &str) -> Result<Box<dyn std::io::Read + Send>, QueueAccessError> {
        let file = std::fs::File::open(self.path_of(id)?).map_err(|e| QueueAccessError(e.to_string()))?;
        Ok(Box::new(file))
    }

    fn submit(&self, submission: Submission) -> impl Future<Output = Result<String, QueueAccessError>> + Send {
        let mut state = lock(&self.state);
        state.submissions.push(submission);
        let id = format!("S{}", state.submissions.len());
        async move { Ok(id) }
    }

    fn arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.arrivals.subscribe()
    }
}

/// A next hop that refuses `unknown*` recipients (550 5.1.1) and defers `later*` (451), and
/// keeps what it receives.
async fn fake_next_hop(listener: tokio::net::TcpListener, received: Arc<Mutex<Vec<String>>>, connections: Arc<AtomicU64>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        connections.fetch_add(1, Ordering::Relaxed);
        let received = received.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let _ = write.write_all(b"220 fake ESMTP\r\n").await;
            let mut line = String::new();
            while lines.read_line(&mut line).await.map(|n| n > 0).unwrap_or(false) {
                let upper = line.to_ascii_uppercase();
                let answer: &[u8] = if upper.starts_with("EHLO") {
                    b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                } else if upper.starts_with("RCPT") && upper.contains("UNKNOWN") {
                    b"550 5.1.1 unknown user\r\n"
                } else if upper.starts_with("RCPT") && upper.contains("LATER") {
                    b"451 4.2.1 try later\r\n"
                } else if upper.starts_with("DATA") {
                    let _ = write.write_all(b"354 go\r\n").await;
                    let mut text = String::new();
                    loop {
                        let mut body_line = String::new();
                        if lines.read_line(&mut body_line).await.map(|n| n == 0).unwrap_or(true) || body_line == ".\r\n" {
                            break;
                        }
                        text.push_str(&body_line);
                    }
                    lock(&received).push(text);
                    b"250 2.0.0 Ok: queued as F1\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                } else {
                    b"250 ok\r\n"
                };
                let _ = write.write_all(answer).await;
                line.clear();
            }
        });
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_message_to_a_forward_target_and_a_mailbox_ends_with_an_outcome_per_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicU64::new(0));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let thread_runtime = std::thread::spawn({
        let (received, connections) = (received.clone(), connections.clone());
        move || runtime.block_on(fake_next_hop(listener, received, connections))
    });
    let _ = thread_runtime;
    let engine_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let handle = engine_runtime.handle().clone();
    std::thread::spawn(move || engine_runtime.block_on(std::future::pending::<()>()));

    let text_path = dir.path().join("m1.eml");
    std::fs::write(&text_path, b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n").expect("write");
    let forward = EmailAction::Forward(MailForward {
        host: "127.0.0.1".into(),
        port,
        auth: None,
        starttls: StartTlsPolicy::Opportunistic,
        headers: vec![("X-Forwarded-By".into(), "shardgate".into())],
    });
    let recipient = |index: usize, address: &str, action: &EmailAction| DueRecipient { index, address: address.into(), action: action.clone(), attempts: 0 };
    let message = DueMessage {
        id: "M1".into(),
        sender: "s@x.test".into(),
        received: SystemTime::now(),
        size: 30,
        smtputf8: false,
        recipients: vec![
            recipient(0, "ok@d.test", &forward),
            recipient(1, "unknown@d.test", &forward),
            recipient(2, "later@d.test", &forward),
            recipient(3, "local@x.test", &EmailAction::Deliver),
        ],
        correlation_id: Some("0100000000000042".into()),
    };
    let queue = FakeQueue::new();
    lock(&queue.state).messages.push((message, text_path.clone(), SystemTime::UNIX_EPOCH));
    let mut settings = DeliverySettings::defaults("mx.x.test");
    settings.retry_initial = Duration::from_secs(3600);
    settings.resolver = Some("127.0.0.1:9".parse().expect("addr"));
    let router: Router = Arc::new(|_sender: &str, _recipient: &str| Some(("local".to_string(), EmailAction::Deliver)));
    let engine = DeliveryEngine::start(&handle, queue.clone(), settings, "mx.x.test", dir.path().to_path_buf(), router);

    wait_for("both destinations to record", || lock(&queue.state).records.len() >= 2);
    let state = lock(&queue.state);
    let names = ["ok@d.test", "unknown@d.test", "later@d.test", "local@x.test"];
    let outcomes: HashMap<&str, AttemptOutcome> =
        state.records.iter().flat_map(|(_, o)| o.clone()).map(|(index, outcome)| (names[index], outcome)).collect();
    assert!(matches!(&outcomes["ok@d.test"], AttemptOutcome::Delivered { reply } if reply.contains("127.0.0.1 said: 250 2.0.0 Ok: queued as F1")), "{outcomes:?}");
    assert!(matches!(&outcomes["unknown@d.test"], AttemptOutcome::Failed { reply } if reply.contains("550 5.1.1 unknown user")), "{outcomes:?}");
    let AttemptOutcome::Deferred { error, next_attempt } = &outcomes["later@d.test"] else { panic!("{outcomes:?}") };
    assert!(error.contains("451 4.2.1 try later"));
    assert!(*next_attempt > SystemTime::now() + Duration::from_secs(3000), "backoff starts at retry_initial");
    assert!(matches!(&outcomes["local@x.test"], AttemptOutcome::Delivered { reply } if reply.contains("maildir")), "{outcomes:?}");
    let mailbox = dir.path().join("mail/mailboxes/local@x.test/new");
    assert_eq!(std::fs::read_dir(&mailbox).expect("maildir").count(), 1);

    // The next hop got the text once, dot-stuffed, with the route's header first.
    let got = lock(&received).clone();
    assert_eq!(got, vec!["X-Forwarded-By: shardgate\r\nSubject: hi\r\n\r\n..leading dot\r\nbody\r\n".to_string()]);

    // One bounce to the sender, for the unknown recipient only.
    assert_eq!(state.submissions.len(), 1);
    let bounce = &state.submissions[0];
    assert_eq!(bounce.sender, "");
    assert_eq!(bounce.recipients[0].0, "s@x.test");
    assert_eq!(bounce.correlation_id.as_deref(), Some("0100000000000042"), "the bounce is logged under the bounced message's id");
    let report = String::from_utf8_lossy(&bounce.text);
    assert!(report.contains("Final-Recipient: rfc822; unknown@d.test"));
    assert!(!report.contains("later@d.test"));
    drop(state);
    assert_eq!(engine.suppressed().len(), 1);

    // Mail to the suppressed address now fails without a connection.
    let before = connections.load(Ordering::Relaxed);
    let second = DueMessage {
        id: "M2".into(),
        sender: "".into(),
        received: SystemTime::now(),
        size: 10,
        smtputf8: false,
        recipients: vec![recipient(0, "UNKNOWN@d.test", &forward)],
        correlation_id: None,
    };
    lock(&queue.state).messages.push((second, text_path, SystemTime::UNIX_EPOCH));
    queue.arrivals.send_modify(|n| *n += 1);
    wait_for("the suppressed recipient to fail", || lock(&queue.state).records.iter().any(|(id, _)| id == "M2"));
    let state = lock(&queue.state);
    let (_, outcomes) = state.records.iter().find(|(id, _)| id == "M2").expect("record");
    assert!(matches!(&outcomes[0].1, AttemptOutcome::Failed { reply } if reply.contains("suppressed")), "{outcomes:?}");
    assert_eq!(connections.load(Ordering::Relaxed), before);
    assert_eq!(state.submissions.len(), 1, "no bounce for a null-sender message");
    assert_eq!(engine.stats().bounced, 2);
}

#[test]
fn a_message_older_than_max_age_fails_instead_of_deferring() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let handle = runtime.handle().clone();
    std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    // A port nothing listens on: every attempt is a connection failure (transient).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let text_path = dir.path().join("old.eml");
    std::fs::write(&text_path, b"Subject: old\r\n\r\nx\r\n").expect("write");
    let forward = EmailAction::Forward(MailForward {
        host: "127.0.0.1".into(),
        port: closed,
        auth: None,
        starttls: StartTlsPolicy::None,
        headers: Vec::new(),
    });
    let message = DueMessage {
        id: "OLD".into(),
        sender: "s@x.test".into(),
        received: SystemTime::now() - Duration::from_secs(6 * 24 * 3600),
        size: 20,
        smtputf8: false,
        recipients: vec![DueRecipient { index: 0, address: "r@d.test".into(), action: forward, attempts: 30 }],
        correlation_id: None,
    };
    let queue = FakeQueue::new();
    lock(&queue.state).messages.push((message, text_path, SystemTime::UNIX_EPOCH));
    let router: Router = Arc::new(|_: &str, _: &str| Some(("local".to_string(), EmailAction::Deliver)));
    let _engine = DeliveryEngine::start(&handle, queue.clone(), DeliverySettings::defaults("mx.x.test"), "mx.x.test", dir.path().to_path_buf(), router);
    wait_for("the expired message to be recorded", || !lock(&queue.state).records.is_empty());
    let state = lock(&queue.state);
    let AttemptOutcome::Failed { reply } = &state.records[0].1[0].1 else { panic!("{:?}", state.records) };
    assert!(reply.contains("message expired after") && reply.contains("Connection refused"), "{reply}");
    let report = String::from_utf8_lossy(&state.submissions[0].text).to_string();
    assert!(report.contains("Action: failed\r\nStatus: 4.4.7\r\n"), "{report}");
}
