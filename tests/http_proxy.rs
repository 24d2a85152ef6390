//! The HTTP/1.1 reverse proxy through the real binary, with curl as the client and a Python
//! HTTP/1.1 backend: forwarding headers, keep-alive on both sides (backend pool), chunked
//! uploads and `Expect: 100-continue`, routing by Host and path, redirect and static
//! serving, backend errors (502/504), rate and connection limits (429), WebSocket upgrade,
//! and HTTPS termination with ALPN.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use shardgate_tests::backends::{raw_exchange, HttpBackend};
use shardgate_tests::{ensure_tool, free_port, Appliance};

fn have_curl() -> bool {
    ensure_tool("curl", &["--version"], "curl")
}

/// Runs curl with `args`; returns stdout (curl's own failures are reported by the caller's
/// assertions on the output).
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The head carries one `Date` (RFC 9110 §6.6.1) within a minute of now.
fn assert_dated_now(head: &str) {
    let dates: Vec<&str> = head.lines().filter_map(|l| l.strip_prefix("Date: ")).map(str::trim).collect();
    assert_eq!(dates.len(), 1, "one Date field: {head}");
    let date = httpdate::parse_http_date(dates[0]).unwrap_or_else(|e| panic!("{e}: {head}"));
    let skew = std::time::SystemTime::now().duration_since(date).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(60), "{head}");
}

fn forward_route(name: &str, port: u16, target: u16, extra_match: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ ports = {port}{extra_match} }}\naction = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {target} }}] }}\n"
    )
}

#[test]
fn forwards_with_forwarding_headers_and_without_hop_by_hop_fields() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("one");
    let port = free_port();
    let app = Appliance::start(&forward_route("web", port, backend.port, ""), port);
    let url = format!("http://127.0.0.1:{port}/echo/a?b=c");
    let body = curl(&[&url, "-H", "Connection: keep-alive, X-Secret", "-H", "X-Secret: hop", "-H", "Keep-Alive: timeout=5", "-H", "X-Forwarded-For: 6.6.6.6"]);
    let seen = json(&body);
    assert_eq!(seen["path"], "/echo/a?b=c");
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "untrusted incoming X-Forwarded-For is replaced: {headers}");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("127.0.0.1:{port}"));
    assert_eq!(headers["forwarded"], format!("for=127.0.0.1;proto=http;host=\"127.0.0.1:{port}\""));
    assert_eq!(headers["host"], format!("127.0.0.1:{port}"));
    assert!(headers.get("x-secret").is_none(), "a field named in Connection is hop-by-hop: {headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
    let stats = app.stats();
    assert_eq!(stats["routes"]["web"]["http_requests"], 1);
    assert_eq!(stats["routes"]["web"]["http_2xx"], 1);
}

#[test]
fn keep_alive_on_both_sides_reuses_one_backend_connection() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("pool");
    let port = free_port();
    let _app = Appliance::start(&forward_route("web", port, backend.port, ""), port);
    let url = format!("http://127.0.0.1:{port}/echo");
    // Three requests on one client connection: one connect, and the backend sees one
    // connection (the pool hands it back after each response).
    let out = curl(&["-w", "%{num_connects} %header{x-backend-connection}\n", "-o", "/dev/null", &url, "-o", "/dev/null", &url, "-o", "/dev/null", &url]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("1 "), "{out}");
    assert!(lines[1].starts_with("0 ") && lines[2].starts_with("0 "), "client connection reused: {out}");
    let ids: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "backend connection reused: {out}");
    // New client connections later get pooled backend connections: each shard keeps its own
    // pool, so the backend sees at most one connection per shard.
    let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut seen: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    for _ in 0..8 {
        seen.push(curl(&["-o", "/dev/null", "-w", "%header{x-backend-connection}", &url]));
    }
    seen.sort();
    seen.dedup();
    assert!(seen.len() <= shards, "backend connections {seen:?} for {shards} shards: the pool is not reused");
}

