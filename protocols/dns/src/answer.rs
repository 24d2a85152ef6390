//! The query → response function: bytes in, bytes out, over an immutable [`Catalog`].
//!
//! Owns: parsing a query into a typed question (hickory-proto wire codec), the RFC 1034 §4.3.2
//! lookup as Knot DNS / NSD do it (AA answers, NXDOMAIN/NODATA with the SOA in authority at the
//! RFC 2308 negative TTL, in-zone CNAME chains with loop detection, RFC 4592 wildcards with empty
//! non-terminals, referrals with glue and no AA), RFC 8482 ANY (one RRset), EDNS0 (RFC 6891: payload
//! negotiation, DO echo, BADVERS), UDP truncation with TC, and the error rcodes (REFUSED outside
//! our zones or for AXFR/IXFR, FORMERR for malformed questions, NOTIMP for other opcodes).
//! Details follow Knot DNS byte for byte where clients can see them: names are compressed
//! against the question case-insensitively (so `NoPe.ExAmPle.CoM` gets an SOA owned by
//! `ExAmPle.CoM.`), REFUSED carries EDE 20 "Not Authoritative", CD is not echoed, and
//! optional additional records that do not fit are skipped without TC while missing in-domain
//! glue sets TC (RFC 9471). See `testdata/knot-equivalence`.
//! Does not own: sockets, TCP framing ([`crate::tcp`]), rate limiting ([`crate::rrl`]).
//!
//! It never panics on any input; a message whose header cannot be parsed, or which is itself a
//! response, yields `None` (drop it). The output `Vec` is reused across calls.

use hickory_proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder, Place};

use crate::wire::{emit_record, plain_name_layout, wildcard_key, NameKey, Owner, QUESTION_OFFSET};
use crate::zone::{Catalog, Node, RrSet, Zone};

/// Longest CNAME chain we follow inside a zone (Knot uses a similar bound).
pub const MAX_CNAME_CHAIN: usize = 16;
/// Size of the fixed DNS header.
const HEADER_LEN: usize = 12;
/// An OPT record without options: root name, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 11;
/// EDNS option code of Extended DNS Errors (RFC 8914).
const EDE_OPTION: u16 = 15;
/// EDE info-code "Not Authoritative" (RFC 8914 §4.21), which Knot DNS adds to REFUSED.
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// The transport a query arrived on; it decides the response size limit and ANY handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagram: responses are limited to 512 bytes or the negotiated EDNS size.
    Udp,
    /// Stream (plain TCP or DoH): responses up to 65535 bytes, never truncated.
    Tcp,
}

/// Settings of the answer path that come from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerConfig {
    /// EDNS payload size we advertise and the ceiling for UDP responses.
    pub max_udp_payload: u16,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            max_udp_payload: crate::config::DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

/// What kind of response was produced: for stats and for RRL accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Positive answer (possibly a CNAME chain).
    Answer,
    /// Referral to a delegated child zone.
    Referral,
    /// NXDOMAIN.
    NxDomain,
    /// The name exists but not the type.
    NoData,
    /// REFUSED: not our zone, AXFR/IXFR, or a class we do not serve.
    Refused,
    /// FORMERR: malformed query.
    FormErr,
    /// NOTIMP: opcode other than QUERY.
    NotImp,
    /// BADVERS: EDNS version above 0.
    BadVers,
}

/// Summary of a response written by [`answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    /// What kind of response it is.
    pub outcome: Outcome,
    /// TC was set because the response did not fit.
    pub truncated: bool,
}

/// Per-shard counters of the answer path; merge them for totals. Serialisable so the
/// appliance can report them as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AnswerStats {
    /// Positive answers.
    pub answers: u64,
    /// Referrals.
    pub referrals: u64,
    /// NXDOMAIN responses.
    pub nxdomain: u64,
    /// NODATA responses.
    pub nodata: u64,
    /// REFUSED responses.
    pub refused: u64,
    /// FORMERR responses.
    pub formerr: u64,
    /// NOTIMP responses.
    pub notimp: u64,
    /// BADVERS responses.
    pub badvers: u64,
    /// Responses sent with TC set.
    pub truncated: u64,
    /// Messages dropped without a response.
    pub dropped: u64,
}

