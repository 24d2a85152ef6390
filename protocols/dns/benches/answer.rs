//! The answer path end to end: parse query + look up + encode response, into a reused buffer.

use std::hint::black_box;
use std::str::FromStr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use shardgate_dns::{answer, AnswerConfig, Catalog, Transport, Zone};

const ZONE: &str = "\
@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 300
@ IN NS ns1
@ IN NS ns2
@ IN MX 10 mail
ns1 IN A 192.0.2.53
ns2 IN A 192.0.2.54
mail IN A 192.0.2.25
www IN A 192.0.2.80
alias IN CNAME www
*.wild IN A 192.0.2.99
";

fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_str(name).expect("bench name"),
        rtype,
    ));
    if edns {
        message.set_edns(Edns::new());
    }
    message.to_vec().expect("bench query encodes")
}

fn bench_answer(c: &mut Criterion) {
    let origin = Name::from_str("example.com.").expect("bench origin");
    let mut zone_text = String::from(ZONE);
    for i in 0..10_000 {
        zone_text.push_str(&format!("host{i} IN A 10.0.{}.{}\n", i / 256, i % 256));
    }
    let catalog =
        Catalog::new([Zone::from_master_text(&origin, &zone_text, None).expect("bench zone")]);
    let config = AnswerConfig::default();
    let cases = [
        ("a_hit", query("www.example.com.", RecordType::A, false)),
        (
            "a_hit_edns",
            query("host4711.example.com.", RecordType::A, true),
        ),
        (
            "nxdomain",
            query("missing.example.com.", RecordType::A, false),
        ),
        (
            "wildcard",
            query("anything.wild.example.com.", RecordType::A, false),
        ),
        ("cname", query("alias.example.com.", RecordType::A, false)),
        ("refused", query("example.org.", RecordType::A, false)),
    ];
    let mut group = c.benchmark_group("answer");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    for (label, bytes) in &cases {
        group.bench_function(*label, |b| {
            b.iter(|| {
                answer(
                    &catalog,
                    black_box(bytes),
                    Transport::Udp,
                    &config,
                    &mut out,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_answer);
criterion_main!(benches);
