//! HTTP dates (RFC 9110 §5.6.7): the `Date` field of every response the proxy writes or
//! forwards, and the timestamps of `Last-Modified` / `If-Modified-Since`.
//!
//! Owns: [`HttpDate`], one Unix second formatted once as an IMF-fixdate, built by the caller
//! from its own clock (this crate reads none) and copied into heads; [`http_date`] and
//! [`parse_http_date`], which accept what RFC 9110 says a recipient must (IMF-fixdate and the
//! obsolete RFC 850 and asctime forms). The calendar work is the `httpdate` crate's.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second `httpdate` can format (9999-12-31 23:59:59 GMT).
const LAST_FORMATTABLE: i64 = 253_402_300_799;

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
const IMF_FIXDATE_LEN: usize = 29;

/// One Unix second as an IMF-fixdate, ready to be copied into a head. Seconds outside what
/// HTTP dates can say (before 1970, after 9999) are clamped to the nearest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDate {
    unix_secs: i64,
    text: [u8; IMF_FIXDATE_LEN],
}

impl HttpDate {
    /// The date for `unix_secs` seconds after the epoch.
    pub fn from_unix_secs(unix_secs: i64) -> HttpDate {
        let clamped = unix_secs.clamp(0, LAST_FORMATTABLE);
        let time = UNIX_EPOCH + Duration::from_secs(clamped.unsigned_abs());
        let mut text = [0u8; IMF_FIXDATE_LEN];
        // An IMF-fixdate of a year in 1970..=9999 is always exactly 29 bytes.
        let _ = (&mut text[..]).write_fmt(format_args!("{}", httpdate::HttpDate::from(time)));
        HttpDate { unix_secs, text }
    }

    /// The second this date was made from (unclamped), for a caller's cache.
    pub fn unix_secs(&self) -> i64 {
        self.unix_secs
    }

    /// The IMF-fixdate bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    /// Appends `Date: <date>\r\n`.
    pub fn write_field(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&self.text);
        out.extend_from_slice(b"\r\n");
    }
}

/// Formats Unix seconds as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(unix_secs: i64) -> String {
    String::from_utf8_lossy(HttpDate::from_unix_secs(unix_secs).as_bytes()).into_owned()
}

/// Parses an HTTP date in any of its three forms into Unix seconds; `None` when the value is
/// none of them (a conditional with such a value is ignored, as RFC 9110 §13.1.3 says).
pub fn parse_http_date(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(crate::head::trim_ows(value)).ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_imf_fixdate_and_parse_in_all_three_forms() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_http_date(http_date(secs).as_bytes()), Some(secs));
        }
        for form in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(parse_http_date(form.as_bytes()), Some(784_111_777), "{form}");
        }
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"garbage"), None);
        assert_eq!(parse_http_date(b"\xff\xfe"), None);
    }

    #[test]
    fn out_of_range_seconds_are_clamped_not_a_panic() {
        assert_eq!(http_date(-86_400), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(HttpDate::from_unix_secs(-5).unix_secs(), -5);
    }

    #[test]
    fn the_date_field_is_one_header_line() {
        let mut out = Vec::new();
        HttpDate::from_unix_secs(784_111_777).write_field(&mut out);
        assert_eq!(out, b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    }
}
