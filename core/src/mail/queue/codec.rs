//! The binary encoding of journal records (journal format 2, magic `SGMQJ002`).
//!
//! Owns: the bytes of one record's payload and their meaning, both ways. Does not own the
//! framing (length, CRC, magic: [`super::journal`]) nor what a record does to the queue.
//!
//! Every payload is a one-byte record tag followed by the record's fields in a fixed order;
//! there are no field names and nothing optional is skipped, so decoding is a single forward
//! pass over the slice with one allocation per string and no intermediate tree (the JSON
//! payloads of format 1 cost about 5 µs per record; these cost well under 1 µs). Primitives:
//!
//! ```text
//! uint     LEB128 varint (u64; u16/u32 fields are range-checked on decode)
//! bool     one byte, 0 or 1
//! str      uint length, then that many bytes of UTF-8
//! opt<T>   one byte 0 (absent) or 1 followed by T
//! ip       one byte 4 or 6, then 4 or 16 address bytes
//! list<T>  uint count, then each T
//! ```
//!
//! Records (tags):
//!
//! ```text
//! 1 enqueued   message
//! 2 outcomes   id:str, list<(index:uint, outcome)>
//! 3 retry_now  id:str, at_ms:uint
//! 4 removed    finished
//! 5 finished   finished
//! 6 closed     at_ms:u64 LE, fixed 8 bytes (clean shutdown marker, last record only: a fixed
//!              17-byte frame, so start-up finds it by reading the file's last 17 bytes)
//! 7 unsynced   list<(id:str, len:uint, crc:u32 LE)> (spool files of this batch not yet synced)
//! 8 synced     (nothing: every record before it is durable)
//!
//! message   id:str received_at_ms:uint sender:str size:uint trace_header:str helo:str
//!           client_ip:ip authenticated_user:opt<str> flags:u8 (1 tls, 2 smtputf8, 4 8bitmime)
//!           correlation_id:opt<str> (the session's, for the logs)
//!           recipients:list<recipient>
//! recipient address:str route:str action state attempts:uint next_attempt_ms:uint
//!           last_error:opt<str>
//! action    u8: 1 forward host:str port:uint auth:opt<(user:str, password:str)>
//!                 starttls:u8 (0 opportunistic, 1 required, 2 none) headers:list<(str, str)>
//!               2 deliver | 3 process queue:u8 (0 normal, 1 priority) | 4 reject code:uint message:str
//! state     u8: 0 pending | 1 delivered reply:str | 2 failed reply:str
//! outcome   u8: 1 delivered reply:str | 2 deferred error:str next_attempt_ms:uint | 3 failed reply:str
//!               | 4 postponed reason:str next_attempt_ms:uint (a sending limit; not an attempt)
//! finished  id:str sender:str finished_at_ms:uint deleted:bool list<(address:str, state)>
//! ```
//!
//! A payload that does not decode exactly (unknown tag, short, trailing bytes, bad UTF-8) is
//! a [`DecodeError`]; the frame's CRC already matched, so that is a format problem, never a
//! torn write.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::journal::{JournalRecord, SpoolDigest};
use super::{FinishedMessage, QueuedMessage, QueuedRecipient, RecipientOutcome, RecipientState};
use crate::config::{EmailAction, ForwardAuth, MailForward, QueueClass, StartTlsPolicy};

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a field.
    #[error("record ends inside a field")]
    Short,
    /// A tag byte with no meaning.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which kind of tag (record, action, state, ...).
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// A varint longer than 10 bytes or a number out of its field's range.
    #[error("number out of range in {0}")]
    Range(&'static str),
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    Utf8,
    /// Bytes left after the record.
    #[error("{0} bytes after the end of the record")]
    Trailing(usize),
}

const TAG_ENQUEUED: u8 = 1;
const TAG_OUTCOMES: u8 = 2;
const TAG_RETRY_NOW: u8 = 3;
const TAG_REMOVED: u8 = 4;
const TAG_FINISHED: u8 = 5;
const TAG_CLOSED: u8 = 6;
const TAG_UNSYNCED: u8 = 7;
const TAG_SYNCED: u8 = 8;

