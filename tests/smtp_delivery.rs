//! Mail delivery with real peers: Postfix's `smtp-sink` as the next hop of `forward` routes and
//! as the MX of `process` routes (MX and A records from shardgate's own `[dns]` zones, the
//! delivery resolver pointed at it), local Maildir delivery, `shardgate send` (file and
//! template), the queue CLI, a 4xx that is retried, a 5xx that bounces (RFC 3464 report in
//! the sender's Maildir) and suppresses the address, and kill -9 under load: every message
//! that got a 250 reaches the sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardgate_tests::{ensure_tool, free_port, shardgate_bin, wait_until_accepting, Appliance};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have_smtp_sink() -> bool {
    ensure_tool(SMTP_SINK, &[], "postfix")
}

/// A running `smtp-sink` that dumps every message it accepts into its own folder.
struct SmtpSink {
    child: Child,
    dump: tempfile::TempDir,
}

impl SmtpSink {
    /// Listens on `addr`; `mode` are extra smtp-sink options (`-r rcpt`: 4xx to RCPT,
    /// `-f rcpt`: 5xx to RCPT).
    fn start(addr: &str, mode: &[&str]) -> SmtpSink {
        let dump = tempfile::tempdir().expect("tempdir");
        // smtp-sink drops root for `nobody`, who must be able to write the dumps.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut command = Command::new(SMTP_SINK);
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        command.arg("-d").arg(format!("{}/%M.", dump.path().display())).args(mode).arg(addr).arg("64");
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn smtp-sink");
        let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let ip = addr.rsplit_once(':').map(|(ip, _)| ip.to_string()).expect("ip");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((ip.as_str(), port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink does not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpSink { child, dump }
    }

    /// Every message dumped so far (smtp-sink's X- headers first).
    fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dump.path())
            .map(|entries| entries.filter_map(Result::ok).filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where things listen for one test.
struct Setup {
    smtp: u16,
    dns: u16,
    forward: u16,
    /// The MX host's address: a loopback address of its own, so the sink can take port 25.
    mx_ip: String,
}

impl Setup {
    fn new() -> Setup {
        let n = std::process::id() % 200 + free_port() as u32 % 50;
        Setup { smtp: free_port(), dns: free_port(), forward: free_port(), mx_ip: format!("127.77.{}.1", n % 250) }
    }

    fn config(&self) -> String {
        let Setup { smtp, dns, forward, mx_ip } = self;
        format!(
            r#"
[dns]
udp = ["127.0.0.1:{dns}"]
tcp = ["127.0.0.1:{dns}"]

[[dns.zones]]
origin = "mx.test."
soa = {{ mname = "ns1", rname = "hostmaster", serial = 1 }}
records = [
  {{ name = "@", type = "NS", value = "ns1" }},
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "@", type = "MX", value = "10 mail.mx.test." }},
  {{ name = "mail", type = "A", value = "{mx_ip}" }},
]

[[dns.zones]]
origin = "direct.test."
soa = {{ mname = "ns1", rname = "hostmaster", serial = 1 }}
records = [
  {{ name = "@", type = "NS", value = "ns1" }},
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "@", type = "A", value = "{mx_ip}" }},
]

[email]
hostname = "mx.example.test"
listen = ["127.0.0.1"]
local_domains = ["example.test"]
relay_networks = ["127.0.0.0/8"]

[email.ports]
smtp = {smtp}

[[email.routes]]
name = "local"
match = {{ recipients = "*@example.test" }}
action = {{ type = "deliver" }}

[[email.routes]]
name = "relay"
match = {{ recipients = "*@relay.test" }}
action = {{ type = "forward", host = "127.0.0.1", port = {forward}, headers = {{ "X-Relayed-By" = "shardgate" }} }}

[[email.routes]]
name = "outbound"
match = {{ recipients = ["*@mx.test", "*.mx.test", "*@direct.test"] }}
action = {{ type = "process", queue = "priority" }}

[email.delivery]
retry_initial = "1s"
retry_max = "2s"
connect_timeout = "2s"
resolver = "127.0.0.1:{dns}"

[[email.templates]]
name = "welcome"
subject = "Welcome {{{{name}}}}"
text = "Hello {{{{name}}}}, your code is {{{{code}}}}."
html = "<p>Hello <b>{{{{name}}}}</b></p>"
"#
        )
    }
}

