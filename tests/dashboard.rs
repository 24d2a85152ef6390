//! The web dashboard in a real browser: headless Chromium (Debian `chromium`, fresh profile,
//! driven over the DevTools protocol by `tests/dashboard/cdp.py` with Debian's
//! python3-websocket) loads the page from the admin listener, is refused the API without a
//! token, logs in through the form, sees the HTTP request total and rate move while this test
//! drives traffic, and takes a screenshot that must be a 1280x900 PNG.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_tests::backends::HttpBackend;
use shardgate_tests::{ensure_tool, free_port, Appliance};

const PASSWORD: &str = "dashboard-pass";

/// Debian's Python (where Debian's python3-websocket lives), not whatever `python3` is first
/// on PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Whether Debian's Python can import websocket-client, installing python3-websocket once
/// when root.
fn have_websocket_client() -> bool {
    let imports = || Command::new(DEBIAN_PYTHON).args(["-c", "import websocket"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !imports() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "python3-websocket"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    imports()
}

/// Headless Chromium with its own profile; killed on drop.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        Browser { child, profile }
    }

    /// The DevTools port Chromium chose (written to `DevToolsActivePort` in the profile).
    fn devtools_port(&self) -> u16 {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(port) = std::fs::read_to_string(&file).ok().and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok())) {
                return port;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromium did not open its DevTools port");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((width, height))
}

#[test]
fn dashboard_logs_in_and_follows_live_traffic_in_headless_chromium() {
    if !ensure_tool("chromium", &["--version"], "chromium")
        || !have_websocket_client()
        || !ensure_tool("openssl", &["version"], "openssl")
    {
        eprintln!("chromium/python3-websocket/openssl missing; skipping");
        return;
    }
    let hash = Command::new("openssl").args(["passwd", "-6", "-salt", "dashboardtest", PASSWORD]).output().expect("openssl");
    let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    let backend = HttpBackend::start("b");
    let route_port = free_port();
    let admin_port = free_port();
    let body = format!(
        "[[routes]]\nname = \"web\"\nmatch = {{ ports = {route_port} }}\n\
         action = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {} }}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\nusers = [{{ username = \"ops\", password_hash = \"{hash}\" }}]\n",
        backend.port
    );
    let appliance = Appliance::start(&body, route_port);
    appliance.wait_for_log("admin API listening", Duration::from_secs(10));

    // Traffic for as long as the browser looks: a request every 20 ms.
    let driving = Arc::new(AtomicBool::new(true));
    let traffic = {
        let driving = driving.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while driving.load(Ordering::Relaxed) {
                if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", route_port)) {
                    use std::io::Write;
                    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.read_to_end(&mut Vec::new());
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };

    let browser = Browser::start();
    let port = browser.devtools_port();
    let shots = tempfile::tempdir().expect("tempdir");
    let screenshot = shots.path().join("dashboard.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard").join("cdp.py");
    let output = Command::new(DEBIAN_PYTHON)
        .arg(&script)
        .arg(port.to_string())
        .arg(format!("http://127.0.0.1:{admin_port}"))
        .arg("ops")
        .arg(PASSWORD)
        .arg(&screenshot)
        .output()
        .expect("run cdp.py");
    driving.store(false, Ordering::Relaxed);
    let sent = traffic.join().expect("traffic");
    assert!(output.status.success(), "cdp.py failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cdp.py JSON");
    eprintln!("browser saw: {seen} (test sent {sent} requests)");
    assert_eq!(seen["unauthenticated_stats"], 401, "{seen}");
    assert_eq!(seen["unauthenticated_config"], 401, "{seen}");
    assert_eq!(seen["dashboard_visible"], true, "{seen}");
    let first = seen["http_total_first"].as_u64().expect("first");
    let later = seen["http_total_later"].as_u64().expect("later");
    assert!(later > first, "the HTTP total did not move: {seen}");
    assert!(seen["http_rate"].as_str().is_some_and(|r| r != "-" && r.parse::<f64>().is_ok()), "{seen}");
    assert!(seen["latency_rows"].as_array().is_some_and(|rows| rows.iter().any(|r| r == "http request")), "{seen}");
    assert!(seen["status"].as_str().is_some_and(|s| s.starts_with("live")), "{seen}");

    let png = std::fs::read(&screenshot).expect("screenshot");
    assert!(png.len() > 10_000, "screenshot suspiciously small: {} bytes", png.len());
    assert_eq!(png_size(&png), Some((1280, 900)), "screenshot size");
    if let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") {
        let _ = std::fs::copy(&screenshot, Path::new(dir).join("dashboard.png"));
    }
    appliance.wait_for_log("admin API login", Duration::from_secs(2));
}
