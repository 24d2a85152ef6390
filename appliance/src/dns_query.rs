//! A minimal stub resolver for `shardgate dns-records --check`: one question to one
//! resolver (`ip:port`) over UDP, repeated over TCP when the answer is truncated, with
//! hickory-proto encoding the messages.
//!
//! Owns: [`query`] and the typed answer ([`DnsAnswer`]). Not here: what the records should
//! be (`shardgate_core::mail::dkim::records`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// How long one try may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// UDP tries before giving up.
const TRIES: usize = 2;

/// Why a question got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The name is not a domain name.
    #[error("`{0}` is not a domain name")]
    Name(String),
    /// Sending or receiving failed (timeout included).
    #[error("{resolver}: {source}")]
    Io {
        /// The resolver asked.
        resolver: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The answer did not decode, or did not match the question.
    #[error("{resolver}: bad answer: {why}")]
    BadAnswer {
        /// The resolver asked.
        resolver: SocketAddr,
        /// What was wrong.
        why: String,
    },
    /// The resolver answered with an error code other than NXDOMAIN.
    #[error("{resolver} answered {code}")]
    Refused {
        /// The resolver asked.
        resolver: SocketAddr,
        /// Its response code.
        code: ResponseCode,
    },
}

/// The records of the asked type at the asked name, in presentation form: TXT strings
/// joined, MX as `preference host.`. Empty for NXDOMAIN or no data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsAnswer {
    /// The values.
    pub values: Vec<String>,
}

/// Asks `resolver` for `rtype` records at `name`.
pub fn query(resolver: SocketAddr, name: &str, rtype: RecordType) -> Result<DnsAnswer, QueryError> {
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let qname = Name::from_ascii(&fqdn).map_err(|_| QueryError::Name(name.to_string()))?;
    let id = (std::process::id() as u16) ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) as u16);
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname, rtype));
    let wire = message.to_vec().map_err(|e| QueryError::BadAnswer { resolver, why: e.to_string() })?;
    let io = |source: std::io::Error| QueryError::Io { resolver, source };
    let mut answer = None;
    let mut last_error = None;
    for _ in 0..TRIES {
        match udp_exchange(resolver, &wire) {
            Ok(bytes) => {
                answer = Some(bytes);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let bytes = match (answer, last_error) {
        (Some(bytes), _) => bytes,
        (None, Some(e)) => return Err(io(e)),
        (None, None) => return Err(io(std::io::Error::from(std::io::ErrorKind::TimedOut))),
    };
    let mut reply = decode(resolver, id, &bytes)?;
    if reply.metadata.truncation {
        reply = decode(resolver, id, &tcp_exchange(resolver, &wire).map_err(io)?)?;
    }
    match reply.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(DnsAnswer::default()),
        code => return Err(QueryError::Refused { resolver, code }),
    }
    let values = reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) if rtype == RecordType::TXT => {
                Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect::<String>())
            }
            RData::MX(mx) if rtype == RecordType::MX => Some(format!("{} {}", mx.preference, mx.exchange.to_ascii())),
            _ => None,
        })
        .collect();
    Ok(DnsAnswer { values })
}

fn decode(resolver: SocketAddr, id: u16, bytes: &[u8]) -> Result<Message, QueryError> {
    let reply = Message::from_vec(bytes).map_err(|e| QueryError::BadAnswer { resolver, why: e.to_string() })?;
    if reply.metadata.id != id || reply.metadata.message_type != MessageType::Response {
        return Err(QueryError::BadAnswer { resolver, why: "not the answer to our question".into() });
    }
    Ok(reply)
}

fn udp_exchange(resolver: SocketAddr, wire: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if resolver.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let socket = UdpSocket::bind(local)?;
    socket.connect(resolver)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.send(wire)?;
    let mut buf = vec![0u8; 65_535];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn tcp_exchange(resolver: SocketAddr, wire: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&resolver, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let len = u16::try_from(wire.len()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    stream.write_all(&framed)?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// The first `nameserver` of `/etc/resolv.conf`, port 53.
pub fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver")).then(|| words.next()).flatten().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()).map(|ip| SocketAddr::new(ip, 53))
    })
}
