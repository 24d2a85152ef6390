//! RADIUS through the real binary with real clients: `radclient` (Debian freeradius-utils)
//! and Python `pyrad`. MAB in every MAC format with VLAN attributes, guest VLAN and reject,
//! Message-Authenticator required by default, wrong secret and unknown client (no reply,
//! counted), malformed datagrams, Status-Server, accounting sessions listed by
//! `shardgate radius sessions` and kept across a restart, and a SIGHUP policy change.
//!
//! A client that is missing and cannot be installed makes its test skip with a message.

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use shardgate_radius::auth;
use shardgate_radius::packet::{Attribute, Code, Packet, RawPacket};
use shardgate_tests::{ensure_tool, free_udp_port, shardgate_bin, Appliance};

const SECRET: &str = "radius-test-secret";

/// Auth and acct ports plus the config body around them.
struct RadiusPorts {
    auth: u16,
    acct: u16,
}

impl RadiusPorts {
    fn new() -> RadiusPorts {
        let auth = free_udp_port();
        let mut acct = free_udp_port();
        while acct == auth {
            acct = free_udp_port();
        }
        RadiusPorts { auth, acct }
    }

    /// A `[radius]` section: client 127.0.0.1, `aa:bb:cc:*` and one full MAC allowed,
    /// `aa:bb:cc:dd:*` → `vlan_rule`, other allowed → 10, unknown → `unknown`.
    fn config(&self, vlan_rule: u16, unknown: &str, extra: &str) -> String {
        format!(
            "[radius]\nlisten = [\"127.0.0.1\"]\nauth_port = {auth}\nacct_port = {acct}\n{extra}\n\
             [[radius.clients]]\nname = \"test-nas\"\nsource = \"127.0.0.1\"\nsecret = \"{SECRET}\"\n\
             [radius.mac_auth]\nallowed = [\"aa:bb:cc:*\", \"00:11:22:33:44:55\"]\ndefault_vlan = 10\nunknown = {unknown}\n\
             [[radius.vlans]]\nmac = \"aa:bb:cc:dd:*\"\nvlan = {vlan_rule}\n",
            auth = self.auth,
            acct = self.acct,
        )
    }
}

fn have_radclient() -> bool {
    let found = ensure_tool("radclient", &["-v"], "freeradius-utils");
    if !found {
        eprintln!("SKIPPED: radclient is not installed and could not be installed (Debian package freeradius-utils)");
    }
    found
}

/// What radclient printed and whether it got a reply.
struct RadclientRun {
    output: String,
}

impl RadclientRun {
    fn replied(&self, code: &str) -> bool {
        self.output.contains(&format!("Received {code}"))
    }

    fn no_reply(&self) -> bool {
        self.output.contains("No reply from server") && !self.output.contains("Received ")
    }

    /// The value of a reply attribute such as `Tunnel-Private-Group-Id` (tag stripped).
    fn reply_attribute(&self, name: &str) -> Option<String> {
        let received = self.output.split("Received ").nth(1)?;
        received.lines().find_map(|line| {
            let (key, value) = line.trim().split_once(" = ")?;
            let key = key.split(':').next()?;
            (key == name).then(|| value.trim_matches('"').to_string())
        })
    }
}

/// `radclient -x` sending `attributes` (radclient's `A=v,B=w` form) once, 1 s timeout.
/// Three tries, 2 s apart, as a NAS would retransmit (the duplicate cache answers a retry with
/// the same reply), so a loaded test machine does not turn a slow answer into "no reply".
fn radclient(port: u16, command: &str, secret: &str, attributes: &str) -> RadclientRun {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "3", "-t", "2", &format!("127.0.0.1:{port}"), command, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn radclient");
    child.stdin.take().expect("stdin").write_all(attributes.as_bytes()).expect("write attributes");
    let out = child.wait_with_output().expect("radclient output");
    RadclientRun { output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)) }
}

/// A MAB Access-Request in radclient's input form, with Message-Authenticator.
fn mab_request(user: &str, calling_station_id: &str) -> String {
    format!("User-Name={user},User-Password={user},Calling-Station-Id={calling_station_id},NAS-IP-Address=10.0.0.1,Message-Authenticator=0x00")
}

