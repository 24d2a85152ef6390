//! Fuzzes the whole answer path: any bytes, both transports, over a zone with wildcards,
//! CNAME chains and a delegation. Every emitted response must parse back.
#![no_main]

use std::str::FromStr;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use shardgate_dns::{answer, AnswerConfig, Catalog, Transport, Zone};

const ZONE: &str = "\
@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 300
@ IN NS ns1
@ IN MX 10 mail
ns1 IN A 192.0.2.53
mail IN A 192.0.2.25
www IN A 192.0.2.80
alias IN CNAME www
loop1 IN CNAME loop2
loop2 IN CNAME loop1
*.wild IN A 192.0.2.99
a.b.ent IN TXT \"x\"
sub IN NS ns.sub
ns.sub IN A 192.0.2.153
";

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let origin = Name::from_str("example.com.").expect("static origin");
        Catalog::new([Zone::from_master_text(&origin, ZONE, None).expect("static zone")])
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        if answer(
            catalog(),
            data,
            transport,
            &AnswerConfig::default(),
            &mut out,
        )
        .is_some()
        {
            assert!(
                Message::from_vec(&out).is_ok(),
                "emitted an unparseable response"
            );
            if transport == Transport::Udp {
                assert!(out.len() <= 1232);
            }
        }
    }
});
