//! The admin channel: a Unix socket in the data folder through which the CLI (and later other
//! tools) asks the running appliance's control core to change something.
//!
//! Protocol: `<data_dir>/control.sock` ([`CONTROL_SOCKET`]), mode 0600 (whoever may write the
//! data folder may administer the appliance; nobody else). One JSON [`AdminRequest`] per line,
//! answered by one JSON [`AdminResponse`] line, several per connection:
//!
//! ```text
//! → {"op":"dns_change","change":{"kind":"add","name":"_acme-challenge.example.net","type":"TXT","value":"token","ttl":60}}
//! ← {"ok":true,"zone":"example.net.","serial":2024010102}
//! → {"op":"dns_change","change":{"kind":"remove","name":"www.example.net","type":"A","value":null}}
//! ← {"ok":false,"error":"`www.example.net.` has no A record to remove"}
//!
//! → {"op":"certs"}
//! ← {"ok":true,"certificates":[{"name":"site","domains":["www.example.net"],"state":"valid",...}]}
//! → {"op":"certs_renew","certificate":"site"}
//! ← {"ok":true,"renewing":["site"]}
//!
//! → {"op":"queue_status","id":"0001F2A3B4C5D6FF"}
//! ← {"ok":true,"mail":{"id":"0001F2A3B4C5D6FF","status":"delivered","recipients":[...]}}
//! → {"op":"send","from":"a@example.com","to":["b@example.net"],"template":"welcome","vars":{"name":"Bo"}}
//! ← {"ok":true,"mail":{"queued":"0001F2A3B4C5D6FF"}}
//! ```
//!
//! Mail requests (`queue_*`, `suppression_*`, `send`) go to the control core's mail service
//! (`crate::mail::delivery::service`), which answers from its tokio runtime.
//!
//! A small thread accepts connections and reads requests; each request is handed to the
//! control core as a [`ToControl`] message carrying a reply channel, so the state it changes
//! (the DNS zones) is only ever touched by the control core thread. Connections are served
//! one at a time with a read timeout, so a stuck client cannot hold the channel for long.
//! The socket file is removed when the appliance stops; a stale one left by a crash is
//! replaced at start (unless another appliance still answers on it).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use super::messages::ToControl;
use crate::dns::dynamic::{DnsChange, DnsUpdated};

/// The socket's file name inside the data folder.
pub const CONTROL_SOCKET: &str = "control.sock";

/// How long a client may take to send a request line, and the CLI waits for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Longest answer line the CLI reads (a queue listing can be long).
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Add or remove a dynamic DNS record.
    DnsChange {
        /// The change.
        change: DnsChange,
    },
    /// The state of every ACME auto certificate.
    Certs,
    /// Renew ACME auto certificates now (all when `certificate` is absent).
    CertsRenew {
        /// Which one.
        #[serde(default)]
        certificate: Option<String>,
    },
    /// Queued messages, oldest first (id, sender, size, age, status, recipients), at most
    /// `limit` of them (all when absent); the answer also gives the total.
    QueueList {
        /// How many to list.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// One queued message in full (recipients with route, action, state, attempts, last error).
    QueueShow {
        /// Queue id.
        id: String,
    },
    /// What became of a message: queued, deferred (last error), delivered (the next hop's
    /// reply), bounced.
    QueueStatus {
        /// Queue id.
        id: String,
    },
    /// Attempt every pending recipient of a message now (of every queued message when `id`
    /// is absent: a flush, as `postqueue -f`).
    QueueRetry {
        /// Queue id.
        #[serde(default)]
        id: Option<String>,
    },
    /// Remove a message from the queue without delivering it.
    QueueDelete {
        /// Queue id.
        id: String,
    },
    /// The suppression list (addresses that hard-bounced).
    SuppressionList,
    /// Take an address off the suppression list.
    SuppressionRemove {
        /// The address.
        address: String,
    },
    /// Queue a message: from a file the appliance reads, or from a `[[email.templates]]`
    /// entry filled with `vars`.
    Send {
        /// Envelope sender (and `From:` of a template message); empty for `<>`.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Template name.
        #[serde(default)]
        template: Option<String>,
        /// Template variables.
        #[serde(default)]
        vars: std::collections::BTreeMap<String, String>,
        /// The message file (absolute path, readable by the appliance).
        #[serde(default)]
        file: Option<PathBuf>,
    },
}

/// One response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The zone a DNS change applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// That zone's SOA serial after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u32>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// ACME auto certificates (`certs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<crate::acme::manager::CertificateStatus>>,
    /// Certificates a renewal was started for (`certs_renew`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewing: Option<Vec<String>>,
    /// The answer to a mail request (`queue_*`, `suppression_*`, `send`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<serde_json::Value>,
}

impl AdminResponse {
    /// A refusal.
    pub fn error(message: impl Into<String>) -> AdminResponse {
        AdminResponse { ok: false, error: Some(message.into()), ..Default::default() }
    }

    /// The outcome of a DNS change.
    pub fn from_dns(result: Result<DnsUpdated, String>) -> AdminResponse {
        match result {
            Ok(updated) => AdminResponse { ok: true, zone: Some(updated.zone), serial: Some(updated.serial), ..Default::default() },
            Err(message) => AdminResponse::error(message),
        }
    }
}

/// The socket path for a data folder.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_SOCKET)
}

/// Binds `<data_dir>/control.sock` and serves it on a thread until the process exits.
pub fn serve(data_dir: &Path, to_control: Sender<ToControl>) -> std::io::Result<PathBuf> {
    let path = socket_path(data_dir);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is served by another running appliance", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => serve_connection(stream, &to_control),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "admin socket accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })?;
    Ok(path)
}

