//! The crate's one error type and the status code each error answers with.
//!
//! Owns: every way a request head, a response head, a chunked body, a redirect target, a
//! rate-limit setting or a static-file path can be refused, and the mapping from each refusal
//! to the HTTP status the proxy sends ([`Http1Error::status`] for faults of the client,
//! [`Http1Error::upstream_status`] for faults of a backend). Does not own the bytes of the
//! reply: that is [`crate::reply`].

use crate::reply::ErrorStatus;

/// Everything that can go wrong in `shardgate-http1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The request line (or a backend's status line) is longer than the configured limit.
    #[error("start line longer than {limit} bytes")]
    StartLineTooLong {
        /// The configured `max_start_line` in bytes.
        limit: usize,
    },
    /// The whole head (start line and header section) is longer than the configured limit.
    #[error("header section longer than {limit} bytes")]
    HeadTooLarge {
        /// The configured `max_head_bytes`.
        limit: usize,
    },
    /// The head has more header fields than the configured limit.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured `max_headers`.
        limit: usize,
    },
    /// A line in the head ends with a bare LF instead of CRLF (refused, see the crate doc).
    #[error("line ending is a bare LF; CRLF is required")]
    BareLineFeed,
    /// The request line is not `method SP target SP HTTP/1.x`.
    #[error("malformed request line")]
    MalformedRequestLine,
    /// The method is not a token.
    #[error("invalid method")]
    InvalidMethod,
    /// The version is neither HTTP/1.0 nor HTTP/1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// The request target is not in a form a reverse proxy accepts.
    #[error("invalid request target: {reason}")]
    InvalidTarget {
        /// Which rule the target broke.
        reason: &'static str,
    },
    /// `CONNECT` is a forward-proxy method; a reverse proxy answers 405.
    #[error("CONNECT is not supported by a reverse proxy")]
    ConnectNotSupported,
    /// A header name contains a byte that is not a token character.
    #[error("invalid header name")]
    InvalidHeaderName,
    /// A header line has whitespace between the name and the colon (RFC 9112 §5.1).
    #[error("whitespace between header name and colon")]
    WhitespaceBeforeColon,
    /// A header line starts with whitespace: obsolete line folding (RFC 9112 §5.2).
    #[error("obsolete line folding (obs-fold) in header section")]
    ObsoleteLineFolding,
    /// A header value contains a control character.
    #[error("invalid header value")]
    InvalidHeaderValue,
    /// An HTTP/1.1 request has no Host header.
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    /// More than one Host header line.
    #[error("more than one Host header")]
    DuplicateHost,
    /// The Host header (or absolute-form authority) is not a valid `host[:port]`.
    #[error("invalid Host")]
    InvalidHost,
    /// The message has both Content-Length and Transfer-Encoding.
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// Several Content-Length values that differ.
    #[error("differing Content-Length values")]
    ConflictingContentLength,
    /// A Content-Length that is not a plain decimal number that fits 63 bits.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Transfer-Encoding on an HTTP/1.0 request (RFC 9112 §6.1: faulty framing).
    #[error("Transfer-Encoding on an HTTP/1.0 request")]
    TransferEncodingOnHttp10,
    /// More than one Transfer-Encoding header line.
    #[error("more than one Transfer-Encoding header")]
    DuplicateTransferEncoding,
    /// A Transfer-Encoding other than exactly `chunked`.
    #[error("unsupported Transfer-Encoding (only `chunked` is implemented)")]
    UnsupportedTransferEncoding,
    /// The declared or received body is larger than the configured limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured `max_body_bytes`.
        limit: u64,
    },
    /// A backend's status line is malformed.
    #[error("malformed status line from backend")]
    MalformedStatusLine,
    /// A backend answered 101 to a request that did not ask to upgrade.
    #[error("backend switched protocols without an Upgrade request")]
    UnsolicitedSwitchingProtocols,
    /// A chunk-size line is not hexadecimal.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// A chunk size does not fit in 64 bits.
    #[error("chunk size overflows 64 bits")]
    ChunkSizeOverflow,
    /// A chunk's data is not followed by CRLF, or a chunk line ends with a bare LF.
    #[error("chunk not terminated by CRLF")]
    MissingChunkCrlf,
    /// A chunk-size line (with extensions) is longer than the decoder accepts.
    #[error("chunk extension longer than {limit} bytes")]
    ChunkExtensionTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The trailer section is larger than the decoder accepts.
    #[error("trailer section longer than {limit} bytes")]
    TrailersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A trailer line is not a valid header field.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// A redirect target contains CR, LF or another control byte.
    #[error("redirect location contains a control character")]
    InvalidRedirectLocation,
    /// A redirect status other than 301, 302, 307 or 308.
    #[error("redirect status {status} is not one of 301, 302, 307, 308")]
    InvalidRedirectStatus {
        /// The status asked for.
        status: u16,
    },
    /// A redirect target template has an unknown `{placeholder}` or an unbalanced brace.
    #[error("redirect target `{template}`: {reason}")]
    InvalidRedirectTemplate {
        /// The template as configured.
        template: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rate such as `10r/s` could not be read.
    #[error("rate `{rate}`: expected `<n>r/s` or `<n>r/m` with n >= 1")]
    InvalidRate {
        /// The rate as written.
        rate: String,
    },
    /// A request path for static serving is malformed or tries to leave the root.
    #[error("unsafe static path: {reason}")]
    UnsafePath {
        /// Which rule the path broke.
        reason: &'static str,
    },
}

impl Http1Error {
    /// The status the proxy answers a *client* with when the client's bytes caused this error.
    ///
    /// Follows nginx where nginx has a documented behaviour: 414 for a long request line, 431
    /// for header size/count, 501 for an unknown Transfer-Encoding, 413 for a body over the
    /// limit, 505 for an unknown version, 405 for CONNECT, 400 for the rest.
    pub fn status(&self) -> ErrorStatus {
        match self {
            Http1Error::StartLineTooLong { .. } => ErrorStatus::UriTooLong,
            Http1Error::HeadTooLarge { .. } | Http1Error::TooManyHeaders { .. } => {
                ErrorStatus::RequestHeaderFieldsTooLarge
            }
            Http1Error::UnsupportedVersion => ErrorStatus::HttpVersionNotSupported,
            Http1Error::ConnectNotSupported => ErrorStatus::MethodNotAllowed,
            Http1Error::UnsupportedTransferEncoding => ErrorStatus::NotImplemented,
            Http1Error::BodyTooLarge { .. } => ErrorStatus::PayloadTooLarge,
            Http1Error::InvalidRedirectLocation
            | Http1Error::InvalidRedirectStatus { .. }
            | Http1Error::InvalidRedirectTemplate { .. }
            | Http1Error::InvalidRate { .. } => ErrorStatus::InternalServerError,
            _ => ErrorStatus::BadRequest,
        }
    }

    /// The status the proxy answers the client with when a *backend's* bytes caused this error:
    /// always 502 Bad Gateway (RFC 9112 §6.3: a proxy that receives invalid framing from
    /// upstream closes that connection and answers 502).
    pub fn upstream_status(&self) -> ErrorStatus {
        ErrorStatus::BadGateway
    }
}
