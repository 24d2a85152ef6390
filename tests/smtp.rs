//! The SMTP gateway with real clients: swaks (plain, STARTTLS, implicit TLS, AUTH PLAIN/LOGIN,
//! pipelining), Python smtplib, raw sockets for every error path, and a crash test (SIGKILL
//! after 250, restart, every acknowledged message still queued).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shardgate_tests::{ensure_tool, free_port, Appliance};

/// `alice` / `Hello world!` (the SHA-crypt specification's reference vector).
const ALICE_HASH: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
const ALICE_PASSWORD: &str = "Hello world!";

struct Ports {
    smtp: u16,
    submission: u16,
    smtps: u16,
}

fn write_cert(dir: &Path) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_string()]).expect("cert");
    let cert = dir.join("mx.crt");
    let key = dir.join("mx.key");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    (cert.display().to_string(), key.display().to_string())
}

/// An appliance with all three ports, a certificate, a user, routes and small limits.
fn start(extra: &str) -> (Appliance, Ports, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_cert(certs.path());
    let ports = Ports { smtp: free_port(), submission: free_port(), smtps: free_port() };
    let body = format!(
        r#"
[[certificates]]
name = "mx"
cert = "{cert}"
key = "{key}"
default = true

[email]
hostname = "mx.example.test"
listen = ["127.0.0.1"]
local_domains = ["example.test"]
relay_networks = ["10.99.0.0/16"]
max_message_size = 20000
max_recipients = 3
{extra}

[email.ports]
smtp = {smtp}
submission = {submission}
smtps = {smtps}

[[email.users]]
username = "alice"
password_hash = "{ALICE_HASH}"

[[email.routes]]
name = "local"
match = {{ recipients = "*@example.test" }}
action = {{ type = "deliver" }}

[[email.routes]]
name = "blocked"
priority = 10
match = {{ recipients = "spam@example.test" }}
action = {{ type = "reject", code = 551, message = "spam trap says no" }}

[[email.routes]]
name = "lists"
priority = 9
match = {{ recipients = "*@example.test", headers = {{ "X-Campaign" = "/^promo/" }} }}
action = {{ type = "reject", code = 554, message = "no promotions here" }}

[[email.routes]]
name = "outbound"
match = {{ authenticated = true }}
action = {{ type = "process" }}
"#,
        smtp = ports.smtp,
        submission = ports.submission,
        smtps = ports.smtps,
    );
    let appliance = Appliance::start(&body, ports.smtp);
    (appliance, ports, certs)
}

