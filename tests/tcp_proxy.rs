//! Plain TCP forwarding through the real binary: echo, bulk bytes with half-close, IP rules,
//! round-robin spread, failover, PROXY v1 and v2, reject and unrouted ports, max_connections.

use std::io::{Read, Write};
use std::time::Duration;

use shardgate_tests::backends::{EchoBackend, ProxyHeaderBackend};
use shardgate_tests::{closed_without_reply, connect_from, echo_roundtrip, free_port, Appliance};

fn forward_route(name: &str, port: u16, targets: &[u16], extra_action: &str, extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|p| format!("{{ host = \"127.0.0.1\", port = {p} }}")).collect();
    format!(
        "[[routes]]\nname = \"{name}\"\n{extra}\nmatch = {{ ports = {port} }}\n[routes.action]\ntype = \"forward\"\ntargets = [{}]\n{extra_action}\n",
        targets.join(", ")
    )
}

#[test]
fn bulk_bytes_are_relayed_exactly_with_half_close() {
    let backend = EchoBackend::start();
    let port = free_port();
    let app = Appliance::start(&forward_route("echo", port, &[backend.port], "", ""), port);
    // 16 MiB pattern, echoed back through the proxy; the half-close must come through.
    let payload: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let back = echo_roundtrip(connect_from("127.0.0.1", port).expect("connect"), &payload).expect("roundtrip");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "relayed bytes differ");
    let stats = app.stats();
    let route = &stats["routes"]["echo"];
    assert!(route["bytes_upstream"].as_u64().unwrap_or(0) >= payload.len() as u64, "{stats}");
    assert!(route["bytes_downstream"].as_u64().unwrap_or(0) >= payload.len() as u64, "{stats}");
}

#[test]
fn ip_allow_and_block_are_enforced() {
    let backend = EchoBackend::start();
    let port = free_port();
    let security = "[routes.security]\nip_allow = [\"127.0.0.0/24\"]\nip_block = [\"127.0.0.3\"]";
    let app = Appliance::start(&forward_route("guarded", port, &[backend.port], security, ""), port);
    let ok = echo_roundtrip(connect_from("127.0.0.2", port).expect("connect"), b"allowed").expect("allowed client");
    assert_eq!(ok, b"allowed");
    assert!(closed_without_reply(connect_from("127.0.0.3", port).expect("connect")), "blocked client got through");
    assert!(closed_without_reply(connect_from("127.0.1.1", port).expect("connect")), "client outside ip_allow got through");
    let stats = app.stats();
    assert_eq!(stats["routes"]["guarded"]["refused"], 2, "{stats}");
}

#[test]
fn round_robin_spreads_and_failover_skips_a_dead_target() {
    let a = EchoBackend::start_tagged(Some("a"));
    let b = EchoBackend::start_tagged(Some("b"));
    let dead = free_port();
    let port = free_port();
    let failover_port = free_port();
    let mut config = forward_route("spread", port, &[a.port, b.port], "", "");
    config.push_str(&forward_route("failover", failover_port, &[dead, b.port], "", ""));
    let app = Appliance::start(&config, port);
    let before = (a.accepted(), b.accepted());
    for _ in 0..10 {
        let reply = echo_roundtrip(connect_from("127.0.0.1", port).expect("connect"), b"x").expect("roundtrip");
        assert!(reply == b"a\nx" || reply == b"b\nx", "unexpected {reply:?}");
    }
    let (got_a, got_b) = (a.accepted() - before.0, b.accepted() - before.1);
    assert_eq!(got_a + got_b, 10);
    // Each shard alternates; whatever the kernel's shard spread, each target gets >= 4 of 10.
    assert!(got_a >= 4 && got_b >= 4, "uneven spread a={got_a} b={got_b}");
    for _ in 0..4 {
        let reply = echo_roundtrip(connect_from("127.0.0.1", failover_port).expect("connect"), b"y").expect("failover");
        assert_eq!(reply, b"b\ny");
    }
    let stats = app.stats();
    assert!(stats["routes"]["failover"]["failovers"].as_u64().unwrap_or(0) >= 2, "{stats}");
    assert_eq!(stats["routes"]["failover"]["connect_failed"], 0, "{stats}");
}

#[test]
fn all_targets_down_closes_the_client() {
    let port = free_port();
    let app = Appliance::start(&forward_route("down", port, &[free_port(), free_port()], "connect_timeout = \"1s\"", ""), port);
    assert!(closed_without_reply(connect_from("127.0.0.1", port).expect("connect")));
    let stats = app.stats();
    assert_eq!(stats["routes"]["down"]["connect_failed"], 1, "{stats}");
}

