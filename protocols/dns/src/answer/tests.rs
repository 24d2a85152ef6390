//! Behaviour tests of the answer path, with queries built and responses parsed by hickory-proto.

use super::*;
use crate::zone::tests::example_zone;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::A;
use std::str::FromStr;

fn catalog() -> Catalog {
    Catalog::new([example_zone()])
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn query(qname: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    message
}

fn with_edns(mut message: Message, payload: u16, version: u8, dnssec_ok: bool) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    edns.set_version(version);
    edns.set_dnssec_ok(dnssec_ok);
    message.set_edns(edns);
    message
}

fn ask_bytes(
    catalog: &Catalog,
    bytes: &[u8],
    transport: Transport,
) -> Option<(Message, ResponseInfo, usize)> {
    let mut out = Vec::new();
    let info = answer(
        catalog,
        bytes,
        transport,
        &AnswerConfig::default(),
        &mut out,
    )?;
    let message = Message::from_vec(&out).unwrap_or_else(|e| panic!("unparseable response: {e}"));
    Some((message, info, out.len()))
}

fn ask(message: &Message, transport: Transport) -> (Message, ResponseInfo) {
    let (response, info, _) = ask_bytes(&catalog(), &message.to_vec().unwrap(), transport).unwrap();
    (response, info)
}

fn udp(qname: &str, qtype: RecordType) -> Message {
    ask(&query(qname, qtype), Transport::Udp).0
}

fn rcode(message: &Message) -> ResponseCode {
    message.metadata.response_code
}

fn answer_types(message: &Message) -> Vec<RecordType> {
    message.answers.iter().map(Record::record_type).collect()
}

fn assert_negative(message: &Message, code: ResponseCode) {
    assert_eq!(rcode(message), code);
    assert!(message.metadata.authoritative);
    assert_eq!(message.authorities.len(), 1, "{message:?}");
    let soa = &message.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name, name("example.com."));
    assert_eq!(
        soa.ttl, 300,
        "negative TTL = min(SOA TTL 3600, minimum 300)"
    );
    let RData::SOA(rdata) = &soa.data else {
        panic!("not SOA")
    };
    assert_eq!(rdata, example_zone().soa());
}

#[test]
fn negative_soa_outside_the_zone_is_encoded_too() {
    let zone = Zone::from_master_text(
        &name("out.test."),
        "@ 600 IN SOA ns.other.net. host.other.net. 9 1 2 3 60\n",
        None,
    )
    .unwrap();
    let catalog = Catalog::new([zone]);
    let bytes = query("X.Out.Test.", RecordType::A).to_vec().unwrap();
    let (response, _, _) = ask_bytes(&catalog, &bytes, Transport::Udp).unwrap();
    assert_eq!(rcode(&response), ResponseCode::NXDomain);
    let RData::SOA(soa) = &response.authorities[0].data else {
        panic!("not SOA")
    };
    assert_eq!((soa.serial, soa.minimum), (9, 60));
    assert_eq!(soa.mname, name("ns.other.net."));
    assert_eq!(response.authorities[0].ttl, 60);
}

#[test]
fn positive_answer_sets_aa_echoes_id_rd_and_case() {
    let (response, info) = ask(&query("WwW.ExAmPlE.cOm.", RecordType::A), Transport::Udp);
    assert_eq!(
        info,
        ResponseInfo {
            outcome: Outcome::Answer,
            truncated: false
        }
    );
    let meta = &response.metadata;
    assert_eq!(meta.id, 0xBEEF);
    assert_eq!(meta.message_type, MessageType::Response);
    assert!(
        meta.authoritative
            && meta.recursion_desired
            && !meta.recursion_available
            && !meta.truncation
    );
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.queries[0]
        .name()
        .eq_case(&name("WwW.ExAmPlE.cOm.")));
    assert_eq!(response.answers.len(), 2);
    for record in &response.answers {
        assert!(
            record.name.eq_case(&name("WwW.ExAmPlE.cOm.")),
            "owner keeps the query's case"
        );
        assert_eq!(record.ttl, 300);
    }
    let addresses: Vec<RData> = response.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(
        addresses,
        vec![
            RData::A(A::new(192, 0, 2, 80)),
            RData::A(A::new(192, 0, 2, 81))
        ]
    );
    assert!(response.authorities.is_empty() && response.additionals.is_empty());
}

