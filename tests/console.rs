//! `shardgate console` in a real terminal: tmux runs it headless at 80x24 against a running
//! appliance's admin API while curl drives HTTP traffic; the captured screen must show the
//! shard table, per-protocol rates and latency percentiles with real values, and `q` quits.
//! On the mail queue page (`m`), the keys retry (`R`) and delete (`D`, then `y`) the selected
//! message through the API, which audits both under the logged-in user.

use std::process::Command;
use std::time::{Duration, Instant};

use shardgate_tests::backends::HttpBackend;
use shardgate_tests::{ensure_tool, free_port, send_with_smtplib, shardgate_bin, start_mail_with_admin_api, start_with_admin_api};

const PASSWORD: &str = "console-pass";

/// tmux on a private server socket (no interference with anyone's sessions).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "console"]).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "console"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn console_shows_live_rates_and_latency_at_80x24_and_q_quits() {
    if !ensure_tool("tmux", &["-V"], "tmux") || !ensure_tool("curl", &["--version"], "curl") || !ensure_tool("openssl", &["version"], "openssl") {
        eprintln!("tmux/curl/openssl missing; skipping");
        return;
    }
    let backend = HttpBackend::start("b");
    let route_port = free_port();
    let admin_port = free_port();
    let appliance = start_with_admin_api(route_port, backend.port, admin_port, PASSWORD);

    let tmux = Tmux { socket: format!("shardgate-console-test-{}", std::process::id()) };
    let command = format!(
        "env SHARDGATE_ADMIN_PASSWORD='{PASSWORD}' {} console --admin http://127.0.0.1:{admin_port} --user ops",
        shardgate_bin().display()
    );
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "80", "-y", "24", &command]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));

    // Traffic while the console watches: requests every 50 ms for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut screen = String::new();
    let mut requests = 0;
    while Instant::now() < deadline {
        for _ in 0..5 {
            let _ = Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{route_port}/")]).status();
            requests += 1;
        }
        screen = tmux.capture();
        let http_line = screen.lines().find(|l| l.contains("│http")).unwrap_or("");
        // A rate and latency percentiles (ms or us) on the http row.
        if (http_line.contains("us") || http_line.contains("ms")) && requests >= 20 && !http_line.contains(" - ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("console capture (80x24):\n{screen}");
    if let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") {
        let _ = std::fs::write(std::path::Path::new(&dir).join("console-capture.txt"), &screen);
    }
    assert_eq!(screen.lines().count(), 24, "not 24 lines:\n{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "wider than 80:\n{screen}");
    assert!(screen.contains("shardgate console") && screen.contains("config gen 1"), "{screen}");
    assert!(screen.contains("shards") && screen.contains("protocols") && screen.contains("certificates"), "{screen}");
    let http_line = screen.lines().find(|l| l.contains("│http")).unwrap_or_else(|| panic!("no http row:\n{screen}"));
    assert!(http_line.contains("ms") || http_line.contains("us"), "no latency on the http row:\n{screen}");
    let tcp_line = screen.lines().find(|l| l.contains("│tcp")).unwrap_or_else(|| panic!("no tcp row:\n{screen}"));
    assert!(tcp_line.contains("ms") || tcp_line.contains("us"), "no connect latency on the tcp row:\n{screen}");
    assert!(screen.contains("q quit"), "{screen}");

    tmux.run(&["send-keys", "-t", "console", "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!tmux.alive(), "q did not quit the console:\n{}", tmux.capture());
    drop(appliance);
}

impl Tmux {
    /// Waits until the screen contains every one of `needles`; returns the last capture.
    fn wait_for_screen(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut screen = self.capture();
        while !needles.iter().all(|n| screen.contains(n)) {
            assert!(Instant::now() < deadline, "{needles:?} not on screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
            screen = self.capture();
        }
        screen
    }
}

#[test]
fn console_queue_page_retries_and_deletes_the_selected_message() {
    if !ensure_tool("tmux", &["-V"], "tmux") || !ensure_tool("openssl", &["version"], "openssl") {
        eprintln!("tmux/openssl missing; skipping");
        return;
    }
    let smtp_port = free_port();
    let admin_port = free_port();
    let appliance = start_mail_with_admin_api(smtp_port, admin_port, PASSWORD);
    let first = send_with_smtplib(smtp_port, "first");
    let second = send_with_smtplib(smtp_port, "second");

    let tmux = Tmux { socket: format!("shardgate-console-queue-test-{}", std::process::id()) };
    let command = format!(
        "env SHARDGATE_ADMIN_PASSWORD='{PASSWORD}' {} console --admin http://127.0.0.1:{admin_port} --user ops",
        shardgate_bin().display()
    );
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "80", "-y", "24", &command]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    tmux.wait_for_screen(&["m mail queue"], Duration::from_secs(10));
    tmux.run(&["send-keys", "-t", "console", "m"]);
    // Both messages listed, the oldest selected, deferred after its first attempt.
    let screen = tmux.wait_for_screen(&["mail queue: 2 messages", &format!(">{first}"), &second, "deferred", "R retry"], Duration::from_secs(15));
    eprintln!("console queue page (80x24):\n{screen}");
    if let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") {
        let _ = std::fs::write(std::path::Path::new(&dir).join("console-queue-capture.txt"), &screen);
    }
    assert_eq!(screen.lines().count(), 24, "not 24 lines:\n{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "wider than 80:\n{screen}");
    assert!(screen.contains("last error: 451 4.4.1 connect to 127.0.0.1"), "{screen}");

    tmux.run(&["send-keys", "-t", "console", "R"]);
    tmux.wait_for_screen(&[&format!("retrying {first} now")], Duration::from_secs(10));
    appliance.wait_for_log("action=retry", Duration::from_secs(5));

    // Select the second message, ask to delete it, say no, then yes.
    tmux.run(&["send-keys", "-t", "console", "j"]);
    tmux.wait_for_screen(&[&format!(">{second}")], Duration::from_secs(5));
    tmux.run(&["send-keys", "-t", "console", "D"]);
    tmux.wait_for_screen(&[&format!("delete {second}? y deletes")], Duration::from_secs(5));
    tmux.run(&["send-keys", "-t", "console", "n"]);
    tmux.wait_for_screen(&[&format!("{second} kept")], Duration::from_secs(5));
    tmux.run(&["send-keys", "-t", "console", "D"]);
    tmux.wait_for_screen(&[&format!("delete {second}? y deletes")], Duration::from_secs(5));
    tmux.run(&["send-keys", "-t", "console", "y"]);
    let screen = tmux.wait_for_screen(&[&format!("{second} deleted"), "mail queue: 1 message"], Duration::from_secs(10));
    assert!(!screen.contains(&format!(">{second}")), "{screen}");
    appliance.wait_for_log("action=delete", Duration::from_secs(5));
    let log = appliance.log();
    let audited = |action: &str, id: &str| {
        log.lines().any(|l| l.contains("shardgate::audit") && l.contains(action) && l.contains(id) && l.contains("user=ops"))
    };
    assert!(audited("action=retry", &first) && audited("action=delete", &second), "{log}");
    assert!(!log.lines().any(|l| l.contains("action=delete") && l.contains(&first)), "the wrong message was deleted");

    tmux.run(&["send-keys", "-t", "console", "q"]);
    drop(appliance);
}

#[test]
fn console_without_a_reachable_api_says_so() {
    let out = Command::new(shardgate_bin())
        .args(["console", "--admin", &format!("http://127.0.0.1:{}", free_port()), "--password", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot log in to the admin API"), "{}", String::from_utf8_lossy(&out.stderr));
}
