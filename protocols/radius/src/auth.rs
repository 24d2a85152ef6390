//! RADIUS cryptography with the shared secret: the authenticators and password hiding.
//!
//! This module owns the four MD5-based mechanisms of RADIUS, both directions:
//! - User-Password hiding (RFC 2865 §5.2) → [`hide_password`], [`HiddenPassword::reveal`];
//! - CHAP-Password checking (RFC 2865 §5.3, RFC 1994) → [`chap_response_matches`];
//! - the Request Authenticator of Accounting-Request (RFC 2866 §3) and the Response
//!   Authenticator of every reply (RFC 2865 §3) → [`sign_accounting_request`], [`sign_reply`],
//!   [`verify_accounting_request`], [`verify_reply`];
//! - the HMAC-MD5 Message-Authenticator (RFC 3579 §3.2) → [`check_message_authenticator`] and
//!   the `sign_*` functions, which fill in a zeroed Message-Authenticator placeholder.
//!
//! It works on encoded bytes (a [`RawPacket`] or a buffer from [`crate::packet::Packet::encode`])
//! because every one of these digests covers the packet exactly as sent. Comparisons are
//! constant-time. It does not decide whether a check is required; [`crate::server`] does.

use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::packet::{attr, Code, RawPacket, HEADER_LEN};
use crate::RadiusError;

type HmacMd5 = hmac::Hmac<Md5>;

/// Longest password User-Password can carry (RFC 2865 §5.2).
pub const MAX_PASSWORD_LEN: usize = 128;

/// A User-Password value as on the wire: 16..=128 octets, a multiple of 16, still hidden with
/// the shared secret and the Request Authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenPassword(Vec<u8>);

impl HiddenPassword {
    /// Accepts a wire value if its length is legal (16..=128, multiple of 16).
    pub fn from_wire(value: &[u8]) -> Option<Self> {
        let legal = (16..=MAX_PASSWORD_LEN).contains(&value.len()) && value.len().is_multiple_of(16);
        legal.then(|| Self(value.to_vec()))
    }

    /// The hidden octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Recovers the password (RFC 2865 §5.2), dropping the NUL padding at the end.
    /// With a wrong secret this returns garbage, not an error: RADIUS cannot tell.
    pub fn reveal(&self, secret: &[u8], request_authenticator: &[u8; 16]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(self.0.len());
        let mut previous: &[u8] = request_authenticator;
        for chunk in self.0.chunks_exact(16) {
            let pad = Md5::new().chain_update(secret).chain_update(previous).finalize();
            plain.extend(chunk.iter().zip(pad.iter()).map(|(c, b)| c ^ b));
            previous = chunk;
        }
        while plain.last() == Some(&0) {
            plain.pop();
        }
        plain
    }
}

/// Hides `password` for a User-Password attribute (RFC 2865 §5.2).
pub fn hide_password(
    password: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> Result<HiddenPassword, RadiusError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(RadiusError::PasswordTooLong { len: password.len() });
    }
    let padded_len = password.len().div_ceil(16).max(1) * 16;
    let mut hidden = password.to_vec();
    hidden.resize(padded_len, 0);
    let mut previous = *request_authenticator;
    for chunk in hidden.chunks_exact_mut(16) {
        let pad = Md5::new().chain_update(secret).chain_update(previous).finalize();
        for (c, b) in chunk.iter_mut().zip(pad.iter()) {
            *c ^= b;
        }
        previous.copy_from_slice(chunk);
    }
    Ok(HiddenPassword(hidden))
}

/// Whether a CHAP-Password response matches `password` (RFC 2865 §5.3): the response is
/// MD5(ident ‖ password ‖ challenge), the challenge being CHAP-Challenge if present, else the
/// Request Authenticator.
pub fn chap_response_matches(ident: u8, response: &[u8; 16], password: &[u8], challenge: &[u8]) -> bool {
    let expected = Md5::new().chain_update([ident]).chain_update(password).chain_update(challenge).finalize();
    bool::from(expected.as_slice().ct_eq(response))
}

/// Result of looking at a packet's Message-Authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAuthenticatorCheck {
    /// The packet has no Message-Authenticator.
    Absent,
    /// Exactly one, 16 octets long, with the right HMAC.
    Valid,
    /// Wrong HMAC, wrong length, or more than one.
    Invalid,
}

/// Offset of the single Message-Authenticator value, `Ok(None)` if absent, `Err(())` if there
/// are several or one of the wrong length.
fn message_authenticator_value_offset(packet: &RawPacket<'_>) -> Result<Option<usize>, ()> {
    let mut found = None;
    for attribute in packet.attributes().filter(|a| a.attr_type == attr::MESSAGE_AUTHENTICATOR) {
        if found.is_some() || attribute.value.len() != 16 {
            return Err(());
        }
        found = Some(attribute.offset + 2);
    }
    Ok(found)
}