impl AnswerStats {
    /// Counts the result of one [`answer`] call.
    pub fn record(&mut self, result: Option<ResponseInfo>) {
        let Some(info) = result else {
            self.dropped += 1;
            return;
        };
        let counter = match info.outcome {
            Outcome::Answer => &mut self.answers,
            Outcome::Referral => &mut self.referrals,
            Outcome::NxDomain => &mut self.nxdomain,
            Outcome::NoData => &mut self.nodata,
            Outcome::Refused => &mut self.refused,
            Outcome::FormErr => &mut self.formerr,
            Outcome::NotImp => &mut self.notimp,
            Outcome::BadVers => &mut self.badvers,
        };
        *counter += 1;
        self.truncated += u64::from(info.truncated);
    }

    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &AnswerStats) {
        self.answers += other.answers;
        self.referrals += other.referrals;
        self.nxdomain += other.nxdomain;
        self.nodata += other.nodata;
        self.refused += other.refused;
        self.formerr += other.formerr;
        self.notimp += other.notimp;
        self.badvers += other.badvers;
        self.truncated += other.truncated;
        self.dropped += other.dropped;
    }
}

/// EDNS information of a query.
#[derive(Debug, Clone, Copy)]
struct QueryEdns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

/// Answers one DNS message. Writes the response into `out` (cleared first) and returns its
/// summary, or `None` when the message must be dropped (unparseable header, or a response).
pub fn answer(
    catalog: &Catalog,
    query: &[u8],
    transport: Transport,
    config: &AnswerConfig,
    out: &mut Vec<u8>,
) -> Option<ResponseInfo> {
    out.clear();
    let mut decoder = BinDecoder::new(query);
    let header = Header::read(&mut decoder).ok()?;
    let request = header.metadata;
    if request.message_type == MessageType::Response {
        return None;
    }
    let mut meta = Metadata::new(request.id, MessageType::Response, request.op_code);
    meta.recursion_desired = request.recursion_desired;
    let parsed = ParsedQuery::read(&mut decoder, header.counts);
    let question_wire = query
        .get(HEADER_LEN..parsed.question_end)
        .unwrap_or_default();
    let edns = parsed.edns;
    let reply = Reply {
        meta,
        config,
        transport,
    };
    // QDCOUNT must be exactly 1 (RFC 9619); the first question is still echoed when it parsed.
    let single = parsed
        .question
        .as_ref()
        .filter(|_| header.counts.queries == 1);
    if request.op_code != OpCode::Query {
        return reply.error(out, single, edns, ResponseCode::NotImp, Outcome::NotImp);
    }
    let Some(question) = single.filter(|_| !parsed.malformed) else {
        return reply.error(out, single, edns, ResponseCode::FormErr, Outcome::FormErr);
    };
    if header.counts.answers != 0 || header.counts.authorities != 0 {
        return reply.error(
            out,
            Some(question),
            edns,
            ResponseCode::FormErr,
            Outcome::FormErr,
        );
    }
    if edns.is_some_and(|e| e.version > 0) {
        return reply.error(
            out,
            Some(question),
            edns,
            ResponseCode::BADVERS,
            Outcome::BadVers,
        );
    }
    let qtype = question.query_type();
    match qtype {
        RecordType::AXFR | RecordType::IXFR => {
            return reply.error(
                out,
                Some(question),
                edns,
                ResponseCode::Refused,
                Outcome::Refused,
            )
        }
        // Type 0 is reserved (RFC 6895); Knot DNS answers NOTIMP.
        RecordType::ZERO => {
            return reply.error(
                out,
                Some(question),
                edns,
                ResponseCode::NotImp,
                Outcome::NotImp,
            )
        }
        _ => {}
    }
    // Class ANY is answered from IN data, as Knot DNS does; CH, HS, NONE are not served.
    if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) {
        return reply.error(
            out,
            Some(question),
            edns,
            ResponseCode::Refused,
            Outcome::Refused,
        );
    }
    let Some(qkey) = NameKey::new(question.name()) else {
        return reply.error(
            out,
            Some(question),
            edns,
            ResponseCode::FormErr,
            Outcome::FormErr,
        );
    };
    let Some(zone) = catalog.find_zone_by_key(&qkey) else {
        return reply.not_authoritative(out, question, edns);
    };

    let mut writer = Writer::start(out, reply.meta, edns, reply.limit(edns), config)?;
    writer.question_from_wire(question, question_wire)?;
    let (rcode, authoritative, outcome) = resolve(zone, question.name(), &qkey, qtype, &mut writer);
    let truncated = writer.finish(rcode, authoritative)?;
    Some(ResponseInfo { outcome, truncated })
}

