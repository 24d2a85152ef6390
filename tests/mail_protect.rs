//! Mail protection with real clients; every DNS answer comes from shardgate's own DNS server
//! on loopback (a `test.` zone holding a test DNSBL, SPF records and a sending domain):
//! - DNSBL at connect: a client at 127.0.0.2 (listed as `2.0.0.127.bl.test A 127.0.0.2`)
//!   gets `554 5.7.1` instead of the banner, 127.0.0.3 is served; the answer is cached (no
//!   second query); with `action = "tag"` its mail carries `X-Shardgate-DNSBL`;
//! - spam score on a `scan = true` route: a phishing link with a script is refused with
//!   `550 5.7.1` above `spam_reject_score`, a milder one is queued with SpamAssassin-style
//!   `X-Spam-Status: Yes, score=... tests=...`;
//! - a blocked name inside a zip attachment (python3's zipfile) is refused like a blocked
//!   attachment (`554 5.7.1`);
//! - SPF `softfail` (a `~all` record) and `temperror` (an unreachable resolver) in the
//!   stored message's `Authentication-Results`;
//! - `[email.delivery.limits]`: the second message in a minute to one destination is
//!   deferred (still queued, `shardgate queue status` says why), never bounced;
//! - `shardgate dns-records DOMAIN --check` against our DNS server: OK for published records,
//!   MISSING / DIFFERS (exit 1) for a domain whose DNS disagrees.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_tests::{connect_from, ensure_tool, free_port, maildir, wait_for_message, Appliance};

fn zone(dns: u16) -> String {
    format!(
        r#"
[dns]
udp = ["127.0.0.1:{dns}"]
tcp = ["127.0.0.1:{dns}"]

[[dns.zones]]
origin = "test."
soa = {{ mname = "ns1.test.", rname = "hostmaster.test.", serial = 1 }}
records = [
  {{ name = "@", type = "NS", value = "ns1.test." }},
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "2.0.0.127.bl", type = "A", value = "127.0.0.2" }},
  {{ name = "soft", type = "TXT", value = "v=spf1 ip4:192.0.2.99 ~all" }},
  {{ name = "ext", type = "TXT", value = "v=spf1 -all" }},
  {{ name = "ext", type = "MX", value = "10 mx.ext.test." }},
]
"#
    )
}

/// `[email]` on `smtp` with routes: local delivery for example.test, a scanned `process`
/// route for scanned.test, a forward to 127.0.0.1:`sink` for remote.test.
fn email(smtp: u16, sink: u16, relay_networks: &str, extra: &str) -> String {
    format!(
        r#"
[email]
hostname = "mx.example.test"
listen = ["127.0.0.1"]
local_domains = ["example.test"]
relay_networks = [{relay_networks}]

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
{extra}
"#
    )
}

struct Started {
    appliance: Appliance,
    smtp: u16,
    dns: u16,
}

fn start(relay_networks: &str, sink: u16, extra: impl Fn(u16) -> String) -> Started {
    let smtp = free_port();
    let dns = free_port();
    let body = format!("{}{}", zone(dns), email(smtp, sink, relay_networks, &extra(dns)));
    Started { appliance: Appliance::start(&body, smtp), smtp, dns }
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all.trim_end().to_string();
        }
    }
}

fn greeting_from(source: &str, port: u16) -> (String, BufReader<TcpStream>) {
    let stream = connect_from(source, port).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut reader = BufReader::new(stream);
    (read_reply(&mut reader), reader)
}

fn command(reader: &mut BufReader<TcpStream>, line: &str) -> String {
    reader.get_mut().write_all(format!("{line}\r\n").as_bytes()).expect("write");
    read_reply(reader)
}

/// Sends one message on an open, greeted session; returns the final reply.
fn send_message(reader: &mut BufReader<TcpStream>, from: &str, to: &str, text: &str) -> String {
    assert!(command(reader, "EHLO client.test").starts_with("250"));
    assert!(command(reader, &format!("MAIL FROM:<{from}>")).starts_with("250"));
    let rcpt = command(reader, &format!("RCPT TO:<{to}>"));
    assert!(rcpt.starts_with("250"), "RCPT: {rcpt}");
    assert!(command(reader, "DATA").starts_with("354"));
    command(reader, &format!("{text}\r\n."))
}