/// Runs `shardgate ARGS --config <the appliance's config>`; returns (success, stdout+stderr).
fn cli(appliance: &Appliance, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut command = Command::new(shardgate_bin());
    command.args(args).arg("--config").arg(&appliance.config_path);
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run shardgate");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(bytes).expect("stdin");
    }
    let output = child.wait_with_output().expect("shardgate output");
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// `shardgate send`; returns the queue id.
fn send(appliance: &Appliance, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    let (ok, out) = cli(appliance, &all, stdin);
    assert!(ok, "send failed: {out}");
    let id = out.trim().to_string();
    assert_eq!(id.len(), 16, "not a queue id: {out}");
    id
}

/// Polls `shardgate queue status ID` until its first line ends with `wanted`.
fn wait_status(appliance: &Appliance, id: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = cli(appliance, &["queue", "status", id], None);
        if out.lines().next().is_some_and(|l| l.ends_with(&format!(": {wanted}"))) {
            return out;
        }
        assert!(Instant::now() < deadline, "{id} never became {wanted}; last status:\n{out}\nlog:\n{}", appliance.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn maildir_messages(appliance: &Appliance, address: &str) -> Vec<String> {
    let dir = appliance.dir.path().join("data/mail/mailboxes").join(address).join("new");
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
        .unwrap_or_default()
}

fn write_message(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("message file");
    path
}

#[test]
fn forward_mx_and_maildir_delivery_from_shardgate_send() {
    if !have_smtp_sink() {
        eprintln!("skipped: smtp-sink (Debian package postfix) is not installed");
        return;
    }
    let setup = Setup::new();
    let relay = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &[]);
    // The MX sink needs port 25 on its own loopback address: root only.
    let mx = is_root().then(|| SmtpSink::start(&format!("{}:25", setup.mx_ip), &[]));
    let appliance = Appliance::start(&setup.config(), setup.smtp);
    let files = tempfile::tempdir().expect("tempdir");
    let message = write_message(files.path(), "m.eml", "Subject: first\r\nFrom: alice@example.test\r\n\r\nline one\r\n.starts with a dot\r\n");

    let mut to = vec!["--to", "bob@relay.test", "--to", "erin@example.test"];
    if mx.is_some() {
        to.extend(["--to", "carol@mx.test", "--to", "dan@direct.test"]);
    }
    let mut args = vec!["--from", "alice@example.test"];
    args.extend(&to);
    args.push(message.to_str().expect("path"));
    let id = send(&appliance, &args, None);
    let status = wait_status(&appliance, &id, "delivered");
    assert!(status.contains("bob@relay.test: delivered — 127.0.0.1 said: 250 2.0.0 Ok"), "{status}");
    assert!(status.contains("erin@example.test: delivered"), "{status}");

    // The forward target got it once, with the route's header, dot-stuffing undone by the sink.
    let got = relay.messages();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("X-Rcpt-Args: <bob@relay.test>"), "{}", got[0]);
    assert!(got[0].contains("X-Relayed-By: shardgate\n"), "{}", got[0]);
    assert!(got[0].contains("\n.starts with a dot\n"), "{}", got[0]);
    assert!(got[0].contains("Message-ID: <"), "send adds a Message-ID: {}", got[0]);

    // The local recipient's Maildir.
    let stored = maildir_messages(&appliance, "erin@example.test");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("Return-Path: <alice@example.test>\r\nDelivered-To: erin@example.test\r\n"), "{}", stored[0]);
    assert!(stored[0].contains("line one\r\n"));

    // MX (preference order from our own zone) and the implicit MX (A record only).
    if let Some(mx) = &mx {
        assert!(status.contains("carol@mx.test: delivered — mail.mx.test said: 250"), "{status}");
        assert!(status.contains("dan@direct.test: delivered — direct.test said: 250"), "{status}");
        let got = mx.messages();
        assert_eq!(got.len(), 2, "one transaction per destination domain: {got:#?}");
        assert!(got.iter().any(|m| m.contains("X-Rcpt-Args: <carol@mx.test>")));
        assert!(got.iter().any(|m| m.contains("X-Rcpt-Args: <dan@direct.test>")));
    } else {
        eprintln!("MX delivery part skipped: smtp-sink must listen on port 25, which needs root");
    }

    // A template: --template with --var.
    let id = send(
        &appliance,
        &["--from", "noreply@example.test", "--to", "frank@relay.test", "--template", "welcome", "--var", "name=Frank <F>", "--var", "code=42"],
        None,
    );
    wait_status(&appliance, &id, "delivered");
    let got = relay.messages();
    let welcome = got.iter().find(|m| m.contains("<frank@relay.test>")).expect("template message");
    assert!(welcome.contains("Subject: Welcome Frank <F>"), "{welcome}");
    assert!(welcome.contains("Hello Frank <F>, your code is 42."), "{welcome}");
    assert!(welcome.contains("<b>Frank &lt;F&gt;</b>"), "{welcome}");
    assert!(welcome.contains("multipart/alternative"), "{welcome}");

    // A missing variable and an unknown template are refused with their names.
    let (ok, out) = cli(&appliance, &["send", "--from", "a@example.test", "--to", "b@relay.test", "--template", "welcome"], None);
    assert!(!ok && out.contains("needs --var for: name, code"), "{out}");
    let (ok, out) = cli(&appliance, &["send", "--from", "a@example.test", "--to", "b@relay.test", "--template", "nope"], None);
    assert!(!ok && out.contains("no [[email.templates]] entry is named `nope`"), "{out}");

    // From standard input, to a recipient no route takes.
    let (ok, out) = cli(&appliance, &["send", "--from", "a@example.test", "--to", "x@nowhere.example"], Some(b"Subject: x\r\n\r\ny\r\n"));
    assert!(!ok && out.contains("no email route takes this recipient"), "{out}");
    let id = send(&appliance, &["--from", "a@example.test", "--to", "gail@example.test"], Some(b"Subject: stdin\r\n\r\nfrom stdin\r\n"));
    wait_status(&appliance, &id, "delivered");
    assert!(maildir_messages(&appliance, "gail@example.test")[0].contains("from stdin"));

    let stats = appliance.stats();
    let delivered = stats["mail_delivery"]["delivered"].as_u64().unwrap_or(0);
    assert!(delivered >= 4, "{}", stats["mail_delivery"]);
    // The template message went out on the connection the first one left open.
    assert!(stats["mail_delivery"]["connections_reused"].as_u64().unwrap_or(0) >= 1, "{}", stats["mail_delivery"]);
}

