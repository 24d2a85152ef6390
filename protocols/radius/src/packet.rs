//! RADIUS on the wire: RFC 2865 (access), RFC 2866 (accounting), RFC 2868 (tunnel attributes),
//! RFC 3579 (Message-Authenticator) and RFC 5997 (Status-Server) framing.
//!
//! This module owns the byte layout: [`RawPacket`] checks the framing rules once (length
//! 20..=4096, Length field not beyond the datagram, attributes exactly filling the packet) and
//! lets callers walk attributes without allocating; [`Packet`] is the typed form with
//! [`Attribute`] values typed where shardgate uses them and kept raw otherwise, and encodes
//! back to bytes. It does not compute authenticators or hide passwords ([`crate::auth`] does)
//! and makes no policy decisions.

use std::net::Ipv4Addr;

use crate::auth::HiddenPassword;
use crate::RadiusError;

/// Octets in the fixed header: Code, Identifier, Length, Authenticator.
pub const HEADER_LEN: usize = 20;
/// The largest packet RFC 2865 §3 allows.
pub const MAX_PACKET_LEN: usize = 4096;
/// The largest value one attribute can carry (255 minus the type and length octets).
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 253;

/// Attribute type numbers from the IANA RADIUS registry that this crate knows by name.
pub mod attr {
    /// User-Name (RFC 2865 §5.1).
    pub const USER_NAME: u8 = 1;
    /// User-Password (RFC 2865 §5.2).
    pub const USER_PASSWORD: u8 = 2;
    /// CHAP-Password (RFC 2865 §5.3).
    pub const CHAP_PASSWORD: u8 = 3;
    /// NAS-IP-Address (RFC 2865 §5.4).
    pub const NAS_IP_ADDRESS: u8 = 4;
    /// NAS-Port (RFC 2865 §5.5).
    pub const NAS_PORT: u8 = 5;
    /// Reply-Message (RFC 2865 §5.18).
    pub const REPLY_MESSAGE: u8 = 18;
    /// State (RFC 2865 §5.24).
    pub const STATE: u8 = 24;
    /// Class (RFC 2865 §5.25).
    pub const CLASS: u8 = 25;
    /// Vendor-Specific (RFC 2865 §5.26).
    pub const VENDOR_SPECIFIC: u8 = 26;
    /// Session-Timeout (RFC 2865 §5.27).
    pub const SESSION_TIMEOUT: u8 = 27;
    /// Called-Station-Id (RFC 2865 §5.30).
    pub const CALLED_STATION_ID: u8 = 30;
    /// Calling-Station-Id (RFC 2865 §5.31).
    pub const CALLING_STATION_ID: u8 = 31;
    /// NAS-Identifier (RFC 2865 §5.32).
    pub const NAS_IDENTIFIER: u8 = 32;
    /// Proxy-State (RFC 2865 §5.33).
    pub const PROXY_STATE: u8 = 33;
    /// Acct-Status-Type (RFC 2866 §5.1).
    pub const ACCT_STATUS_TYPE: u8 = 40;
    /// Acct-Input-Octets (RFC 2866 §5.3).
    pub const ACCT_INPUT_OCTETS: u8 = 42;
    /// Acct-Output-Octets (RFC 2866 §5.4).
    pub const ACCT_OUTPUT_OCTETS: u8 = 43;
    /// Acct-Session-Id (RFC 2866 §5.5).
    pub const ACCT_SESSION_ID: u8 = 44;
    /// Acct-Session-Time (RFC 2866 §5.7).
    pub const ACCT_SESSION_TIME: u8 = 46;
    /// Acct-Terminate-Cause (RFC 2866 §5.10).
    pub const ACCT_TERMINATE_CAUSE: u8 = 49;
    /// Acct-Input-Gigawords (RFC 2869 §5.1).
    pub const ACCT_INPUT_GIGAWORDS: u8 = 52;
    /// Acct-Output-Gigawords (RFC 2869 §5.2).
    pub const ACCT_OUTPUT_GIGAWORDS: u8 = 53;
    /// CHAP-Challenge (RFC 2865 §5.40).
    pub const CHAP_CHALLENGE: u8 = 60;
    /// Tunnel-Type (RFC 2868 §3.1).
    pub const TUNNEL_TYPE: u8 = 64;
    /// Tunnel-Medium-Type (RFC 2868 §3.2).
    pub const TUNNEL_MEDIUM_TYPE: u8 = 65;
    /// EAP-Message (RFC 3579 §3.1).
    pub const EAP_MESSAGE: u8 = 79;
    /// Message-Authenticator (RFC 3579 §3.2).
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
    /// Tunnel-Private-Group-ID (RFC 2868 §3.6).
    pub const TUNNEL_PRIVATE_GROUP_ID: u8 = 81;
}