/// Waits for the control core to write stats that satisfy `ready`.
fn stats_when(appliance: &Appliance, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = appliance.stats();
        if ready(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const PLAIN: &str = "From: Carol <carol@client.test>\r\nTo: bob@example.test\r\nSubject: hello\r\nDate: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <p-1@client.test>\r\n\r\nJust saying hello.";

#[test]
fn dnsbl_listed_client_gets_554_instead_of_the_banner_and_the_answer_is_cached() {
    let started = start("\"10.255.0.0/16\"", free_port(), |dns| {
        format!("[email.dnsbl]\nzones = [\"bl.test\"]\naction = \"reject\"\ncache_secs = 300\nresolver = \"127.0.0.1:{dns}\"\n")
    });
    let (banner, _) = greeting_from("127.0.0.2", started.smtp);
    assert_eq!(banner, "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test");
    // Not listed (NXDOMAIN): the ordinary banner.
    let (banner, mut session) = greeting_from("127.0.0.3", started.smtp);
    assert!(banner.starts_with("220 mx.example.test"), "{banner}");
    assert!(send_message(&mut session, "carol@client.test", "bob@example.test", PLAIN).starts_with("250"));
    let before = stats_when(&started.appliance, |s| s["smtp"]["dnsbl_rejected"] == 1 && s["dns"]["udp_queries"].as_u64() >= Some(2));
    assert_eq!(before["smtp"]["dnsbl_listed"], 1, "{before:#}");
    let queries = before["dns"]["udp_queries"].as_u64().expect("dns counters");
    // Again from the listed address: refused from the cache, no new DNS query.
    let (banner, _) = greeting_from("127.0.0.2", started.smtp);
    assert!(banner.starts_with("554 5.7.1 "), "{banner}");
    let after = stats_when(&started.appliance, |s| s["smtp"]["dnsbl_rejected"] == 2);
    assert_eq!(after["smtp"]["dnsbl_rejected"], 2, "{after:#}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(started.appliance.stats()["dns"]["udp_queries"].as_u64(), Some(queries), "the cached answer was asked again");
}

#[test]
fn dnsbl_tag_action_serves_the_client_and_notes_the_listing() {
    let started = start("\"10.255.0.0/16\"", free_port(), |dns| {
        format!("[email.dnsbl]\nzones = [\"bl.test\"]\naction = \"tag\"\nresolver = \"127.0.0.1:{dns}\"\n[email.scan]\nspam_tag_score = 5\n\n[[email.routes]]\nname = \"scanned-local\"\npriority = 10\nmatch = {{ recipients = \"erin@example.test\" }}\naction = {{ type = \"process\", scan = true }}\n")
    });
    let (banner, mut session) = greeting_from("127.0.0.2", started.smtp);
    assert!(banner.starts_with("220 "), "{banner}");
    let reply = send_message(&mut session, "carol@client.test", "bob@example.test", PLAIN);
    assert!(reply.starts_with("250"), "{reply}");
    let stored = wait_for_message(&maildir(&started.appliance, "bob@example.test"));
    assert!(stored.contains("X-Shardgate-DNSBL: 127.0.0.2 listed in bl.test (127.0.0.2)\r\n"), "{stored}");
    // On a scanned route the listing scores RCVD_IN_DNSBL (3.0): with a script (2.5) it is spam.
    assert!(command(&mut session, "RSET").starts_with("250"));
    let scripted = html_message("d-1", "<p>hello</p><script>x()</script>");
    let reply = send_message(&mut session, "service@client.test", "erin@example.test", &scripted);
    assert!(reply.starts_with("250"), "{reply}");
    let journal = journal_text(&started.appliance);
    assert!(journal.contains("X-Spam-Status: Yes, score=5.5 required=5.0 tests=HTML_SCRIPT,RCVD_IN_DNSBL\r\n"), "{journal}");
    let stats = stats_when(&started.appliance, |s| s["smtp"]["dnsbl_listed"] == 1);
    assert_eq!((stats["smtp"]["dnsbl_listed"].as_u64(), stats["smtp"]["dnsbl_rejected"].as_u64()), (Some(1), Some(0)), "{stats:#}");
}

fn html_message(id: &str, body: &str) -> String {
    format!(
        "From: Bank <service@client.test>\r\nTo: erin@scanned.test\r\nSubject: Your account\r\nDate: Wed, 02 Dec 2026 06:00:00 +0000\r\nMessage-ID: <{id}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{body}"
    )
}

/// The queue's journal (the trace header, spam headers included, is recorded there).
fn journal_text(appliance: &Appliance) -> String {
    let queue = appliance.dir.path().join("data/mail/queue");
    let mut text = String::new();
    for entry in std::fs::read_dir(&queue).expect("queue folder").flatten() {
        if entry.file_name().to_string_lossy().starts_with("journal-") {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(entry.path()).expect("journal")));
        }
    }
    text
}

#[test]
fn spam_score_rejects_above_the_threshold_and_tags_below_it() {
    let started = start("\"127.0.0.0/8\"", free_port(), |_| "[email.scan]\nspam_tag_score = 5\nspam_reject_score = 8\n".to_string());
    let (_, mut session) = greeting_from("127.0.0.1", started.smtp);
    // Phishing link (3.5) + script (2.5) + event handler (2.0) = 8.0: refused.
    let worst = html_message(
        "s-1",
        "<p>Confirm at <a href=\"http://203.0.113.9/login\">https://www.bank.example/login</a></p>\r\n<script>steal()</script><img src=x onerror=\"go()\">",
    );
    let reply = send_message(&mut session, "service@client.test", "erin@scanned.test", &worst);
    assert!(reply.starts_with("550 5.7.1 Message rejected as spam (score=8.0 tests=HTML_EVENT_HANDLER,HTML_SCRIPT,PHISH_LINK_MISMATCH)"), "{reply}");
    assert!(command(&mut session, "RSET").starts_with("250"));
    // Phishing link + script = 6.0: queued, tagged.
    let milder = html_message("s-2", "<a href=\"http://203.0.113.9/\">www.bank.example</a><script>x()</script>");
    assert!(command(&mut session, "MAIL FROM:<service@client.test>").starts_with("250"));
    assert!(command(&mut session, "RCPT TO:<erin@scanned.test>").starts_with("250"));
    assert!(command(&mut session, "DATA").starts_with("354"));
    let reply = command(&mut session, &format!("{milder}\r\n."));
    assert!(reply.starts_with("250"), "{reply}");
    let journal = journal_text(&started.appliance);
    assert!(journal.contains("X-Spam-Flag: YES\r\nX-Spam-Score: 6.0\r\nX-Spam-Status: Yes, score=6.0 required=5.0 tests=HTML_SCRIPT,PHISH_LINK_MISMATCH\r\n"), "{journal}");
    // A clean message on the same route: scored, not tagged.
    assert!(command(&mut session, "MAIL FROM:<carol@client.test>").starts_with("250"));
    assert!(command(&mut session, "RCPT TO:<erin@scanned.test>").starts_with("250"));
    assert!(command(&mut session, "DATA").starts_with("354"));
    assert!(command(&mut session, &format!("{}\r\n.", PLAIN.replace("bob@example.test", "erin@scanned.test"))).starts_with("250"));
    assert!(journal_text(&started.appliance).contains("X-Spam-Status: No, score=0.0 required=5.0 tests=none"));
    let stats = stats_when(&started.appliance, |s| s["smtp"]["spam_tagged"] == 1);
    assert_eq!((stats["smtp"]["spam_rejected"].as_u64(), stats["smtp"]["spam_tagged"].as_u64()), (Some(1), Some(1)), "{stats:#}");
}

#[test]
fn a_blocked_name_inside_a_zip_attachment_is_refused() {
    if !ensure_tool("swaks", &["--version"], "swaks") || !ensure_tool("python3", &["--version"], "python3") {
        eprintln!("skipped: needs swaks and python3");
        return;
    }
    let started = start("\"127.0.0.0/8\"", free_port(), |_| String::new());
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("photos.zip");
    let inner = work.path().join("inner.zip");
    // photos.zip holds holiday.jpg and inner.zip, which holds the executable (one level down).
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED) as z: z.writestr('setup.scr', b'MZ' * 100)\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    z.writestr('holiday.jpg', b'JPEG')\n    z.write(sys.argv[2], 'more/inner.zip')\n",
        ])
        .arg(&archive)
        .arg(&inner)
        .status()
        .expect("python3");
    assert!(status.success());
    let output = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", started.smtp), "--from", "dave@client.test", "--to", "erin@scanned.test"])
        .arg("--attach")
        .arg(&archive)
        .output()
        .expect("swaks");
    let transcript = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "accepted:\n{transcript}");
    assert!(
        transcript.contains("<** 554 5.7.1 Message rejected: attachment \"photos.zip: more/inner.zip/setup.scr\" (extension scr in archive)"),
        "{transcript}"
    );
    assert_eq!(stats_when(&started.appliance, |s| s["smtp"]["attachments_blocked"] == 1)["smtp"]["attachments_blocked"], 1);
}