#[test]
fn names_compress_against_the_question_case_insensitively_like_knot() {
    let nx = udp("NoPe.ExAmPlE.CoM.", RecordType::A);
    let soa = &nx.authorities[0];
    assert!(soa.name.eq_case(&name("ExAmPlE.CoM.")), "{}", soa.name);
    let RData::SOA(rdata) = &soa.data else {
        panic!("not SOA")
    };
    assert!(
        rdata.mname.eq_case(&name("ns1.ExAmPlE.CoM.")),
        "{}",
        rdata.mname
    );
    let chain = udp("ALIAS.EXAMPLE.COM.", RecordType::A);
    let RData::CNAME(target) = &chain.answers[0].data else {
        panic!("not CNAME")
    };
    assert!(target.0.eq_case(&name("www.EXAMPLE.COM.")), "{}", target.0);
    assert!(chain.answers[1].name.eq_case(&name("www.EXAMPLE.COM.")));
}

#[test]
fn nxdomain_and_nodata_carry_soa() {
    assert_negative(
        &udp("missing.example.com.", RecordType::A),
        ResponseCode::NXDomain,
    );
    let nodata = udp("www.example.com.", RecordType::MX);
    assert_negative(&nodata, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
}

#[test]
fn empty_non_terminals_are_nodata_and_block_wildcards() {
    // b.ent exists only because a.b.ent does.
    assert_negative(
        &udp("b.ent.example.com.", RecordType::A),
        ResponseCode::NoError,
    );
    // Closest encloser of x.b.ent is b.ent, which has no wildcard child.
    assert_negative(
        &udp("x.b.ent.example.com.", RecordType::A),
        ResponseCode::NXDomain,
    );
    // ... while x.ent matches *.ent.
    let response = udp("x.ent.example.com.", RecordType::A);
    assert_eq!(response.answers[0].data, RData::A(A::new(192, 0, 2, 8)));
}

#[test]
fn wildcards_synthesize_at_qname_only_where_names_do_not_exist() {
    let response = udp("Foo.Wild.example.com.", RecordType::A);
    assert_eq!(rcode(&response), ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert_eq!(response.answers.len(), 1);
    assert!(response.answers[0]
        .name
        .eq_case(&name("Foo.Wild.example.com.")));
    assert_eq!(response.answers[0].data, RData::A(A::new(192, 0, 2, 99)));
    // Several labels below the closest encloser still match.
    assert_eq!(udp("a.b.wild.example.com.", RecordType::A).answers.len(), 1);
    // Wildcard NODATA.
    assert_negative(
        &udp("foo.wild.example.com.", RecordType::MX),
        ResponseCode::NoError,
    );
    // An existing name is never wildcard-expanded.
    let exists = udp("exists.wild.example.com.", RecordType::A);
    assert_eq!(exists.answers[0].data, RData::A(A::new(192, 0, 2, 100)));
    assert_negative(
        &udp("exists.wild.example.com.", RecordType::TXT),
        ResponseCode::NoError,
    );
    // Querying the wildcard itself is an exact match.
    assert_eq!(udp("*.wild.example.com.", RecordType::TXT).answers.len(), 1);
    // A wildcard CNAME is followed.
    let cname = udp("x.wcname.example.com.", RecordType::A);
    assert_eq!(
        answer_types(&cname),
        vec![RecordType::CNAME, RecordType::A, RecordType::A]
    );
    assert!(cname.answers[0]
        .name
        .eq_case(&name("x.wcname.example.com.")));
}

#[test]
fn cname_chains_are_followed_inside_the_zone() {
    let alias = udp("alias.example.com.", RecordType::A);
    assert_eq!(
        answer_types(&alias),
        vec![RecordType::CNAME, RecordType::A, RecordType::A]
    );
    assert_eq!(alias.answers[1].name, name("www.example.com."));
    assert!(alias.metadata.authoritative);

    let chain = udp("chain1.example.com.", RecordType::AAAA);
    assert_eq!(
        answer_types(&chain),
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::AAAA]
    );

    let outside = udp("outside.example.com.", RecordType::A);
    assert_eq!(answer_types(&outside), vec![RecordType::CNAME]);
    assert_eq!(rcode(&outside), ResponseCode::NoError);
    assert!(outside.authorities.is_empty());

    // The rcode is that of the last name in the chain (RFC 6604).
    let dangling = udp("dangling.example.com.", RecordType::A);
    assert_eq!(answer_types(&dangling), vec![RecordType::CNAME]);
    assert_negative(&dangling, ResponseCode::NXDomain);

    // CNAME target exists but lacks the type: NODATA after the CNAME.
    let nodata = udp("alias.example.com.", RecordType::MX);
    assert_eq!(answer_types(&nodata), vec![RecordType::CNAME]);
    assert_negative(&nodata, ResponseCode::NoError);

    let looped = udp("loop1.example.com.", RecordType::A);
    assert_eq!(
        answer_types(&looped),
        vec![RecordType::CNAME, RecordType::CNAME]
    );
    assert_eq!(rcode(&looped), ResponseCode::NoError);

    assert_eq!(
        answer_types(&udp("alias.example.com.", RecordType::CNAME)),
        vec![RecordType::CNAME]
    );
}

#[test]
fn delegations_are_referrals_with_glue_and_no_aa() {
    for (qname, qtype) in [
        ("host.sub.example.com.", RecordType::A),
        ("sub.example.com.", RecordType::NS),
        ("deep.host.sub.example.com.", RecordType::MX),
    ] {
        let (response, info) = ask(&query(qname, qtype), Transport::Udp);
        assert_eq!(info.outcome, Outcome::Referral, "{qname}");
        assert_eq!(rcode(&response), ResponseCode::NoError);
        assert!(!response.metadata.authoritative, "{qname}");
        assert!(response.answers.is_empty());
        assert_eq!(response.authorities.len(), 2);
        assert!(response
            .authorities
            .iter()
            .all(|r| r.record_type() == RecordType::NS && r.name == name("sub.example.com.")));
        assert_eq!(
            response.additionals.len(),
            1,
            "glue for the in-bailiwick NS only"
        );
        assert_eq!(response.additionals[0].name, name("ns.sub.example.com."));
    }
    // DS at the cut is the parent's business: authoritative NODATA.
    assert_negative(
        &udp("sub.example.com.", RecordType::DS),
        ResponseCode::NoError,
    );
}

#[test]
fn additional_section_has_in_zone_addresses_of_ns_mx_srv() {
    let ns = udp("example.com.", RecordType::NS);
    assert_eq!(ns.answers.len(), 2);
    assert_eq!(ns.additionals.len(), 1);
    assert_eq!(ns.additionals[0].name, name("ns1.example.com."));
    let mx = udp("example.com.", RecordType::MX);
    let extra: Vec<RecordType> = mx.additionals.iter().map(Record::record_type).collect();
    assert_eq!(extra, vec![RecordType::A, RecordType::AAAA]);
    let srv = udp("_sip._tcp.example.com.", RecordType::SRV);
    assert_eq!(srv.additionals.len(), 3);
}

#[test]
fn record_types_round_trip() {
    for (qname, qtype, count) in [
        ("example.com.", RecordType::SOA, 1),
        ("example.com.", RecordType::CAA, 1),
        ("example.com.", RecordType::TXT, 1),
        ("mail.example.com.", RecordType::AAAA, 1),
        ("4.3.2.1.example.com.", RecordType::PTR, 1),
        ("txt.example.com.", RecordType::TXT, 1),
    ] {
        let response = udp(qname, qtype);
        assert_eq!(rcode(&response), ResponseCode::NoError, "{qname} {qtype}");
        assert_eq!(
            answer_types(&response),
            vec![qtype; count],
            "{qname} {qtype}"
        );
    }
}

#[test]
fn any_is_one_rrset_on_every_transport() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let (any, info) = ask(&query("example.com.", RecordType::ANY), transport);
        assert_eq!(info.outcome, Outcome::Answer);
        assert_eq!(
            answer_types(&any),
            vec![RecordType::A],
            "lowest type first, like Knot"
        );
    }
    let (cname, _) = ask(
        &query("alias.example.com.", RecordType::ANY),
        Transport::Udp,
    );
    assert_eq!(answer_types(&cname), vec![RecordType::CNAME]);
    assert_negative(
        &udp("b.ent.example.com.", RecordType::ANY),
        ResponseCode::NoError,
    );
    assert_negative(
        &udp("nope.example.com.", RecordType::ANY),
        ResponseCode::NXDomain,
    );
}

