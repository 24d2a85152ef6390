//! An SMTP connection's byte stream: plain TCP, or userspace rustls on the same socket after
//! STARTTLS or on the implicit-TLS port.
//!
//! Owns: reading plaintext (decrypting as needed), writing plaintext (encrypting and flushing),
//! and upgrading a plain stream with the shared handshake driver (`crate::tls::handshake`,
//! which reads records exactly, so nothing the client pipelined after `STARTTLS` is taken
//! as TLS or lost). Timeouts are the socket's (`set_read_timeout`), set by the caller.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::tls::handshake::{accept, flush, HandshakeError};

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 32 * 1024;

/// The connection's stream.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS in userspace rustls.
    Tls {
        /// The socket.
        stream: TcpStream,
        /// The session.
        conn: Box<ServerConnection>,
        /// Encrypted bytes read from the socket (reused).
        raw: Vec<u8>,
    },
}

impl Transport {
    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) | Transport::Tls { stream, .. } => stream,
        }
    }

    /// Runs a TLS handshake on a plain stream (STARTTLS, implicit TLS).
    pub async fn upgrade(self, config: Arc<ServerConfig>, timeout: Duration) -> Result<Transport, HandshakeError> {
        let mut stream = match self {
            Transport::Plain(stream) => stream,
            Transport::Tls { .. } => {
                return Err(HandshakeError::Io(io::Error::other("TLS is already active")));
            }
        };
        let established = accept(&mut stream, config, Vec::new(), timeout).await?;
        let mut conn = Box::new(established.conn);
        if !established.leftover.is_empty() {
            conn.read_tls(&mut established.leftover.as_slice())?;
            conn.process_new_packets()?;
        }
        Ok(Transport::Tls { stream, conn, raw: vec![0u8; READ_CHUNK] })
    }

    /// Reads plaintext into `buf`; 0 at end of stream (or TLS close_notify).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf).await,
            Transport::Tls { stream, conn, raw } => {
                loop {
                    match conn.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    let n = stream.read(raw).await?;
                    if n == 0 {
                        return Ok(0);
                    }
                    conn.read_tls(&mut &raw[..n])?;
                    let processed = conn.process_new_packets();
                    // Alerts, key updates: whatever rustls queued goes out now.
                    flush(conn, stream).await?;
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
            }
        }
    }

    /// Writes all of `data` as plaintext.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.write_all(data).await,
            Transport::Tls { stream, conn, .. } => {
                conn.writer().write_all(data)?;
                flush(conn, stream).await
            }
        }
    }

    /// Ends the stream politely (TLS close_notify), ignoring errors.
    pub async fn close(&mut self) {
        match self {
            Transport::Plain(stream) => {
                let _ = stream.close().await;
            }
            Transport::Tls { stream, conn, .. } => {
                conn.send_close_notify();
                let _ = flush(conn, stream).await;
                let _ = stream.close().await;
            }
        }
    }
}