/// Tunnel-Type value for VLANs (RFC 3580 §3.31).
pub const TUNNEL_TYPE_VLAN: u32 = 13;
/// Tunnel-Medium-Type value for IEEE-802 (RFC 2868 §3.2, "802 (includes all 802 media plus
/// Ethernet canonical format)").
pub const TUNNEL_MEDIUM_IEEE_802: u32 = 6;

/// The packet types this crate understands (RFC 2865 §3, RFC 2866 §3, RFC 5997).
/// Any other Code is refused at decode time, as RFC 2865 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 1
    AccessRequest,
    /// 2
    AccessAccept,
    /// 3
    AccessReject,
    /// 4
    AccountingRequest,
    /// 5
    AccountingResponse,
    /// 11
    AccessChallenge,
    /// 12
    StatusServer,
    /// 13
    StatusClient,
}

impl Code {
    /// The Code octet.
    pub const fn octet(self) -> u8 {
        match self {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::StatusClient => 13,
        }
    }

    /// The Code for an octet, if known.
    pub const fn from_octet(octet: u8) -> Option<Self> {
        Some(match octet {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            11 => Code::AccessChallenge,
            12 => Code::StatusServer,
            13 => Code::StatusClient,
            _ => return None,
        })
    }
}

/// An RFC 2868 tag, 0x00..=0x1F, grouping tunnel attributes that describe the same tunnel.
/// 0 means "no grouping".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tag(u8);

impl Tag {
    /// The "unused" tag (0x00), what FreeRADIUS sends for an untagged `Tunnel-Type`.
    pub const UNTAGGED: Tag = Tag(0);

    /// A tag, if `value` is in 0x00..=0x1F.
    pub fn new(value: u8) -> Result<Self, RadiusError> {
        if value <= 0x1f { Ok(Tag(value)) } else { Err(RadiusError::TagOutOfRange { tag: value }) }
    }

    /// The tag octet.
    pub const fn value(self) -> u8 {
        self.0
    }
}

/// Acct-Status-Type values (RFC 2866 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcctStatusType {
    /// 1: a session starts.
    Start,
    /// 2: a session ends.
    Stop,
    /// 3: periodic update of a running session.
    InterimUpdate,
    /// 7: the NAS (re)started; all its previous sessions are gone.
    AccountingOn,
    /// 8: the NAS is shutting down; all its sessions end.
    AccountingOff,
    /// Any other value, kept as received.
    Other(u32),
}

impl AcctStatusType {
    /// The wire value.
    pub const fn value(self) -> u32 {
        match self {
            AcctStatusType::Start => 1,
            AcctStatusType::Stop => 2,
            AcctStatusType::InterimUpdate => 3,
            AcctStatusType::AccountingOn => 7,
            AcctStatusType::AccountingOff => 8,
            AcctStatusType::Other(value) => value,
        }
    }

    /// The type for a wire value.
    pub const fn from_value(value: u32) -> Self {
        match value {
            1 => AcctStatusType::Start,
            2 => AcctStatusType::Stop,
            3 => AcctStatusType::InterimUpdate,
            7 => AcctStatusType::AccountingOn,
            8 => AcctStatusType::AccountingOff,
            other => AcctStatusType::Other(other),
        }
    }
}

