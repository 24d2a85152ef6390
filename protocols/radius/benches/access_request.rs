//! decode → policy → encode of a MAB Access-Request, as a shard runs it per datagram.
//!
//! `handle_access_request` is the full path (client lookup, framing, Message-Authenticator
//! HMAC, PAP unhiding, MAB + VLAN policy, reply encoding and signing, duplicate cache insert);
//! `decode_access_request` is the wire decoder alone.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_radius::auth;
use shardgate_radius::config::{ClientConfig, MacAuthConfig, RadiusConfig, UnknownMacAction, VlanRuleConfig};
use shardgate_radius::duplicate::DuplicateCache;
use shardgate_radius::packet::{Attribute, Code, Packet};
use shardgate_radius::policy::Policy;
use shardgate_radius::server::{Outcome, PortKind, RadiusServer};

const SECRET: &[u8] = b"bench-shared-secret";

fn policy() -> Policy {
    let config = RadiusConfig {
        clients: vec![ClientConfig { name: "switches".into(), source: "10.0.0.0/8".into(), secret: "bench-shared-secret".into() }],
        mac_auth: MacAuthConfig {
            enabled: true,
            allowed: vec!["00:11:22:*".into(), "aa:bb:cc:dd:ee:ff".into()],
            default_vlan: Some(10),
            unknown: UnknownMacAction::GuestVlan(999),
        },
        vlans: vec![VlanRuleConfig { mac: Some("00:11:22:33:*".into()), default: false, vlan: 20 }],
        ..RadiusConfig::default()
    };
    match Policy::from_config(&config) {
        Ok(policy) => policy,
        Err(err) => panic!("bench policy: {err}"),
    }
}

/// A Cisco-style MAB request: User-Name = User-Password = MAC, Calling-Station-Id, NAS info.
fn access_request(sequence: u32) -> Vec<u8> {
    let mut authenticator = [0x5au8; 16];
    authenticator[..4].copy_from_slice(&sequence.to_be_bytes());
    let mac = "001122334455";
    let hidden = auth::hide_password(mac.as_bytes(), SECRET, &authenticator).expect("short password");
    let packet = Packet {
        code: Code::AccessRequest,
        identifier: sequence as u8,
        authenticator,
        attributes: vec![
            Attribute::MessageAuthenticator([0; 16]),
            Attribute::UserName(mac.into()),
            Attribute::UserPassword(hidden),
            Attribute::CallingStationId("00-11-22-33-44-55".into()),
            Attribute::NasIpAddress("10.1.2.3".parse().expect("literal")),
            Attribute::NasPort(50101),
        ],
    };
    let mut bytes = Vec::new();
    packet.encode(&mut bytes).expect("small packet");
    auth::sign_request(&mut bytes, SECRET).expect("framed packet");
    bytes
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    // Distinct authenticators so every iteration is a fresh request, not a cache hit.
    let requests: Vec<Vec<u8>> = (0..1024).map(access_request).collect();
    let source: SocketAddr = "10.1.2.3:1645".parse().expect("literal");
    let mut group = c.benchmark_group("radius");
    group.throughput(Throughput::Elements(1));

    group.bench_function("decode_access_request", |b| {
        let mut index = 0;
        b.iter(|| {
            index = (index + 1) % requests.len();
            black_box(Packet::decode(black_box(&requests[index])))
        })
    });

    group.bench_function("handle_access_request", |b| {
        let mut server = RadiusServer::new(DuplicateCache::new(512, std::time::Duration::from_secs(30)));
        let mut out = Vec::with_capacity(4096);
        let mut index = 0;
        let now = Instant::now();
        b.iter(|| {
            index = (index + 1) % requests.len();
            let outcome = server.handle(&policy, source, black_box(&requests[index]), now, PortKind::Auth, &mut out);
            debug_assert!(matches!(outcome, Outcome::AccessAccept { .. } | Outcome::Retransmission));
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