#[test]
fn chunked_upload_and_expect_continue_stream_the_body() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("upload");
    let port = free_port();
    let _app = Appliance::start(&forward_route("web", port, backend.port, ""), port);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("upload.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write upload");
    let expected = sha256_hex(&data);
    let url = format!("http://127.0.0.1:{port}/echo/upload");
    // Chunked (curl -T with Transfer-Encoding: chunked).
    let chunked = json(&curl(&["-T", file.to_str().expect("path"), "-H", "Transfer-Encoding: chunked", &url]));
    assert_eq!(chunked["body_length"], data.len());
    assert_eq!(chunked["body_sha256"], expected);
    assert_eq!(chunked["headers"]["transfer-encoding"], "chunked");
    // Content-Length with Expect: 100-continue (curl waits for our 100 before the body).
    let out = curl(&["--data-binary", &format!("@{}", file.display()), "-H", "Expect: 100-continue", "--expect100-timeout", "10", "-w", "\n%{time_total}", &url]);
    let (body, _time) = out.rsplit_once('\n').expect("body and time");
    let posted = json(body);
    assert_eq!(posted["body_length"], data.len());
    assert_eq!(posted["body_sha256"], expected);
    assert!(posted["headers"].get("expect").is_none(), "Expect is answered by the proxy, not forwarded");
}

fn sha256_hex(data: &[u8]) -> String {
    let output = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(data)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn responses_of_every_framing_reach_the_client() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("framing");
    let port = free_port();
    let _app = Appliance::start(&forward_route("web", port, backend.port, ""), port);
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(curl(&[&format!("{base}/chunked")]), "part-1 part-2 part-3");
    let closed = curl(&[&format!("{base}/close")]);
    assert_eq!(closed, "closed-body-".repeat(1000));
    // Close-delimited → chunked for an HTTP/1.1 client, so its connection survives.
    let head = curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/close")]);
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let big = curl(&[&format!("{base}/big/5000000")]);
    assert_eq!(big.len(), 5_000_000);
    assert!(big.starts_with("0123456789abcdef0123"));
    // HEAD: the backend's Content-Length, no body.
    let head = curl(&["-I", &format!("{base}/big/1234")]);
    assert!(head.contains("Content-Length: 1234"), "{head}");
    // HTTP/1.0 client: close-delimited answer.
    let http10 = curl(&["--http1.0", &format!("{base}/chunked")]);
    assert_eq!(http10, "part-1 part-2 part-3");
}

#[test]
fn routes_by_host_and_path_and_answers_404_without_a_route() {
    if !have_curl() {
        return;
    }
    let site = HttpBackend::start("site");
    let api = HttpBackend::start("api");
    let port = free_port();
    let mut config = forward_route("site", port, site.port, ", domains = [\"www.example.test\"]");
    config.push_str(&forward_route("api", port, api.port, ", domains = [\"www.example.test\", \"*.api.test\"], path = \"/api\""));
    let _app = Appliance::start(&config, port);
    let tag = |host: &str, path: &str| {
        curl(&["-o", "/dev/null", "-w", "%{http_code} %header{x-backend}", "-H", &format!("Host: {host}"), &format!("http://127.0.0.1:{port}{path}")])
    };
    assert_eq!(tag("www.example.test", "/echo"), "200 site");
    assert_eq!(tag("WWW.Example.Test:8080", "/api/echo"), "200 api");
    assert_eq!(tag("www.example.test", "/apiary"), "200 site");
    assert_eq!(tag("v1.api.test", "/api"), "200 api");
    assert_eq!(tag("v1.api.test", "/other"), "404 ");
    assert_eq!(tag("unknown.test", "/echo"), "404 ");
}

