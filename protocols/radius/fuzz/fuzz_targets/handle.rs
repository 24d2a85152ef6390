//! Fuzzes the whole request handler (framing, authenticators, MAB, accounting) on both ports.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use shardgate_radius::config::{ClientConfig, RadiusConfig};
use shardgate_radius::policy::Policy;
use shardgate_radius::server::{PortKind, RadiusServer};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut config = RadiusConfig::default();
        config.require_message_authenticator = false;
        config.clients.push(ClientConfig { name: "fuzz".into(), source: "127.0.0.1".into(), secret: "s".into() });
        config.mac_auth.allowed.push("*".into());
        Policy::from_config(&config).expect("static fuzz policy is valid")
    })
}

fuzz_target!(|datagram: &[u8]| {
    let mut server = RadiusServer::default();
    let mut out = Vec::new();
    let source = "127.0.0.1:1000".parse().expect("literal address");
    for port in [PortKind::Auth, PortKind::Acct] {
        server.handle(policy(), source, datagram, Instant::now(), port, &mut out);
    }
});
