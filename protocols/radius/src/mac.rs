//! MAC addresses as switches write them, and the patterns policy matches them against.
//!
//! This module owns turning the text a NAS puts in `Calling-Station-Id` / `User-Name` (or an
//! operator puts in the config) into a typed [`MacAddress`], and matching a MAC against a
//! [`MacPattern`] (a full MAC, an OUI / octet-prefix wildcard like `aa:bb:cc:*`, or `*`).
//! It does not decide what a match means; [`crate::policy`] does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::RadiusError;

/// A 48-bit IEEE 802 MAC address. Displays as lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// Wraps six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Parses any format switches use for MAB: `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff`,
    /// `aabb.ccdd.eeff` (Cisco), `aabbcc-ddeeff` (HP), `aabbccddeeff`, in any letter case.
    /// Separators must be consistent and groups evenly sized, so `aa:bb-cc...` is refused.
    pub fn parse(text: &str) -> Result<Self, RadiusError> {
        parse_mac(text.trim()).ok_or_else(|| RadiusError::InvalidMacAddress { input: text.to_owned() })
    }

    /// Parses bytes from an attribute value; non-UTF-8 is not a MAC.
    pub fn parse_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().and_then(|text| parse_mac(text.trim()))
    }

    /// The textual forms a NAS may use for this MAC, lowercase. MAB User-Password checks
    /// compare case-insensitively against these.
    pub fn text_forms(&self) -> [String; 5] {
        let o = self.0;
        [
            format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3], o[4], o[5]),
            format!("{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}", o[0], o[1], o[2], o[3], o[4], o[5]),
            format!("{:02x}{:02x}.{:02x}{:02x}.{:02x}{:02x}", o[0], o[1], o[2], o[3], o[4], o[5]),
            format!("{:02x}{:02x}{:02x}-{:02x}{:02x}{:02x}", o[0], o[1], o[2], o[3], o[4], o[5]),
            format!("{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", o[0], o[1], o[2], o[3], o[4], o[5]),
        ]
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Collects hex digits, checking that separators split the digits into equal groups of
/// `group` digits with a single, consistent separator character.
fn parse_mac(text: &str) -> Option<MacAddress> {
    let bytes = text.as_bytes();
    let (separator, group) = match bytes.len() {
        12 => (None, 12),
        17 => (Some(*bytes.get(2)?), 2),
        14 => (Some(*bytes.get(4)?), 4),
        13 => (Some(*bytes.get(6)?), 6),
        _ => return None,
    };
    match (separator, group) {
        (None, _) => {}
        (Some(b':' | b'-'), 2) | (Some(b'.' | b'-'), 4) | (Some(b'-'), 6) => {}
        _ => return None,
    }
    let mut nibbles = [0u8; 12];
    let mut count = 0usize;
    for (index, &byte) in bytes.iter().enumerate() {
        let is_separator_slot = separator.is_some() && (index + 1) % (group + 1) == 0;
        if is_separator_slot {
            if Some(byte) != separator {
                return None;
            }
            continue;
        }
        *nibbles.get_mut(count)? = hex_value(byte)?;
        count += 1;
    }
    if count != 12 {
        return None;
    }
    let mut octets = [0u8; 6];
    for (octet, pair) in octets.iter_mut().zip(nibbles.chunks_exact(2)) {
        *octet = (pair[0] << 4) | pair[1];
    }
    Some(MacAddress(octets))
}

impl FromStr for MacAddress {
    type Err = RadiusError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3], o[4], o[5])
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A MAC to match: a full address, or the first 0..=5 octets followed by `*`
/// (`aa:bb:cc:*` is an OUI wildcard, `*` matches every MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacPattern {
    prefix: [u8; 6],
    /// Number of leading octets that must match, 0..=6 (6 is an exact address).
    prefix_octets: u8,
}

