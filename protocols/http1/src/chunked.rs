//! The chunked transfer coding (RFC 9112 §7.1): a streaming decoder and the encoder's framing.
//!
//! Owns: turning a chunked byte stream into data slices without copying or buffering the
//! data (the decoder hands back sub-slices of the caller's input), the strict rules that keep
//! a proxy's view of the body equal to the backend's (hex sizes that fit 64 bits, CRLF after
//! every size line and every chunk — a bare LF is an error, chunk extensions skipped but
//! bounded, trailers validated and bounded), and the bytes that frame re-encoded chunks.
//!
//! Does not own: reading or writing sockets, or deciding that a body is chunked (see
//! [`crate::BodyFraming`]). The proxy re-encodes what it decodes, so what reaches the other
//! side is always canonical framing, whatever quirks the sender had.

use crate::Http1Error;

/// Longest chunk-size line (size, extensions) accepted, CRLF excluded.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Default bound on the trailer section, in bytes.
pub const DEFAULT_MAX_TRAILER_BYTES: usize = 8 * 1024;
/// Most trailer fields accepted.
pub const MAX_TRAILER_FIELDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size, before a `;` (BWS in chunk-ext).
    SizeWhitespace,
    /// Skipping a chunk extension up to CR.
    Extension,
    /// CR of the size line seen; LF must follow.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Chunk data finished; CR must follow.
    DataCr,
    /// CR after data seen; LF must follow.
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerLineStart,
    /// Inside a trailer line.
    TrailerLine,
    /// CR of a trailer line seen; LF must follow.
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    FinalLf,
    /// The body is complete.
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Bytes of the input used (framing and data); continue from `input[consumed..]`.
    pub consumed: usize,
    /// Body data: a slice of the input, possibly empty.
    pub data: &'a [u8],
    /// The last chunk and trailers have been read; bytes after `consumed` are the next message.
    pub done: bool,
}

