//! TLS passthrough routed on SNI: `openssl s_client -servername` and a rustls client whose
//! ClientHello is split over several TCP segments; the backend's own certificate must come
//! through untouched (the proxy never decrypts).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use shardgate_tests::backends::{client_config_trusting, EchoBackend, TlsBackend};
use shardgate_tests::{closed_without_reply, connect_from, echo_roundtrip, free_port, Appliance};

fn config(port: u16, a: &TlsBackend, b: &TlsBackend, fallback: u16) -> String {
    format!(
        r#"
[[routes]]
name = "a"
priority = 10
match = {{ ports = {port}, domains = ["a.example.test"] }}
action = {{ type = "forward", targets = [{{ host = "127.0.0.1", port = {pa} }}], tls = {{ mode = "passthrough" }} }}

[[routes]]
name = "b-wild"
priority = 10
match = {{ ports = {port}, domains = ["*.b.example.test"] }}
action = {{ type = "forward", targets = [{{ host = "127.0.0.1", port = {pb} }}], tls = {{ mode = "passthrough" }} }}

[[routes]]
name = "fallback"
match = {{ ports = {port} }}
action = {{ type = "forward", targets = [{{ host = "127.0.0.1", port = {fallback} }}], tls = {{ mode = "passthrough" }} }}
"#,
        pa = a.port,
        pb = b.port
    )
}

fn openssl_greeting(port: u16, server_name: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", server_name, "-quiet", "-verify_quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client (install openssl)");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn openssl_s_client_is_routed_by_server_name() {
    let a = TlsBackend::start("a.example.test");
    let b = TlsBackend::start("x.b.example.test");
    let fallback = TlsBackend::start("fallback.test");
    let port = free_port();
    let app = Appliance::start(&config(port, &a, &b, fallback.port), port);
    assert_eq!(openssl_greeting(port, "a.example.test"), "backend:a.example.test");
    assert_eq!(openssl_greeting(port, "x.b.example.test"), "backend:x.b.example.test");
    assert_eq!(openssl_greeting(port, "other.test"), "backend:fallback.test");
    let stats = app.stats();
    assert_eq!(stats["routes"]["a"]["accepted"], 1, "{stats}");
    assert_eq!(stats["routes"]["b-wild"]["accepted"], 1, "{stats}");
}

#[test]
fn split_client_hello_still_routes_and_the_backend_certificate_verifies() {
    let a = TlsBackend::start("a.example.test");
    let b = TlsBackend::start("deep.b.example.test");
    let fallback = TlsBackend::start("fallback.test");
    let port = free_port();
    let _app = Appliance::start(&config(port, &a, &b, fallback.port), port);

    let client_config = client_config_trusting(&b.cert_der);
    let name = rustls::pki_types::ServerName::try_from("deep.b.example.test").expect("name");
    let mut conn = rustls::ClientConnection::new(client_config, name).expect("client");
    let mut tcp = connect_from("127.0.0.1", port).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // Send the ClientHello in 3 segments with pauses, as a slow or hostile client would.
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("hello");
    }
    let third = hello.len() / 3;
    for part in [&hello[..third], &hello[third..2 * third], &hello[2 * third..]] {
        tcp.write_all(part).expect("segment");
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut greeting = [0u8; 28];
    tls.read_exact(&mut greeting).expect("greeting through verified TLS");
    assert_eq!(&greeting, b"backend:deep.b.example.test\n");
    tls.write_all(b"ping").expect("write");
    let mut echo = [0u8; 4];
    tls.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"ping");
}

#[test]
fn non_tls_bytes_take_the_route_without_domains() {
    let backend = EchoBackend::start();
    let port = free_port();
    let a = TlsBackend::start("a.example.test");
    let b = TlsBackend::start("b.example.test");
    let app = Appliance::start(&config(port, &a, &b, backend.port), port);
    let reply = echo_roundtrip(connect_from("127.0.0.1", port).expect("connect"), b"GET / HTTP/1.0\r\n\r\n").expect("echo");
    assert_eq!(reply, b"GET / HTTP/1.0\r\n\r\n");
    let stats = app.stats();
    assert_eq!(stats["routes"]["fallback"]["accepted"], 1, "{stats}");
}

#[test]
fn a_client_that_never_finishes_its_hello_is_not_routed_to_a_domain_route() {
    let a = TlsBackend::start("a.example.test");
    let b = TlsBackend::start("b.example.test");
    let fallback = TlsBackend::start("fallback.test");
    let port = free_port();
    let app = Appliance::start(&config(port, &a, &b, fallback.port), port);
    // A TLS record header promising more than is sent, then EOF.
    let mut s = connect_from("127.0.0.1", port).expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).expect("partial hello");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert!(closed_without_reply(s));
    let stats = app.stats();
    assert_eq!(stats["shards"].as_array().map(|a| a.iter().map(|s| s["bad_client_hello"].as_u64().unwrap_or(0)).sum::<u64>()), Some(1), "{stats}");
}
