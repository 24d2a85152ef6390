use super::journal::{self, JournalRecord};
use super::*;
use crate::config::EmailAction;
use std::io::Write as _;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn new_message(recipients: &[&str], queue: QueueClass) -> NewMessage {
    NewMessage {
        sender: "bob@example.org".into(),
        recipients: recipients
            .iter()
            .map(|r| (r.to_string(), "out".to_string(), EmailAction::Process { queue }))
            .collect(),
        trace_header: "Received: from test\r\n".into(),
        smtputf8: false,
        correlation_id: Some("0100000000000007".into()),
    }
}

fn open(dir: &Path) -> (MailQueue, writer::RecoveryReport) {
    let (mut queue, report) = MailQueue::open(dir).expect("open");
    queue.start(Vec::new()).expect("start");
    (queue, report)
}

#[test]
fn submitted_messages_survive_a_restart_with_their_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (mut queue, report) = open(dir.path());
    assert_eq!(report.messages, 0);
    let handle = queue.handle();
    let mut arrivals = handle.arrivals();
    let id = rt.block_on(handle.submit(new_message(&["a@x.test"], QueueClass::Normal), b"Subject: hi\r\n\r\nbody\r\n".to_vec()));
    let id = id.expect("submit");
    assert!(is_queue_id(&id));
    assert!(arrivals.has_changed().expect("watch"));
    assert_eq!(*arrivals.borrow_and_update(), 1);
    assert!(handle.spool_path(&id).expect("path").exists());
    queue.stop();
    drop(queue);

    let (queue, report) = open(dir.path());
    assert_eq!(report.messages, 1);
    let handle = queue.handle();
    let message = handle.get(&id).expect("recovered");
    assert_eq!(message.recipients[0].address, "a@x.test");
    assert_eq!(message.correlation_id.as_deref(), Some("0100000000000007"), "the correlation id is journaled");
    let mut text = String::new();
    handle.open_message(&id).expect("open").read_to_string(&mut text).expect("read");
    assert_eq!(text, "Received: from test\r\nSubject: hi\r\n\r\nbody\r\n");
}

#[test]
fn outcomes_are_journaled_and_a_final_message_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (queue, _) = open(dir.path());
    let handle = queue.handle();
    let id = rt.block_on(handle.submit(new_message(&["a@x.test", "b@x.test"], QueueClass::Normal), b"x".to_vec())).expect("submit");
    let due = handle.due(now_ms(), 10, Duration::from_secs(60));
    assert_eq!(due.len(), 1);
    assert!(handle.due(now_ms(), 10, Duration::from_secs(60)).is_empty(), "leased");
    let later = now_ms() + 3_600_000;
    let recorded = rt.block_on(handle.record(
        &id,
        vec![
            (0, RecipientOutcome::Delivered { reply: "250 ok".into() }),
            (1, RecipientOutcome::Deferred { error: "451 busy".into(), next_attempt_ms: later }),
        ],
    ));
    assert_eq!(recorded.expect("record"), Recorded { removed: false });
    let message = handle.get(&id).expect("queued");
    assert_eq!(message.recipients[1].last_error.as_deref(), Some("451 busy"));
    assert!(handle.due(now_ms(), 10, Duration::from_secs(60)).is_empty(), "deferred an hour");
    assert_eq!(handle.next_due_ms(), Some(later));
    // A second Delivered for recipient 0 is ignored; an unknown index is refused.
    assert!(matches!(
        rt.block_on(handle.record(&id, vec![(5, RecipientOutcome::Failed { reply: "x".into() })])),
        Err(QueueError::UnknownRecipient { index: 5, .. })
    ));
    rt.block_on(handle.retry_now(&id)).expect("retry");
    assert_eq!(handle.due(now_ms(), 10, Duration::from_secs(60)).len(), 1);
    let recorded = rt.block_on(handle.record(&id, vec![(1, RecipientOutcome::Failed { reply: "550 no".into() })]));
    assert_eq!(recorded.expect("record"), Recorded { removed: true });
    assert!(handle.get(&id).is_none());
    assert!(!handle.spool_path(&id).expect("path").exists());
    let Some(MessageStatus::Finished(finished)) = handle.status(&id) else { panic!("finished status") };
    assert_eq!(finished.recipients[0].1, RecipientState::Delivered { reply: "250 ok".into() });
    assert_eq!(finished.recipients[1].1, RecipientState::Failed { reply: "550 no".into() });
    assert!(matches!(rt.block_on(handle.delete(&id)), Err(QueueError::UnknownMessage(_))));
    drop(queue);
    let (queue, report) = open(dir.path());
    assert_eq!(report.messages, 0, "the removal was journaled");
    assert!(matches!(queue.handle().status(&id), Some(MessageStatus::Finished(_))));
}