fn swaks(args: &[&str]) -> (bool, String) {
    let output = Command::new("swaks").args(args).arg("--timeout").arg("10").output().expect("run swaks");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn queue_id(transcript: &str) -> String {
    let line = transcript.lines().find(|l| l.contains("queued as ")).unwrap_or_else(|| panic!("no 250 queued:\n{transcript}"));
    line.rsplit("queued as ").next().expect("id").trim().to_string()
}

fn queue_dir(appliance: &Appliance) -> PathBuf {
    appliance.dir.path().join("data").join("mail").join("queue")
}

/// The message's spool file exists and a journal holds its record: it is durable. (With the
/// delivery engine running, a message may already have left the queue — delivered to its
/// Maildir or bounced — by the time this looks: then `shardgate queue status` knows it.)
fn assert_durable(appliance: &Appliance, id: &str) {
    let dir = queue_dir(appliance);
    if !dir.join("spool").join(id).exists() {
        let output = Command::new(shardgate_tests::shardgate_bin())
            .args(["queue", "status", id, "--config"])
            .arg(&appliance.config_path)
            .output()
            .expect("shardgate queue status");
        let status = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            ["delivered", "bounced", "partly bounced"].iter().any(|s| status.lines().next().is_some_and(|l| l.ends_with(&format!(": {s}")))),
            "spool file of {id} missing and the message did not leave the queue by delivery: {status}"
        );
    }
    let journals: Vec<u8> = std::fs::read_dir(&dir)
        .expect("queue dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .flat_map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect();
    // Format 2 records hold the id as a length-prefixed string (core/src/mail/queue/codec.rs).
    let needle = [&[16u8][..], id.as_bytes()].concat();
    assert!(journals.windows(needle.len()).any(|w| w == needle.as_slice()), "no journal record for {id}");
}

fn have_swaks() -> bool {
    ensure_tool("swaks", &["--version"], "swaks")
}

#[test]
fn swaks_plain_starttls_implicit_tls_auth_and_pipelining() {
    if !have_swaks() {
        eprintln!("skipped: swaks (Debian package swaks) is not installed");
        return;
    }
    let (appliance, ports, _certs) = start("");
    let server = format!("127.0.0.1:{}", ports.smtp);

    // Plain, to a local domain.
    let (ok, out) = swaks(&["--server", &server, "--from", "bob@example.org", "--to", "alice@example.test"]);
    assert!(ok, "{out}");
    let id = queue_id(&out);
    assert_durable(&appliance, &id);
    // In the spool, or already in alice's Maildir (the route delivers locally).
    let spooled = std::fs::read_to_string(queue_dir(&appliance).join("spool").join(&id)).unwrap_or_else(|_| {
        let maildir = appliance.dir.path().join("data/mail/mailboxes/alice@example.test/new");
        std::fs::read_dir(maildir).into_iter().flatten().filter_map(Result::ok).filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect()
    });
    assert!(spooled.contains("This is a test mailing"), "{spooled}");

    // STARTTLS on port 25-style, then pipelining.
    let (ok, out) = swaks(&["--server", &server, "--tls", "--from", "bob@example.org", "--to", "alice@example.test"]);
    assert!(ok && out.contains("TLS started"), "{out}");
    assert_durable(&appliance, &queue_id(&out));
    let (ok, out) = swaks(&["--server", &server, "--pipeline", "--from", "bob@example.org", "--to", "alice@example.test,carol@example.test"]);
    assert!(ok && out.contains("PIPELINING"), "{out}");
    assert_durable(&appliance, &queue_id(&out));

    // AUTH is not offered before TLS on submission, and is after STARTTLS (PLAIN and LOGIN).
    let submission = format!("127.0.0.1:{}", ports.submission);
    let (ok, out) = swaks(&["--server", &submission, "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", ALICE_PASSWORD, "--to", "x@elsewhere.org"]);
    assert!(!ok, "AUTH must need TLS:\n{out}");
    for mechanism in ["PLAIN", "LOGIN"] {
        let (ok, out) = swaks(&[
            "--server", &submission, "--tls", "--auth", mechanism, "--auth-user", "alice", "--auth-password", ALICE_PASSWORD,
            "--from", "alice@example.test", "--to", "x@elsewhere.org",
        ]);
        assert!(ok && out.contains("235 2.7.0"), "{mechanism}:\n{out}");
        assert_durable(&appliance, &queue_id(&out));
    }
    let (ok, out) = swaks(&[
        "--server", &submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wrong",
        "--to", "x@elsewhere.org",
    ]);
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
    // A security event, under the session's correlation id.
    appliance.wait_for_log("SMTP AUTH failed", Duration::from_secs(5));
    let log = appliance.log();
    let line = log.lines().find(|l| l.contains("SMTP AUTH failed")).unwrap_or_default();
    assert!(line.contains("shardgate::security") && line.contains("conn{id=") && line.contains("user=\"alice\""), "{line}");

    // Implicit TLS (RFC 8314) with AUTH.
    let smtps = format!("127.0.0.1:{}", ports.smtps);
    let (ok, out) = swaks(&[
        "--server", &smtps, "--tls-on-connect", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", ALICE_PASSWORD,
        "--from", "alice@example.test", "--to", "y@elsewhere.org",
    ]);
    assert!(ok, "{out}");
    assert_durable(&appliance, &queue_id(&out));

    let stats = appliance.stats();
    assert!(stats["smtp"]["messages_accepted"].as_u64().unwrap_or(0) >= 6, "{stats}");
    assert!(stats["smtp"]["tls_handshakes"].as_u64().unwrap_or(0) >= 5, "{stats}");
    assert_eq!(stats["smtp"]["auth_failures"].as_u64(), Some(1), "{stats}");
    // Queued, or already delivered / bounced by the delivery engine (recipients).
    let handled = stats["mail_queue_messages"].as_u64().unwrap_or(0)
        + stats["mail_delivery"]["delivered"].as_u64().unwrap_or(0)
        + stats["mail_delivery"]["bounced"].as_u64().unwrap_or(0);
    assert!(handled >= 6, "{stats}");
}

#[test]
fn python_smtplib_sends_plain_and_submits_with_starttls_login() {
    if !ensure_tool("python3", &["--version"], "python3") {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let (appliance, ports, _certs) = start("");
    let script = format!(
        r#"
import smtplib, ssl
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "bob@example.org"; m["To"] = "alice@example.test"; m["Subject"] = "hi"
m.set_content("hello from smtplib\n" * 50)
with smtplib.SMTP("127.0.0.1", {smtp}, timeout=10) as s:
    refused = s.send_message(m)
    assert not refused, refused
    code, text = s.noop()
    assert code == 250
    try:
        s.sendmail("bob@example.org", ["spam@example.test"], "Subject: x\r\n\r\nx\r\n")
        raise SystemExit("spam trap accepted")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients["spam@example.test"][0] == 551, e.recipients
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", {submission}, timeout=10) as s:
    s.starttls(context=ctx)
    s.login("alice", "{ALICE_PASSWORD}")
    s.sendmail("alice@example.test", ["z@elsewhere.org"], "Subject: out\r\n\r\nout\r\n")
print("OK")
"#,
        smtp = ports.smtp,
        submission = ports.submission,
    );
    let output = Command::new("python3").arg("-c").arg(&script).output().expect("python3");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && text.contains("OK"), "{text}");
    let stats = appliance.stats();
    assert_eq!(stats["smtp"]["messages_accepted"].as_u64(), Some(2), "{stats}");
    assert_eq!(stats["smtp"]["recipients_rejected"].as_u64(), Some(1), "{stats}");
}

/// A raw SMTP client for the error paths.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Raw { reader: BufReader::new(stream) }
    }

    fn greeted(port: u16) -> Raw {
        let mut raw = Raw::connect(port);
        assert!(raw.reply().starts_with("220 "));
        raw
    }

    /// One (possibly multi-line) reply; empty when the server closed.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn closed(&mut self) -> bool {
        let mut rest = String::new();
        matches!(self.reader.read_line(&mut rest), Ok(0))
    }
}