/// One attribute. Attributes shardgate uses are typed; anything else — unknown types, and
/// known types whose value is malformed (RFC 6929 §2.8 "invalid attributes") — is kept raw
/// in [`Attribute::Other`] and re-encoded unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// User-Name (1).
    UserName(String),
    /// User-Password (2), still hidden with the shared secret.
    UserPassword(HiddenPassword),
    /// CHAP-Password (3): CHAP identifier and the 16-octet response.
    ChapPassword {
        /// CHAP Ident octet.
        ident: u8,
        /// MD5(ident ‖ password ‖ challenge).
        response: [u8; 16],
    },
    /// NAS-IP-Address (4).
    NasIpAddress(Ipv4Addr),
    /// NAS-Port (5).
    NasPort(u32),
    /// Reply-Message (18).
    ReplyMessage(String),
    /// State (24).
    State(Vec<u8>),
    /// Class (25).
    Class(Vec<u8>),
    /// Vendor-Specific (26), passed through: the vendor id and the vendor's own octets.
    VendorSpecific {
        /// SMI network management private enterprise code.
        vendor_id: u32,
        /// Vendor data, not interpreted.
        data: Vec<u8>,
    },
    /// Session-Timeout (27), seconds.
    SessionTimeout(u32),
    /// Called-Station-Id (30).
    CalledStationId(String),
    /// Calling-Station-Id (31): the client's MAC for MAB.
    CallingStationId(String),
    /// NAS-Identifier (32).
    NasIdentifier(String),
    /// Proxy-State (33), copied verbatim into replies.
    ProxyState(Vec<u8>),
    /// Acct-Status-Type (40).
    AcctStatusType(AcctStatusType),
    /// Acct-Input-Octets (42), low 32 bits.
    AcctInputOctets(u32),
    /// Acct-Output-Octets (43), low 32 bits.
    AcctOutputOctets(u32),
    /// Acct-Session-Id (44).
    AcctSessionId(String),
    /// Acct-Session-Time (46), seconds.
    AcctSessionTime(u32),
    /// Acct-Terminate-Cause (49).
    AcctTerminateCause(u32),
    /// Acct-Input-Gigawords (52): times Acct-Input-Octets wrapped past 2^32.
    AcctInputGigawords(u32),
    /// Acct-Output-Gigawords (53): times Acct-Output-Octets wrapped past 2^32.
    AcctOutputGigawords(u32),
    /// CHAP-Challenge (60).
    ChapChallenge(Vec<u8>),
    /// Tunnel-Type (64): a tag and a 24-bit value ([`TUNNEL_TYPE_VLAN`]).
    TunnelType {
        /// Tag grouping tunnel attributes.
        tag: Tag,
        /// 24-bit tunnel type.
        value: u32,
    },
    /// Tunnel-Medium-Type (65): a tag and a 24-bit value ([`TUNNEL_MEDIUM_IEEE_802`]).
    TunnelMediumType {
        /// Tag grouping tunnel attributes.
        tag: Tag,
        /// 24-bit medium type.
        value: u32,
    },
    /// Message-Authenticator (80): HMAC-MD5 over the packet (RFC 3579 §3.2).
    MessageAuthenticator([u8; 16]),
    /// Tunnel-Private-Group-ID (81): for VLAN assignment, the VLAN id as decimal text.
    /// The tag is optional on the wire (RFC 2868 §3.6): a first octet 0x00..=0x1F is a tag.
    TunnelPrivateGroupId {
        /// Tag, if the attribute carried one.
        tag: Option<Tag>,
        /// The group id.
        value: String,
    },
    /// Any attribute not typed above, or a typed one whose value was malformed.
    Other {
        /// Attribute type.
        attr_type: u8,
        /// Value octets as received.
        value: Vec<u8>,
    },
}

fn be_u32(value: &[u8]) -> Option<u32> {
    let octets: [u8; 4] = value.try_into().ok()?;
    Some(u32::from_be_bytes(octets))
}

fn text(value: &[u8]) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    std::str::from_utf8(value).ok().map(str::to_owned)
}

fn tunnel_integer(value: &[u8]) -> Option<(Tag, u32)> {
    let [tag, a, b, c]: [u8; 4] = value.try_into().ok()?;
    let tag = Tag::new(tag).ok()?;
    Some((tag, u32::from_be_bytes([0, a, b, c])))
}

fn tunnel_string(value: &[u8]) -> Option<(Option<Tag>, String)> {
    match value {
        [first, rest @ ..] if *first <= 0x1f && !rest.is_empty() => {
            Some((Some(Tag(*first)), std::str::from_utf8(rest).ok()?.to_owned()))
        }
        _ => Some((None, text(value)?)),
    }
}

impl Attribute {
    /// Types one attribute from its type octet and value; malformed values become
    /// [`Attribute::Other`].
    pub fn from_wire(attr_type: u8, value: &[u8]) -> Attribute {
        Self::typed(attr_type, value)
            .unwrap_or_else(|| Attribute::Other { attr_type, value: value.to_vec() })
    }

