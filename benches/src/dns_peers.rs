//! Authoritative DNS servers side by side, and the `dnsperf` load against them.
//!
//! Equivalence: the same zone (`protocols/dns/testdata/knot-equivalence/example.com.zone`) on
//! one loopback UDP port, no response rate limiting, the same CPUs ([`proxy_cpus`]):
//! - shardgate: `[runtime] shards` = those CPUs (one shard each), control core floating;
//! - Knot DNS (Debian `knot`): `udp-workers` = that many, one TCP and one background worker,
//!   the whole process under `taskset`;
//! - NSD (Debian `nsd`): `server-count` = that many with `reuseport`, under `taskset`.
//!
//! Load: Debian's `dnsperf` under `taskset` on [`load_cpus`] (one thread per load CPU, many
//! client sockets so the kernel spreads them over reuseport groups), replaying
//! [`QUERY_MIX`] for a fixed time; its report (queries/s, completed, lost) is parsed by
//! [`DnsLoad::run`]. A peer that cannot start is skipped with a message.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cpus::{cpu_list, load_cpus, proxy_cpus};
use crate::peers::spawn_shardgate;

/// What the load asks, in turn: positive answers, a CNAME chain, a wildcard, a referral,
/// NXDOMAIN, NODATA, MX with additional records — the mix an authoritative server sees.
pub const QUERY_MIX: &[&str] = &[
    "www.example.com A",
    "www.example.com AAAA",
    "example.com MX",
    "mail.example.com A",
    "alias.example.com A",
    "foo.wild.example.com A",
    "host.sub.example.com A",
    "missing.example.com A",
    "www.example.com TXT",
    "example.com NS",
    "_sip._tcp.example.com SRV",
    "txt.example.com TXT",
];

/// The zone every server serves.
pub fn zone_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protocols/dns/testdata/knot-equivalence/example.com.zone")
}

/// A DNS server under test.
pub struct DnsPeer {
    /// Name in reports: `shardgate`, `knot`, `nsd`.
    pub name: &'static str,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for DnsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Option<u16> {
    // Free for UDP and TCP both (the servers listen on both).
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        let port = tcp.local_addr().ok()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Some(port);
        }
    }
    None
}

