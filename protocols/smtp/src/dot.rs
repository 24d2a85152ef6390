//! The `DATA` body decoder: finds the end-of-data marker and removes dot-stuffing.
//!
//! Owns: RFC 5321 §4.5.2 transparency (a leading `.` on a line is removed) and §4.1.1.4
//! end of data, which is **only** `<CRLF>.<CRLF>`. A bare LF anywhere in the body is an
//! error, not a line ending: this is the SMTP smuggling defence (2023; Postfix
//! `smtpd_forbid_bare_newline`), since a server that accepts `<LF>.<LF>` or `<CR>.<CR>`
//! as end of data can be made to see two messages where the next hop sees one. A bare CR
//! not followed by LF is passed through as data.
//! The decoder is incremental: a message may be split between any two bytes, including
//! inside `\r\n.\r\n`, and nothing is buffered beyond one state value.
//! Does not own: size limits or the message store (the session counts what comes out).

/// Where the decoder is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a line (also the start of the body).
    LineStart,
    /// Inside a line.
    Middle,
    /// Just saw a CR inside a line.
    CarriageReturn,
    /// Saw `.` at the start of a line (not yet written: it is either stuffing or the end).
    LineStartDot,
    /// Saw `.` then CR at the start of a line.
    DotCarriageReturn,
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// `<CRLF>.<CRLF>` seen; the message is complete.
    Complete,
    /// A LF without a preceding CR: the session must reject and close.
    BareLineFeed,
}

/// Incremental dot-unstuffer for one message body.
#[derive(Debug, Clone)]
pub(crate) struct DotDecoder {
    state: LineState,
}

impl DotDecoder {
    /// A decoder positioned at the start of a body (just after the `354`).
    pub(crate) fn new() -> Self {
        DotDecoder {
            state: LineState::LineStart,
        }
    }

    /// Decodes as much of `input` as possible, appending message content to `out`.
    /// Returns the number of input bytes consumed and, if the body ended, how.
    /// When no end is returned, all of `input` was consumed.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<BodyEnd>) {
        let mut index = 0;
        while index < input.len() {
            let byte = input[index];
            match self.state {
                LineState::Middle => {
                    let rest = &input[index..];
                    match rest.iter().position(|b| *b == b'\r' || *b == b'\n') {
                        None => {
                            out.extend_from_slice(rest);
                            return (input.len(), None);
                        }
                        Some(offset) => {
                            out.extend_from_slice(&rest[..offset]);
                            index += offset;
                            if rest[offset] == b'\n' {
                                return (index + 1, Some(BodyEnd::BareLineFeed));
                            }
                            self.state = LineState::CarriageReturn;
                            index += 1;
                        }
                    }
                    continue;
                }
                LineState::LineStart => match byte {
                    b'.' => self.state = LineState::LineStartDot,
                    b'\r' => self.state = LineState::CarriageReturn,
                    b'\n' => return (index + 1, Some(BodyEnd::BareLineFeed)),
                    _ => {
                        out.push(byte);
                        self.state = LineState::Middle;
                    }
                },
                LineState::LineStartDot => match byte {
                    b'\r' => self.state = LineState::DotCarriageReturn,
                    b'\n' => return (index + 1, Some(BodyEnd::BareLineFeed)),
                    _ => {
                        // Transparency: the leading dot is removed, the rest kept.
                        out.push(byte);
                        self.state = LineState::Middle;
                    }
                },
                LineState::DotCarriageReturn => {
                    if byte == b'\n' {
                        self.state = LineState::LineStart;
                        return (index + 1, Some(BodyEnd::Complete));
                    }
                    // `.` CR x: the dot is stuffing, the CR is a bare CR kept as data.
                    out.push(b'\r');
                    self.state = LineState::Middle;
                    continue;
                }
                LineState::CarriageReturn => {
                    if byte == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.state = LineState::LineStart;
                    } else {
                        out.push(b'\r');
                        self.state = LineState::Middle;
                        continue;
                    }
                }
            }
            index += 1;
        }
        (input.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(parts: &[&[u8]]) -> (Vec<u8>, Option<BodyEnd>, usize) {
        let mut decoder = DotDecoder::new();
        let mut out = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let (consumed, end) = decoder.decode(part, &mut out);
            if end.is_some() {
                return (
                    out,
                    end,
                    part.len() - consumed
                        + parts[index + 1..].iter().map(|p| p.len()).sum::<usize>(),
                );
            }
            assert_eq!(consumed, part.len());
        }
        (out, None, 0)
    }

    #[test]
    fn simple_body_and_end_marker() {
        let (out, end, left) = decode_all(&[b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n"]);
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(end, Some(BodyEnd::Complete));
        assert_eq!(left, 6);
    }

    #[test]
    fn empty_body() {
        let (out, end, _) = decode_all(&[b".\r\n"]);
        assert!(out.is_empty());
        assert_eq!(end, Some(BodyEnd::Complete));
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (out, end, _) = decode_all(&[b"..hidden\r\n.x\r\n...\r\n.\r\n"]);
        assert_eq!(out, b".hidden\r\nx\r\n..\r\n");
        assert_eq!(end, Some(BodyEnd::Complete));
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let body: &[u8] = b"a\r\n..b\r\n.\rc\r\nd\re\r\n.\r\n";
        let (whole, end, _) = decode_all(&[body]);
        assert_eq!(whole, b"a\r\n.b\r\n\rc\r\nd\re\r\n");
        assert_eq!(end, Some(BodyEnd::Complete));
        for split in 0..body.len() {
            let (out, end, _) = decode_all(&[&body[..split], &body[split..]]);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(end, Some(BodyEnd::Complete));
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode_all(&bytes).0, whole);
    }

    #[test]
    fn smuggling_variants_are_not_end_of_data() {
        for smuggled in [
            &b"a\r\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\n",
            b"a\r\n.\n",
            b"a\n.\n",
        ] {
            let (_, end, _) = decode_all(&[smuggled]);
            assert_eq!(end, Some(BodyEnd::BareLineFeed), "{smuggled:?}");
        }
        // `<CR>.<CR>` is data, not an end marker.
        let (out, end, _) = decode_all(&[b"a\r.\rb"]);
        assert_eq!(out, b"a\r.\rb");
        assert_eq!(end, None);
    }
}
