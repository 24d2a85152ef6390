//! ACME against Pebble (Debian `pebble`, the ACME test CA), with the real binary.
//!
//! Each test starts its own Pebble on loopback ports with its own HTTPS certificate (a CA made
//! here, given to shardgate as `[acme] ca_root`), its DNS pointed at our own DNS server
//! (`-dnsserver`) and its TLS-ALPN-01 port pointed at our TLS listener. Served certificates are
//! verified by `openssl s_client -verify_return_error` against Pebble's root, fetched from its
//! management endpoint `/roots/0`.
//!
//! - DNS-01, including a wildcard: issued, served, verified; a name Pebble refuses reports its
//!   error in `shardgate certs` without disturbing the other; restart reuses the stored
//!   certificate (no new order); a forced renewal (`shardgate certs renew`) serves a new
//!   certificate; with Pebble gone, a renewal fails, the error is reported and the old
//!   certificate keeps serving.
//! - TLS-ALPN-01 with short-lived certificates (60 s): issued through our own TLS listener,
//!   verified, and renewed by itself after two thirds of its lifetime.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shardgate_tests::backends::EchoBackend;
use shardgate_tests::{ensure_tool, free_port, shardgate_bin, wait_until_accepting, Appliance};

/// A running Pebble with its own config and HTTPS certificate.
struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    directory: String,
    /// The PEM CA that signed Pebble's own HTTPS certificate.
    https_ca: PathBuf,
    management_port: u16,
}

impl Pebble {
    /// Starts Pebble resolving through `dns_port` and validating TLS-ALPN-01 on `tls_port`;
    /// certificates live `validity_secs`; `blocked` names are refused.
    fn start(dns_port: u16, tls_port: u16, validity_secs: u64, blocked: &[&str]) -> Pebble {
        Pebble::start_with_http(dns_port, tls_port, free_port(), validity_secs, blocked)
    }

    /// As [`Pebble::start`], validating HTTP-01 on `http_port`.
    fn start_with_http(dns_port: u16, tls_port: u16, http_port: u16, validity_secs: u64, blocked: &[&str]) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "pebble https test CA");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf");
        let https_ca = dir.path().join("https-ca.pem");
        std::fs::write(&https_ca, ca.pem()).expect("write ca");
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).expect("write key");
        let listen_port = free_port();
        let management_port = free_port();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "domainBlocklist": blocked,
                "certificateValidityPeriod": validity_secs,
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn pebble");
        wait_until_accepting(listen_port);
        wait_until_accepting(management_port);
        Pebble { child, directory: format!("https://127.0.0.1:{listen_port}/dir"), https_ca, management_port, dir }
    }

    /// Pebble's issuing root (PEM), from the management endpoint.
    fn root(&self) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management_port))
            .output()
            .expect("curl");
        assert!(out.status.success(), "cannot fetch Pebble's root: {}", String::from_utf8_lossy(&out.stderr));
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, &out.stdout).expect("write root");
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tools_present() -> bool {
    let ok = ensure_tool("pebble", &["-h"], "pebble")
        && ensure_tool("openssl", &["version"], "openssl")
        && ensure_tool("curl", &["--version"], "curl")
        && ensure_tool("dig", &["-v"], "bind9-dnsutils");
    if !ok {
        eprintln!("SKIP: needs pebble, openssl, curl and dig (Debian packages pebble, openssl, curl, bind9-dnsutils)");
    }
    ok
}

/// `[dns]` serving example.test. on `dns_port` with the names pointing at loopback.
fn dns_section(dns_port: u16) -> String {
    format!(
        r#"
[dns]
udp = ["127.0.0.1:{dns_port}"]
tcp = ["127.0.0.1:{dns_port}"]
[[dns.zones]]
origin = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster", serial = 1 }}
records = [
  {{ name = "@", type = "NS", value = "ns1" }},
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "www", type = "A", value = "127.0.0.1" }},
  {{ name = "alpn", type = "A", value = "127.0.0.1" }},
  {{ name = "web", type = "A", value = "127.0.0.1" }},
  {{ name = "blocked", type = "A", value = "127.0.0.1" }},
]
"#
    )
}

