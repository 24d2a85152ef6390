//! Reads a TLS ClientHello from the bytes a client sent first, without decrypting anything.
//!
//! Layers:
//! - **input**: the raw bytes received so far on a connection (the caller keeps them, because
//!   for passthrough they are relayed to the backend untouched, ClientHello included);
//! - **parse**: rustls' [`Acceptor`](rustls::server::Acceptor) does the record deframing and
//!   ClientHello decoding, so a ClientHello split over several TCP segments or TLS records is
//!   handled exactly as a TLS server would handle it;
//! - **output**: a [`HelloStatus`] — more bytes needed, not TLS at all, or the server name (SNI)
//!   and ALPN protocols the client offered.
//!
//! This crate owns no socket and no clock: the shard decides how long to wait for more bytes.

use std::io::Cursor;

/// The largest first flight we are willing to buffer while looking for a ClientHello.
/// A ClientHello with post-quantum key shares is around 1.8 KiB; 16 KiB is a whole TLS record.
pub const MAX_HELLO_BYTES: usize = 16 * 1024 + 5;

/// What the first bytes of a connection say about its TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloStatus {
    /// The bytes so far are a valid prefix of a TLS ClientHello; read more.
    NeedMore,
    /// A complete ClientHello was read.
    Complete(ClientHelloInfo),
}

/// What a ClientHello tells a router.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHelloInfo {
    /// The server name (SNI) the client asked for, lower-cased, if it sent one.
    pub server_name: Option<String>,
    /// The ALPN protocol names the client offered, in its order.
    pub alpn: Vec<Vec<u8>>,
}

/// Why the first bytes are not a usable ClientHello.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// The bytes are not a TLS handshake (for example plain HTTP or SSH).
    #[error("not a TLS ClientHello: {0}")]
    NotTls(String),
    /// The client sent more than [`MAX_HELLO_BYTES`] without completing a ClientHello.
    #[error("ClientHello larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
}

/// Reads the ClientHello from `first_bytes`, everything the client has sent so far.
///
/// Call it again with the longer buffer after [`HelloStatus::NeedMore`].
pub fn read_client_hello(first_bytes: &[u8]) -> Result<HelloStatus, HelloError> {
    // Fail fast on what can never be TLS: a handshake record starts 0x16 0x03.
    if let Some(&first) = first_bytes.first() {
        if first != 0x16 {
            return Err(HelloError::NotTls(format!(
                "first byte 0x{first:02x} is not a TLS handshake record"
            )));
        }
    }
    if first_bytes.len() >= 2 && first_bytes[1] != 0x03 {
        return Err(HelloError::NotTls(format!(
            "record version major 0x{:02x} is not 3",
            first_bytes[1]
        )));
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut cursor = Cursor::new(first_bytes);
    while (cursor.position() as usize) < first_bytes.len() {
        match acceptor.read_tls(&mut cursor) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(HelloError::NotTls(e.to_string())),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Ok(HelloStatus::Complete(ClientHelloInfo {
                    server_name: hello.server_name().map(|n| n.to_ascii_lowercase()),
                    alpn: hello
                        .alpn()
                        .map(|protocols| protocols.map(|p| p.to_vec()).collect())
                        .unwrap_or_default(),
                }));
            }
            Ok(None) => {}
            Err((e, _alert)) => return Err(HelloError::NotTls(e.to_string())),
        }
    }
    if first_bytes.len() >= MAX_HELLO_BYTES {
        return Err(HelloError::TooLarge);
    }
    Ok(HelloStatus::NeedMore)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello produced by a rustls client for `server_name`.
    fn client_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    #[test]
    fn reads_sni_and_alpn_from_a_whole_hello() {
        let hello = client_hello("Api.Example.com", &[b"h2", b"http/1.1"]);
        let status = read_client_hello(&hello).expect("hello");
        assert_eq!(
            status,
            HelloStatus::Complete(ClientHelloInfo {
                server_name: Some("api.example.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            })
        );
    }

    #[test]
    fn every_split_point_needs_more_until_complete() {
        let hello = client_hello("split.example.net", &[]);
        for cut in 1..hello.len() {
            assert_eq!(read_client_hello(&hello[..cut]), Ok(HelloStatus::NeedMore), "cut at {cut}");
        }
        match read_client_hello(&hello) {
            Ok(HelloStatus::Complete(info)) => {
                assert_eq!(info.server_name.as_deref(), Some("split.example.net"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn hello_split_across_two_tls_records_is_reassembled() {
        let hello = client_hello("records.example.org", &[]);
        // Re-frame the handshake message into two records, as some clients and middleboxes do.
        let body = &hello[5..];
        let (a, b) = body.split_at(body.len() / 2);
        let mut framed = Vec::new();
        for part in [a, b] {
            framed.extend_from_slice(&[0x16, 0x03, 0x01]);
            framed.extend_from_slice(&(part.len() as u16).to_be_bytes());
            framed.extend_from_slice(part);
        }
        match read_client_hello(&framed) {
            Ok(HelloStatus::Complete(info)) => {
                assert_eq!(info.server_name.as_deref(), Some("records.example.org"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn plain_http_is_not_tls() {
        assert!(matches!(
            read_client_hello(b"GET / HTTP/1.1\r\n"),
            Err(HelloError::NotTls(_))
        ));
        assert_eq!(read_client_hello(b""), Ok(HelloStatus::NeedMore));
    }

    #[test]
    fn garbage_after_a_handshake_header_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let hello = client_hello("fuzz.example", &[b"x"]);
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = hello.clone();
            let at = (seed as usize) % bytes.len();
            bytes[at] = (seed >> 32) as u8;
            bytes.truncate(((seed >> 16) as usize) % (bytes.len() + 1));
            let _ = read_client_hello(&bytes);
        }
    }
}
