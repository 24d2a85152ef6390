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
