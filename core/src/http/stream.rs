//! The client side of an HTTP connection as one byte stream, whatever carries it: a plain
//! socket, a socket whose TLS session the kernel runs (kTLS), or a userspace rustls session.
//!
//! Owns: reads and writes of plaintext on each kind, turning a peer's `close_notify` into
//! EOF, sending `close_notify` when we close, and handing the parts over for a tunnel
//! (`Upgrade`). Does not own HTTP (see [`super`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::ServerConnection;

use crate::relay::splice::{send_close_notify, take_close_notify};
use crate::tls::ktls;

/// Ciphertext read per socket read on a userspace TLS session.
const TLS_READ_CHUNK: usize = 32 * 1024;

/// A userspace TLS session over its socket.
pub struct RustlsStream {
    /// The socket.
    pub tcp: TcpStream,
    /// The session.
    pub conn: ServerConnection,
    /// Ciphertext received and not yet given to rustls.
    pub pending: Vec<u8>,
    cipher: Vec<u8>,
    out: Vec<u8>,
}

/// The client connection of an HTTP exchange.
pub enum ClientStream {
    /// No TLS.
    Plain(TcpStream),
    /// TLS in the kernel: the socket carries plaintext on our side.
    Ktls(TcpStream),
    /// TLS in userspace.
    Rustls(Box<RustlsStream>),
}

impl ClientStream {
    /// A userspace TLS stream; `leftover` is ciphertext read past the handshake.
    pub fn rustls(tcp: TcpStream, conn: ServerConnection, leftover: Vec<u8>) -> ClientStream {
        ClientStream::Rustls(Box::new(RustlsStream { tcp, conn, pending: leftover, cipher: Vec::new(), out: Vec::new() }))
    }

    /// Whether the client reached us over TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, ClientStream::Plain(_))
    }

    /// The socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(t) | ClientStream::Ktls(t) => t,
            ClientStream::Rustls(s) => &s.tcp,
        }
    }

    /// Reads plaintext; `Ok(0)` at the client's end of stream (TCP FIN or `close_notify`).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(tcp) => tcp.read(buf).await,
            ClientStream::Ktls(tcp) => match tcp.read(buf).await {
                Err(e) if ktls::is_control_record_error(&e) => take_close_notify(tcp.as_raw_fd()).map(|()| 0),
                other => other,
            },
            ClientStream::Rustls(s) => s.read(buf).await,
        }
    }

    /// Writes all of `data` as plaintext.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            ClientStream::Plain(tcp) | ClientStream::Ktls(tcp) => tcp.write_all(data).await,
            ClientStream::Rustls(s) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let n = s.conn.writer().write(rest)?;
                    rest = &rest[n..];
                    s.flush().await?;
                }
                Ok(())
            }
        }
    }

    /// Ends the connection politely: `close_notify` on TLS, then the TCP half-close.
    pub async fn close(&mut self) {
        match self {
            ClientStream::Plain(tcp) => {
                let _ = tcp.shutdown(Shutdown::Write).await;
            }
            ClientStream::Ktls(tcp) => {
                let _ = send_close_notify(tcp.as_raw_fd()).await;
                let _ = tcp.shutdown(Shutdown::Write).await;
            }
            ClientStream::Rustls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush().await;
                let _ = s.tcp.shutdown(Shutdown::Write).await;
            }
        }
    }
}

impl RustlsStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: a truncation, reported
                // as EOF like nginx does (the HTTP framing tells whether a body was cut).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.pending.is_empty() {
                self.cipher.resize(TLS_READ_CHUNK, 0);
                let n = self.tcp.read(&mut self.cipher).await?;
                if n == 0 {
                    // Tell rustls about the EOF; the next reader().read reports it.
                    let _ = self.conn.read_tls(&mut io::empty());
                    let _ = self.conn.process_new_packets();
                    match self.conn.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(_) => return Ok(0),
                    }
                }
                self.pending.extend_from_slice(&self.cipher[..n]);
            }
            let mut input = self.pending.as_slice();
            let taken = self.conn.read_tls(&mut input)?;
            self.pending.drain(..taken);
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Key-update answers or alerts rustls queued while reading.
            if self.conn.wants_write() {
                self.flush().await?;
            }
        }
    }

    /// Sends what rustls has queued. Cancel-safe: bytes leave `out` only once written, so a
    /// read abandoned while flushing (an idle timer) loses no TLS record.
    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        while !self.out.is_empty() {
            let n = self.tcp.write(&self.out).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "the client accepted no bytes"));
            }
            self.out.drain(..n);
        }
        Ok(())
    }
}