#[test]
fn refused_carries_extended_error_not_authoritative_with_edns() {
    let (response, _) = ask(
        &with_edns(query("example.org.", RecordType::A), 1232, 0, false),
        Transport::Udp,
    );
    assert_eq!(rcode(&response), ResponseCode::Refused);
    let edns = response.edns.as_ref().expect("OPT");
    let option = edns
        .options()
        .get(hickory_proto::rr::rdata::opt::EdnsCode::from(15));
    assert!(option.is_some(), "{edns:?}");
}

#[test]
fn outside_our_zones_is_refused_without_aa() {
    for qname in ["example.org.", "com.", "."] {
        let (response, info) = ask(&query(qname, RecordType::A), Transport::Udp);
        assert_eq!(info.outcome, Outcome::Refused);
        assert_eq!(rcode(&response), ResponseCode::Refused);
        assert!(!response.metadata.authoritative && !response.metadata.recursion_available);
        assert!(response.metadata.recursion_desired);
        assert_eq!(response.queries.len(), 1);
    }
    let mut chaos = query("version.bind.", RecordType::TXT);
    let mut q = chaos.queries[0].clone();
    q.set_query_class(DNSClass::CH);
    chaos.queries = vec![q];
    assert_eq!(rcode(&ask(&chaos, Transport::Udp).0), ResponseCode::Refused);

    // Class ANY is answered from IN data, as Knot does.
    let mut any_class = query("www.example.com.", RecordType::A);
    let mut q = any_class.queries[0].clone();
    q.set_query_class(DNSClass::ANY);
    any_class.queries = vec![q];
    let (response, _) = ask(&any_class, Transport::Udp);
    assert_eq!(
        (rcode(&response), response.answers.len()),
        (ResponseCode::NoError, 2)
    );
}

