//! DNS-over-HTTPS helpers (RFC 8484) and the JSON `/resolve` format (Google / Cloudflare).
//!
//! Owns: turning the `dns=` GET parameter into wire bytes, building a wire query from
//! `/resolve?name=&type=`, rendering a wire response as JSON, and the `Cache-Control` max-age of
//! a response (RFC 8484 §5.1). The answers themselves come from [`crate::answer::answer`] with
//! [`crate::answer::Transport::Tcp`]. Does not own: HTTP parsing, TLS or routing (the HTTP layer
//! matches `doh_domain` and the paths and calls these).

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Serialize;

use crate::error::DnsError;

/// Media type of DoH requests and responses.
pub const DNS_MESSAGE_CONTENT_TYPE: &str = "application/dns-message";
/// Media type of JSON `/resolve` responses.
pub const DNS_JSON_CONTENT_TYPE: &str = "application/dns-json";
/// Path of RFC 8484 requests.
pub const DOH_PATH: &str = "/dns-query";
/// Path of JSON requests.
pub const JSON_PATH: &str = "/resolve";

/// base64url; RFC 8484 says no padding, but padded input is accepted.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The value of `key` in a URL query string (`a=1&dns=...`), undecoded.
pub fn query_param<'q>(query_string: &'q str, key: &str) -> Option<&'q str> {
    query_string
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Decodes the `dns=` GET parameter into a wire-format DNS message (RFC 8484 §4.1).
pub fn decode_dns_param(value: &str) -> Result<Vec<u8>, DnsError> {
    let bytes = BASE64URL
        .decode(value.trim_end_matches('='))
        .map_err(|e| DnsError::DohBase64 {
            reason: e.to_string(),
        })?;
    check_message_length(bytes.len())?;
    Ok(bytes)
}

/// Checks a POST body / decoded GET message length (1..=65535).
pub fn check_message_length(len: usize) -> Result<(), DnsError> {
    if len == 0 || len > usize::from(u16::MAX) {
        return Err(DnsError::DohMessageLength { len });
    }
    Ok(())
}