#[test]
fn a_4xx_is_retried_until_the_next_hop_takes_it_and_the_queue_cli_shows_it() {
    if !have_smtp_sink() {
        eprintln!("skipped: smtp-sink (Debian package postfix) is not installed");
        return;
    }
    let setup = Setup::new();
    let refusing = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &["-r", "rcpt"]);
    let appliance = Appliance::start(&setup.config(), setup.smtp);
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "bob@relay.test"], Some(b"Subject: later\r\n\r\nbody\r\n"));
    let status = wait_status(&appliance, &id, "deferred");
    assert!(status.contains("bob@relay.test: deferred — 127.0.0.1 said: 450 4.3.0 Error: command failed"), "{status}");
    let (ok, list) = cli(&appliance, &["queue", "list"], None);
    assert!(ok && list.contains(&id) && list.contains("deferred") && list.contains("1 message queued"), "{list}");
    let (ok, show) = cli(&appliance, &["queue", "show", &id], None);
    assert!(ok && show.contains("\"route\": \"relay\"") && show.contains("\"last_error\""), "{show}");

    // A second message is deleted from the queue instead.
    let doomed = send(&appliance, &["--from", "alice@example.test", "--to", "zed@relay.test"], Some(b"Subject: doomed\r\n\r\nx\r\n"));
    let (ok, out) = cli(&appliance, &["queue", "delete", &doomed], None);
    assert!(ok && out.contains("deleted"), "{out}");
    wait_status(&appliance, &doomed, "deleted");

    // The next hop recovers; the retry (backoff 1 s, 2 s, ...) or a retry-now delivers it once.
    drop(refusing);
    let sink = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &[]);
    let (ok, out) = cli(&appliance, &["queue", "retry", &id], None);
    assert!(ok && out.contains("retrying 1 message now"), "{out}");
    let status = wait_status(&appliance, &id, "delivered");
    assert!(status.contains("127.0.0.1 said: 250 2.0.0 Ok"), "{status}");
    let got = sink.messages();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("<bob@relay.test>") && !got.iter().any(|m| m.contains("zed@relay.test")));
    let stats = appliance.stats();
    assert!(stats["mail_delivery"]["deferred"].as_u64().unwrap_or(0) >= 1, "{}", stats["mail_delivery"]);
    let (_, list) = cli(&appliance, &["queue", "list"], None);
    assert!(list.contains("0 messages queued"), "{list}");
}

