//! Fuzzes the chunked decoder: any bytes, fed in pieces whose sizes come from the input.
//! The decoder must make progress, never hand out more data than it was given, and decode
//! the same body whatever the piece sizes; a decoded body re-encodes and decodes back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http1::chunked::{encode_chunk, encode_last_chunk, ChunkedDecoder};

/// Decodes `input` in pieces of `piece` bytes; `Some(body)` if the body completed.
fn decode(input: &[u8], piece: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut decoder = ChunkedDecoder::new(Some(1 << 24));
    let mut body = Vec::new();
    let mut offset = 0;
    let mut end = piece.min(input.len());
    loop {
        let step = decoder.decode(&input[offset..end]).ok()?;
        assert!(step.consumed <= end - offset);
        body.extend_from_slice(step.data);
        offset += step.consumed;
        if step.done {
            return Some((body, decoder.trailers().to_vec()));
        }
        if offset == end {
            if end == input.len() {
                return None;
            }
            end = (end + piece).min(input.len());
        } else {
            assert!(step.consumed > 0, "decoder made no progress");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let whole = decode(data, data.len().max(1));
    let pieces = decode(data, usize::from(piece).max(1));
    assert_eq!(whole, pieces);
    if let Some((body, trailers)) = whole {
        let mut encoded = Vec::new();
        encode_chunk(&body, &mut encoded);
        encode_last_chunk(&trailers, &mut encoded);
        assert_eq!(decode(&encoded, encoded.len()), Some((body, trailers)));
    }
});