/// A query parsed at the edge: its first question, EDNS, and whether anything was malformed.
struct ParsedQuery {
    question: Option<Query>,
    /// Offset just past the first question.
    question_end: usize,
    edns: Option<QueryEdns>,
    malformed: bool,
}

impl ParsedQuery {
    /// Reads every section after the header. OPT must be unique and in the additional section
    /// (RFC 6891 §6.1.1); nothing may follow the last record.
    fn read(decoder: &mut BinDecoder<'_>, counts: HeaderCounts) -> ParsedQuery {
        let mut parsed = ParsedQuery {
            question: None,
            question_end: HEADER_LEN,
            edns: None,
            malformed: false,
        };
        for index in 0..counts.queries {
            let Ok(question) = Query::read(decoder) else {
                parsed.malformed = true;
                return parsed;
            };
            if index == 0 {
                parsed.question = Some(question);
                parsed.question_end = decoder.index();
            }
        }
        let before_additional = usize::from(counts.answers) + usize::from(counts.authorities);
        let total = before_additional + usize::from(counts.additionals);
        for index in 0..total {
            let Ok(record) = Record::read(decoder) else {
                parsed.malformed = true;
                return parsed;
            };
            if record.record_type() != RecordType::OPT {
                continue;
            }
            // A misplaced or second OPT is malformed (a non-root owner already failed to decode).
            if index < before_additional || parsed.edns.is_some() {
                parsed.malformed = true;
                return parsed;
            }
            parsed.edns = Some(QueryEdns {
                payload: u16::from(record.dns_class),
                version: ((record.ttl >> 16) & 0xff) as u8,
                dnssec_ok: record.ttl & 0x8000 != 0,
            });
        }
        // Bytes after the last counted record make the message malformed (Knot: FORMERR).
        parsed.malformed = !decoder.is_empty();
        parsed
    }
}

/// The fixed parts of a reply.
struct Reply<'c> {
    meta: Metadata,
    config: &'c AnswerConfig,
    transport: Transport,
}

