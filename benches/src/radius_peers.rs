//! Starting the RADIUS servers under test with the same MAB policy, pinned to the proxy CPUs.
//!
//! Equivalence: one client (127.0.0.1) with the same shared secret and Message-Authenticator
//! required on Access-Request; the same list of allowed MACs, each checked with PAP
//! (User-Password = the MAC) and answered with Access-Accept carrying `Tunnel-Type = VLAN`,
//! `Tunnel-Medium-Type = IEEE-802`, `Tunnel-Private-Group-Id = 10`. FreeRADIUS (Debian's
//! `freeradius`) gets a generated minimal `radiusd.conf` (`files` + `pap`, no detail/SQL
//! logging, no proxying) and runs under `taskset` on the proxy CPUs with its default-sized
//! thread pool; shardgate gets `[runtime] shards` = the same CPUs.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardgate_radius::mac::MacAddress;

use crate::cpus::{cpu_list, proxy_cpus};
use crate::peers::spawn_shardgate;
use crate::radius_load::{user_name, AccessLoad};

/// The VLAN both servers assign.
pub const BENCH_VLAN: u16 = 10;

/// A RADIUS server the load talks to.
pub struct RadiusPeer {
    /// Name in reports: `shardgate`, `freeradius`.
    pub name: &'static str,
    /// Its authentication address.
    pub auth: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for RadiusPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> Option<u16> {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).ok()
}

/// Sends single requests until one is answered (the server is up), for up to 15 s.
fn wait_answering(auth: SocketAddr, secret: &[u8], mac: MacAddress) -> bool {
    let probe = AccessLoad { target: auth, secret: secret.to_vec(), macs: vec![mac], in_flight: 1, timeout: Duration::from_millis(200) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if probe.run(1).is_ok_and(|report| report.accepts == 1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// shardgate serving MAB for `macs` on one UDP port, shards on the proxy CPUs.
pub fn shardgate_radius(secret: &str, macs: &[MacAddress]) -> Option<RadiusPeer> {
    let dir = tempfile::tempdir().ok()?;
    let (auth, acct) = (free_udp_port()?, free_udp_port()?);
    let allowed: Vec<String> = macs.iter().map(|mac| format!("\"{mac}\"")).collect();
    let body = format!(
        "[radius]\nlisten = [\"127.0.0.1\"]\nauth_port = {auth}\nacct_port = {acct}\nrequire_message_authenticator = true\n\n\
         [[radius.clients]]\nname = \"bench\"\nsource = \"127.0.0.1\"\nsecret = \"{secret}\"\n\n\
         [radius.mac_auth]\nallowed = [{allowed}]\ndefault_vlan = {BENCH_VLAN}\nunknown = \"reject\"\n",
        allowed = allowed.join(", "),
    );
    let child = spawn_shardgate(dir.path(), &body)?;
    let peer = RadiusPeer { name: "shardgate", auth: SocketAddr::from(([127, 0, 0, 1], auth)), child, _dir: dir };
    wait_answering(peer.auth, secret.as_bytes(), *macs.first()?).then_some(peer)
}

/// FreeRADIUS authorising the same MACs with the same reply, pinned to the proxy CPUs.
pub fn freeradius(secret: &str, macs: &[MacAddress]) -> Option<RadiusPeer> {
    let dir = tempfile::tempdir().ok()?;
    let root = dir.path();
    for sub in ["run", "log"] {
        std::fs::create_dir_all(root.join(sub)).ok()?;
    }
    let auth = free_udp_port()?;
    let users: String = macs
        .iter()
        .map(|mac| {
            let name = user_name(mac);
            format!(
                "{name}\tCleartext-Password := \"{name}\"\n\tTunnel-Type = VLAN,\n\tTunnel-Medium-Type = IEEE-802,\n\
                 \tTunnel-Private-Group-Id = \"{BENCH_VLAN}\"\n\n"
            )
        })
        .collect();
    std::fs::write(root.join("users"), users).ok()?;
    let root_text = root.display();
    let config = format!(
        "prefix = /usr\nexec_prefix = /usr\nsysconfdir = /etc\nlocalstatedir = /var\nsbindir = /usr/sbin\n\
         logdir = {root_text}/log\nraddbdir = {root_text}\nradacctdir = {root_text}/log\nname = freeradius\n\
         confdir = {root_text}\nmodconfdir = {root_text}\nrun_dir = {root_text}/run\ndb_dir = {root_text}\n\
         libdir = /usr/lib/freeradius\npidfile = {root_text}/run/freeradius.pid\n\
         max_request_time = 30\ncleanup_delay = 5\nmax_requests = 1048576\nhostname_lookups = no\nproxy_requests = no\n\
         log {{\n\tdestination = stderr\n\tauth = no\n}}\n\
         security {{\n\tallow_core_dumps = no\n\tmax_attributes = 200\n\treject_delay = 0\n\tstatus_server = yes\n}}\n\
         thread pool {{\n\tstart_servers = 5\n\tmax_servers = 32\n\tmin_spare_servers = 3\n\tmax_spare_servers = 10\n\
         \tmax_requests_per_server = 0\n\tmax_queue_size = 65536\n\tauto_limit_acct = no\n}}\n\
         client bench {{\n\tipaddr = 127.0.0.1\n\tsecret = {secret}\n\trequire_message_authenticator = yes\n}}\n\
         modules {{\n\tpap {{\n\t}}\n\tfiles {{\n\t\tfilename = {root_text}/users\n\t}}\n}}\n\
         server default {{\n\tlisten {{\n\t\ttype = auth\n\t\tipaddr = 127.0.0.1\n\t\tport = {auth}\n\t}}\n\
         \tauthorize {{\n\t\tfiles\n\t\tpap\n\t}}\n\
         \tauthenticate {{\n\t\tAuth-Type PAP {{\n\t\t\tpap\n\t\t}}\n\t}}\n\tpost-auth {{\n\t}}\n}}\n"
    );
    std::fs::write(root.join("radiusd.conf"), config).ok()?;
    let child = Command::new("taskset")
        .args(["-c", &cpu_list(&proxy_cpus()), "freeradius", "-f", "-d"])
        .arg(root)
        // FreeRADIUS treats `destination = stderr` as a file name relative to its working
        // folder on some builds: keep it inside the temporary config folder.
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("freeradius not runnable ({e}); install Debian's freeradius");
            return None;
        }
    };
    let peer = RadiusPeer { name: "freeradius", auth: SocketAddr::from(([127, 0, 0, 1], auth)), child, _dir: dir };
    if wait_answering(peer.auth, secret.as_bytes(), *macs.first()?) {
        Some(peer)
    } else {
        eprintln!("freeradius did not answer (check `freeradius -XC -d <dir>`); install Debian's freeradius");
        None
    }
}