fn authentication_results(stored: &str) -> String {
    stored.split("\r\n\r\n").next().unwrap_or("").to_string()
}

#[test]
fn spf_softfail_from_our_dns_shows_in_authentication_results() {
    let started = start("\"127.0.0.0/8\"", free_port(), |dns| format!("[email.auth]\nresolver = \"127.0.0.1:{dns}\"\ntimeout_secs = 10\n"));
    let (_, mut session) = greeting_from("127.0.0.1", started.smtp);
    let text = PLAIN.replace("carol@client.test", "carol@soft.test");
    assert!(send_message(&mut session, "carol@soft.test", "bob@example.test", &text).starts_with("250"));
    let stored = wait_for_message(&maildir(&started.appliance, "bob@example.test"));
    let head = authentication_results(&stored);
    assert!(head.contains("Authentication-Results: mx.example.test;"), "{stored}");
    assert!(head.contains("spf=softfail"), "{stored}");
    assert!(head.contains("smtp.mailfrom=carol@soft.test"), "{stored}");
    let _ = started.dns;
}

/// A resolver that answers SERVFAIL to every question (the header flipped to a response
/// with RCODE 2, the question echoed).
fn servfail_resolver() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut reply = buf[..n].to_vec();
            reply[2] = 0x80 | (reply[2] & 0x79); // QR, keep opcode and RD
            reply[3] = 0x80 | 2; // RA, SERVFAIL
            reply[6..12].fill(0); // no answer, authority or additional records
            // Drop anything after the question (an OPT record).
            let mut end = 12;
            while end < n && reply[end] != 0 {
                end += usize::from(reply[end]) + 1;
            }
            reply.truncate((end + 5).min(n));
            let _ = socket.send_to(&reply, from);
        }
    });
    port
}

