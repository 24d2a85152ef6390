//! Starting the proxies under test with equivalent configs, pinned to the proxy CPUs.
//!
//! Equivalence for a TCP relay: one frontend port, one backend, no PROXY header, long
//! timeouts. HAProxy gets `mode tcp`, `nbthread` = proxy CPUs, `cpu-map`, and
//! `option splice-request`/`splice-response` (kernel splicing, as shardgate does);
//! shardgate gets `[runtime] shards` = the same CPUs.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cpus::{cpu_list, proxy_cpus};

/// A proxy (or none) that the load talks to.
pub struct Peer {
    /// Name in reports: `shardgate`, `haproxy`, `direct`.
    pub name: &'static str,
    /// The port clients connect to.
    pub port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Peer {
    /// A started peer process that owns its temporary folder.
    pub fn new(name: &'static str, port: u16, child: Child, dir: tempfile::TempDir) -> Peer {
        Peer { name, port, child: Some(child), _dir: Some(dir) }
    }

    /// A peer that runs as threads of this process (nothing to stop; it ends with the
    /// process).
    pub fn in_process(name: &'static str, port: u16) -> Peer {
        Peer { name, port, child: None, _dir: None }
    }

    /// The peer's main process id (`None` for `direct`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Peer {
    /// Stops the peer with SIGTERM and waits up to 5 s (nginx's master then stops its
    /// workers; a SIGKILL to the master alone leaves them running, pinned to the proxy CPU,
    /// where they would skew the next peer's run), then SIGKILL.
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: a signal to our own child process, which has not been reaped yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Waits up to 10 s until something accepts on 127.0.0.1:`port`.
pub fn wait_listening(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The release `shardgate` binary (build it with `cargo build --release -p shardgate-appliance`),
/// or `$SHARDGATE_BIN`.
pub fn shardgate_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHARDGATE_BIN") {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.join("../target/release/shardgate")
}

/// Starts the release `shardgate` on a config made of a `[runtime]` section (one shard per
/// proxy CPU, control core floating, data under `dir`) followed by `body`. `None` (with a
/// message) when the binary is missing or cannot start.
pub fn spawn_shardgate(dir: &std::path::Path, body: &str) -> Option<Child> {
    let bin = shardgate_bin();
    if !bin.exists() {
        eprintln!("{} missing: build it with `cargo build --release -p shardgate-appliance`", bin.display());
        return None;
    }
    // BENCH_SHARDGATE_RUNTIME: extra `[runtime]` lines for experiments, e.g.
    // `spin_before_park = "1ms"`.
    let config = format!(
        "[runtime]\nshards = [{cpus}]\ncontrol_cpu = \"none\"\ndata_dir = \"{data}\"\n{extra}\n\n{body}",
        cpus = cpu_list(&proxy_cpus()),
        data = dir.join("data").display(),
        extra = std::env::var("BENCH_SHARDGATE_RUNTIME").unwrap_or_default().replace(';', "\n"),
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, config).ok()?;
    match Command::new(bin).args(["run", "--log-level", "warn", "--config"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("shardgate did not start: {e}");
            None
        }
    }
}

/// No proxy: clients connect to the backend itself.
pub fn direct(backend_port: u16) -> Peer {
    Peer { name: "direct", port: backend_port, child: None, _dir: None }
}

/// shardgate relaying one port to `backend_port`, shards on the proxy CPUs.
pub fn shardgate_tcp(backend_port: u16) -> Option<Peer> {
    shardgate_tcp_named("shardgate", backend_port, "")
}

/// Like [`shardgate_tcp`], named `name`, with `extra` config sections appended (e.g. an
/// `[admin]` section switching latency histograms off).
pub fn shardgate_tcp_named(name: &'static str, backend_port: u16, extra: &str) -> Option<Peer> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let body = format!(
        "[proxy]\nlisten = [\"127.0.0.1\"]\n\n[[routes]]\nname = \"bench\"\nmatch = {{ ports = {port} }}\n\
         action = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {backend_port} }}], idle_timeout = \"300s\" }}\n\n{extra}"
    );
    let child = spawn_shardgate(dir.path(), &body)?;
    let peer = Peer::new(name, port, child, dir);
    wait_listening(port).then_some(peer)
}

/// An `[admin]` section on a free loopback port with latency histograms on or off.
pub fn admin_section(latency_histograms: bool) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{}\"\nlatency_histograms = {latency_histograms}\n", free_port())
}

/// HAProxy (Debian's) in `mode tcp` with splice, threads pinned to the proxy CPUs.
pub fn haproxy_tcp(backend_port: u16) -> Option<Peer> {
    let cpus = proxy_cpus();
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let cpu_map: String = cpus.iter().enumerate().map(|(i, c)| format!("    cpu-map 1/{} {c}\n", i + 1)).collect();
    let config = format!(
        "global\n    nbthread {n}\n{cpu_map}    maxconn 4000\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 300s\n    timeout server 300s\n\
         \x20   option splice-request\n    option splice-response\n\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\n\
         backend be\n    server s1 127.0.0.1:{backend_port}\n",
        n = cpus.len()
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).ok()?;
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("haproxy not runnable ({e}); install Debian's haproxy");
            return None;
        }
    };
    let peer = Peer { name: "haproxy", port, child: Some(child), _dir: Some(dir) };
    wait_listening(port).then_some(peer)
}
