//! Driving a rustls server handshake over a glommio socket, one TLS record at a time.
//!
//! rustls is sans-I/O (`read_tls`/`process_new_packets`/`write_tls`); this module moves its
//! bytes. Records are read *exactly* (5-byte header, then the body it announces), never
//! more: when the handshake completes, nothing after the client's Finished has been taken
//! from the socket and nothing sits half-parsed inside rustls. That is what makes handing
//! the session to the kernel (kTLS) safe — the kernel continues at the very next record.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// The largest TLS record body we accept (2^14 plus the maximum expansion).
const MAX_RECORD_BODY: usize = 16384 + 2048;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer broke the TLS protocol or no certificate/version/cipher fits.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The socket failed or closed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The client took longer than the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// A record header announced an impossible length.
    #[error("TLS record of {0} bytes is larger than allowed")]
    RecordTooLarge(usize),
    /// A CA completed a TLS-ALPN-01 validation handshake (ALPN `acme-tls/1`); the
    /// connection is closed without reaching a backend.
    #[error("ACME TLS-ALPN-01 validation handshake answered")]
    AcmeValidation,
    /// The bytes are not TLS records at all (e.g. plain HTTP on a TLS port).
    #[error("not TLS: record header {0:02x?}")]
    NotTls([u8; 3]),
}

/// Reads whole TLS records: first from bytes already read (the ClientHello the router
/// looked at), then from the socket.
struct RecordReader {
    pending: Vec<u8>,
}

impl RecordReader {
    async fn next_record(&mut self, stream: &mut TcpStream) -> Result<Vec<u8>, HandshakeError> {
        self.fill(stream, 5).await?;
        // Content type 20-23 (change_cipher_spec, alert, handshake, application_data) and a
        // 3.x record version, or this is not TLS: fail now instead of waiting for a body.
        let header = [self.pending[0], self.pending[1], self.pending[2]];
        if !(20..=23).contains(&header[0]) || header[1] != 3 {
            return Err(HandshakeError::NotTls(header));
        }
        let body = usize::from(u16::from_be_bytes([self.pending[3], self.pending[4]]));
        if body > MAX_RECORD_BODY {
            return Err(HandshakeError::RecordTooLarge(body));
        }
        self.fill(stream, 5 + body).await?;
        let rest = self.pending.split_off(5 + body);
        Ok(std::mem::replace(&mut self.pending, rest))
    }

    async fn fill(&mut self, stream: &mut TcpStream, wanted: usize) -> Result<(), HandshakeError> {
        while self.pending.len() < wanted {
            let have = self.pending.len();
            self.pending.resize(wanted, 0);
            let n = stream.read(&mut self.pending[have..]).await?;
            self.pending.truncate(have + n);
            if n == 0 {
                return Err(HandshakeError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "client closed during the TLS handshake")));
            }
        }
        Ok(())
    }
}

/// Writes everything rustls has queued.
pub(crate) async fn flush(conn: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<()> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

/// A completed handshake.
pub struct Established {
    /// The session.
    pub conn: ServerConnection,
    /// Encrypted bytes read past the last handshake record (normally none); they must be fed
    /// to rustls before anything else, and rule out the kernel offload.
    pub leftover: Vec<u8>,
}

/// Completes a server handshake on `stream`. `already_read` holds bytes the router read
/// from the client first (its ClientHello). On return, every byte rustls wanted to send
/// (including TLS 1.3 session tickets) has been written.
pub async fn accept(
    stream: &mut TcpStream,
    config: Arc<ServerConfig>,
    already_read: Vec<u8>,
    timeout: Duration,
) -> Result<Established, HandshakeError> {
    let handshake_started = std::time::Instant::now();
    let mut reader = RecordReader { pending: already_read };
    let handshake = async {
        let mut conn = start_connection(stream, &mut reader, config).await?;
        loop {
            flush(&mut conn, stream).await?;
            if !conn.is_handshaking() {
                return Ok(conn);
            }
            let record = reader.next_record(stream).await?;
            conn.read_tls(&mut record.as_slice())?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the client why (the alert rustls queued), then fail.
                let _ = flush(&mut conn, stream).await;
                return Err(HandshakeError::Tls(e));
            }
        }
    };
    let deadline = async {
        glommio::timer::sleep(timeout).await;
        Err(HandshakeError::Timeout)
    };
    let conn = future::or(handshake, deadline).await?;
    if conn.alpn_protocol() == Some(crate::acme::tls_alpn::ACME_TLS_ALPN) {
        // A CA validating TLS-ALPN-01 has seen our challenge certificate; such a connection
        // carries no data (RFC 8737 §3) and must not reach a backend.
        return Err(HandshakeError::AcmeValidation);
    }
    crate::latency::record_since(crate::latency::Operation::TlsHandshake, handshake_started);
    Ok(Established { conn, leftover: reader.pending })
}