fn acme_section(pebble: &Pebble, challenge: &str) -> String {
    format!(
        "[acme]\ncontact = \"ops@example.test\"\ndirectory = \"{}\"\nca_root = \"{}\"\nchallenge = \"{challenge}\"\nrenew_before_days = 30\nretry_after = \"2s\"\n",
        pebble.directory,
        pebble.https_ca.display()
    )
}

fn auto_route(name: &str, port: u16, domains: &[&str], target: u16) -> String {
    let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ ports = {port}, domains = [{}] }}\naction = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {target} }}], tls = {{ mode = \"terminate\", certificate = \"auto\" }} }}\n",
        domains.join(", ")
    )
}

/// `shardgate certs ...` against the appliance's data folder.
fn certs_cli(appliance: &Appliance, args: &[&str]) -> Output {
    Command::new(shardgate_bin())
        .arg("certs")
        .args(args)
        .arg("--data-dir")
        .arg(appliance.dir.path().join("data"))
        .output()
        .expect("shardgate certs")
}

/// The status of auto certificate `name` from `stats.json` (as `shardgate certs` shows it).
fn status(appliance: &Appliance, name: &str) -> Option<serde_json::Value> {
    let path = appliance.dir.path().join("data").join("stats.json");
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    stats["certificates"].as_array()?.iter().find(|c| c["name"] == name).cloned()
}