/// Asks `www.example.com A` until answered (the server is up), for up to 15 s.
fn wait_answering(port: u16) -> bool {
    let query: [u8; 33] = [
        0xbe, 0xef, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3,
        b'c', b'o', b'm', 0, 0, 1, 0, 1,
    ];
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if socket.send_to(&query, ("127.0.0.1", port)).is_ok() {
            if let Ok(n) = socket.recv(&mut buf) {
                if n > 12 && buf[..2] == [0xbe, 0xef] && buf[3] & 0x0f == 0 {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn started(name: &'static str, port: u16, child: std::io::Result<Child>, dir: tempfile::TempDir, hint: &str) -> Option<DnsPeer> {
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("{name} not runnable ({e}); {hint}");
            return None;
        }
    };
    let peer = DnsPeer { name, port, child, _dir: dir };
    if wait_answering(port) {
        Some(peer)
    } else {
        eprintln!("{name} did not answer on port {port}; {hint}");
        None
    }
}

/// shardgate serving the zone, one shard per proxy CPU, RRL off.
pub fn shardgate_dns() -> Option<DnsPeer> {
    shardgate_dns_named("shardgate", "")
}

/// Like [`shardgate_dns`], named `name`, with `extra` config sections appended (e.g. an
/// `[admin]` section switching latency histograms off).
pub fn shardgate_dns_named(name: &'static str, extra: &str) -> Option<DnsPeer> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port()?;
    let body = format!(
        "[dns]\nudp = [\"127.0.0.1:{port}\"]\ntcp = [\"127.0.0.1:{port}\"]\n[dns.rrl]\nenabled = false\n\n\
         [[dns.zones]]\norigin = \"example.com.\"\nfile = \"{zone}\"\n\n{extra}",
        zone = zone_file().display(),
    );
    let child = spawn_shardgate(dir.path(), &body)?;
    started(name, port, Ok(child), dir, "see its log above")
}

/// Knot DNS serving the zone with as many UDP workers as proxy CPUs, pinned to them.
pub fn knot() -> Option<DnsPeer> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port()?;
    let run = dir.path().display().to_string();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {run}\n    udp-workers: {workers}\n    tcp-workers: 1\n\
         \x20   background-workers: 1\n    udp-max-payload: 1232\n\
         database:\n    storage: {run}/db\n\
         log:\n  - target: stderr\n    any: error\n\
         zone:\n  - domain: example.com\n    file: {zone}\n    semantic-checks: off\n",
        workers = proxy_cpus().len(),
        zone = zone_file().display(),
    );
    let path = dir.path().join("knot.conf");
    std::fs::write(&path, conf).ok()?;
    let child = Command::new("taskset")
        .args(["-c", &cpu_list(&proxy_cpus()), "knotd", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    started("knot", port, child, dir, "install Debian's knot")
}

/// NSD serving the zone with as many server processes as proxy CPUs, pinned to them.
pub fn nsd() -> Option<DnsPeer> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port()?;
    let root = dir.path().display().to_string();
    let conf = format!(
        "server:\n    ip-address: 127.0.0.1\n    port: {port}\n    server-count: {count}\n    reuseport: yes\n\
         \x20   username: \"\"\n    chroot: \"\"\n    zonesdir: \"{root}\"\n    database: \"\"\n\
         \x20   zonelistfile: \"{root}/zone.list\"\n    xfrdfile: \"{root}/xfrd.state\"\n    pidfile: \"{root}/nsd.pid\"\n\
         \x20   logfile: \"{root}/nsd.log\"\n    hide-version: yes\n    rrl-ratelimit: 0\n    ipv4-edns-size: 1232\n\
         \x20   verbosity: 0\n\
         remote-control:\n    control-enable: no\n\
         zone:\n    name: example.com\n    zonefile: \"{zone}\"\n",
        count = proxy_cpus().len(),
        zone = zone_file().display(),
    );
    let path = dir.path().join("nsd.conf");
    std::fs::write(&path, conf).ok()?;
    let child = Command::new("taskset")
        .args(["-c", &cpu_list(&proxy_cpus()), "nsd", "-d", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    started("nsd", port, child, dir, "install Debian's nsd (check `nsd-checkconf` on the generated nsd.conf)")
}

/// A `dnsperf` run's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DnsLoadReport {
    /// Queries sent.
    pub sent: u64,
    /// Queries answered.
    pub completed: u64,
    /// Queries that got no answer within the timeout.
    pub lost: u64,
    /// Wall time of the run.
    pub run_time: Duration,
}

impl DnsLoadReport {
    /// Answered queries per second.
    pub fn queries_per_second(&self) -> f64 {
        let secs = self.run_time.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    /// Adds another run's numbers.
    pub fn add(&mut self, other: &DnsLoadReport) {
        self.sent += other.sent;
        self.completed += other.completed;
        self.lost += other.lost;
        self.run_time += other.run_time;
    }
}

/// How `dnsperf` loads one server.
#[derive(Debug, Clone)]
pub struct DnsLoad {
    /// The server's UDP port on 127.0.0.1.
    pub port: u16,
    /// How long one run lasts.
    pub duration: Duration,
    /// Queries kept outstanding (`dnsperf -q`).
    pub outstanding: usize,
    /// Client sockets (`dnsperf -c`).
    pub clients: usize,
    /// The query file (one `name type` per line).
    pub datafile: PathBuf,
}

impl DnsLoad {
    /// Writes [`QUERY_MIX`] to `dir` and returns a load for `port`.
    pub fn new(dir: &Path, port: u16, duration: Duration) -> std::io::Result<DnsLoad> {
        let datafile = dir.join("queries.txt");
        std::fs::write(&datafile, QUERY_MIX.join("\n") + "\n")?;
        Ok(DnsLoad { port, duration, outstanding: 256, clients: 32, datafile })
    }

    /// One `dnsperf` run pinned to the load CPUs.
    pub fn run(&self) -> Result<DnsLoadReport, String> {
        let load = load_cpus();
        let output = Command::new("taskset")
            .args(["-c", &cpu_list(&load), "dnsperf", "-s", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-d")
            .arg(&self.datafile)
            .args(["-l", &self.duration.as_secs().max(1).to_string()])
            .args(["-c", &self.clients.to_string()])
            .args(["-T", &load.len().to_string()])
            .args(["-q", &self.outstanding.to_string()])
            .args(["-t", "1"])
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("dnsperf not runnable ({e}); install Debian's dnsperf"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse_dnsperf(&text).ok_or_else(|| format!("unexpected dnsperf output:\n{text}{}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// Reads `Queries sent/completed/lost` and `Run time (s)` from dnsperf's report.
pub fn parse_dnsperf(text: &str) -> Option<DnsLoadReport> {
    let field = |label: &str| -> Option<&str> {
        text.lines().find_map(|line| line.trim().strip_prefix(label)).map(str::trim)
    };
    let count = |label: &str| -> Option<u64> { field(label)?.split_whitespace().next()?.parse().ok() };
    let run_time: f64 = field("Run time (s):")?.parse().ok()?;
    Some(DnsLoadReport {
        sent: count("Queries sent:")?,
        completed: count("Queries completed:")?,
        lost: count("Queries lost:")?,
        run_time: Duration::from_secs_f64(run_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_reports_are_parsed() {
        let text = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    990 (99.00%)\n  \
                    Queries lost:         10 (1.00%)\n\n  Response codes:       NOERROR 990 (100.00%)\n  \
                    Run time (s):         2.000000\n  Queries per second:   495.000000\n";
        let report = parse_dnsperf(text).expect("parsed");
        assert_eq!((report.sent, report.completed, report.lost), (1000, 990, 10));
        assert_eq!(report.run_time, Duration::from_secs(2));
        assert!((report.queries_per_second() - 495.0).abs() < 1e-9);
        assert!(parse_dnsperf("nothing").is_none());
    }
}
