//! Low-level wire helpers shared by the zone builder and the answer path.
//!
//! Owns: the lookup key of a name (its lower-case, uncompressed wire form, with label offsets so
//! every ancestor is a sub-slice — no allocation per lookup), record emission through
//! hickory-proto's encoder, and the pre-encoded form of RRsets whose RDATA holds no domain
//! names (A, AAAA, TXT, ...), which the hot path copies in one write. Does not own: which
//! records go where (that is [`mod@crate::answer`]).

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_proto::ProtoError;

/// Offset of the question name in every DNS message: right after the 12-byte header.
pub(crate) const QUESTION_OFFSET: u16 = 12;

/// Maximum wire length of a name (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 255;

/// A name's lower-case uncompressed wire form plus the offset of every label.
pub(crate) struct NameKey {
    bytes: [u8; MAX_NAME_LEN],
    len: usize,
    starts: [u8; 128],
    labels: usize,
}

impl NameKey {
    /// The key of `name`, or `None` if it is longer than 255 octets.
    #[inline]
    pub(crate) fn new(name: &Name) -> Option<NameKey> {
        let mut key = NameKey {
            bytes: [0; MAX_NAME_LEN],
            len: 0,
            starts: [0; 128],
            labels: 0,
        };
        for label in name.iter() {
            let end = key.len + 1 + label.len();
            if end >= MAX_NAME_LEN || key.labels >= key.starts.len() || label.len() > 63 {
                return None;
            }
            key.starts[key.labels] = u8::try_from(key.len).ok()?;
            key.bytes[key.len] = label.len() as u8;
            for (dst, src) in key.bytes[key.len + 1..end].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            key.len = end;
            key.labels += 1;
        }
        key.bytes[key.len] = 0;
        key.len += 1;
        Some(key)
    }

    /// The whole key.
    #[inline]
    pub(crate) fn full(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Number of labels (the root has none).
    #[inline]
    pub(crate) fn labels(&self) -> usize {
        self.labels
    }

    /// Key of the ancestor with `count` labels (`count >= labels()` gives the whole key).
    #[inline]
    pub(crate) fn ancestor(&self, count: usize) -> &[u8] {
        if count >= self.labels {
            self.full()
        } else if count == 0 {
            &self.bytes[self.len - 1..self.len]
        } else {
            &self.bytes[usize::from(self.starts[self.labels - count])..self.len]
        }
    }
}

/// The owned key of a name (for map keys built off the hot path).
pub(crate) fn owned_key(name: &Name) -> Option<Box<[u8]>> {
    NameKey::new(name).map(|key| key.full().into())
}

/// Key of `*.<encloser>` in a stack buffer; `None` if it would be too long.
#[inline]
pub(crate) fn wildcard_key(encloser: &[u8], buffer: &mut [u8; MAX_NAME_LEN]) -> Option<usize> {
    let len = encloser.len() + 2;
    if len > MAX_NAME_LEN {
        return None;
    }
    buffer[0] = 1;
    buffer[1] = b'*';
    buffer[2..len].copy_from_slice(encloser);
    Some(len)
}

/// Owner name of an emitted record.
#[derive(Clone, Copy)]
pub(crate) enum Owner<'n> {
    /// Same as the question name: a pointer to offset 12, keeping the query's case.
    Question,
    /// Any other name (compressed against names already written).
    Name(&'n Name),
}

/// Emits one resource record through hickory-proto's encoder.
#[inline]
pub(crate) fn emit_record(
    encoder: &mut BinEncoder<'_>,
    owner: Owner<'_>,
    rtype: RecordType,
    ttl: u32,
    rdata: &RData,
) -> Result<(), ProtoError> {
    match owner {
        Owner::Question => encoder.emit_u16(0xC000 | QUESTION_OFFSET)?,
        Owner::Name(name) => name.emit(encoder)?,
    }
    encoder.emit_u16(u16::from(rtype))?;
    encoder.emit_u16(u16::from(DNSClass::IN))?;
    encoder.emit_u32(ttl)?;
    let place = encoder.place::<u16>()?;
    rdata.emit(encoder)?;
    let len = encoder.len_since_place(&place);
    let len = u16::try_from(len).map_err(|_| ProtoError::Message("RDATA longer than 65535"))?;
    place.replace(encoder, len)
}

/// Whether RDATA of this type never contains a domain name (so its encoding does not depend on
/// compression state and can be prepared once).
fn is_name_free(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::A
            | RecordType::AAAA
            | RecordType::TXT
            | RecordType::CAA
            | RecordType::HINFO
            | RecordType::SSHFP
            | RecordType::TLSA
    )
}

