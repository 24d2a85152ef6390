//! The crate's one error type.
//!
//! Owns: every way configuration, zone loading, dynamic updates and the DoH helpers can fail,
//! each variant naming the zone / record / field a user has to fix. Does not own: answering
//! queries — [`mod@crate::answer`] never fails, it turns bad input into FORMERR or a drop.

use std::path::PathBuf;

/// Everything that can go wrong in `shardgate-dns` outside the query path.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Two `[[dns.zones]]` entries have the same origin.
    #[error("zone `{origin}`: defined more than once")]
    DuplicateZone {
        /// The repeated origin.
        origin: String,
    },
    /// A zone origin is not a valid domain name.
    #[error("zone `{origin}`: origin is not a valid domain name: {reason}")]
    InvalidOrigin {
        /// The origin as written.
        origin: String,
        /// Parser message.
        reason: String,
    },
    /// A zone has neither `file` nor an inline `soa`.
    #[error("zone `{zone}`: needs either `file = \"path\"` or an inline `soa` table")]
    ZoneSourceMissing {
        /// Zone origin.
        zone: String,
    },
    /// A zone has both `file` and inline `soa`/`records`.
    #[error("zone `{zone}`: `file` cannot be combined with inline `soa`/`records`")]
    ZoneSourceConflict {
        /// Zone origin.
        zone: String,
    },
    /// A name inside the inline SOA is invalid.
    #[error("zone `{zone}`: soa field `{field}` is invalid: {reason}")]
    InvalidSoaField {
        /// Zone origin.
        zone: String,
        /// `mname`, `rname`, ...
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An inline record's owner name does not parse.
    #[error("zone `{zone}`, record #{index} (`{name}`): invalid owner name: {reason}")]
    InvalidRecordName {
        /// Zone origin.
        zone: String,
        /// Zero-based position in `records`.
        index: usize,
        /// The name as written.
        name: String,
        /// Parser message.
        reason: String,
    },
    /// A record's owner is not inside the zone it is listed in.
    #[error("zone `{zone}`: record `{name}` is outside the zone")]
    RecordOutOfZone {
        /// Zone origin.
        zone: String,
        /// Owner name.
        name: String,
    },
    /// The record type is not one we serve.
    #[error("zone `{zone}`, record `{name}`: type `{rtype}` is not supported (SOA NS A AAAA CNAME MX TXT SRV CAA PTR)")]
    UnsupportedRecordType {
        /// Zone origin.
        zone: String,
        /// Owner name.
        name: String,
        /// The type as written.
        rtype: String,
    },
    /// A record's value does not parse for its type.
    #[error("zone `{zone}`, record `{name}` {rtype}: value `{value}` is invalid: {reason}")]
    InvalidRecordValue {
        /// Zone origin.
        zone: String,
        /// Owner name.
        name: String,
        /// Record type.
        rtype: String,
        /// The value as written.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// A TTL above 2^31-1 (RFC 2181 §8).
    #[error("zone `{zone}`, record `{name}`: ttl {ttl} exceeds 2147483647")]
    InvalidTtl {
        /// Zone origin.
        zone: String,
        /// Owner name.
        name: String,
        /// The TTL.
        ttl: u32,
    },
    /// A TXT character-string longer than 255 octets.
    #[error("zone `{zone}`, record `{name}`: TXT string of {len} bytes exceeds 255; split it into several quoted strings")]
    TxtStringTooLong {
        /// Zone origin.
        zone: String,
        /// Owner name.
        name: String,
        /// Length found.
        len: usize,
    },
    /// CNAME together with other data at one name (RFC 1034 §3.6.2), or at the apex.
    #[error("zone `{zone}`: `{name}` has a CNAME and other records (or is the apex)")]
    CnameConflict {
        /// Zone origin.
        zone: String,
        /// Owner name.
        name: String,
    },
    /// The zone has no SOA at its apex, or more than one.
    #[error("zone `{zone}`: needs exactly one SOA record at the apex")]
    MissingSoa {
        /// Zone origin.
        zone: String,
    },
    /// A master file could not be read.
    #[error("zone `{zone}`: cannot read master file {path}: {source}")]
    MasterFileRead {
        /// Zone origin.
        zone: String,
        /// File path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A master file does not parse.
    #[error("zone `{zone}`: master file {path} does not parse: {reason}")]
    MasterFileParse {
        /// Zone origin.
        zone: String,
        /// File path (or `<inline>`).
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// An RRL setting is out of range.
    #[error("dns.rrl.{field}: {reason}")]
    InvalidRrl {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `max_udp_payload` outside 512..=4096.
    #[error("dns.max_udp_payload = {value}: must be between 512 and 4096")]
    InvalidPayloadSize {
        /// The configured value.
        value: u16,
    },
    /// `doh_domain` is not a valid host name.
    #[error("dns.doh_domain `{value}`: {reason}")]
    InvalidDohDomain {
        /// The configured value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A dynamic update names a domain outside every zone we serve.
    #[error("`{name}` is not inside any zone served here")]
    NoZoneFor {
        /// The name.
        name: String,
    },
    /// A dynamic removal found nothing to remove.
    #[error("`{name}` has no {rtype} record to remove")]
    RecordNotFound {
        /// The name.
        name: String,
        /// The type.
        rtype: String,
    },
    /// A dynamic update tried to add or remove the SOA or apex NS set.
    #[error("`{name}` {rtype}: SOA and apex NS cannot be changed dynamically")]
    ProtectedRecord {
        /// The name.
        name: String,
        /// The type.
        rtype: String,
    },
    /// The `dns=` GET parameter of a DoH request is not base64url.
    #[error("DoH `dns` parameter is not valid base64url: {reason}")]
    DohBase64 {
        /// Decoder message.
        reason: String,
    },
    /// A DoH message is empty or larger than 65535 bytes.
    #[error("DoH message has invalid length {len}")]
    DohMessageLength {
        /// Length found.
        len: usize,
    },
    /// The `name=` of a JSON `/resolve` request is not a domain name.
    #[error("JSON resolve: `name={name}` is not a valid domain name: {reason}")]
    JsonName {
        /// The name as given.
        name: String,
        /// Parser message.
        reason: String,
    },
    /// The `type=` of a JSON `/resolve` request is unknown.
    #[error("JSON resolve: `type={value}` is not a known record type")]
    JsonType {
        /// The type as given.
        value: String,
    },
    /// A wire message (our own response) failed to decode or encode.
    #[error("DNS wire message: {reason}")]
    Wire {
        /// Codec message.
        reason: String,
    },
}
