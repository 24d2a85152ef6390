//! Micro-benches of the per-connection decisions a shard makes before relaying: route
//! lookup (port, client, SNI) and reading the SNI from a ClientHello.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use shardgate_core::config::Config;
use shardgate_core::route::{RouteTable, ServerName};

fn table() -> RouteTable {
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npriority = {p}\nmatch = {{ ports = 443, domains = [\"svc{i}.example.com\", \"*.svc{i}.example.net\"] }}\n\
             action = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = 9000 }}], tls = {{ mode = \"passthrough\" }} }}\n",
            p = i % 3
        ));
    }
    text.push_str("[[routes]]\nname = \"default\"\npriority = -1\nmatch = { ports = 443 }\naction = { type = \"reject\" }\n");
    RouteTable::new(&Config::parse(&text, "bench.toml").expect("valid bench config"))
}

fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("svc150.example.com").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("hello");
    }
    out
}

fn routing(c: &mut Criterion) {
    let t = table();
    let client: IpAddr = "198.51.100.7".parse().expect("ip");
    c.bench_function("route_select_sni_200_routes", |b| {
        b.iter(|| t.select(black_box(443), black_box(client), ServerName::Read(Some(black_box("x.svc199.example.net")))))
    });
    let hello = client_hello();
    c.bench_function("client_hello_sni", |b| b.iter(|| shardgate_tls_hello::read_client_hello(black_box(&hello))));
}

criterion_group!(benches, routing);
criterion_main!(benches);
