//! One SMTP connection to a next hop, on the control core's tokio runtime: the I/O driver of
//! the sans-I/O client in `shardgate_smtp::client`.
//!
//! Owns: connecting (with a timeout), the greeting, EHLO (HELO fallback), STARTTLS per policy
//! (opportunistic: used when offered, a failed handshake is retried in clear on a new
//! connection by the caller only if the policy allows; required: no STARTTLS → transient
//! failure), AUTH PLAIN/LOGIN after TLS, running transactions one after another on the same
//! connection (RSET between them when needed), streaming each message text from its spool
//! file in 64 KiB chunks through the dot-stuffer, and QUIT.
//!
//! TLS towards next hops is opportunistic security (RFC 7435, as Postfix `may`/`encrypt`):
//! the certificate is not verified, because MX host names are not authenticated without
//! DANE/MTA-STS; encryption still defeats passive eavesdropping.
//! Does not own: choosing next hops (see `super::mx`) or interpreting outcomes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardgate_smtp::client::{
    command, Capabilities, ClientError, DotStuffer, MailOptions, ReplyReader, ServerReply, Step, Transaction,
    TransactionOutcome,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{ForwardAuth, StartTlsPolicy};

/// How long we wait for any reply but the one after the message text.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long we wait for the reply after the message text (RFC 5321 §4.5.3.2.6).
pub const FINAL_REPLY_TIMEOUT: Duration = Duration::from_secs(600);
/// Read size for the spool file.
const CHUNK: usize = 64 * 1024;

/// Why a connection could not be used. Every variant is a *connection* failure: the
/// recipients stay queued (the caller may try the next MX first).
#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("connection to {addr}: {source}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("{addr} did not answer within {seconds} s")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// How long we waited.
        seconds: u64,
    },
    /// The server refused us (greeting, EHLO/HELO, STARTTLS or AUTH).
    #[error("{addr} refused the {stage}: {reply}")]
    Refused {
        /// Where.
        addr: SocketAddr,
        /// Greeting, EHLO, STARTTLS or AUTH.
        stage: &'static str,
        /// What it said.
        reply: ServerReply,
    },
    /// STARTTLS is required by policy but not offered.
    #[error("{addr} does not offer STARTTLS, which the route requires")]
    TlsNotOffered {
        /// Where.
        addr: SocketAddr,
    },
    /// AUTH is configured but the server offers neither PLAIN nor LOGIN.
    #[error("{addr} offers no AUTH PLAIN or LOGIN{}", if *.tls { "" } else { " (without TLS)" })]
    AuthNotOffered {
        /// Where.
        addr: SocketAddr,
        /// Whether the connection was encrypted.
        tls: bool,
    },
    /// The server broke the protocol.
    #[error("{addr}: {source}")]
    Protocol {
        /// Where.
        addr: SocketAddr,
        /// How.
        source: ClientError,
    },
    /// The server closed the connection.
    #[error("{addr} closed the connection")]
    Closed {
        /// Where.
        addr: SocketAddr,
    },
}

impl NextHopError {
    /// The reply this failure gives a recipient: the server's own when it refused with a
    /// 5xx at the greeting (it does not want our mail), else a synthetic 4xx.
    pub fn as_reply(&self) -> ServerReply {
        match self {
            NextHopError::Refused { reply, .. } if reply.is_permanent() && reply.code() != 530 && reply.code() != 535 => {
                reply.clone()
            }
            other => ServerReply::new(451, &format!("4.4.1 {other}")),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open, greeted (and maybe encrypted and authenticated) connection to a next hop.
pub struct NextHopConnection {
    stream: Box<dyn Io>,
    addr: SocketAddr,
    host: String,
    reader: ReplyReader,
    capabilities: Capabilities,
    tls: bool,
    /// Transactions run on this connection (for reuse statistics).
    pub transactions: u64,
    /// The current (or last) transaction got as far as sending the message text: after a
    /// failure from then on, the next hop may have the message.
    text_sent: bool,
}

impl std::fmt::Debug for NextHopConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextHopConnection").field("addr", &self.addr).field("host", &self.host).field("tls", &self.tls).finish()
    }
}

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Our name in EHLO.
    pub ehlo_name: String,
    /// STARTTLS policy.
    pub starttls: StartTlsPolicy,
    /// Credentials, for `forward` routes that have them.
    pub auth: Option<ForwardAuth>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The local address to connect from (`[email.delivery] source_ips`); `None`: the
    /// kernel's choice.
    pub source_ip: Option<std::net::IpAddr>,
}

