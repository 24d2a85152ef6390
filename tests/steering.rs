//! `[tuning] steer_connections = true`: the reuseport CPU-steering program makes the shard
//! on the receiving CPU accept the connection. On loopback the receiving CPU is the sending
//! thread's CPU, so a client pinned to CPU n must always land on shard n.

use std::time::Duration;

use shardgate_tests::backends::EchoBackend;
use shardgate_tests::{connect_from, echo_roundtrip, free_port, Appliance};

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "pin to CPU {cpu}");
    }
}

#[test]
fn connections_land_on_the_shard_of_the_sending_cpu() {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cpus < 2 {
        eprintln!("needs 2 CPUs; skipping");
        return;
    }
    let backend = EchoBackend::start();
    let port = free_port();
    let body = format!(
        "[tuning]\nsteer_connections = true\n\n[[routes]]\nname = \"steered\"\nmatch = {{ ports = {port} }}\naction = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {} }}] }}\n",
        backend.port
    );
    let app = Appliance::start(&body, port);
    for cpu in [0usize, 1] {
        std::thread::spawn(move || {
            pin_to(cpu);
            for _ in 0..12 {
                let reply = echo_roundtrip(connect_from("127.0.0.1", port).expect("connect"), b"s").expect("relay");
                assert_eq!(reply, b"s");
            }
        })
        .join()
        .expect("client thread");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = app.stats();
    let shards = stats["shards"].as_array().expect("shards").clone();
    for shard in shards {
        let accepted = shard["routes"]["steered"]["accepted"].as_u64().unwrap_or(0);
        assert_eq!(accepted, 12, "shard {} on CPU {} accepted {accepted}, expected exactly its CPU's 12: {stats}", shard["shard"], shard["cpu"]);
    }
}