impl Reply<'_> {
    /// Response size limit for this transport and EDNS state.
    fn limit(&self, edns: Option<QueryEdns>) -> u16 {
        match (self.transport, edns) {
            (Transport::Tcp, _) => u16::MAX,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => e.payload.clamp(512, self.config.max_udp_payload.max(512)),
        }
    }

    /// REFUSED for a name outside our zones, with EDE "Not Authoritative" as Knot DNS sends.
    fn not_authoritative(
        &self,
        out: &mut Vec<u8>,
        question: &Query,
        edns: Option<QueryEdns>,
    ) -> Option<ResponseInfo> {
        let mut writer = Writer::start(out, self.meta, edns, self.limit(edns), self.config)?;
        writer.question(question)?;
        writer.extended_error = Some(EDE_NOT_AUTHORITATIVE);
        let truncated = writer.finish(ResponseCode::Refused, false)?;
        Some(ResponseInfo {
            outcome: Outcome::Refused,
            truncated,
        })
    }

    /// A response carrying only the header, the question (if any) and OPT (if any).
    fn error(
        &self,
        out: &mut Vec<u8>,
        question: Option<&Query>,
        edns: Option<QueryEdns>,
        rcode: ResponseCode,
        outcome: Outcome,
    ) -> Option<ResponseInfo> {
        let mut writer = Writer::start(out, self.meta, edns, self.limit(edns), self.config)?;
        if let Some(question) = question {
            writer.question(question)?;
        }
        let truncated = writer.finish(rcode, false)?;
        Some(ResponseInfo { outcome, truncated })
    }
}

/// Response sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    /// Glue a referral cannot work without (in-domain NS addresses, RFC 9471): counted in
    /// the additional section, but if it does not fit the response is truncated.
    RequiredGlue,
    /// Optional additional data: skipped when it does not fit.
    Additional,
}

/// Incremental response encoder with section accounting and truncation.
struct Writer<'a> {
    encoder: BinEncoder<'a>,
    header: Place<Header>,
    meta: Metadata,
    counts: HeaderCounts,
    edns: Option<QueryEdns>,
    our_payload: u16,
    truncated: bool,
    /// No more records fit (or TC was set): everything further is skipped.
    full: bool,
    /// Length (without the root octet) of a question name copied verbatim and not yet
    /// offered for name compression.
    pending_question_name: Option<usize>,
    /// Length (without the root octet) of a question name copied verbatim.
    verbatim_question_name: Option<usize>,
    /// RFC 8914 info-code to attach to the OPT record, if the query had EDNS.
    extended_error: Option<u16>,
}

impl<'a> Writer<'a> {
    fn start(
        out: &'a mut Vec<u8>,
        meta: Metadata,
        edns: Option<QueryEdns>,
        limit: u16,
        config: &AnswerConfig,
    ) -> Option<Self> {
        let mut encoder = BinEncoder::new(out);
        let reserve = if edns.is_some() { OPT_LEN as u16 } else { 0 };
        encoder.set_max_size(limit.saturating_sub(reserve));
        let header = encoder.place::<Header>().ok()?;
        Some(Self {
            encoder,
            header,
            meta,
            counts: HeaderCounts::default(),
            edns,
            our_payload: config.max_udp_payload.max(512),
            truncated: false,
            full: false,
            pending_question_name: None,
            verbatim_question_name: None,
            extended_error: None,
        })
    }

    /// Writes the question. An uncompressed question is copied byte for byte (exact echo, no
    /// allocation); anything else is re-encoded.
    fn question_from_wire(&mut self, question: &Query, wire: &[u8]) -> Option<()> {
        let mut starts = [0u16; 128];
        match plain_name_layout(wire, &mut starts) {
            Some((_, name_end)) if wire.len() == name_end + 5 => {
                self.encoder.emit_vec(wire).ok()?;
                self.counts.queries = 1;
                self.pending_question_name = Some(name_end);
                self.verbatim_question_name = Some(name_end);
            }
            _ => self.question(question)?,
        }
        Some(())
    }

    fn question(&mut self, question: &Query) -> Option<()> {
        question.emit(&mut self.encoder).ok()?;
        self.counts.queries = 1;
        Some(())
    }