/// The TLS client config for next hops (opportunistic: certificates are not verified; see
/// the module doc).
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|builder| builder.dangerous().with_custom_certificate_verifier(Arc::new(crate::tls::unverified::AcceptAnyCertificate(provider))).with_no_client_auth());
    match config {
        Ok(config) => Arc::new(config),
        // The ring provider supports the default versions; this cannot fail in practice.
        Err(e) => {
            tracing::error!(error = %e, "TLS client config for mail delivery");
            Arc::new(rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
        }
    }
}

impl NextHopConnection {
    /// Connects to `addr` (`host` is the name it was found under, for TLS SNI and logs),
    /// reads the greeting, says EHLO, upgrades with STARTTLS and authenticates as `options`
    /// say.
    pub async fn open(addr: SocketAddr, host: &str, options: &ConnectOptions, tls: &Arc<rustls::ClientConfig>) -> Result<NextHopConnection, NextHopError> {
        let connect = async {
            match options.source_ip {
                None => TcpStream::connect(addr).await,
                Some(source) => {
                    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
                    socket.bind(SocketAddr::new(source, 0))?;
                    socket.connect(addr).await
                }
            }
        };
        let tcp = match tokio::time::timeout(options.connect_timeout, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(NextHopError::Connect { addr, source }),
            Err(_) => return Err(NextHopError::Timeout { addr, seconds: options.connect_timeout.as_secs() }),
        };
        let _ = tcp.set_nodelay(true);
        let mut connection = NextHopConnection {
            stream: Box::new(tcp),
            addr,
            host: host.to_string(),
            reader: ReplyReader::new(),
            capabilities: Capabilities::default(),
            tls: false,
            transactions: 0,
            text_sent: false,
        };
        let greeting = connection.read_reply(COMMAND_TIMEOUT).await?;
        if greeting.code() != 220 {
            return Err(NextHopError::Refused { addr, stage: "connection", reply: greeting });
        }
        connection.hello(&options.ehlo_name).await?;
        let want_tls = match options.starttls {
            StartTlsPolicy::None => false,
            StartTlsPolicy::Opportunistic => connection.capabilities.starttls,
            StartTlsPolicy::Required => {
                if !connection.capabilities.starttls {
                    return Err(NextHopError::TlsNotOffered { addr });
                }
                true
            }
        };
        if want_tls {
            connection = connection.starttls(tls).await?;
            connection.hello(&options.ehlo_name).await?;
        }
        if let Some(auth) = &options.auth {
            connection.authenticate(auth).await?;
        }
        Ok(connection)
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the last transaction began sending the message text (see `send`).
    pub fn text_sent(&self) -> bool {
        self.text_sent
    }

    /// What the next hop offered in its (last) EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name the next hop was found under (MX host or forward host).
    pub fn host(&self) -> &str {
        &self.host
    }

    async fn hello(&mut self, name: &str) -> Result<(), NextHopError> {
        self.write(&command::ehlo(name)).await?;
        let reply = self.read_reply(COMMAND_TIMEOUT).await?;
        if reply.is_positive() {
            self.capabilities = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        // Old servers: HELO, no extensions.
        self.write(&command::helo(name)).await?;
        let reply = self.read_reply(COMMAND_TIMEOUT).await?;
        if !reply.is_positive() {
            return Err(NextHopError::Refused { addr: self.addr, stage: "HELO", reply });
        }
        self.capabilities = Capabilities::default();
        Ok(())
    }

    async fn starttls(mut self, tls: &Arc<rustls::ClientConfig>) -> Result<NextHopConnection, NextHopError> {
        self.write(&command::starttls()).await?;
        let reply = self.read_reply(COMMAND_TIMEOUT).await?;
        if reply.code() != 220 {
            return Err(NextHopError::Refused { addr: self.addr, stage: "STARTTLS", reply });
        }
        if self.reader.has_partial() {
            // Bytes after the 220 would be injected plaintext (CVE-2011-0411 class).
            return Err(NextHopError::Protocol {
                addr: self.addr,
                source: ClientError::MalformedReply { line: "data after the STARTTLS reply".into() },
            });
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.trim_end_matches('.').to_string())
            .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(self.addr.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let addr = self.addr;
        // The trait object hides the TcpStream; TLS wraps it as it is.
        let stream = connector.connect(name, self.stream);
        let stream = match tokio::time::timeout(COMMAND_TIMEOUT, stream).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(NextHopError::Io { addr, source }),
            Err(_) => return Err(NextHopError::Timeout { addr, seconds: COMMAND_TIMEOUT.as_secs() }),
        };
        Ok(NextHopConnection {
            stream: Box::new(stream),
            addr,
            host: self.host,
            reader: ReplyReader::new(),
            capabilities: Capabilities::default(),
            tls: true,
            transactions: 0,
            text_sent: false,
        })
    }

    async fn authenticate(&mut self, auth: &ForwardAuth) -> Result<(), NextHopError> {
        let reply = if self.capabilities.offers_auth("PLAIN") {
            self.write(&command::auth_plain(&auth.username, &auth.password)).await?;
            self.read_reply(COMMAND_TIMEOUT).await?
        } else if self.capabilities.offers_auth("LOGIN") {
            let [start, user, pass] = command::auth_login(&auth.username, &auth.password);
            self.write(&start).await?;
            let mut reply = self.read_reply(COMMAND_TIMEOUT).await?;
            for answer in [user, pass] {
                if reply.code() != 334 {
                    break;
                }
                self.write(&answer).await?;
                reply = self.read_reply(COMMAND_TIMEOUT).await?;
            }
            reply
        } else {
            return Err(NextHopError::AuthNotOffered { addr: self.addr, tls: self.tls });
        };
        if reply.code() != 235 {
            return Err(NextHopError::Refused { addr: self.addr, stage: "AUTH", reply });
        }
        Ok(())
    }

    /// Runs one transaction: `sender` (empty for `<>`) to `recipients`, the text being
    /// `prefix` (e.g. headers a forward route adds) followed by what `body` yields.
    /// A connection error after the text was sent is returned as an error too: the caller
    /// must treat the outcome as unknown and retry (a possible duplicate, never a loss).
    pub async fn send(
        &mut self,
        sender: &str,
        recipients: &[String],
        size: u64,
        smtputf8: bool,
        prefix: &[u8],
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<TransactionOutcome, NextHopError> {
        let options = MailOptions { size: Some(size + prefix.len() as u64), eight_bit: true, smtputf8 };
        let mut transaction = Transaction::new(sender, recipients, &options, &self.capabilities);
        self.text_sent = false;
        let mut step = transaction.start();
        let mut final_wait = false;
        loop {
            match step {
                Step::Send(bytes) => {
                    self.write(&bytes).await?;
                    step = self.next(&mut transaction, final_wait).await?;
                }
                Step::Read => step = self.next(&mut transaction, final_wait).await?,
                Step::SendBody => {
                    self.text_sent = true;
                    self.stream_body(prefix, body).await?;
                    transaction.body_sent().map_err(|source| NextHopError::Protocol { addr: self.addr, source })?;
                    final_wait = true;
                    step = self.next(&mut transaction, final_wait).await?;
                }
                Step::Done(outcome) => {
                    self.transactions += 1;
                    if outcome.needs_rset && !outcome.connection_closing {
                        self.write(&command::rset()).await?;
                        let _ = self.read_reply(COMMAND_TIMEOUT).await?;
                    }
                    return Ok(outcome);
                }
            }
        }
    }

    async fn next(&mut self, transaction: &mut Transaction, final_wait: bool) -> Result<Step, NextHopError> {
        let timeout = if final_wait { FINAL_REPLY_TIMEOUT } else { COMMAND_TIMEOUT };
        let reply = self.read_reply(timeout).await?;
        transaction.on_reply(reply).map_err(|source| NextHopError::Protocol { addr: self.addr, source })
    }

    async fn stream_body(&mut self, prefix: &[u8], body: &mut (dyn AsyncRead + Unpin + Send)) -> Result<(), NextHopError> {
        let addr = self.addr;
        let io = |source| NextHopError::Io { addr, source };
        let mut stuffer = DotStuffer::new();
        let mut encoded = Vec::with_capacity(CHUNK + CHUNK / 8);
        stuffer.encode(prefix, &mut encoded);
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = body.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            stuffer.encode(&chunk[..n], &mut encoded);
            self.write(&encoded).await?;
            encoded.clear();
        }
        encoded.extend_from_slice(stuffer.finish());
        self.write(&encoded).await
    }

    /// Says QUIT and closes (best effort).
    pub async fn quit(mut self) {
        if self.write(&command::quit()).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.read_reply(COMMAND_TIMEOUT)).await;
        }
        let _ = self.stream.shutdown().await;
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), NextHopError> {
        let addr = self.addr;
        match tokio::time::timeout(COMMAND_TIMEOUT, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(NextHopError::Io { addr, source }),
            Err(_) => Err(NextHopError::Timeout { addr, seconds: COMMAND_TIMEOUT.as_secs() }),
        }
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<ServerReply, NextHopError> {
        let addr = self.addr;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(reply) = self.reader.next_reply() {
                return Ok(reply);
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await {
                Ok(Ok(0)) => return Err(NextHopError::Closed { addr }),
                Ok(Ok(n)) => n,
                Ok(Err(source)) => return Err(NextHopError::Io { addr, source }),
                Err(_) => return Err(NextHopError::Timeout { addr, seconds: timeout.as_secs() }),
            };
            self.reader.feed(&buffer[..n]).map_err(|source| NextHopError::Protocol { addr, source })?;
        }
    }
}
