//! A minimal blocking driver for manual and scripted tests with real clients (swaks,
//! Python smtplib) on loopback. Not the product: shards drive sessions with glommio.
//!
//! Usage: `cargo run -p shardgate-smtp --example loopback_server -- CONFIG.toml [PORT]`
//! where CONFIG.toml holds the `[email]` table's contents (no TLS: set
//! `auth_without_tls = true` to try AUTH). Each accepted message is summarized on stdout.

use shardgate_smtp::{
    ConnectionInfo, EmailConfig, Event, ListenerKind, MessageOutcome, RcptDecision, Session,
    SessionConfig, UserDirectory,
};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static QUEUE_IDS: AtomicU64 = AtomicU64::new(1);

fn serve(
    mut stream: TcpStream,
    config: Arc<SessionConfig>,
    users: Arc<UserDirectory>,
) -> std::io::Result<()> {
    let peer_ip = stream.peer_addr()?.ip();
    let connection = ConnectionInfo {
        peer_ip,
        listener: ListenerKind::Smtp,
    };
    let mut session = Session::new(config, connection, Instant::now());
    let mut buffer = vec![0u8; 64 * 1024];
    let mut body = 0usize;
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::RcptRequested { .. } => session
                    .rcpt_decision(RcptDecision::Accept)
                    .map_err(std::io::Error::other)?,
                Event::AuthRequested {
                    username, password, ..
                } => {
                    let valid = users.verify(&username, password.as_bytes());
                    session.auth_result(valid).map_err(std::io::Error::other)?;
                }
                Event::StartTls => return Ok(()),
                Event::MessageData(chunk) => body += chunk.len(),
                Event::MessageComplete { envelope } => {
                    let queue_id = format!("{:010X}", QUEUE_IDS.fetch_add(1, Ordering::Relaxed));
                    println!(
                        "queued {queue_id}: from {} to {} rcpts, {} octets ({body} streamed), {}",
                        envelope.reverse_path,
                        envelope.recipients.len(),
                        envelope.size,
                        envelope.protocol_name()
                    );
                    body = 0;
                    session
                        .message_result(MessageOutcome::Accepted { queue_id })
                        .map_err(std::io::Error::other)?;
                }
                Event::MessageAborted { reason } => {
                    println!("aborted: {reason:?}");
                    body = 0;
                }
            }
        }
        stream.write_all(&session.take_transmit())?;
        if session.is_closed() {
            return Ok(());
        }
        let wait = session.next_timeout().map(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        stream.set_read_timeout(wait)?;
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => session.feed(&buffer[..read], Instant::now()),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(Instant::now());
            }
            Err(error) => return Err(error),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: loopback_server CONFIG.toml [PORT]")?;
    let port: u16 = args.next().map_or(Ok(2525), |p| p.parse())?;
    let config: EmailConfig = toml::from_str(&std::fs::read_to_string(path)?)?;
    config.validate()?;
    let users = Arc::new(config.user_directory());
    let session_config = Arc::new(config.session_config(false));
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening on 127.0.0.1:{port}");
    for stream in listener.incoming() {
        let stream = stream?;
        let (config, users) = (session_config.clone(), users.clone());
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, config, users) {
                eprintln!("session error: {error}");
            }
        });
    }
    Ok(())
}
