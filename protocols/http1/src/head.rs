//! What request and response heads share: the owned header list, versions, body framing,
//! connection semantics, limits, and the incremental end-of-head scanner.
//!
//! Owns: finding where a head ends in a growing buffer (refusing bare LF and enforcing the
//! start-line / head-size / line-count limits *before* the head is complete, so a slow or
//! endless head is cut off early), copying a parsed head out of the caller's buffer into one
//! allocation, and the field-value rules both directions use (Content-Length, Transfer-Encoding,
//! `Connection` tokens). Does not own the request- or response-specific rules: those are
//! [`crate::request`] and [`crate::response`].

use std::ops::Range;

use crate::Http1Error;

/// Hard cap on header fields per head, whatever [`Limits::max_headers`] says: the httparse
/// scratch array lives on the stack.
pub const MAX_HEADERS_CAP: usize = 256;

/// Size limits for a head. The defaults follow nginx (`large_client_header_buffers 4 8k`)
/// and HAProxy (`tune.http.maxhdr 101`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line / status line in bytes, CRLF excluded (request: 414 beyond it).
    pub max_start_line: usize,
    /// Longest head (start line, fields, final empty line) in bytes (request: 431 beyond it).
    pub max_head_bytes: usize,
    /// Most header fields (request: 431 beyond it). Capped at [`MAX_HEADERS_CAP`].
    pub max_headers: usize,
    /// Largest request body accepted (413 beyond it); `None` for no limit.
    pub max_body_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_start_line: 8 * 1024,
            max_head_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: None,
        }
    }
}

/// The outcome of feeding a buffer to a head parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseStatus<H> {
    /// The buffer holds a valid prefix of a head; read more bytes and call again with the
    /// same buffer extended.
    Partial,
    /// A whole head was parsed; the body (or the next message) starts at `consumed`.
    Complete {
        /// The parsed head.
        head: H,
        /// Bytes of the buffer the head used, leading empty lines included.
        consumed: usize,
    },
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// HTTP/1.0: close by default, no chunked encoding, no Host required.
    Http10,
    /// HTTP/1.1.
    Http11,
}

impl Version {
    pub(crate) fn from_minor(minor: u8) -> Result<Self, Http1Error> {
        match minor {
            0 => Ok(Version::Http10),
            1 => Ok(Version::Http11),
            _ => Err(Http1Error::UnsupportedVersion),
        }
    }

    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body of a message is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body follows the head.
    None,
    /// Exactly this many body bytes follow.
    ContentLength(u64),
    /// A chunked body follows; feed it to [`crate::chunked::ChunkedDecoder`].
    Chunked,
    /// The body runs until the sender closes the connection (responses only).
    UntilClose,
}

/// What the `Connection`, `Upgrade` and `Expect` fields ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// The sender is willing to keep the connection open after this message.
    pub keep_alive: bool,
    /// The protocol(s) named in `Upgrade` when `Connection: upgrade` asks for it (HTTP/1.1
    /// only), e.g. `websocket`.
    pub upgrade: Option<Vec<u8>>,
    /// The request carries `Expect: 100-continue` (HTTP/1.1 only; other expectations are
    /// ignored, as nginx does).
    pub expect_continue: bool,
}

/// One header field: byte ranges into the owning head's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldSpan {
    name: Range<usize>,
    value: Range<usize>,
}

/// The header fields of a head, in received order, owning a copy of the head's bytes.
///
/// One allocation for the bytes and one for the spans per head; values keep their original
/// bytes (leading/trailing whitespace already trimmed by the parser).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderList {
    raw: Vec<u8>,
    fields: Vec<FieldSpan>,
}

impl HeaderList {
    /// Builds the list from httparse's fields, which borrow from `head`; `head` is copied once.
    pub(crate) fn from_httparse(head: &[u8], headers: &[httparse::Header<'_>]) -> Self {
        let fields = headers
            .iter()
            .map(|h| FieldSpan {
                name: span_within(head, h.name.as_bytes()),
                value: span_within(head, h.value),
            })
            .collect();
        HeaderList {
            raw: head.to_vec(),
            fields,
        }
    }

    /// The head's raw bytes (start line included), as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub(crate) fn slice(&self, range: &Range<usize>) -> &[u8] {
        self.raw.get(range.clone()).unwrap_or_default()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// No fields at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every field as `(name, value)` in received order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(move |f| (self.slice(&f.name), self.slice(&f.value)))
    }