/// HMAC-MD5 over `packet` with `authenticator` in the Authenticator field and the
/// Message-Authenticator value (at `value_offset`) taken as 16 zero octets (RFC 3579 §3.2).
fn hmac_md5(packet: &[u8], authenticator: &[u8; 16], value_offset: usize, secret: &[u8]) -> [u8; 16] {
    // `new_from_slice` accepts keys of any length for HMAC; an empty key is legal HMAC.
    let mut mac = match <HmacMd5 as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return [0; 16],
    };
    mac.update(&packet[..4]);
    mac.update(authenticator);
    mac.update(&packet[HEADER_LEN..value_offset]);
    mac.update(&[0u8; 16]);
    mac.update(&packet[value_offset + 16..]);
    mac.finalize().into_bytes().into()
}

/// Checks the Message-Authenticator of a received packet. `authenticator` is what the HMAC
/// covers in the Authenticator field: the packet's own for Access-Request and Status-Server,
/// 16 zero octets for Accounting-Request, the Request Authenticator of the request for replies.
pub fn check_message_authenticator(
    packet: &RawPacket<'_>,
    authenticator: &[u8; 16],
    secret: &[u8],
) -> MessageAuthenticatorCheck {
    let value_offset = match message_authenticator_value_offset(packet) {
        Ok(Some(offset)) => offset,
        Ok(None) => return MessageAuthenticatorCheck::Absent,
        Err(()) => return MessageAuthenticatorCheck::Invalid,
    };
    let bytes = packet.as_bytes();
    let expected = hmac_md5(bytes, authenticator, value_offset, secret);
    if bool::from(expected.ct_eq(&bytes[value_offset..value_offset + 16])) {
        MessageAuthenticatorCheck::Valid
    } else {
        MessageAuthenticatorCheck::Invalid
    }
}

/// MD5(Code ‖ Identifier ‖ Length ‖ `authenticator` ‖ Attributes ‖ secret), the construction of
/// both the Response Authenticator and the accounting Request Authenticator.
fn packet_digest(packet: &[u8], authenticator: &[u8; 16], secret: &[u8]) -> [u8; 16] {
    Md5::new()
        .chain_update(&packet[..4])
        .chain_update(authenticator)
        .chain_update(&packet[HEADER_LEN..])
        .chain_update(secret)
        .finalize()
        .into()
}

fn fill_message_authenticator(packet: &mut [u8], authenticator: &[u8; 16], secret: &[u8]) -> Result<(), RadiusError> {
    let not_a_packet = |_| RadiusError::NotAPacket { len: packet.len() };
    let raw = RawPacket::parse(packet).map_err(not_a_packet)?;
    let len = raw.as_bytes().len();
    let offset = message_authenticator_value_offset(&raw)
        .map_err(|()| RadiusError::AttributeLengthInvalid {
            attr_type: attr::MESSAGE_AUTHENTICATOR,
            offset: 0,
            length: 0,
            problem: "is not a single 16-octet Message-Authenticator",
        })?;
    if let Some(offset) = offset {
        let mac = hmac_md5(&packet[..len], authenticator, offset, secret);
        packet[offset..offset + 16].copy_from_slice(&mac);
    }
    Ok(())
}

/// Finishes an encoded Access-Request or Status-Server: fills in the Message-Authenticator
/// placeholder if there is one. The Request Authenticator must already be in the packet (it is
/// random, and the User-Password was hidden with it).
pub fn sign_request(packet: &mut [u8], secret: &[u8]) -> Result<(), RadiusError> {
    let authenticator = RawPacket::parse(packet)
        .map_err(|_| RadiusError::NotAPacket { len: packet.len() })?
        .authenticator();
    fill_message_authenticator(packet, &authenticator, secret)
}

/// Finishes an encoded Accounting-Request: Message-Authenticator (if present) over the packet
/// with a zero Authenticator field, then the Request Authenticator (RFC 2866 §3).
pub fn sign_accounting_request(packet: &mut [u8], secret: &[u8]) -> Result<(), RadiusError> {
    let len = RawPacket::parse(packet).map_err(|_| RadiusError::NotAPacket { len: packet.len() })?.as_bytes().len();
    packet[4..HEADER_LEN].fill(0);
    fill_message_authenticator(packet, &[0; 16], secret)?;
    let authenticator = packet_digest(&packet[..len], &[0; 16], secret);
    packet[4..HEADER_LEN].copy_from_slice(&authenticator);
    Ok(())
}

