//! The request handler a shard calls for every datagram on its RADIUS sockets.
//!
//! This module owns the order of the checks and the shape of the replies:
//!
//! 1. source address → [`RadiusClient`] (unknown sources are dropped silently and counted);
//! 2. framing ([`RawPacket::parse`]); Code vs. the port it arrived on;
//! 3. Status-Server (RFC 5997): Message-Authenticator required, answered with Access-Accept on
//!    the auth port and Accounting-Response on the acct port, never cached;
//! 4. duplicate cache: a retransmission gets the byte-identical earlier reply;
//! 5. Access-Request: Message-Authenticator verified, and required unless
//!    `require_message_authenticator = false` (BlastRADIUS, CVE-2024-3596); then MAB;
//! 6. Accounting-Request: Request Authenticator (RFC 2866 §3) and any Message-Authenticator
//!    verified, answered, and turned into an [`AccountingEvent`] for the control core.
//!
//! Every reply carries a Message-Authenticator as its *first* attribute (the BlastRADIUS
//! guidance; it keeps an attacker from controlling the MD5 prefix), copies Proxy-State in
//! order (RFC 2865 §5.33) and has a correct Response Authenticator.
//!
//! ## MAB credentials, as FreeRADIUS deployments expect
//!
//! The MAC comes from Calling-Station-Id, or from User-Name when Calling-Station-Id is absent
//! or not a MAC. Switches doing MAB send the MAC as both User-Name and password (Cisco:
//! `aabbccddeeff`; others with separators or upper case). A FreeRADIUS MAB setup authorises
//! with `Cleartext-Password := "%{User-Name}"`, so we accept a User-Password that equals the
//! User-Name (ASCII case-insensitively) or is any textual form of the same MAC; a CHAP-Password
//! is checked against the User-Name and the MAC's textual forms in lower and upper case. A
//! request with neither password attribute is accepted on the strength of its (verified)
//! Message-Authenticator. Anything else is rejected. EAP-Message is rejected: no EAP here.
//!
//! It does not own sockets, the session table ([`crate::sessions`]) or the policy
//! ([`crate::policy`]): the shard passes the current [`Policy`] in on every call.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::{self, MessageAuthenticatorCheck};
use crate::duplicate::{DuplicateCache, RequestKey};
use crate::mac::MacAddress;
use crate::packet::{
    attr, AcctStatusType, Attribute, Code, Packet, RawPacket, Tag, TUNNEL_MEDIUM_IEEE_802, TUNNEL_TYPE_VLAN,
};
use crate::policy::{MabDecision, Policy, RadiusClient, RejectReason};
use crate::RadiusError;

/// Which of our two sockets a datagram arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortKind {
    /// The authentication port (1812).
    Auth,
    /// The accounting port (1813).
    Acct,
}

/// Why a datagram got no reply. Each is counted in [`RadiusCounters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The source address matches no `[[radius.clients]]` entry.
    UnknownClient,
    /// The datagram breaks RADIUS framing.
    Malformed(RadiusError),
    /// Access-Request on the accounting port, or Accounting-Request on the auth port.
    WrongPort(Code),
    /// A Code a server does not accept (a reply, Access-Challenge, Status-Client).
    NotARequest(Code),
    /// Access-Request (when required) or Status-Server without Message-Authenticator.
    MissingMessageAuthenticator,
    /// Message-Authenticator wrong, duplicated or of the wrong length: wrong secret or forgery.
    BadMessageAuthenticator,
    /// Accounting-Request whose Request Authenticator does not match the secret.
    BadRequestAuthenticator,
    /// Accounting Start/Interim/Stop without Acct-Session-Id, or without Acct-Status-Type:
    /// it cannot be recorded, so RFC 2866 §2 forbids acknowledging it.
    AccountingIncomplete,
    /// The reply could not be encoded (e.g. Proxy-State pushing it past 4096 octets).
    ReplyNotEncodable(RadiusError),
}

/// The NAS an accounting record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NasInfo {
    /// `[[radius.clients]]` name the datagram matched.
    pub client: String,
    /// NAS-IP-Address, if sent.
    pub ip: Option<Ipv4Addr>,
    /// NAS-Identifier, if sent.
    pub identifier: Option<String>,
    /// NAS-Port, if sent.
    pub port: Option<u32>,
}

/// Acct-Status-Type values that change the session table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountingStatus {
    /// A session started.
    Start,
    /// Periodic update of a running session.
    InterimUpdate,
    /// A session ended.
    Stop,
    /// The NAS rebooted: all its earlier sessions are gone.
    AccountingOn,
    /// The NAS is going down: all its sessions end.
    AccountingOff,
}

/// One accounting record for the control core's session table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountingEvent {
    /// What happened.
    pub status: AccountingStatus,
    /// Acct-Session-Id; empty for Accounting-On/Off that carry none.
    pub session_id: String,
    /// The client's MAC (Calling-Station-Id, else User-Name), if it held one.
    pub mac: Option<MacAddress>,
    /// The NAS.
    pub nas: NasInfo,
    /// Tunnel-Private-Group-Id if the NAS echoed one, else the VLAN the policy assigns the MAC.
    pub vlan: Option<u16>,
    /// Acct-Input-Octets + 2^32 × Acct-Input-Gigawords.
    pub input_octets: u64,
    /// Acct-Output-Octets + 2^32 × Acct-Output-Gigawords.
    pub output_octets: u64,
    /// Acct-Session-Time.
    pub session_time: Option<Duration>,
    /// Acct-Terminate-Cause (Stop only, usually).
    pub terminate_cause: Option<u32>,
}