#[test]
fn priority_messages_are_due_first_and_delete_removes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (queue, _) = open(dir.path());
    let handle = queue.handle();
    let normal = rt.block_on(handle.submit(new_message(&["n@x.test"], QueueClass::Normal), b"n".to_vec())).expect("normal");
    let urgent = rt.block_on(handle.submit(new_message(&["p@x.test"], QueueClass::Priority), b"p".to_vec())).expect("priority");
    let due = handle.due(now_ms(), 1, Duration::from_secs(60));
    assert_eq!(due[0].id, urgent);
    rt.block_on(handle.delete(&normal)).expect("delete");
    assert_eq!(handle.len(), 1);
    assert!(matches!(handle.status(&normal), Some(MessageStatus::Finished(FinishedMessage { deleted: true, .. }))));
}

#[test]
fn a_torn_tail_and_orphan_spool_files_are_cleaned_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (queue, _) = open(dir.path());
    let handle = queue.handle();
    let id = rt.block_on(handle.submit(new_message(&["a@x.test"], QueueClass::Normal), b"x".to_vec())).expect("submit");
    drop(queue);
    // A crash during an append: half a record at the end; a spool file nobody committed.
    let journal_file = journal::journal_path(dir.path(), 1);
    let good_len = std::fs::metadata(&journal_file).expect("meta").len();
    let mut frame = Vec::new();
    journal::encode(&JournalRecord::RetryNow { id: id.clone(), at_ms: 1 }, &mut frame);
    let mut file = std::fs::OpenOptions::new().append(true).open(&journal_file).expect("append");
    file.write_all(&frame[..frame.len() - 3]).expect("write");
    drop(file);
    std::fs::write(dir.path().join("spool").join("00000000000000AA"), b"orphan").expect("orphan");

    let (queue, report) = open(dir.path());
    assert!(report.truncated_tail);
    assert_eq!(report.orphan_spool_files, 1);
    assert_eq!(report.messages, 1);
    assert_eq!(std::fs::metadata(&journal_file).expect("meta").len(), good_len);
    assert!(queue.handle().get(&id).is_some());
    assert!(!dir.path().join("spool").join("00000000000000AA").exists());
}

#[test]
fn a_corrupt_record_stops_replay_at_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (queue, _) = open(dir.path());
    let handle = queue.handle();
    let first = rt.block_on(handle.submit(new_message(&["a@x.test"], QueueClass::Normal), b"1".to_vec())).expect("1");
    let journal_file = journal::journal_path(dir.path(), 1);
    let after_first = std::fs::metadata(&journal_file).expect("meta").len();
    let second = rt.block_on(handle.submit(new_message(&["b@x.test"], QueueClass::Normal), b"2".to_vec())).expect("2");
    drop(queue);
    // Flip a byte inside the second record's payload: its CRC no longer matches.
    let mut bytes = std::fs::read(&journal_file).expect("read");
    let at = after_first as usize + 20;
    bytes[at] ^= 0xFF;
    std::fs::write(&journal_file, bytes).expect("write");
    let (queue, report) = open(dir.path());
    assert!(report.truncated_tail);
    assert!(queue.handle().get(&first).is_some());
    assert!(queue.handle().get(&second).is_none(), "an unacknowledged tail is dropped");
    assert_eq!(report.orphan_spool_files, 1, "its spool file goes too");
}