/// The Authenticator-field value a reply's Message-Authenticator HMAC covers. RFC 3579 §3.2
/// says the Request Authenticator for Access-Accept/Reject/Challenge, and RFC 5997 §3 the same
/// for any reply to Status-Server; an Accounting-Response to an Accounting-Request uses 16
/// zero octets, like its request (what FreeRADIUS and pyrad compute and check).
pub fn reply_hmac_authenticator(reply_code: Code, request_code: Code, request_authenticator: &[u8; 16]) -> [u8; 16] {
    if reply_code == Code::AccountingResponse && request_code != Code::StatusServer {
        [0; 16]
    } else {
        *request_authenticator
    }
}

/// Finishes an encoded reply to a request with `request_code` and `request_authenticator`:
/// Message-Authenticator (if present) per [`reply_hmac_authenticator`], then the Response
/// Authenticator (RFC 2865 §3, RFC 2866 §3).
pub fn sign_reply(
    packet: &mut [u8],
    request_code: Code,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<(), RadiusError> {
    let raw = RawPacket::parse(packet).map_err(|_| RadiusError::NotAPacket { len: packet.len() })?;
    let (len, reply_code) = (raw.as_bytes().len(), raw.code());
    let hmac_authenticator = reply_hmac_authenticator(reply_code, request_code, request_authenticator);
    fill_message_authenticator(packet, &hmac_authenticator, secret)?;
    let authenticator = packet_digest(&packet[..len], request_authenticator, secret);
    packet[4..HEADER_LEN].copy_from_slice(&authenticator);
    Ok(())
}

/// Whether an Accounting-Request's Request Authenticator is right for `secret`.
pub fn verify_accounting_request(packet: &RawPacket<'_>, secret: &[u8]) -> bool {
    let expected = packet_digest(packet.as_bytes(), &[0; 16], secret);
    bool::from(expected.ct_eq(&packet.authenticator()))
}

/// Whether a reply's Response Authenticator is right for the request it answers.
pub fn verify_reply(reply: &RawPacket<'_>, request_authenticator: &[u8; 16], secret: &[u8]) -> bool {
    let expected = packet_digest(reply.as_bytes(), request_authenticator, secret);
    bool::from(expected.ct_eq(&reply.authenticator()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Attribute, Packet};

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    const RFC2865_SECRET: &[u8] = b"xyzzy5461";

    // RFC 2865 §7.1: Access-Request for user "nemo", password "arctangent", NAS 192.168.1.16
    // port 3, and its Access-Accept (Service-Type Login, Login-Service Telnet, Login-IP-Host).
    const RFC2865_7_1_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a
        01 06 6e 65 6d 6f 02 12 0d be 70 8d 93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8 01 10
        05 06 00 00 00 03";
    const RFC2865_7_1_ACCEPT: &str = "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf 9b 55 e0 b2
        06 06 00 00 00 01 0f 06 00 00 00 00 0e 06 c0 a8 01 03";
    // RFC 2865 §7.2: CHAP Access-Request for "flopsy" and its Access-Accept (PPP framed user).
    const RFC2865_7_2_REQUEST: &str = "01 01 00 47 2a ee 86 f0 8d 0d 55 96 9c a5 97 8e 0d 33 67 a2
        01 08 66 6c 6f 70 73 79 03 13 16 e9 75 57 c3 16 18 58 95 f2 93 ff 63 44 07 72 75 04 06 c0
        a8 01 10 05 06 00 00 00 14 06 06 00 00 00 02 07 06 00 00 00 01";
    const RFC2865_7_2_ACCEPT: &str = "02 01 00 38 15 ef bc 7d ab 26 cf a3 dc 34 d9 c0 3c 86 01 a4
        06 06 00 00 00 02 07 06 00 00 00 01 08 06 ff ff ff fe 0a 06 00 00 00 02 0d 06 00 00 00 01
        0c 06 00 00 05 dc";

    #[test]
    fn rfc2865_7_1_password_and_response_authenticator() {
        let request_bytes = hex(RFC2865_7_1_REQUEST);
        let request = Packet::decode(&request_bytes).unwrap();
        assert_eq!(request.user_name(), Some("nemo"));
        let hidden = request
            .find(|a| match a {
                Attribute::UserPassword(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(hidden.reveal(RFC2865_SECRET, &request.authenticator), b"arctangent");
        assert_eq!(&hide_password(b"arctangent", RFC2865_SECRET, &request.authenticator).unwrap(), hidden);

        let accept_bytes = hex(RFC2865_7_1_ACCEPT);
        let accept = RawPacket::parse(&accept_bytes).unwrap();
        assert!(verify_reply(&accept, &request.authenticator, RFC2865_SECRET));
        assert!(!verify_reply(&accept, &request.authenticator, b"wrong"));
        let mut resigned = accept_bytes.clone();
        resigned[4..20].fill(0);
        sign_reply(&mut resigned, Code::AccessRequest, &request.authenticator, RFC2865_SECRET).unwrap();
        assert_eq!(resigned, accept_bytes);
    }

    #[test]
    fn rfc2865_7_2_chap_request_and_response_authenticator() {
        let request = Packet::decode(&hex(RFC2865_7_2_REQUEST)).unwrap();
        assert_eq!(request.user_name(), Some("flopsy"));
        assert!(matches!(request.attributes[1], Attribute::ChapPassword { ident: 0x16, .. }));
        let accept_bytes = hex(RFC2865_7_2_ACCEPT);
        let accept = RawPacket::parse(&accept_bytes).unwrap();
        assert!(verify_reply(&accept, &request.authenticator, RFC2865_SECRET));
    }

    #[test]
    fn long_passwords_chain_blocks() {
        let authenticator = [0x5a; 16];
        for len in [0usize, 1, 15, 16, 17, 100, 128] {
            let password: Vec<u8> = (1..=len as u8).collect();
            let hidden = hide_password(&password, b"s3cret", &authenticator).unwrap();
            assert_eq!(hidden.as_bytes().len(), len.div_ceil(16).max(1) * 16);
            assert_eq!(hidden.reveal(b"s3cret", &authenticator), password);
        }
        assert_eq!(hide_password(&[1; 129], b"s", &authenticator), Err(RadiusError::PasswordTooLong { len: 129 }));
    }

    #[test]
    fn chap_response_is_md5_of_ident_password_challenge() {
        let challenge = [7u8; 16];
        let response: [u8; 16] = Md5::new().chain_update([3]).chain_update(b"pw").chain_update(challenge).finalize().into();
        assert!(chap_response_matches(3, &response, b"pw", &challenge));
        assert!(!chap_response_matches(4, &response, b"pw", &challenge));
        assert!(!chap_response_matches(3, &response, b"px", &challenge));
    }

    fn access_request_with_message_authenticator() -> Vec<u8> {
        let packet = Packet {
            code: Code::AccessRequest,
            identifier: 1,
            authenticator: [0x42; 16],
            attributes: vec![Attribute::MessageAuthenticator([0; 16]), Attribute::UserName("bob".into())],
        };
        let mut bytes = Vec::new();
        packet.encode(&mut bytes).unwrap();
        sign_request(&mut bytes, b"secret").unwrap();
        bytes
    }

    #[test]
    fn message_authenticator_round_trips_and_detects_tampering() {
        let bytes = access_request_with_message_authenticator();
        let raw = RawPacket::parse(&bytes).unwrap();
        assert_eq!(check_message_authenticator(&raw, &raw.authenticator(), b"secret"), MessageAuthenticatorCheck::Valid);
        assert_eq!(check_message_authenticator(&raw, &raw.authenticator(), b"other"), MessageAuthenticatorCheck::Invalid);
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        let raw = RawPacket::parse(&tampered).unwrap();
        assert_eq!(check_message_authenticator(&raw, &raw.authenticator(), b"secret"), MessageAuthenticatorCheck::Invalid);
    }

    #[test]
    fn message_authenticator_absent_duplicated_or_short_is_reported() {
        let mut bytes = Vec::new();
        Packet { code: Code::AccessRequest, identifier: 1, authenticator: [0; 16], attributes: vec![] }
            .encode(&mut bytes)
            .unwrap();
        let raw = RawPacket::parse(&bytes).unwrap();
        assert_eq!(check_message_authenticator(&raw, &[0; 16], b"s"), MessageAuthenticatorCheck::Absent);
        for attributes in [
            vec![Attribute::MessageAuthenticator([0; 16]), Attribute::MessageAuthenticator([0; 16])],
            vec![Attribute::Other { attr_type: 80, value: vec![0; 15] }],
        ] {
            Packet { code: Code::AccessRequest, identifier: 1, authenticator: [0; 16], attributes }
                .encode(&mut bytes)
                .unwrap();
            let raw = RawPacket::parse(&bytes).unwrap();
            assert_eq!(check_message_authenticator(&raw, &[0; 16], b"s"), MessageAuthenticatorCheck::Invalid);
        }
    }

    #[test]
    fn accounting_request_authenticator_signs_and_verifies() {
        let packet = Packet {
            code: Code::AccountingRequest,
            identifier: 2,
            authenticator: [0; 16],
            attributes: vec![
                Attribute::MessageAuthenticator([0; 16]),
                Attribute::AcctSessionId("abc".into()),
            ],
        };
        let mut bytes = Vec::new();
        packet.encode(&mut bytes).unwrap();
        sign_accounting_request(&mut bytes, b"secret").unwrap();
        let raw = RawPacket::parse(&bytes).unwrap();
        assert!(verify_accounting_request(&raw, b"secret"));
        assert!(!verify_accounting_request(&raw, b"secreT"));
        assert_eq!(check_message_authenticator(&raw, &[0; 16], b"secret"), MessageAuthenticatorCheck::Valid);
    }
}