impl MacPattern {
    /// A pattern that matches exactly one MAC.
    pub const fn exact(mac: MacAddress) -> Self {
        Self { prefix: mac.0, prefix_octets: 6 }
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (any [`MacAddress`] format), an octet prefix with `*`
    /// (`aa:bb:cc:*`, `AA-BB-CC-*`, `aabbcc*`), or `*`.
    pub fn parse(text: &str) -> Result<Self, RadiusError> {
        let invalid = || RadiusError::InvalidMacPattern { input: text.to_owned() };
        let trimmed = text.trim();
        let Some(prefix_text) = trimmed.strip_suffix('*') else {
            return MacAddress::parse(trimmed).map(Self::exact).map_err(|_| invalid());
        };
        let mut nibbles = Vec::with_capacity(10);
        for byte in prefix_text.bytes() {
            match byte {
                b':' | b'-' | b'.' => {}
                _ => nibbles.push(hex_value(byte).ok_or_else(invalid)?),
            }
        }
        if nibbles.len() % 2 != 0 || nibbles.len() > 10 {
            return Err(invalid());
        }
        let mut prefix = [0u8; 6];
        for (octet, pair) in prefix.iter_mut().zip(nibbles.chunks_exact(2)) {
            *octet = (pair[0] << 4) | pair[1];
        }
        Ok(Self { prefix, prefix_octets: (nibbles.len() / 2) as u8 })
    }

    /// Whether `mac` matches this pattern.
    pub fn matches(&self, mac: &MacAddress) -> bool {
        let len = usize::from(self.prefix_octets);
        self.prefix[..len] == mac.0[..len]
    }
}

impl fmt::Display for MacPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix_octets == 6 {
            return MacAddress(self.prefix).fmt(f);
        }
        for octet in &self.prefix[..usize::from(self.prefix_octets)] {
            write!(f, "{octet:02x}:")?;
        }
        f.write_str("*")
    }
}

impl FromStr for MacPattern {
    type Err = RadiusError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddress = MacAddress::new([0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xff]);

    #[test]
    fn every_common_format_and_case_normalises_to_the_same_mac() {
        for text in [
            "aa:bb:cc:0d:ee:ff",
            "AA:BB:CC:0D:EE:FF",
            "aa-bb-cc-0d-ee-ff",
            "AA-BB-CC-0D-EE-FF",
            "aabb.cc0d.eeff",
            "AABB.CC0D.EEFF",
            "aabbcc0deeff",
            "AABBCC0DEEFF",
            "aabbcc-0deeff",
            "aabb-cc0d-eeff",
            " aa:bb:cc:0d:ee:ff ",
        ] {
            assert_eq!(MacAddress::parse(text), Ok(MAC), "{text}");
        }
        assert_eq!(MAC.to_string(), "aa:bb:cc:0d:ee:ff");
    }

    #[test]
    fn malformed_macs_are_refused() {
        for text in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:fg",
            "aabbccddeef",
            "aabb:ccdd:eeff",
            "aa.bb.cc.dd.ee.ff",
            "aabbcc:ddeeff",
            "aa:bb:cc:dd:ee:f:",
            "ä:bb:cc:dd:ee:ff",
        ] {
            assert!(MacAddress::parse(text).is_err(), "{text} should be refused");
        }
        assert_eq!(MacAddress::parse_bytes(&[0xff; 12]), None);
    }

    #[test]
    fn text_forms_parse_back_to_the_same_mac() {
        for form in MAC.text_forms() {
            assert_eq!(MacAddress::parse(&form), Ok(MAC), "{form}");
        }
    }

    #[test]
    fn oui_wildcards_match_by_prefix() {
        let oui = MacPattern::parse("aa:bb:cc:*").unwrap();
        assert!(oui.matches(&MAC));
        assert!(!oui.matches(&MacAddress::new([0xaa, 0xbb, 0xcd, 0, 0, 0])));
        assert_eq!(oui.to_string(), "aa:bb:cc:*");
        assert_eq!(MacPattern::parse("AA-BB-CC-*").unwrap(), oui);
        assert_eq!(MacPattern::parse("aabbcc*").unwrap(), oui);
        assert_eq!(MacPattern::parse("aabb.cc*").unwrap(), oui);
        let any = MacPattern::parse("*").unwrap();
        assert!(any.matches(&MAC));
        assert_eq!(any.to_string(), "*");
        let exact = MacPattern::parse("AABB.CC0D.EEFF").unwrap();
        assert!(exact.matches(&MAC));
        assert!(!exact.matches(&MacAddress::new([0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xfe])));
        assert_eq!(exact.to_string(), "aa:bb:cc:0d:ee:ff");
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for text in ["aa:b*", "aa:bb:cc:dd:ee:ff*", "zz:*", "aa:bb:cc", "aa:*:cc", ""] {
            assert!(MacPattern::parse(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn serde_uses_the_canonical_text_form() {
        let json = serde_json::to_string(&MAC).unwrap();
        assert_eq!(json, "\"aa:bb:cc:0d:ee:ff\"");
        assert_eq!(serde_json::from_str::<MacAddress>("\"AABB.CC0D.EEFF\"").unwrap(), MAC);
    }
}