#[test]
fn stats_count_outcomes_and_drops() {
    let catalog = catalog();
    let mut stats = AnswerStats::default();
    let mut out = Vec::new();
    for (qname, qtype) in [
        ("www.example.com.", RecordType::A),
        ("nope.example.com.", RecordType::A),
        ("example.org.", RecordType::A),
    ] {
        let bytes = query(qname, qtype).to_vec().unwrap();
        stats.record(answer(
            &catalog,
            &bytes,
            Transport::Udp,
            &AnswerConfig::default(),
            &mut out,
        ));
    }
    stats.record(answer(
        &catalog,
        &[0; 5],
        Transport::Udp,
        &AnswerConfig::default(),
        &mut out,
    ));
    let mut total = AnswerStats::default();
    total.merge(&stats);
    total.merge(&stats);
    assert_eq!(
        (stats.answers, stats.nxdomain, stats.refused, stats.dropped),
        (1, 1, 1, 1)
    );
    assert_eq!(total.answers, 2);
}

#[test]
fn opcodes_transfers_and_malformed_queries() {
    let mut notify = query("example.com.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    let (response, info) = ask(&notify, Transport::Udp);
    assert_eq!(
        (info.outcome, rcode(&response)),
        (Outcome::NotImp, ResponseCode::NotImp)
    );
    assert_eq!(response.metadata.op_code, OpCode::Notify);
    assert_eq!(response.metadata.id, 0xBEEF);

    let mut update = query("example.com.", RecordType::SOA);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(rcode(&ask(&update, Transport::Udp).0), ResponseCode::NotImp);

    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        assert_eq!(
            rcode(&ask(&query("example.com.", qtype), Transport::Tcp).0),
            ResponseCode::Refused
        );
    }

    let mut none = query("example.com.", RecordType::A);
    none.queries.clear();
    let (response, info) = ask(&none, Transport::Udp);
    assert_eq!(
        (info.outcome, rcode(&response)),
        (Outcome::FormErr, ResponseCode::FormErr)
    );
    assert!(response.metadata.recursion_desired && response.metadata.id == 0xBEEF);

    let mut two = query("example.com.", RecordType::A);
    two.add_query(Query::query(name("www.example.com."), RecordType::A));
    assert_eq!(rcode(&ask(&two, Transport::Udp).0), ResponseCode::FormErr);

    let mut with_answer = query("example.com.", RecordType::A);
    with_answer.add_answer(Record::from_rdata(
        name("example.com."),
        1,
        RData::A(A::new(1, 2, 3, 4)),
    ));
    assert_eq!(
        rcode(&ask(&with_answer, Transport::Udp).0),
        ResponseCode::FormErr
    );

    let bytes = query("www.example.com.", RecordType::A).to_vec().unwrap();
    let cut = &bytes[..bytes.len() - 3];
    let (response, _, _) = ask_bytes(&catalog(), cut, Transport::Udp).unwrap();
    assert_eq!(rcode(&response), ResponseCode::FormErr);

    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    let (response, _, _) = ask_bytes(&catalog(), &trailing, Transport::Udp).unwrap();
    assert_eq!(
        (rcode(&response), response.queries.len()),
        (ResponseCode::FormErr, 1)
    );

    // Header too short, or a response: dropped.
    assert!(ask_bytes(&catalog(), &bytes[..11], Transport::Udp).is_none());
    let mut response_bit = bytes.clone();
    response_bit[2] |= 0x80;
    assert!(ask_bytes(&catalog(), &response_bit, Transport::Udp).is_none());

    // A question name pointing at itself (compression loop) and a 64-byte label.
    let mut looped = bytes[..12].to_vec();
    looped.extend_from_slice(&[0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01]);
    assert_eq!(
        rcode(&ask_bytes(&catalog(), &looped, Transport::Udp).unwrap().0),
        ResponseCode::FormErr
    );
    let mut long_label = bytes[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(
        rcode(
            &ask_bytes(&catalog(), &long_label, Transport::Udp)
                .unwrap()
                .0
        ),
        ResponseCode::FormErr
    );
}

#[test]
fn edns_payload_do_bit_and_badvers() {
    let (response, _) = ask(
        &with_edns(query("www.example.com.", RecordType::A), 4096, 0, true),
        Transport::Udp,
    );
    let edns = response.edns.as_ref().expect("OPT echoed");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    assert!(edns.flags().dnssec_ok);
    assert_eq!(response.answers.len(), 2);

    let (plain, _) = ask(&query("www.example.com.", RecordType::A), Transport::Udp);
    assert!(plain.edns.is_none());

    let (badvers, info) = ask(
        &with_edns(query("www.example.com.", RecordType::A), 1232, 1, false),
        Transport::Udp,
    );
    assert_eq!(info.outcome, Outcome::BadVers);
    // 16 is both BADVERS and BADSIG; hickory decodes it as the latter.
    assert_eq!(u16::from(rcode(&badvers)), 16);
    assert_eq!(badvers.edns.as_ref().map(Edns::version), Some(0));
    assert!(badvers.answers.is_empty());

    let mut two_opts = with_edns(query("www.example.com.", RecordType::A), 1232, 0, false)
        .to_vec()
        .unwrap();
    let opt = two_opts[two_opts.len() - 11..].to_vec();
    two_opts.extend_from_slice(&opt);
    two_opts[11] = 2;
    assert_eq!(
        rcode(&ask_bytes(&catalog(), &two_opts, Transport::Udp).unwrap().0),
        ResponseCode::FormErr
    );
}

fn big_catalog() -> Catalog {
    let mut text =
        String::from("@ 60 IN SOA ns hostmaster 1 2 3 4 5\n@ IN NS ns\nns IN A 192.0.2.1\n");
    text.push_str("sub IN NS ns1.sub\nsub IN NS ns2.sub\n");
    for i in 0..12 {
        text.push_str(&format!(
            "mx IN MX {i} mail{i}\nmail{i} IN A 198.51.100.{i}\nmail{i} IN AAAA 2001:db8::{i}\n"
        ));
    }
    for i in 0..60 {
        text.push_str(&format!("ns1.sub IN A 203.0.113.{i}\n"));
        text.push_str(&format!("many IN A 192.0.2.{i}\n"));
        text.push_str(&format!(
            "big IN TXT \"{}\"\n",
            format!("{i:03}").repeat(50)
        ));
    }
    Catalog::new([Zone::from_master_text(&name("big.test."), &text, None).unwrap()])
}

#[test]
fn udp_truncates_with_tc_and_tcp_does_not() {
    let catalog = big_catalog();
    let plain = query("many.big.test.", RecordType::A).to_vec().unwrap();
    let (response, info, len) = ask_bytes(&catalog, &plain, Transport::Udp).unwrap();
    assert!(info.truncated && response.metadata.truncation);
    assert!(len <= 512);
    assert!(response.answers.is_empty(), "whole RRsets only");
    assert_eq!(response.queries.len(), 1);

    // EDNS 4096 is capped at our 1232.
    let edns = with_edns(query("big.big.test.", RecordType::TXT), 4096, 0, false)
        .to_vec()
        .unwrap();
    let (response, info, len) = ask_bytes(&catalog, &edns, Transport::Udp).unwrap();
    assert!(info.truncated && len <= 1232);
    assert!(response.edns.is_some(), "OPT survives truncation");

    // 60 A records (~1000 bytes) fit in 1232.
    let edns = with_edns(query("many.big.test.", RecordType::A), 4096, 0, false)
        .to_vec()
        .unwrap();
    let (response, info, _) = ask_bytes(&catalog, &edns, Transport::Udp).unwrap();
    assert!(!info.truncated);
    assert_eq!(response.answers.len(), 60);

    let (response, info, len) = ask_bytes(&catalog, &plain, Transport::Tcp).unwrap();
    assert!(!info.truncated && len > 512);
    assert_eq!(response.answers.len(), 60);
    let txt = query("big.big.test.", RecordType::TXT).to_vec().unwrap();
    let (response, _, len) = ask_bytes(&catalog, &txt, Transport::Tcp).unwrap();
    assert!(len > 9000);
    assert_eq!(response.answers.len(), 60);
}

#[test]
fn additional_data_is_best_effort_but_missing_glue_truncates() {
    let catalog = big_catalog();
    // 12 MX + 24 address RRsets do not fit in 512: answer complete, additional partial, no TC;
    // a smaller A set after an AAAA that did not fit is still added (as Knot does).
    let mx = query("mx.big.test.", RecordType::MX).to_vec().unwrap();
    let (response, info, len) = ask_bytes(&catalog, &mx, Transport::Udp).unwrap();
    assert!(!info.truncated && len <= 512);
    assert_eq!(response.answers.len(), 12);
    assert!(!response.additionals.is_empty() && response.additionals.len() < 24);
    // Referral whose in-domain glue (60 A records) does not fit: TC (RFC 9471).
    let referral = query("x.sub.big.test.", RecordType::A).to_vec().unwrap();
    let (response, info, _) = ask_bytes(&catalog, &referral, Transport::Udp).unwrap();
    assert!(info.truncated && response.metadata.truncation);
    assert_eq!(response.authorities.len(), 2);
    assert!(response.additionals.is_empty());
    let (response, info, _) = ask_bytes(&catalog, &referral, Transport::Tcp).unwrap();
    assert!(!info.truncated);
    assert_eq!(response.additionals.len(), 60);
}

#[test]
fn slip_form_keeps_only_header_and_question() {
    let mut out = Vec::new();
    let bytes = query("www.example.com.", RecordType::A).to_vec().unwrap();
    answer(
        &catalog(),
        &bytes,
        Transport::Udp,
        &AnswerConfig::default(),
        &mut out,
    )
    .unwrap();
    truncate_for_slip(&mut out);
    let response = Message::from_vec(&out).unwrap();
    assert!(response.metadata.truncation);
    assert_eq!(response.queries.len(), 1);
    assert!(response.answers.is_empty() && response.additionals.is_empty());
    assert_eq!(response.metadata.id, 0xBEEF);
}

#[test]
fn dynamic_snapshot_is_answered() {
    let catalog = catalog()
        .with_record_added(Record::from_rdata(
            name("_acme-challenge.example.com."),
            60,
            RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["challenge".into()])),
        ))
        .unwrap();
    let bytes = query("_acme-challenge.example.com.", RecordType::TXT)
        .to_vec()
        .unwrap();
    let (response, _, _) = ask_bytes(&catalog, &bytes, Transport::Udp).unwrap();
    assert_eq!(answer_types(&response), vec![RecordType::TXT]);
    let soa = ask_bytes(
        &catalog,
        &query("example.com.", RecordType::SOA).to_vec().unwrap(),
        Transport::Udp,
    )
    .unwrap()
    .0;
    let RData::SOA(soa) = &soa.answers[0].data else {
        panic!("no SOA")
    };
    assert_eq!(soa.serial, 2024010102);
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn never_panics_on_mutated_or_random_input_and_valid_queries_round_trip() {
    let catalog = catalog();
    let config = AnswerConfig::default();
    let mut rng = Rng(0x005E_ED0F_D115);
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::NS,
        RecordType::CNAME,
    ];
    let names = [
        "www.example.com.",
        "Foo.wild.example.com.",
        "alias.example.com.",
        "x.sub.example.com.",
        "nope.example.com.",
        "example.org.",
        "chain1.example.com.",
    ];
    let mut out = Vec::with_capacity(4096);
    for round in 0..4000 {
        let qname = names[rng.below(names.len())];
        let qtype = types[rng.below(types.len())];
        let mut message = query(qname, qtype);
        message.metadata.id = rng.next() as u16;
        if round % 2 == 0 {
            message = with_edns(message, 512 + rng.below(4000) as u16, 0, round % 4 == 0);
        }
        let valid = message.to_vec().unwrap();
        let transport = if round % 3 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };

        // Valid query: the response parses, echoes id and question, and fits the transport.
        let info =
            answer(&catalog, &valid, transport, &config, &mut out).expect("valid query answered");
        let response = Message::from_vec(&out).expect("response parses");
        assert_eq!(response.metadata.id, message.metadata.id);
        assert_eq!(response.queries, message.queries);
        if transport == Transport::Udp {
            assert!(out.len() <= 1232);
        }
        let _ = info;

        // Mutations: flip, insert, delete, truncate, splice random bytes.
        let mut mutated = valid.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 if !mutated.is_empty() => {
                    let i = rng.below(mutated.len());
                    mutated[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(mutated.len() + 1);
                    mutated.insert(i, rng.next() as u8);
                }
                2 if !mutated.is_empty() => {
                    let i = rng.below(mutated.len());
                    mutated.remove(i);
                }
                3 => mutated.truncate(rng.below(mutated.len() + 1)),
                _ if !mutated.is_empty() => {
                    let i = rng.below(mutated.len());
                    mutated[i] = rng.next() as u8;
                }
                _ => {}
            }
        }
        if answer(&catalog, &mutated, transport, &config, &mut out).is_some() {
            Message::from_vec(&out).expect("every response we emit parses");
        }

        let random: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
        if answer(&catalog, &random, transport, &config, &mut out).is_some() {
            Message::from_vec(&out).expect("every response we emit parses");
        }
    }
}
