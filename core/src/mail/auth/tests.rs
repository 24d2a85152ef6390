//! SPF/DKIM/DMARC outcomes with fake DNS data: a pre-filled TXT cache, and a resolver address
//! nothing answers on (so any lookup outside the cache is a `temperror`, never the network).

use std::sync::Arc;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::spf::Spf;

use super::*;
use crate::config::{DkimAlgorithm, DkimPolicy, DnsMode, MailDomain, PublishRecords};
use crate::mail::dkim::{records, sign_message, DkimKeys};
use crate::storage::memory::MemoryStorage;

const GOOD_IP: &str = "192.0.2.1";
const BAD_IP: &str = "198.51.100.7";

fn message() -> Vec<u8> {
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHi.\r\n".to_vec()
}

/// A cache with example.org's SPF (only GOOD_IP), DMARC policy `policy`, and the DKIM key of
/// `keys`; returns the message signed with that key.
fn setup(policy: &str) -> (TxtCache, Vec<u8>) {
    let keys = DkimKeys::new(Arc::new(MemoryStorage::default()));
    let domain = MailDomain {
        name: "example.org".into(),
        dkim: DkimPolicy { selector: "sel".into(), algorithm: DkimAlgorithm::Ed25519Sha256, ..DkimPolicy::defaults() },
        sign: true,
        dns_mode: DnsMode::External,
        publish: PublishRecords::default(),
    };
    keys.maintain(&domain, 0).expect("key");
    let cache = TxtCache::default();
    for record in records::domain_records(&domain, &keys.state("example.org").expect("state")) {
        cache.insert_txt(&record.name, DomainKey::parse(record.value.as_bytes()).expect("dkim record").into());
    }
    cache.insert_txt("example.org", Spf::parse(format!("v=spf1 ip4:{GOOD_IP} -all").as_bytes()).expect("spf").into());
    assert!(cache.insert_text_record("_dmarc.example.org", &format!("v=DMARC1; p={policy}")));
    assert!(!cache.insert_text_record("junk.example.org", "hello"));
    // The DMARC tree walk (RFC 9989) goes on to the parent: no record there.
    cache.insert_not_found("_dmarc.org");
    let key = keys.signing_key("example.org").expect("load").expect("key");
    let signed = [sign_message(&key, &message()).expect("sign").into_bytes(), message()].concat();
    (cache, signed)
}

fn check(cache: &TxtCache, ip: &str, mail_from: &str, message: &[u8]) -> AuthVerdict {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let resolver = authenticator_for(Some("127.0.0.1:9".parse().expect("addr"))).expect("resolver");
        let facts = InboundFacts {
            client_ip: ip.parse().expect("ip"),
            helo: "mail.example.org".into(),
            mail_from: mail_from.into(),
            hostname: "mx.example.net".into(),
        };
        authenticate(&resolver, cache, &facts, message).await
    })
}

#[test]
fn aligned_spf_and_dkim_pass_dmarc() {
    let (cache, signed) = setup("reject");
    let verdict = check(&cache, GOOD_IP, "alice@example.org", &signed);
    assert_eq!((verdict.spf, verdict.dkim, verdict.dmarc), (AuthResult::Pass, AuthResult::Pass, AuthResult::Pass));
    assert_eq!(verdict.disposition, Disposition::Accept);
    assert!(verdict.header.starts_with("Authentication-Results: mx.example.net;"), "{}", verdict.header);
    for needle in ["spf=pass", "dkim=pass", "dmarc=pass", "header.d=example.org"] {
        assert!(verdict.header.contains(needle), "{needle} missing in {}", verdict.header);
    }
    assert!(verdict.header.ends_with("\r\n"));
}

#[test]
fn dkim_alone_passes_dmarc_when_spf_fails() {
    let (cache, signed) = setup("reject");
    let verdict = check(&cache, BAD_IP, "alice@example.org", &signed);
    assert_eq!((verdict.spf, verdict.dkim, verdict.dmarc), (AuthResult::Fail, AuthResult::Pass, AuthResult::Pass));
}

#[test]
fn unsigned_mail_from_a_foreign_ip_fails_dmarc_reject() {
    let (cache, _) = setup("reject");
    let verdict = check(&cache, BAD_IP, "alice@example.org", &message());
    assert_eq!((verdict.spf, verdict.dkim, verdict.dmarc), (AuthResult::Fail, AuthResult::None, AuthResult::Fail));
    assert_eq!(verdict.disposition, Disposition::Reject);
    assert!(verdict.header.contains("dmarc=fail"), "{}", verdict.header);
}

#[test]
fn quarantine_policy_gives_quarantine() {
    let (cache, _) = setup("quarantine");
    let verdict = check(&cache, BAD_IP, "alice@example.org", &message());
    assert_eq!(verdict.disposition, Disposition::Quarantine);
}

#[test]
fn a_tampered_body_fails_dkim() {
    let (cache, mut signed) = setup("none");
    let len = signed.len();
    signed[len - 4] = b'!';
    let verdict = check(&cache, GOOD_IP, "alice@example.org", &signed);
    // mail-auth reports a body hash mismatch as `neutral` (RFC 6376 §3.7 leaves it open).
    assert!(matches!(verdict.dkim, AuthResult::Fail | AuthResult::Neutral), "{:?}", verdict.dkim);
    // SPF still aligns: DMARC passes, and p=none never rejects.
    assert_eq!(verdict.dmarc, AuthResult::Pass);
}

#[test]
fn result_names_round_trip() {
    for name in ["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"] {
        assert_eq!(AuthResult::parse(name).map(AuthResult::as_str), Some(name));
    }
    assert_eq!(AuthResult::parse("PASS"), None);
}

#[test]
fn routes_match_on_check_results_and_unchecked_mail_matches_none() {
    use crate::mail::routes::{resolve_candidates, AuthFacts, ContentFacts};
    let text = "[email]\nhostname = \"mx.example.test\"\n[email.ports]\nsmtp = 2525\n\
        [[email.routes]]\nname = \"suspect\"\npriority = 5\nmatch = { dmarc = \"fail\", spf = [\"fail\", \"softfail\"] }\naction = { type = \"deliver\" }\n\
        [[email.routes]]\nname = \"rest\"\naction = { type = \"process\", scan = true }\n";
    let config = crate::config::Config::parse(text, "test.toml").expect("valid");
    let routes = &config.email.as_ref().expect("email").routes;
    assert!(routes[1].scan && !routes[0].scan);
    let all = [0, 1];
    let facts = |spf, dmarc| ContentFacts { auth: Some(AuthFacts { spf, dkim: AuthResult::None, dmarc }), ..ContentFacts::default() };
    assert_eq!(resolve_candidates(routes, &all, &facts(AuthResult::SoftFail, AuthResult::Fail)), Some(0));
    assert_eq!(resolve_candidates(routes, &all, &facts(AuthResult::Pass, AuthResult::Fail)), Some(1));
    assert_eq!(resolve_candidates(routes, &all, &ContentFacts::default()), Some(1));
    let bad = text.replace("dmarc = \\\"fail\\\"", "dmarc = \\\"failed\\\"").replace("dmarc = \"fail\"", "dmarc = \"failed\"");
    let errors = crate::config::Config::parse(&bad, "test.toml").expect_err("invalid").to_string();
    assert!(errors.contains("match.dmarc") && errors.contains("`failed` is not a result"), "{errors}");
}