#[test]
fn spf_temperror_when_the_resolver_fails() {
    let servfail = servfail_resolver();
    let started = start("\"127.0.0.0/8\"", free_port(), move |_| format!("[email.auth]\nresolver = \"127.0.0.1:{servfail}\"\ntimeout_secs = 20\n"));
    let (_, mut session) = greeting_from("127.0.0.1", started.smtp);
    let text = PLAIN.replace("carol@client.test", "carol@soft.test");
    let reply = send_message(&mut session, "carol@soft.test", "bob@example.test", &text);
    assert!(reply.starts_with("250"), "a DNS failure must not refuse mail: {reply}");
    let stored = wait_for_message(&maildir(&started.appliance, "bob@example.test"));
    let head = authentication_results(&stored);
    assert!(head.contains("spf=temperror"), "{stored}");
}

/// A minimal SMTP server that accepts everything and counts the messages.
fn sink() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let _ = writer.write_all(b"220 sink ESMTP\r\n");
                let mut in_data = false;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let reply: &[u8] = if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            counted.fetch_add(1, Ordering::SeqCst);
                            b"250 2.0.0 Ok: stored\r\n"
                        } else {
                            b""
                        }
                    } else {
                        let upper = line.to_ascii_uppercase();
                        if upper.starts_with("EHLO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = writer.write_all(b"221 bye\r\n");
                            break;
                        } else {
                            b"250 2.1.0 Ok\r\n"
                        }
                    };
                    if !reply.is_empty() && writer.write_all(reply).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, count)
}

fn queue_id(reply: &str) -> String {
    reply.rsplit("queued as ").next().expect("queued as").trim().to_string()
}

