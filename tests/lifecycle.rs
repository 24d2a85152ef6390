//! Hot reload (SIGHUP) under continuous traffic, refusal of a bad config, graceful stop
//! (SIGTERM) with draining, and `shardgate run` on the embedded default.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_tests::backends::EchoBackend;
use shardgate_tests::{connect_from, echo_roundtrip, free_port, shardgate_bin, Appliance};

fn route(name: &str, port: u16, target: u16) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ ports = {port} }}\naction = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {target} }}] }}\n"
    )
}

#[test]
fn sighup_reload_under_traffic_loses_no_connection_and_keeps_established_ones() {
    let old = EchoBackend::start_tagged(Some("old"));
    let new = EchoBackend::start_tagged(Some("new"));
    let port = free_port();
    let added_port = free_port();
    let app = Appliance::start(&route("web", port, old.port), port);

    // A long-lived connection opened before the reload.
    let mut established = connect_from("127.0.0.1", port).expect("connect");
    established.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut tag = [0u8; 4];
    established.read_exact(&mut tag).expect("tag");
    assert_eq!(&tag, b"old\n");

    // Continuous traffic from 4 clients during the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let result = connect_from("127.0.0.1", port).and_then(|s| echo_roundtrip(s, b"ping"));
                    match result {
                        Ok(reply) if reply == b"old\nping" || reply == b"new\nping" => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Reload 1: same port, new target, plus a new port.
    let mut next = route("web", port, new.port);
    next.push_str(&route("added", added_port, new.port));
    app.rewrite_config(&next);
    app.reload();
    std::thread::sleep(Duration::from_millis(300));
    // Reload 2: invalid config — refused, the running one keeps serving.
    app.rewrite_config("[[routes]]\nname = \"broken\"\nmatch = { ports = \"9-1\" }\n");
    app.reload();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    assert!(app.log().contains("reload refused"), "{}", app.log());
    assert!(app.log().contains("route `broken`: match.ports: range 9-1 is reversed"), "{}", app.log());
    assert_eq!(failed.load(Ordering::SeqCst), 0, "connections failed during reload ({} ok)", ok.load(Ordering::SeqCst));
    assert!(ok.load(Ordering::SeqCst) > 20, "too little traffic during the test");

    // New connections use the new route, on the kept port and on the added one.
    let reply = echo_roundtrip(connect_from("127.0.0.1", port).expect("connect"), b"x").expect("new route");
    assert_eq!(reply, b"new\nx");
    let reply = echo_roundtrip(connect_from("127.0.0.1", added_port).expect("connect"), b"y").expect("added port");
    assert_eq!(reply, b"new\ny");
    // The established connection still reaches the old backend.
    established.write_all(b"still here").expect("write");
    let mut buf = [0u8; 10];
    established.read_exact(&mut buf).expect("old connection untouched");
    assert_eq!(&buf, b"still here");
    assert_eq!(app.stats()["config_generation"], 2);
}

#[test]
fn reload_that_drops_a_port_closes_only_that_listener() {
    let backend = EchoBackend::start();
    let kept = free_port();
    let dropped = free_port();
    let mut both = route("kept", kept, backend.port);
    both.push_str(&route("dropped", dropped, backend.port));
    let app = Appliance::start(&both, kept);
    assert!(TcpStream::connect(("127.0.0.1", dropped)).is_ok());
    app.rewrite_config(&route("kept", kept, backend.port));
    app.reload();
    // Shards close the listener right after the control core logs the reload; on a loaded
    // machine that can take a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", dropped)).is_ok() {
        assert!(Instant::now() < deadline, "dropped port still listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(echo_roundtrip(connect_from("127.0.0.1", kept).expect("connect"), b"k").expect("kept"), b"k");
}

#[test]
fn sigterm_stops_accepting_and_drains_open_connections() {
    let backend = EchoBackend::start();
    let port = free_port();
    let mut app = Appliance::start(&route("drain", port, backend.port), port);
    let mut open = connect_from("127.0.0.1", port).expect("connect");
    open.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    open.write_all(b"before").expect("write");
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).expect("echo before stop");
    app.signal(libc::SIGTERM);
    app.wait_for_log("stopping", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still accepting after SIGTERM");
    // The open connection keeps working during the drain...
    open.write_all(b"during").expect("write during drain");
    open.read_exact(&mut buf).expect("echo during drain");
    assert_eq!(&buf, b"during");
    // ...and once the client closes it, the appliance exits cleanly before the deadline.
    let started = Instant::now();
    drop(open);
    assert_eq!(app.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn sigterm_drain_deadline_closes_stuck_connections() {
    let backend = EchoBackend::start();
    let port = free_port();
    let mut app = Appliance::start(&route("stuck", port, backend.port), port);
    let mut open = connect_from("127.0.0.1", port).expect("connect");
    open.write_all(b"x").expect("write");
    // The echo proves the connection was accepted and is being relayed before the signal
    // (on a busy machine it could otherwise still sit in the listen queue and never count).
    open.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 8];
    assert!(matches!(open.read(&mut buf), Ok(1)), "no echo through the proxy");
    let started = Instant::now();
    app.signal(libc::SIGTERM);
    // drain_timeout is 5s in test configs.
    assert_eq!(app.wait_exit(Duration::from_secs(10)), Some(0));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(8), "drain took {took:?}");
    open.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    assert!(matches!(open.read(&mut buf), Ok(0) | Err(_)), "connection survived the deadline");
}

#[test]
fn run_without_config_uses_the_embedded_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The embedded default listens on 127.0.0.1:8080 and forwards to 127.0.0.1:8081.
    let backend = std::net::TcpListener::bind("127.0.0.1:8081");
    let Ok(backend) = backend else {
        eprintln!("port 8081 busy on this host; skipping the embedded-default check");
        return;
    };
    if TcpStream::connect("127.0.0.1:8080").is_ok() {
        eprintln!("something already listens on 8080 (another shardgate?); skipping the embedded-default check");
        return;
    }
    let mut child = Command::new(shardgate_bin())
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        if let Ok(s) = TcpStream::connect("127.0.0.1:8080") {
            break s;
        }
        assert!(Instant::now() < deadline, "embedded default never listened on 8080");
        std::thread::sleep(Duration::from_millis(50));
    };
    client.write_all(b"demo").expect("write");
    let (mut server_side, _) = backend.accept().expect("relayed connection");
    let mut buf = [0u8; 4];
    server_side.read_exact(&mut buf).expect("bytes relayed");
    assert_eq!(&buf, b"demo");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    drop(client);
    drop(server_side);
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert!(dir.path().join("shardgate-data").is_dir(), "data folder not created");
}