#[test]
fn redirect_action_sends_the_classic_https_redirect() {
    if !have_curl() {
        return;
    }
    let port = free_port();
    let config = format!(
        "[[routes]]\nname = \"to-https\"\nmatch = {{ ports = {port} }}\naction = {{ type = \"redirect\", to = \"https://{{host}}{{path}}\" }}\n"
    );
    let _app = Appliance::start(&config, port);
    let head = curl(&["-I", "-H", "Host: shop.example.test:80", &format!("http://127.0.0.1:{port}/cart?id=7")]);
    assert!(head.starts_with("HTTP/1.1 301 Moved Permanently"), "{head}");
    assert!(head.contains("Location: https://shop.example.test/cart?id=7"), "{head}");
    assert_dated_now(&head);
    // A request body we never read must not destroy the answer (lingering close).
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body.bin");
    std::fs::write(&body, vec![b'x'; 2_000_000]).expect("body");
    let code = curl(&["-o", "/dev/null", "-w", "%{http_code}", "--data-binary", &format!("@{}", body.display()), &format!("http://127.0.0.1:{port}/upload")]);
    assert_eq!(code, "301");
}

#[test]
fn serve_action_serves_files_with_etags_ranges_and_no_escape() {
    if !have_curl() {
        return;
    }
    let root = tempfile::tempdir().expect("root");
    std::fs::write(root.path().join("index.html"), "<h1>home</h1>\n").expect("index");
    std::fs::create_dir(root.path().join("docs")).expect("docs");
    std::fs::write(root.path().join("docs").join("app.css"), "body{}\n").expect("css");
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(root.path().join("big.bin"), &big).expect("big");
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), "secret").expect("secret");
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("leak")).expect("symlink");
    let port = free_port();
    let config = format!(
        "[[routes]]\nname = \"files\"\nmatch = {{ ports = {port} }}\naction = {{ type = \"serve\", root = \"{}\" }}\n",
        root.path().display()
    );
    let _app = Appliance::start(&config, port);
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(curl(&[&format!("{base}/")]), "<h1>home</h1>\n");
    let head = curl(&["-D", "-", "-o", "/dev/null", &format!("{base}/docs/app.css")]);
    assert!(head.contains("Content-Type: text/css"), "{head}");
    assert_dated_now(&head);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .map(str::trim)
        .expect("ETag")
        .to_string();
    let revalidated = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("If-None-Match: {etag}"), &format!("{base}/docs/app.css")]);
    assert_eq!(revalidated, "304");
    let ranged = curl(&["-D", "-", "-r", "10-19", &format!("{base}/big.bin")]);
    assert!(ranged.starts_with("HTTP/1.1 206"), "{ranged}");
    assert!(ranged.contains("Content-Range: bytes 10-19/2000000"), "{ranged}");
    let whole = Command::new("curl").args(["-sS", &format!("{base}/big.bin")]).output().expect("curl");
    assert_eq!(whole.stdout, big, "the sendfile path delivers the whole file");
    let dir = curl(&["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", &format!("{base}/docs")]);
    assert_eq!(dir, format!("301 {base}/docs/"));
    assert_eq!(curl(&["-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", &format!("{base}/../../etc/passwd")]), "404");
    assert_eq!(curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/%2e%2e/%2e%2e/etc/passwd")]), "404");
    assert_eq!(curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/leak")]), "404", "symlink out of the root");
    assert_eq!(curl(&["-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", &format!("{base}/index.html")]), "405");
    let head_only = curl(&["-I", &format!("{base}/big.bin")]);
    assert!(head_only.contains("Content-Length: 2000000"), "{head_only}");
}

#[test]
fn backend_failures_become_502_and_504() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("slow");
    let port = free_port();
    let closed_port = free_port();
    let mut config = String::from("[http]\nupstream_timeout = \"1s\"\n\n");
    config.push_str(&forward_route("live", port, backend.port, ", path = \"/\""));
    config.push_str(&forward_route("dead", port, closed_port, ", path = \"/dead\""));
    let _app = Appliance::start(&config, port);
    let code = |path: &str| curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}{path}")]);
    assert_eq!(code("/dead/x"), "502");
    assert_eq!(code("/slow/3"), "504");
    assert_eq!(code("/garbage"), "502");
    assert_eq!(code("/status/503"), "503");
    assert_eq!(code("/echo"), "200");
}

