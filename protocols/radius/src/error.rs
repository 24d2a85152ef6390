//! The crate's single error type, [`RadiusError`], and [`ConfigProblem`], one entry of the list
//! that config validation reports. This module owns error wording; it makes no decisions.

use std::fmt;

/// Everything that can go wrong in this crate: malformed datagrams, values that cannot be
/// encoded, and an invalid `[radius]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadiusError {
    /// The datagram is shorter than the 20-octet RADIUS header.
    #[error("datagram of {len} octets is shorter than the 20-octet RADIUS header")]
    DatagramTooShort {
        /// Octets received.
        len: usize,
    },
    /// The Length field is outside 20..=4096 (RFC 2865 §3).
    #[error("Length field {length} is outside the RFC 2865 range 20..=4096")]
    LengthOutOfRange {
        /// Value of the Length field.
        length: u16,
    },
    /// The Length field claims more octets than the datagram holds (RFC 2865 §3: discard).
    #[error("Length field says {length} octets but the datagram holds only {datagram}")]
    LengthExceedsDatagram {
        /// Value of the Length field.
        length: u16,
        /// Octets received.
        datagram: usize,
    },
    /// The Code field is not one this crate knows (RFC 2865 §3: silently discard).
    #[error("unknown RADIUS code {code}")]
    UnknownCode {
        /// Value of the Code field.
        code: u8,
    },
    /// An attribute header starts but the packet ends before its Length octet.
    #[error("attribute at offset {offset} is truncated: the packet ends inside its header")]
    AttributeHeaderTruncated {
        /// Offset of the attribute from the start of the packet.
        offset: usize,
    },
    /// An attribute's Length is below 2 or runs past the end of the packet.
    #[error("attribute type {attr_type} at offset {offset} has length {length}, which {problem}")]
    AttributeLengthInvalid {
        /// Attribute type.
        attr_type: u8,
        /// Offset of the attribute from the start of the packet.
        offset: usize,
        /// The attribute's Length octet.
        length: u8,
        /// "is below 2" or "overflows the packet".
        problem: &'static str,
    },
    /// An attribute value is longer than the 253 octets an attribute can carry.
    #[error("attribute type {attr_type} value of {len} octets exceeds the 253-octet maximum")]
    AttributeValueTooLong {
        /// Attribute type.
        attr_type: u8,
        /// Value length.
        len: usize,
    },
    /// An encoded packet would exceed 4096 octets.
    #[error("encoded packet of {len} octets exceeds the 4096-octet RADIUS maximum")]
    PacketTooLong {
        /// Octets the packet would need.
        len: usize,
    },
    /// A password longer than the 128 octets User-Password can hide (RFC 2865 §5.2).
    #[error("password of {len} octets exceeds the 128-octet User-Password maximum")]
    PasswordTooLong {
        /// Password length.
        len: usize,
    },
    /// A tag outside 0..=0x1F (RFC 2868 §3).
    #[error("tunnel attribute tag {tag:#04x} is outside the RFC 2868 range 0x00..=0x1F")]
    TagOutOfRange {
        /// The offending tag.
        tag: u8,
    },
    /// A Tunnel-Type or Tunnel-Medium-Type value that does not fit the 3-octet field.
    #[error("tunnel attribute value {value} does not fit in 24 bits")]
    TunnelValueTooLarge {
        /// The offending value.
        value: u32,
    },
    /// Finalising a packet that has no room for the authenticator (shorter than 20 octets).
    #[error("cannot sign a buffer of {len} octets: not a RADIUS packet")]
    NotAPacket {
        /// Buffer length.
        len: usize,
    },
    /// A MAC address string that is in none of the accepted formats.
    #[error("`{input}` is not a MAC address (expected aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff)")]
    InvalidMacAddress {
        /// The rejected text.
        input: String,
    },
    /// A MAC pattern string that is neither a MAC nor an octet prefix followed by `*`.
    #[error("`{input}` is not a MAC pattern (expected a full MAC, an octet prefix like aa:bb:cc:*, or *)")]
    InvalidMacPattern {
        /// The rejected text.
        input: String,
    },
    /// The `[radius]` section has one or more problems; all of them are listed.
    #[error("invalid [radius] configuration:\n{}", ConfigProblemList(.0))]
    InvalidConfig(Vec<ConfigProblem>),
    /// A persisted session table could not be read back.
    #[error("session table snapshot is not valid: {0}")]
    SessionSnapshot(String),
}

/// One problem in the `[radius]` section: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the offending field, e.g. `radius.clients[1] ("core-sw").secret`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigProblem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct ConfigProblemList<'a>(&'a [ConfigProblem]);

impl fmt::Display for ConfigProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_list_every_problem_on_its_own_line() {
        let err = RadiusError::InvalidConfig(vec![
            ConfigProblem::new("radius.auth_port", "must not be 0"),
            ConfigProblem::new("radius.clients[0] (\"sw\").secret", "must not be empty"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid [radius] configuration:\n  - radius.auth_port: must not be 0\n  - radius.clients[0] (\"sw\").secret: must not be empty"
        );
    }
}