/// The RRset encoded with the question pointer as owner, if its type is name-free.
pub(crate) fn pre_encode(rtype: RecordType, ttl: u32, rdatas: &[RData]) -> Option<Box<[u8]>> {
    if !is_name_free(rtype) {
        return None;
    }
    let mut buffer = Vec::new();
    let mut encoder = BinEncoder::new(&mut buffer);
    for rdata in rdatas {
        emit_record(&mut encoder, Owner::Question, rtype, ttl, rdata).ok()?;
    }
    Some(buffer.into_boxed_slice())
}

/// The negative-answer SOA record prepared for the common case where MNAME and RNAME are
/// inside the zone: owner, MNAME and RNAME suffixes all become pointers to the zone origin as
/// spelled in the question — the same bytes the compressing encoder produces, in one write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NegativeSoa {
    /// MNAME labels above the origin, uncompressed.
    mname_prefix: Box<[u8]>,
    /// RNAME labels above the origin, uncompressed.
    rname_prefix: Box<[u8]>,
    /// SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM.
    timers: [u8; 20],
    ttl: u32,
}

impl NegativeSoa {
    /// `None` when MNAME or RNAME is outside the zone (the general encoder handles those).
    pub(crate) fn new(origin: &Name, soa: &SOA, ttl: u32) -> Option<NegativeSoa> {
        let prefix = |name: &Name| -> Option<Box<[u8]>> {
            if !origin.zone_of(name) {
                return None;
            }
            let above = name.iter().len().checked_sub(origin.iter().len())?;
            let mut bytes = Vec::new();
            for label in name.iter().take(above) {
                bytes.push(u8::try_from(label.len()).ok().filter(|len| *len <= 63)?);
                bytes.extend_from_slice(label);
            }
            Some(bytes.into_boxed_slice())
        };
        let mut timers = [0u8; 20];
        let values = [
            soa.serial,
            soa.refresh as u32,
            soa.retry as u32,
            soa.expire as u32,
            soa.minimum,
        ];
        for (chunk, value) in timers.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&value.to_be_bytes());
        }
        Some(NegativeSoa {
            mname_prefix: prefix(&soa.mname)?,
            rname_prefix: prefix(&soa.rname)?,
            timers,
            ttl,
        })
    }

    /// Writes the record into `buffer` with every origin reference pointing at
    /// `origin_offset`; returns the length written.
    pub(crate) fn write(&self, origin_offset: u16, buffer: &mut [u8; 600]) -> Option<usize> {
        let pointer = (0xC000 | origin_offset).to_be_bytes();
        let rdlength = self.mname_prefix.len() + self.rname_prefix.len() + 2 + 2 + 20;
        let parts: [&[u8]; 11] = [
            &pointer,
            &u16::from(RecordType::SOA).to_be_bytes(),
            &u16::from(DNSClass::IN).to_be_bytes(),
            &self.ttl.to_be_bytes(),
            &u16::try_from(rdlength).ok()?.to_be_bytes(),
            &self.mname_prefix,
            &pointer,
            &self.rname_prefix,
            &pointer,
            &self.timers,
            &[],
        ];
        let mut len = 0;
        for part in parts {
            buffer.get_mut(len..len + part.len())?.copy_from_slice(part);
            len += part.len();
        }
        Some(len)
    }
}

/// Offsets of the labels of an uncompressed wire name at the start of `raw`, and the offset of
/// its terminating zero; `None` if the name is compressed or malformed.
pub(crate) fn plain_name_layout(raw: &[u8], starts: &mut [u16; 128]) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut labels = 0;
    loop {
        let len = usize::from(*raw.get(offset)?);
        if len == 0 {
            return Some((labels, offset));
        }
        if len > 63 || labels >= starts.len() {
            return None;
        }
        starts[labels] = u16::try_from(offset).ok()?;
        labels += 1;
        offset += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn keys_are_lowercase_wire_names_with_ancestors() {
        let key = NameKey::new(&Name::from_str("WwW.Example.COM.").unwrap()).unwrap();
        assert_eq!(key.full(), b"\x03www\x07example\x03com\x00");
        assert_eq!(key.labels(), 3);
        assert_eq!(key.ancestor(2), b"\x07example\x03com\x00");
        assert_eq!(key.ancestor(0), b"\x00");
        assert_eq!(key.ancestor(9), key.full());
        let root = NameKey::new(&Name::root()).unwrap();
        assert_eq!((root.full(), root.labels()), (&b"\x00"[..], 0));
        let mut buffer = [0; MAX_NAME_LEN];
        let len = wildcard_key(key.ancestor(2), &mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"\x01*\x07example\x03com\x00");
    }

    #[test]
    fn plain_layout_rejects_pointers() {
        let mut starts = [0; 128];
        assert_eq!(
            plain_name_layout(b"\x03www\x03com\x00\x00\x01", &mut starts),
            Some((2, 8))
        );
        assert_eq!(&starts[..2], &[0, 4]);
        assert_eq!(plain_name_layout(b"\x03www\xc0\x0c", &mut starts), None);
        assert_eq!(plain_name_layout(b"\x03ww", &mut starts), None);
    }
}
