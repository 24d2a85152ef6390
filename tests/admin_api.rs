//! The admin API through the real binary, with curl as the client: every `/api` path refuses
//! a request without a token, login hands out a token and failed logins are limited (429),
//! stats and Prometheus metrics carry live counters and latency percentiles after traffic, the
//! config is shown with its secrets redacted, a replaced config is applied and persisted (or
//! refused with every problem listed, the running config untouched), `/metrics` may be left
//! open, and HTTPS is served with a configured certificate.

use std::process::Command;
use std::time::{Duration, Instant};

use shardgate_tests::backends::HttpBackend;
use shardgate_tests::{ensure_tool, free_port, wait_until_accepting, Appliance};

const PASSWORD: &str = "correct horse battery";

fn tools() -> bool {
    ensure_tool("curl", &["--version"], "curl") && ensure_tool("openssl", &["version"], "openssl")
}

/// A SHA-crypt (`$6$`) hash of `password`, made by openssl.
fn sha_crypt(password: &str) -> String {
    let out = Command::new("openssl").args(["passwd", "-6", "-salt", "shardgatetest", password]).output().expect("openssl passwd");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs curl; returns (HTTP status, body, response headers).
fn curl(args: &[&str]) -> (u16, String, String) {
    let headers = tempfile::NamedTempFile::new().expect("tempfile");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", "-D"])
        .arg(headers.path())
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let headers = std::fs::read_to_string(headers.path()).unwrap_or_default();
    (code.trim().parse().unwrap_or(0), body.to_string(), headers)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

struct Admin {
    appliance: Appliance,
    base: String,
}

impl Admin {
    /// An appliance with an HTTP route on `route_port` to `backend_port`, a RADIUS client
    /// with a secret, and `[admin]` on a free port (plus `admin_extra` lines).
    fn start(route_port: u16, backend_port: u16, admin_extra: &str) -> Admin {
        let admin_port = free_port();
        let radius_auth = shardgate_tests::free_udp_port();
        let radius_acct = shardgate_tests::free_udp_port();
        let body = format!(
            "[[routes]]\nname = \"web\"\nmatch = {{ ports = {route_port} }}\n\
             action = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {backend_port} }}] }}\n\n\
             [radius]\nlisten = [\"127.0.0.1\"]\nauth_port = {radius_auth}\nacct_port = {radius_acct}\n\
             [[radius.clients]]\nname = \"nas\"\nsource = \"127.0.0.1\"\nsecret = \"radius-shared-secret\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{admin_extra}\n\
             [[admin.users]]\nusername = \"ops\"\npassword_hash = \"{}\"\n",
            sha_crypt(PASSWORD)
        );
        let appliance = Appliance::start(&body, route_port);
        appliance.wait_for_log("admin API listening", Duration::from_secs(10));
        Admin { appliance, base: format!("http://127.0.0.1:{admin_port}") }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn login(&self) -> String {
        let (status, body, _) = curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &format!("{{\"username\":\"ops\",\"password\":\"{PASSWORD}\"}}"),
            &self.url("/api/login"),
        ]);
        assert_eq!(status, 200, "login: {body}");
        json(&body)["token"].as_str().expect("token").to_string()
    }

    fn get(&self, token: &str, path: &str) -> (u16, String) {
        let (status, body, _) = curl(&["-H", &format!("Authorization: Bearer {token}"), &self.url(path)]);
        (status, body)
    }

    fn put_config(&self, token: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text, _) = curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            &format!("content-type: {content_type}"),
            "--data-binary",
            body,
            &self.url("/api/config"),
        ]);
        (status, json(&text))
    }
}

#[test]
fn every_api_path_needs_a_token_and_health_does_not() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let backend = HttpBackend::start("b");
    let admin = Admin::start(free_port(), backend.port, "");
    for path in ["/api/stats", "/api/config", "/api/logs", "/api/certs", "/api/stream", "/api/nothing-here", "/metrics"] {
        let (status, body, headers) = curl(&[&admin.url(path)]);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(headers.to_ascii_lowercase().contains("www-authenticate: bearer"), "{path}: {headers}");
        let (status, _, _) = curl(&["-H", "Authorization: Bearer not-a-token", &admin.url(path)]);
        assert_eq!(status, 401, "{path} with a made-up token");
    }
    let (status, body, _) = curl(&["-X", "PUT", "--data-binary", "[proxy]", &admin.url("/api/config")]);
    assert_eq!(status, 401, "PUT /api/config without a token: {body}");
    let (status, body, _) = curl(&[&admin.url("/api/health")]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["status"], "ok");
    // With a token, an unknown API path is a 404, not a 401.
    let token = admin.login();
    assert_eq!(admin.get(&token, "/api/nothing-here").0, 404);
}

