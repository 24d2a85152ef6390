//! Fuzzes the packet decoder: no input may panic, and every datagram that decodes must
//! re-encode to exactly its framed octets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_radius::packet::{Packet, RawPacket};

fuzz_target!(|datagram: &[u8]| {
    if let Ok(packet) = Packet::decode(datagram) {
        let mut encoded = Vec::new();
        packet.encode(&mut encoded).expect("a decoded packet always re-encodes");
        let framed = RawPacket::parse(datagram).expect("decode succeeded, so framing did");
        assert_eq!(encoded, framed.as_bytes());
    }
});