#[test]
fn a_held_queue_keeps_messages_until_a_reload_releases_them() {
    if !have_smtp_sink() {
        eprintln!("skipped: smtp-sink (Debian package postfix) is not installed");
        return;
    }
    let setup = Setup::new();
    let sink = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &[]);
    let held = setup.config().replace("[email.delivery]\n", "[email.delivery]\nhold = true\n");
    assert!(held.contains("hold = true"));
    let appliance = Appliance::start(&held, setup.smtp);
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "bob@relay.test"], Some(b"Subject: held\r\n\r\nbody\r\n"));
    // Held: queued, never attempted (not even deferred), nothing reaches the next hop.
    std::thread::sleep(Duration::from_secs(2));
    let (ok, status) = cli(&appliance, &["queue", "status", &id], None);
    assert!(ok && status.lines().next().is_some_and(|l| l.ends_with(": queued")), "{status}");
    assert!(sink.messages().is_empty(), "delivered while held");
    assert!(appliance.log().contains("mail delivery held"), "{}", appliance.log());
    // A reload without `hold` releases it.
    appliance.rewrite_config(&setup.config());
    appliance.reload();
    wait_status(&appliance, &id, "delivered");
    assert_eq!(sink.messages().len(), 1);
    assert!(appliance.log().contains("mail delivery released"), "{}", appliance.log());
}

#[test]
fn a_5xx_bounces_to_the_sender_and_suppresses_the_address() {
    if !have_smtp_sink() {
        eprintln!("skipped: smtp-sink (Debian package postfix) is not installed");
        return;
    }
    let setup = Setup::new();
    let _refusing = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &["-f", "rcpt"]);
    let appliance = Appliance::start(&setup.config(), setup.smtp);
    let id = send(
        &appliance,
        &["--from", "alice@example.test", "--to", "gone@relay.test"],
        Some(b"Subject: to a gone address\r\nX-Original: kept\r\n\r\nsecret body\r\n"),
    );
    let status = wait_status(&appliance, &id, "bounced");
    assert!(status.contains("gone@relay.test: bounced — 127.0.0.1 said: 500 5.3.0 Error: command failed"), "{status}");

    // The RFC 3464 report reaches the sender through her route (her Maildir).
    wait_until("the bounce in alice's Maildir", Duration::from_secs(20), || !maildir_messages(&appliance, "alice@example.test").is_empty());
    let bounce = &maildir_messages(&appliance, "alice@example.test")[0];
    for needle in [
        "Return-Path: <>\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Content-Type: message/delivery-status",
        "Reporting-MTA: dns; mx.example.test",
        "Final-Recipient: rfc822; gone@relay.test\r\nAction: failed\r\nStatus: 5.3.0\r\nRemote-MTA: dns; 127.0.0.1\r\nDiagnostic-Code: smtp; 500 5.3.0 Error: command failed",
        "Content-Type: text/rfc822-headers",
        "X-Original: kept",
        "Auto-Submitted: auto-replied",
    ] {
        assert!(bounce.contains(needle), "`{needle}` missing from the bounce:\n{bounce}");
    }
    assert!(!bounce.contains("secret body"), "the report carries headers only");

    // The address is suppressed: the next message to it fails at once, without a bounce
    // for a null sender.
    let (ok, list) = cli(&appliance, &["suppression", "list"], None);
    assert!(ok && list.contains("gone@relay.test") && list.contains("500 5.3.0") && list.contains("1 suppressed address"), "{list}");
    let id = send(&appliance, &["--from", "", "--to", "GONE@relay.test"], Some(b"Subject: again\r\n\r\nx\r\n"));
    let status = wait_status(&appliance, &id, "bounced");
    assert!(status.contains("is suppressed after a hard bounce"), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(maildir_messages(&appliance, "alice@example.test").len(), 1, "no bounce of a bounce");
    let (ok, out) = cli(&appliance, &["suppression", "remove", "gone@relay.test"], None);
    assert!(ok && out.contains("removed"), "{out}");
    let (_, list) = cli(&appliance, &["suppression", "list"], None);
    assert!(list.contains("0 suppressed addresses"), "{list}");
    let (ok, out) = cli(&appliance, &["suppression", "remove", "gone@relay.test"], None);
    assert!(!ok && out.contains("not on the suppression list"), "{out}");

    // A domain that does not exist (NXDOMAIN from our zone) bounces at once with 5.1.2.
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "x@nosuch.mx.test"], Some(b"Subject: nx\r\n\r\nx\r\n"));
    let status = wait_status(&appliance, &id, "bounced");
    assert!(status.contains("5.1.2 domain nosuch.mx.test does not exist"), "{status}");
    let stats = appliance.stats();
    assert!(stats["mail_delivery"]["bounced"].as_u64().unwrap_or(0) >= 3, "{}", stats["mail_delivery"]);
    assert!(stats["mail_delivery"]["bounces_sent"].as_u64().unwrap_or(0) >= 2, "{}", stats["mail_delivery"]);
}