#[test]
fn compaction_writes_the_live_state_into_a_new_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (queue, _) = open(dir.path());
    let handle = queue.handle();
    let keep = rt.block_on(handle.submit(new_message(&["k@x.test"], QueueClass::Normal), b"k".to_vec())).expect("keep");
    let gone = rt.block_on(handle.submit(new_message(&["g@x.test"], QueueClass::Normal), b"g".to_vec())).expect("gone");
    rt.block_on(handle.delete(&gone)).expect("delete");
    let state = handle.shared.state.read().expect("state");
    journal::write_compacted(dir.path(), 2, &state).expect("compact");
    drop(state);
    drop(queue);
    let (queue, report) = open(dir.path());
    assert!(!journal::journal_path(dir.path(), 1).exists(), "the older journal is deleted");
    assert_eq!(report.messages, 1);
    assert!(queue.handle().get(&keep).is_some());
    assert!(matches!(queue.handle().status(&gone), Some(MessageStatus::Finished(_))));
}

#[test]
fn a_postponed_recipient_waits_without_counting_an_attempt_and_survives_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (mut queue, _) = open(dir.path());
    let handle = queue.handle();
    let id = rt.block_on(handle.submit(new_message(&["a@x.test"], QueueClass::Normal), b"x".to_vec())).expect("submit");
    assert_eq!(handle.due(now_ms(), 10, Duration::from_secs(60)).len(), 1);
    let later = now_ms() + 60_000;
    let reason = "4.7.0 deferred by shardgate: sending limit for x.test reached".to_string();
    let recorded = rt.block_on(handle.record(&id, vec![(0, RecipientOutcome::Postponed { reason: reason.clone(), next_attempt_ms: later })]));
    assert_eq!(recorded.expect("record"), Recorded { removed: false });
    let message = handle.get(&id).expect("queued");
    assert_eq!(message.recipients[0].attempts, 0, "a postponement is not an attempt");
    assert_eq!(message.recipients[0].last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(message.recipients[0].state, RecipientState::Pending);
    assert_eq!(handle.next_due_ms(), Some(later));
    drop(handle);
    queue.stop();
    drop(queue);
    let (queue, _) = open(dir.path());
    let message = queue.handle().get(&id).expect("replayed");
    assert_eq!((message.recipients[0].attempts, message.recipients[0].next_attempt_ms), (0, later));
}

fn queued_message(n: u64) -> QueuedMessage {
    QueuedMessage {
        id: make_queue_id(0x1000 + n, 1),
        received_at_ms: 1_700_000_000_000 + n,
        sender: "bob@example.org".into(),
        recipients: vec![QueuedRecipient {
            address: format!("user{n}@example.com"),
            route: "out".into(),
            action: EmailAction::Process { queue: QueueClass::Normal },
            state: RecipientState::Pending,
            attempts: 0,
            next_attempt_ms: 4_000_000_000_000,
            last_error: None,
        }],
        size: 1,
        trace_header: "Received: from test\r\n".into(),
        helo: "client.example.org".into(),
        client_ip: IpAddr::from([192, 0, 2, 1]),
        authenticated_user: None,
        tls: false,
        smtputf8: false,
        body_8bit: false,
        correlation_id: None,
    }
}

/// Writes journal `seq` with `magic` and `records` framed by `encode`, and a spool file for
/// every message given.
fn write_journal(dir: &Path, seq: u64, magic: &[u8], records: &[JournalRecord], encode: fn(&JournalRecord, &mut Vec<u8>)) {
    std::fs::create_dir_all(dir.join("spool")).expect("spool");
    let mut bytes = magic.to_vec();
    for record in records {
        encode(record, &mut bytes);
        if let JournalRecord::Enqueued(message) = record {
            std::fs::write(dir.join("spool").join(&message.id), b"content").expect("spool file");
        }
    }
    std::fs::write(journal::journal_path(dir, seq), bytes).expect("journal");
}