/// Waits until `check` holds for certificate `name`'s status.
fn wait_status(appliance: &Appliance, pebble: &Pebble, name: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Some(s) = status(appliance, name) {
            if check(&s) {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "certificate `{name}`: {what} did not happen; status {:?}\nshardgate log:\n{}\npebble log:\n{}",
        status(appliance, name),
        appliance.log(),
        pebble.log()
    );
}

/// Handshakes with SNI `name`, verifying against `root`; returns the served leaf (PEM) or
/// openssl's complaint.
fn served_leaf(port: u16, name: &str, root: &Path) -> Result<String, String> {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name, "-verify_return_error"])
        .arg("-verify_hostname")
        .arg(name)
        .arg("-CAfile")
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains("Verify return code: 0 (ok)") {
        return Err(format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let start = text.find("-----BEGIN CERTIFICATE-----").ok_or("no certificate printed")?;
    let end = text.find("-----END CERTIFICATE-----").ok_or("no certificate end")?;
    Ok(text[start..end].to_string())
}

#[test]
fn dns01_wildcard_issue_restart_reuse_forced_renewal_and_ca_gone() {
    if !tools_present() {
        return;
    }
    let backend = EchoBackend::start();
    let dns_port = free_port();
    let port = free_port();
    let blocked_port = free_port();
    let pebble_tls = free_port();
    let mut pebble = Pebble::start(dns_port, pebble_tls, 3600 * 24 * 90, &["blocked.example.test"]);
    let body = format!(
        "{}{}{}{}",
        auto_route("site", port, &["www.example.test", "*.example.test"], backend.port),
        auto_route("refused", blocked_port, &["blocked.example.test"], backend.port),
        dns_section(dns_port),
        acme_section(&pebble, "dns-01"),
    );
    let appliance = Appliance::start(&body, port);
    let issued = wait_status(&appliance, &pebble, "site", "issuance", |s| s["state"] == "valid");
    assert_eq!(issued["issued"], 1, "{issued}");
    let root = pebble.root();
    let www = served_leaf(port, "www.example.test", &root).expect("www verifies against Pebble's root");
    let wildcard = served_leaf(port, "anything.example.test", &root).expect("the wildcard verifies");
    assert_eq!(www, wildcard, "one certificate covers both names");
    // The account and certificate are in storage, the private key mode 0600.
    let stored = appliance.dir.path().join("data/storage/acme/certificates/site");
    let mode = |p: PathBuf| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).expect("stored").permissions()) & 0o777;
    assert_eq!(mode(stored.join("key.pem")), 0o600);
    assert_eq!(mode(stored.join("chain.pem")), 0o644);
    // The challenge TXT records were withdrawn from our DNS server.
    for name in ["_acme-challenge.www.example.test", "_acme-challenge.example.test"] {
        let dig = Command::new("dig")
            .args(["+short", "@127.0.0.1", "-p", &dns_port.to_string(), "TXT", name])
            .output()
            .expect("dig");
        assert!(dig.status.success() && dig.stdout.is_empty(), "{name} still answers: {dig:?}");
    }

    // Pebble refuses the blocked name: the error is reported, the other certificate is fine.
    let refused = wait_status(&appliance, &pebble, "refused", "a reported refusal", |s| s["failures"].as_u64() >= Some(1));
    let error = refused["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("blocked") || error.contains("rejectedIdentifier"), "{refused}");
    let listed = certs_cli(&appliance, &[]);
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert!(listed_text.contains("site\twww.example.test,*.example.test\tvalid"), "{listed_text}");
    assert!(listed_text.contains("last error:"), "{listed_text}");

    // Restart: the stored certificate is served at once, no new order.
    let appliance = appliance.restart();
    // stats.json is still the old process's: wait for the new one's.
    let _ = std::fs::remove_file(appliance.dir.path().join("data/stats.json"));
    appliance.wait_for_log("stored ACME certificate loaded", Duration::from_secs(5));
    assert_eq!(served_leaf(port, "www.example.test", &root).expect("served after restart"), www);
    let after_restart = wait_status(&appliance, &pebble, "site", "status after restart", |s| s["state"] == "valid");
    assert_eq!(after_restart["issued"], 0, "no new order after a restart: {after_restart}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !appliance.log().lines().any(|l| l.contains("ACME order started") && l.contains("certificate=site")),
        "{}",
        appliance.log()
    );

    // Forced renewal: a new certificate is served.
    let renew = certs_cli(&appliance, &["renew", "site"]);
    assert!(renew.status.success() && String::from_utf8_lossy(&renew.stdout).contains("renewing: site"), "{renew:?}");
    wait_status(&appliance, &pebble, "site", "forced renewal", |s| s["issued"] == 1 && s["state"] == "valid");
    let renewed = served_leaf(port, "www.example.test", &root).expect("renewed verifies");
    assert_ne!(renewed, www, "the renewed certificate is served");

    // A reload keeps serving the issued certificate (merged into the new generation's store).
    appliance.reload();
    assert_eq!(served_leaf(port, "www.example.test", &root).expect("served after reload"), renewed);

    // The CA goes away: renewal fails, the error is reported, the old certificate keeps serving.
    pebble.stop();
    let renew = certs_cli(&appliance, &["renew", "site"]);
    assert!(renew.status.success(), "{renew:?}");
    let failed = wait_status(&appliance, &pebble, "site", "a reported failure", |s| s["failures"].as_u64() >= Some(1));
    assert!(failed["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert_eq!(failed["state"], "valid", "{failed}");
    assert_eq!(served_leaf(port, "www.example.test", &root).expect("still served"), renewed);
}

#[test]
fn http01_is_answered_on_the_http_port_before_a_redirect_route() {
    if !tools_present() {
        return;
    }
    let backend = EchoBackend::start();
    let dns_port = free_port();
    let port = free_port();
    let http_port = free_port();
    let pebble = Pebble::start_with_http(dns_port, port, http_port, 3600, &[]);
    // Port `http_port` redirects everything to HTTPS, but the challenge path is answered first.
    let body = format!(
        "{}[[routes]]\nname = \"to-https\"\nmatch = {{ ports = {http_port} }}\naction = {{ type = \"redirect\", to = \"https://{{host}}{{path}}\" }}\n{}{}",
        auto_route("web", port, &["web.example.test"], backend.port),
        dns_section(dns_port),
        acme_section(&pebble, "http-01"),
    );
    let appliance = Appliance::start(&body, port);
    wait_status(&appliance, &pebble, "web", "issuance over HTTP-01", |s| s["state"] == "valid" && s["issued"] == 1);
    let root = pebble.root();
    served_leaf(port, "web.example.test", &root).expect("verifies against Pebble's root");
    // Other paths on the HTTP port still get the redirect; unknown tokens are not answered.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: web.example.test"])
        .arg(format!("http://127.0.0.1:{http_port}/.well-known/acme-challenge/unknown-token"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "301");
}

#[test]
fn tls_alpn01_short_lived_certificates_issue_and_renew_themselves() {
    if !tools_present() {
        return;
    }
    let backend = EchoBackend::start();
    let dns_port = free_port();
    let port = free_port();
    // Pebble validates TLS-ALPN-01 on our TLS listener; certificates live 60 s.
    let pebble = Pebble::start(dns_port, port, 60, &[]);
    let body = format!(
        "{}{}{}",
        auto_route("alpn", port, &["alpn.example.test"], backend.port),
        dns_section(dns_port),
        acme_section(&pebble, "tls-alpn-01"),
    );
    let appliance = Appliance::start(&body, port);
    wait_status(&appliance, &pebble, "alpn", "issuance", |s| s["state"] == "valid" && s["issued"] == 1);
    let root = pebble.root();
    let first = served_leaf(port, "alpn.example.test", &root).expect("verifies against Pebble's root");
    // Renewed by itself after two thirds of 60 s, without a forced renewal.
    wait_status(&appliance, &pebble, "alpn", "automatic renewal", |s| s["issued"].as_u64() >= Some(2) && s["state"] == "valid");
    let second = served_leaf(port, "alpn.example.test", &root).expect("renewed verifies");
    assert_ne!(first, second);
    // Every shard confirmed each challenge before the CA was asked to validate.
    assert!(!appliance.log().contains("not every shard confirmed"), "{}", appliance.log());
}

#[test]
fn storage_export_and_import_move_every_entry_with_its_privacy() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let account = data.join("storage/acme/accounts/ca.test-dir.json");
    let chain = data.join("storage/acme/certificates/site/chain.pem");
    for (path, mode) in [(&account, 0o600), (&chain, 0o644)] {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, format!("{}", path.display())).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let cli = |args: &[&str], data_dir: &Path| {
        Command::new(shardgate_bin()).arg("storage").args(args).arg("--data-dir").arg(data_dir).output().expect("shardgate storage")
    };
    let exported = dir.path().join("exported");
    let out = cli(&["export", &exported.display().to_string()], &data);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("exported 2 entries"), "{out:?}");
    let other = dir.path().join("other-data");
    let out = cli(&["import", &exported.display().to_string()], &other);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("imported 2 entries"), "{out:?}");
    let mode = |p: PathBuf| std::fs::metadata(p).expect("entry").permissions().mode() & 0o777;
    assert_eq!(mode(other.join("storage/acme/accounts/ca.test-dir.json")), 0o600);
    assert_eq!(mode(other.join("storage/acme/certificates/site/chain.pem")), 0o644);
    assert_eq!(
        std::fs::read_to_string(other.join("storage/acme/accounts/ca.test-dir.json")).expect("read"),
        account.display().to_string()
    );
    // Importing from a folder that does not exist is an error with a reason.
    let out = cli(&["import", "/nonexistent/export"], &other);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not a folder"), "{out:?}");
}

