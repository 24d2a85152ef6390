//! The admin API through the real binary, with curl as the client: every `/api` path refuses
//! a request without a token, login hands out a token and failed logins are limited (429),
//! stats and Prometheus metrics carry live counters and latency percentiles after traffic, the
//! config is shown with its secrets redacted, a replaced config is applied and persisted (or
//! refused with every problem listed, the running config untouched), `/metrics` may be left
//! open, and HTTPS is served with a configured certificate.

use std::process::Command;
use std::time::{Duration, Instant};

use shardgate_tests::backends::HttpBackend;
use shardgate_tests::{ensure_tool, free_port, sha_crypt, wait_until_accepting, Appliance};

const PASSWORD: &str = "correct horse battery";

fn tools() -> bool {
    ensure_tool("curl", &["--version"], "curl") && ensure_tool("openssl", &["version"], "openssl")
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
    for path in ["/api/stats", "/api/config", "/api/logs", "/api/certs", "/api/queue", "/api/stream", "/api/nothing-here", "/metrics"] {
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
    // With a token, an unknown API path is a 404, not a 401; so is the queue without [email].
    let token = admin.login();
    assert_eq!(admin.get(&token, "/api/nothing-here").0, 404);
    assert_eq!(admin.get(&token, "/api/queue").0, 404);
}

#[test]
fn the_mail_queue_is_listed() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let smtp_port = free_port();
    let admin_port = free_port();
    // Forwarded to a port nobody listens on: the delivery is deferred and the message stays.
    let closed_port = free_port();
    let body = format!(
        "[email]\nhostname = \"mx.example.test\"\nlisten = [\"127.0.0.1\"]\nlocal_domains = [\"example.test\"]\n\
         [email.ports]\nsmtp = {smtp_port}\n\
         [[email.routes]]\nname = \"relay\"\nmatch = {{ recipients = \"*@example.test\" }}\n\
         action = {{ type = \"forward\", host = \"127.0.0.1\", port = {closed_port} }}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\nusers = [{{ username = \"ops\", password_hash = \"{}\" }}]\n",
        sha_crypt(PASSWORD)
    );
    let appliance = Appliance::start(&body, smtp_port);
    let admin = Admin { appliance, base: format!("http://127.0.0.1:{admin_port}") };
    // Python's smtplib (Debian's python3) as the client.
    let sent = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import smtplib,sys; s=smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10);              s.sendmail('sender@example.org', ['rcpt@example.test'], 'Subject: queued\\r\\n\\r\\nhello\\r\\n'); s.quit()",
            &smtp_port.to_string(),
        ])
        .output()
        .expect("python3 smtplib");
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let token = admin.login();
    let (status, body) = admin.get(&token, "/api/queue");
    assert_eq!(status, 200, "{body}");
    let queue = json(&body);
    assert_eq!(queue["messages"], 1, "{queue}");
    assert_eq!(queue["list"][0]["sender"], "sender@example.org", "{queue}");
    assert!(queue["list"][0]["recipients"].to_string().contains("rcpt@example.test"), "{queue}");
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
    // Stats are merged about every second: wait for the requests and their latencies to show
    // (a request is counted when it arrives, its latency once its response is sent; the two
    // may reach the control core in different reports).
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let (status, body) = admin.get(&token, "/api/stats");
        assert_eq!(status, 200);
        let stats = json(&body);
        let complete = stats["routes"]["web"]["http_requests"].as_u64() == Some(20)
            && stats["latency"]["http_request"]["count"].as_u64() == Some(20);
        if complete || Instant::now() > deadline {
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

    // A user removed from [admin] loses access at once, token or not.
    let listen = admin.base.trim_start_matches("http://").to_string();
    let sections = format!(
        r#"{{"sections": {{"admin": {{"listen": "{listen}", "users": [{{"username": "other", "password_hash": "{}"}}]}}}}}}"#,
        sha_crypt("other-password")
    );
    let (status, applied) = admin.put_config(&token, "application/json", &sections);
    assert_eq!(status, 200, "{applied}");
    assert_eq!(admin.get(&token, "/api/stats").0, 401, "the removed user's token still works");
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

/// A next hop that refuses every recipient with `550 5.1.1` (a hard bounce); serves until
/// the test ends.
fn refusing_next_hop() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok(mut writer) = stream.try_clone() else { return };
                let _ = writer.write_all(b"220 refuse.test ESMTP\r\n");
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let command = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match command.as_str() {
                        "EHLO" | "HELO" => b"250 refuse.test\r\n",
                        "RCPT" => b"550 5.1.1 <nobody@refuse.test>: Recipient address rejected: no such user\r\n",
                        "QUIT" => b"221 2.0.0 Bye\r\n",
                        _ => b"250 2.0.0 Ok\r\n",
                    };
                    if writer.write_all(reply).is_err() || command == "QUIT" {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The correlation id in a log line: the `id` of its `conn{id=...}` span.
fn correlation_of(line: &str) -> Option<&str> {
    let start = line.find("conn{id=")? + "conn{id=".len();
    line[start..].split('}').next()
}

#[test]
fn one_correlation_id_follows_a_message_from_its_session_to_delivery_and_bounce() {
    if !tools() || !ensure_tool("swaks", &["--version"], "swaks") {
        eprintln!("curl/openssl/swaks missing; skipping");
        return;
    }
    let smtp_port = free_port();
    let admin_port = free_port();
    let closed_port = free_port();
    let refusing = refusing_next_hop();
    // One message, three fates: a local Maildir (delivered), a next hop that refuses the
    // recipient (bounced, the bounce delivered to the sender's Maildir) and a port nobody
    // listens on (deferred, stays queued). Mail from example.org leaves DKIM-signed.
    let body = format!(
        "[email]\nhostname = \"mx.example.test\"\nlisten = [\"127.0.0.1\"]\n\
         local_domains = [\"example.test\", \"example.org\", \"refuse.test\", \"down.test\"]\n\
         [email.ports]\nsmtp = {smtp_port}\n\
         [[email.domains]]\nname = \"example.org\"\ndkim = {{ selector = \"s1\", algorithm = \"ed25519-sha256\" }}\n\
         [[email.routes]]\nname = \"local\"\nmatch = {{ recipients = [\"*@example.test\", \"*@example.org\"] }}\naction = {{ type = \"deliver\" }}\n\
         [[email.routes]]\nname = \"refusing\"\nmatch = {{ recipients = \"*@refuse.test\" }}\n\
         action = {{ type = \"forward\", host = \"127.0.0.1\", port = {refusing}, starttls = \"none\" }}\n\
         [[email.routes]]\nname = \"down\"\nmatch = {{ recipients = \"*@down.test\" }}\n\
         action = {{ type = \"forward\", host = \"127.0.0.1\", port = {closed_port}, starttls = \"none\" }}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\nusers = [{{ username = \"ops\", password_hash = \"{}\" }}]\n",
        sha_crypt(PASSWORD)
    );
    let appliance = Appliance::start(&body, smtp_port);
    let admin = Admin { appliance, base: format!("http://127.0.0.1:{admin_port}") };
    // The first DKIM key is made by the control core's first maintenance tick.
    admin.appliance.wait_for_log("DKIM key rotation step", Duration::from_secs(20));
    let sent = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp_port}"), "--from", "sender@example.org"])
        .args(["--to", "alice@example.test,nobody@refuse.test,later@down.test", "--header", "Subject: one story"])
        .args(["--timeout", "20"])
        .output()
        .expect("swaks");
    let transcript = String::from_utf8_lossy(&sent.stdout).into_owned();
    assert!(sent.status.success(), "swaks:\n{transcript}{}", String::from_utf8_lossy(&sent.stderr));
    let queue_id = transcript
        .lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no queue id in:\n{transcript}"));

    // The session's line names the queue id under the connection's correlation id.
    admin.appliance.wait_for_log("bounce queued to the sender", Duration::from_secs(20));
    admin.appliance.wait_for_log("later@down.test", Duration::from_secs(20));
    // The bounce is a message of its own, delivered to the sender's Maildir.
    admin.appliance.wait_for_log("delivered to=sender@example.org", Duration::from_secs(20));
    let log = admin.appliance.log();
    let session = log
        .lines()
        .find(|l| l.contains("message queued") && l.contains(&queue_id))
        .unwrap_or_else(|| panic!("no session line for {queue_id}:\n{log}"));
    let id = correlation_of(session).unwrap_or_else(|| panic!("no conn id: {session}")).to_string();
    assert_eq!(id.len(), 16, "{session}");
    // Every step on the control core carries the same id.
    let story: Vec<&str> = log.lines().filter(|l| correlation_of(l) == Some(id.as_str())).collect();
    eprintln!("the story of conn {id}:\n{}", story.join("\n"));
    let has = |needles: &[&str]| story.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(has(&["delivered", "to=alice@example.test", "relay=maildir", &queue_id]), "local delivery:\n{}", story.join("\n"));
    assert!(has(&["bounced", "to=nobody@refuse.test", "5.1.1", &queue_id]), "bounce:\n{}", story.join("\n"));
    assert!(has(&["deferred", "to=later@down.test", "attempt=1", &queue_id]), "deferral:\n{}", story.join("\n"));
    assert!(has(&["DKIM signed", "domain=example.org", "selector=s1"]), "DKIM:\n{}", story.join("\n"));
    assert!(has(&["bounce queued to the sender"]), "{}", story.join("\n"));
    // The bounce itself (a new queue id) is delivered to the sender under the same id.
    assert!(
        story.iter().any(|l| l.contains("delivered") && l.contains("to=sender@example.org") && !l.contains(&queue_id)),
        "the bounce's delivery:\n{}",
        story.join("\n")
    );

    // The admin API: the queue view shows the id, and the logs endpoint finds the story.
    let token = admin.login();
    let (status, body) = admin.get(&token, "/api/queue");
    assert_eq!(status, 200, "{body}");
    let queue = json(&body);
    assert_eq!(queue["list"][0]["id"], queue_id.as_str(), "{queue}");
    assert_eq!(queue["list"][0]["correlation_id"], id.as_str(), "{queue}");
    let (status, body) = admin.get(&token, &format!("/api/queue/{queue_id}"));
    assert_eq!(status, 200, "{body}");
    let message = json(&body);
    assert_eq!(message["status"]["status"], "deferred", "{message}");
    assert_eq!(message["message"]["correlation_id"], id.as_str(), "{message}");
    let (status, body) = admin.get(&token, &format!("/api/logs?id={id}"));
    assert_eq!(status, 200, "{body}");
    let lines: Vec<serde_json::Value> = json(&body)["lines"].as_array().cloned().unwrap_or_default();
    assert!(lines.iter().all(|l| l["correlation"] == id.as_str()), "{body}");
    let text: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(text.iter().any(|m| m.contains("message queued")), "{text:?}");
    assert!(text.iter().any(|m| m.contains("delivered") && m.contains("alice@example.test")), "{text:?}");
    assert!(text.iter().any(|m| m.contains("deferred") && m.contains("later@down.test")), "{text:?}");
    // The CLI shows it too.
    let show = Command::new(shardgate_tests::shardgate_bin())
        .args(["queue", "show", &queue_id, "--config"])
        .arg(&admin.appliance.config_path)
        .output()
        .expect("shardgate queue show");
    assert!(String::from_utf8_lossy(&show.stdout).contains(&id), "{}", String::from_utf8_lossy(&show.stdout));

    // A relay attempt (no route takes the recipient) is a security event of its session.
    let refused = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp_port}"), "--from", "x@example.net", "--to", "victim@elsewhere.invalid"])
        .output()
        .expect("swaks");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("550 5.7.1"), "{}", String::from_utf8_lossy(&refused.stdout));
    admin.appliance.wait_for_log("SMTP relay attempt refused", Duration::from_secs(5));
    let log = admin.appliance.log();
    let line = log.lines().find(|l| l.contains("SMTP relay attempt refused")).unwrap_or_default();
    assert!(line.contains("shardgate::security") && line.contains("victim@elsewhere.invalid") && correlation_of(line).is_some(), "{line}");
}