    fn typed(attr_type: u8, value: &[u8]) -> Option<Attribute> {
        use attr::*;
        Some(match attr_type {
            USER_NAME => Attribute::UserName(text(value)?),
            USER_PASSWORD => Attribute::UserPassword(HiddenPassword::from_wire(value)?),
            CHAP_PASSWORD => {
                let (&ident, response) = value.split_first()?;
                Attribute::ChapPassword { ident, response: response.try_into().ok()? }
            }
            NAS_IP_ADDRESS => Attribute::NasIpAddress(Ipv4Addr::from(be_u32(value)?)),
            NAS_PORT => Attribute::NasPort(be_u32(value)?),
            REPLY_MESSAGE => Attribute::ReplyMessage(text(value)?),
            STATE if !value.is_empty() => Attribute::State(value.to_vec()),
            CLASS if !value.is_empty() => Attribute::Class(value.to_vec()),
            VENDOR_SPECIFIC if value.len() >= 5 => Attribute::VendorSpecific {
                vendor_id: be_u32(value.get(..4)?)?,
                data: value.get(4..)?.to_vec(),
            },
            SESSION_TIMEOUT => Attribute::SessionTimeout(be_u32(value)?),
            CALLED_STATION_ID => Attribute::CalledStationId(text(value)?),
            CALLING_STATION_ID => Attribute::CallingStationId(text(value)?),
            NAS_IDENTIFIER => Attribute::NasIdentifier(text(value)?),
            PROXY_STATE if !value.is_empty() => Attribute::ProxyState(value.to_vec()),
            ACCT_STATUS_TYPE => Attribute::AcctStatusType(AcctStatusType::from_value(be_u32(value)?)),
            ACCT_INPUT_OCTETS => Attribute::AcctInputOctets(be_u32(value)?),
            ACCT_OUTPUT_OCTETS => Attribute::AcctOutputOctets(be_u32(value)?),
            ACCT_SESSION_ID => Attribute::AcctSessionId(text(value)?),
            ACCT_SESSION_TIME => Attribute::AcctSessionTime(be_u32(value)?),
            ACCT_TERMINATE_CAUSE => Attribute::AcctTerminateCause(be_u32(value)?),
            ACCT_INPUT_GIGAWORDS => Attribute::AcctInputGigawords(be_u32(value)?),
            ACCT_OUTPUT_GIGAWORDS => Attribute::AcctOutputGigawords(be_u32(value)?),
            CHAP_CHALLENGE if !value.is_empty() => Attribute::ChapChallenge(value.to_vec()),
            TUNNEL_TYPE => {
                let (tag, value) = tunnel_integer(value)?;
                Attribute::TunnelType { tag, value }
            }
            TUNNEL_MEDIUM_TYPE => {
                let (tag, value) = tunnel_integer(value)?;
                Attribute::TunnelMediumType { tag, value }
            }
            MESSAGE_AUTHENTICATOR => Attribute::MessageAuthenticator(value.try_into().ok()?),
            TUNNEL_PRIVATE_GROUP_ID => {
                let (tag, value) = tunnel_string(value)?;
                Attribute::TunnelPrivateGroupId { tag, value }
            }
            _ => return None,
        })
    }

    /// The attribute type octet.
    pub fn attr_type(&self) -> u8 {
        use attr::*;
        match self {
            Attribute::UserName(_) => USER_NAME,
            Attribute::UserPassword(_) => USER_PASSWORD,
            Attribute::ChapPassword { .. } => CHAP_PASSWORD,
            Attribute::NasIpAddress(_) => NAS_IP_ADDRESS,
            Attribute::NasPort(_) => NAS_PORT,
            Attribute::ReplyMessage(_) => REPLY_MESSAGE,
            Attribute::State(_) => STATE,
            Attribute::Class(_) => CLASS,
            Attribute::VendorSpecific { .. } => VENDOR_SPECIFIC,
            Attribute::SessionTimeout(_) => SESSION_TIMEOUT,
            Attribute::CalledStationId(_) => CALLED_STATION_ID,
            Attribute::CallingStationId(_) => CALLING_STATION_ID,
            Attribute::NasIdentifier(_) => NAS_IDENTIFIER,
            Attribute::ProxyState(_) => PROXY_STATE,
            Attribute::AcctStatusType(_) => ACCT_STATUS_TYPE,
            Attribute::AcctInputOctets(_) => ACCT_INPUT_OCTETS,
            Attribute::AcctOutputOctets(_) => ACCT_OUTPUT_OCTETS,
            Attribute::AcctSessionId(_) => ACCT_SESSION_ID,
            Attribute::AcctSessionTime(_) => ACCT_SESSION_TIME,
            Attribute::AcctTerminateCause(_) => ACCT_TERMINATE_CAUSE,
            Attribute::AcctInputGigawords(_) => ACCT_INPUT_GIGAWORDS,
            Attribute::AcctOutputGigawords(_) => ACCT_OUTPUT_GIGAWORDS,
            Attribute::ChapChallenge(_) => CHAP_CHALLENGE,
            Attribute::TunnelType { .. } => TUNNEL_TYPE,
            Attribute::TunnelMediumType { .. } => TUNNEL_MEDIUM_TYPE,
            Attribute::MessageAuthenticator(_) => MESSAGE_AUTHENTICATOR,
            Attribute::TunnelPrivateGroupId { .. } => TUNNEL_PRIVATE_GROUP_ID,
            Attribute::Other { attr_type, .. } => *attr_type,
        }
    }