/// Streaming chunked-body decoder. Feed it whatever bytes arrived; it returns at most one
/// data slice per call, so call it in a loop until the input is used up or `done`:
///
/// ```
/// use shardgate_http1::chunked::ChunkedDecoder;
/// let mut decoder = ChunkedDecoder::new(None);
/// let mut input: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
/// let mut body = Vec::new();
/// loop {
///     let step = decoder.decode(input).unwrap();
///     body.extend_from_slice(step.data);
///     input = &input[step.consumed..];
///     if step.done || input.is_empty() { break; }
/// }
/// assert_eq!(body, b"hello");
/// ```
///
/// Progress guarantee: unless the input is empty or the body is done, every call consumes at
/// least one byte.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read (while in `Size`), then data left in it.
    remaining: u64,
    digits: usize,
    line_len: usize,
    body_bytes: u64,
    max_body_bytes: Option<u64>,
    max_trailer_bytes: usize,
    trailers: Vec<u8>,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies over `max_body_bytes` (413) and trailers over
    /// [`DEFAULT_MAX_TRAILER_BYTES`].
    pub fn new(max_body_bytes: Option<u64>) -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line_len: 0,
            body_bytes: 0,
            max_body_bytes,
            max_trailer_bytes: DEFAULT_MAX_TRAILER_BYTES,
            trailers: Vec::new(),
        }
    }

    /// Changes the trailer-section bound.
    pub fn with_max_trailer_bytes(mut self, max: usize) -> Self {
        self.max_trailer_bytes = max;
        self
    }

    /// Whether the whole body (last chunk and trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes decoded so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The trailer fields received, each line with its CRLF (empty if none). Valid once
    /// [`ChunkedDecoder::is_done`]; pass to [`encode_last_chunk`] to forward them.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Decodes from `input`. On error the body is unusable: answer 400 (client) or 502
    /// (backend) and close.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, Http1Error> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let available = (input.len() - i) as u64;
                    let take = self.remaining.min(available) as usize;
                    let data = &input[i..i + take];
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i + take,
                        data,
                        done: false,
                    });
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                    if self.state == State::Done {
                        return Ok(Decoded {
                            consumed: i,
                            data: &[],
                            done: true,
                        });
                    }
                }
            }
        }
        Ok(Decoded {
            consumed: i,
            data: &[],
            done: self.state == State::Done,
        })
    }

    fn step(&mut self, byte: u8) -> Result<(), Http1Error> {
        match self.state {
            State::Size => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    self.bump_line()?;
                    let digit = hex_value(byte);
                    if self.remaining > (u64::MAX >> 4) {
                        return Err(Http1Error::ChunkSizeOverflow);
                    }
                    self.remaining = (self.remaining << 4) | digit;
                    self.digits += 1;
                }
                _ if self.digits == 0 => return Err(Http1Error::InvalidChunkSize),
                b'\r' => self.state = State::SizeLf,
                b';' => self.state = State::Extension,
                b' ' | b'\t' => self.state = State::SizeWhitespace,
                b'\n' => return Err(Http1Error::MissingChunkCrlf),
                _ => return Err(Http1Error::InvalidChunkSize),
            },
            State::SizeWhitespace => match byte {
                b' ' | b'\t' => self.bump_line()?,
                b';' => self.state = State::Extension,
                _ => return Err(Http1Error::InvalidChunkSize),
            },
            State::Extension => match byte {
                b'\r' => self.state = State::SizeLf,
                b'\n' => return Err(Http1Error::MissingChunkCrlf),
                b'\t' => self.bump_line()?,
                0..=0x1f | 0x7f => return Err(Http1Error::InvalidChunkSize),
                _ => self.bump_line()?,
            },
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(Http1Error::MissingChunkCrlf);
                }
                self.line_len = 0;
                self.digits = 0;
                if self.remaining == 0 {
                    self.state = State::TrailerLineStart;
                } else {
                    self.body_bytes = self.body_bytes.saturating_add(self.remaining);
                    if let Some(limit) = self.max_body_bytes {
                        if self.body_bytes > limit {
                            return Err(Http1Error::BodyTooLarge { limit });
                        }
                    }
                    self.state = State::Data;
                }
            }
            State::DataCr => {
                if byte != b'\r' {
                    return Err(Http1Error::MissingChunkCrlf);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if byte != b'\n' {
                    return Err(Http1Error::MissingChunkCrlf);
                }
                self.state = State::Size;
            }
            State::TrailerLineStart => match byte {
                b'\r' => self.state = State::FinalLf,
                b'\n' => return Err(Http1Error::MissingChunkCrlf),
                _ => {
                    self.push_trailer(byte)?;
                    self.state = State::TrailerLine;
                }
            },
            State::TrailerLine => match byte {
                b'\r' => {
                    self.push_trailer(byte)?;
                    self.state = State::TrailerLf;
                }
                b'\n' => return Err(Http1Error::MissingChunkCrlf),
                _ => self.push_trailer(byte)?,
            },
            State::TrailerLf => {
                if byte != b'\n' {
                    return Err(Http1Error::MissingChunkCrlf);
                }
                self.push_trailer(byte)?;
                self.state = State::TrailerLineStart;
            }
            State::FinalLf => {
                if byte != b'\n' {
                    return Err(Http1Error::MissingChunkCrlf);
                }
                self.validate_trailers()?;
                self.state = State::Done;
            }
            State::Data | State::Done => {}
        }
        Ok(())
    }

    fn bump_line(&mut self) -> Result<(), Http1Error> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(Http1Error::ChunkExtensionTooLong {
                limit: MAX_CHUNK_LINE,
            });
        }
        Ok(())
    }

    fn push_trailer(&mut self, byte: u8) -> Result<(), Http1Error> {
        if self.trailers.len() >= self.max_trailer_bytes {
            return Err(Http1Error::TrailersTooLarge {
                limit: self.max_trailer_bytes,
            });
        }
        self.trailers.push(byte);
        Ok(())
    }

    /// Every trailer line must be a valid field (httparse's header rules: token name, no
    /// whitespace before the colon, no obs-fold, no control bytes in the value).
    fn validate_trailers(&mut self) -> Result<(), Http1Error> {
        if self.trailers.is_empty() {
            return Ok(());
        }
        self.trailers.extend_from_slice(b"\r\n");
        let mut scratch = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let result = match httparse::parse_headers(&self.trailers, &mut scratch) {
            Ok(httparse::Status::Complete((used, _))) => Ok(used == self.trailers.len()),
            Ok(httparse::Status::Partial) => Ok(false),
            Err(e) => Err(e),
        };
        self.trailers.truncate(self.trailers.len() - 2);
        match result {
            Ok(true) => Ok(()),
            Err(httparse::Error::TooManyHeaders) => Err(Http1Error::TrailersTooLarge {
                limit: self.max_trailer_bytes,
            }),
            _ => Err(Http1Error::InvalidTrailer),
        }
    }
}