/// What [`RadiusServer::handle`] did. Every variant but [`Outcome::Drop`] means `out` holds a
/// reply to send back to the datagram's source address from the socket it came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Access-Accept sent.
    AccessAccept {
        /// The authenticated MAC.
        mac: MacAddress,
        /// VLAN sent in the tunnel attributes, if any.
        vlan: Option<u16>,
        /// Whether the MAC was on the allow-list (false: guest VLAN).
        known: bool,
    },
    /// Access-Reject sent.
    AccessReject {
        /// The MAC, if one was found.
        mac: Option<MacAddress>,
        /// Why.
        reason: RejectReason,
    },
    /// Status-Server answered.
    StatusServer,
    /// Accounting-Response sent; the event, if the record changes the session table.
    Accounting(Option<AccountingEvent>),
    /// A retransmission, answered from the duplicate cache with the original reply.
    Retransmission,
    /// Nothing to send.
    Drop(DropReason),
}

/// Per-shard counters. Merge shards with [`RadiusCounters::merge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadiusCounters {
    /// Datagrams handled.
    pub received: u64,
    /// Access-Accepts sent (not counting retransmissions).
    pub access_accepts: u64,
    /// Access-Rejects sent (not counting retransmissions).
    pub access_rejects: u64,
    /// Status-Server requests answered.
    pub status_server: u64,
    /// Accounting-Responses sent (not counting retransmissions).
    pub accounting_responses: u64,
    /// Retransmissions answered from the duplicate cache.
    pub retransmissions: u64,
    /// Dropped: unknown source.
    pub unknown_client: u64,
    /// Dropped: malformed datagram.
    pub malformed: u64,
    /// Dropped: request on the wrong port.
    pub wrong_port: u64,
    /// Dropped: a Code servers do not accept.
    pub not_a_request: u64,
    /// Dropped: Message-Authenticator missing where required.
    pub missing_message_authenticator: u64,
    /// Dropped: Message-Authenticator wrong.
    pub bad_message_authenticator: u64,
    /// Dropped: accounting Request Authenticator wrong.
    pub bad_request_authenticator: u64,
    /// Dropped: accounting record without session id or status type.
    pub accounting_incomplete: u64,
    /// Dropped: reply could not be encoded.
    pub reply_not_encodable: u64,
}

impl RadiusCounters {
    /// Adds another shard's counters to these.
    pub fn merge(&mut self, other: &RadiusCounters) {
        self.received += other.received;
        self.access_accepts += other.access_accepts;
        self.access_rejects += other.access_rejects;
        self.status_server += other.status_server;
        self.accounting_responses += other.accounting_responses;
        self.retransmissions += other.retransmissions;
        self.unknown_client += other.unknown_client;
        self.malformed += other.malformed;
        self.wrong_port += other.wrong_port;
        self.not_a_request += other.not_a_request;
        self.missing_message_authenticator += other.missing_message_authenticator;
        self.bad_message_authenticator += other.bad_message_authenticator;
        self.bad_request_authenticator += other.bad_request_authenticator;
        self.accounting_incomplete += other.accounting_incomplete;
        self.reply_not_encodable += other.reply_not_encodable;
    }

    fn record(&mut self, outcome: &Outcome) {
        self.received += 1;
        let counter = match outcome {
            Outcome::AccessAccept { .. } => &mut self.access_accepts,
            Outcome::AccessReject { .. } => &mut self.access_rejects,
            Outcome::StatusServer => &mut self.status_server,
            Outcome::Accounting(_) => &mut self.accounting_responses,
            Outcome::Retransmission => &mut self.retransmissions,
            Outcome::Drop(reason) => match reason {
                DropReason::UnknownClient => &mut self.unknown_client,
                DropReason::Malformed(_) => &mut self.malformed,
                DropReason::WrongPort(_) => &mut self.wrong_port,
                DropReason::NotARequest(_) => &mut self.not_a_request,
                DropReason::MissingMessageAuthenticator => &mut self.missing_message_authenticator,
                DropReason::BadMessageAuthenticator => &mut self.bad_message_authenticator,
                DropReason::BadRequestAuthenticator => &mut self.bad_request_authenticator,
                DropReason::AccountingIncomplete => &mut self.accounting_incomplete,
                DropReason::ReplyNotEncodable(_) => &mut self.reply_not_encodable,
            },
        };
        *counter += 1;
    }
}

/// One shard's RADIUS request handler: its duplicate cache and counters. The policy is passed
/// to every call so a reload takes effect on the next datagram.
#[derive(Debug, Default)]
pub struct RadiusServer {
    cache: DuplicateCache,
    counters: RadiusCounters,
}

impl RadiusServer {
    /// A handler with the given duplicate cache.
    pub fn new(cache: DuplicateCache) -> Self {
        Self { cache, counters: RadiusCounters::default() }
    }

    /// Counters so far.
    pub fn counters(&self) -> &RadiusCounters {
        &self.counters
    }

    /// Number of replies in the duplicate cache.
    pub fn cached_replies(&self) -> usize {
        self.cache.len()
    }

    /// Drops expired duplicate-cache entries; call from a periodic shard timer so an idle shard
    /// releases memory.
    pub fn expire(&mut self, now: Instant) {
        self.cache.expire(now);
    }

    /// Handles one datagram that arrived from `source` on the `port` socket. On return `out`
    /// holds the reply (or is empty for [`Outcome::Drop`]).
    pub fn handle(
        &mut self,
        policy: &Policy,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
        port: PortKind,
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        let outcome = self.dispatch(policy, source, datagram, now, port, out);
        if matches!(outcome, Outcome::Drop(_)) {
            out.clear();
        }
        self.counters.record(&outcome);
        outcome
    }