#[test]
fn queue_actions_through_the_api_are_authenticated_and_audited() {
    if !tools() {
        eprintln!("curl/openssl missing; skipping");
        return;
    }
    let smtp_port = free_port();
    let admin_port = free_port();
    let appliance = shardgate_tests::start_mail_with_admin_api(smtp_port, admin_port, PASSWORD);
    let admin = Admin { appliance, base: format!("http://127.0.0.1:{admin_port}") };
    let first = shardgate_tests::send_with_smtplib(smtp_port, "first");
    let second = shardgate_tests::send_with_smtplib(smtp_port, "second");
    let token = admin.login();
    let attempts = |id: &str| -> u64 {
        let (_, body) = admin.get(&token, &format!("/api/queue/{id}"));
        json(&body)["message"]["recipients"][0]["attempts"].as_u64().unwrap_or(0)
    };
    let wait_attempts = |id: &str, n: u64| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while attempts(id) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        attempts(id)
    };
    // The first attempt fails at once (nothing listens); the next one is minutes away.
    assert_eq!(wait_attempts(&first, 1), 1);

    // Without a token nothing happens.
    let call = |method: &str, path: &str, auth: Option<&str>| {
        let header = auth.map(|token| format!("Authorization: Bearer {token}"));
        let mut args = vec!["-X", method];
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        let url = admin.url(path);
        args.push(&url);
        let (status, body, _) = curl(&args);
        (status, body)
    };
    let post = |path: &str, auth: Option<&str>| call("POST", path, auth);
    let delete = |path: &str, auth: Option<&str>| call("DELETE", path, auth);
    assert_eq!(post(&format!("/api/queue/{first}/retry"), None).0, 401);
    assert_eq!(post("/api/queue/retry", Some("made-up")).0, 401);
    assert_eq!(delete(&format!("/api/queue/{first}"), None).0, 401);
    assert_eq!(attempts(&first), 1, "an unauthenticated retry ran");

    // Retry now: attempted again within a second or two instead of minutes.
    let (status, body) = post(&format!("/api/queue/{first}/retry"), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["retrying"][0], first.as_str());
    assert_eq!(wait_attempts(&first, 2), 2, "retry now did not attempt again");
    admin.appliance.wait_for_log("mail queue action through the admin API", Duration::from_secs(5));
    let log = admin.appliance.log();
    let audit = log
        .lines()
        .find(|l| l.contains("mail queue action through the admin API") && l.contains("action=retry"))
        .unwrap_or_else(|| panic!("no audit line:\n{log}"));
    assert!(audit.contains("shardgate::audit") && audit.contains("user=ops") && audit.contains(&first), "{audit}");
    assert!(correlation_of(audit).is_some(), "the audit line is in the message's story: {audit}");

    // Bad and unknown ids.
    assert_eq!(post("/api/queue/not-an-id/retry", Some(&token)).0, 400);
    let (status, body) = post("/api/queue/00000000000000FF/retry", Some(&token));
    assert_eq!(status, 404, "{body}");
    assert!(json(&body)["error"].as_str().unwrap_or("").contains("no queued message"), "{body}");

    // Flush: both messages.
    let (status, body) = post("/api/queue/retry", Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["retrying"].as_array().map(Vec::len), Some(2), "{body}");
    admin.appliance.wait_for_log("mail queue flushed through the admin API", Duration::from_secs(5));

    // Delete: gone from the queue, its status says deleted, the CLI agrees.
    let (status, body) = delete(&format!("/api/queue/{second}"), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["deleted"], second.as_str());
    let (_, body) = admin.get(&token, "/api/queue");
    let queue = json(&body);
    assert_eq!(queue["messages"], 1, "{queue}");
    assert_eq!(queue["list"][0]["id"], first.as_str(), "{queue}");
    let (status, body) = admin.get(&token, &format!("/api/queue/{second}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"]["status"], "deleted", "{body}");
    assert_eq!(delete(&format!("/api/queue/{second}"), Some(&token)).0, 404, "deleted twice");
    admin.appliance.wait_for_log("mail queue action through the admin API refused", Duration::from_secs(5));
    let log = admin.appliance.log();
    assert!(log.lines().any(|l| l.contains("action=delete") && l.contains(&second) && l.contains("user=ops")), "{log}");
}
