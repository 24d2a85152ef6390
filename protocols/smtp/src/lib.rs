#![deny(unsafe_code)]
#![warn(missing_docs)]
//! `shardgate-smtp`: the ESMTP server core of shardgate, as a sans-I/O state machine.
//!
//! # What it owns, in layers
//!
//! - **Wire types** — [`reply`] renders replies with enhanced status codes;
//!   [`address`] turns envelope paths into validated [`Mailbox`] / [`ReversePath`] /
//!   [`ForwardPath`] values; [`command`] parses one command line into a typed
//!   [`SmtpCommand`] or an [`SmtpError`] that knows its reply code.
//! - **Body transfer** — `dot` (private) decodes `DATA` incrementally: dot-unstuffing,
//!   end of data only at `<CRLF>.<CRLF>`, bare LF rejected (SMTP smuggling defence).
//! - **Session** — [`session::Session`] is the per-connection state machine: bytes and
//!   `Instant`s in, reply bytes and [`Event`]s out. It enforces sequencing, PIPELINING order,
//!   CHUNKING, SIZE, recipient and error limits, timeouts, the open-relay guard, STARTTLS
//!   reset and SASL PLAIN/LOGIN exchanges. Decisions it cannot make (recipient routing,
//!   password checks, durable queueing, TLS) are requested through events and answered
//!   with method calls.
//! - **Configuration** — [`config`] holds the serde types of the `[email]` settings the
//!   session uses, their validation (every problem, with field names), and
//!   [`UserDirectory`] for argon2 / SHA-crypt password verification.
//!
//! # What it does not own
//!
//! No sockets, no TLS, no clock, no disk: the shard reads and writes bytes, runs rustls,
//! supplies `Instant::now()`, and the control core's queue writer makes messages durable.
//! Routing (`[[email.routes]]`), delivery and the queue live elsewhere; this crate only
//! asks the caller about each recipient and each finished message.
//!
//! # Driving a session
//!
//! ```
//! use shardgate_smtp::{ConnectionInfo, Event, ListenerKind, MessageOutcome, RcptDecision,
//!     Session, SessionConfig};
//! use std::{sync::Arc, time::Instant};
//!
//! let mut config = SessionConfig::with_defaults("mx.example.com");
//! config.local_domains = vec!["example.com".into()];
//! let peer = ConnectionInfo { peer_ip: "192.0.2.7".parse().unwrap(), listener: ListenerKind::Smtp };
//! let mut session = Session::new(Arc::new(config), peer, Instant::now());
//! session.feed(b"EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n", Instant::now());
//! while let Some(event) = session.poll_event() {
//!     if let Event::RcptRequested { .. } = event { session.rcpt_decision(RcptDecision::Accept).unwrap(); }
//! }
//! session.feed(b"hi\r\n.\r\n", Instant::now());
//! let mut body = Vec::new();
//! while let Some(event) = session.poll_event() {
//!     match event {
//!         Event::MessageData(chunk) => body.extend(chunk),
//!         Event::MessageComplete { .. } => session
//!             .message_result(MessageOutcome::Accepted { queue_id: "Q1".into() })
//!             .unwrap(),
//!         _ => {}
//!     }
//! }
//! assert_eq!(body, b"hi\r\n");
//! assert!(String::from_utf8(session.take_transmit()).unwrap().ends_with("250 2.0.0 Ok: queued as Q1\r\n"));
//! ```

pub mod address;
pub mod client;
pub mod command;
pub mod config;
mod dot;
pub mod error;
pub mod limits;
pub mod reply;
pub mod session;

pub use address::{ForwardPath, MailDomain, Mailbox, ReversePath};
pub use command::{AuthMechanism, BodyType, MailParameters, SmtpCommand};
pub use config::{ConfigProblem, EmailConfig, EmailUser, SessionConfig, UserDirectory};
pub use error::SmtpError;
pub use limits::{LimitCounters, LimitRefusal, LimitScope, RateLimitConfig, RateLimiter};
pub use reply::{EnhancedStatus, Reply};
pub use session::{
    AbortReason, BodyTransfer, ConnectionInfo, Envelope, Event, ListenerKind, MessageOutcome,
    Password, RcptDecision, Session,
};