#[test]
fn raw_socket_error_paths_get_standard_replies() {
    let (appliance, ports, _certs) = start("greeting_delay_ms = 300\nconnections_per_ip = 2\nmax_errors = 12");
    let port = ports.smtp;

    // A client talking before the greeting is refused.
    let mut early = Raw::connect(port);
    early.send(b"EHLO eager\r\n");
    assert!(early.reply().starts_with("554 5.5.1"));

    // Command line longer than 512 octets.
    let mut raw = Raw::greeted(port);
    let long = format!("EHLO {}", "a".repeat(600));
    assert!(raw.cmd(&long).starts_with("500 5.5.2"), "long line");
    assert!(raw.cmd("EHLO client.example").starts_with("250"));

    // SIZE over the limit at MAIL, and data over the limit while reading.
    assert!(raw.cmd("MAIL FROM:<bob@example.org> SIZE=999999").starts_with("552 5.3.4"));
    assert!(raw.cmd("MAIL FROM:<bob@example.org>").starts_with("250"));
    assert!(raw.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(raw.cmd("DATA").starts_with("354"));
    let big = "x".repeat(998) + "\r\n";
    for _ in 0..25 {
        raw.send(big.as_bytes());
    }
    raw.send(b".\r\n");
    assert!(raw.reply().starts_with("552 5.3.4"), "oversized data");

    // Relay refused at RCPT, a reject route's code, no route, too many recipients.
    assert!(raw.cmd("MAIL FROM:<bob@example.org>").starts_with("250"));
    let relay = raw.cmd("RCPT TO:<victim@elsewhere.org>");
    assert!(relay.starts_with("554") || relay.starts_with("550"), "relay: {relay}");
    assert!(raw.cmd("RCPT TO:<spam@example.test>").starts_with("551 5.7.1 spam trap says no"));
    for user in ["a", "b", "c"] {
        assert!(raw.cmd(&format!("RCPT TO:<{user}@example.test>")).starts_with("250"));
    }
    assert!(raw.cmd("RCPT TO:<d@example.test>").starts_with("452"), "too many recipients");
    // A content route rejects after DATA with its code.
    assert!(raw.cmd("DATA").starts_with("354"));
    raw.send(b"X-Campaign: promo-2026\r\nSubject: deals\r\n\r\nbuy\r\n.\r\n");
    assert!(raw.reply().starts_with("554 5.7.1 no promotions here"));
    // BDAT (CHUNKING).
    assert!(raw.cmd("MAIL FROM:<bob@example.org>").starts_with("250"));
    assert!(raw.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    raw.send(b"BDAT 22\r\nSubject: chunked\r\n\r\nhi");
    assert!(raw.reply().starts_with("250"));
    raw.send(b"BDAT 4 LAST\r\n!!\r\n");
    let done = raw.reply();
    assert!(done.contains("queued as"), "bdat: {done}");
    let id = done.rsplit("queued as ").next().unwrap_or("").trim().to_string();
    assert_durable(&appliance, &id);
    match std::fs::read(queue_dir(&appliance).join("spool").join(&id)) {
        Ok(spooled) => assert_eq!(spooled, b"Subject: chunked\r\n\r\nhi!!\r\n"),
        // Already delivered to alice's Maildir (after the Return-Path, Delivered-To and
        // Received headers).
        Err(_) => {
            let maildir = appliance.dir.path().join("data/mail/mailboxes/alice@example.test/new");
            let stored: Vec<Vec<u8>> =
                std::fs::read_dir(maildir).into_iter().flatten().filter_map(Result::ok).filter_map(|e| std::fs::read(e.path()).ok()).collect();
            assert!(stored.iter().any(|m| m.ends_with(b"\r\nSubject: chunked\r\n\r\nhi!!\r\n")), "BDAT message not in the spool nor the Maildir");
        }
    }
    assert!(raw.cmd("QUIT").starts_with("221"));

    // The error budget: 421 and disconnect.
    let mut noisy = Raw::greeted(port);
    for _ in 0..12 {
        let _ = noisy.cmd("BOGUS");
    }
    let last = noisy.reply();
    let all = if last.is_empty() { String::new() } else { last };
    assert!(all.starts_with("421 4.7.0") || noisy.closed(), "error budget: {all}");

    // Per-address session limit (enforced per shard; enough sessions that one shard must refuse).
    let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..(2 * shards + 1) {
        let mut raw = Raw::connect(port);
        let greeting = raw.reply();
        if greeting.starts_with("421 4.7.0") {
            refused += 1;
        }
        held.push(raw);
    }
    assert!(refused >= 1, "connections_per_ip = 2 never refused");
    drop(held);
    drop(appliance);
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    if !have_swaks() {
        eprintln!("skipped: swaks (Debian package swaks) is not installed");
        return;
    }
    let (appliance, ports, _certs) = start("");
    let server = format!("127.0.0.1:{}", ports.smtp);
    // Load from several clients at once; kill -9 while they are still sending.
    let sender = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let server = server.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for n in 0..40 {
                        let to = format!("w{worker}n{n}@example.test");
                        let (ok, out) = swaks(&["--server", &server, "--from", "bob@example.org", "--to", &to]);
                        if !ok {
                            break;
                        }
                        if let Some(line) = out.lines().find(|l| l.contains("queued as ")) {
                            ids.push(line.rsplit("queued as ").next().unwrap_or("").trim().to_string());
                        }
                    }
                    ids
                })
            })
            .collect();
        for worker in workers {
            ids.extend(worker.join().unwrap_or_default());
        }
        ids
    });
    std::thread::sleep(Duration::from_millis(1500));
    let appliance = appliance.crash_and_restart();
    let acknowledged = sender.join().expect("senders");
    assert!(!acknowledged.is_empty(), "no message was acknowledged before the crash");
    appliance.wait_for_log("mail queue recovered", Duration::from_secs(10));
    // Every message that got a 250 is in the recovered queue, content and record.
    for id in &acknowledged {
        if !id.is_empty() {
            assert_durable(&appliance, id);
        }
    }
    // (Counting the queue proves nothing more: the delivery engine empties it into the
    // Maildirs; `assert_durable` above already accepted each message as queued or delivered.)
}