/// Python smtplib clients sending messages with unique subjects; prints `ACK <token>` for
/// every message that got its 250, until the appliance dies.
const LOAD: &str = r#"
import smtplib, sys, threading
port, prefix, clients, per_client = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
def client(c):
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        for n in range(per_client):
            token = "%s-%d-%d" % (prefix, c, n)
            body = "Subject: %s\r\nFrom: load@example.org\r\n\r\n%s\r\n" % (token, "x" * 2000)
            s.sendmail("load@example.org", ["sink@relay.test"], body)
            with lock:
                print("ACK " + token, flush=True)
    except Exception:
        pass
threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
"#;

/// Starts the load; returns the child whose stdout lists acknowledged tokens.
fn start_load(port: u16, prefix: &str, clients: u32, per_client: u32) -> Child {
    Command::new("python3")
        .args(["-c", LOAD, &port.to_string(), prefix, &clients.to_string(), &per_client.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

fn acknowledged(load: Child) -> Vec<String> {
    let output = load.wait_with_output().expect("load output");
    String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| l.strip_prefix("ACK ").map(String::from)).collect()
}

fn token_counts(sink: &SmtpSink) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in sink.messages() {
        if let Some(subject) = message.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *counts.entry(subject.trim().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

fn wait_drained(appliance: &Appliance) {
    wait_until("the queue to drain into the sink", Duration::from_secs(120), || {
        let stats = appliance.stats();
        stats["mail_queue_messages"].as_u64() == Some(0)
    });
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    if !have_smtp_sink() {
        eprintln!("skipped: smtp-sink (Debian package postfix) is not installed");
        return;
    }
    let setup = Setup::new();
    let mut appliance = Appliance::start(&setup.config(), setup.smtp);

    // Phase 1, next hop down: kill -9 three times while clients send. Everything that got a
    // 250 must survive every crash and then be delivered exactly once.
    let mut phase1 = Vec::new();
    for round in 0..3 {
        wait_until_accepting(setup.smtp);
        let load = start_load(setup.smtp, &format!("a{round}"), 4, 200);
        std::thread::sleep(Duration::from_millis(1200));
        appliance = appliance.crash_and_restart();
        phase1.extend(acknowledged(load));
    }
    assert!(phase1.len() > 50, "too few messages acknowledged to mean anything: {}", phase1.len());
    let sink = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &[]);
    wait_drained(&appliance);
    let counts = token_counts(&sink);
    let lost: Vec<&String> = phase1.iter().filter(|t| !counts.contains_key(*t)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged messages never reached the sink: {:?}", lost.len(), phase1.len(), &lost[..lost.len().min(10)]);
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");

    // Phase 2, next hop up: kill -9 twice while accepting and delivering. Nothing is lost; a
    // crash between the sink's 250 and our journal write re-sends that message (the window
    // every MTA has: the next hop cannot be asked what it already has), which is at most one
    // transaction per destination worker per crash.
    let mut phase2 = Vec::new();
    for round in 0..2 {
        wait_until_accepting(setup.smtp);
        let load = start_load(setup.smtp, &format!("b{round}"), 4, 200);
        std::thread::sleep(Duration::from_millis(1500));
        appliance = appliance.crash_and_restart();
        phase2.extend(acknowledged(load));
    }
    wait_drained(&appliance);
    let counts = token_counts(&sink);
    let lost: Vec<&String> = phase2.iter().filter(|t| !counts.contains_key(*t)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged messages never reached the sink: {:?}", lost.len(), phase2.len(), &lost[..lost.len().min(10)]);
    let duplicates: usize = counts.iter().filter(|(t, _)| t.starts_with('b')).map(|(_, n)| n - 1).sum();
    let workers = 4; // concurrency_per_destination's default
    assert!(duplicates <= 2 * workers, "{duplicates} duplicates after 2 crashes during delivery");

    // Phase 3: a graceful stop (SIGTERM) while delivering lets the transactions in progress
    // record their outcomes first: nothing lost, nothing sent twice.
    wait_until_accepting(setup.smtp);
    let load = start_load(setup.smtp, "c0", 4, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let appliance = appliance.restart();
    let phase3 = acknowledged(load);
    wait_drained(&appliance);
    let counts = token_counts(&sink);
    let lost: Vec<&String> = phase3.iter().filter(|t| !counts.contains_key(*t)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged messages lost over a graceful restart", lost.len(), phase3.len());
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(t, n)| t.starts_with('c') && **n > 1).collect();
    assert!(twice.is_empty(), "sent twice over a graceful restart: {twice:?}");
    eprintln!(
        "crash test: phase 1 (next hop down, 3 kills): {} acknowledged, all delivered exactly once; \
         phase 2 (delivering, 2 kills): {} acknowledged, none lost, {duplicates} re-sent after a crash; \
         phase 3 (delivering, SIGTERM): {} acknowledged, all delivered exactly once",
        phase1.len(),
        phase2.len(),
        phase3.len()
    );
}

/// `alice` / `Hello world!` (the SHA-crypt specification's reference vector).
const ALICE_HASH: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

#[test]
fn starttls_and_auth_towards_a_next_hop_and_the_required_policy() {
    if !have_smtp_sink() {
        eprintln!("skipped: smtp-sink (Debian package postfix) is not installed");
        return;
    }
    // The next hop: another shardgate with a certificate, whose submission port offers AUTH
    // only after STARTTLS.
    let certs = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["hop.example.test".to_string()]).expect("cert");
    std::fs::write(certs.path().join("hop.crt"), certified.cert.pem()).expect("cert");
    std::fs::write(certs.path().join("hop.key"), certified.signing_key.serialize_pem()).expect("key");
    let (hop_smtp, hop_submission) = (free_port(), free_port());
    let hop = Appliance::start(
        &format!(
            r#"
[[certificates]]
name = "hop"
cert = "{dir}/hop.crt"
key = "{dir}/hop.key"
default = true

[email]
hostname = "hop.example.test"
listen = ["127.0.0.1"]
local_domains = ["tls.test"]

[email.ports]
smtp = {hop_smtp}
submission = {hop_submission}

[[email.users]]
username = "alice"
password_hash = "{ALICE_HASH}"

[[email.routes]]
name = "mailboxes"
match = {{ recipients = "*@tls.test" }}
action = {{ type = "deliver" }}
"#,
            dir = certs.path().display()
        ),
        hop_smtp,
    );

    let setup = Setup::new();
    let plain_sink = SmtpSink::start(&format!("127.0.0.1:{}", setup.forward), &[]);
    let extra = format!(
        r#"
[[email.routes]]
name = "via-hop"
match = {{ recipients = "*@tls.test" }}
action = {{ type = "forward", host = "127.0.0.1", port = {hop_submission}, starttls = "required", auth = {{ username = "alice", password = "Hello world!" }} }}

[[email.routes]]
name = "must-encrypt"
match = {{ recipients = "*@plain.test" }}
action = {{ type = "forward", host = "127.0.0.1", port = {forward}, starttls = "required" }}

[[email.routes]]
name = "opportunistic"
match = {{ recipients = "*@opportunistic.test" }}
action = {{ type = "forward", host = "127.0.0.1", port = {hop_smtp} }}
"#,
        forward = setup.forward
    );
    let appliance = Appliance::start(&format!("{}{extra}", setup.config()), setup.smtp);

    // STARTTLS (required) then AUTH PLAIN at the next hop, which stores it in its Maildir.
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "bob@tls.test"], Some(b"Subject: over tls\r\n\r\nencrypted\r\n"));
    let status = wait_status(&appliance, &id, "delivered");
    assert!(status.contains("bob@tls.test: delivered — 127.0.0.1 said: 250 2.0.0 Ok: queued as "), "{status}");
    wait_until("the next hop's Maildir", Duration::from_secs(20), || !maildir_messages(&hop, "bob@tls.test").is_empty());
    let stored = &maildir_messages(&hop, "bob@tls.test")[0];
    assert!(stored.contains("with ESMTPSA"), "TLS and AUTH in the next hop's Received header:\n{stored}");
    assert!(stored.contains("encrypted\r\n"));

    // Opportunistic: the next hop's port 25 offers STARTTLS, so it is used (no AUTH).
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "carol@opportunistic.test"], Some(b"Subject: opp\r\n\r\nx\r\n"));
    // The hop refuses relaying for a domain that is not its own: a 5xx at RCPT after TLS.
    let status = wait_status(&appliance, &id, "bounced");
    assert!(status.contains("127.0.0.1 said: 55"), "{status}");
    let hop_stats = hop.stats();
    assert!(hop_stats["smtp"]["tls_handshakes"].as_u64().unwrap_or(0) >= 2, "both connections encrypted: {}", hop_stats["smtp"]);

    // Required, but the next hop (smtp-sink) offers no STARTTLS: deferred, never sent in clear.
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "dan@plain.test"], Some(b"Subject: clear\r\n\r\nx\r\n"));
    let status = wait_status(&appliance, &id, "deferred");
    assert!(status.contains("does not offer STARTTLS, which the route requires"), "{status}");
    assert!(plain_sink.messages().is_empty(), "sent in clear despite starttls = required");
}

