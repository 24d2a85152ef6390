//! The PROXY protocol header (v1 text, v2 binary) sent to a target before relayed bytes,
//! so the backend learns the real client address. Encoding is the `ppp` crate's; this module
//! only maps our types onto it. IPv4-mapped IPv6 client addresses are sent as IPv4 so both
//! ends of the header are of one family.

use std::net::SocketAddr;

use crate::config::{canonical_ip, ProxyProtocol};

/// Encodes the header for a connection from `client` to our `local` address.
pub fn encode(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let client = SocketAddr::new(canonical_ip(client.ip()), client.port());
    let local = SocketAddr::new(canonical_ip(local.ip()), local.port());
    match version {
        ProxyProtocol::V1 => ppp::v1::Addresses::from((client, local)).to_string().into_bytes(),
        ProxyProtocol::V2 => {
            let builder = ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (client, local),
            );
            // Building into a Vec with no TLVs cannot fail; fall back to a LOCAL header
            // (which tells the backend to use the socket addresses) if it ever does.
            builder.build().unwrap_or_else(|_| {
                vec![0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_text() {
        let h = encode(ProxyProtocol::V1, "192.0.2.1:5555".parse().expect("a"), "198.51.100.2:443".parse().expect("a"));
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n");
        let h = encode(ProxyProtocol::V1, "[::ffff:192.0.2.1]:5555".parse().expect("a"), "[::ffff:127.0.0.1]:80".parse().expect("a"));
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\n");
    }

    #[test]
    fn v2_binary_parses_back() {
        let client: SocketAddr = "[2001:db8::1]:40000".parse().expect("a");
        let local: SocketAddr = "[2001:db8::2]:443".parse().expect("a");
        let h = encode(ProxyProtocol::V2, client, local);
        let parsed = ppp::v2::Header::try_from(h.as_slice()).expect("valid v2 header");
        assert_eq!(parsed.command, ppp::v2::Command::Proxy);
        match parsed.addresses {
            ppp::v2::Addresses::IPv6(a) => {
                assert_eq!(a.source_port, 40000);
                assert_eq!(a.destination_port, 443);
                assert_eq!(std::net::IpAddr::V6(a.source_address), client.ip());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
