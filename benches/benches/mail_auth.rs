//! Mail authentication benches (`cargo bench -p shardgate-benches --bench mail_auth`):
//!
//! - `dkim_sign`: a `DKIM-Signature` for a 10 KiB message with RSA-2048 and Ed25519 keys
//!   (`shardgate_core::mail::dkim::sign_message`, mail-auth 0.13 on ring);
//! - `inbound_checks`: the whole inbound check of that message signed with each key
//!   (`shardgate_core::mail::auth::authenticate`: SPF, DKIM, ARC, DMARC), DNS answers from
//!   the pre-filled TXT cache so only the verification work is measured.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::config::{DkimAlgorithm, DkimPolicy, DnsMode, MailDomain, PublishRecords};
use shardgate_core::mail::auth::{authenticate, authenticator_for, AuthResult, InboundFacts, TxtCache};
use shardgate_core::mail::dkim::{records, sign_message, DkimKeys};
use shardgate_core::storage::memory::MemoryStorage;

fn message(size: usize) -> Vec<u8> {
    let mut text = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: bench\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <b@example.org>\r\n\r\n".to_vec();
    while text.len() < size {
        text.extend_from_slice(b"A line of message text, long enough to look like a real one.\r\n");
    }
    text
}

struct Signed {
    name: &'static str,
    keys: DkimKeys,
    domain: MailDomain,
}

fn keys(name: &'static str, algorithm: DkimAlgorithm) -> Signed {
    let keys = DkimKeys::new(Arc::new(MemoryStorage::default()));
    let domain = MailDomain {
        name: "example.org".into(),
        dkim: DkimPolicy { selector: "bench".into(), algorithm, key_size: 2048, ..DkimPolicy::defaults() },
        sign: true,
        dns_mode: DnsMode::External,
        publish: PublishRecords::default(),
    };
    keys.maintain(&domain, 0).expect("key");
    Signed { name, keys, domain }
}

fn benches(c: &mut Criterion) {
    let text = message(10 * 1024);
    let all = [keys("rsa2048", DkimAlgorithm::RsaSha256), keys("ed25519", DkimAlgorithm::Ed25519Sha256)];
    let mut sign = c.benchmark_group("dkim_sign");
    sign.throughput(Throughput::Bytes(text.len() as u64));
    for signed in &all {
        let key = signed.keys.signing_key("example.org").expect("load").expect("key");
        sign.bench_function(signed.name, |b| b.iter(|| sign_message(&key, black_box(&text)).expect("sign")));
    }
    sign.finish();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let resolver = runtime.block_on(async { authenticator_for(Some("127.0.0.1:9".parse().expect("addr"))) }).expect("resolver");
    let facts = InboundFacts {
        client_ip: "192.0.2.1".parse().expect("ip"),
        helo: "mail.example.org".into(),
        mail_from: "alice@example.org".into(),
        hostname: "mx.example.net".into(),
    };
    let mut verify = c.benchmark_group("inbound_checks");
    verify.throughput(Throughput::Bytes(text.len() as u64));
    for signed in &all {
        let key = signed.keys.signing_key("example.org").expect("load").expect("key");
        let message = [sign_message(&key, &text).expect("sign").into_bytes(), text.clone()].concat();
        let cache = TxtCache::default();
        for record in records::domain_records(&signed.domain, &signed.keys.state("example.org").expect("state")) {
            assert!(cache.insert_text_record(&record.name, &record.value));
        }
        assert!(cache.insert_text_record("example.org", "v=spf1 ip4:192.0.2.1 -all"));
        assert!(cache.insert_text_record("_dmarc.example.org", "v=DMARC1; p=reject"));
        cache.insert_not_found("_dmarc.org");
        let verdict = runtime.block_on(authenticate(&resolver, &cache, &facts, &message));
        assert_eq!((verdict.dkim, verdict.dmarc), (AuthResult::Pass, AuthResult::Pass), "{}", verdict.header);
        verify.bench_function(signed.name, |b| b.iter(|| runtime.block_on(authenticate(&resolver, &cache, &facts, black_box(&message)))));
    }
    verify.finish();
}

criterion_group!(mail_auth, benches);
criterion_main!(mail_auth);