/// Appends the payload of `record` to `out`.
pub fn encode_payload(record: &JournalRecord, out: &mut Vec<u8>) {
    match record {
        JournalRecord::Enqueued(message) => {
            out.push(TAG_ENQUEUED);
            put_message(out, message);
        }
        JournalRecord::Outcomes { id, outcomes } => {
            out.push(TAG_OUTCOMES);
            put_str(out, id);
            put_uint(out, outcomes.len() as u64);
            for (index, outcome) in outcomes {
                put_uint(out, *index as u64);
                match outcome {
                    RecipientOutcome::Delivered { reply } => {
                        out.push(1);
                        put_str(out, reply);
                    }
                    RecipientOutcome::Deferred { error, next_attempt_ms } => {
                        out.push(2);
                        put_str(out, error);
                        put_uint(out, *next_attempt_ms);
                    }
                    RecipientOutcome::Failed { reply } => {
                        out.push(3);
                        put_str(out, reply);
                    }
                    RecipientOutcome::Postponed { reason, next_attempt_ms } => {
                        out.push(4);
                        put_str(out, reason);
                        put_uint(out, *next_attempt_ms);
                    }
                }
            }
        }
        JournalRecord::RetryNow { id, at_ms } => {
            out.push(TAG_RETRY_NOW);
            put_str(out, id);
            put_uint(out, *at_ms);
        }
        JournalRecord::Removed(finished) => {
            out.push(TAG_REMOVED);
            put_finished(out, finished);
        }
        JournalRecord::Finished(finished) => {
            out.push(TAG_FINISHED);
            put_finished(out, finished);
        }
        JournalRecord::Closed { at_ms } => {
            out.push(TAG_CLOSED);
            out.extend_from_slice(&at_ms.to_le_bytes());
        }
        JournalRecord::Unsynced(digests) => {
            out.push(TAG_UNSYNCED);
            put_uint(out, digests.len() as u64);
            for digest in digests {
                put_str(out, &digest.id);
                put_uint(out, digest.len);
                out.extend_from_slice(&digest.crc.to_le_bytes());
            }
        }
        JournalRecord::Synced => out.push(TAG_SYNCED),
    }
}

/// Decodes one payload (exactly: trailing bytes are an error).
pub fn decode_payload(payload: &[u8]) -> Result<JournalRecord, DecodeError> {
    let mut d = Decoder { bytes: payload, pos: 0 };
    let record = match d.u8()? {
        TAG_ENQUEUED => JournalRecord::Enqueued(Box::new(d.message()?)),
        TAG_OUTCOMES => {
            let id = d.string()?;
            let count = d.count()?;
            let mut outcomes = Vec::with_capacity(count);
            for _ in 0..count {
                let index = d.usize("recipient index")?;
                let outcome = match d.u8()? {
                    1 => RecipientOutcome::Delivered { reply: d.string()? },
                    2 => RecipientOutcome::Deferred { error: d.string()?, next_attempt_ms: d.uint()? },
                    3 => RecipientOutcome::Failed { reply: d.string()? },
                    4 => RecipientOutcome::Postponed { reason: d.string()?, next_attempt_ms: d.uint()? },
                    tag => return Err(DecodeError::UnknownTag { what: "outcome", tag }),
                };
                outcomes.push((index, outcome));
            }
            JournalRecord::Outcomes { id, outcomes }
        }
        TAG_RETRY_NOW => JournalRecord::RetryNow { id: d.string()?, at_ms: d.uint()? },
        TAG_REMOVED => JournalRecord::Removed(d.finished()?),
        TAG_FINISHED => JournalRecord::Finished(d.finished()?),
        TAG_CLOSED => {
            let mut at = [0u8; 8];
            at.copy_from_slice(d.take(8)?);
            JournalRecord::Closed { at_ms: u64::from_le_bytes(at) }
        }
        TAG_UNSYNCED => {
            let count = d.count()?;
            let mut digests = Vec::with_capacity(count);
            for _ in 0..count {
                let id = d.string()?;
                let len = d.uint()?;
                let mut crc = [0u8; 4];
                crc.copy_from_slice(d.take(4)?);
                digests.push(SpoolDigest { id, len, crc: u32::from_le_bytes(crc) });
            }
            JournalRecord::Unsynced(digests)
        }
        TAG_SYNCED => JournalRecord::Synced,
        tag => return Err(DecodeError::UnknownTag { what: "record", tag }),
    };
    match payload.len() - d.pos {
        0 => Ok(record),
        left => Err(DecodeError::Trailing(left)),
    }
}

fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn put_state(out: &mut Vec<u8>, state: &RecipientState) {
    match state {
        RecipientState::Pending => out.push(0),
        RecipientState::Delivered { reply } => {
            out.push(1);
            put_str(out, reply);
        }
        RecipientState::Failed { reply } => {
            out.push(2);
            put_str(out, reply);
        }
    }
}

fn put_action(out: &mut Vec<u8>, action: &EmailAction) {
    match action {
        EmailAction::Forward(forward) => {
            out.push(1);
            put_str(out, &forward.host);
            put_uint(out, u64::from(forward.port));
            match &forward.auth {
                Some(auth) => {
                    out.push(1);
                    put_str(out, &auth.username);
                    put_str(out, &auth.password);
                }
                None => out.push(0),
            }
            out.push(match forward.starttls {
                StartTlsPolicy::Opportunistic => 0,
                StartTlsPolicy::Required => 1,
                StartTlsPolicy::None => 2,
            });
            put_uint(out, forward.headers.len() as u64);
            for (name, value) in &forward.headers {
                put_str(out, name);
                put_str(out, value);
            }
        }
        EmailAction::Deliver => out.push(2),
        EmailAction::Process { queue } => {
            out.push(3);
            out.push(match queue {
                QueueClass::Normal => 0,
                QueueClass::Priority => 1,
            });
        }
        EmailAction::Reject { code, message } => {
            out.push(4);
            put_uint(out, u64::from(*code));
            put_str(out, message);
        }
    }
}