fn assert_vlan(run: &RadclientRun, vlan: &str) {
    assert!(run.replied("Access-Accept"), "no Access-Accept:\n{}", run.output);
    assert_eq!(run.reply_attribute("Tunnel-Type").as_deref(), Some("VLAN"), "{}", run.output);
    assert_eq!(run.reply_attribute("Tunnel-Medium-Type").as_deref(), Some("IEEE-802"), "{}", run.output);
    assert_eq!(run.reply_attribute("Tunnel-Private-Group-Id").as_deref(), Some(vlan), "{}", run.output);
    assert!(run.reply_attribute("Message-Authenticator").is_some(), "reply without Message-Authenticator:\n{}", run.output);
}

fn radius_stats(app: &Appliance) -> serde_json::Value {
    app.stats()["radius"].clone()
}

#[test]
fn mab_accepts_every_mac_format_with_its_vlan_and_guests_unknown_macs() {
    if !have_radclient() {
        return;
    }
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    for calling_station_id in ["aa-bb-cc-dd-ee-ff", "AABB.CCDD.EEFF", "aabbccddeeff", "aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF"] {
        let run = radclient(ports.auth, "auth", SECRET, &mab_request("aabbccddeeff", calling_station_id));
        assert_vlan(&run, "20");
    }
    // The MAC from User-Name when Calling-Station-Id is absent; an allowed MAC no rule matches.
    let run = radclient(ports.auth, "auth", SECRET, "User-Name=00-11-22-33-44-55,User-Password=00-11-22-33-44-55,Message-Authenticator=0x00");
    assert_vlan(&run, "10");
    // Unknown MAC: guest VLAN.
    let run = radclient(ports.auth, "auth", SECRET, &mab_request("020000000001", "02-00-00-00-00-01"));
    assert_vlan(&run, "999");
    // A password that is not the MAC is rejected.
    let run = radclient(
        ports.auth,
        "auth",
        SECRET,
        "User-Name=aabbccddeeff,User-Password=guess,Calling-Station-Id=aa-bb-cc-dd-ee-ff,Message-Authenticator=0x00",
    );
    assert!(run.replied("Access-Reject"), "{}", run.output);
    let stats = radius_stats(&app);
    assert_eq!(stats["access_accepts"], 7, "{stats}");
    assert_eq!(stats["access_rejects"], 1, "{stats}");
}

#[test]
fn message_authenticator_is_required_by_default_and_optional_when_relaxed() {
    if !have_radclient() {
        return;
    }
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "\"reject\"", ""), ports.auth);
    let without = "User-Name=aabbccddeeff,User-Password=aabbccddeeff,Calling-Station-Id=aa-bb-cc-dd-ee-ff";
    assert!(radclient(ports.auth, "auth", SECRET, without).no_reply(), "answered without Message-Authenticator");
    assert_vlan(&radclient(ports.auth, "auth", SECRET, &mab_request("aabbccddeeff", "aa-bb-cc-dd-ee-ff")), "20");
    app.rewrite_config(&ports.config(20, "\"reject\"", "require_message_authenticator = false"));
    app.reload();
    assert_vlan(&radclient(ports.auth, "auth", SECRET, without), "20");
    let stats = radius_stats(&app);
    // radclient sends the request twice (-r 1) when there is no reply.
    assert!(stats["missing_message_authenticator"].as_u64().unwrap_or(0) >= 1, "{stats}");
}

/// A signed Access-Request for `mac` as shardgate's own crate builds it.
fn signed_access_request(identifier: u8, mac: &str, secret: &[u8]) -> Vec<u8> {
    signed_access_request_salted(identifier, mac, secret, 31)
}