#[test]
fn a_format_one_json_journal_is_read_once_and_rewritten_in_format_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = queued_message(1);
    let delivered = queued_message(2);
    let removed = FinishedMessage {
        id: delivered.id.clone(),
        sender: delivered.sender.clone(),
        finished_at_ms: 9,
        deleted: false,
        recipients: vec![(delivered.recipients[0].address.clone(), RecipientState::Delivered { reply: "250 ok".into() })],
    };
    let records = vec![
        JournalRecord::Enqueued(Box::new(kept.clone())),
        JournalRecord::Enqueued(Box::new(delivered.clone())),
        JournalRecord::Outcomes { id: kept.id.clone(), outcomes: vec![(0, RecipientOutcome::Deferred { error: "451 later".into(), next_attempt_ms: 77 })] },
        JournalRecord::Outcomes { id: delivered.id.clone(), outcomes: vec![(0, RecipientOutcome::Delivered { reply: "250 ok".into() })] },
        JournalRecord::Removed(removed),
    ];
    write_journal(dir.path(), 3, journal::MAGIC_V1, &records, journal::encode_v1);
    std::fs::remove_file(dir.path().join("spool").join(&delivered.id)).expect("delivered spool file gone");

    let (queue, report) = open(dir.path());
    assert!(report.upgraded_from_json && report.compacted);
    assert_eq!((report.records, report.messages, report.orphan_spool_files, report.missing_spool_files), (5, 1, 0, 0));
    assert!(!journal::journal_path(dir.path(), 3).exists(), "the JSON journal is gone");
    let upgraded = std::fs::read(journal::journal_path(dir.path(), 4)).expect("format 2 journal");
    assert_eq!(&upgraded[..8], journal::MAGIC);
    let handle = queue.handle();
    let message = handle.get(&kept.id).expect("kept");
    assert_eq!(message.recipients[0].last_error.as_deref(), Some("451 later"));
    assert_eq!(message.recipients[0].attempts, 1);
    assert_eq!(handle.next_due_ms(), Some(77));
    assert!(matches!(handle.status(&delivered.id), Some(MessageStatus::Finished(_))));
    drop(queue);

    // The next start reads format 2 and has nothing to upgrade.
    let (queue, report) = open(dir.path());
    assert!(!report.upgraded_from_json && !report.compacted);
    assert_eq!(report.messages, 1);
    assert_eq!(queue.handle().get(&kept.id).expect("kept").recipients[0].last_error.as_deref(), Some("451 later"));
}

#[test]
fn a_torn_binary_tail_is_cut_wherever_the_crash_hit() {
    let records: Vec<JournalRecord> = (0..3).map(|n| JournalRecord::Enqueued(Box::new(queued_message(n)))).collect();
    let mut frame = Vec::new();
    journal::encode(&JournalRecord::Enqueued(Box::new(queued_message(9))), &mut frame);
    // Cut inside the header, right after it, and inside the payload; and a frame whose
    // length field was torn (larger than what follows).
    let mut bad_length = frame.clone();
    bad_length[2] = 0x7F;
    let tails: Vec<Vec<u8>> = vec![frame[..3].to_vec(), frame[..8].to_vec(), frame[..frame.len() - 1].to_vec(), bad_length];
    for tail in tails {
        let dir = tempfile::tempdir().expect("tempdir");
        write_journal(dir.path(), 1, journal::MAGIC, &records, journal::encode);
        let path = journal::journal_path(dir.path(), 1);
        let good_len = std::fs::metadata(&path).expect("meta").len();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("append");
        file.write_all(&tail).expect("tail");
        drop(file);
        // The torn record's spool file was written before the crash: an orphan.
        std::fs::write(dir.path().join("spool").join(queued_message(9).id), b"x").expect("orphan");
        let (queue, report) = open(dir.path());
        assert!(report.truncated_tail, "tail of {} bytes", tail.len());
        assert_eq!((report.messages, report.records, report.orphan_spool_files), (3, 3, 1));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
        drop(queue);
        let (_, report) = open(dir.path());
        assert!(!report.truncated_tail, "cut once, clean afterwards");
    }
}

