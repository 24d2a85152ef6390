//! DNS over TCP message framing (RFC 1035 §4.2.2, RFC 7766): a two-byte big-endian length
//! before every message, several messages per connection.
//!
//! Owns: splitting a receive buffer into whole messages and prefixing responses. Does not own:
//! the connection, its buffers or timeouts (the shards do that).

/// The first complete message in `buffer` and the number of bytes it used (prefix included),
/// or `None` when more bytes are needed. A zero-length frame yields an empty message.
pub fn next_message(buffer: &[u8]) -> Option<(&[u8], usize)> {
    let (prefix, rest) = buffer.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*prefix));
    let message = rest.get(..len)?;
    Some((message, len + 2))
}

/// Appends `message` with its length prefix to `out`. Returns `false` (and appends nothing)
/// when the message is longer than 65535 bytes.
pub fn append_framed(message: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u16::try_from(message.len()) else {
        return false;
    };
    out.reserve(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pipelined_messages_and_waits_for_partial_ones() {
        let mut stream = Vec::new();
        assert!(append_framed(b"first", &mut stream));
        assert!(append_framed(b"", &mut stream));
        assert!(append_framed(b"second!", &mut stream));
        stream.extend_from_slice(&[0x00, 0x09, b'p']); // partial third

        let mut offset = 0;
        let mut seen = Vec::new();
        while let Some((message, used)) = next_message(&stream[offset..]) {
            seen.push(message.to_vec());
            offset += used;
        }
        assert_eq!(
            seen,
            vec![b"first".to_vec(), Vec::new(), b"second!".to_vec()]
        );
        assert_eq!(&stream[offset..], &[0x00, 0x09, b'p']);
        assert!(next_message(&[0x00]).is_none());
        assert!(!append_framed(&vec![0u8; 70_000], &mut Vec::new()));
    }
}