/// Python's smtplib: one idle session and one in the middle of DATA when SIGTERM arrives.
const DRAIN_CLIENT: &str = r#"
import smtplib, sys, time
port = int(sys.argv[1])
idle = smtplib.SMTP('127.0.0.1', port, timeout=20)
idle.ehlo('idle.example.org')
busy = smtplib.SMTP('127.0.0.1', port, timeout=20)
busy.ehlo('busy.example.org')
busy.mail('bob@example.org')
busy.rcpt('drain@example.test')
busy.putcmd('data')
code, _ = busy.getreply()
assert code == 354, code
busy.send(b'Subject: drain\r\n\r\npart one\r\n')
print('ready', flush=True)
sys.stdin.readline()
code, msg = idle.getreply()
print('idle', code, msg.decode(), flush=True)
busy.send(b'part two\r\n.\r\n')
code, msg = busy.getreply()
print('data', code, msg.decode(), flush=True)
code, msg = busy.getreply()
print('next', code, msg.decode(), flush=True)
"#;

#[test]
fn sigterm_sends_421_to_open_sessions_after_finishing_a_message_in_data() {
    use std::io::Read as _;
    let (mut appliance, ports, _certs) = start("");
    let mut client = Command::new("/usr/bin/python3")
        .args(["-c", DRAIN_CLIENT, &ports.smtp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 smtplib");
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), "ready", "the client did not get to DATA");
    appliance.signal(libc::SIGTERM);
    // The idle session is told at once; the one in DATA keeps going.
    std::thread::sleep(Duration::from_millis(500));
    client.stdin.take().expect("stdin").write_all(b"go\n").expect("go");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("client output");
    assert!(client.wait().expect("client").success(), "client failed: {rest}");
    let replies: Vec<&str> = rest.lines().collect();
    assert_eq!(replies.len(), 3, "{rest}");
    assert_eq!(replies[0], "idle 421 4.3.2 mx.example.test Service shutting down", "{rest}");
    assert!(replies[1].starts_with("data 250 2.0.0 Ok: queued as "), "the message in DATA is accepted: {rest}");
    assert_eq!(replies[2], "next 421 4.3.2 mx.example.test Service shutting down", "{rest}");
    let id = replies[1].rsplit(' ').next().expect("id").to_string();
    // Every session closed: the appliance stops well before the 5 s drain deadline, cleanly.
    assert_eq!(appliance.wait_exit(Duration::from_secs(15)), Some(0), "log:\n{}", appliance.log());
    let log = appliance.log();
    assert!(!log.contains("drain deadline passed"), "{log}");
    assert!(log.contains("mail journal closed cleanly"), "{log}");
    // The accepted message is durable; the next start trusts the journal (no spool listing).
    let appliance = appliance.restart_stopped();
    appliance.wait_for_log("mail queue recovered", Duration::from_secs(10));
    assert!(appliance.log().contains("spool_listed=false"), "{}", appliance.log());
    assert_durable(&appliance, &id);
}