#[test]
fn a_clean_stop_lets_the_next_start_skip_the_spool_listing_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (mut queue, report) = open(dir.path());
    assert!(report.spool_listed, "a new queue is listed (it is empty)");
    let id = rt.block_on(queue.handle().submit(new_message(&["a@x.test"], QueueClass::Normal), b"x".to_vec())).expect("submit");
    let path = journal::journal_path(dir.path(), 1);
    let before = std::fs::metadata(&path).expect("meta").len();
    queue.stop_clean();
    drop(queue);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), before + 17, "the marker is one 17-byte frame");

    // A stray file: a start that lists the spool folder would delete it.
    let stray = dir.path().join("spool").join("00000000000000AA");
    std::fs::write(&stray, b"stray").expect("stray");
    let (queue, report) = open(dir.path());
    assert!(!report.spool_listed && !report.truncated_tail);
    assert_eq!(report.messages, 1);
    assert!(queue.handle().get(&id).is_some());
    assert!(stray.exists(), "the spool folder was not listed");
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), before, "the marker is cut off at start");
    // A crash now (no clean stop): the next start lists again.
    drop(queue);
    let (_, report) = open(dir.path());
    assert!(report.spool_listed);
    assert_eq!(report.orphan_spool_files, 1);
    assert!(!stray.exists());
}

#[test]
fn a_journal_mostly_made_of_history_is_compacted_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut records = Vec::new();
    for n in 0..20_000u64 {
        let message = queued_message(n);
        records.push(JournalRecord::Removed(FinishedMessage {
            id: message.id.clone(),
            sender: message.sender.clone(),
            finished_at_ms: n,
            deleted: true,
            recipients: Vec::new(),
        }));
        records.insert(records.len() - 1, JournalRecord::Enqueued(Box::new(message)));
    }
    records.push(JournalRecord::Enqueued(Box::new(queued_message(99_999))));
    write_journal(dir.path(), 1, journal::MAGIC, &records, journal::encode);
    for n in 0..20_000u64 {
        std::fs::remove_file(dir.path().join("spool").join(queued_message(n).id)).expect("removed message's spool file");
    }
    let (queue, report) = open(dir.path());
    assert!(report.compacted && !report.upgraded_from_json);
    assert_eq!((report.records, report.messages), (40_001, 1));
    assert!(!journal::journal_path(dir.path(), 1).exists());
    drop(queue);
    let (queue, report) = open(dir.path());
    assert_eq!(report.records, 1 + FINISHED_KEPT as u64, "one record per live entry");
    assert!(!report.compacted);
    assert!(queue.handle().get(&queued_message(99_999).id).is_some());
    assert!(matches!(queue.handle().status(&queued_message(19_999).id), Some(MessageStatus::Finished(_))));
}

#[test]
fn a_submitted_file_is_copied_into_the_spool_not_read_into_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (queue, _) = open(dir.path());
    let handle = queue.handle();
    // 24 MiB of lines, well above any buffer involved.
    let source = dir.path().join("big.eml");
    let mut file = std::fs::File::create(&source).expect("create");
    file.write_all(b"Subject: big\r\n\r\n").expect("head");
    let line = [b'x'; 1022];
    for _ in 0..24 * 1024 {
        file.write_all(&line).expect("line");
        file.write_all(b"\r\n").expect("crlf");
    }
    drop(file);
    let source_len = std::fs::metadata(&source).expect("meta").len();
    let content = ContentFile { path: source.clone(), max_bytes: 50 << 20 };
    let id = rt
        .block_on(handle.submit_with_file(new_message(&["a@x.test"], QueueClass::Normal), b"Date: now\r\n".to_vec(), Some(content)))
        .expect("submit");
    let spooled = std::fs::read(handle.spool_path(&id).expect("path")).expect("spool");
    assert_eq!(spooled.len() as u64, source_len + 11);
    assert_eq!(handle.get(&id).expect("queued").size, source_len + 11);
    assert!(spooled.starts_with(b"Date: now\r\nSubject: big\r\n\r\nxxx"));
    assert!(spooled.ends_with(b"xx\r\n"));
    // Too large: refused, no spool file left behind.
    let small = ContentFile { path: source, max_bytes: 1 << 20 };
    let refused = rt.block_on(handle.submit_with_file(new_message(&["a@x.test"], QueueClass::Normal), Vec::new(), Some(small)));
    assert!(matches!(refused, Err(QueueError::Storage(_))), "{refused:?}");
    let spool_files = std::fs::read_dir(dir.path().join("spool")).expect("list").count();
    assert_eq!(spool_files, 1);
}