    /// Appends type, length and value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RadiusError> {
        let attr_type = self.attr_type();
        let start = out.len();
        out.push(attr_type);
        out.push(0);
        match self {
            Attribute::UserName(s)
            | Attribute::ReplyMessage(s)
            | Attribute::CalledStationId(s)
            | Attribute::CallingStationId(s)
            | Attribute::NasIdentifier(s)
            | Attribute::AcctSessionId(s) => out.extend_from_slice(s.as_bytes()),
            Attribute::UserPassword(hidden) => out.extend_from_slice(hidden.as_bytes()),
            Attribute::ChapPassword { ident, response } => {
                out.push(*ident);
                out.extend_from_slice(response);
            }
            Attribute::NasIpAddress(ip) => out.extend_from_slice(&ip.octets()),
            Attribute::NasPort(v)
            | Attribute::SessionTimeout(v)
            | Attribute::AcctInputOctets(v)
            | Attribute::AcctOutputOctets(v)
            | Attribute::AcctSessionTime(v)
            | Attribute::AcctTerminateCause(v)
            | Attribute::AcctInputGigawords(v)
            | Attribute::AcctOutputGigawords(v) => out.extend_from_slice(&v.to_be_bytes()),
            Attribute::AcctStatusType(status) => out.extend_from_slice(&status.value().to_be_bytes()),
            Attribute::State(bytes)
            | Attribute::Class(bytes)
            | Attribute::ProxyState(bytes)
            | Attribute::ChapChallenge(bytes) => out.extend_from_slice(bytes),
            Attribute::VendorSpecific { vendor_id, data } => {
                out.extend_from_slice(&vendor_id.to_be_bytes());
                out.extend_from_slice(data);
            }
            Attribute::TunnelType { tag, value } | Attribute::TunnelMediumType { tag, value } => {
                if *value > 0x00ff_ffff {
                    out.truncate(start);
                    return Err(RadiusError::TunnelValueTooLarge { value: *value });
                }
                let [_, a, b, c] = value.to_be_bytes();
                out.extend_from_slice(&[tag.value(), a, b, c]);
            }
            Attribute::MessageAuthenticator(mac) => out.extend_from_slice(mac),
            Attribute::TunnelPrivateGroupId { tag, value } => {
                if let Some(tag) = tag {
                    out.push(tag.value());
                }
                out.extend_from_slice(value.as_bytes());
            }
            Attribute::Other { value, .. } => out.extend_from_slice(value),
        }
        let value_len = out.len() - start - 2;
        if value_len > MAX_ATTRIBUTE_VALUE_LEN {
            out.truncate(start);
            return Err(RadiusError::AttributeValueTooLong { attr_type, len: value_len });
        }
        // value_len <= 253, so the length octet fits.
        out[start + 1] = (value_len + 2) as u8;
        Ok(())
    }
}

/// A datagram whose framing has been checked: it is the Length-field prefix of the datagram
/// (trailing padding dropped, RFC 2865 §3), 20..=4096 octets, with a known Code, and its
/// attributes exactly fill it. Walking its attributes cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPacket<'a> {
    bytes: &'a [u8],
    code: Code,
}

impl<'a> RawPacket<'a> {
    /// Checks the framing of `datagram`.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RadiusError> {
        let header: &[u8; HEADER_LEN] = datagram
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(RadiusError::DatagramTooShort { len: datagram.len() })?;
        let length = u16::from_be_bytes([header[2], header[3]]);
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&usize::from(length)) {
            return Err(RadiusError::LengthOutOfRange { length });
        }
        let bytes = datagram
            .get(..usize::from(length))
            .ok_or(RadiusError::LengthExceedsDatagram { length, datagram: datagram.len() })?;
        let code = Code::from_octet(header[0]).ok_or(RadiusError::UnknownCode { code: header[0] })?;
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            let (attr_type, attr_len) = match bytes.get(offset..offset + 2) {
                Some(&[t, l]) => (t, l),
                _ => return Err(RadiusError::AttributeHeaderTruncated { offset }),
            };
            let problem = if attr_len < 2 {
                Some("is below 2")
            } else if offset + usize::from(attr_len) > bytes.len() {
                Some("overflows the packet")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(RadiusError::AttributeLengthInvalid { attr_type, offset, length: attr_len, problem });
            }
            offset += usize::from(attr_len);
        }
        Ok(Self { bytes, code })
    }

    /// The packet octets (without any trailing padding the datagram had).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The Code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The Identifier octet.
    pub fn identifier(&self) -> u8 {
        self.bytes[1]
    }

    /// The 16-octet Authenticator field.
    pub fn authenticator(&self) -> [u8; 16] {
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&self.bytes[4..HEADER_LEN]);
        authenticator
    }

    /// The attributes, in order, as (type, value, offset of the attribute in the packet).
    pub fn attributes(&self) -> RawAttributes<'a> {
        RawAttributes { bytes: self.bytes, offset: HEADER_LEN }
    }
}