fn hex_value(byte: u8) -> u64 {
    u64::from(match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    })
}

/// The bytes that end a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// A last chunk with no trailers: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A chunk-size line (`<hex>\r\n`) on the stack, for vectored writes of
/// `[header, data, CHUNK_END]` without copying the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkHeader {
    /// The size line for a chunk of `data_len` bytes. `data_len` must not be 0 (that is the
    /// last chunk; use [`LAST_CHUNK`]).
    pub fn new(data_len: u64) -> Self {
        let mut bytes = [0u8; 18];
        let digits = (16 - data_len.leading_zeros() as usize / 4).max(1);
        for (i, slot) in bytes[..digits].iter_mut().enumerate() {
            let shift = 4 * (digits - 1 - i);
            *slot = b"0123456789abcdef"[((data_len >> shift) & 0xf) as usize];
        }
        bytes[digits] = b'\r';
        bytes[digits + 1] = b'\n';
        ChunkHeader {
            bytes,
            len: digits + 2,
        }
    }

    /// The size line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends `data` as one chunk. Empty data writes nothing (an empty chunk would end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(ChunkHeader::new(data.len() as u64).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_END);
}

/// Appends the last chunk, the trailer lines (each ending in CRLF, as
/// [`ChunkedDecoder::trailers`] returns them) and the final CRLF.
pub fn encode_last_chunk(trailers: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body and bytes left over.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), Http1Error> {
        let mut decoder = ChunkedDecoder::new(None);
        let mut body = Vec::new();
        let mut offset = 0;
        let mut window_end = step.min(input.len());
        loop {
            let d = decoder.decode(&input[offset..window_end])?;
            body.extend_from_slice(d.data);
            offset += d.consumed;
            if d.done {
                return Ok((body, input.len() - offset));
            }
            if offset == window_end {
                if window_end == input.len() {
                    panic!(
                        "input ended before the body: {:?}",
                        String::from_utf8_lossy(input)
                    );
                }
                window_end = (window_end + step).min(input.len());
            }
        }
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"5\r\nhello\r\n7;name=val\r\n, world\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, left) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            assert_eq!(left, 4);
        }
    }

    #[test]
    fn upper_case_hex_and_leading_zeros() {
        assert_eq!(
            decode_all(b"000A\r\n0123456789\r\n0\r\n\r\n", 64)
                .unwrap()
                .0,
            b"0123456789"
        );
    }

    #[test]
    fn trailers_are_kept_and_validated() {
        let input = b"1\r\na\r\n0\r\nChecksum: abc\r\nX-T: 1\r\n\r\n";
        let mut d = ChunkedDecoder::new(None);
        let mut rest: &[u8] = input;
        while !d.is_done() {
            let s = d.decode(rest).unwrap();
            rest = &rest[s.consumed..];
        }
        assert_eq!(d.trailers(), b"Checksum: abc\r\nX-T: 1\r\n");
        assert_eq!(
            decode_all(b"0\r\nBad Name: x\r\n\r\n", 64),
            Err(Http1Error::InvalidTrailer)
        );
        assert_eq!(
            decode_all(b"0\r\nX: a\r\n folded\r\n\r\n", 64),
            Err(Http1Error::InvalidTrailer)
        );
    }

    #[test]
    fn trailers_are_bounded() {
        let mut input = b"0\r\nX: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', DEFAULT_MAX_TRAILER_BYTES));
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            decode_all(&input, 1000),
            Err(Http1Error::TrailersTooLarge {
                limit: DEFAULT_MAX_TRAILER_BYTES
            })
        );
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(decode_all(b"\r\n", 8), Err(Http1Error::InvalidChunkSize));
        assert_eq!(decode_all(b"0x5\r\n", 8), Err(Http1Error::InvalidChunkSize));
        assert_eq!(decode_all(b"-1\r\n", 8), Err(Http1Error::InvalidChunkSize));
        assert_eq!(
            decode_all(b"5 \r\nhello\r\n", 8),
            Err(Http1Error::InvalidChunkSize)
        );
        assert_eq!(decode_all(b"g\r\n", 8), Err(Http1Error::InvalidChunkSize));
        assert_eq!(
            decode_all(b"1ffffffffffffffff\r\n", 64),
            Err(Http1Error::ChunkSizeOverflow)
        );
        assert_eq!(decode_all(b"5\0\r\n", 8), Err(Http1Error::InvalidChunkSize));
    }

    #[test]
    fn largest_size_parses_then_limit_applies() {
        let mut d = ChunkedDecoder::new(Some(100));
        assert_eq!(
            d.decode(b"ffffffffffffffff\r\n"),
            Err(Http1Error::BodyTooLarge { limit: 100 })
        );
        let mut d = ChunkedDecoder::new(Some(10));
        assert_eq!(
            decode_all_with(&mut d, b"6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n"),
            Err(Http1Error::BodyTooLarge { limit: 10 })
        );
    }

    fn decode_all_with(d: &mut ChunkedDecoder, mut input: &[u8]) -> Result<Vec<u8>, Http1Error> {
        let mut body = Vec::new();
        while !input.is_empty() {
            let s = d.decode(input)?;
            body.extend_from_slice(s.data);
            input = &input[s.consumed..];
            if s.done {
                break;
            }
        }
        Ok(body)
    }

    #[test]
    fn missing_or_bare_line_endings() {
        assert_eq!(
            decode_all(b"5\nhello\r\n", 8),
            Err(Http1Error::MissingChunkCrlf)
        );
        assert_eq!(
            decode_all(b"5\r\nhelloX\r\n", 64),
            Err(Http1Error::MissingChunkCrlf)
        );
        assert_eq!(
            decode_all(b"5\r\nhello\n0\r\n\r\n", 64),
            Err(Http1Error::MissingChunkCrlf)
        );
        assert_eq!(
            decode_all(b"0\r\n\n", 64),
            Err(Http1Error::MissingChunkCrlf)
        );
        assert_eq!(
            decode_all(b"0\r\nX: 1\n\r\n", 64),
            Err(Http1Error::MissingChunkCrlf)
        );
        assert_eq!(
            decode_all(b"5;ext\nhello", 64),
            Err(Http1Error::MissingChunkCrlf)
        );
    }

    #[test]
    fn extension_is_bounded() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 1));
        assert_eq!(
            decode_all(&input, 512),
            Err(Http1Error::ChunkExtensionTooLong {
                limit: MAX_CHUNK_LINE
            })
        );
    }

    #[test]
    fn decoder_makes_progress_and_stops_when_done() {
        let mut d = ChunkedDecoder::new(None);
        assert_eq!(
            d.decode(b""),
            Ok(Decoded {
                consumed: 0,
                data: &[],
                done: false
            })
        );
        let s = d.decode(b"0\r\n\r\nGET").unwrap();
        assert_eq!((s.consumed, s.done), (5, true));
        assert_eq!(
            d.decode(b"GET"),
            Ok(Decoded {
                consumed: 0,
                data: &[],
                done: true
            })
        );
    }

    #[test]
    fn encoder_round_trips() {
        assert_eq!(ChunkHeader::new(1).as_bytes(), b"1\r\n");
        assert_eq!(ChunkHeader::new(0x1000).as_bytes(), b"1000\r\n");
        assert_eq!(
            ChunkHeader::new(u64::MAX).as_bytes(),
            b"ffffffffffffffff\r\n"
        );
        let mut out = Vec::new();
        encode_chunk(b"hello", &mut out);
        encode_chunk(b"", &mut out);
        encode_chunk(&[7u8; 300], &mut out);
        encode_last_chunk(b"X-Sum: 1\r\n", &mut out);
        let (body, left) = decode_all(&out, 13).unwrap();
        assert_eq!(left, 0);
        assert_eq!(&body[..5], b"hello");
        assert_eq!(body.len(), 305);
    }
}
