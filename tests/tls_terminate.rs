//! TLS termination through the real binary: certificate choice by SNI (exact, wildcard,
//! default) verified by a rustls client, `openssl s_client` with TLS 1.3 and 1.2, plaintext
//! reaching the target, the kTLS/userspace path reported and counted, and a certificate
//! swapped by reload without touching a live session, session resumption by tickets (TLS 1.3
//! and 1.2) on any shard, and an RSA certificate made by openssl.

use std::io::{Read, Write};

use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use shardgate_tests::backends::{CountingBackend, EchoBackend};
use shardgate_tests::{connect_from, free_port, Appliance};

struct TestCert {
    der: Vec<u8>,
    cert_path: String,
    key_path: String,
}

fn make_cert(dir: &Path, file: &str, names: &[&str]) -> TestCert {
    let certified = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("cert");
    let cert_path = dir.join(format!("{file}.crt"));
    let key_path = dir.join(format!("{file}.key"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    TestCert {
        der: certified.cert.der().to_vec(),
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
    }
}

/// Accepts any certificate and records which one the server presented.
#[derive(Debug)]
struct Recorder(std::sync::Mutex<Option<Vec<u8>>>, Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().expect("lock") = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects with SNI `name`, sends `payload`, returns (presented leaf DER, echoed bytes).
fn exchange(port: u16, name: &str, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder(std::sync::Mutex::new(None), provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).expect("client");
    let mut tcp = connect_from("127.0.0.1", port).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(payload).expect("write through TLS");
    let mut echoed = vec![0u8; payload.len()];
    tls.read_exact(&mut echoed).expect("echo through TLS");
    let leaf = recorder.0.lock().expect("lock").clone().expect("a certificate was presented");
    (leaf, echoed)
}

fn config(port: u16, backend: u16, certs: &[(&str, &TestCert, bool)], pinned: Option<&str>) -> String {
    let mut text = String::new();
    for (name, cert, default) in certs {
        text.push_str(&format!(
            "[[certificates]]\nname = \"{name}\"\ncert = \"{}\"\nkey = \"{}\"\ndefault = {default}\n\n",
            cert.cert_path, cert.key_path
        ));
    }
    let cert_line = pinned.map(|p| format!(", certificate = \"{p}\"")).unwrap_or_default();
    text.push_str(&format!(
        "[[routes]]\nname = \"secure\"\nmatch = {{ ports = {port} }}\n\
         action = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {backend} }}], tls = {{ mode = \"terminate\"{cert_line} }} }}\n"
    ));
    text
}

#[test]
fn certificate_is_chosen_by_sni_and_plaintext_reaches_the_target() {
    let dir = tempfile::tempdir().expect("dir");
    let exact = make_cert(dir.path(), "exact", &["api.example.test"]);
    let wild = make_cert(dir.path(), "wild", &["*.example.test"]);
    let fallback = make_cert(dir.path(), "fallback", &["fallback.test"]);
    let backend = EchoBackend::start();
    let port = free_port();
    let app = Appliance::start(
        &config(port, backend.port, &[("exact", &exact, false), ("wild", &wild, false), ("fallback", &fallback, true)], None),
        port,
    );
    let (leaf, echoed) = exchange(port, "api.example.test", b"exact please");
    assert_eq!(leaf, exact.der);
    assert_eq!(echoed, b"exact please");
    let (leaf, _) = exchange(port, "www.example.test", b"w");
    assert_eq!(leaf, wild.der);
    let (leaf, _) = exchange(port, "unknown.other", b"d");
    assert_eq!(leaf, fallback.der);
    // The start-up log says which TLS path the kernel allows, once.
    assert_eq!(app.log().matches("kTLS: ").count(), 1, "{}", app.log());
    let stats = app.stats();
    let route = &stats["routes"]["secure"];
    assert_eq!(route["tls_handshakes"], 3, "{stats}");
    let offloaded = route["ktls_sessions"].as_u64().unwrap_or(0) + route["userspace_tls_sessions"].as_u64().unwrap_or(0);
    assert_eq!(offloaded, 3, "every session is counted on one path: {stats}");
    if app.log().contains("kTLS: unavailable") {
        assert_eq!(route["userspace_tls_sessions"], 3, "{stats}");
    }
}

fn openssl_echo(port: u16, extra: &[&str], line: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "api.example.test", "-quiet"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
        if byte[0] == b'\n' {
            break;
        }
        got.push(byte[0]);
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn openssl_s_client_tls13_and_tls12() {
    let dir = tempfile::tempdir().expect("dir");
    let exact = make_cert(dir.path(), "exact", &["api.example.test"]);
    let backend = EchoBackend::start();
    let port = free_port();
    let _app = Appliance::start(&config(port, backend.port, &[("exact", &exact, true)], Some("exact")), port);
    assert_eq!(openssl_echo(port, &["-tls1_3"], "over tls13"), "over tls13");
    assert_eq!(openssl_echo(port, &["-tls1_2"], "over tls12"), "over tls12");
}

#[test]
fn reload_swaps_the_certificate_for_new_sessions_only() {
    let dir = tempfile::tempdir().expect("dir");
    let first = make_cert(dir.path(), "first", &["api.example.test"]);
    let second = make_cert(dir.path(), "second", &["api.example.test"]);
    let backend = EchoBackend::start();
    let port = free_port();
    let app = Appliance::start(&config(port, backend.port, &[("site", &first, true)], None), port);
    assert_eq!(exchange(port, "api.example.test", b"1").0, first.der);
    app.rewrite_config(&config(port, backend.port, &[("site", &second, true)], None));
    app.reload();
    assert_eq!(exchange(port, "api.example.test", b"2").0, second.der);
}

#[test]
fn a_plaintext_client_on_a_tls_port_is_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let exact = make_cert(dir.path(), "exact", &["api.example.test"]);
    let backend = EchoBackend::start();
    let port = free_port();
    let app = Appliance::start(&config(port, backend.port, &[("exact", &exact, true)], None), port);
    let mut s = connect_from("127.0.0.1", port).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.windows(4).any(|w| w == b"GET "), "plaintext must never reach the target");
    assert_eq!(backend.accepted(), 0);
    let stats = app.stats();
    assert_eq!(stats["routes"]["secure"]["tls_failures"], 1, "{stats}");
}

#[test]
fn megabytes_from_the_client_arrive_whole_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let exact = make_cert(dir.path(), "exact", &["api.example.test"]);
    let backend = CountingBackend::start();
    let port = free_port();
    let _app = Appliance::start(&config(port, backend.port, &[("exact", &exact, true)], None), port);
    let payload: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let expected_sum = payload.iter().fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder(std::sync::Mutex::new(None), provider.clone()));
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("api.example.test").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
    let mut tcp = connect_from("127.0.0.1", port).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(&payload).expect("send 12 MiB through TLS");
    }
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut tcp).expect("flush");
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    assert_eq!(answer, format!("{} {expected_sum}\n", payload.len()));
}