#[test]
fn failed_logins_are_rate_limited_per_address() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let backend = HttpBackend::start("b");
    let admin = Admin::start(free_port(), backend.port, "");
    let attempt = |password: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &format!("{{\"username\":\"ops\",\"password\":\"{password}\"}}"),
            &admin.url("/api/login"),
        ])
    };
    for i in 0..5 {
        assert_eq!(attempt("wrong").0, 401, "failed login {i}");
    }
    let (status, body, headers) = attempt("wrong");
    assert_eq!(status, 429, "{body}");
    assert!(headers.to_ascii_lowercase().contains("retry-after:"), "{headers}");
    // Even the right password waits out the window.
    assert_eq!(attempt(PASSWORD).0, 429);
    // Unknown users and malformed requests are refused too.
    let (status, _, _) = curl(&["-X", "POST", "-H", "content-type: application/json", "-d", "{\"user\":1}", &admin.url("/api/login")]);
    assert!(status == 400 || status == 429, "malformed login: {status}");
    admin.appliance.wait_for_log("admin API login failed", Duration::from_secs(2));
    assert!(admin.appliance.log().contains("shardgate::security"), "security target missing:\n{}", admin.appliance.log());
}

#[test]
fn stats_metrics_logs_and_stream_show_live_traffic() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let backend = HttpBackend::start("b");
    let route_port = free_port();
    let admin = Admin::start(route_port, backend.port, "");
    let token = admin.login();
    for _ in 0..20 {
        let (status, _, _) = curl(&[&format!("http://127.0.0.1:{route_port}/x")]);
        assert_eq!(status, 200);
    }
    // Stats are merged about every second: wait for the requests to show.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let (status, body) = admin.get(&token, "/api/stats");
        assert_eq!(status, 200);
        let stats = json(&body);
        if stats["routes"]["web"]["http_requests"].as_u64() == Some(20) || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stats["routes"]["web"]["http_requests"], 20, "{stats}");
    let http = &stats["latency"]["http_request"];
    assert_eq!(http["count"], 20, "{stats}");
    assert!(http["p50_us"].as_u64().unwrap_or(0) > 0 && http["p99_us"].as_u64() >= http["p50_us"].as_u64(), "{http}");
    assert!(stats["latency"]["tcp_connect"]["count"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert!(stats["shards"][0]["latency"]["http_request"]["count"].as_u64().unwrap_or(0) >= 1, "{stats}");

    let (status, metrics) = admin.get(&token, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("shardgate_route_http_requests{route=\"web\"} 20"), "{metrics}");
    assert!(metrics.contains("shardgate_latency_seconds{operation=\"http_request\",quantile=\"0.99\"}"), "{metrics}");

    let (status, logs) = admin.get(&token, "/api/logs?level=info&limit=50");
    assert_eq!(status, 200);
    assert!(json(&logs)["lines"].as_array().is_some_and(|l| l.iter().any(|l| l["message"].as_str().unwrap_or("").contains("admin API login"))), "{logs}");
    assert_eq!(admin.get(&token, "/api/logs?level=loud").0, 400);

    let (status, certs) = admin.get(&token, "/api/certs");
    assert_eq!(status, 200);
    assert!(json(&certs)["certificates"].is_array(), "{certs}");

    // The SSE stream: at least two `stats` events within a few seconds.
    let output = Command::new("curl")
        .args(["-sN", "--max-time", "3", "-H", &format!("Authorization: Bearer {token}"), &admin.url("/api/stream")])
        .output()
        .expect("curl");
    let events = String::from_utf8_lossy(&output.stdout);
    assert!(events.matches("event: stats").count() >= 2, "{events}");
    assert!(events.contains("\"http_requests\":20"), "{events}");
}

#[test]
fn config_is_redacted_and_replaced_or_refused() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let backend = HttpBackend::start("b");
    let route_port = free_port();
    let admin = Admin::start(route_port, backend.port, "");
    let token = admin.login();
    let (status, body) = admin.get(&token, "/api/config?format=toml");
    assert_eq!(status, 200);
    assert!(!body.contains("radius-shared-secret") && !body.contains("$6$"), "secrets shown:\n{body}");
    assert!(body.contains("password_hash = \"<redacted>\"") && body.contains("secret = \"<redacted>\""), "{body}");
    let (_, json_body) = admin.get(&token, "/api/config");
    assert_eq!(json(&json_body)["generation"], 1);

    // Refused: every problem listed, nothing applied, the file untouched.
    let file_before = std::fs::read_to_string(&admin.appliance.config_path).expect("config");
    let (status, refused) = admin.put_config(
        &token,
        "application/json",
        r#"{"sections": {"routes": [{"name": "web", "match": {"ports": "x"}, "action": {"type": "bogus"}}], "http": {"speed": 1}}}"#,
    );
    assert_eq!(status, 400, "{refused}");
    let problems: Vec<String> = refused["problems"].as_array().expect("problems").iter().map(|p| p.as_str().unwrap_or("").to_string()).collect();
    assert!(problems.len() >= 3, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("match.ports")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("action.type")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("[http] speed")), "{problems:?}");
    assert_eq!(std::fs::read_to_string(&admin.appliance.config_path).expect("config"), file_before);
    let (status, body) = admin.put_config(&token, "application/toml", "this is [not toml");
    assert_eq!(status, 400, "{body}");

    // Accepted: the routes section replaced, applied at once and persisted; secrets kept.
    let new_port = free_port();
    let sections = format!(
        r#"{{"sections": {{"routes": [{{"name": "moved", "match": {{"ports": {new_port}}}, "action": {{"type": "forward", "protocol": "http", "targets": [{{"host": "127.0.0.1", "port": {}}}]}}}}]}}}}"#,
        backend.port
    );
    let (status, applied) = admin.put_config(&token, "application/json", &sections);
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["outcome"], "applied");
    assert_eq!(applied["generation"], 2);
    assert_eq!(applied["persisted"], true);
    wait_until_accepting(new_port);
    let (status, _, _) = curl(&[&format!("http://127.0.0.1:{new_port}/")]);
    assert_eq!(status, 200);
    let persisted = std::fs::read_to_string(&admin.appliance.config_path).expect("config");
    assert!(persisted.contains(&new_port.to_string()) && persisted.contains("radius-shared-secret"), "{persisted}");
    admin.appliance.wait_for_log("config replaced through the admin API", Duration::from_secs(5));
    assert!(admin.appliance.log().contains("user=ops") || admin.appliance.log().contains("user: ops"), "who changed it is not logged");

    // The whole config as TOML, sent back with its redacted values: the secrets stay.
    let (_, redacted) = admin.get(&token, "/api/config?format=toml");
    let (status, applied) = admin.put_config(&token, "application/toml", &redacted);
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["generation"], 3);
    let persisted = std::fs::read_to_string(&admin.appliance.config_path).expect("config");
    assert!(persisted.contains("radius-shared-secret") && !persisted.contains("<redacted>"), "{persisted}");
}