/// The appliance's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(appliance: &Appliance) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", appliance.pid())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn shardgate_send_streams_a_large_message_file_and_standard_input() {
    use std::io::Write as _;
    let setup = Setup::new();
    let appliance = Appliance::start(&setup.config(), setup.smtp);
    let files = tempfile::tempdir().expect("tempdir");
    // 40 MiB of 1000-octet lines, some starting with a dot (stuffed by the next hop's client,
    // stored as they are in a Maildir).
    let path = files.path().join("large.eml");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    file.write_all(b"Subject: large\r\nFrom: alice@example.test\r\n\r\n").expect("head");
    for n in 0..40 * 1024 {
        let lead = if n % 100 == 0 { b'.' } else { b'a' };
        file.write_all(&[lead]).expect("lead");
        file.write_all(&[b'x'; 997]).expect("line");
        file.write_all(b"\r\n").expect("crlf");
    }
    file.write_all(b"the end\r\n").expect("end");
    drop(file);
    let size = std::fs::metadata(&path).expect("meta").len();
    let before = peak_rss_kib(&appliance);
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "erin@example.test", path.to_str().expect("path")], None);
    wait_status(&appliance, &id, "delivered");
    let grown = peak_rss_kib(&appliance).saturating_sub(before);
    assert!(grown < 16 * 1024, "peak memory grew by {grown} KiB for a {size}-byte message: it was held in memory");
    let stored = maildir_messages(&appliance, "erin@example.test");
    assert_eq!(stored.len(), 1);
    let body_at = stored[0].find("Subject: large\r\n").expect("the message's own header block");
    assert_eq!((stored[0].len() - body_at) as u64, size, "the whole file arrived");
    assert!(stored[0].contains("Message-ID: <"), "a Message-ID was added in front");
    assert!(stored[0].ends_with("\r\nthe end\r\n"));
    assert!(stored[0].contains(&format!("\r\n.{}\r\n", "x".repeat(997))));

    // The same through standard input (copied into the data folder in small steps).
    let text = std::fs::read(&path).expect("read");
    let before = peak_rss_kib(&appliance);
    let id = send(&appliance, &["--from", "alice@example.test", "--to", "gail@example.test"], Some(&text));
    wait_status(&appliance, &id, "delivered");
    let grown = peak_rss_kib(&appliance).saturating_sub(before);
    assert!(grown < 16 * 1024, "peak memory grew by {grown} KiB for standard input of {size} bytes");
    let stored = maildir_messages(&appliance, "gail@example.test");
    assert!(stored[0].ends_with("\r\nthe end\r\n") && stored[0].len() as u64 > size);
    assert!(std::fs::read_dir(appliance.dir.path().join("data/mail/submit")).map(|d| d.count()).unwrap_or(0) == 0, "the stdin copy is removed");
}