    /// Lets later names compress against a verbatim-copied question, case-insensitively as
    /// Knot DNS does: zone names (lower case) then point into the question, so the answer shows
    /// the query's spelling (`ns1.ExAmPle.CoM.`). hickory-proto's compression table matches
    /// bytes exactly, so the question is registered in lower case and then restored. Done
    /// lazily: the common A/AAAA answer never needs it.
    fn offer_question_for_compression(&mut self) {
        let Some(name_end) = self.pending_question_name.take() else {
            return;
        };
        let base = usize::from(QUESTION_OFFSET);
        let end = base + name_end;
        let resume = self.encoder.offset();
        if name_end >= 255 || end >= resume {
            return;
        }
        let mut original = [0u8; 256];
        original[..=name_end].copy_from_slice(self.encoder.slice_of(base, end + 1));
        let mut starts = [0u16; 128];
        let Some((labels, _)) = plain_name_layout(&original, &mut starts) else {
            return;
        };
        let mut lower = original;
        // Length octets are below 64, so only label letters change.
        lower.make_ascii_lowercase();
        self.encoder.set_offset(base);
        if self.encoder.emit_vec(&lower[..name_end]).is_ok() {
            for &start in &starts[..labels] {
                self.encoder
                    .store_label_pointer(base + usize::from(start), end);
            }
            self.encoder.set_offset(base);
            // Same length as what was just written, so this cannot fail.
            let _ = self.encoder.emit_vec(&original[..name_end]);
        }
        self.encoder.set_offset(resume);
    }

    /// Emits a whole RRset or nothing. Returns whether it fit.
    fn rrset(&mut self, section: Section, owner: Owner<'_>, set: &RrSet, ttl: u32) -> bool {
        if self.full {
            return false;
        }
        let mark = self.encoder.offset();
        let prepared = match (owner, set.question_wire()) {
            (Owner::Question, Some(wire)) if ttl == set.ttl() => Some(wire),
            _ => None,
        };
        let written = match prepared {
            Some(wire) => self.encoder.emit_vec(wire).is_ok(),
            None => {
                self.offer_question_for_compression();
                set.rdatas().iter().all(|rdata| {
                    emit_record(&mut self.encoder, owner, set.record_type(), ttl, rdata).is_ok()
                })
            }
        };
        if !written {
            self.overflowed(mark, section);
            return false;
        }
        self.count(section, set.rdatas().len());
        true
    }

    /// Rolls back a record set that did not fit.
    fn overflowed(&mut self, mark: usize, section: Section) {
        self.encoder.set_offset(mark);
        self.encoder.trim();
        // Missing optional additional data does not make a response truncated
        // (RFC 2181 §9); later, smaller additional RRsets may still fit (as in Knot).
        if section != Section::Additional {
            self.full = true;
            self.truncated = true;
        }
    }

    /// The SOA of a negative answer in the authority section.
    fn negative_soa(&mut self, zone: &Zone) {
        if self.full {
            return;
        }
        // Fast path: the prepared record, pointing at the origin inside the verbatim question.
        let origin_offset = self.verbatim_question_name.and_then(|name_end| {
            let start = (name_end + 1).checked_sub(zone.origin_wire_len())?;
            u16::try_from(usize::from(QUESTION_OFFSET) + start).ok()
        });
        if let (Some(prepared), Some(origin_offset)) = (zone.negative_soa(), origin_offset) {
            let mut buffer = [0u8; 600];
            if let Some(len) = prepared.write(origin_offset, &mut buffer) {
                let mark = self.encoder.offset();
                if self.encoder.emit_vec(&buffer[..len]).is_ok() {
                    self.count(Section::Authority, 1);
                } else {
                    self.overflowed(mark, Section::Authority);
                }
                return;
            }
        }
        if let Some(soa) = zone.soa_rrset() {
            self.rrset(
                Section::Authority,
                Owner::Name(zone.origin()),
                soa,
                zone.negative_ttl(),
            );
        }
    }

    /// Adds `records` to a section count.
    fn count(&mut self, section: Section, records: usize) {
        let added = u16::try_from(records).unwrap_or(u16::MAX);
        let count = match section {
            Section::Answer => &mut self.counts.answers,
            Section::Authority => &mut self.counts.authorities,
            Section::RequiredGlue | Section::Additional => &mut self.counts.additionals,
        };
        *count = count.saturating_add(added);
    }