    /// Every value of the fields called `name` (ASCII case-insensitive).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of the field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// How many field lines are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether any comma-separated token of the fields called `name` equals `token`
    /// (ASCII case-insensitive), e.g. `has_token("connection", "close")`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(comma_tokens)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// Where `part` (a sub-slice of `whole`, as httparse returns them) lies in `whole`; an empty
/// range if it does not lie inside (never panics, whatever the slices are).
pub(crate) fn span_within(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if start <= whole.len() && end <= whole.len() => start..end,
        _ => 0..0,
    }
}

/// Splits a field value on commas, trimming optional whitespace, skipping empty elements.
pub(crate) fn comma_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Trims SP and HTAB on both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads the Content-Length fields of a head: `None` if there is none, the value if every
/// line and list element agrees (RFC 9110 §8.6 allows merging identical values), an error if
/// any element is not `1*DIGIT` (no sign, no inner space) or the values differ.
pub(crate) fn content_length(headers: &HeaderList) -> Result<Option<u64>, Http1Error> {
    let mut found: Option<u64> = None;
    for value in headers.get_all("content-length") {
        let mut elements = 0;
        for element in value.split(|&b| b == b',').map(trim_ows) {
            elements += 1;
            let n = parse_decimal(element).ok_or(Http1Error::InvalidContentLength)?;
            match found {
                Some(previous) if previous != n => {
                    return Err(Http1Error::ConflictingContentLength)
                }
                _ => found = Some(n),
            }
        }
        if elements == 0 {
            return Err(Http1Error::InvalidContentLength);
        }
    }
    Ok(found)
}

/// `1*DIGIT` into a u64 no larger than `i64::MAX` (what a file offset can hold).
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= i64::MAX as u64).then_some(n)
}

/// Whether the Transfer-Encoding value is exactly `chunked` (case-insensitive, OWS trimmed).
pub(crate) fn is_exactly_chunked(value: &[u8]) -> bool {
    trim_ows(value).eq_ignore_ascii_case(b"chunked")
}

/// Whether the last coding of a Transfer-Encoding list is `chunked` (responses, RFC 9112 §6.3).
pub(crate) fn final_coding_is_chunked(headers: &HeaderList) -> bool {
    headers
        .get_all("transfer-encoding")
        .flat_map(comma_tokens)
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// Incremental end-of-head finder. Remembers how far it has looked, so a head arriving one
/// byte at a time is scanned once, not once per byte.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadScanner {
    /// Next byte to examine.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Whether the start line has ended (leading empty lines are skipped).
    start_line_seen: bool,
    /// Lines after the start line so far.
    field_lines: usize,
}

impl HeadScanner {
    /// Looks for the end of the head in `buf`. Returns the head length (through the final
    /// CRLF) once found. `buf` must be the same buffer as on the previous call, possibly
    /// extended; a shorter buffer restarts the scan.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, Http1Error> {
        if buf.len() < self.pos {
            *self = HeadScanner::default();
        }
        while let Some(offset) = buf[self.pos..].iter().position(|&b| b == b'\n') {
            let lf = self.pos + offset;
            self.pos = lf + 1;
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(Http1Error::BareLineFeed);
            }
            let line_len = lf - 1 - self.line_start.min(lf - 1);
            self.line_start = lf + 1;
            if !self.start_line_seen {
                if line_len == 0 {
                    continue; // RFC 9112 §2.2: ignore empty lines before the request line
                }
                if line_len > limits.max_start_line {
                    return Err(Http1Error::StartLineTooLong {
                        limit: limits.max_start_line,
                    });
                }
                self.start_line_seen = true;
            } else if line_len == 0 {
                let end = lf + 1;
                *self = HeadScanner::default();
                if end > limits.max_head_bytes {
                    return Err(Http1Error::HeadTooLarge {
                        limit: limits.max_head_bytes,
                    });
                }
                return Ok(Some(end));
            } else {
                self.field_lines += 1;
                let max = limits.max_headers.min(MAX_HEADERS_CAP);
                if self.field_lines > max {
                    return Err(Http1Error::TooManyHeaders { limit: max });
                }
            }
            if self.pos > limits.max_head_bytes {
                return Err(Http1Error::HeadTooLarge {
                    limit: limits.max_head_bytes,
                });
            }
        }
        self.pos = buf.len();
        let open_line = buf.len() - self.line_start.min(buf.len());
        // The open line may end in the CR of its CRLF; allow for it.
        if !self.start_line_seen && open_line > limits.max_start_line + 1 {
            return Err(Http1Error::StartLineTooLong {
                limit: limits.max_start_line,
            });
        }
        if buf.len() > limits.max_head_bytes {
            return Err(if self.start_line_seen {
                Http1Error::HeadTooLarge {
                    limit: limits.max_head_bytes,
                }
            } else {
                Http1Error::StartLineTooLong {
                    limit: limits.max_start_line,
                }
            });
        }
        Ok(None)
    }
}