#[test]
fn email_ports_come_and_go_with_reloads() {
    if !have_swaks() {
        eprintln!("skipped: swaks (Debian package swaks) is not installed");
        return;
    }
    let dns_port = free_port();
    let base = format!("[dns]\nudp = [\"127.0.0.1:{dns_port}\"]\ntcp = [\"127.0.0.1:{dns_port}\"]\n");
    let appliance = Appliance::start(&base, dns_port);
    let (first, second) = (free_port(), free_port());
    let email = |port: u16| {
        format!(
            "{base}\n[email]\nhostname = \"mx.example.test\"\nlisten = [\"127.0.0.1\"]\n[email.ports]\nsmtp = {port}\n\
             [[email.routes]]\nname = \"all\"\naction = {{ type = \"deliver\" }}\n"
        )
    };
    // [email] added by a reload: the queue is opened and the port served.
    appliance.rewrite_config(&email(first));
    appliance.reload();
    appliance.wait_for_log("mail queue recovered", Duration::from_secs(5));
    let (ok, out) = swaks(&["--server", &format!("127.0.0.1:{first}"), "--to", "a@example.test"]);
    assert!(ok, "{out}");
    assert_durable(&appliance, &queue_id(&out));
    // The port moves: the old one is closed, the new one served.
    appliance.rewrite_config(&email(second));
    appliance.reload();
    assert!(TcpStream::connect(("127.0.0.1", first)).is_err(), "old SMTP port still open");
    let (ok, out) = swaks(&["--server", &format!("127.0.0.1:{second}"), "--to", "b@example.test"]);
    assert!(ok, "{out}");
    // [email] removed: nothing listens any more.
    appliance.rewrite_config(&base);
    appliance.reload();
    assert!(TcpStream::connect(("127.0.0.1", second)).is_err(), "SMTP port open without [email]");
}