/// As [`signed_access_request`], with the Request Authenticator derived from `salt`.
fn signed_access_request_salted(identifier: u8, mac: &str, secret: &[u8], salt: u8) -> Vec<u8> {
    let authenticator: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(salt).wrapping_add(identifier));
    let hidden = auth::hide_password(mac.as_bytes(), secret, &authenticator).expect("short password");
    let packet = Packet {
        code: Code::AccessRequest,
        identifier,
        authenticator,
        attributes: vec![
            Attribute::MessageAuthenticator([0; 16]),
            Attribute::UserName(mac.into()),
            Attribute::UserPassword(hidden),
            Attribute::CallingStationId(mac.into()),
        ],
    };
    let mut bytes = Vec::new();
    packet.encode(&mut bytes).expect("small packet");
    auth::sign_request(&mut bytes, secret).expect("framed packet");
    bytes
}

fn reply_to(socket: &UdpSocket) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(Duration::from_millis(800))).expect("timeout");
    let mut buf = [0u8; 4096];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn wrong_secret_unknown_client_and_malformed_datagrams_get_no_reply_and_are_counted() {
    if !have_radclient() {
        return;
    }
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    let run = radclient(ports.auth, "auth", "not-the-secret", &mab_request("aabbccddeeff", "aa-bb-cc-dd-ee-ff"));
    assert!(run.no_reply(), "a request signed with the wrong secret was answered:\n{}", run.output);

    // A correctly signed request from an address that is no configured client.
    let stranger = UdpSocket::bind("127.0.0.9:0").expect("bind 127.0.0.9");
    stranger.connect(("127.0.0.1", ports.auth)).expect("connect");
    stranger.send(&signed_access_request(1, "aabbccddeeff", SECRET.as_bytes())).expect("send");
    assert!(reply_to(&stranger).is_none(), "an unknown client was answered");

    // Malformed datagrams from a known client: dropped, never a crash.
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client.connect(("127.0.0.1", ports.auth)).expect("connect");
    let good = signed_access_request(7, "aabbccddeeff", SECRET.as_bytes());
    let mut length_beyond_datagram = good.clone();
    length_beyond_datagram[2..4].copy_from_slice(&4000u16.to_be_bytes());
    let mut attribute_overflow = good.clone();
    attribute_overflow[21] = 250; // the first attribute claims to run past the packet
    let mut attribute_length_zero = good.clone();
    attribute_length_zero[21] = 0;
    let malformed: [&[u8]; 6] = [
        &[],
        &[1, 2, 3],
        &length_beyond_datagram,
        &attribute_overflow,
        &attribute_length_zero,
        &[0xff; 64], // unknown code, impossible length
    ];
    for datagram in malformed {
        client.send(datagram).expect("send");
    }
    assert!(reply_to(&client).is_none(), "a malformed datagram was answered");
    client.send(&good).expect("send");
    let reply = reply_to(&client).expect("the good request after the garbage is answered");
    let raw = RawPacket::parse(&reply).expect("a RADIUS reply");
    assert_eq!(raw.code(), Code::AccessAccept);
    let request_authenticator: [u8; 16] = good[4..20].try_into().expect("16 octets");
    assert!(auth::verify_reply(&raw, &request_authenticator, SECRET.as_bytes()), "bad Response Authenticator");
    // And radclient still gets its answer.
    assert_vlan(&radclient(ports.auth, "auth", SECRET, &mab_request("aabbccddeeff", "aa-bb-cc-dd-ee-ff")), "20");

    let stats = radius_stats(&app);
    assert!(stats["bad_message_authenticator"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert_eq!(stats["unknown_client"], 1, "{stats}");
    assert_eq!(stats["malformed"], 6, "{stats}");
    assert_eq!(stats["access_accepts"], 2, "{stats}");
}

#[test]
fn a_flood_of_unknown_client_datagrams_is_counted_in_full_but_logged_at_a_bounded_rate() {
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    let stranger = UdpSocket::bind("127.0.0.9:0").expect("bind 127.0.0.9");
    stranger.connect(("127.0.0.1", ports.auth)).expect("connect");
    let request = signed_access_request(1, "aabbccddeeff", SECRET.as_bytes());
    for _ in 0..200 {
        stranger.send(&request).expect("send");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = radius_stats(&app);
        if stats["unknown_client"] == 200 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stats["unknown_client"], 200, "every datagram is counted: {stats}");
    let log = app.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("radius.unknown_client")).collect();
    assert!(!lines.is_empty(), "the security event is logged:\n{log}");
    assert!(lines.iter().all(|l| l.contains("shardgate::security") && l.contains("127.0.0.9")), "{lines:#?}");
    // At most 10 lines per shard per second (two shards here; the flood may straddle a second).
    assert!(lines.len() <= 40, "{} lines for 200 datagrams: the log is not rate limited", lines.len());
    // The held-back count is reported on the shard's next line once a second has passed.
    // (Datagrams are steered to the shard on the sender's CPU: spread these over time so
    // the shard that took the flood sees some.)
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..10 {
        stranger.send(&request).expect("send");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = app.log();
        if log.lines().any(|l| l.contains("radius.unknown_client") && l.contains("suppressed=") && !l.contains("suppressed=0")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no line reports the held-back events:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_retransmission_gets_the_identical_reply_from_the_duplicate_cache() {
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client.connect(("127.0.0.1", ports.auth)).expect("connect");
    let request = signed_access_request(42, "aabbccddeeff", SECRET.as_bytes());
    client.send(&request).expect("send");
    let first = reply_to(&client).expect("answered");
    // The NAS retransmits: same source port, identifier and authenticator.
    client.send(&request).expect("resend");
    let again = reply_to(&client).expect("the retransmission is answered");
    assert_eq!(first, again, "a retransmission must get the byte-identical reply");
    // A new request that reuses the identifier (new authenticator) is a new request.
    let fresh = signed_access_request_salted(42, "aabbcc000001", SECRET.as_bytes(), 7);
    client.send(&fresh).expect("send");
    let other = reply_to(&client).expect("answered");
    assert_ne!(other, first);
    let raw = RawPacket::parse(&other).expect("a RADIUS reply");
    let request_authenticator: [u8; 16] = fresh[4..20].try_into().expect("16 octets");
    assert!(auth::verify_reply(&raw, &request_authenticator, SECRET.as_bytes()), "bad Response Authenticator");
    let stats = radius_stats(&app);
    assert_eq!(stats["retransmissions"], 1, "{stats}");
    assert_eq!(stats["access_accepts"], 2, "{stats}");
}

#[test]
fn status_server_is_answered_on_both_ports() {
    if !have_radclient() {
        return;
    }
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    let run = radclient(ports.auth, "status", SECRET, "Message-Authenticator=0x00");
    assert!(run.replied("Access-Accept"), "{}", run.output);
    let run = radclient(ports.acct, "status", SECRET, "Message-Authenticator=0x00");
    assert!(run.replied("Accounting-Response"), "{}", run.output);
    assert_eq!(radius_stats(&app)["status_server"], 2);
}

fn sessions_listing(app: &Appliance) -> String {
    // The control core persists changes once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let out = Command::new(shardgate_bin())
        .args(["radius", "sessions", "--config"])
        .arg(&app.config_path)
        .output()
        .expect("shardgate radius sessions");
    assert!(out.status.success(), "radius sessions failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn session_line<'a>(listing: &'a str, session_id: &str) -> Option<&'a str> {
    listing.lines().find(|line| line.split_whitespace().next() == Some(session_id))
}

#[test]
fn accounting_sessions_are_listed_removed_and_survive_a_restart() {
    if !have_radclient() {
        return;
    }
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    let accounting = |status: &str, session: &str, mac: &str, octets: u32, seconds: u32| {
        let run = radclient(
            ports.acct,
            "acct",
            SECRET,
            &format!(
                "Acct-Status-Type={status},Acct-Session-Id={session},Calling-Station-Id={mac},NAS-IP-Address=10.0.0.1,\
                 Acct-Input-Octets={octets},Acct-Output-Octets={},Acct-Session-Time={seconds}",
                octets * 2
            ),
        );
        assert!(run.replied("Accounting-Response"), "{}", run.output);
    };
    accounting("Start", "sess-one", "aa-bb-cc-dd-ee-01", 0, 0);
    accounting("Start", "sess-two", "AABB.CC00.0002", 0, 0);
    accounting("Interim-Update", "sess-one", "aa-bb-cc-dd-ee-01", 1500, 65);
    let listing = sessions_listing(&app);
    let one = session_line(&listing, "sess-one").unwrap_or_else(|| panic!("sess-one missing:\n{listing}"));
    let cells: Vec<&str> = one.split_whitespace().collect();
    assert_eq!(cells[1], "aa:bb:cc:dd:ee:01", "{listing}");
    assert!(one.contains("test-nas (10.0.0.1)"), "{listing}");
    // VLAN from the policy, octets in and out, duration.
    assert_eq!(&cells[4..8], ["20", "1500", "3000", "1m05s"], "{listing}");
    assert!(session_line(&listing, "sess-two").is_some(), "{listing}");

    accounting("Stop", "sess-two", "AABB.CC00.0002", 10, 5);
    let listing = sessions_listing(&app);
    assert!(session_line(&listing, "sess-two").is_none(), "a stopped session is still listed:\n{listing}");
    assert!(session_line(&listing, "sess-one").is_some(), "{listing}");

    let app = app.restart();
    let listing = sessions_listing(&app);
    let one = session_line(&listing, "sess-one").unwrap_or_else(|| panic!("sess-one lost in the restart:\n{listing}"));
    assert!(one.contains("1500"), "{listing}");
    assert!(session_line(&listing, "sess-two").is_none(), "{listing}");
    assert!(app.log().contains("RADIUS accounting sessions restored"), "{}", app.log());
    // The restored session keeps updating; Stop removes it.
    accounting("Interim-Update", "sess-one", "aa-bb-cc-dd-ee-01", 4000, 120);
    assert!(session_line(&sessions_listing(&app), "sess-one").is_some_and(|line| line.contains("4000")));
    accounting("Stop", "sess-one", "aa-bb-cc-dd-ee-01", 4000, 121);
    let listing = sessions_listing(&app);
    assert!(session_line(&listing, "sess-one").is_none(), "{listing}");
    let mode = std::fs::metadata(app.dir.path().join("data").join("storage").join("radius").join("sessions.json")).expect("file").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
}

#[test]
fn a_sighup_reload_changes_the_vlan_rule_for_the_next_request() {
    if !have_radclient() {
        return;
    }
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    assert_vlan(&radclient(ports.auth, "auth", SECRET, &mab_request("aabbccddeeff", "aa-bb-cc-dd-ee-ff")), "20");
    assert_vlan(&radclient(ports.auth, "auth", SECRET, &mab_request("020000000001", "02-00-00-00-00-01")), "999");
    app.rewrite_config(&ports.config(30, "\"reject\"", ""));
    app.reload();
    assert!(app.log().contains("reload applied"), "{}", app.log());
    assert_vlan(&radclient(ports.auth, "auth", SECRET, &mab_request("aabbccddeeff", "aa-bb-cc-dd-ee-ff")), "30");
    let run = radclient(ports.auth, "auth", SECRET, &mab_request("020000000001", "02-00-00-00-00-01"));
    assert!(run.replied("Access-Reject"), "{}", run.output);
    // The ports stayed open across the reload: nothing was re-bound.
    assert!(!app.log().contains(&format!("udp_opened=[127.0.0.1:{}", ports.auth)), "{}", app.log());
}

/// The pyrad client script: builds requests with pyrad (attribute encoding, User-Password
/// hiding, accounting Request Authenticator), adds a Message-Authenticator itself where pyrad
/// did not (old pyrad never does, pyrad >= 2.5 does by default), checks each reply's Response Authenticator, and
/// prints one line per exchange.
const PYRAD_CLIENT: &str = r#"
import hashlib, hmac, socket, struct, sys
from pyrad.client import Client
from pyrad.dictionary import Dictionary
from pyrad import packet

dictionary_path, auth_port, acct_port, secret = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
client = Client(server="127.0.0.1", authport=auth_port, acctport=acct_port, secret=secret, dict=Dictionary(dictionary_path))

def with_message_authenticator(raw):
    if 80 in attributes(raw):  # newer pyrad adds one itself
        return raw
    raw = raw[:2] + struct.pack("!H", len(raw) + 18) + raw[4:] + b"\x50\x12" + b"\x00" * 16
    return raw[:-16] + hmac.new(secret, raw, hashlib.md5).digest()

def exchange(raw, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.sendto(raw, ("127.0.0.1", port))
    reply = sock.recv(4096)
    expected = hashlib.md5(reply[:4] + raw[4:20] + reply[20:] + secret).digest()
    return reply, reply[4:20] == expected

def attributes(reply):
    found, at = {}, 20
    while at + 2 <= len(reply):
        kind, length = reply[at], reply[at + 1]
        found[kind] = reply[at + 2:at + length]
        at += length
    return found

request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name="aabbccddeeff")
request["User-Password"] = request.PwCrypt("aabbccddeeff")
request["Calling-Station-Id"] = "AABB.CCDD.EEFF"
request["NAS-IP-Address"] = "10.0.0.2"
reply, verified = exchange(with_message_authenticator(request.RequestPacket()), auth_port)
found = attributes(reply)
vlan = found.get(81, b"")
vlan = vlan[1:] if vlan[:1] and vlan[0] < 0x20 else vlan
print("auth code=%d verified=%d vlan=%s message_authenticator=%d" % (reply[0], verified, vlan.decode(), 80 in found))

request = client.CreateAcctPacket(User_Name="aabbccddeeff")
request["Acct-Status-Type"] = "Start"
request["Acct-Session-Id"] = "pyrad-1"
request["Calling-Station-Id"] = "aa:bb:cc:dd:ee:ff"
request["NAS-IP-Address"] = "10.0.0.2"
request["Acct-Input-Octets"] = 777
reply, verified = exchange(request.RequestPacket(), acct_port)
print("acct code=%d verified=%d" % (reply[0], verified))
"#;

const PYRAD_DICTIONARY: &str = "\
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE Acct-Status-Type 40 integer
ATTRIBUTE Acct-Input-Octets 42 integer
ATTRIBUTE Acct-Session-Id 44 string
ATTRIBUTE Tunnel-Type 64 integer has_tag
ATTRIBUTE Tunnel-Medium-Type 65 integer has_tag
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE Tunnel-Private-Group-Id 81 string has_tag
VALUE Acct-Status-Type Start 1
VALUE Acct-Status-Type Stop 2
VALUE Acct-Status-Type Interim-Update 3
";

/// A Python interpreter that can import pyrad, installing Debian's python3-pyrad if needed.
fn python_with_pyrad() -> Option<&'static str> {
    let imports = |python: &str| {
        Command::new(python).args(["-c", "import pyrad.client"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let find = || ["python3", "/usr/bin/python3"].into_iter().find(|python| imports(python));
    find().or_else(|| {
        ensure_tool("/usr/bin/python3", &["-c", "import pyrad.client"], "python3-pyrad");
        find()
    })
}

#[test]
fn pyrad_gets_the_vlan_and_its_accounting_is_recorded() {
    let Some(python) = python_with_pyrad() else {
        eprintln!("SKIPPED: no Python with pyrad and it could not be installed (Debian package python3-pyrad)");
        return;
    };
    let ports = RadiusPorts::new();
    let app = Appliance::start(&ports.config(20, "999", ""), ports.auth);
    let dictionary = app.dir.path().join("pyrad.dictionary");
    std::fs::write(&dictionary, PYRAD_DICTIONARY).expect("dictionary");
    let out = Command::new(python)
        .args(["-c", PYRAD_CLIENT])
        .arg(&dictionary)
        .args([ports.auth.to_string(), ports.acct.to_string(), SECRET.to_string()])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pyrad client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("auth code=2 verified=1 vlan=20 message_authenticator=1"), "{stdout}");
    assert!(stdout.contains("acct code=5 verified=1"), "{stdout}");
    let listing = sessions_listing(&app);
    let line = session_line(&listing, "pyrad-1").unwrap_or_else(|| panic!("pyrad session missing:\n{listing}"));
    assert!(line.contains("aa:bb:cc:dd:ee:ff") && line.contains("777"), "{listing}");
}
