//! Test support: start the real `shardgate` binary on a generated config and give tests
//! real backends and clients on loopback.
//!
//! The binary is found next to the test executable's `target/<profile>/` folder (build it
//! first: `cargo build --bins`), or at `$SHARDGATE_BIN`.

pub mod backends;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `shardgate` binary under test.
pub fn shardgate_bin() -> PathBuf {
    if let Ok(path) = std::env::var("SHARDGATE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/shardgate
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("shardgate");
    assert!(bin.exists(), "{} is missing: run `cargo build --bins` before the tests", bin.display());
    bin
}

/// A loopback port (TCP and UDP) that was free a moment ago and was not handed out before.
pub fn free_port() -> u16 {
    unused_port()
}

/// A port no earlier call in this process handed out, free for both TCP and UDP on loopback
/// right now. Ports come from 20000..32000, below Linux's ephemeral range, so outgoing client
/// sockets never take them; the start depends on the process id so test binaries that run at
/// the same time do not walk the same sequence.
fn unused_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(7919) % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

/// A running `shardgate run --config ...` with its own data folder and captured log.
pub struct Appliance {
    child: Child,
    /// The folder holding the config and the data folder.
    pub dir: tempfile::TempDir,
    /// The config file path.
    pub config_path: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Appliance {
    /// Writes `body` (routes and any sections other than `[runtime]`/`[proxy]`) into a config
    /// with a private data folder, starts the binary, and waits until it has bound its
    /// listeners (`ready_port` is one of them; the kernel queues connections from then on,
    /// so no probe connection is made that would show in the stats).
    pub fn start(body: &str, ready_port: u16) -> Appliance {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("edge.toml");
        std::fs::write(&config_path, with_runtime(body, dir.path())).expect("write config");
        let appliance = Appliance::spawn(dir, config_path);
        assert!(appliance.log().contains(&format!("127.0.0.1:{ready_port}")), "port {ready_port} not listened on");
        appliance
    }

    /// Stops the appliance gracefully (SIGTERM) and starts it again on the same config and
    /// data folder; returns once the new process has bound its sockets.
    pub fn restart(mut self) -> Appliance {
        self.signal(libc::SIGTERM);
        assert_eq!(self.wait_exit(Duration::from_secs(15)), Some(0), "no clean stop; log:\n{}", self.log());
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        Appliance::spawn(dir, self.config_path.clone())
    }

    /// Starts the appliance again after it stopped by itself (e.g. after a SIGTERM the test
    /// sent and waited for), on the same config and data folder.
    pub fn restart_stopped(mut self) -> Appliance {
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        Appliance::spawn(dir, self.config_path.clone())
    }

    /// Kills the appliance with SIGKILL (a crash: nothing is flushed or cleaned up) and starts
    /// it again on the same config and data folder; returns once it has bound its sockets.
    pub fn crash_and_restart(mut self) -> Appliance {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        Appliance::spawn(dir, self.config_path.clone())
    }

    fn spawn(dir: tempfile::TempDir, config_path: PathBuf) -> Appliance {
        let mut child = Command::new(shardgate_bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shardgate");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let appliance = Appliance { child, dir, config_path, log };
        appliance.wait_for_log("shardgate started", Duration::from_secs(10));
        appliance
    }

    /// Replaces the config file (same runtime section) — follow with [`Appliance::reload`].
    pub fn rewrite_config(&self, body: &str) {
        std::fs::write(&self.config_path, with_runtime(body, self.dir.path())).expect("rewrite config");
    }

    /// The appliance's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the appliance.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGHUP, then waits until the log reports the reload applied or refused `n`-th time.
    pub fn reload(&self) {
        let before = self.log().matches("reload applied").count() + self.log().matches("reload refused").count();
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let now = self.log().matches("reload applied").count() + self.log().matches("reload refused").count();
            if now > before {
                // Shards apply the snapshot right after the control core logs it.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no reload outcome logged; log:\n{}", self.log());
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until `needle` appears in the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("`{needle}` not logged within {timeout:?}; log:\n{}", self.log());
    }

    /// The merged stats the control core wrote (waits for a fresh write).
    pub fn stats(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(2200));
        let path = self.dir.path().join("data").join("stats.json");
        let text = std::fs::read_to_string(&path).expect("stats.json");
        serde_json::from_str(&text).expect("stats json")
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_runtime(body: &str, dir: &Path) -> String {
    format!(
        "[runtime]\ndata_dir = \"{}\"\ndrain_timeout = \"5s\"\n\n[proxy]\nlisten = [\"127.0.0.1\"]\n\n{body}",
        dir.join("data").display()
    )
}

/// A loopback UDP port, as [`free_port`].
pub fn free_udp_port() -> u16 {
    unused_port()
}

/// Whether `program` runs (`probe` are harmless arguments such as `-v`); if not and we are
/// root, installs the Debian `package` once and asks again. `false` means the caller should
/// skip, with a message naming the package.
pub fn ensure_tool(program: &str, probe: &[&str], package: &str) -> bool {
    let runs = || Command::new(program).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if runs() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    runs()
}

/// Waits until something accepts on 127.0.0.1:`port`.
pub fn wait_until_accepting(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing accepts on port {port}");
}

/// Connects from a chosen loopback source address (e.g. 127.0.0.2) to `port`.
pub fn connect_from(source_ip: &str, port: u16) -> std::io::Result<TcpStream> {
    let source: SocketAddr = format!("{source_ip}:0").parse().expect("source ip");
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().expect("target");
    bind_and_connect(source, target)
}

fn bind_and_connect(source: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket/bind/connect on a fresh descriptor, converted into a TcpStream
    // that owns it; sockaddr_in built from valid IPv4 addresses.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let to_sockaddr = |a: SocketAddr| -> libc::sockaddr_in {
            let SocketAddr::V4(v4) = a else { panic!("IPv4 only") };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            }
        };
        let src = to_sockaddr(source);
        // Let connect() pick the source port, so ports in TIME_WAIT from earlier connections
        // can be reused (a bind() to port 0 would reserve one for good and run out under load).
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, (&one as *const libc::c_int).cast(), 4);
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dst = to_sockaddr(target);
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Sends `payload`, half-closes, reads everything back (for echo backends).
pub fn echo_roundtrip(mut stream: TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let writer = {
        let mut w = stream.try_clone()?;
        let data = payload.to_vec();
        std::thread::spawn(move || -> std::io::Result<()> {
            w.write_all(&data)?;
            w.shutdown(std::net::Shutdown::Write)
        })
    };
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    writer.join().map_err(|_| std::io::Error::other("writer panicked"))??;
    Ok(back)
}

/// Whether the proxy closed the connection without relaying (EOF or reset on first read).
pub fn closed_without_reply(mut stream: TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"hello?\n");
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

/// A SHA-crypt (`$6$`) hash of `password` made by openssl (for `[admin] users`); needs the
/// openssl tool (see [`ensure_tool`]).
pub fn sha_crypt(password: &str) -> String {
    let out = Command::new("openssl").args(["passwd", "-6", "-salt", "shardgatetest", password]).output().expect("openssl passwd");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An appliance with one HTTP route (`web`: `route_port` → `backend_port`) and the admin API
/// on `admin_port` with the user `ops` / `password`; returns once the admin API listens.
pub fn start_with_admin_api(route_port: u16, backend_port: u16, admin_port: u16, password: &str) -> Appliance {
    let body = format!(
        "[[routes]]\nname = \"web\"\nmatch = {{ ports = {route_port} }}\n\
         action = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {backend_port} }}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\nusers = [{{ username = \"ops\", password_hash = \"{}\" }}]\n",
        sha_crypt(password)
    );
    let appliance = Appliance::start(&body, route_port);
    appliance.wait_for_log("admin API listening", Duration::from_secs(10));
    appliance
}

/// The `new/` folder of `address`'s Maildir in `appliance`'s data folder.
pub fn maildir(appliance: &Appliance, address: &str) -> PathBuf {
    appliance.dir.path().join("data/mail/mailboxes").join(address).join("new")
}

/// The first message delivered into the Maildir folder `dir` (waits up to 20 s).
pub fn wait_for_message(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(entry) = std::fs::read_dir(dir).ok().and_then(|mut entries| entries.next()).and_then(Result::ok) {
            return std::fs::read_to_string(entry.path()).expect("stored message");
        }
        assert!(Instant::now() < deadline, "nothing delivered into {}", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An appliance with `[email]` (SMTP on `smtp_port`; `*@example.test` forwarded to a port
/// nobody listens on, so a message is deferred and stays queued) and the admin API on
/// `admin_port` with the user `ops` / `password`; returns once the admin API listens.
pub fn start_mail_with_admin_api(smtp_port: u16, admin_port: u16, password: &str) -> Appliance {
    let closed_port = free_port();
    let body = format!(
        "[email]\nhostname = \"mx.example.test\"\nlisten = [\"127.0.0.1\"]\nlocal_domains = [\"example.test\"]\n\
         [email.ports]\nsmtp = {smtp_port}\n\
         [[email.routes]]\nname = \"relay\"\nmatch = {{ recipients = \"*@example.test\" }}\n\
         action = {{ type = \"forward\", host = \"127.0.0.1\", port = {closed_port}, starttls = \"none\" }}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\nusers = [{{ username = \"ops\", password_hash = \"{}\" }}]\n",
        sha_crypt(password)
    );
    let appliance = Appliance::start(&body, smtp_port);
    appliance.wait_for_log("admin API listening", Duration::from_secs(10));
    appliance
}

/// Sends one message to `rcpt@example.test` on `smtp_port` with Debian's Python smtplib;
/// returns the queue id from the server's `250 ... queued as <id>` reply.
pub fn send_with_smtplib(smtp_port: u16, subject: &str) -> String {
    let script = "import smtplib,sys\n\
                  s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)\n\
                  s.ehlo('client.example.org')\n\
                  s.mail('sender@example.org')\n\
                  s.rcpt('rcpt@example.test')\n\
                  code, reply = s.data(('Subject: %s\\r\\n\\r\\nhello\\r\\n' % sys.argv[2]).encode())\n\
                  s.quit()\n\
                  print(code, reply.decode())\n";
    let out = Command::new("/usr/bin/python3").args(["-c", script, &smtp_port.to_string(), subject]).output().expect("python3 smtplib");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && stdout.starts_with("250"), "smtplib: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.split_whitespace().last().unwrap_or("").to_string()
}