#[test]
fn a_batch_whose_file_system_sync_may_not_have_finished_keeps_only_messages_whose_spool_files_match() {
    let content: &[u8] = b"content";
    let good = SpoolDigest { id: queued_message(0).id, len: content.len() as u64, crc: crc32fast::hash(content) };
    let wrong_bytes = SpoolDigest { id: queued_message(1).id, len: content.len() as u64, crc: crc32fast::hash(b"CONTENT") };
    let wrong_length = SpoolDigest { id: queued_message(2).id, len: 4096, crc: crc32fast::hash(content) };
    let mut records = vec![JournalRecord::Unsynced(vec![good.clone(), wrong_bytes.clone(), wrong_length.clone()])];
    records.extend((0..3).map(|n| JournalRecord::Enqueued(Box::new(queued_message(n)))));

    // No `synced` after the batch: its files are checked, the two that do not match go.
    let dir = tempfile::tempdir().expect("tempdir");
    write_journal(dir.path(), 1, journal::MAGIC, &records, journal::encode);
    let (queue, report) = open(dir.path());
    assert_eq!((report.messages, report.missing_spool_files), (1, 2));
    let handle = queue.handle();
    assert!(handle.get(&good.id).is_some());
    assert!(handle.get(&wrong_bytes.id).is_none() && handle.get(&wrong_length.id).is_none());
    assert!(!dir.path().join("spool").join(&wrong_bytes.id).exists(), "the torn file is removed");
    drop(queue);
    let (_, report) = open(dir.path());
    assert_eq!((report.messages, report.missing_spool_files), (1, 0), "the drop was journaled");

    // A `synced` after it: the batch is durable, nothing is checked.
    let dir = tempfile::tempdir().expect("tempdir");
    records.push(JournalRecord::Synced);
    write_journal(dir.path(), 1, journal::MAGIC, &records, journal::encode);
    let (_, report) = open(dir.path());
    assert_eq!((report.messages, report.missing_spool_files), (3, 0));
}

#[test]
fn a_shard_enqueue_with_an_unsynced_spool_file_is_committed_by_one_file_system_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut queue, _) = open(dir.path());
    let link = queue.link();
    let mut ids = Vec::new();
    for n in 0..3u64 {
        let message = queued_message(n);
        let content = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
        std::fs::write(link.spool_path(&message.id), &content).expect("spool file");
        let digest = SpoolDigest { id: message.id.clone(), len: content.len() as u64, crc: crc32fast::hash(content.as_bytes()) };
        ids.push(message.id.clone());
        assert!(link.enqueue(0, n, message, digest));
    }
    queue.stop();
    drop(queue);
    let journal_bytes = std::fs::read(journal::journal_path(dir.path(), 1)).expect("journal");
    let (queue, report) = open(dir.path());
    assert_eq!((report.messages, report.missing_spool_files), (3, 0), "{} journal bytes", journal_bytes.len());
    for id in &ids {
        assert!(queue.handle().get(id).is_some(), "{id} recovered");
    }
}

#[test]
fn a_deferral_is_journaled_without_a_sync_and_survives_a_restart_once_a_later_commit_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let (mut queue, _) = open(dir.path());
    let handle = queue.handle();
    let first = rt.block_on(handle.submit(new_message(&["a@x.test"], QueueClass::Normal), b"x".to_vec())).expect("submit");
    let deferred = RecipientOutcome::Deferred { error: "451 try later".into(), next_attempt_ms: 4_100_000_000_000 };
    let recorded = rt.block_on(handle.record(&first, vec![(0, deferred)])).expect("record");
    assert!(!recorded.removed);
    // A later commit that syncs (a new message) carries the deferral to disk with it.
    rt.block_on(handle.submit(new_message(&["b@x.test"], QueueClass::Normal), b"y".to_vec())).expect("submit");
    queue.stop();
    drop(queue);
    let (queue, report) = open(dir.path());
    assert_eq!(report.messages, 2);
    let message = queue.handle().get(&first).expect("recovered");
    assert_eq!(message.recipients[0].attempts, 1);
    assert_eq!(message.recipients[0].last_error.as_deref(), Some("451 try later"));
    assert_eq!(message.recipients[0].next_attempt_ms, 4_100_000_000_000);
}