#[test]
fn request_rate_and_connection_limits_answer_429() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("limited");
    let port = free_port();
    let config = format!(
        "{}[routes.limits]\nrequests = \"1r/m\"\nburst = 1\nnodelay = true\n",
        forward_route("web", port, backend.port, "")
    );
    let app = Appliance::start(&config, port);
    let url = format!("http://127.0.0.1:{port}/echo");
    let out = curl(&["-w", "%{http_code} %header{retry-after}\n", "-o", "/dev/null", &url, "-o", "/dev/null", &url, "-o", "/dev/null", &url]);
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(codes[0], "200 ", "{out}");
    assert_eq!(codes[1], "200 ", "burst of 1: {out}");
    assert!(codes[2].starts_with("429 "), "{out}");
    let retry: u64 = codes[2].trim_start_matches("429 ").parse().expect("Retry-After seconds");
    assert!((1..=120).contains(&retry), "{out}");
    assert_eq!(app.stats()["routes"]["web"]["http_rate_limited"], 1);

    let port = free_port();
    let config = format!("{}[routes.limits]\nconnections_per_ip = 1\n", forward_route("conn", port, backend.port, ""));
    let _app = Appliance::start(&config, port);
    // The appliance runs one shard per CPU; each shard allows ceil(1 / shards) = 1. Hold
    // connections until one is refused on a shard that already has one.
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..16 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).expect("status line");
        if &buf == b"HTTP/1.1 429" {
            refused = true;
            break;
        }
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    assert!(refused, "a second connection per IP on one shard is refused");
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    let backend = HttpBackend::start("ws");
    let port = free_port();
    let _app = Appliance::start(&forward_route("ws", port, backend.port, ""), port);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for round in 0..3 {
        let frame = format!("frame-{round}-").repeat(500);
        s.write_all(frame.as_bytes()).expect("send");
        let mut back = vec![0u8; frame.len()];
        s.read_exact(&mut back).expect("echo through the tunnel");
        assert_eq!(back, frame.as_bytes());
    }
}

