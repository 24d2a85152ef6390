//! The crate's single error type.
//!
//! Owns: every way parsing a command, building a reply, validating the configuration or
//! driving the session API can fail. Parse errors know the SMTP reply they turn into
//! ([`SmtpError::reply`]), so the session never invents codes ad hoc.
//! Does not own: I/O errors (there is no I/O in this crate).

use crate::config::ConfigProblem;
use crate::reply::{EnhancedStatus, Reply};

/// Everything that can go wrong in `shardgate-smtp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    /// The command verb is not one we know (`500 5.5.2`).
    #[error("command not recognized")]
    UnknownCommand,
    /// A command line exceeded the line length limit (`500 5.5.2`).
    #[error("command line too long")]
    LineTooLong,
    /// The command is known but its arguments are malformed (`501 5.5.4`).
    /// `usage` is the syntax hint sent back to the client, e.g. `Syntax: EHLO hostname`.
    #[error("syntax error: {usage}")]
    Syntax {
        /// Syntax hint shown to the client.
        usage: &'static str,
    },
    /// The `MAIL FROM` address is malformed (`501 5.1.7`).
    #[error("bad sender address syntax: {reason}")]
    BadSenderAddress {
        /// What exactly is wrong with the address.
        reason: &'static str,
    },
    /// The `RCPT TO` address is malformed (`501 5.1.3`).
    #[error("bad recipient address syntax: {reason}")]
    BadRecipientAddress {
        /// What exactly is wrong with the address.
        reason: &'static str,
    },
    /// A `MAIL`/`RCPT` parameter we do not support, or a bad value for one we do (`555 5.5.4`).
    #[error("unsupported parameter: {parameter}")]
    UnsupportedParameter {
        /// The offending `KEYWORD[=value]`, as sent.
        parameter: String,
    },
    /// A non-ASCII address without `SMTPUTF8` on the transaction (`553 5.6.7`).
    #[error("non-ASCII address requires SMTPUTF8")]
    Utf8AddressWithoutSmtputf8,
    /// `AUTH` with a mechanism other than PLAIN or LOGIN (`504 5.5.4`).
    #[error("unsupported authentication mechanism {mechanism}")]
    UnsupportedAuthMechanism {
        /// The mechanism name the client asked for.
        mechanism: String,
    },
    /// A SASL response (or `AUTH` initial response) is not valid base64 (`501 5.5.2`).
    #[error("cannot decode base64 SASL response")]
    UndecodableSaslResponse,
    /// A reply was constructed with a code outside 200..=599 or an enhanced status whose
    /// class does not match the code's first digit.
    #[error("invalid reply: code {code} with enhanced status {status:?}")]
    InvalidReply {
        /// The basic reply code that was given.
        code: u16,
        /// The enhanced status that was given, if any.
        status: Option<EnhancedStatus>,
    },
    /// A session decision method was called while the session was not waiting for it,
    /// e.g. `rcpt_decision` without a preceding `Event::RcptRequested`.
    #[error("session is not waiting for {expected}")]
    NoPendingRequest {
        /// The decision the caller tried to give.
        expected: &'static str,
    },
    /// The configuration has problems; every one of them is listed.
    #[error("invalid [email] configuration: {}", format_problems(.0))]
    InvalidConfig(Vec<ConfigProblem>),
}

fn format_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SmtpError {
    /// The SMTP reply a client gets for this error, for errors caused by client input.
    /// Errors that are not about client input (config, API misuse, invalid reply) map to
    /// `451 4.3.0` so that a bug on our side is a temporary failure, never a silent accept.
    pub fn reply(&self) -> Reply {
        match self {
            SmtpError::UnknownCommand => {
                Reply::fixed(500, (5, 5, 2), "Error: command not recognized")
            }
            SmtpError::LineTooLong => Reply::fixed(500, (5, 5, 2), "Error: line too long"),
            SmtpError::Syntax { usage } => Reply::fixed(501, (5, 5, 4), usage),
            SmtpError::BadSenderAddress { reason } => Reply::fixed(
                501,
                (5, 1, 7),
                &format!("Bad sender address syntax: {reason}"),
            ),
            SmtpError::BadRecipientAddress { reason } => Reply::fixed(
                501,
                (5, 1, 3),
                &format!("Bad recipient address syntax: {reason}"),
            ),
            SmtpError::UnsupportedParameter { parameter } => {
                Reply::fixed(555, (5, 5, 4), &format!("Unsupported option: {parameter}"))
            }
            SmtpError::Utf8AddressWithoutSmtputf8 => {
                Reply::fixed(553, (5, 6, 7), "Error: non-ASCII address requires SMTPUTF8")
            }
            SmtpError::UnsupportedAuthMechanism { .. } => {
                Reply::fixed(504, (5, 5, 4), "Unsupported authentication mechanism")
            }
            SmtpError::UndecodableSaslResponse => {
                Reply::fixed(501, (5, 5, 2), "Cannot decode response")
            }
            SmtpError::InvalidReply { .. }
            | SmtpError::NoPendingRequest { .. }
            | SmtpError::InvalidConfig(_) => Reply::fixed(451, (4, 3, 0), "Error: internal error"),
        }
    }
}
