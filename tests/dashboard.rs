//! The web dashboard in a real browser: headless Chromium (Debian `chromium`, fresh profile,
//! driven over the DevTools protocol by `tests/dashboard/cdp.py` with Debian's
//! python3-websocket) loads the page from the admin listener, is refused the API without a
//! token, logs in through the form, sees the HTTP request total and rate move while this test
//! drives traffic, and takes a screenshot that must be a 1280x900 PNG. A second test presses
//! the mail queue table's Retry and Delete (then Confirm delete) buttons and opens a message's
//! log lines by its correlation id; the API audits both actions under the logged-in user.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_tests::backends::HttpBackend;
use shardgate_tests::{ensure_tool, free_port, send_with_smtplib, start_mail_with_admin_api, start_with_admin_api};

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

/// Starts a fresh headless Chromium and runs `cdp.py` against the dashboard on `admin_port`
/// as `ops` (with `extra` arguments); what the script saw.
fn drive_dashboard(admin_port: u16, screenshot: &Path, extra: &[&str]) -> serde_json::Value {
    let browser = Browser::start();
    let port = browser.devtools_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard").join("cdp.py");
    let output = Command::new(DEBIAN_PYTHON)
        .arg(&script)
        .arg(port.to_string())
        .arg(format!("http://127.0.0.1:{admin_port}"))
        .arg("ops")
        .arg(PASSWORD)
        .arg(screenshot)
        .args(extra)
        .output()
        .expect("run cdp.py");
    assert!(output.status.success(), "cdp.py failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cdp.py JSON")
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
    let backend = HttpBackend::start("b");
    let route_port = free_port();
    let admin_port = free_port();
    let appliance = start_with_admin_api(route_port, backend.port, admin_port, PASSWORD);

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

    let shots = tempfile::tempdir().expect("tempdir");
    let screenshot = shots.path().join("dashboard.png");
    let seen = drive_dashboard(admin_port, &screenshot, &[]);
    driving.store(false, Ordering::Relaxed);
    let sent = traffic.join().expect("traffic");
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

#[test]
fn dashboard_retries_and_deletes_queued_mail_in_headless_chromium() {
    if !ensure_tool("chromium", &["--version"], "chromium")
        || !have_websocket_client()
        || !ensure_tool("openssl", &["version"], "openssl")
    {
        eprintln!("chromium/python3-websocket/openssl missing; skipping");
        return;
    }
    let smtp_port = free_port();
    let admin_port = free_port();
    let appliance = start_mail_with_admin_api(smtp_port, admin_port, PASSWORD);
    let retried = send_with_smtplib(smtp_port, "to retry");
    let deleted = send_with_smtplib(smtp_port, "to delete");

    let shots = tempfile::tempdir().expect("tempdir");
    let screenshot = shots.path().join("dashboard-queue.png");
    let seen = drive_dashboard(admin_port, &screenshot, &["queue", &retried, &deleted]);
    eprintln!("browser saw: {seen}");
    assert_eq!(seen["unauthenticated_retry"], 401, "{seen}");
    assert_eq!(seen["queue_count_before"], "2", "{seen}");
    assert_eq!(seen["retry_notice"], format!("retrying {retried} now"), "{seen}");
    assert_eq!(seen["still_listed_after_first_press"], true, "one press must not delete: {seen}");
    assert_eq!(seen["delete_notice"], format!("{deleted} deleted"), "{seen}");
    assert_eq!(seen["queue_count_after"], "1", "{seen}");
    let conn = seen["retry_conn"].as_str().unwrap_or("");
    assert_eq!(conn.len(), 16, "the correlation id column: {seen}");
    assert_eq!(seen["story_id"], conn, "{seen}");
    let story = seen["story"].as_str().unwrap_or("");
    assert!(story.contains("message queued") && story.contains(&retried), "the session line: {story}");
    assert!(story.contains("deferred"), "the delivery line: {story}");
    assert!(story.contains("action=retry") && story.contains("user=ops"), "the audited retry: {story}");

    appliance.wait_for_log("action=delete", Duration::from_secs(5));
    let log = appliance.log();
    assert!(log.lines().any(|l| l.contains("shardgate::audit") && l.contains("action=delete") && l.contains(&deleted) && l.contains("user=ops")), "{log}");
    let png = std::fs::read(&screenshot).expect("screenshot");
    assert_eq!(png_size(&png), Some((1280, 900)), "screenshot size");
    if let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") {
        let _ = std::fs::copy(&screenshot, Path::new(dir).join("dashboard-queue.png"));
    }
}
