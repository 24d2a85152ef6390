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