#[test]
fn metrics_may_be_open_and_https_is_served_with_a_certificate() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["admin.example.test".to_string()]).expect("cert");
    let cert = dir.path().join("admin.crt");
    let key = dir.path().join("admin.key");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let backend = HttpBackend::start("b");
    let admin = Admin::start(
        free_port(),
        backend.port,
        &format!("metrics_open = true\ncert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
    );
    let https = admin.base.replace("http://", "https://");
    let (status, body, _) = curl(&["--cacert", &cert.display().to_string(), "--resolve", &format!("admin.example.test:{}:127.0.0.1", https.rsplit(':').next().unwrap_or("0")), &format!("https://admin.example.test:{}/metrics", https.rsplit(':').next().unwrap_or("0"))]);
    assert_eq!(status, 200, "open /metrics over HTTPS: {body}");
    assert!(body.contains("shardgate_config_generation 1"), "{body}");
    let (status, _, _) = curl(&["-k", &format!("{https}/api/stats")]);
    assert_eq!(status, 401, "stats stay behind the token");
    // Plain HTTP on the HTTPS port gets nothing useful.
    let (status, _, _) = curl(&[&format!("{}/api/health", admin.base)]);
    assert_ne!(status, 200);
}

#[test]
fn security_events_carry_the_connection_id_in_logs_and_the_api() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let backend = HttpBackend::start("b");
    let blocked_port = free_port();
    let admin_port = free_port();
    let body = format!(
        "[[routes]]\nname = \"blocked\"\nmatch = {{ ports = {blocked_port} }}\nsecurity = {{ ip_block = [\"127.0.0.0/8\"] }}\n\
         action = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {} }}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\nusers = [{{ username = \"ops\", password_hash = \"{}\" }}]\n",
        backend.port,
        sha_crypt(PASSWORD)
    );
    let appliance = Appliance::start(&body, blocked_port);
    let admin = Admin { appliance, base: format!("http://127.0.0.1:{admin_port}") };
    let _ = std::net::TcpStream::connect(("127.0.0.1", blocked_port)).map(|mut s| {
        use std::io::Read;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read(&mut [0u8; 16]);
    });
    admin.appliance.wait_for_log("refused by ip rules", Duration::from_secs(5));
    let log = admin.appliance.log();
    let line = log.lines().find(|l| l.contains("refused by ip rules")).expect("line");
    assert!(line.contains("conn{id=") && line.contains("shardgate::security"), "{line}");
    let token = admin.login();
    let (_, logs) = admin.get(&token, "/api/logs?level=info");
    let lines = json(&logs);
    let entry = lines["lines"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["message"].as_str().unwrap_or("").contains("refused by ip rules")))
        .unwrap_or_else(|| panic!("not in /api/logs: {logs}"));
    assert_eq!(entry["target"], "shardgate::security");
    assert!(entry["message"].as_str().unwrap_or("").starts_with("[conn id="), "{entry}");
}
