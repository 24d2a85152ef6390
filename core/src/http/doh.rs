//! DNS-over-HTTPS on the HTTP routes (RFC 8484, and the JSON `/resolve` format): requests
//! whose Host is `[dns] doh_domain` and whose path is `/dns-query` or `/resolve` are answered
//! by the shard's own authoritative DNS, before any route is consulted.
//!
//! Owns: reading the query from a GET `dns=` parameter, a POST body
//! (`application/dns-message`, at most 65535 bytes) or `/resolve?name=&type=`, and writing
//! the HTTP answer (`Cache-Control: max-age` from the smallest TTL). Bad input gets the
//! status RFC 8484 implies: 400 (bad parameter or message), 405 (other methods), 413 (body too
//! large), 415 (wrong media type). Does not own DNS answers (see `crate::dns`,
//! `shardgate_dns::doh`).

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::Instant;

use shardgate_dns::doh;
use shardgate_http1::reply::{self, ErrorStatus};
use shardgate_http1::request::{Method, RequestHead};
use shardgate_http1::BodyFraming;

use super::stream::ClientStream;
use super::{date_now, fill_client, InBuf, ReadEnd};
use crate::dns::ShardDns;

/// Whether `head` is a DoH request for `doh_domain`.
pub fn is_doh_request(head: &RequestHead, host: Option<&str>, doh_domain: &str) -> bool {
    if host != Some(doh_domain) {
        return false;
    }
    let path = head.path();
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    path == doh::DOH_PATH.as_bytes() || path == doh::JSON_PATH.as_bytes()
}

/// Answers one DoH request; returns whether the client connection may carry another.
pub(crate) async fn answer(dns: &ShardDns, head: &RequestHead, client_ip: IpAddr, client: &mut ClientStream, inbuf: &mut InBuf, body_deadline: Instant, out: &mut Vec<u8>) -> io::Result<bool> {
    let keep_alive = head.connection.keep_alive;
    let path = String::from_utf8_lossy(head.path()).into_owned();
    let (route, query_string) = path.split_once('?').unwrap_or((path.as_str(), ""));
    let json = route == doh::JSON_PATH;
    // The query in wire format, or the status to refuse with.
    let query: Result<Vec<u8>, ErrorStatus> = match (head.method, json) {
        (Method::Get | Method::Head, true) => {
            let name = doh::query_param(query_string, "name").map(percent_decode).unwrap_or_default();
            let rtype = doh::query_param(query_string, "type").map(percent_decode).unwrap_or_default();
            if name.is_empty() {
                Err(ErrorStatus::BadRequest)
            } else {
                doh::json_query(&name, &rtype).map_err(|_| ErrorStatus::BadRequest)
            }
        }
        (Method::Get | Method::Head, false) => match doh::query_param(query_string, "dns") {
            Some(param) => doh::decode_dns_param(param).map_err(|_| ErrorStatus::BadRequest),
            None => Err(ErrorStatus::BadRequest),
        },
        (Method::Post, false) => {
            let media_ok = head
                .headers
                .get("content-type")
                .map(|v| v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii().eq_ignore_ascii_case(doh::DNS_MESSAGE_CONTENT_TYPE.as_bytes()))
                .unwrap_or(false);
            match head.framing {
                BodyFraming::ContentLength(n) if n > u64::from(u16::MAX) => Err(ErrorStatus::PayloadTooLarge),
                BodyFraming::ContentLength(n) => {
                    let n = n as usize;
                    while inbuf.data().len() < n {
                        match fill_client(inbuf, client, body_deadline).await {
                            Ok(_) => {}
                            Err(ReadEnd::Failed(e)) => return Err(e),
                            Err(_) => return Ok(false),
                        }
                    }
                    let body = inbuf.data()[..n].to_vec();
                    inbuf.consume(n);
                    if !media_ok {
                        Err(ErrorStatus::UnsupportedMediaType)
                    } else {
                        doh::check_message_length(body.len()).map(|()| body).map_err(|_| ErrorStatus::BadRequest)
                    }
                }
                // A chunked POST body is not read: refuse and close.
                _ => Err(ErrorStatus::LengthRequired),
            }
        }
        _ => {
            out.clear();
            let keep = reply::method_not_allowed(if json { "GET, HEAD" } else { "GET, HEAD, POST" }, keep_alive && matches!(head.framing, BodyFraming::None), &date_now(), out);
            client.write_all(out).await?;
            return Ok(keep);
        }
    };
    let body_read = !matches!(head.framing, BodyFraming::Chunked);
    let keep_alive = keep_alive && body_read;
    out.clear();
    let query = match query {
        Ok(q) => q,
        Err(status) => {
            let keep = reply::error(status, keep_alive, &date_now(), out);
            client.write_all(out).await?;
            return Ok(keep);
        }
    };
    let mut response = Vec::with_capacity(512);
    if !dns.respond_doh(&query, client_ip, &mut response) {
        let keep = reply::error(ErrorStatus::BadRequest, keep_alive, &date_now(), out);
        client.write_all(out).await?;
        return Ok(keep);
    }
    let body = if json {
        match doh::render_json(&response) {
            Ok(text) => text.into_bytes(),
            Err(_) => {
                let keep = reply::error(ErrorStatus::InternalServerError, keep_alive, &date_now(), out);
                client.write_all(out).await?;
                return Ok(keep);
            }
        }
    } else {
        response.clone()
    };
    let content_type = if json { doh::DNS_JSON_CONTENT_TYPE } else { doh::DNS_MESSAGE_CONTENT_TYPE };
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    date_now().write_field(out);
    let _ = write!(out, "Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len());
    if let Some(age) = doh::response_max_age(&response) {
        let _ = write!(out, "Cache-Control: max-age={age}\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head.method != Method::Head {
        out.extend_from_slice(&body);
    }
    client.write_all(out).await?;
    Ok(keep_alive)
}

/// Decodes `%XX` escapes and `+` in a query parameter (invalid escapes are kept as written).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(percent_decode("www.example.test"), "www.example.test");
        assert_eq!(percent_decode("a%2Eb+c"), "a.b c");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