/// Explains an httparse `HeaderName` error precisely by looking at the offending line:
/// obs-fold, whitespace before the colon, or a bad name byte.
pub(crate) fn classify_header_name_error(head: &[u8]) -> Http1Error {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // skip leading empty lines and the start line
    for line in lines.by_ref() {
        if !line.is_empty() {
            break;
        }
    }
    for line in lines {
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Http1Error::ObsoleteLineFolding;
        }
        let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() {
            return Http1Error::InvalidHeaderName;
        }
        if let Some(ws) = name.iter().position(|&b| b == b' ' || b == b'\t') {
            if name_end < line.len() && name[ws..].iter().all(|&b| b == b' ' || b == b'\t') {
                return Http1Error::WhitespaceBeforeColon;
            }
            return Http1Error::InvalidHeaderName;
        }
        if !name.iter().all(|&b| is_tchar(b)) || name_end == line.len() {
            return Http1Error::InvalidHeaderName;
        }
    }
    Http1Error::InvalidHeaderName
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_start_line: 20,
            max_head_bytes: 64,
            max_headers: 2,
            max_body_bytes: None,
        }
    }

    #[test]
    fn scanner_finds_end_incrementally() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let mut s = HeadScanner::default();
        for n in 1..head.len() - 4 {
            assert_eq!(s.scan(&head[..n], &limits()), Ok(None), "prefix {n}");
        }
        assert_eq!(s.scan(head, &limits()), Ok(Some(head.len() - 4)));
    }

    #[test]
    fn scanner_skips_leading_empty_lines() {
        let mut s = HeadScanner::default();
        assert_eq!(
            s.scan(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", &limits()),
            Ok(Some(22))
        );
    }

    #[test]
    fn scanner_refuses_bare_lf_before_head_completes() {
        let mut s = HeadScanner::default();
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\nHost", &limits()),
            Err(Http1Error::BareLineFeed)
        );
    }

    #[test]
    fn scanner_cuts_long_start_line_without_newline() {
        let mut s = HeadScanner::default();
        let long = [b'a'; 30];
        assert_eq!(
            s.scan(&long, &limits()),
            Err(Http1Error::StartLineTooLong { limit: 20 })
        );
    }

    #[test]
    fn scanner_counts_field_lines() {
        let mut s = HeadScanner::default();
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n", &limits()),
            Err(Http1Error::TooManyHeaders { limit: 2 })
        );
    }

    #[test]
    fn scanner_bounds_head_size() {
        let mut s = HeadScanner::default();
        let mut head = b"GET / HTTP/1.1\r\nx: ".to_vec();
        head.extend_from_slice(&[b'v'; 60]);
        assert_eq!(
            s.scan(&head, &limits()),
            Err(Http1Error::HeadTooLarge { limit: 64 })
        );
    }

    #[test]
    fn span_within_never_panics_on_foreign_slices() {
        let whole = b"abcdef".to_vec();
        assert_eq!(span_within(&whole, &whole[2..4]), 2..4);
        assert_eq!(span_within(&whole, &whole[6..]), 6..6);
        let other = b"zz".to_vec();
        assert_eq!(span_within(&whole, &other), 0..0);
        assert_eq!(span_within(&other, &whole), 0..0);
    }

    #[test]
    fn decimal_rules() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(parse_decimal(b"9223372036854775808"), None);
        assert_eq!(parse_decimal(b"+5"), None);
        assert_eq!(parse_decimal(b"5 5"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"0x10"), None);
    }

    #[test]
    fn comma_tokens_trim_and_skip_empty() {
        let t: Vec<&[u8]> = comma_tokens(b" keep-alive ,, Upgrade\t").collect();
        assert_eq!(t, vec![&b"keep-alive"[..], &b"Upgrade"[..]]);
    }

    #[test]
    fn classify_header_errors() {
        assert_eq!(
            classify_header_name_error(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
            Http1Error::ObsoleteLineFolding
        );
        assert_eq!(
            classify_header_name_error(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            Http1Error::WhitespaceBeforeColon
        );
        assert_eq!(
            classify_header_name_error(b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"),
            Http1Error::InvalidHeaderName
        );
    }
}