#[test]
fn request_smuggling_and_oversized_heads_are_refused() {
    let backend = HttpBackend::start("guarded");
    let port = free_port();
    let config = format!("[http]\nheader_timeout = \"1s\"\nmax_request_line = 2048\n\n{}", forward_route("web", port, backend.port, ""));
    let _app = Appliance::start(&config, port);
    let wait = Duration::from_secs(5);
    let status = |request: &[u8]| {
        let answer = raw_exchange(port, request, false, wait);
        answer.split("\r\n").next().unwrap_or_default().to_string()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("differing CLs", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(), "HTTP/1.1 400"),
        ("obs-fold", b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("TE not chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 501"),
        ("no Host", b"GET /echo HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("two Hosts", b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("space before colon", b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nabcde".to_vec(), "HTTP/1.1 400"),
        ("bare LF", b"GET /echo HTTP/1.1\nHost: x\n\n".to_vec(), "HTTP/1.1 400"),
        ("long request line", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(4000)).into_bytes(), "HTTP/1.1 414"),
        ("huge header", format!("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000)).into_bytes(), "HTTP/1.1 431"),
        ("many headers", format!("GET /echo HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..150).map(|i| format!("X-{i}: v\r\n")).collect::<String>()).into_bytes(), "HTTP/1.1 431"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "HTTP/1.1 505"),
    ];
    for (what, request, expected) in cases {
        let got = status(&request);
        assert!(got.starts_with(expected), "{what}: {got}");
    }
    // Slow headers: a head that is not finished within header_timeout gets 408.
    let slow = raw_exchange(port, b"GET /echo HTTP/1.1\r\nHost: x\r\n", false, wait);
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    // After a smuggling attempt, nothing reached the backend as a second request: a normal
    // request still works.
    let ok = raw_exchange(port, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false, wait);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = HttpBackend::start("pipe");
    let port = free_port();
    let _app = Appliance::start(&forward_route("web", port, backend.port, ""), port);
    let answer = raw_exchange(
        port,
        b"GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /echo/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    let order: Vec<usize> = ["/echo/1", "/echo/2", "/echo/3"].iter().map(|p| answer.find(&format!("\"path\": \"{p}\"")).expect(p)).collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3);
}

#[test]
fn https_termination_forwards_with_proto_https_and_alpn_http11() {
    if !have_curl() || !ensure_tool("openssl", &["version"], "openssl") {
        return;
    }
    let backend = HttpBackend::start("tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["secure.example.test".to_string()]).expect("cert");
    let cert = dir.path().join("site.crt");
    let key = dir.path().join("site.key");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let port = free_port();
    let plain = free_port();
    let config = format!(
        "[[certificates]]\nname = \"site\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[routes]]\nname = \"secure\"\nmatch = {{ ports = {port}, domains = [\"secure.example.test\"] }}\n\
         action = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {} }}], tls = {{ mode = \"terminate\", certificate = \"site\" }} }}\n\n\
         [[routes]]\nname = \"to-https\"\nmatch = {{ ports = {plain} }}\naction = {{ type = \"redirect\", to = \"https://{{host}}:{port}{{path}}\" }}\n",
        cert.display(),
        key.display(),
        backend.port
    );
    let app = Appliance::start(&config, port);
    let resolve = format!("secure.example.test:{port}:127.0.0.1");
    let url = format!("https://secure.example.test:{port}/echo");
    let seen = json(&curl(&["--cacert", cert.to_str().expect("path"), "--resolve", &resolve, &url]));
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    // Redirect from the plain port, followed to the HTTPS route, with keep-alive.
    let plain_resolve = format!("secure.example.test:{plain}:127.0.0.1");
    let followed = curl(&[
        "-L",
        "--cacert",
        cert.to_str().expect("path"),
        "--resolve",
        &plain_resolve,
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_redirects}",
        &format!("http://secure.example.test:{plain}/echo"),
    ]);
    assert_eq!(followed, "200 1");
    let keep = curl(&["--cacert", cert.to_str().expect("path"), "--resolve", &resolve, "-w", "%{num_connects}\n", "-o", "/dev/null", &url, "-o", "/dev/null", &url]);
    assert_eq!(keep, "1\n0\n", "TLS keep-alive");
    // ALPN: http/1.1 is selected.
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "secure.example.test", "-alpn", "h2,http/1.1", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    child.stdin.take().expect("stdin").write_all(b"GET /echo HTTP/1.1\r\nHost: secure.example.test\r\nConnection: close\r\n\r\n").expect("request");
    let output = child.wait_with_output().expect("s_client");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    let stats = app.stats();
    assert!(stats["routes"]["secure"]["tls_handshakes"].as_u64().unwrap_or(0) >= 4, "{stats}");
}

#[test]
fn dns_over_https_answers_curl_as_a_doh_client_and_json_queries() {
    if !have_curl() {
        return;
    }
    let backend = HttpBackend::start("doh-site");
    let dir = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["dns.example.test".to_string()]).expect("cert");
    let cert = dir.path().join("dns.crt");
    let key = dir.path().join("dns.key");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let port = free_port();
    let dns_port = free_port();
    let config = format!(
        "[[certificates]]\nname = \"dns\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         default = true\n\n[[routes]]\nname = \"https\"\nmatch = {{ ports = {port} }}\n\
         action = {{ type = \"forward\", protocol = \"http\", targets = [{{ host = \"127.0.0.1\", port = {} }}], tls = {{ mode = \"terminate\" }} }}\n\n\
         [dns]\nudp = [\"127.0.0.1:{dns_port}\"]\ndoh_domain = \"dns.example.test\"\n\n\
         [[dns.zones]]\norigin = \"example.test.\"\nsoa = {{ mname = \"ns1\", rname = \"hostmaster\", serial = 1 }}\n\
         records = [\n  {{ name = \"@\", type = \"NS\", value = \"ns1\" }},\n  {{ name = \"ns1\", type = \"A\", value = \"127.0.0.1\" }},\n  {{ name = \"www\", type = \"A\", ttl = 300, value = \"127.0.0.1\" }},\n]\n",
        cert.display(),
        key.display(),
        backend.port
    );
    let app = Appliance::start(&config, port);
    let cacert = cert.to_str().expect("path");
    let resolve = format!("dns.example.test:{port}:127.0.0.1");
    // curl resolves www.example.test through our DoH endpoint (RFC 8484 POST), then fetches
    // from the backend through the same appliance.
    let fetched = curl(&[
        "--cacert",
        cacert,
        "--resolve",
        &resolve,
        "--doh-url",
        &format!("https://dns.example.test:{port}/dns-query"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{remote_ip}",
        &format!("http://www.example.test:{}/echo", backend.port),
    ]);
    assert_eq!(fetched, "200 127.0.0.1", "curl resolved www.example.test over DoH");
    // RFC 8484 GET (the spec's example query for www.example.com, here answered REFUSED: not
    // our zone) and the JSON format.
    let get = curl(&["--cacert", cacert, "--resolve", &resolve, "-D", "-", "-o", "/dev/null", &format!("https://dns.example.test:{port}/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB")]);
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(get.contains("Content-Type: application/dns-message"), "{get}");
    let resolved = json(&curl(&["--cacert", cacert, "--resolve", &resolve, &format!("https://dns.example.test:{port}/resolve?name=www.example.test&type=A")]));
    assert_eq!(resolved["Status"], 0);
    assert_eq!(resolved["Answer"][0]["data"], "127.0.0.1");
    assert_eq!(resolved["Answer"][0]["TTL"], 300);
    // Bad input: a broken parameter is 400, a wrong media type 415, PUT 405.
    let code = |args: &[&str]| {
        let mut all = vec!["--cacert", cacert, "--resolve", &resolve, "-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        curl(&all)
    };
    let base = format!("https://dns.example.test:{port}/dns-query");
    assert_eq!(code(&[&format!("{base}?dns=!!!")]), "400");
    assert_eq!(code(&["-H", "Content-Type: text/plain", "--data-binary", "abc", &base]), "415");
    assert_eq!(code(&["-X", "PUT", &base]), "405");
    // Other hosts on the same port still reach the route.
    let other = curl(&["-k", "--resolve", &format!("site.test:{port}:127.0.0.1"), "-o", "/dev/null", "-w", "%header{x-backend}", &format!("https://site.test:{port}/dns-query")]);
    assert_eq!(other, "doh-site");
    let stats = app.stats();
    assert!(stats["dns"]["doh_queries"].as_u64().unwrap_or(0) >= 3, "{}", stats["dns"]);
}

#[test]
fn graceful_stop_closes_idle_keep_alive_connections_promptly() {
    let backend = HttpBackend::start("drain");
    let port = free_port();
    let mut app = Appliance::start(&forward_route("web", port, backend.port, ""), port);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(8))).expect("timeout");
    idle.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut buf = vec![0u8; 65536];
    let n = idle.read(&mut buf).expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The connection is idle (keep-alive). A graceful stop closes it within about a second
    // instead of waiting for the 5 s drain deadline.
    let started = std::time::Instant::now();
    app.signal(libc::SIGTERM);
    assert!(matches!(idle.read(&mut buf), Ok(0)), "idle keep-alive connection closed by the drain");
    assert_eq!(app.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "drain took {:?}", started.elapsed());
}