#[test]
fn over_the_sending_limit_a_message_is_deferred_not_bounced() {
    let (sink_port, delivered) = sink();
    let started = start("\"127.0.0.0/8\"", sink_port, |_| "[email.delivery.limits]\ndomain_messages_per_minute = 1\n".to_string());
    let (_, mut session) = greeting_from("127.0.0.1", started.smtp);
    let first = send_message(&mut session, "carol@client.test", "dan@remote.test", &PLAIN.replace("bob@example.test", "dan@remote.test"));
    assert!(first.starts_with("250"), "{first}");
    assert!(command(&mut session, "RSET").starts_with("250"));
    assert!(command(&mut session, "MAIL FROM:<carol@client.test>").starts_with("250"));
    assert!(command(&mut session, "RCPT TO:<dan@remote.test>").starts_with("250"));
    assert!(command(&mut session, "DATA").starts_with("354"));
    let second = command(&mut session, &format!("{}\r\n.", PLAIN.replace("bob@example.test", "dan@remote.test").replace("p-1@", "p-2@")));
    assert!(second.starts_with("250"), "{second}");
    let second_id = queue_id(&second);
    let stats = stats_when(&started.appliance, |s| s["mail_delivery"]["throttled"].as_u64() >= Some(1) && s["mail_delivery"]["delivered"] == 1);
    assert_eq!(stats["mail_delivery"]["delivered"], 1, "{stats:#}");
    assert!(stats["mail_delivery"]["throttled"].as_u64() >= Some(1), "{stats:#}");
    assert_eq!(stats["mail_delivery"]["bounced"], 0, "{stats:#}");
    assert_eq!(delivered.load(Ordering::SeqCst), 1);
    let status = Command::new(shardgate_tests::shardgate_bin())
        .args(["queue", "status", &second_id, "--config"])
        .arg(&started.appliance.config_path)
        .output()
        .expect("queue status");
    let said = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(said.contains("deferred") && said.contains("sending limit for 127.0.0.1 reached"), "{said}{}", String::from_utf8_lossy(&status.stderr));
}

fn dns_records_check(appliance: &Appliance, domain: &str) -> (Option<i32>, String) {
    let output = Command::new(shardgate_tests::shardgate_bin())
        .args(["dns-records", domain, "--check", "--config"])
        .arg(&appliance.config_path)
        .output()
        .expect("dns-records --check");
    (output.status.code(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn dns_records_check_reports_ok_missing_and_differs_from_our_dns() {
    let started = start("\"127.0.0.0/8\"", free_port(), |dns| {
        format!(
            r#"
[[email.domains]]
name = "pub.test"
dns_mode = "internal"
dkim = {{ selector = "sg", algorithm = "ed25519-sha256" }}
mx = "mx.pub.test"
spf = "v=spf1 mx -all"
dmarc = "v=DMARC1; p=reject"

[[email.domains]]
name = "ext.test"
dkim = {{ selector = "ex", algorithm = "ed25519-sha256" }}
mx = "mx.ext.test"
spf = "v=spf1 mx -all"
dmarc = "v=DMARC1; p=quarantine"

[email.auth]
resolver = "127.0.0.1:{dns}"
"#
        )
    });
    started.appliance.wait_for_log("sg._domainkey.pub.test", Duration::from_secs(60));
    // Published by the appliance into its own zone: all four are OK.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, report) = loop {
        let (code, report) = dns_records_check(&started.appliance, "pub.test");
        if code == Some(0) || Instant::now() > deadline {
            break (code, report);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(code, Some(0), "{report}");
    for line in ["OK       DKIM  TXT sg._domainkey.pub.test", "OK       MX    MX pub.test", "OK       SPF   TXT pub.test", "OK       DMARC TXT _dmarc.pub.test"] {
        assert!(report.contains(line), "missing `{line}` in\n{report}");
    }
    // External DNS (our zone file) disagrees: exit 1 with what differs and what is missing.
    let (code, report) = dns_records_check(&started.appliance, "ext.test");
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("OK       MX    MX ext.test"), "{report}");
    assert!(report.contains("DIFFERS  SPF   TXT ext.test\n         expected: v=spf1 mx -all\n         found:    v=spf1 -all"), "{report}");
    assert!(report.contains("MISSING  DMARC TXT _dmarc.ext.test\n         expected: v=DMARC1; p=quarantine"), "{report}");
    assert!(report.contains("MISSING  DKIM  TXT ex._domainkey.ext.test"), "{report}");
}