    fn dispatch(
        &mut self,
        policy: &Policy,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
        port: PortKind,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let Some(client) = policy.client_for(source.ip()) else {
            return Outcome::Drop(DropReason::UnknownClient);
        };
        let raw = match RawPacket::parse(datagram) {
            Ok(raw) => raw,
            Err(err) => return Outcome::Drop(DropReason::Malformed(err)),
        };
        match (raw.code(), port) {
            (Code::StatusServer, _) => return status_server(client, &raw, port, out),
            (Code::AccessRequest, PortKind::Auth) | (Code::AccountingRequest, PortKind::Acct) => {}
            (code @ (Code::AccessRequest | Code::AccountingRequest), _) => {
                return Outcome::Drop(DropReason::WrongPort(code));
            }
            (code, _) => return Outcome::Drop(DropReason::NotARequest(code)),
        }
        let secret = client.secret.as_bytes();
        let verified = match raw.code() {
            Code::AccessRequest => verify_access_request(policy, &raw, secret),
            _ => verify_accounting_request(&raw, secret),
        };
        if let Err(reason) = verified {
            return Outcome::Drop(reason);
        }
        let key = RequestKey { client: source, port, identifier: raw.identifier(), authenticator: raw.authenticator() };
        if let Some(reply) = self.cache.get(&key, now) {
            out.extend_from_slice(reply);
            return Outcome::Retransmission;
        }
        let outcome = match raw.code() {
            Code::AccessRequest => access_request(policy, client, &raw, out),
            _ => accounting_request(policy, client, &raw, out),
        };
        if !matches!(outcome, Outcome::Drop(_)) {
            self.cache.insert(key, out, now);
        }
        outcome
    }
}