/// Iterator over the attributes of a [`RawPacket`].
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    bytes: &'a [u8],
    offset: usize,
}

/// One attribute as it sits in the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub attr_type: u8,
    /// Value octets.
    pub value: &'a [u8],
    /// Offset of the attribute's type octet from the start of the packet.
    pub offset: usize,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offset;
        let &[attr_type, len] = self.bytes.get(offset..offset + 2)? else { return None };
        let value = self.bytes.get(offset + 2..offset + usize::from(len))?;
        self.offset = offset + usize::from(len).max(2);
        Some(RawAttribute { attr_type, value, offset })
    }
}

/// A decoded packet: header fields and typed attributes in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Packet type.
    pub code: Code,
    /// Matches requests and replies.
    pub identifier: u8,
    /// Request or Response Authenticator, as on the wire.
    pub authenticator: [u8; 16],
    /// Attributes in wire order.
    pub attributes: Vec<Attribute>,
}

impl Packet {
    /// Decodes a datagram: framing checks as in [`RawPacket::parse`], then typed attributes.
    pub fn decode(datagram: &[u8]) -> Result<Self, RadiusError> {
        RawPacket::parse(datagram).map(|raw| Self::from_raw(&raw))
    }

    /// Types the attributes of an already framed packet.
    pub fn from_raw(raw: &RawPacket<'_>) -> Self {
        Self {
            code: raw.code(),
            identifier: raw.identifier(),
            authenticator: raw.authenticator(),
            attributes: raw.attributes().map(|a| Attribute::from_wire(a.attr_type, a.value)).collect(),
        }
    }