    /// Appends OPT, writes the header; returns whether TC was set.
    fn finish(mut self, rcode: ResponseCode, authoritative: bool) -> Option<bool> {
        self.encoder.set_max_size(u16::MAX);
        if let Some(query_edns) = self.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(self.our_payload);
            edns.set_version(0);
            edns.set_dnssec_ok(query_edns.dnssec_ok);
            edns.set_rcode_high(rcode.high());
            if let Some(info_code) = self.extended_error {
                edns.options_mut().insert(EdnsOption::Unknown(
                    EDE_OPTION,
                    info_code.to_be_bytes().to_vec(),
                ));
            }
            edns.emit(&mut self.encoder).ok()?;
            self.counts.additionals = self.counts.additionals.saturating_add(1);
        }
        self.meta.response_code = rcode;
        self.meta.authoritative = authoritative;
        self.meta.truncation = self.truncated;
        self.meta.recursion_available = false;
        let header = Header {
            metadata: self.meta,
            counts: self.counts,
        };
        self.header.replace(&mut self.encoder, header).ok()?;
        Some(self.truncated)
    }
}

/// The RFC 1034 §4.3.2 algorithm over one zone. Returns (rcode, AA, outcome).
fn resolve(
    zone: &Zone,
    qname: &Name,
    qkey: &NameKey,
    qtype: RecordType,
    writer: &mut Writer<'_>,
) -> (ResponseCode, bool, Outcome) {
    let mut current: &Name = qname;
    let mut hop_key: Option<NameKey> = None;
    let mut visited: [Option<&Name>; MAX_CNAME_CHAIN + 1] = [None; MAX_CNAME_CHAIN + 1];
    let mut authoritative = true;
    for hop in 0..=MAX_CNAME_CHAIN {
        visited[hop] = Some(current);
        let key = match &hop_key {
            Some(key) => key,
            None => qkey,
        };
        let owner = if hop == 0 {
            Owner::Question
        } else {
            Owner::Name(current)
        };

        if zone.has_cuts() {
            if let Some(cut) = find_cut(zone, key, qtype) {
                if hop == 0 {
                    authoritative = false;
                }
                if let Some(ns) = cut.get(RecordType::NS) {
                    writer.rrset(Section::Authority, Owner::Name(&cut.owner), ns, ns.ttl());
                    additional_addresses(zone, ns, Some(&cut.owner), writer);
                }
                return (ResponseCode::NoError, authoritative, Outcome::Referral);
            }
        }

        let Some(node) = zone.node(key.full()).or_else(|| wildcard_for(zone, key)) else {
            negative(zone, writer);
            return (ResponseCode::NXDomain, authoritative, Outcome::NxDomain);
        };

        if qtype == RecordType::ANY {
            // RFC 8482 §4.2: answer with one RRset (the lowest type, as Knot DNS does) on every
            // transport, so ANY is no amplification lever.
            let Some(set) = node.rrsets.first() else {
                negative(zone, writer);
                return (ResponseCode::NoError, authoritative, Outcome::NoData);
            };
            writer.rrset(Section::Answer, owner, set, set.ttl());
            return (ResponseCode::NoError, authoritative, Outcome::Answer);
        }

        if let Some(set) = node.get(qtype) {
            if writer.rrset(Section::Answer, owner, set, set.ttl()) {
                additional_addresses(zone, set, None, writer);
            }
            return (ResponseCode::NoError, authoritative, Outcome::Answer);
        }

        if qtype != RecordType::CNAME {
            if let Some(cname) = node.get(RecordType::CNAME) {
                writer.rrset(Section::Answer, owner, cname, cname.ttl());
                let Some(RData::CNAME(target)) = cname.rdatas().first() else {
                    return (ResponseCode::NoError, authoritative, Outcome::Answer);
                };
                let target = &target.0;
                let looped = visited.iter().flatten().any(|seen| *seen == target);
                let next_key = NameKey::new(target);
                if looped || next_key.is_none() || !zone.origin().zone_of(target) {
                    return (ResponseCode::NoError, authoritative, Outcome::Answer);
                }
                hop_key = next_key;
                current = target;
                continue;
            }
        }

        negative(zone, writer);
        return (ResponseCode::NoError, authoritative, Outcome::NoData);
    }
    (ResponseCode::NoError, authoritative, Outcome::Answer)
}

