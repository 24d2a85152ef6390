//! Handing an established TLS session to the kernel (kTLS), so the socket carries plaintext
//! on our side and `splice(2)`/`sendfile(2)` work through it.
//!
//! The `ktls` crate converts rustls' extracted secrets into the kernel's `tls12_crypto_info_*`
//! structures ([`ktls::CryptoInfo::from_rustls`]); the two `setsockopt` calls that install
//! them (`TCP_ULP "tls"`, then `SOL_TLS` `TLS_TX`/`TLS_RX`) are the small unsafe wrappers
//! below. Whether the kernel has kTLS at all is probed once at start ([`probe`]) and said
//! once in the log; a connection only tries the offload when the probe succeeded, because
//! extracting the secrets consumes the rustls session (there is no way back afterwards).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use rustls::ServerConnection;

const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
/// cmsg type (level `SOL_TLS`) carrying a record's content type: set on send, got on receive.
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;
const RECORD_TYPE_ALERT: u8 = 21;
const ALERT_WARNING: u8 = 1;
const ALERT_CLOSE_NOTIFY: u8 = 0;

/// Whether this kernel can take TLS sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KtlsSupport {
    /// `TCP_ULP "tls"` works.
    Available,
    /// It does not; the reason, for the start-up log.
    Unavailable(String),
}

impl KtlsSupport {
    /// Whether connections should try the offload.
    pub fn is_available(&self) -> bool {
        matches!(self, KtlsSupport::Available)
    }
}

impl std::fmt::Display for KtlsSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KtlsSupport::Available => write!(f, "kTLS: available"),
            KtlsSupport::Unavailable(why) => write!(f, "kTLS: unavailable: {why}"),
        }
    }
}

/// Why a session could not be handed to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// rustls would not give up the secrets (for example the session is not established).
    #[error("cannot extract the session secrets: {0}")]
    Secrets(rustls::Error),
    /// No cipher suite was negotiated.
    #[error("no cipher suite negotiated")]
    NoCipherSuite,
    /// The cipher suite has no kernel equivalent.
    #[error("cipher not supported by kTLS: {0}")]
    Cipher(String),
    /// A setsockopt failed.
    #[error("{what}: {source}")]
    Socket {
        /// Which step.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Probes kTLS on a throwaway loopback connection.
pub fn probe() -> KtlsSupport {
    let attempt = || -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let _client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        set_ulp(server.as_raw_fd())
    };
    match attempt() {
        Ok(()) => KtlsSupport::Available,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            KtlsSupport::Unavailable("the kernel has no `tls` module (TCP_ULP gives ENOENT; try `modprobe tls`)".into())
        }
        Err(e) => KtlsSupport::Unavailable(format!("TCP_ULP \"tls\" failed: {e}")),
    }
}

fn set_ulp(fd: RawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: setsockopt with a valid pointer/length pair to a 3-byte buffer.
    let rc = unsafe {
        libc::setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, name.as_ptr().cast(), name.len() as libc::socklen_t)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_crypto(fd: RawFd, direction: libc::c_int, info: &ktls::CryptoInfo) -> io::Result<()> {
    // SAFETY: `info.as_ptr()` points at the kernel struct `info` owns, `info.size()` bytes
    // long, alive for the duration of the call.
    let rc = unsafe { libc::setsockopt(fd, SOL_TLS, direction, info.as_ptr(), info.size() as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs the session's keys in the kernel for both directions. Consumes the session:
/// on error the connection must be closed.
pub fn offload(fd: RawFd, conn: ServerConnection) -> Result<(), OffloadError> {
    let suite = conn.negotiated_cipher_suite().ok_or(OffloadError::NoCipherSuite)?;
    let secrets = conn.dangerous_extract_secrets().map_err(OffloadError::Secrets)?;
    let tx = ktls::CryptoInfo::from_rustls(suite, secrets.tx).map_err(|e| OffloadError::Cipher(e.to_string()))?;
    let rx = ktls::CryptoInfo::from_rustls(suite, secrets.rx).map_err(|e| OffloadError::Cipher(e.to_string()))?;
    set_ulp(fd).map_err(|source| OffloadError::Socket { what: "TCP_ULP tls", source })?;
    set_crypto(fd, TLS_TX, &tx).map_err(|source| OffloadError::Socket { what: "TLS_TX keys", source })?;
    set_crypto(fd, TLS_RX, &rx).map_err(|source| OffloadError::Socket { what: "TLS_RX keys", source })?;
    Ok(())
}

/// A record at the head of a kTLS socket's receive queue that is not application data. The
/// kernel refuses to `splice` it (`EINVAL`) or to `recv` it without a control buffer (`EIO`);
/// [`read_control_record`] takes it off the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecord {
    /// The peer's `close_notify` alert: the end of its data, like a TCP EOF.
    CloseNotify,
    /// Any other alert (level, description): the peer aborted the session.
    Alert(u8, u8),
    /// A record of another content type (for example a TLS 1.3 KeyUpdate, which the kernel
    /// cannot follow): the session cannot go on in the kernel.
    Other(u8),
}

/// Whether `error` from a read or splice on a kTLS socket means a control record is waiting
/// (see [`ControlRecord`]).
pub fn is_control_record_error(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO))
}

/// Takes the control record at the head of kTLS socket `fd`'s receive queue (non-blocking).
pub fn read_control_record(fd: RawFd) -> io::Result<ControlRecord> {
    let mut data = [0u8; 64];
    // u64s: cmsg buffers must be aligned like `cmsghdr`.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg into the buffers described by `msg`, all owned by this frame.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut record_type = None;
    // SAFETY: walking the control messages the kernel wrote into `control` with the libc
    // macros, which stay within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == SOL_TLS && (*cmsg).cmsg_type == TLS_GET_RECORD_TYPE {
                record_type = Some(*libc::CMSG_DATA(cmsg));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let data = &data[..n as usize];
    match (record_type, data) {
        (Some(RECORD_TYPE_ALERT), [_, ALERT_CLOSE_NOTIFY]) => Ok(ControlRecord::CloseNotify),
        (Some(RECORD_TYPE_ALERT), [level, description]) => Ok(ControlRecord::Alert(*level, *description)),
        (Some(other), _) => Ok(ControlRecord::Other(other)),
        (None, []) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "kTLS socket closed")),
        (None, _) => Err(io::Error::other("kTLS: data where a control record was expected")),
    }
}

/// Sends a `close_notify` alert on kTLS socket `fd` (the kernel encrypts it as the next
/// record), non-blocking: `WouldBlock` when the send buffer is full.
pub fn send_close_notify(fd: RawFd) -> io::Result<()> {
    let mut alert = [ALERT_WARNING, ALERT_CLOSE_NOTIFY];
    let mut control = [0u64; 4];
    let mut iov = libc::iovec { iov_base: alert.as_mut_ptr().cast(), iov_len: alert.len() };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as usize;
    // SAFETY: `control` (32 aligned bytes) holds one cmsg with 1 byte of data; the header is
    // written through the libc macros within that space.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as usize;
        *libc::CMSG_DATA(cmsg) = RECORD_TYPE_ALERT;
    }
    // SAFETY: sendmsg of the buffers described by `msg`, all owned by this frame.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_either_way_with_a_reason() {
        match probe() {
            KtlsSupport::Available => {}
            KtlsSupport::Unavailable(why) => assert!(!why.is_empty()),
        }
        assert!(probe().to_string().starts_with("kTLS: "));
    }
}
