//! The RFC 5321 command parser: one command line in, one typed [`SmtpCommand`] out.
//!
//! Owns: verb recognition (case-insensitive), argument syntax, `MAIL`/`RCPT` paths and
//! ESMTP parameters (`SIZE`, `BODY`, `SMTPUTF8`, `AUTH`), `BDAT` chunk sizes, `AUTH`
//! mechanisms and base64 initial responses. Every failure is an [`SmtpError`] that knows
//! its reply (`500`, `501`, `504`, `553`, `555`).
//! Does not own: line framing and length limits (the session reads lines), or whether a
//! command is allowed right now (sequencing is the session's job, `503`).

use crate::address::{split_path, ForwardPath, Mailbox, ReversePath};
use crate::error::SmtpError;
use base64::Engine;

/// The `BODY=` parameter of `MAIL FROM` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyType {
    /// `BODY=7BIT`
    SevenBit,
    /// `BODY=8BITMIME`
    EightBitMime,
    /// `BODY=BINARYMIME` (only valid with `BDAT`).
    BinaryMime,
}

/// The ESMTP parameters of `MAIL FROM` that we support.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MailParameters {
    /// `SIZE=n`: the client's estimate of the message size in octets (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=`: the body type (RFC 6152).
    pub body: Option<BodyType>,
    /// `SMTPUTF8`: the transaction may carry UTF-8 addresses and headers (RFC 6531).
    pub smtputf8: bool,
    /// `AUTH=`: the xtext-encoded authenticated sender, `<>` if unknown (RFC 4954 §5).
    pub auth: Option<String>,
}

/// SASL mechanisms offered by `AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMechanism {
    /// RFC 4616 PLAIN: `authzid NUL authcid NUL password` in one response.
    Plain,
    /// The de-facto LOGIN mechanism: username, then password, each in its own response.
    Login,
}

impl AuthMechanism {
    /// The mechanism's name as advertised in EHLO.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
        }
    }
}

/// One parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpCommand {
    /// `EHLO domain-or-literal`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<reverse-path> [params]`
    Mail {
        /// The sender, or the null path.
        from: ReversePath,
        /// Supported ESMTP parameters.
        parameters: MailParameters,
    },
    /// `RCPT TO:<forward-path>`
    Rcpt {
        /// The recipient, or the bare postmaster.
        to: ForwardPath,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat {
        /// Octets of chunk data following the command line.
        chunk_size: u64,
        /// `LAST`: this chunk ends the message.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy(String),
    /// `EXPN string`
    Expn(String),
    /// `HELP [topic]`
    Help(Option<String>),
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954)
    Auth {
        /// The requested mechanism.
        mechanism: AuthMechanism,
        /// The decoded initial response; `Some(empty)` for `=`.
        initial_response: Option<Vec<u8>>,
    },
}

impl SmtpCommand {
    /// Parses one command line, without its trailing CRLF.
    pub fn parse(line: &[u8]) -> Result<SmtpCommand, SmtpError> {
        let (verb, argument) = match line.iter().position(|b| *b == b' ') {
            Some(space) => (&line[..space], &line[space + 1..]),
            None => (line, &b""[..]),
        };
        if verb.len() > 8 || !verb.is_ascii() {
            return Err(SmtpError::UnknownCommand);
        }
        let verb = verb.to_ascii_uppercase();
        let argument = std::str::from_utf8(argument).map(|a| a.trim_matches(' '));
        let syntax = |usage: &'static str| SmtpError::Syntax { usage };
        let text = |usage: &'static str| argument.map_err(|_| syntax(usage));
        let no_argument = |usage: &'static str, command: SmtpCommand| match argument {
            Ok("") => Ok(command),
            _ => Err(syntax(usage)),
        };
        match verb.as_slice() {
            b"EHLO" => match text("Syntax: EHLO hostname")? {
                "" => Err(syntax("Syntax: EHLO hostname")),
                host => Ok(SmtpCommand::Ehlo(host.to_owned())),
            },
            b"HELO" => match text("Syntax: HELO hostname")? {
                "" => Err(syntax("Syntax: HELO hostname")),
                host => Ok(SmtpCommand::Helo(host.to_owned())),
            },
            b"MAIL" => parse_mail(argument.map_err(|_| SmtpError::BadSenderAddress {
                reason: "invalid UTF-8",
            })?),
            b"RCPT" => parse_rcpt(argument.map_err(|_| SmtpError::BadRecipientAddress {
                reason: "invalid UTF-8",
            })?),
            b"DATA" => no_argument("Syntax: DATA", SmtpCommand::Data),
            b"BDAT" => parse_bdat(text("Syntax: BDAT chunk-size [LAST]")?),
            b"RSET" => no_argument("Syntax: RSET", SmtpCommand::Rset),
            b"NOOP" => Ok(SmtpCommand::Noop),
            b"QUIT" => no_argument("Syntax: QUIT", SmtpCommand::Quit),
            b"VRFY" => match text("Syntax: VRFY address")? {
                "" => Err(syntax("Syntax: VRFY address")),
                address => Ok(SmtpCommand::Vrfy(address.to_owned())),
            },
            b"EXPN" => match text("Syntax: EXPN mailing-list")? {
                "" => Err(syntax("Syntax: EXPN mailing-list")),
                list => Ok(SmtpCommand::Expn(list.to_owned())),
            },
            b"HELP" => Ok(SmtpCommand::Help(
                argument
                    .ok()
                    .filter(|topic| !topic.is_empty())
                    .map(str::to_owned),
            )),
            b"STARTTLS" => no_argument("Syntax: STARTTLS", SmtpCommand::StartTls),
            b"AUTH" => parse_auth(text("Syntax: AUTH mechanism [initial-response]")?),
            _ => Err(SmtpError::UnknownCommand),
        }
    }
}