/// The delegation point at or above the name (below the apex), if any. A DS query at the cut
/// itself is answered by the parent, so it is not a referral.
#[inline]
fn find_cut<'z>(zone: &'z Zone, key: &NameKey, qtype: RecordType) -> Option<&'z Node> {
    let labels = key.labels();
    for count in zone.origin_labels() + 1..=labels {
        match zone.node(key.ancestor(count)) {
            // Nothing exists here, so nothing exists below either.
            None => return None,
            Some(node) if node.cut => {
                if count == labels && qtype == RecordType::DS {
                    return None;
                }
                return Some(node);
            }
            Some(_) => {}
        }
    }
    None
}

/// RFC 4592: the wildcard child of the closest encloser of a name that does not exist.
fn wildcard_for<'z>(zone: &'z Zone, key: &NameKey) -> Option<&'z Node> {
    for count in (zone.origin_labels()..key.labels()).rev() {
        let encloser = key.ancestor(count);
        if let Some(node) = zone.node(encloser) {
            if !node.wildcard_child {
                return None;
            }
            let mut buffer = [0; 255];
            let len = wildcard_key(encloser, &mut buffer)?;
            return zone.node(&buffer[..len]);
        }
    }
    None
}

/// The SOA in the authority section of NXDOMAIN / NODATA, at the negative TTL.
fn negative(zone: &Zone, writer: &mut Writer<'_>) {
    writer.negative_soa(zone);
}

/// A/AAAA of in-zone NS, MX and SRV targets in the additional section. For a referral,
/// `cut` is the delegation point and addresses of targets below it are required glue.
fn additional_addresses(zone: &Zone, set: &RrSet, cut: Option<&Name>, writer: &mut Writer<'_>) {
    for rdata in set.rdatas() {
        let target = match rdata {
            RData::NS(ns) => &ns.0,
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            _ => return,
        };
        if !zone.origin().zone_of(target) {
            continue;
        }
        let Some(key) = NameKey::new(target) else {
            continue;
        };
        let section = match cut {
            Some(cut) if cut.zone_of(target) => Section::RequiredGlue,
            _ => Section::Additional,
        };
        if let Some(node) = zone.node(key.full()) {
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(addresses) = node.get(rtype) {
                    writer.rrset(
                        section,
                        Owner::Name(&node.owner),
                        addresses,
                        addresses.ttl(),
                    );
                }
            }
        }
    }
}

/// Rewrites a response in place into its RRL "slip" form: header and question only, TC=1,
/// so a legitimate client retries over TCP (BIND/Knot RRL behaviour).
pub fn truncate_for_slip(response: &mut Vec<u8>) {
    if response.len() < HEADER_LEN {
        return;
    }
    let qdcount = u16::from_be_bytes([response[4], response[5]]);
    let mut keep = HEADER_LEN;
    if qdcount == 1 {
        let mut decoder = BinDecoder::new(response);
        let parsed = Header::read(&mut decoder).and_then(|_| Query::read(&mut decoder));
        keep = if parsed.is_ok() {
            decoder.index()
        } else {
            HEADER_LEN
        };
    }
    response.truncate(keep);
    response[2] |= 0x02;
    let qd: u16 = if keep > HEADER_LEN { 1 } else { 0 };
    response[4..6].copy_from_slice(&qd.to_be_bytes());
    response[6..12].fill(0);
}

#[cfg(test)]
mod tests;