    /// Replaces the contents of `out` with the encoded packet. Authenticators are written as
    /// they are in `self`; use [`crate::auth`]'s `sign_*` functions to compute them.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RadiusError> {
        out.clear();
        out.push(self.code.octet());
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for attribute in &self.attributes {
            attribute.encode(out)?;
        }
        if out.len() > MAX_PACKET_LEN {
            let len = out.len();
            out.clear();
            return Err(RadiusError::PacketTooLong { len });
        }
        let length = (out.len() as u16).to_be_bytes();
        out[2..4].copy_from_slice(&length);
        Ok(())
    }

    /// The first attribute for which `select` returns a value.
    pub fn find<'a, T>(&'a self, select: impl FnMut(&'a Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(select)
    }

    /// User-Name, if present and valid UTF-8.
    pub fn user_name(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::UserName(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Calling-Station-Id, if present and valid UTF-8.
    pub fn calling_station_id(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::CallingStationId(id) => Some(id.as_str()),
            _ => None,
        })
    }

    /// Whether any attribute of `attr_type` is present, typed or raw.
    pub fn has_attribute(&self, attr_type: u8) -> bool {
        self.attributes.iter().any(|a| a.attr_type() == attr_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(code: u8, length: u16) -> Vec<u8> {
        let mut bytes = vec![code, 7];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&[0x11; 16]);
        bytes
    }

    #[test]
    fn length_must_be_within_20_to_4096_and_not_beyond_the_datagram() {
        assert_eq!(RawPacket::parse(&[1; 19]), Err(RadiusError::DatagramTooShort { len: 19 }));
        assert_eq!(RawPacket::parse(&header(1, 19)), Err(RadiusError::LengthOutOfRange { length: 19 }));
        let mut big = header(1, 4097);
        big.resize(4097, 0);
        assert_eq!(RawPacket::parse(&big), Err(RadiusError::LengthOutOfRange { length: 4097 }));
        assert_eq!(
            RawPacket::parse(&header(1, 26)),
            Err(RadiusError::LengthExceedsDatagram { length: 26, datagram: 20 })
        );
    }

    #[test]
    fn octets_beyond_the_length_field_are_padding_and_ignored() {
        let mut bytes = header(1, 20);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        let raw = RawPacket::parse(&bytes).unwrap();
        assert_eq!(raw.as_bytes().len(), 20);
        assert_eq!(raw.attributes().count(), 0);
    }

    #[test]
    fn attributes_must_exactly_fill_the_packet() {
        let mut bytes = header(1, 23);
        bytes.extend_from_slice(&[1, 3, b'a']);
        assert!(RawPacket::parse(&bytes).is_ok());

        let mut overflow = header(1, 23);
        overflow.extend_from_slice(&[1, 4, b'a']);
        assert!(matches!(
            RawPacket::parse(&overflow),
            Err(RadiusError::AttributeLengthInvalid { attr_type: 1, offset: 20, length: 4, .. })
        ));

        let mut zero = header(1, 22);
        zero.extend_from_slice(&[1, 0]);
        assert!(matches!(RawPacket::parse(&zero), Err(RadiusError::AttributeLengthInvalid { length: 0, .. })));

        let mut dangling = header(1, 21);
        dangling.push(1);
        assert_eq!(RawPacket::parse(&dangling), Err(RadiusError::AttributeHeaderTruncated { offset: 20 }));
    }

    #[test]
    fn unknown_codes_are_refused() {
        assert_eq!(RawPacket::parse(&header(99, 20)), Err(RadiusError::UnknownCode { code: 99 }));
    }

    #[test]
    fn tunnel_attributes_carry_tags_per_rfc_2868() {
        // Tunnel-Type:1 = VLAN, Tunnel-Medium-Type:1 = IEEE-802, Tunnel-Private-Group-Id:1 = "100"
        let tagged = [64, 6, 1, 0, 0, 13, 65, 6, 1, 0, 0, 6, 81, 6, 1, b'1', b'0', b'0'];
        let mut bytes = header(2, (20 + tagged.len()) as u16);
        bytes.extend_from_slice(&tagged);
        let packet = Packet::decode(&bytes).unwrap();
        let tag1 = Tag::new(1).unwrap();
        assert_eq!(
            packet.attributes,
            vec![
                Attribute::TunnelType { tag: tag1, value: TUNNEL_TYPE_VLAN },
                Attribute::TunnelMediumType { tag: tag1, value: TUNNEL_MEDIUM_IEEE_802 },
                Attribute::TunnelPrivateGroupId { tag: Some(tag1), value: "100".into() },
            ]
        );
        let mut encoded = Vec::new();
        packet.encode(&mut encoded).unwrap();
        assert_eq!(encoded, bytes);

        // Untagged Tunnel-Private-Group-Id: first octet > 0x1F is part of the string.
        let pgid = Attribute::from_wire(81, b"100");
        assert_eq!(pgid, Attribute::TunnelPrivateGroupId { tag: None, value: "100".into() });
        // Tag 0 on the string form is a tag (FreeRADIUS reads it so), not a NUL in the value.
        assert_eq!(
            Attribute::from_wire(81, b"\x00100"),
            Attribute::TunnelPrivateGroupId { tag: Some(Tag::UNTAGGED), value: "100".into() }
        );
        // Tunnel-Type with a tag above 0x1F is invalid and kept raw.
        assert_eq!(Attribute::from_wire(64, &[0x20, 0, 0, 13]), Attribute::Other { attr_type: 64, value: vec![0x20, 0, 0, 13] });
        assert_eq!(Tag::new(0x20), Err(RadiusError::TagOutOfRange { tag: 0x20 }));
        let mut out = Vec::new();
        assert_eq!(
            Attribute::TunnelType { tag: Tag::UNTAGGED, value: 1 << 24 }.encode(&mut out),
            Err(RadiusError::TunnelValueTooLarge { value: 1 << 24 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_known_attributes_are_kept_raw() {
        assert_eq!(Attribute::from_wire(5, &[0, 1]), Attribute::Other { attr_type: 5, value: vec![0, 1] });
        assert_eq!(Attribute::from_wire(80, &[0; 15]), Attribute::Other { attr_type: 80, value: vec![0; 15] });
        assert_eq!(Attribute::from_wire(1, &[0xff, 0xfe]), Attribute::Other { attr_type: 1, value: vec![0xff, 0xfe] });
        assert_eq!(Attribute::from_wire(2, &[0; 15]), Attribute::Other { attr_type: 2, value: vec![0; 15] });
        assert_eq!(Attribute::from_wire(200, b"x"), Attribute::Other { attr_type: 200, value: b"x".to_vec() });
    }

    #[test]
    fn accounting_and_vendor_attributes_round_trip() {
        let packet = Packet {
            code: Code::AccountingRequest,
            identifier: 9,
            authenticator: [3; 16],
            attributes: vec![
                Attribute::AcctStatusType(AcctStatusType::InterimUpdate),
                Attribute::AcctSessionId("sess-1".into()),
                Attribute::AcctInputOctets(10),
                Attribute::AcctOutputOctets(20),
                Attribute::AcctInputGigawords(1),
                Attribute::AcctOutputGigawords(2),
                Attribute::AcctSessionTime(600),
                Attribute::AcctTerminateCause(1),
                Attribute::AcctStatusType(AcctStatusType::Other(15)),
                Attribute::NasIpAddress(Ipv4Addr::new(192, 0, 2, 1)),
                Attribute::NasPort(42),
                Attribute::NasIdentifier("sw1".into()),
                Attribute::CalledStationId("00-11-22-33-44-55:ssid".into()),
                Attribute::VendorSpecific { vendor_id: 9, data: vec![1, 5, b'a', b'=', b'b'] },
                Attribute::Class(vec![1, 2]),
                Attribute::State(vec![3]),
                Attribute::ProxyState(vec![4]),
                Attribute::SessionTimeout(3600),
                Attribute::ReplyMessage("hi".into()),
                Attribute::ChapPassword { ident: 1, response: [9; 16] },
                Attribute::ChapChallenge(vec![1; 16]),
                Attribute::Other { attr_type: 250, value: vec![] },
            ],
        };
        let mut bytes = Vec::new();
        packet.encode(&mut bytes).unwrap();
        assert_eq!(Packet::decode(&bytes).unwrap(), packet);
    }

    /// Deterministic xorshift64 so the mutation test is reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic_and_valid_ones_round_trip() {
        let mut seed_packet = Vec::new();
        Packet {
            code: Code::AccessRequest,
            identifier: 1,
            authenticator: [9; 16],
            attributes: vec![
                Attribute::MessageAuthenticator([1; 16]),
                Attribute::UserName("001122334455".into()),
                Attribute::CallingStationId("00-11-22-33-44-55".into()),
                Attribute::TunnelPrivateGroupId { tag: Some(Tag::new(3).unwrap()), value: "20".into() },
                Attribute::TunnelType { tag: Tag::UNTAGGED, value: TUNNEL_TYPE_VLAN },
                Attribute::VendorSpecific { vendor_id: 9, data: vec![1, 4, 0, 0] },
            ],
        }
        .encode(&mut seed_packet)
        .unwrap();
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut decoded = 0;
        let mut reencoded = Vec::new();
        for round in 0..5000 {
            let datagram: Vec<u8> = if round % 5 == 0 {
                let len = (rng.next() % 80) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if let Some(length) = bytes.get_mut(2..4) {
                    length.copy_from_slice(&(len as u16).to_be_bytes());
                }
                if let Some(code) = bytes.first_mut() {
                    *code = [1, 2, 3, 4, 5, 11, 12, 13][(rng.next() % 8) as usize];
                }
                bytes
            } else {
                let mut bytes = seed_packet.clone();
                for _ in 0..=(rng.next() % 3) {
                    let index = (rng.next() as usize) % bytes.len();
                    bytes[index] = rng.next() as u8;
                }
                bytes
            };
            if let Ok(packet) = Packet::decode(&datagram) {
                decoded += 1;
                packet.encode(&mut reencoded).unwrap();
                let framed = RawPacket::parse(&datagram).unwrap();
                assert_eq!(reencoded, framed.as_bytes(), "round {round}");
                assert_eq!(Packet::decode(&reencoded).unwrap(), packet);
            }
        }
        assert!(decoded > 500, "too few valid inputs ({decoded}) to exercise the round trip");
    }

    #[test]
    fn oversized_values_and_packets_are_refused_at_encode() {
        let mut out = Vec::new();
        let long = Attribute::ReplyMessage("x".repeat(254));
        assert_eq!(long.encode(&mut out), Err(RadiusError::AttributeValueTooLong { attr_type: 18, len: 254 }));
        let packet = Packet {
            code: Code::AccessAccept,
            identifier: 0,
            authenticator: [0; 16],
            attributes: vec![Attribute::ReplyMessage("x".repeat(253)); 17],
        };
        assert!(matches!(packet.encode(&mut out), Err(RadiusError::PacketTooLong { .. })));
    }
}