/// Strips a case-insensitive `FROM:` / `TO:` prefix.
fn strip_keyword<'a>(argument: &'a str, keyword: &str) -> Option<&'a str> {
    let head = argument.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &argument[keyword.len()..])
}

fn is_esmtp_keyword(keyword: &str) -> bool {
    let mut bytes = keyword.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn parse_mail(argument: &str) -> Result<SmtpCommand, SmtpError> {
    let after = strip_keyword(argument, "FROM:").ok_or(SmtpError::Syntax {
        usage: "Syntax: MAIL FROM:<address>",
    })?;
    let (path, rest) =
        split_path(after).map_err(|reason| SmtpError::BadSenderAddress { reason })?;
    let from = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(
            Mailbox::parse(path).map_err(|reason| SmtpError::BadSenderAddress { reason })?,
        )
    };
    let mut parameters = MailParameters::default();
    let mut seen: Vec<String> = Vec::new();
    for parameter in rest.split(' ').filter(|p| !p.is_empty()) {
        let (keyword, value) = match parameter.split_once('=') {
            Some((keyword, value)) => (keyword, Some(value)),
            None => (parameter, None),
        };
        let unsupported = || SmtpError::UnsupportedParameter {
            parameter: parameter.to_owned(),
        };
        if !is_esmtp_keyword(keyword) {
            return Err(unsupported());
        }
        let keyword = keyword.to_ascii_uppercase();
        if seen.contains(&keyword) {
            return Err(SmtpError::Syntax {
                usage: "Duplicate MAIL parameter",
            });
        }
        match (keyword.as_str(), value) {
            ("SIZE", Some(value))
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) =>
            {
                // More than u64::MAX octets is simply "too big"; saturate.
                parameters.size = Some(value.parse().unwrap_or(u64::MAX));
            }
            ("SIZE", _) => {
                return Err(SmtpError::Syntax {
                    usage: "Bad message size syntax",
                })
            }
            ("BODY", Some(value)) => {
                parameters.body = Some(match value.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    "BINARYMIME" => BodyType::BinaryMime,
                    _ => return Err(unsupported()),
                });
            }
            ("SMTPUTF8", None) => parameters.smtputf8 = true,
            ("AUTH", Some(value)) if !value.is_empty() && value.is_ascii() => {
                parameters.auth = Some(value.to_owned());
            }
            _ => return Err(unsupported()),
        }
        seen.push(keyword);
    }
    if let ReversePath::Mailbox(mailbox) = &from {
        if !mailbox.is_ascii() && !parameters.smtputf8 {
            return Err(SmtpError::Utf8AddressWithoutSmtputf8);
        }
    }
    Ok(SmtpCommand::Mail { from, parameters })
}

fn parse_rcpt(argument: &str) -> Result<SmtpCommand, SmtpError> {
    let after = strip_keyword(argument, "TO:").ok_or(SmtpError::Syntax {
        usage: "Syntax: RCPT TO:<address>",
    })?;
    let (path, rest) =
        split_path(after).map_err(|reason| SmtpError::BadRecipientAddress { reason })?;
    if let Some(parameter) = rest.split(' ').find(|p| !p.is_empty()) {
        return Err(SmtpError::UnsupportedParameter {
            parameter: parameter.to_owned(),
        });
    }
    let to = if path.eq_ignore_ascii_case("postmaster") {
        ForwardPath::Postmaster
    } else if path.is_empty() {
        return Err(SmtpError::BadRecipientAddress {
            reason: "null recipient",
        });
    } else {
        ForwardPath::Mailbox(
            Mailbox::parse(path).map_err(|reason| SmtpError::BadRecipientAddress { reason })?,
        )
    };
    Ok(SmtpCommand::Rcpt { to })
}