fn serve_connection(stream: UnixStream, to_control: &Sender<ToControl>) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_REQUEST).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = match serde_json::from_str::<AdminRequest>(line.trim()) {
            Err(e) => AdminResponse::error(format!("not a valid request: {e}")),
            Ok(AdminRequest::DnsChange { change }) => {
                let (reply, answer) = crossbeam_channel::bounded(1);
                if to_control.send(ToControl::DnsUpdate { change, reply }).is_err() {
                    AdminResponse::error("the appliance is stopping")
                } else {
                    match answer.recv_timeout(REQUEST_TIMEOUT) {
                        Ok(result) => AdminResponse::from_dns(result),
                        Err(_) => AdminResponse::error("the control core did not answer in time"),
                    }
                }
            }
            Ok(AdminRequest::Certs) => {
                let (reply, answer) = crossbeam_channel::bounded(1);
                ask(to_control, crate::acme::AcmeEvent::Status { reply }, &answer, |certificates| AdminResponse {
                    ok: true,
                    certificates: Some(certificates),
                    ..Default::default()
                })
            }
            Ok(AdminRequest::CertsRenew { certificate }) => {
                let (reply, answer) = crossbeam_channel::bounded(1);
                ask(to_control, crate::acme::AcmeEvent::Renew { certificate, reply }, &answer, |result| match result {
                    Ok(renewing) => AdminResponse { ok: true, renewing: Some(renewing), ..Default::default() },
                    Err(message) => AdminResponse::error(message),
                })
            }
            // Everything else is a mail request.
            Ok(request) => {
                // Changes are audited like the admin API's (whoever may use this socket is an
                // administrator of the data folder).
                let change = match &request {
                    AdminRequest::QueueRetry { id } => Some(("retry", id.clone().unwrap_or_else(|| "all".into()))),
                    AdminRequest::QueueDelete { id } => Some(("delete", id.clone())),
                    AdminRequest::SuppressionRemove { address } => Some(("unsuppress", address.clone())),
                    _ => None,
                };
                if let Some((action, what)) = change {
                    tracing::info!(target: "shardgate::audit", via = "control socket", action, what = %what, "mail admin request");
                }
                let (reply, answer) = crossbeam_channel::bounded(1);
                if to_control.send(ToControl::Mail { request, reply }).is_err() {
                    AdminResponse::error("the appliance is stopping")
                } else {
                    match answer.recv_timeout(REQUEST_TIMEOUT) {
                        Ok(response) => response,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            AdminResponse::error("mail is not configured on this appliance (no [email] section)")
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            AdminResponse::error("the control core did not answer in time")
                        }
                    }
                }
            }
        };
        let Ok(mut text) = serde_json::to_string(&response) else { return };
        text.push('\n');
        if writer.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Hands an ACME event to the control core and turns its answer into a response. Without an
/// ACME manager (no `[acme]`-capable control core) nobody answers; the timeout says so.
fn ask<T>(
    to_control: &Sender<ToControl>,
    event: crate::acme::AcmeEvent,
    answer: &crossbeam_channel::Receiver<T>,
    respond: impl FnOnce(T) -> AdminResponse,
) -> AdminResponse {
    if to_control.send(ToControl::Acme(event)).is_err() {
        return AdminResponse::error("the appliance is stopping");
    }
    match answer.recv_timeout(REQUEST_TIMEOUT) {
        Ok(value) => respond(value),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => AdminResponse::error("ACME is not running on this appliance"),
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => AdminResponse::error("the control core did not answer in time"),
    }
}

/// Sends one request to the appliance running on `data_dir` and returns its response (the
/// CLI side).
pub fn request(data_dir: &Path, request: &AdminRequest) -> std::io::Result<AdminResponse> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot connect to {}: {e} (is shardgate running with this data folder?)", path.display()))
    })?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT + Duration::from_secs(2)))?;
    let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).take(MAX_RESPONSE).read_line(&mut line)?;
    serde_json::from_str(line.trim()).map_err(|e| std::io::Error::other(format!("unreadable answer from the appliance: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::dynamic::ChangeKind;

    #[test]
    fn requests_reach_the_control_core_and_answers_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (to_control, inbox) = crossbeam_channel::unbounded();
        let path = serve(dir.path(), to_control.clone()).expect("serve");
        let mode = std::fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second appliance on the same data folder is refused.
        assert!(serve(dir.path(), to_control).is_err());
        // The fake control core answers one change.
        let core = std::thread::spawn(move || match inbox.recv_timeout(Duration::from_secs(5)) {
            Ok(ToControl::DnsUpdate { change, reply }) => {
                assert_eq!(change.name, "x.example.net");
                let _ = reply.send(Ok(DnsUpdated { zone: "example.net.".into(), serial: 7 }));
            }
            other => panic!("unexpected {other:?}"),
        });
        let change = DnsChange {
            kind: ChangeKind::Add,
            name: "x.example.net".into(),
            rtype: "A".into(),
            value: Some("192.0.2.1".into()),
            ttl: None,
        };
        let response = request(dir.path(), &AdminRequest::DnsChange { change }).expect("answer");
        assert_eq!(response, AdminResponse { ok: true, zone: Some("example.net.".into()), serial: Some(7), ..Default::default() });
        core.join().expect("core");

        // Garbage gets an error line, not a hang.
        let mut stream = UnixStream::connect(&path).expect("connect");
        stream.write_all(b"{\"op\":\"reboot\"}\n").expect("write");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("read");
        let response: AdminResponse = serde_json::from_str(&line).expect("json");
        assert!(!response.ok && response.error.as_deref().unwrap_or("").contains("not a valid request"), "{line}");
    }
}
