//! Real backends on loopback: echo servers (optionally tagged), a PROXY-header recorder and
//! TLS servers with their own certificates. Each runs on its own threads and counts accepts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An echo server; if `tag` is set it first sends `tag\n`, then echoes.
pub struct EchoBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    accepted: Arc<AtomicUsize>,
}

impl EchoBackend {
    /// Starts a plain echo server.
    pub fn start() -> EchoBackend {
        Self::start_tagged(None)
    }

    /// Starts an echo server that announces `tag` first.
    pub fn start_tagged(tag: Option<&str>) -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let tag = tag.map(|t| format!("{t}\n"));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                counter.fetch_add(1, Ordering::SeqCst);
                let tag = tag.clone();
                std::thread::spawn(move || echo(stream, tag));
            }
        });
        EchoBackend { port, accepted }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn echo(mut stream: TcpStream, tag: Option<String>) {
    if let Some(tag) = tag {
        if stream.write_all(tag.as_bytes()).is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A backend that reads until EOF and then answers with the number of bytes it got and a
/// checksum (`<count> <sum of bytes mod 2^32>\n`), then closes.
pub struct CountingBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl CountingBackend {
    /// Starts the counter.
    pub fn start() -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    let (mut count, mut sum) = (0u64, 0u32);
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        count += n as u64;
                        sum = buf[..n].iter().fold(sum, |s, b| s.wrapping_add(u32::from(*b)));
                    }
                    let _ = stream.write_all(format!("{count} {sum}\n").as_bytes());
                });
            }
        });
        CountingBackend { port }
    }
}

/// A backend that expects a PROXY v1 or v2 header, records the client address it names,
/// then echoes.
pub struct ProxyHeaderBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The source addresses read from headers, in order.
    pub sources: Arc<Mutex<Vec<SocketAddr>>>,
}

impl ProxyHeaderBackend {
    /// Starts the recorder.
    pub fn start() -> ProxyHeaderBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let record = sources.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let record = record.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let Some(source) = read_proxy_header_source(&mut stream) else { return };
                    if let Ok(mut s) = record.lock() {
                        s.push(source);
                    }
                    echo(stream, None);
                });
            }
        });
        ProxyHeaderBackend { port, sources }
    }
}

/// Reads a PROXY header (v1 text line or v2 binary block) off `stream`; the client's source
/// address, or `None` when it is missing or malformed.
fn read_proxy_header_source(stream: &mut TcpStream) -> Option<SocketAddr> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed[..5]).ok()?;
    if &fixed[..5] == b"PROXY" {
        // v1: one text line ending in CRLF (at most 107 bytes).
        let mut line = b"PROXY".to_vec();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() <= 107 {
            stream.read_exact(&mut byte).ok()?;
            line.push(byte[0]);
        }
        let header = ppp::v1::Header::try_from(std::str::from_utf8(&line).ok()?).ok()?;
        return match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            _ => None,
        };
    }
    // v2: 16-byte fixed part, then `len` bytes of addresses.
    stream.read_exact(&mut fixed[5..]).ok()?;
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut whole = fixed.to_vec();
    whole.resize(16 + len, 0);
    stream.read_exact(&mut whole[16..]).ok()?;
    let header = ppp::v2::Header::try_from(whole.as_slice()).ok()?;
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    }
}

/// A TLS server for `name` (self-signed certificate) that answers `backend:<name>\n` after
/// the handshake and then echoes decrypted bytes.
pub struct TlsBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The certificate (DER) clients can trust.
    pub cert_der: Vec<u8>,
}

impl TlsBackend {
    /// Starts the server.
    pub fn start(name: &str) -> TlsBackend {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        let cert_der = certified.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![rustls::pki_types::CertificateDer::from(cert_der.clone())], key)
            .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let greeting = format!("backend:{name}\n");
        std::thread::spawn(move || {
            for mut tcp in listener.incoming().map_while(Result::ok) {
                let config = config.clone();
                let greeting = greeting.clone();
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(mut conn) = rustls::ServerConnection::new(config) else { return };
                    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                    if tls.write_all(greeting.as_bytes()).is_err() {
                        return;
                    }
                    let _ = tls.flush();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = tls.read(&mut buf) {
                        if n == 0 || tls.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TlsBackend { port, cert_der }
    }
}

/// A rustls client config trusting exactly `cert_der`.
pub fn client_config_trusting(cert_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert_der.to_vec())).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The Python HTTP/1.1 test backend (`tests/support/http_backend.py`: echo as JSON, chunked,
/// close-delimited, slow, garbage, big and WebSocket-like answers), stopped on drop.
pub struct HttpBackend {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: std::process::Child,
}

impl HttpBackend {
    /// Starts a backend that tags its answers with `X-Backend: tag`.
    pub fn start(tag: &str) -> HttpBackend {
        use std::io::BufRead;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("support").join("http_backend.py");
        let port = crate::free_port();
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(tag)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3 runs the HTTP test backend");
        let stdout = child.stdout.take().expect("backend stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("backend says it listens");
        assert_eq!(line.trim(), "listening", "HTTP backend did not start");
        HttpBackend { port, child }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes, half-closes after `half_close`, and reads the answer until the server
/// closes or `wait` passes without bytes.
pub fn raw_exchange(port: u16, request: &[u8], half_close: bool, wait: std::time::Duration) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(request).expect("write request");
    if half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}