fn parse_bdat(argument: &str) -> Result<SmtpCommand, SmtpError> {
    let usage = SmtpError::Syntax {
        usage: "Syntax: BDAT chunk-size [LAST]",
    };
    let mut words = argument.split(' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(usage.clone())?;
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage);
    }
    let chunk_size: u64 = size.parse().map_err(|_| usage.clone())?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(usage),
    };
    if words.next().is_some() {
        return Err(usage);
    }
    Ok(SmtpCommand::Bdat { chunk_size, last })
}

/// Decodes a SASL response line: base64, or `=` for an empty response (RFC 4954 §4).
pub(crate) fn decode_sasl_response(text: &str) -> Result<Vec<u8>, SmtpError> {
    if text == "=" {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| SmtpError::UndecodableSaslResponse)
}

fn parse_auth(argument: &str) -> Result<SmtpCommand, SmtpError> {
    let mut words = argument.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or(SmtpError::Syntax {
        usage: "Syntax: AUTH mechanism [initial-response]",
    })?;
    let mechanism = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => AuthMechanism::Plain,
        "LOGIN" => AuthMechanism::Login,
        _ => {
            return Err(SmtpError::UnsupportedAuthMechanism {
                mechanism: mechanism.to_owned(),
            })
        }
    };
    let initial_response = words.next().map(decode_sasl_response).transpose()?;
    if words.next().is_some() {
        return Err(SmtpError::Syntax {
            usage: "Syntax: AUTH mechanism [initial-response]",
        });
    }
    Ok(SmtpCommand::Auth {
        mechanism,
        initial_response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<SmtpCommand, SmtpError> {
        SmtpCommand::parse(line.as_bytes())
    }

    fn code(line: &str) -> (u16, String) {
        let reply = parse(line).unwrap_err().reply();
        (
            reply.code(),
            reply.status().map(|s| s.to_string()).unwrap_or_default(),
        )
    }

    #[test]
    fn simple_verbs_case_insensitive() {
        assert_eq!(
            parse("ehlo client.example").unwrap(),
            SmtpCommand::Ehlo("client.example".into())
        );
        assert_eq!(parse("HeLo x").unwrap(), SmtpCommand::Helo("x".into()));
        assert_eq!(parse("DATA").unwrap(), SmtpCommand::Data);
        assert_eq!(parse("rset").unwrap(), SmtpCommand::Rset);
        assert_eq!(parse("NOOP hello").unwrap(), SmtpCommand::Noop);
        assert_eq!(parse("QUIT").unwrap(), SmtpCommand::Quit);
        assert_eq!(parse("VRFY bob").unwrap(), SmtpCommand::Vrfy("bob".into()));
        assert_eq!(
            parse("EXPN staff").unwrap(),
            SmtpCommand::Expn("staff".into())
        );
        assert_eq!(parse("HELP").unwrap(), SmtpCommand::Help(None));
        assert_eq!(
            parse("HELP MAIL").unwrap(),
            SmtpCommand::Help(Some("MAIL".into()))
        );
        assert_eq!(parse("STARTTLS").unwrap(), SmtpCommand::StartTls);
        assert_eq!(
            parse("ehlo [127.0.0.1]").unwrap(),
            SmtpCommand::Ehlo("[127.0.0.1]".into())
        );
    }

    #[test]
    fn unknown_and_missing_arguments() {
        assert_eq!(code("FOO bar"), (500, "5.5.2".into()));
        assert_eq!(code(""), (500, "5.5.2".into()));
        assert_eq!(code("EHLO"), (501, "5.5.4".into()));
        assert_eq!(code("HELO "), (501, "5.5.4".into()));
        assert_eq!(code("DATA x"), (501, "5.5.4".into()));
        assert_eq!(code("QUIT now"), (501, "5.5.4".into()));
        assert_eq!(code("STARTTLS x"), (501, "5.5.4".into()));
        assert_eq!(code("VRFY"), (501, "5.5.4".into()));
        assert_eq!(code("EXPN"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL <a@b.c>"), (501, "5.5.4".into()));
        assert_eq!(code("RCPT <a@b.c>"), (501, "5.5.4".into()));
    }

    #[test]
    fn mail_from_with_parameters() {
        let command =
            parse("MAIL FROM:<a@b.example> SIZE=1000 BODY=8bitmime SMTPUTF8 AUTH=<>").unwrap();
        let SmtpCommand::Mail { from, parameters } = command else {
            panic!("not MAIL: {command:?}");
        };
        assert_eq!(from.mailbox().unwrap().to_string(), "a@b.example");
        assert_eq!(parameters.size, Some(1000));
        assert_eq!(parameters.body, Some(BodyType::EightBitMime));
        assert!(parameters.smtputf8);
        assert_eq!(parameters.auth.as_deref(), Some("<>"));
        let null = parse("mail from: <>").unwrap();
        assert!(matches!(
            null,
            SmtpCommand::Mail {
                from: ReversePath::Null,
                ..
            }
        ));
        let binary = parse("MAIL FROM:<a@b.c> BODY=BINARYMIME").unwrap();
        assert!(matches!(
            binary,
            SmtpCommand::Mail {
                parameters: MailParameters {
                    body: Some(BodyType::BinaryMime),
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn mail_parameter_errors() {
        assert_eq!(code("MAIL FROM:<a@b.c> FOO=1"), (555, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@b.c> BODY=9BIT"), (555, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@b.c> SIZE=abc"), (501, "5.5.4".into()));
        assert_eq!(
            code("MAIL FROM:<a@b.c> SIZE=1 SIZE=2"),
            (501, "5.5.4".into())
        );
        assert_eq!(code("MAIL FROM:<a..b@c.d>"), (501, "5.1.7".into()));
        assert_eq!(code("MAIL FROM:<josé@b.c>"), (553, "5.6.7".into()));
        assert!(parse("MAIL FROM:<josé@b.c> SMTPUTF8").is_ok());
        let huge = parse("MAIL FROM:<a@b.c> SIZE=99999999999999999999999").unwrap();
        assert!(matches!(
            huge,
            SmtpCommand::Mail {
                parameters: MailParameters {
                    size: Some(u64::MAX),
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn rcpt_to_and_postmaster() {
        assert_eq!(
            parse("RCPT TO:<PostMaster>").unwrap(),
            SmtpCommand::Rcpt {
                to: ForwardPath::Postmaster
            }
        );
        let to = parse("rcpt to:<postmaster@example.com>").unwrap();
        assert!(matches!(
            to,
            SmtpCommand::Rcpt {
                to: ForwardPath::Mailbox(_)
            }
        ));
        assert_eq!(code("RCPT TO:<>"), (501, "5.1.3".into()));
        assert_eq!(code("RCPT TO:<a@b.c> NOTIFY=NEVER"), (555, "5.5.4".into()));
        assert_eq!(code("RCPT TO:<a@>"), (501, "5.1.3".into()));
    }

    #[test]
    fn bdat_forms() {
        assert_eq!(
            parse("BDAT 100").unwrap(),
            SmtpCommand::Bdat {
                chunk_size: 100,
                last: false
            }
        );
        assert_eq!(
            parse("bdat 0 last").unwrap(),
            SmtpCommand::Bdat {
                chunk_size: 0,
                last: true
            }
        );
        assert_eq!(code("BDAT"), (501, "5.5.4".into()));
        assert_eq!(code("BDAT -1"), (501, "5.5.4".into()));
        assert_eq!(code("BDAT 10 FIRST"), (501, "5.5.4".into()));
        assert_eq!(code("BDAT 99999999999999999999999"), (501, "5.5.4".into()));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse("AUTH PLAIN AGJvYgBzZWNyZXQ=").unwrap(),
            SmtpCommand::Auth {
                mechanism: AuthMechanism::Plain,
                initial_response: Some(b"\0bob\0secret".to_vec())
            }
        );
        assert_eq!(
            parse("auth login").unwrap(),
            SmtpCommand::Auth {
                mechanism: AuthMechanism::Login,
                initial_response: None
            }
        );
        assert_eq!(
            parse("AUTH PLAIN =").unwrap(),
            SmtpCommand::Auth {
                mechanism: AuthMechanism::Plain,
                initial_response: Some(Vec::new())
            }
        );
        assert_eq!(code("AUTH CRAM-MD5"), (504, "5.5.4".into()));
        assert_eq!(code("AUTH PLAIN !!!"), (501, "5.5.2".into()));
        assert_eq!(code("AUTH"), (501, "5.5.4".into()));
    }

    #[test]
    fn invalid_utf8_arguments_are_syntax_errors() {
        assert_eq!(
            SmtpCommand::parse(b"MAIL FROM:<\xff@b.c>")
                .unwrap_err()
                .reply()
                .code(),
            501
        );
        assert_eq!(
            SmtpCommand::parse(b"EHLO \xff").unwrap_err().reply().code(),
            501
        );
        assert_eq!(
            SmtpCommand::parse(b"\xffHLO x").unwrap_err().reply().code(),
            500
        );
    }
}
