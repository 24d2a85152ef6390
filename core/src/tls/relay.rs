//! The userspace TLS data path: used when the kernel cannot take the session (no kTLS, or
//! leftover bytes at handover). Client ciphertext ⇄ rustls ⇄ target plaintext, both
//! directions at once; writes to the client are serialised (records never interleave).
//!
//! Ends like the splice relay: both directions closed (client `close_notify` or EOF → target
//! half-close; target EOF → `close_notify` then client half-close), an error, or the idle
//! timeout.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use rustls::ServerConnection;

use crate::relay::RelayEnd;

/// Bytes read per socket read on either side.
const CHUNK: usize = 64 * 1024;

struct Shared {
    conn: RefCell<ServerConnection>,
    client_writer: RefCell<Option<TcpStream>>,
    write_lock: Semaphore,
    last_activity: Cell<Instant>,
    /// The backend has ended and our close_notify went to the client: from here a reset
    /// from the client (one that closes with our alert still unread) is a normal end.
    closed_to_client: Cell<bool>,
}

impl Shared {
    /// Sends whatever rustls has queued to the client, one writer at a time.
    async fn flush_to_client(&self) -> io::Result<()> {
        let _permit = self.write_lock.acquire_permit(1).await.map_err(|e| io::Error::other(e.to_string()))?;
        let mut out = Vec::new();
        {
            let mut conn = self.conn.borrow_mut();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let mut writer = self.client_writer.borrow_mut().take().ok_or_else(|| io::Error::other("client writer busy"))?;
        let result = writer.write_all(&out).await;
        *self.client_writer.borrow_mut() = Some(writer);
        self.last_activity.set(Instant::now());
        result
    }
}

/// Relays `client` (TLS, session `conn`) ⇄ `target` (plaintext). `leftover` are encrypted
/// client bytes already read past the handshake.
pub async fn relay_userspace(
    client: &mut TcpStream,
    conn: ServerConnection,
    leftover: Vec<u8>,
    target: &mut TcpStream,
    idle: Duration,
    mut on_upstream: impl FnMut(u64),
    mut on_downstream: impl FnMut(u64),
) -> RelayEnd {
    let (client_writer, mut target_writer) = match (writer_of(client), writer_of(target)) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => return RelayEnd::Failed(e),
    };
    let shared = Shared {
        conn: RefCell::new(conn),
        client_writer: RefCell::new(Some(client_writer)),
        write_lock: Semaphore::new(1),
        last_activity: Cell::new(Instant::now()),
        closed_to_client: Cell::new(false),
    };
    let shared = &shared;

    let upstream = async {
        let mut cipher = vec![0u8; CHUNK];
        let mut plain = vec![0u8; CHUNK];
        let mut encrypted = leftover;
        let mut decrypted = Vec::with_capacity(CHUNK);
        loop {
            if encrypted.is_empty() {
                let n = match client.read(&mut cipher).await {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset && shared.closed_to_client.get() => 0,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    break;
                }
                encrypted.extend_from_slice(&cipher[..n]);
            }
            let mut closed = false;
            {
                let mut conn = shared.conn.borrow_mut();
                let mut input = encrypted.as_slice();
                // rustls holds at most 16 KiB of received plaintext: take it out after every
                // batch of records, or `read_tls` refuses more.
                while !input.is_empty() && !closed {
                    conn.read_tls(&mut input)?;
                    conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    loop {
                        match conn.reader().read(&mut plain) {
                            Ok(0) => {
                                closed = true;
                                break;
                            }
                            Ok(n) => decrypted.extend_from_slice(&plain[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            encrypted.clear();
            if !decrypted.is_empty() {
                target_writer.write_all(&decrypted).await?;
                on_upstream(decrypted.len() as u64);
                shared.last_activity.set(Instant::now());
                decrypted.clear();
            }
            // Alerts or key-update answers rustls queued while reading.
            shared.flush_to_client().await?;
            if closed {
                break;
            }
        }
        let _ = target_writer.shutdown(Shutdown::Write).await;
        Ok::<(), io::Error>(())
    };

    let downstream = async {
        let mut plain = vec![0u8; CHUNK];
        loop {
            let n = target.read(&mut plain).await?;
            if n == 0 {
                shared.conn.borrow_mut().send_close_notify();
                shared.closed_to_client.set(true);
                match shared.flush_to_client().await {
                    // The client already went away: every byte of data reached it.
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {}
                    other => other?,
                }
                let writer = shared.client_writer.borrow_mut().take();
                if let Some(w) = writer {
                    let _ = w.shutdown(Shutdown::Write).await;
                    *shared.client_writer.borrow_mut() = Some(w);
                }
                return Ok::<(), io::Error>(());
            }
            shared.conn.borrow_mut().writer().write_all(&plain[..n])?;
            shared.flush_to_client().await?;
            on_downstream(n as u64);
        }
    };

    let both = async {
        match future::try_zip(upstream, downstream).await {
            Ok(_) => RelayEnd::Closed,
            Err(e) => RelayEnd::Failed(e),
        }
    };
    let watchdog = async {
        loop {
            let deadline = shared.last_activity.get() + idle;
            let now = Instant::now();
            if now >= deadline {
                return RelayEnd::IdleTimeout;
            }
            glommio::timer::sleep(deadline - now).await;
        }
    };
    future::or(both, watchdog).await
}

/// A second glommio handle on the same socket, so one task can write on it (glommio's
/// `AsyncWrite` needs `&mut`) while another reads from the original.
fn writer_of(stream: &TcpStream) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: dup of an open socket; checked; the duplicate is owned by the new stream.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor for a connected TCP socket.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}