fn put_message(out: &mut Vec<u8>, m: &QueuedMessage) {
    put_str(out, &m.id);
    put_uint(out, m.received_at_ms);
    put_str(out, &m.sender);
    put_uint(out, m.size);
    put_str(out, &m.trace_header);
    put_str(out, &m.helo);
    match m.client_ip {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    put_opt_str(out, m.authenticated_user.as_deref());
    out.push(u8::from(m.tls) | (u8::from(m.smtputf8) << 1) | (u8::from(m.body_8bit) << 2));
    put_opt_str(out, m.correlation_id.as_deref());
    put_uint(out, m.recipients.len() as u64);
    for r in &m.recipients {
        put_str(out, &r.address);
        put_str(out, &r.route);
        put_action(out, &r.action);
        put_state(out, &r.state);
        put_uint(out, u64::from(r.attempts));
        put_uint(out, r.next_attempt_ms);
        put_opt_str(out, r.last_error.as_deref());
    }
}

fn put_finished(out: &mut Vec<u8>, f: &FinishedMessage) {
    put_str(out, &f.id);
    put_str(out, &f.sender);
    put_uint(out, f.finished_at_ms);
    out.push(u8::from(f.deleted));
    put_uint(out, f.recipients.len() as u64);
    for (address, state) in &f.recipients {
        put_str(out, address);
        put_state(out, state);
    }
}

/// A forward-only cursor over one payload.
struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.bytes.get(self.pos).ok_or(DecodeError::Short)?;
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or(DecodeError::Short)?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn uint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::Range("varint"));
            }
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Range("varint"))
    }

    fn usize(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        usize::try_from(self.uint()?).map_err(|_| DecodeError::Range(what))
    }

    /// A list length, checked against the bytes left (each element takes at least one).
    fn count(&mut self) -> Result<usize, DecodeError> {
        let count = self.usize("list length")?;
        if count > self.bytes.len() - self.pos {
            return Err(DecodeError::Short);
        }
        Ok(count)
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what: "bool", tag }),
        }
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.usize("string length")?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::Utf8)
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(if self.bool()? { Some(self.string()?) } else { None })
    }

    fn state(&mut self) -> Result<RecipientState, DecodeError> {
        match self.u8()? {
            0 => Ok(RecipientState::Pending),
            1 => Ok(RecipientState::Delivered { reply: self.string()? }),
            2 => Ok(RecipientState::Failed { reply: self.string()? }),
            tag => Err(DecodeError::UnknownTag { what: "recipient state", tag }),
        }
    }

    fn action(&mut self) -> Result<EmailAction, DecodeError> {
        match self.u8()? {
            1 => {
                let host = self.string()?;
                let port = u16::try_from(self.uint()?).map_err(|_| DecodeError::Range("port"))?;
                let auth = if self.bool()? {
                    Some(ForwardAuth { username: self.string()?, password: self.string()? })
                } else {
                    None
                };
                let starttls = match self.u8()? {
                    0 => StartTlsPolicy::Opportunistic,
                    1 => StartTlsPolicy::Required,
                    2 => StartTlsPolicy::None,
                    tag => return Err(DecodeError::UnknownTag { what: "starttls policy", tag }),
                };
                let count = self.count()?;
                let mut headers = Vec::with_capacity(count);
                for _ in 0..count {
                    headers.push((self.string()?, self.string()?));
                }
                Ok(EmailAction::Forward(MailForward { host, port, auth, starttls, headers }))
            }
            2 => Ok(EmailAction::Deliver),
            3 => match self.u8()? {
                0 => Ok(EmailAction::Process { queue: QueueClass::Normal }),
                1 => Ok(EmailAction::Process { queue: QueueClass::Priority }),
                tag => Err(DecodeError::UnknownTag { what: "queue class", tag }),
            },
            4 => {
                let code = u16::try_from(self.uint()?).map_err(|_| DecodeError::Range("reply code"))?;
                Ok(EmailAction::Reject { code, message: self.string()? })
            }
            tag => Err(DecodeError::UnknownTag { what: "action", tag }),
        }
    }

    fn message(&mut self) -> Result<QueuedMessage, DecodeError> {
        let id = self.string()?;
        let received_at_ms = self.uint()?;
        let sender = self.string()?;
        let size = self.uint()?;
        let trace_header = self.string()?;
        let helo = self.string()?;
        let client_ip = match self.u8()? {
            4 => {
                let b = self.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            tag => return Err(DecodeError::UnknownTag { what: "address family", tag }),
        };
        let authenticated_user = self.opt_string()?;
        let flags = self.u8()?;
        if flags & !0b111 != 0 {
            return Err(DecodeError::UnknownTag { what: "message flags", tag: flags });
        }
        let correlation_id = self.opt_string()?;
        let count = self.count()?;
        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            recipients.push(QueuedRecipient {
                address: self.string()?,
                route: self.string()?,
                action: self.action()?,
                state: self.state()?,
                attempts: u32::try_from(self.uint()?).map_err(|_| DecodeError::Range("attempts"))?,
                next_attempt_ms: self.uint()?,
                last_error: self.opt_string()?,
            });
        }
        Ok(QueuedMessage {
            id,
            received_at_ms,
            sender,
            recipients,
            size,
            trace_header,
            helo,
            client_ip,
            authenticated_user,
            tls: flags & 1 != 0,
            smtputf8: flags & 2 != 0,
            body_8bit: flags & 4 != 0,
            correlation_id,
        })
    }

    fn finished(&mut self) -> Result<FinishedMessage, DecodeError> {
        let id = self.string()?;
        let sender = self.string()?;
        let finished_at_ms = self.uint()?;
        let deleted = self.bool()?;
        let count = self.count()?;
        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            recipients.push((self.string()?, self.state()?));
        }
        Ok(FinishedMessage { id, sender, finished_at_ms, deleted, recipients })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> QueuedMessage {
        QueuedMessage {
            id: "0000000000000A01".into(),
            received_at_ms: 1_700_000_000_123,
            sender: "bob@example.org".into(),
            recipients: vec![
                QueuedRecipient {
                    address: "a@example.com".into(),
                    route: "out".into(),
                    action: EmailAction::Process { queue: QueueClass::Priority },
                    state: RecipientState::Pending,
                    attempts: 3,
                    next_attempt_ms: u64::MAX,
                    last_error: Some("451 4.3.0 busy".into()),
                },
                QueuedRecipient {
                    address: "ü@example.com".into(),
                    route: "relay".into(),
                    action: EmailAction::Forward(MailForward {
                        host: "smtp.example.net".into(),
                        port: 2525,
                        auth: Some(ForwardAuth { username: "u".into(), password: "p w".into() }),
                        starttls: StartTlsPolicy::Required,
                        headers: vec![("X-A".into(), "1".into()), ("X-B".into(), String::new())],
                    }),
                    state: RecipientState::Delivered { reply: "250 ok".into() },
                    attempts: 1,
                    next_attempt_ms: 0,
                    last_error: None,
                },
                QueuedRecipient {
                    address: "c@example.com".into(),
                    route: "local".into(),
                    action: EmailAction::Deliver,
                    state: RecipientState::Failed { reply: "550 no".into() },
                    attempts: 0,
                    next_attempt_ms: 300,
                    last_error: None,
                },
            ],
            size: 10_240,
            trace_header: "Received: from x\r\n\tby y; date\r\n".into(),
            helo: "client.example.org".into(),
            client_ip: "2001:db8::1".parse().expect("ip"),
            authenticated_user: Some("alice".into()),
            tls: true,
            smtputf8: false,
            body_8bit: true,
            correlation_id: Some("0100000000000001".into()),
        }
    }

    fn every_record() -> Vec<JournalRecord> {
        let finished = FinishedMessage {
            id: "0000000000000A02".into(),
            sender: String::new(),
            finished_at_ms: 5,
            deleted: true,
            recipients: vec![("a@x.test".into(), RecipientState::Pending), ("b@x.test".into(), RecipientState::Failed { reply: "5".into() })],
        };
        let mut v4 = message();
        v4.client_ip = IpAddr::from([192, 0, 2, 1]);
        v4.authenticated_user = None;
        v4.correlation_id = None;
        v4.recipients[0].action = EmailAction::Reject { code: 554, message: "no".into() };
        vec![
            JournalRecord::Enqueued(Box::new(message())),
            JournalRecord::Enqueued(Box::new(v4)),
            JournalRecord::Outcomes {
                id: "0000000000000A01".into(),
                outcomes: vec![
                    (0, RecipientOutcome::Delivered { reply: "250 2.0.0 Ok".into() }),
                    (1, RecipientOutcome::Deferred { error: "421 later".into(), next_attempt_ms: 99 }),
                    (7, RecipientOutcome::Failed { reply: "550 5.1.1".into() }),
                    (2, RecipientOutcome::Postponed { reason: "4.7.0 sending limit".into(), next_attempt_ms: 1234 }),
                ],
            },
            JournalRecord::RetryNow { id: "0000000000000A01".into(), at_ms: 1 << 40 },
            JournalRecord::Removed(finished.clone()),
            JournalRecord::Finished(finished),
            JournalRecord::Closed { at_ms: 17 },
            JournalRecord::Unsynced(vec![
                SpoolDigest { id: "0000000000000A01".into(), len: 10_240, crc: 0xDEAD_BEEF },
                SpoolDigest { id: "0000000000000A03".into(), len: 0, crc: 0 },
            ]),
            JournalRecord::Synced,
        ]
    }

    #[test]
    fn every_record_kind_round_trips() {
        for record in every_record() {
            let mut out = Vec::new();
            encode_payload(&record, &mut out);
            assert_eq!(decode_payload(&out).expect("decode"), record);
        }
    }

    #[test]
    fn truncated_or_extended_payloads_are_refused_not_misread() {
        for record in every_record() {
            let mut out = Vec::new();
            encode_payload(&record, &mut out);
            for cut in 0..out.len() {
                assert!(decode_payload(&out[..cut]).is_err(), "{record:?} cut at {cut}");
            }
            out.push(0);
            assert!(matches!(decode_payload(&out), Err(DecodeError::Trailing(1))));
        }
    }

    #[test]
    fn bad_tags_and_numbers_are_errors() {
        assert!(matches!(decode_payload(&[9]), Err(DecodeError::UnknownTag { what: "record", tag: 9 })));
        // A varint of eleven continuation bytes.
        let mut bad = vec![TAG_RETRY_NOW, 0];
        bad.extend_from_slice(&[0xFF; 11]);
        assert!(matches!(decode_payload(&bad), Err(DecodeError::Range("varint"))));
        // A list claiming more elements than bytes left.
        let mut bad = vec![TAG_OUTCOMES];
        put_str(&mut bad, "0000000000000A01");
        put_uint(&mut bad, 1_000_000);
        assert_eq!(decode_payload(&bad), Err(DecodeError::Short));
        // Invalid UTF-8 in a string.
        let bad = [TAG_RETRY_NOW, 2, 0xC3, 0x28, 0];
        assert_eq!(decode_payload(&bad), Err(DecodeError::Utf8));
    }

    #[test]
    fn a_message_record_is_compact() {
        let mut out = Vec::new();
        encode_payload(&JournalRecord::Enqueued(Box::new(message())), &mut out);
        let json = serde_json::to_vec(&JournalRecord::Enqueued(Box::new(message()))).expect("json");
        assert!(out.len() * 2 < json.len(), "binary {} bytes, JSON {}", out.len(), json.len());
    }
}