#[test]
fn proxy_v1_and_v2_headers_carry_the_real_client() {
    for (version, source) in [("v2", "127.0.0.5"), ("v1", "127.0.0.6")] {
        let backend = ProxyHeaderBackend::start();
        let port = free_port();
        let _app = Appliance::start(&forward_route("pp", port, &[backend.port], &format!("proxy_protocol = \"{version}\""), ""), port);
        let stream = connect_from(source, port).expect("connect");
        let client = stream.local_addr().expect("local");
        // The client's bytes follow the header directly.
        let reply = echo_roundtrip(stream, b"after header").expect("roundtrip");
        assert_eq!(reply, b"after header", "PROXY {version}");
        let sources = backend.sources.lock().expect("lock").clone();
        assert_eq!(sources, vec![client], "PROXY {version}");
    }
}

#[test]
fn reject_routes_and_unrouted_ports_close_at_once() {
    let backend = EchoBackend::start();
    let port = free_port();
    let reject_port = free_port();
    let mut config = forward_route("open", port, &[backend.port], "", "");
    config.push_str(&format!(
        "[[routes]]\nname = \"deny-office\"\npriority = 5\nmatch = {{ ports = {port}, client_ip = \"127.0.0.9\" }}\naction = {{ type = \"reject\" }}\n\
         [[routes]]\nname = \"closed\"\nmatch = {{ ports = {reject_port} }}\naction = {{ type = \"reject\" }}\n"
    ));
    let app = Appliance::start(&config, port);
    assert!(closed_without_reply(connect_from("127.0.0.1", reject_port).expect("connect")));
    assert!(closed_without_reply(connect_from("127.0.0.9", port).expect("connect")));
    assert_eq!(echo_roundtrip(connect_from("127.0.0.8", port).expect("connect"), b"ok").expect("open"), b"ok");
    let stats = app.stats();
    assert_eq!(stats["routes"]["closed"]["rejected"], 1, "{stats}");
    assert_eq!(stats["routes"]["deny-office"]["rejected"], 1, "{stats}");
}

#[test]
fn max_connections_and_idle_timeout() {
    let backend = EchoBackend::start();
    let port = free_port();
    // 2 shards share max_connections = 2: one per shard. Hold connections open and count
    // how many of 6 are relayed; at most 2 can be.
    let app = Appliance::start(
        &forward_route("limited", port, &[backend.port], "max_connections = 2\nidle_timeout = \"2s\"", ""),
        port,
    );
    let mut held = Vec::new();
    let mut relayed = 0;
    for _ in 0..6 {
        let mut s = connect_from("127.0.0.1", port).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        s.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        if matches!(s.read(&mut buf), Ok(4)) {
            relayed += 1;
        }
        held.push(s);
    }
    assert!((1..=2).contains(&relayed), "relayed {relayed} connections with max_connections = 2");
    // Idle: the held connections are closed by the proxy after 2s without traffic.
    std::thread::sleep(Duration::from_millis(2600));
    for s in held.iter_mut() {
        let mut buf = [0u8; 4];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "an idle connection stayed open");
    }
    let stats = app.stats();
    let limited = stats["routes"]["limited"]["limited"].as_u64().unwrap_or(0);
    assert_eq!(limited, 6 - relayed as u64, "{stats}");
    assert_eq!(stats["routes"]["limited"]["idle_timeouts"].as_u64(), Some(relayed as u64), "{stats}");
}

#[test]
fn a_client_reset_reaches_the_target_as_a_reset() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend_port = listener.local_addr().expect("addr").port();
    let port = free_port();
    let _app = Appliance::start(&forward_route("abort", port, &[backend_port], "", ""), port);
    let mut outcomes = Vec::new();
    for close_abortively in [false, true] {
        let mut client = connect_from("127.0.0.1", port).expect("connect");
        client.write_all(b"ping").expect("write");
        let (mut served, _) = listener.accept().expect("accept");
        served.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 4];
        served.read_exact(&mut buf).expect("relayed bytes");
        served.write_all(b"pong").expect("answer");
        client.read_exact(&mut buf).expect("answer relayed");
        if close_abortively {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: setsockopt with a live linger struct on an open socket.
            unsafe {
                use std::os::fd::AsRawFd;
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
        drop(client);
        outcomes.push(served.read(&mut buf).map_err(|e| e.kind()));
    }
    // An orderly close arrives as EOF, a reset as a reset (HAProxy passes aborts on the same way).
    assert_eq!(outcomes, vec![Ok(0), Err(std::io::ErrorKind::ConnectionReset)]);
}