#[test]
fn memory_storage_warns_loudly_and_writes_nothing() {
    let port = free_port();
    let backend = EchoBackend::start();
    let body = format!(
        "[storage]\nbackend = \"memory\"\n[[routes]]\nname = \"plain\"\nmatch = {{ ports = {port} }}\naction = {{ type = \"forward\", targets = [{{ host = \"127.0.0.1\", port = {} }}] }}\n",
        backend.port
    );
    let appliance = Appliance::start(&body, port);
    appliance.wait_for_log("STORAGE IS IN MEMORY", Duration::from_secs(5));
    assert!(!appliance.dir.path().join("data/storage").exists(), "the memory backend writes no files");
}

#[test]
fn check_config_names_every_acme_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        r#"
[[routes]]
name = "site"
match = { ports = 8443, domains = ["*.example.test"] }
action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
[acme]
contact = "not-an-address"
directory = "http://ca.test/dir"
challenge = "http-01"
"#,
    )
    .expect("write");
    let out = Command::new(shardgate_bin()).arg("check-config").arg(&path).output().expect("check-config");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("edge.toml: [acme] contact: `not-an-address` is not an e-mail address"), "{text}");
    assert!(text.contains("edge.toml: [acme] directory: `http://ca.test/dir` is not an https:// URL"), "{text}");
    assert!(text.contains("edge.toml: route `site`: match.domains: `*.example.test` is a wildcard"), "{text}");
}
