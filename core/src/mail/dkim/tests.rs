//! Key generation, storage and signing, checked with mail-auth's verifier against the
//! published record (a pre-filled resolver cache: no network).

use std::sync::Arc;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, Parameters};

use super::*;
use crate::config::{DkimPolicy, DnsMode, PublishRecords};
use crate::mail::auth::TxtCache;
use crate::storage::memory::MemoryStorage;

fn domain(algorithm: DkimAlgorithm, bits: u32) -> MailDomain {
    MailDomain {
        name: "example.com".into(),
        dkim: DkimPolicy { selector: "sg".into(), algorithm, key_size: bits, rotate_days: 30, ..DkimPolicy::defaults() },
        sign: true,
        dns_mode: DnsMode::External,
        publish: PublishRecords::default(),
    }
}

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n";

/// Signs with the domain's active key and verifies against its published records.
async fn sign_and_verify(keys: &DkimKeys, domain: &MailDomain) -> DkimResult {
    let key = keys.signing_key(&domain.name).expect("load").expect("a key");
    let header = sign_message(&key, MESSAGE).expect("sign");
    let signed = [header.as_bytes(), MESSAGE].concat();
    let cache = TxtCache::default();
    for record in records::domain_records(domain, &keys.state(&domain.name).expect("state")) {
        let parsed = DomainKey::parse(record.value.as_bytes()).expect("record parses");
        cache.insert_txt(&record.name, parsed.into());
    }
    // Nothing answers on this address: any lookup not in the cache fails.
    let resolver = crate::mail::auth::authenticator_for(Some("127.0.0.1:9".parse().expect("addr"))).expect("resolver");
    let message = AuthenticatedMessage::parse(&signed).expect("parse");
    let output = resolver.verify_dkim(Parameters::new(&message).with_txt_cache(&cache)).await;
    output.first().map(|o| o.result().clone()).expect("one result")
}

fn verify_all(keys: &DkimKeys, domain: &MailDomain) -> DkimResult {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(sign_and_verify(keys, domain))
}

#[test]
fn ed25519_first_use_generates_a_private_key_and_signs_verifiably() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let keys = DkimKeys::new(storage.clone());
    let domain = domain(DkimAlgorithm::Ed25519Sha256, 0);
    let events = keys.maintain(&domain, 1_000).expect("maintain");
    assert_eq!(events, vec![KeyEvent::Generated { selector: "sg".into(), active: true }]);
    let key = StorageKey::new("dkim/example.com/sg.key").expect("key");
    assert_eq!(storage.privacy(&key).expect("privacy"), Privacy::Private);
    assert!(keys.maintain(&domain, 2_000).expect("again").is_empty());
    assert_eq!(verify_all(&keys, &domain), DkimResult::Pass);
}

#[test]
fn rsa_signatures_verify_across_a_rotation() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let keys = DkimKeys::new(storage);
    // ring signs with RSA keys of 2048 bits and more only.
    let domain = domain(DkimAlgorithm::RsaSha256, 2048);
    keys.maintain(&domain, 0).expect("first");
    let before = keys.signing_key("example.com").expect("load").expect("key");
    let signed_before = [sign_message(&before, MESSAGE).expect("sign").as_bytes(), MESSAGE].concat();
    // Rotation: published, then switched after the grace.
    let t1 = 30 * 86_400;
    keys.maintain(&domain, t1).expect("publish");
    assert_eq!(keys.signing_key("example.com").expect("load").expect("key").selector, "sg");
    let t2 = t1 + 48 * 3600;
    assert_eq!(keys.maintain(&domain, t2).expect("switch"), vec![KeyEvent::Activated { selector: "sg-2".into() }]);
    assert_eq!(keys.signing_key("example.com").expect("load").expect("key").selector, "sg-2");
    assert_eq!(verify_all(&keys, &domain), DkimResult::Pass);
    // Mail signed with the old key still verifies while it is retiring.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cache = TxtCache::default();
    for record in records::domain_records(&domain, &keys.state("example.com").expect("state")) {
        cache.insert_txt(&record.name, DomainKey::parse(record.value.as_bytes()).expect("parses").into());
    }
    let result = runtime.block_on(async {
        let resolver = crate::mail::auth::authenticator_for(Some("127.0.0.1:9".parse().expect("addr"))).expect("resolver");
        let message = AuthenticatedMessage::parse(&signed_before).expect("parse");
        let out = resolver.verify_dkim(Parameters::new(&message).with_txt_cache(&cache)).await;
        out.first().map(|o| o.result().clone())
    });
    assert_eq!(result, Some(DkimResult::Pass));
    // Withdrawn a week later: its record and private key are gone.
    let events = keys.maintain(&domain, t2 + 7 * 86_400).expect("withdraw");
    assert_eq!(events, vec![KeyEvent::Withdrawn { selector: "sg".into() }]);
    assert_eq!(keys.state("example.com").expect("state").keys.len(), 1);
}
