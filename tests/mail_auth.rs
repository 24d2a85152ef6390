//! Mail authentication and protection with real clients, DNS from shardgate's own server on
//! loopback:
//! - the appliance makes a DKIM key for `signed.test` and publishes it in its own zone;
//!   `opendkim-testkey` (opendkim-tools) finds and checks that record through our DNS server;
//! - `opendkim-testmsg` signs a message with that key, swaks sends it, and the stored copy
//!   carries our `Authentication-Results` with `dkim=pass`;
//! - a DMARC `p=reject` failure (SPF fails, no signature) is refused with `550 5.7.1`, a
//!   `p=quarantine` one is delivered tagged;
//! - mail from `signed.test` forwarded to Postfix's `smtp-sink` leaves signed by us, and
//!   Python's dkimpy verifies it against the record our DNS server serves (dig);
//! - an `.exe` attachment on a `process` route with `scan = true` is refused with `554 5.7.1`;
//! - `[email.limits]`: recipients per message (`452 4.5.3`) and messages per minute per IP
//!   (`450 4.7.1`), exact codes on a raw socket, counted in `shardgate stats`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardgate_tests::{ensure_tool, free_port, maildir, wait_for_message, Appliance};

/// Selector of the appliance's first key for `signed.test`.
const SELECTOR: &str = "sg";

fn config(smtp: u16, dns: u16, sink: u16, extra: &str) -> String {
    format!(
        r#"
[dns]
udp = ["127.0.0.1:{dns}"]
tcp = ["127.0.0.1:{dns}"]

# One zone for the whole TLD: the DMARC tree walk's parent query (_dmarc.test.) gets an
# authoritative NXDOMAIN instead of a refusal.
[[dns.zones]]
origin = "test."
soa = {{ mname = "ns1.test.", rname = "hostmaster.test.", serial = 1 }}
records = [
  {{ name = "@", type = "NS", value = "ns1.test." }},
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "sender", type = "TXT", value = "v=spf1 ip4:192.0.2.99 -all" }},
  {{ name = "_dmarc.sender", type = "TXT", value = "v=DMARC1; p=reject" }},
  {{ name = "quar", type = "TXT", value = "v=spf1 ip4:192.0.2.99 -all" }},
  {{ name = "_dmarc.quar", type = "TXT", value = "v=DMARC1; p=quarantine" }},
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
name = "scanned"
match = {{ recipients = "*@scanned.test" }}
action = {{ type = "process", scan = true }}

[[email.routes]]
name = "out"
match = {{ recipients = "*@remote.test" }}
action = {{ type = "forward", host = "127.0.0.1", port = {sink}, starttls = "none" }}

[[email.domains]]
name = "signed.test"
dns_mode = "internal"
dkim = {{ selector = "{SELECTOR}", algorithm = "rsa-sha256", key_size = 2048 }}

[email.auth]
resolver = "127.0.0.1:{dns}"
timeout_secs = 10
{extra}
"#
    )
}

fn start(extra: &str) -> (Appliance, u16, u16) {
    start_with_sink(extra, free_port())
}

fn start_with_sink(extra: &str, sink: u16) -> (Appliance, u16, u16) {
    let smtp = free_port();
    let dns = free_port();
    let appliance = Appliance::start(&config(smtp, dns, sink, extra), smtp);
    (appliance, smtp, dns)
}

/// Waits until the appliance published the DKIM record of `signed.test`.
fn wait_for_dkim_record(appliance: &Appliance) {
    appliance.wait_for_log(&format!("{SELECTOR}._domainkey.signed.test"), Duration::from_secs(60));
}

