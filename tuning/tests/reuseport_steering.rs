//! The reuseport CPU steering program on real listeners: N `SO_REUSEPORT` listeners on
//! 127.0.0.1 bound in shard order, the program attached, and clients pinned to each CPU. On
//! loopback the SYN is processed on the sending thread's CPU, so a client pinned to CPU c must
//! be accepted by the listener of the shard on CPU c.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use shardgate_tuning::attach_reuseport_cpu_steering;
use socket2::{Domain, Socket, Type};

/// Pin the calling thread to `cpu`; false when the kernel refuses (CPU not allowed).
fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bitmask struct, zero-initialised and then filled by CPU_SET;
    // sched_setaffinity(0, ...) applies to the calling thread only and reads `size` bytes.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Whether this process may run on `cpu`.
fn cpu_allowed(cpu: usize) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| shardgate_tuning::CpuSet::parse_list(list).ok())
        .is_some_and(|set| set.contains(cpu))
}

/// `count` listeners on one 127.0.0.1 port, bound in order, non-blocking.
fn reuseport_group(count: usize) -> (Vec<TcpListener>, SocketAddr) {
    let mut listeners = Vec::new();
    let mut address: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for _ in 0..count {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&address.into()).unwrap();
        socket.listen(128).unwrap();
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).unwrap();
        address = listener.local_addr().unwrap();
        listeners.push(listener);
    }
    (listeners, address)
}

/// Connect to `address` from a thread pinned to `cpu`; returns the client's stream.
fn connect_from_cpu(address: SocketAddr, cpu: usize) -> TcpStream {
    std::thread::spawn(move || {
        assert!(pin_current_thread(cpu), "cannot pin to CPU {cpu}");
        TcpStream::connect(address).unwrap()
    })
    .join()
    .unwrap()
}

/// Index of the listener that accepts the connection from `client`.
fn accepting_listener(listeners: &[TcpListener], client: SocketAddr) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (index, listener) in listeners.iter().enumerate() {
            match listener.accept() {
                Ok((_, peer)) if peer == client => return index,
                Ok((_, peer)) => panic!("listener {index} accepted unexpected peer {peer}"),
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(err) => panic!("accept on listener {index}: {err}"),
            }
        }
        assert!(Instant::now() < deadline, "no listener accepted {client}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// For each (client CPU, expected listener) pair, connect `rounds` times and check.
fn check_steering(shard_cpus: &[usize], expectations: &[(usize, usize)]) {
    let (listeners, address) = reuseport_group(shard_cpus.len());
    attach_reuseport_cpu_steering(listeners[0].as_raw_fd(), shard_cpus).unwrap();
    for round in 0..8 {
        for &(cpu, expected) in expectations {
            let client = connect_from_cpu(address, cpu);
            let accepted_by = accepting_listener(&listeners, client.local_addr().unwrap());
            assert_eq!(
                accepted_by, expected,
                "shards on {shard_cpus:?}: client on CPU {cpu} (round {round}) landed on listener {accepted_by}"
            );
        }
    }
}

#[test]
fn connections_from_cpu_n_are_accepted_by_the_shard_on_cpu_n() {
    if !(cpu_allowed(0) && cpu_allowed(1)) {
        eprintln!("skipping: this test needs CPUs 0 and 1");
        return;
    }
    // Shard i on CPU i.
    check_steering(&[0, 1], &[(0, 0), (1, 1)]);
    // Reversed group order: proves the kernel follows the program, not its own hash.
    check_steering(&[1, 0], &[(1, 0), (0, 1)]);
    // Group index differs from CPU number; CPU 7 has no client here.
    check_steering(&[7, 1, 0], &[(1, 1), (0, 2)]);
}

#[test]
fn cpus_without_a_shard_fall_back_to_cpu_modulo_shards() {
    if !(cpu_allowed(0) && cpu_allowed(1)) {
        eprintln!("skipping: this test needs CPUs 0 and 1");
        return;
    }
    // No shard on CPU 0 or 1 (e.g. they are the control core): cpu % 3.
    check_steering(&[4, 5, 6], &[(0, 0), (1, 1)]);
}