/// Reads the ClientHello and starts the server connection. A ClientHello offering ALPN
/// `acme-tls/1` (a CA validating TLS-ALPN-01) gets a copy of `config` that negotiates exactly
/// that protocol, as RFC 8737 requires; the resolver then serves the challenge certificate.
async fn start_connection(
    stream: &mut TcpStream,
    reader: &mut RecordReader,
    config: Arc<ServerConfig>,
) -> Result<ServerConnection, HandshakeError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let accepted = loop {
        let record = reader.next_record(stream).await?;
        acceptor.read_tls(&mut record.as_slice())?;
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = stream.write_all(&out).await;
                return Err(HandshakeError::Tls(e));
            }
        }
    };
    let config = if crate::tls::store::offers_acme_tls(&accepted.client_hello()) {
        let mut challenge = (*config).clone();
        challenge.alpn_protocols = vec![crate::acme::tls_alpn::ACME_TLS_ALPN.to_vec()];
        Arc::new(challenge)
    } else {
        config
    };
    match accepted.into_connection(config) {
        Ok(conn) => Ok(conn),
        Err((e, mut alert)) => {
            let mut out = Vec::new();
            let _ = alert.write_all(&mut out);
            let _ = stream.write_all(&out).await;
            Err(HandshakeError::Tls(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn server_config() -> (Arc<ServerConfig>, Vec<u8>) {
        let certified = rcgen::generate_simple_self_signed(vec!["hs.test".to_string()]).expect("cert");
        let der = certified.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![rustls::pki_types::CertificateDer::from(der.clone())], key)
            .expect("config");
        config.enable_secret_extraction = true;
        (Arc::new(config), der)
    }

    /// A rustls client thread: connects to `addr`, trusts `der`, sends `payload`, returns
    /// the first `N` bytes of the reply.
    fn client<const N: usize>(addr: std::net::SocketAddr, der: Vec<u8>, payload: &'static [u8]) -> std::thread::JoinHandle<[u8; N]> {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::CertificateDer::from(der)).expect("root");
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let mut conn = rustls::ClientConnection::new(Arc::new(config), "hs.test".try_into().expect("name")).expect("client");
            let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            tls.write_all(payload).expect("write");
            let mut reply = [0u8; N];
            tls.read_exact(&mut reply).expect("reply");
            reply
        })
    }

    #[test]
    fn completes_a_handshake_and_leaves_the_first_application_record_unread() {
        let (config, der) = server_config();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let client = client::<5>(addr, der, b"first request");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("bind");
                let mut stream = listener.accept().await.expect("accept");
                let Established { mut conn, leftover } =
                    accept(&mut stream, config, Vec::new(), Duration::from_secs(5)).await.expect("handshake");
                assert!(!conn.is_handshaking());
                assert!(leftover.is_empty(), "nothing past the handshake may be buffered");
                // The application record is still in the socket: read it now through rustls.
                let mut reader = RecordReader { pending: Vec::new() };
                let record = reader.next_record(&mut stream).await.expect("app record");
                conn.read_tls(&mut record.as_slice()).expect("read_tls");
                conn.process_new_packets().expect("process");
                let mut plain = vec![0u8; 64];
                let n = std::io::Read::read(&mut conn.reader(), &mut plain).expect("plaintext");
                assert_eq!(&plain[..n], b"first request");
                conn.writer().write_all(b"reply").expect("write");
                flush(&mut conn, &mut stream).await.expect("flush");
            })
            .expect("executor")
            .join()
            .expect("join");
        assert_eq!(&client.join().expect("client"), b"reply");
    }

    #[test]
    fn userspace_relay_carries_plaintext_both_ways() {
        let (config, der) = server_config();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let backend = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let backend_addr = backend.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut s, _) = backend.accept().expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).expect("read");
            s.write_all(&buf).expect("echo");
        });
        let client = client::<5>(addr, der, b"hello");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("bind");
                let mut stream = listener.accept().await.expect("accept");
                let Established { conn, leftover } =
                    accept(&mut stream, config, Vec::new(), Duration::from_secs(5)).await.expect("handshake");
                let mut target = TcpStream::connect(backend_addr).await.expect("target");
                let end = crate::tls::relay::relay_userspace(&mut stream, conn, leftover, &mut target, Duration::from_secs(3), |_| {}, |_| {}).await;
                assert!(matches!(end, crate::relay::RelayEnd::Closed), "{end:?}");
            })
            .expect("executor")
            .join()
            .expect("join");
        assert_eq!(&client.join().expect("client"), b"hello");
    }

    #[test]
    fn acme_tls_alpn_handshakes_negotiate_acme_tls_1_get_the_challenge_certificate_and_end() {
        use crate::tls::store::CertificateStore;
        let challenge = crate::acme::tls_alpn::challenge_certificate("hs.test", &[9; 32]).expect("challenge");
        let challenge_der = challenge.cert[0].to_vec();
        let store = Arc::new(CertificateStore::default().merged(&[], std::collections::HashMap::from([("hs.test".to_string(), challenge)])));
        let shared = crate::tls::TlsShared::new(std::sync::Arc::new(crate::tls::tickets::TicketKeys::first().expect("keys")));
        let config = crate::tls::server_config(&store, None, &[], &shared).expect("server config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        // The CA's side: offers only acme-tls/1 and checks the certificate itself (a CA's
        // validator accepts the critical acmeIdentifier extension that WebPKI refuses).
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChallengeValidator(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
            let mut conn = rustls::ClientConnection::new(Arc::new(config), "hs.test".try_into().expect("name")).expect("client");
            let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).expect("handshake");
            }
            let served = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            (conn.alpn_protocol().map(<[u8]>::to_vec), served == Some(challenge_der))
        });
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("bind");
                let mut stream = listener.accept().await.expect("accept");
                let outcome = accept(&mut stream, config, Vec::new(), Duration::from_secs(5)).await;
                assert!(matches!(outcome, Err(HandshakeError::AcmeValidation)), "{:?}", outcome.err());
            })
            .expect("executor")
            .join()
            .expect("join");
        let (alpn, challenge_served) = client.join().expect("client");
        assert_eq!(alpn.as_deref(), Some(&b"acme-tls/1"[..]));
        assert!(challenge_served, "the challenge certificate was served");
    }

    /// Accepts the server's certificate and signatures unchecked: WebPKI refuses the critical
    /// acmeIdentifier extension (a CA's validator does not); the test compares the certificate
    /// bytes afterwards.
    #[derive(Debug)]
    struct ChallengeValidator(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for ChallengeValidator {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