/// One TLS exchange with `config` (its session store keeps tickets between calls); returns
/// how the handshake went and the echoed bytes.
fn exchange_with(config: &Arc<rustls::ClientConfig>, port: u16, payload: &[u8]) -> (Option<rustls::HandshakeKind>, Vec<u8>) {
    let server_name = rustls::pki_types::ServerName::try_from("api.example.test").expect("name");
    let mut conn = rustls::ClientConnection::new(config.clone(), server_name).expect("client");
    let mut tcp = connect_from("127.0.0.1", port).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(payload).expect("write through TLS");
    let mut echoed = vec![0u8; payload.len()];
    tls.read_exact(&mut echoed).expect("echo through TLS");
    (conn.handshake_kind(), echoed)
}

fn trusting_client(cert_der: &[u8], versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert_der.to_vec())).expect("root");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[test]
fn sessions_resume_with_tickets_over_tls13_and_tls12_on_any_shard() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = make_cert(dir.path(), "exact", &["api.example.test"]);
    let backend = EchoBackend::start();
    let port = free_port();
    let app = Appliance::start(&config(port, backend.port, &[("exact", &cert, true)], None), port);
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let client = trusting_client(&cert.der, versions);
        let (kind, echoed) = exchange_with(&client, port, b"first");
        assert_eq!((kind, echoed.as_slice()), (Some(rustls::HandshakeKind::Full), &b"first"[..]));
        // Later connections resume with the ticket, whichever shard accepts them (every
        // shard holds the same ticket keys).
        for round in 0..6 {
            let (kind, echoed) = exchange_with(&client, port, b"again");
            assert_eq!(echoed, b"again");
            assert_eq!(kind, Some(rustls::HandshakeKind::Resumed), "{versions:?} round {round} did not resume");
        }
    }
    let stats = app.stats();
    assert_eq!(stats["routes"]["secure"]["tls_handshakes"], 14, "{stats}");
}

#[test]
fn an_rsa_certificate_from_openssl_is_served() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert_path, key_path) = (dir.path().join("rsa.crt"), dir.path().join("rsa.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=api.example.test"])
        .args(["-addext", "subjectAltName=DNS:api.example.test", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .output()
        .expect("openssl req");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let pem = std::fs::read(&cert_path).expect("cert");
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next().expect("a certificate").expect("PEM");
    let cert = TestCert {
        der: der.to_vec(),
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
    };
    let backend = EchoBackend::start();
    let port = free_port();
    let _app = Appliance::start(&config(port, backend.port, &[("rsa", &cert, true)], None), port);
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let (kind, echoed) = exchange_with(&trusting_client(&cert.der, versions), port, b"rsa");
        assert_eq!((kind, echoed.as_slice()), (Some(rustls::HandshakeKind::Full), &b"rsa"[..]));
    }
    assert_eq!(openssl_echo(port, &["-tls1_2", "-sigalgs", "RSA-PSS+SHA256"], "pss"), "pss");
}