fn swaks(port: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--helo", "client.sender.test", "--timeout", "40"])
        .args(args)
        .output()
        .expect("run swaks");
    (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

/// An unbound configuration that sends every `test.` query to our DNS server.
fn unbound_stub(dir: &Path, dns: u16) -> PathBuf {
    let unbound = dir.join("unbound.conf");
    std::fs::write(
        &unbound,
        format!(
            // `test.` is one of unbound's default local zones (RFC 6761): lift that.
            "server:\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  local-zone: \"test.\" nodefault\n\nstub-zone:\n  name: \"test.\"\n  stub-addr: 127.0.0.1@{dns}\n"
        ),
    )
    .expect("unbound conf");
    let conf = dir.join("opendkim.conf");
    std::fs::write(&conf, format!("ResolverConfiguration {}\n", unbound.display())).expect("opendkim conf");
    conf
}

/// The appliance's private key of `signed.test` as PEM (stored as PKCS#1 DER, mode 0600).
fn private_key_pem(appliance: &Appliance, dir: &Path) -> PathBuf {
    let der = appliance.dir.path().join(format!("data/storage/dkim/signed.test/{SELECTOR}.key"));
    let pem = dir.join("sg.pem");
    let status = Command::new("openssl")
        .args(["rsa", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl could not read {}", der.display());
    pem
}

#[test]
fn dkim_key_published_in_our_zone_checks_out_and_signed_mail_passes() {
    if !ensure_tool("swaks", &["--version"], "swaks")
        || !ensure_tool("opendkim-testkey", &["-V"], "opendkim-tools")
        || !ensure_tool("openssl", &["version"], "openssl")
    {
        eprintln!("skipped: needs swaks, opendkim-tools and openssl");
        return;
    }
    let (appliance, smtp, dns) = start("");
    wait_for_dkim_record(&appliance);
    let work = tempfile::tempdir().expect("tempdir");
    let pem = private_key_pem(&appliance, work.path());

    // opendkim-testkey: the record served by our DNS server matches the private key.
    let conf = unbound_stub(work.path(), dns);
    let testkey = Command::new("opendkim-testkey")
        .args(["-d", "signed.test", "-s", SELECTOR, "-vvv", "-k"])
        .arg(&pem)
        .arg("-x")
        .arg(&conf)
        .output()
        .expect("opendkim-testkey");
    let said = format!("{}{}", String::from_utf8_lossy(&testkey.stdout), String::from_utf8_lossy(&testkey.stderr));
    assert!(testkey.status.success(), "opendkim-testkey failed:\n{said}");
    assert!(said.contains("key OK") || said.contains("key not secure"), "opendkim-testkey:\n{said}");

    // opendkim-testmsg signs with that key; we verify.
    let message = "From: Alice <alice@signed.test>\r\nTo: bob@example.test\r\nSubject: signed\r\nDate: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <dkim-1@signed.test>\r\n\r\nSigned by opendkim, verified by shardgate.\r\n";
    let mut signer = Command::new("opendkim-testmsg")
        .args(["-C", "-d", "signed.test", "-s", SELECTOR, "-k"])
        .arg(&pem)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("opendkim-testmsg");
    signer.stdin.take().expect("stdin").write_all(message.as_bytes()).expect("write");
    let signed = signer.wait_with_output().expect("signed");
    assert!(signed.status.success());
    let signed_text = String::from_utf8_lossy(&signed.stdout).to_string();
    assert!(signed_text.contains("DKIM-Signature:"), "not signed:\n{signed_text}");
    let file = work.path().join("signed.eml");
    std::fs::write(&file, &signed.stdout).expect("write signed");

    let (ok, transcript) =
        swaks(smtp, &["--from", "alice@signed.test", "--to", "bob@example.test", "--data", &file.display().to_string()]);
    assert!(ok, "swaks:\n{transcript}");
    let stored = wait_for_message(&maildir(&appliance, "bob@example.test"));
    let results: String = stored.split("\r\n\r\n").next().unwrap_or("").to_string();
    assert!(results.contains("Authentication-Results: mx.example.test;"), "no Authentication-Results:\n{stored}");
    assert!(results.contains("dkim=pass"), "DKIM did not pass:\n{stored}");
    assert!(results.contains("header.d=signed.test"), "{stored}");
}

#[test]
fn dmarc_reject_failure_is_refused_with_550_5_7_1() {
    if !ensure_tool("swaks", &["--version"], "swaks") {
        eprintln!("skipped: needs swaks");
        return;
    }
    let (appliance, smtp, _dns) = start("");
    let (ok, transcript) = swaks(
        smtp,
        &["--from", "alice@sender.test", "--to", "bob@example.test", "--h-From", "Alice <alice@sender.test>", "--body", "spoofed"],
    );
    assert!(!ok, "accepted:\n{transcript}");
    assert!(transcript.contains("<** 550 5.7.1"), "not 550 5.7.1:\n{transcript}");
    assert!(transcript.contains("DMARC policy of sender.test"), "{transcript}");
    let stats = appliance.stats();
    assert_eq!(stats["smtp"]["dmarc_rejected"], 1, "{stats}");
    // Nothing was stored.
    assert!(std::fs::read_dir(maildir(&appliance, "bob@example.test")).map(|d| d.count() == 0).unwrap_or(true));
}

#[test]
fn dmarc_quarantine_failure_is_delivered_tagged() {
    if !ensure_tool("swaks", &["--version"], "swaks") {
        eprintln!("skipped: needs swaks");
        return;
    }
    let (appliance, smtp, _dns) = start("");
    let (ok, transcript) =
        swaks(smtp, &["--from", "q@quar.test", "--to", "bob@example.test", "--h-From", "Q <q@quar.test>", "--body", "doubtful"]);
    assert!(ok, "refused:\n{transcript}");
    let stored = wait_for_message(&maildir(&appliance, "bob@example.test"));
    assert!(stored.contains("X-Shardgate-Quarantine: dmarc (quar.test)"), "{stored}");
    assert!(stored.contains("dmarc=fail") && stored.contains("policy.dmarc=quarantine"), "{stored}");
    assert_eq!(appliance.stats()["smtp"]["dmarc_quarantined"], 1);
}

/// Sends `line` and returns the reply's last line.
fn command(reader: &mut BufReader<TcpStream>, line: &str) -> String {
    reader.get_mut().write_all(format!("{line}\r\n").as_bytes()).expect("write");
    read_reply(reader)
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        assert!(!line.is_empty(), "connection closed");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_string();
        }
    }
}

#[test]
fn rate_limits_answer_with_exact_codes_and_are_counted() {
    let limits = "[email.limits]\nrecipients_per_message = 2\nip_messages_per_minute = 2\n";
    let (appliance, smtp, _dns) = start(limits);
    let stream = TcpStream::connect(("127.0.0.1", smtp)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reader = BufReader::new(stream);
    assert!(read_reply(&mut reader).starts_with("220 "));
    assert!(command(&mut reader, "EHLO client.test").starts_with("250 "));
    // Message 1: two recipients, the third is one too many.
    assert!(command(&mut reader, "MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(command(&mut reader, "RCPT TO:<one@example.test>").starts_with("250 "));
    assert!(command(&mut reader, "RCPT TO:<two@example.test>").starts_with("250 "));
    assert_eq!(command(&mut reader, "RCPT TO:<three@example.test>"), "452 4.5.3 Too many recipients");
    assert!(command(&mut reader, "RSET").starts_with("250 "));
    // Message 2 uses the second token; message 3 finds none (2 per minute).
    assert!(command(&mut reader, "MAIL FROM:<a@client.test>").starts_with("250 "));
    assert!(command(&mut reader, "RCPT TO:<one@example.test>").starts_with("250 "));
    assert!(command(&mut reader, "RSET").starts_with("250 "));
    assert!(command(&mut reader, "MAIL FROM:<a@client.test>").starts_with("250 "));
    assert_eq!(
        command(&mut reader, "RCPT TO:<one@example.test>"),
        "450 4.7.1 Message rate limit of the client address exceeded, try again later"
    );
    assert!(command(&mut reader, "QUIT").starts_with("221 "));
    let stats = appliance.stats();
    assert_eq!(stats["smtp"]["limits"]["recipients_refused"], 1, "{stats}");
    assert_eq!(stats["smtp"]["limits"]["rate_limited"], 1, "{stats}");
}

#[test]
fn dns_records_prints_the_published_key() {
    let (appliance, _smtp, _dns) = start("");
    wait_for_dkim_record(&appliance);
    let output = Command::new(shardgate_tests::shardgate_bin())
        .args(["dns-records", "signed.test", "--config"])
        .arg(&appliance.config_path)
        .output()
        .expect("dns-records");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains(&format!("{SELECTOR}._domainkey.signed.test.\t300\tIN\tTXT\t\"v=DKIM1; k=rsa; p=")), "{text}");
    // The same key the appliance published (no second key was made).
    assert_eq!(text.matches("._domainkey.").count(), 1, "{text}");
}

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// Debian's interpreter: python3-dkim is installed for it (a `python3` first on PATH may be
/// another one).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Whether Debian's python3 imports dkimpy (installing python3-dkim once when root).
fn has_dkimpy() -> bool {
    let imports = || Command::new(DEBIAN_PYTHON).args(["-c", "import dkim"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if imports() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "python3-dkim"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    imports()
}

/// Verifies every DKIM signature of `message` with dkimpy, keys from our DNS server (dig).
const DKIMPY_VERIFY: &str = r#"
import subprocess, sys, dkim
port = sys.argv[1]
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    out = subprocess.run(["dig", "+short", "-p", port, "@127.0.0.1", "TXT", name.rstrip(".")], capture_output=True, text=True).stdout
    return "".join(part for part in out.strip().split('"') if part.strip()).encode()
message = sys.stdin.buffer.read()
ok = dkim.verify(message, dnsfunc=dnsfunc)
print("dkimpy verify:", ok)
sys.exit(0 if ok else 1)
"#;

#[test]
fn forwarded_mail_leaves_signed_and_dkimpy_verifies_it() {
    if !ensure_tool("swaks", &["--version"], "swaks")
        || !ensure_tool(SMTP_SINK, &[], "postfix")
        || !ensure_tool("dig", &["-v"], "bind9-dnsutils")
        || !has_dkimpy()
    {
        eprintln!("skipped: needs swaks, postfix (smtp-sink), dig and python3-dkim");
        return;
    }
    let dump = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let sink_port = free_port();
    let mut sink_command = Command::new(SMTP_SINK);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        sink_command.args(["-u", "nobody"]);
    }
    let mut sink = sink_command
        .arg("-d")
        .arg(format!("{}/%M.", dump.path().display()))
        .arg(format!("127.0.0.1:{sink_port}"))
        .arg("64")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink");
    let (appliance, smtp, dns) = start_with_sink("", sink_port);
    wait_for_dkim_record(&appliance);
    // The signer table is filled with the first key; give the control core its first tick.
    std::thread::sleep(Duration::from_secs(2));
    let (ok, transcript) = swaks(
        smtp,
        &[
            "--from",
            "alice@signed.test",
            "--to",
            "carol@remote.test",
            "--h-From",
            "Alice <alice@signed.test>",
            "--h-Subject",
            "signed on the way out",
            "--body",
            "Hello Carol.",
        ],
    );
    assert!(ok, "swaks:\n{transcript}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let found = std::fs::read_dir(dump.path()).ok().and_then(|mut d| d.next()).and_then(Result::ok);
        if let Some(entry) = found {
            std::thread::sleep(Duration::from_millis(200));
            break std::fs::read(entry.path()).expect("dump");
        }
        assert!(Instant::now() < deadline, "nothing reached smtp-sink; log:\n{}", appliance.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = sink.kill();
    let _ = sink.wait();
    let text = String::from_utf8_lossy(&message).to_string();
    assert!(text.contains("DKIM-Signature: v=1; a=rsa-sha256;"), "not signed:\n{text}");
    assert!(text.contains("d=signed.test") && text.contains(&format!("s={SELECTOR}")), "{text}");
    // smtp-sink puts its own X- lines first; DKIM does not cover them.
    let mut verify = Command::new(DEBIAN_PYTHON)
        .args(["-c", DKIMPY_VERIFY, &dns.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    verify.stdin.take().expect("stdin").write_all(&message).expect("write");
    let verdict = verify.wait_with_output().expect("dkimpy");
    assert!(
        verdict.status.success(),
        "dkimpy says no:\n{}{}\n{text}",
        String::from_utf8_lossy(&verdict.stdout),
        String::from_utf8_lossy(&verdict.stderr)
    );
}

#[test]
fn blocked_attachment_on_a_scanned_route_is_refused_with_554_5_7_1() {
    if !ensure_tool("swaks", &["--version"], "swaks") {
        eprintln!("skipped: needs swaks");
        return;
    }
    let (appliance, smtp, _dns) = start("");
    let work = tempfile::tempdir().expect("tempdir");
    let attachment = work.path().join("setup.exe");
    std::fs::write(&attachment, b"MZ not really a program").expect("write");
    let (ok, transcript) = swaks(
        smtp,
        &["--from", "dave@client.test", "--to", "erin@scanned.test", "--attach", &attachment.display().to_string()],
    );
    assert!(!ok, "accepted:\n{transcript}");
    assert!(transcript.contains("<** 554 5.7.1 Message rejected: attachment \"setup.exe\" (extension exe)"), "{transcript}");
    // The same message without the attachment is queued.
    let (ok, transcript) = swaks(smtp, &["--from", "dave@client.test", "--to", "erin@scanned.test", "--body", "plain"]);
    assert!(ok, "{transcript}");
    assert_eq!(appliance.stats()["smtp"]["attachments_blocked"], 1);
}