/// Encodes a reply: Message-Authenticator first, then `attributes`, then the request's
/// Proxy-States in order; signs it.
fn write_reply(
    code: Code,
    request: &RawPacket<'_>,
    attributes: Vec<Attribute>,
    secret: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DropReason> {
    let mut all = Vec::with_capacity(attributes.len() + 2);
    all.push(Attribute::MessageAuthenticator([0; 16]));
    all.extend(attributes);
    all.extend(
        request
            .attributes()
            .filter(|a| a.attr_type == attr::PROXY_STATE)
            .map(|a| Attribute::Other { attr_type: attr::PROXY_STATE, value: a.value.to_vec() }),
    );
    let reply = Packet { code, identifier: request.identifier(), authenticator: [0; 16], attributes: all };
    reply.encode(out).map_err(DropReason::ReplyNotEncodable)?;
    auth::sign_reply(out, request.code(), &request.authenticator(), secret).map_err(DropReason::ReplyNotEncodable)
}

fn status_server(client: &RadiusClient, raw: &RawPacket<'_>, port: PortKind, out: &mut Vec<u8>) -> Outcome {
    let secret = client.secret.as_bytes();
    match auth::check_message_authenticator(raw, &raw.authenticator(), secret) {
        MessageAuthenticatorCheck::Valid => {}
        MessageAuthenticatorCheck::Absent => return Outcome::Drop(DropReason::MissingMessageAuthenticator),
        MessageAuthenticatorCheck::Invalid => return Outcome::Drop(DropReason::BadMessageAuthenticator),
    }
    let code = match port {
        PortKind::Auth => Code::AccessAccept,
        PortKind::Acct => Code::AccountingResponse,
    };
    match write_reply(code, raw, Vec::new(), secret, out) {
        Ok(()) => Outcome::StatusServer,
        Err(reason) => Outcome::Drop(reason),
    }
}

/// The MAC of the station: Calling-Station-Id, else User-Name.
fn station_mac(packet: &Packet) -> Option<MacAddress> {
    packet
        .calling_station_id()
        .and_then(|id| MacAddress::parse(id).ok())
        .or_else(|| packet.user_name().and_then(|name| MacAddress::parse(name).ok()))
}

/// Checks User-Password / CHAP-Password as described in the module doc.
fn credentials_match(packet: &Packet, mac: &MacAddress, secret: &[u8]) -> bool {
    let user_name = packet.user_name();
    for attribute in &packet.attributes {
        match attribute {
            Attribute::UserPassword(hidden) => {
                let password = hidden.reveal(secret, &packet.authenticator);
                let equals_user_name = user_name.is_some_and(|name| name.as_bytes().eq_ignore_ascii_case(&password));
                return equals_user_name || MacAddress::parse_bytes(&password) == Some(*mac);
            }
            Attribute::ChapPassword { ident, response } => {
                let challenge = packet
                    .find(|a| match a {
                        Attribute::ChapChallenge(challenge) => Some(challenge.as_slice()),
                        _ => None,
                    })
                    .unwrap_or(&packet.authenticator);
                let forms = mac.text_forms();
                let candidates = user_name
                    .map(str::to_owned)
                    .into_iter()
                    .chain(forms.iter().cloned())
                    .chain(forms.iter().map(|form| form.to_ascii_uppercase()));
                let mut matched = false;
                for candidate in candidates {
                    matched |= auth::chap_response_matches(*ident, response, candidate.as_bytes(), challenge);
                }
                return matched;
            }
            _ => {}
        }
    }
    true
}

/// Message-Authenticator of an Access-Request: verified when present, required unless the
/// policy relaxes it (BlastRADIUS).
fn verify_access_request(policy: &Policy, raw: &RawPacket<'_>, secret: &[u8]) -> Result<(), DropReason> {
    match auth::check_message_authenticator(raw, &raw.authenticator(), secret) {
        MessageAuthenticatorCheck::Valid => Ok(()),
        MessageAuthenticatorCheck::Invalid => Err(DropReason::BadMessageAuthenticator),
        MessageAuthenticatorCheck::Absent if policy.require_message_authenticator => {
            Err(DropReason::MissingMessageAuthenticator)
        }
        MessageAuthenticatorCheck::Absent => Ok(()),
    }
}

/// Request Authenticator of an Accounting-Request, and its Message-Authenticator if present.
fn verify_accounting_request(raw: &RawPacket<'_>, secret: &[u8]) -> Result<(), DropReason> {
    if !auth::verify_accounting_request(raw, secret) {
        return Err(DropReason::BadRequestAuthenticator);
    }
    if auth::check_message_authenticator(raw, &[0; 16], secret) == MessageAuthenticatorCheck::Invalid {
        return Err(DropReason::BadMessageAuthenticator);
    }
    Ok(())
}

/// MAB for an Access-Request whose authenticity [`verify_access_request`] established.
fn access_request(policy: &Policy, client: &RadiusClient, raw: &RawPacket<'_>, out: &mut Vec<u8>) -> Outcome {
    let secret = client.secret.as_bytes();
    let packet = Packet::from_raw(raw);
    let mac = station_mac(&packet);
    let decision = if !policy.mac_auth_enabled {
        MabDecision::Reject(RejectReason::MacAuthDisabled)
    } else if packet.has_attribute(attr::EAP_MESSAGE) {
        MabDecision::Reject(RejectReason::EapNotSupported)
    } else {
        match mac {
            None => MabDecision::Reject(RejectReason::NoMacAddress),
            Some(mac) if !credentials_match(&packet, &mac, secret) => MabDecision::Reject(RejectReason::WrongPassword),
            Some(mac) => policy.decide(&mac),
        }
    };
    match (decision, mac) {
        (MabDecision::Accept { vlan, known }, Some(mac)) => {
            let attributes = match vlan {
                Some(vlan) => vec![
                    Attribute::TunnelType { tag: Tag::UNTAGGED, value: TUNNEL_TYPE_VLAN },
                    Attribute::TunnelMediumType { tag: Tag::UNTAGGED, value: TUNNEL_MEDIUM_IEEE_802 },
                    Attribute::TunnelPrivateGroupId { tag: None, value: vlan.to_string() },
                ],
                None => Vec::new(),
            };
            match write_reply(Code::AccessAccept, raw, attributes, secret, out) {
                Ok(()) => Outcome::AccessAccept { mac, vlan, known },
                Err(reason) => Outcome::Drop(reason),
            }
        }
        (decision, mac) => {
            let reason = match decision {
                MabDecision::Reject(reason) => reason,
                MabDecision::Accept { .. } => RejectReason::NoMacAddress,
            };
            match write_reply(Code::AccessReject, raw, Vec::new(), secret, out) {
                Ok(()) => Outcome::AccessReject { mac, reason },
                Err(reason) => Outcome::Drop(reason),
            }
        }
    }
}

fn accounting_event(policy: &Policy, client: &RadiusClient, packet: &Packet) -> Result<Option<AccountingEvent>, DropReason> {
    let mut status = None;
    let mut event = AccountingEvent {
        status: AccountingStatus::Start,
        session_id: String::new(),
        mac: station_mac(packet),
        nas: NasInfo { client: client.name.clone(), ip: None, identifier: None, port: None },
        vlan: None,
        input_octets: 0,
        output_octets: 0,
        session_time: None,
        terminate_cause: None,
    };
    let (mut in_low, mut in_high, mut out_low, mut out_high) = (0u64, 0u64, 0u64, 0u64);
    let mut session_id = None;
    for attribute in &packet.attributes {
        match attribute {
            Attribute::AcctStatusType(value) => status = status.or(Some(*value)),
            Attribute::AcctSessionId(id) => session_id = session_id.or(Some(id.clone())),
            Attribute::AcctInputOctets(v) => in_low = u64::from(*v),
            Attribute::AcctOutputOctets(v) => out_low = u64::from(*v),
            Attribute::AcctInputGigawords(v) => in_high = u64::from(*v),
            Attribute::AcctOutputGigawords(v) => out_high = u64::from(*v),
            Attribute::AcctSessionTime(v) => event.session_time = Some(Duration::from_secs(u64::from(*v))),
            Attribute::AcctTerminateCause(v) => event.terminate_cause = Some(*v),
            Attribute::NasIpAddress(ip) => event.nas.ip = Some(*ip),
            Attribute::NasIdentifier(id) => event.nas.identifier = Some(id.clone()),
            Attribute::NasPort(port) => event.nas.port = Some(*port),
            Attribute::TunnelPrivateGroupId { value, .. } => event.vlan = value.trim().parse().ok(),
            _ => {}
        }
    }
    event.input_octets = (in_high << 32) | in_low;
    event.output_octets = (out_high << 32) | out_low;
    event.status = match status {
        None => return Err(DropReason::AccountingIncomplete),
        Some(AcctStatusType::Start) => AccountingStatus::Start,
        Some(AcctStatusType::InterimUpdate) => AccountingStatus::InterimUpdate,
        Some(AcctStatusType::Stop) => AccountingStatus::Stop,
        Some(AcctStatusType::AccountingOn) => AccountingStatus::AccountingOn,
        Some(AcctStatusType::AccountingOff) => AccountingStatus::AccountingOff,
        Some(AcctStatusType::Other(_)) => return Ok(None),
    };
    let is_session = matches!(event.status, AccountingStatus::Start | AccountingStatus::InterimUpdate | AccountingStatus::Stop);
    match session_id {
        Some(id) => event.session_id = id,
        None if is_session => return Err(DropReason::AccountingIncomplete),
        None => {}
    }
    if event.vlan.is_none() {
        if let Some(MabDecision::Accept { vlan, .. }) = event.mac.map(|mac| policy.decide(&mac)) {
            event.vlan = vlan;
        }
    }
    Ok(Some(event))
}

/// Records an Accounting-Request whose authenticity [`verify_accounting_request`] established.
fn accounting_request(policy: &Policy, client: &RadiusClient, raw: &RawPacket<'_>, out: &mut Vec<u8>) -> Outcome {
    let secret = client.secret.as_bytes();
    let packet = Packet::from_raw(raw);
    let event = match accounting_event(policy, client, &packet) {
        Ok(event) => event,
        Err(reason) => return Outcome::Drop(reason),
    };
    match write_reply(Code::AccountingResponse, raw, Vec::new(), secret, out) {
        Ok(()) => Outcome::Accounting(event),
        Err(reason) => Outcome::Drop(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, MacAuthConfig, RadiusConfig, UnknownMacAction, VlanRuleConfig};
    use crate::duplicate::DuplicateCache;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    // Vectors produced with pyrad 2.6 (`pip install pyrad`), secret "testing123", by
    // `testdata/pyrad/gen_vectors.py` with the dictionary next to it: an AuthPacket id 42 with authenticator
    // 10 11 .. 1f, User-Name = User-Password = "001122334455", Calling-Station-Id
    // "00-11-22-33-44-55", NAS-IP-Address 192.0.2.10, NAS-Port 7 and add_message_authenticator();
    // the replies were built by pyrad's CreateReply()/ReplyPacket() with
    // add_message_authenticator() and, for the Accept, Tunnel-Type = VLAN,
    // Tunnel-Medium-Type = IEEE-802, Tunnel-Private-Group-Id = "20".
    const PYRAD_ACCESS_REQUEST: &str = "012a0065101112131415161718191a1b1c1d1e1f5012df7aaab0b6c56c44ee9bf209e764f0ad010e30303131323233333434353502128abeed763cd657c84ea36f8fb9c9a5b61f1330302d31312d32322d33332d34342d35350406c000020a050600000007";
    const PYRAD_ACCESS_ACCEPT: &str = "022a003651ee4115b3617ae267e4e5406b5c9a255012f74da0260710a282e0b49cd8009f3ffa40060000000d41060000000651043230";
    const PYRAD_ACCESS_REJECT: &str = "032a00264988a9707d6491f6139cb1a577070f355012a6b8dbd710e83c176b92b35c2c908109";
    // pyrad AcctPacket id 7 (Request Authenticator computed by pyrad): Acct-Status-Type Stop,
    // Acct-Session-Id "sess-0001", Calling-Station-Id "00-11-22-33-44-55", NAS-IP-Address
    // 192.0.2.10, Acct-Input-Octets 1000, Acct-Input-Gigawords 2, Acct-Output-Octets 5000,
    // Acct-Session-Time 3600, Acct-Terminate-Cause 1; and its Accounting-Response with
    // Message-Authenticator.
    const PYRAD_ACCOUNTING_REQUEST: &str = "0407005c8e58e3407053d4fa3b2685b5182976bf2806000000022c0b736573732d303030311f1330302d31312d32322d33332d34342d35350406c000020a2a06000003e83406000000022b06000013882e0600000e10310600000001";
    const PYRAD_ACCOUNTING_RESPONSE: &str = "0507002611372e1f69ffe53d9385839d6de288f95012b1c75a8abe100bbbdc049d06d918ea67";
    // pyrad Status-Server id 9, authenticator ab*16, with Message-Authenticator; its Access-Accept.
    const PYRAD_STATUS_SERVER: &str = "0c090026abababababababababababababababab50121e7e1bc6079077271605be669bfe6a1d";
    const PYRAD_STATUS_SERVER_ACCEPT: &str = "020900262cd0a50c4693972ae721685cb5f3bbb65012415cb9125946ee0b5034308f8f591cbe";

    const SECRET: &[u8] = b"testing123";

    fn nas() -> SocketAddr {
        "192.0.2.10:50000".parse().unwrap()
    }

    fn config() -> RadiusConfig {
        RadiusConfig {
            clients: vec![ClientConfig { name: "switch".into(), source: "192.0.2.0/24".into(), secret: "testing123".into() }],
            mac_auth: MacAuthConfig {
                enabled: true,
                allowed: vec!["00:11:22:*".into()],
                default_vlan: Some(10),
                unknown: UnknownMacAction::Reject,
            },
            vlans: vec![VlanRuleConfig { mac: Some("00:11:22:33:*".into()), default: false, vlan: 20 }],
            ..RadiusConfig::default()
        }
    }

    fn policy() -> Policy {
        Policy::from_config(&config()).unwrap()
    }

    struct Request<'a> {
        identifier: u8,
        user_name: Option<&'a str>,
        password: Option<&'a str>,
        calling_station_id: Option<&'a str>,
        message_authenticator: bool,
        extra: Vec<Attribute>,
    }

    impl<'a> Request<'a> {
        fn mab(mac_text: &'a str) -> Self {
            Self {
                identifier: 1,
                user_name: Some(mac_text),
                password: Some(mac_text),
                calling_station_id: Some(mac_text),
                message_authenticator: true,
                extra: Vec::new(),
            }
        }

        fn encode(&self, secret: &[u8]) -> Vec<u8> {
            let authenticator = [self.identifier.wrapping_mul(31); 16];
            let mut attributes = Vec::new();
            if self.message_authenticator {
                attributes.push(Attribute::MessageAuthenticator([0; 16]));
            }
            if let Some(name) = self.user_name {
                attributes.push(Attribute::UserName(name.into()));
            }
            if let Some(password) = self.password {
                let hidden = auth::hide_password(password.as_bytes(), secret, &authenticator).unwrap();
                attributes.push(Attribute::UserPassword(hidden));
            }
            if let Some(id) = self.calling_station_id {
                attributes.push(Attribute::CallingStationId(id.into()));
            }
            attributes.extend(self.extra.iter().cloned());
            let mut bytes = Vec::new();
            Packet { code: Code::AccessRequest, identifier: self.identifier, authenticator, attributes }
                .encode(&mut bytes)
                .unwrap();
            auth::sign_request(&mut bytes, secret).unwrap();
            bytes
        }
    }

    fn handle(server: &mut RadiusServer, policy: &Policy, datagram: &[u8], port: PortKind) -> (Outcome, Vec<u8>) {
        let mut out = Vec::new();
        let outcome = server.handle(policy, nas(), datagram, Instant::now(), port, &mut out);
        (outcome, out)
    }

    fn reply_attributes(reply: &[u8]) -> Vec<Attribute> {
        Packet::decode(reply).unwrap().attributes
    }

    /// Checks what a NAS checks: Response Authenticator and Message-Authenticator, first.
    fn assert_signed_reply(reply: &[u8], request: &[u8]) {
        let request = RawPacket::parse(request).unwrap();
        let reply = RawPacket::parse(reply).unwrap();
        assert!(auth::verify_reply(&reply, &request.authenticator(), SECRET));
        let hmac_authenticator = auth::reply_hmac_authenticator(reply.code(), request.code(), &request.authenticator());
        assert_eq!(auth::check_message_authenticator(&reply, &hmac_authenticator, SECRET), MessageAuthenticatorCheck::Valid);
        assert_eq!(reply.attributes().next().map(|a| a.attr_type), Some(attr::MESSAGE_AUTHENTICATOR));
        assert_eq!(reply.identifier(), request.identifier());
    }

    #[test]
    fn pyrad_access_request_gets_the_reply_pyrad_builds() {
        let mut server = RadiusServer::default();
        let request = hex(PYRAD_ACCESS_REQUEST);
        let (outcome, reply) = handle(&mut server, &policy(), &request, PortKind::Auth);
        assert_eq!(
            outcome,
            Outcome::AccessAccept { mac: MacAddress::new([0, 0x11, 0x22, 0x33, 0x44, 0x55]), vlan: Some(20), known: true }
        );
        assert_eq!(reply, hex(PYRAD_ACCESS_ACCEPT));

        let mut reject_policy = config();
        reject_policy.mac_auth.allowed.clear();
        let (outcome, reply) = handle(&mut RadiusServer::default(), &Policy::from_config(&reject_policy).unwrap(), &request, PortKind::Auth);
        assert!(matches!(outcome, Outcome::AccessReject { reason: RejectReason::UnknownMac, .. }));
        assert_eq!(reply, hex(PYRAD_ACCESS_REJECT));
    }

    #[test]
    fn accept_carries_untagged_vlan_tunnel_attributes_after_message_authenticator() {
        let request = Request::mab("00:11:22:99:00:01").encode(SECRET);
        let (outcome, reply) = handle(&mut RadiusServer::default(), &policy(), &request, PortKind::Auth);
        assert!(matches!(outcome, Outcome::AccessAccept { vlan: Some(10), .. }));
        assert_signed_reply(&reply, &request);
        assert_eq!(
            reply_attributes(&reply)[1..],
            [
                Attribute::TunnelType { tag: Tag::UNTAGGED, value: TUNNEL_TYPE_VLAN },
                Attribute::TunnelMediumType { tag: Tag::UNTAGGED, value: TUNNEL_MEDIUM_IEEE_802 },
                Attribute::TunnelPrivateGroupId { tag: None, value: "10".into() },
            ]
        );
    }

    #[test]
    fn every_mac_format_authenticates_with_mac_or_user_name_as_password() {
        let policy = policy();
        for text in ["00:11:22:33:44:55", "00-11-22-33-44-55", "0011.2233.4455", "001122334455", "00112233445S"] {
            let request = Request::mab(text).encode(SECRET);
            let (outcome, reply) = handle(&mut RadiusServer::default(), &policy, &request, PortKind::Auth);
            if text.ends_with('S') {
                assert!(matches!(outcome, Outcome::AccessReject { reason: RejectReason::NoMacAddress, .. }), "{text}");
            } else {
                assert!(matches!(outcome, Outcome::AccessAccept { vlan: Some(20), .. }), "{text}: {outcome:?}");
            }
            assert_signed_reply(&reply, &request);
        }
        // Upper case, password in another format than the User-Name, MAC only in User-Name.
        for request in [
            Request { password: Some("00:11:22:33:44:55"), ..Request::mab("001122334455") },
            Request { user_name: Some("00-11-22-33-44-55"), password: Some("00-11-22-33-44-55"), ..Request::mab("AA") },
            Request { calling_station_id: None, ..Request::mab("00-11-22-33-44-55") },
            Request { password: None, ..Request::mab("00:11:22:33:44:55") },
            Request { user_name: Some("host/printer"), password: Some("HOST/PRINTER"), ..Request::mab("0011.2233.4455") },
        ] {
            let (outcome, _) = handle(&mut RadiusServer::default(), &policy, &request.encode(SECRET), PortKind::Auth);
            assert!(matches!(outcome, Outcome::AccessAccept { .. }), "{outcome:?}");
        }
    }

    #[test]
    fn wrong_password_unknown_mac_and_eap_are_rejected() {
        let policy = policy();
        let cases = [
            (Request { password: Some("letmein"), ..Request::mab("00:11:22:33:44:55") }, RejectReason::WrongPassword),
            (Request::mab("66:11:22:33:44:55"), RejectReason::UnknownMac),
            (
                Request { extra: vec![Attribute::Other { attr_type: attr::EAP_MESSAGE, value: vec![2, 1, 0, 5, 1] }], ..Request::mab("001122334455") },
                RejectReason::EapNotSupported,
            ),
        ];
        for (request, expected) in cases {
            let bytes = request.encode(SECRET);
            let (outcome, reply) = handle(&mut RadiusServer::default(), &policy, &bytes, PortKind::Auth);
            assert!(matches!(outcome, Outcome::AccessReject { reason, .. } if reason == expected), "{outcome:?}");
            assert_eq!(reply[0], Code::AccessReject.octet());
            assert_signed_reply(&reply, &bytes);
        }
    }

    #[test]
    fn chap_mab_is_checked_against_the_mac() {
        let challenge = vec![0x77; 16];
        let response = |password: &str| -> [u8; 16] {
            use md5::{Digest, Md5};
            Md5::new().chain_update([5]).chain_update(password).chain_update(&challenge).finalize().into()
        };
        for (password, accepted) in [("001122334455", true), ("00:11:22:33:44:55", true), ("00-11-22-33-44-55", true), ("nope", false)] {
            let request = Request {
                password: None,
                extra: vec![
                    Attribute::ChapPassword { ident: 5, response: response(password) },
                    Attribute::ChapChallenge(challenge.clone()),
                ],
                ..Request::mab("001122334455")
            };
            let (outcome, _) = handle(&mut RadiusServer::default(), &policy(), &request.encode(SECRET), PortKind::Auth);
            assert_eq!(matches!(outcome, Outcome::AccessAccept { .. }), accepted, "{password}: {outcome:?}");
        }
    }

    #[test]
    fn blastradius_message_authenticator_rules() {
        let mut server = RadiusServer::default();
        let without = Request { message_authenticator: false, ..Request::mab("001122334455") }.encode(SECRET);
        assert_eq!(handle(&mut server, &policy(), &without, PortKind::Auth).0, Outcome::Drop(DropReason::MissingMessageAuthenticator));
        let wrong_secret = Request::mab("001122334455").encode(b"not-the-secret");
        let (outcome, reply) = handle(&mut server, &policy(), &wrong_secret, PortKind::Auth);
        assert_eq!(outcome, Outcome::Drop(DropReason::BadMessageAuthenticator));
        assert!(reply.is_empty());
        assert_eq!(server.counters().missing_message_authenticator, 1);
        assert_eq!(server.counters().bad_message_authenticator, 1);

        let mut relaxed = config();
        relaxed.require_message_authenticator = false;
        let relaxed = Policy::from_config(&relaxed).unwrap();
        let (outcome, reply) = handle(&mut server, &relaxed, &without, PortKind::Auth);
        assert!(matches!(outcome, Outcome::AccessAccept { .. }));
        assert_signed_reply(&reply, &without);
        // Present but wrong is dropped even when not required.
        assert_eq!(handle(&mut server, &relaxed, &wrong_secret, PortKind::Auth).0, Outcome::Drop(DropReason::BadMessageAuthenticator));
    }

    #[test]
    fn unknown_clients_wrong_ports_and_malformed_datagrams_are_dropped_and_counted() {
        let mut server = RadiusServer::default();
        let request = Request::mab("001122334455").encode(SECRET);
        let mut out = vec![1, 2, 3];
        let stranger: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        assert_eq!(
            server.handle(&policy(), stranger, &request, Instant::now(), PortKind::Auth, &mut out),
            Outcome::Drop(DropReason::UnknownClient)
        );
        assert!(out.is_empty());
        assert_eq!(handle(&mut server, &policy(), &request, PortKind::Acct).0, Outcome::Drop(DropReason::WrongPort(Code::AccessRequest)));
        let accounting = hex(PYRAD_ACCOUNTING_REQUEST);
        assert_eq!(handle(&mut server, &policy(), &accounting, PortKind::Auth).0, Outcome::Drop(DropReason::WrongPort(Code::AccountingRequest)));
        assert_eq!(handle(&mut server, &policy(), &hex(PYRAD_ACCESS_ACCEPT), PortKind::Auth).0, Outcome::Drop(DropReason::NotARequest(Code::AccessAccept)));
        let mut overflow = request.clone();
        overflow[21] = 250; // first attribute claims to run past the packet
        assert!(matches!(handle(&mut server, &policy(), &overflow, PortKind::Auth).0, Outcome::Drop(DropReason::Malformed(_))));
        assert!(matches!(handle(&mut server, &policy(), &request[..30], PortKind::Auth).0, Outcome::Drop(DropReason::Malformed(_))));
        let c = server.counters();
        assert_eq!((c.received, c.unknown_client, c.wrong_port, c.not_a_request, c.malformed), (6, 1, 2, 1, 2));
    }

    #[test]
    fn retransmissions_get_the_identical_reply_without_rerunning_policy() {
        let mut server = RadiusServer::new(DuplicateCache::new(100, Duration::from_secs(30)));
        let request = Request::mab("001122334455").encode(SECRET);
        let (first, first_reply) = handle(&mut server, &policy(), &request, PortKind::Auth);
        assert!(matches!(first, Outcome::AccessAccept { vlan: Some(20), .. }));
        // Policy changes between the two copies: the retransmission still gets the first answer.
        let mut changed = config();
        changed.mac_auth.allowed.clear();
        let (second, second_reply) = handle(&mut server, &Policy::from_config(&changed).unwrap(), &request, PortKind::Auth);
        assert_eq!(second, Outcome::Retransmission);
        assert_eq!(second_reply, first_reply);
        // A new request (new authenticator) is evaluated afresh.
        let fresh = Request { identifier: 2, ..Request::mab("001122334455") }.encode(SECRET);
        let (third, _) = handle(&mut server, &Policy::from_config(&changed).unwrap(), &fresh, PortKind::Auth);
        assert!(matches!(third, Outcome::AccessReject { .. }));
        assert_eq!(server.counters().retransmissions, 1);
        assert_eq!(server.cached_replies(), 2);
        server.expire(Instant::now() + Duration::from_secs(31));
        assert_eq!(server.cached_replies(), 0);
    }

    #[test]
    fn proxy_state_is_copied_in_order() {
        let request = Request {
            extra: vec![Attribute::ProxyState(b"one".to_vec()), Attribute::ProxyState(b"two".to_vec())],
            ..Request::mab("001122334455")
        }
        .encode(SECRET);
        let (_, reply) = handle(&mut RadiusServer::default(), &policy(), &request, PortKind::Auth);
        assert_signed_reply(&reply, &request);
        let proxy_states: Vec<Attribute> = reply_attributes(&reply).into_iter().filter(|a| a.attr_type() == attr::PROXY_STATE).collect();
        assert_eq!(proxy_states, vec![Attribute::ProxyState(b"one".to_vec()), Attribute::ProxyState(b"two".to_vec())]);
    }

    #[test]
    fn status_server_is_answered_on_both_ports_only_with_message_authenticator() {
        let mut server = RadiusServer::default();
        let request = hex(PYRAD_STATUS_SERVER);
        let (outcome, reply) = handle(&mut server, &policy(), &request, PortKind::Auth);
        assert_eq!(outcome, Outcome::StatusServer);
        assert_eq!(reply, hex(PYRAD_STATUS_SERVER_ACCEPT));
        let (outcome, reply) = handle(&mut server, &policy(), &request, PortKind::Acct);
        assert_eq!(outcome, Outcome::StatusServer);
        assert_eq!(reply[0], Code::AccountingResponse.octet());
        assert_signed_reply(&reply, &request);
        let bare = hex("0c0a0014abababababababababababababababab");
        assert_eq!(handle(&mut server, &policy(), &bare, PortKind::Auth).0, Outcome::Drop(DropReason::MissingMessageAuthenticator));
        assert_eq!(server.counters().status_server, 2);
    }

    #[test]
    fn pyrad_accounting_stop_is_verified_answered_and_reported() {
        let mut server = RadiusServer::default();
        let request = hex(PYRAD_ACCOUNTING_REQUEST);
        let (outcome, reply) = handle(&mut server, &policy(), &request, PortKind::Acct);
        assert_eq!(reply, hex(PYRAD_ACCOUNTING_RESPONSE));
        let Outcome::Accounting(Some(event)) = outcome else { panic!("expected an event: {outcome:?}") };
        assert_eq!(
            event,
            AccountingEvent {
                status: AccountingStatus::Stop,
                session_id: "sess-0001".into(),
                mac: Some(MacAddress::new([0, 0x11, 0x22, 0x33, 0x44, 0x55])),
                nas: NasInfo { client: "switch".into(), ip: Some(Ipv4Addr::new(192, 0, 2, 10)), identifier: None, port: None },
                vlan: Some(20),
                input_octets: (2 << 32) + 1000,
                output_octets: 5000,
                session_time: Some(Duration::from_secs(3600)),
                terminate_cause: Some(1),
            }
        );
        let mut forged = request.clone();
        forged[4] ^= 1;
        assert_eq!(handle(&mut server, &policy(), &forged, PortKind::Acct).0, Outcome::Drop(DropReason::BadRequestAuthenticator));
    }

    fn accounting(attributes: Vec<Attribute>) -> Vec<u8> {
        let mut bytes = Vec::new();
        Packet { code: Code::AccountingRequest, identifier: 3, authenticator: [0; 16], attributes }.encode(&mut bytes).unwrap();
        auth::sign_accounting_request(&mut bytes, SECRET).unwrap();
        bytes
    }

    #[test]
    fn accounting_records_that_cannot_be_recorded_are_not_acknowledged() {
        let mut server = RadiusServer::default();
        let no_session = accounting(vec![Attribute::AcctStatusType(AcctStatusType::Start)]);
        assert_eq!(handle(&mut server, &policy(), &no_session, PortKind::Acct).0, Outcome::Drop(DropReason::AccountingIncomplete));
        let no_status = accounting(vec![Attribute::AcctSessionId("x".into())]);
        assert_eq!(handle(&mut server, &policy(), &no_status, PortKind::Acct).0, Outcome::Drop(DropReason::AccountingIncomplete));
        // Accounting-On needs no session id; unknown status types are acknowledged silently.
        let on = accounting(vec![Attribute::AcctStatusType(AcctStatusType::AccountingOn), Attribute::NasIdentifier("sw1".into())]);
        let (outcome, reply) = handle(&mut server, &policy(), &on, PortKind::Acct);
        assert!(matches!(outcome, Outcome::Accounting(Some(AccountingEvent { status: AccountingStatus::AccountingOn, .. }))));
        assert_signed_reply(&reply, &on);
        let failed = accounting(vec![Attribute::AcctStatusType(AcctStatusType::Other(15)), Attribute::AcctSessionId("y".into())]);
        assert_eq!(handle(&mut server, &policy(), &failed, PortKind::Acct).0, Outcome::Accounting(None));
        // Message-Authenticator in accounting is optional but verified when present.
        let with_ma = accounting(vec![
            Attribute::MessageAuthenticator([0; 16]),
            Attribute::AcctStatusType(AcctStatusType::Start),
            Attribute::AcctSessionId("z".into()),
        ]);
        assert!(matches!(handle(&mut server, &policy(), &with_ma, PortKind::Acct).0, Outcome::Accounting(Some(_))));
        // Flip a byte of the HMAC and re-sign only the Request Authenticator, by hand.
        let mut corrupted = with_ma.clone();
        corrupted[22] ^= 1;
        let digest = {
            use md5::{Digest, Md5};
            let mut zeroed = corrupted.clone();
            zeroed[4..20].fill(0);
            let d: [u8; 16] = Md5::new().chain_update(&zeroed).chain_update(SECRET).finalize().into();
            d
        };
        corrupted[4..20].copy_from_slice(&digest);
        assert_eq!(handle(&mut server, &policy(), &corrupted, PortKind::Acct).0, Outcome::Drop(DropReason::BadMessageAuthenticator));
    }

    #[test]
    fn mutated_datagrams_never_panic_the_handler() {
        let mut server = RadiusServer::default();
        let policy = policy();
        let seeds = [
            hex(PYRAD_ACCESS_REQUEST),
            hex(PYRAD_ACCOUNTING_REQUEST),
            hex(PYRAD_STATUS_SERVER),
            Request::mab("001122334455").encode(SECRET),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for round in 0..4000 {
            let mut datagram = seeds[round % seeds.len()].clone();
            for _ in 0..=(next() % 4) {
                let index = (next() as usize) % datagram.len();
                match next() % 3 {
                    0 => datagram[index] = next() as u8,
                    1 => datagram.truncate(index.max(1)),
                    _ => datagram.insert(index, next() as u8),
                }
            }
            let port = if next() % 2 == 0 { PortKind::Auth } else { PortKind::Acct };
            let outcome = server.handle(&policy, nas(), &datagram, Instant::now(), port, &mut out);
            if !matches!(outcome, Outcome::Drop(_)) {
                assert!(RawPacket::parse(&out).is_ok());
            }
        }
        assert_eq!(server.counters().received, 4000);
    }
}