/// Builds the wire query for `/resolve?name=&type=` (`type` is a mnemonic or a number; empty
/// means A). The query has RD set and ID 0, as DoH recommends.
pub fn json_query(name: &str, rtype: &str) -> Result<Vec<u8>, DnsError> {
    let mut qname = Name::from_utf8(name).map_err(|e| DnsError::JsonName {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    qname.set_fqdn(true);
    let qtype = if rtype.is_empty() {
        RecordType::A
    } else if let Ok(code) = rtype.parse::<u16>() {
        RecordType::from(code)
    } else {
        rtype
            .to_ascii_uppercase()
            .parse::<RecordType>()
            .map_err(|_| DnsError::JsonType {
                value: rtype.to_string(),
            })?
    };
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(qname, qtype));
    message.to_vec().map_err(|e| DnsError::Wire {
        reason: e.to_string(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonResponse {
    status: u16,
    #[serde(rename = "TC")]
    tc: bool,
    #[serde(rename = "RD")]
    rd: bool,
    #[serde(rename = "RA")]
    ra: bool,
    #[serde(rename = "AD")]
    ad: bool,
    #[serde(rename = "CD")]
    cd: bool,
    question: Vec<JsonQuestion>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    answer: Vec<JsonRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authority: Vec<JsonRecord>,
}

#[derive(Serialize)]
struct JsonQuestion {
    name: String,
    #[serde(rename = "type")]
    rtype: u16,
}

#[derive(Serialize)]
struct JsonRecord {
    name: String,
    #[serde(rename = "type")]
    rtype: u16,
    #[serde(rename = "TTL")]
    ttl: u32,
    data: String,
}

/// Renders a wire response in the Google/Cloudflare JSON format
/// (`{"Status":0,"TC":false,...,"Question":[...],"Answer":[{"name","type","TTL","data"}]}`).
pub fn render_json(response: &[u8]) -> Result<String, DnsError> {
    let message = Message::from_vec(response).map_err(|e| DnsError::Wire {
        reason: e.to_string(),
    })?;
    let meta = &message.metadata;
    let json = JsonResponse {
        status: u16::from(meta.response_code),
        tc: meta.truncation,
        rd: meta.recursion_desired,
        ra: meta.recursion_available,
        ad: meta.authentic_data,
        cd: meta.checking_disabled,
        question: message
            .queries
            .iter()
            .map(|q| JsonQuestion {
                name: q.name().to_utf8(),
                rtype: u16::from(q.query_type()),
            })
            .collect(),
        answer: message.answers.iter().map(json_record).collect(),
        authority: message.authorities.iter().map(json_record).collect(),
    };
    serde_json::to_string(&json).map_err(|e| DnsError::Wire {
        reason: e.to_string(),
    })
}

fn json_record(record: &Record) -> JsonRecord {
    let data = match &record.data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| {
                let text = String::from_utf8_lossy(s);
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    JsonRecord {
        name: record.name.to_utf8(),
        rtype: u16::from(record.record_type()),
        ttl: record.ttl,
        data,
    }
}

/// `Cache-Control: max-age` for a response: the smallest TTL in the answer and authority
/// sections (RFC 8484 §5.1), `None` if it has no records or does not parse.
pub fn response_max_age(response: &[u8]) -> Option<u32> {
    let message = Message::from_vec(response).ok()?;
    message
        .answers
        .iter()
        .chain(message.authorities.iter())
        .map(|r| r.ttl)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{answer, AnswerConfig, Transport};
    use crate::zone::{tests::example_zone, Catalog};

    #[test]
    fn get_parameter_decodes_rfc8484_example() {
        // RFC 8484 §4.1.1: www.example.com A.
        let param = "AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB";
        let query_string = format!("ct=x&dns={param}");
        let query = query_param(&query_string, "dns").unwrap();
        let wire = decode_dns_param(query).unwrap();
        let message = Message::from_vec(&wire).unwrap();
        assert_eq!(message.queries[0].name().to_ascii(), "www.example.com.");
        assert_eq!(message.queries[0].query_type(), RecordType::A);
        assert!(decode_dns_param("not base64 !").is_err());
        assert!(decode_dns_param("").is_err());
        // Padding is tolerated.
        assert_eq!(decode_dns_param(&format!("{param}==")).unwrap(), wire);
    }

    #[test]
    fn json_resolve_round_trip() {
        let catalog = Catalog::new([example_zone()]);
        let query = json_query("www.example.com", "A").unwrap();
        let mut out = Vec::new();
        answer(
            &catalog,
            &query,
            Transport::Tcp,
            &AnswerConfig::default(),
            &mut out,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&render_json(&out).unwrap()).unwrap();
        assert_eq!(json["Status"], 0);
        assert_eq!(json["RA"], false);
        assert_eq!(json["Question"][0]["name"], "www.example.com.");
        assert_eq!(json["Answer"][0]["type"], 1);
        assert_eq!(json["Answer"][0]["TTL"], 300);
        assert_eq!(json["Answer"][0]["data"], "192.0.2.80");
        assert_eq!(response_max_age(&out), Some(300));

        let query = json_query("txt.example.com.", "16").unwrap();
        answer(
            &catalog,
            &query,
            Transport::Tcp,
            &AnswerConfig::default(),
            &mut out,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&render_json(&out).unwrap()).unwrap();
        assert_eq!(
            json["Answer"][0]["data"],
            "\"first string\" \"second string\""
        );

        let query = json_query("nope.example.com", "").unwrap();
        answer(
            &catalog,
            &query,
            Transport::Tcp,
            &AnswerConfig::default(),
            &mut out,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&render_json(&out).unwrap()).unwrap();
        assert_eq!(json["Status"], 3);
        assert_eq!(json["Authority"][0]["type"], 6);
        assert_eq!(json["Authority"][0]["TTL"], 300);

        assert!(matches!(
            json_query("a..b", "A"),
            Err(DnsError::JsonName { .. })
        ));
        assert!(matches!(
            json_query("a.b", "NOPE"),
            Err(DnsError::JsonType { .. })
        ));
    }
}
