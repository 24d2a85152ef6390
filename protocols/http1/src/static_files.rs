//! Rules for serving static files, as pure functions: no file is opened or stat'ed here.
//!
//! Owns: turning a request path into a file path that cannot leave the root
//! ([`resolve_path`]), the MIME type by extension ([`mime_type`], from `mime_guess`), a strong
//! ETag from (inode, size, mtime) ([`strong_etag`]), `If-None-Match` /
//! `If-Modified-Since` / `If-Range` evaluation, single `Range: bytes=` parsing, and the
//! response head for the result ([`plan_file_response`] → [`FileResponse::write_head`]).
//!
//! Does not own: the stat, the open, the directory check (the caller stats
//! [`ResolvedPath::path`]; if it is a directory it serves [`ResolvedPath::index_file`], or
//! redirects a path without a trailing slash with [`directory_redirect_location`]) or the
//! zero-copy send of [`FileResponse::body`].

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::date::{http_date, parse_http_date};
use crate::date::HttpDate;
use crate::request::{Method, RequestHead};
use crate::{Http1Error, Version};

/// A request path resolved under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    /// `root` joined with the decoded, normalised segments.
    pub path: PathBuf,
    /// The request path ended with `/` (a directory was asked for).
    pub trailing_slash: bool,
}

impl ResolvedPath {
    /// The file to serve when [`ResolvedPath::path`] is a directory.
    pub fn index_file(&self) -> PathBuf {
        self.path.join("index.html")
    }
}

/// Resolves the path of a request target (`/a/b%20c?x`) under `root`:
/// query and fragment dropped, percent-escapes decoded, empty and `.` segments skipped; `..`
/// segments, NUL, backslashes and malformed escapes are refused (answer 400, or 404 to reveal
/// nothing). Because `..` is refused *after* decoding and the path is rebuilt from segments,
/// the result is always inside `root` (symlinks inside the root are the caller's policy).
pub fn resolve_path(root: &Path, target_path: &[u8]) -> Result<ResolvedPath, Http1Error> {
    let path = split_query(target_path).0;
    if path.first() != Some(&b'/') {
        return Err(Http1Error::UnsafePath {
            reason: "path must start with `/`",
        });
    }
    let decoded = percent_decode(path)?;
    if decoded.contains(&0) {
        return Err(Http1Error::UnsafePath { reason: "NUL byte" });
    }
    if decoded.contains(&b'\\') {
        return Err(Http1Error::UnsafePath {
            reason: "backslash",
        });
    }
    let mut resolved = root.to_path_buf();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                return Err(Http1Error::UnsafePath {
                    reason: "`..` segment",
                })
            }
            _ => resolved.push(std::ffi::OsStr::from_bytes(segment)),
        }
    }
    Ok(ResolvedPath {
        path: resolved,
        trailing_slash: decoded.last() == Some(&b'/'),
    })
}

/// The `Location` for redirecting a directory asked for without its trailing slash:
/// the path with `/` appended, query kept (nginx answers 301 with it).
pub fn directory_redirect_location(target_path: &[u8]) -> Vec<u8> {
    let (path, query) = split_query(target_path);
    let mut location = Vec::with_capacity(target_path.len() + 1);
    location.extend_from_slice(path);
    location.push(b'/');
    location.extend_from_slice(query);
    location
}

/// Splits at the first `?` or `#`: (path, rest including the separator).
fn split_query(target: &[u8]) -> (&[u8], &[u8]) {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    target.split_at(end)
}

fn percent_decode(input: &[u8]) -> Result<Vec<u8>, Http1Error> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3).ok_or(Http1Error::UnsafePath {
                reason: "bad percent-encoding",
            })?;
            let value = std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(Http1Error::UnsafePath {
                    reason: "bad percent-encoding",
                })?;
            out.push(value);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The MIME type for a file name by its extension; `application/octet-stream` if unknown.
pub fn mime_type(path: &Path) -> &'static str {
    mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// What the caller's stat said about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Inode number.
    pub inode: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime_secs: i64,
    /// Sub-second part of the modification time.
    pub mtime_nanos: u32,
}

/// A strong ETag (quotes included) that changes whenever the inode, size or mtime does.
pub fn strong_etag(meta: &FileMeta) -> String {
    format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.inode, meta.size, meta.mtime_secs, meta.mtime_nanos
    )
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110 §13.1.2):
/// `*`, or any listed tag equal to ours with `W/` ignored.
pub fn if_none_match_matches(value: &[u8], etag: &str) -> bool {
    let ours = etag.as_bytes();
    let value = crate::head::trim_ows(value);
    if value == b"*" {
        return true;
    }
    crate::head::comma_tokens(value).any(|tag| tag.strip_prefix(b"W/").unwrap_or(tag) == ours)
}

/// A byte range to send: `offset` and `len` into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes (at least 1).
    pub len: u64,
}

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve the whole file with 200: no range, a malformed one (RFC 9110 §14.2: ignore it),
    /// another unit, or several ranges (we do not send multipart/byteranges).
    Full,
    /// Serve this part with 206.
    Partial(ByteRange),
    /// Answer 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses a single `bytes=` range: `start-end`, `start-`, or `-suffix`, against `size`.
pub fn parse_range(value: &[u8], size: u64) -> RangeRequest {
    let value = crate::head::trim_ows(value);
    let Some(spec) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case(b"bytes="))
        .map(|_| &value[6..])
    else {
        return RangeRequest::Full;
    };
    let spec = crate::head::trim_ows(spec);
    if spec.contains(&b',') {
        return RangeRequest::Full;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    let number = |digits: &[u8]| crate::head::parse_decimal(digits);
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => {
            let Some(suffix) = number(last) else {
                return RangeRequest::Full;
            };
            if suffix == 0 || size == 0 {
                return RangeRequest::Unsatisfiable;
            }
            let len = suffix.min(size);
            RangeRequest::Partial(ByteRange {
                offset: size - len,
                len,
            })
        }
        (false, _) => {
            let Some(start) = number(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            let end = end.min(size - 1);
            RangeRequest::Partial(ByteRange {
                offset: start,
                len: end - start + 1,
            })
        }
    }
}

/// The response to a static-file request, decided; write its head with
/// [`FileResponse::write_head`], then send [`FileResponse::body`] from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileResponse {
    /// 200, 206, 304 or 416.
    pub status: u16,
    /// The bytes of the file to send after the head (`None` for HEAD, 304, 416, empty files).
    pub body: Option<ByteRange>,
    /// Content-Length of this response (for HEAD: what GET would send).
    pub content_length: u64,
    /// The strong ETag.
    pub etag: String,
    meta: FileMeta,
    content_type: &'static str,
    range: Option<ByteRange>,
    client_http10: bool,
}

/// Why a static-file request gets no file response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// Not GET or HEAD: answer [`crate::reply::method_not_allowed`] with `GET, HEAD`.
    MethodNotAllowed,
}

/// Decides the response for `head` asking for the file at `path` described by `meta`:
/// conditionals first (If-None-Match, else If-Modified-Since → 304), then Range (GET only,
/// honoured only if If-Range, when present, matches the ETag or Last-Modified).
pub fn plan_file_response(
    head: &RequestHead,
    path: &Path,
    meta: &FileMeta,
) -> Result<FileResponse, FileRefusal> {
    if !matches!(head.method, Method::Get | Method::Head) {
        return Err(FileRefusal::MethodNotAllowed);
    }
    let etag = strong_etag(meta);
    let not_modified = match head.headers.get("if-none-match") {
        Some(_) => head
            .headers
            .get_all("if-none-match")
            .any(|v| if_none_match_matches(v, &etag)),
        None => head
            .headers
            .get("if-modified-since")
            .and_then(parse_http_date)
            .is_some_and(|since| meta.mtime_secs <= since),
    };
    let mut response = FileResponse {
        status: 200,
        body: None,
        content_length: meta.size,
        etag,
        meta: *meta,
        content_type: mime_type(path),
        range: None,
        client_http10: head.version == Version::Http10,
    };
    if not_modified {
        response.status = 304;
        response.content_length = 0;
        return Ok(response);
    }
    let range = head
        .headers
        .get("range")
        .filter(|_| head.method == Method::Get)
        .filter(|_| match head.headers.get("if-range") {
            None => true,
            Some(v) => {
                let v = crate::head::trim_ows(v);
                v == response.etag.as_bytes() || parse_http_date(v) == Some(meta.mtime_secs)
            }
        })
        .map_or(RangeRequest::Full, |v| parse_range(v, meta.size));
    let whole = (meta.size > 0).then_some(ByteRange {
        offset: 0,
        len: meta.size,
    });
    match range {
        RangeRequest::Full => response.body = whole,
        RangeRequest::Partial(part) => {
            response.status = 206;
            response.range = Some(part);
            response.content_length = part.len;
            response.body = Some(part);
        }
        RangeRequest::Unsatisfiable => {
            response.status = 416;
            response.content_length = 0;
        }
    }
    if head.method == Method::Head {
        response.body = None;
    }
    Ok(response)
}

impl FileResponse {
    /// Appends the response head, with `Date: date`. `keep_alive` is the proxy loop's
    /// decision for the client connection.
    pub fn write_head(&self, keep_alive: bool, date: &HttpDate, out: &mut Vec<u8>) {
        let reason = match self.status {
            200 => "OK",
            206 => "Partial Content",
            304 => "Not Modified",
            _ => "Range Not Satisfiable",
        };
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason);
        date.write_field(out);
        let _ = write!(
            out,
            "ETag: {}\r\nLast-Modified: {}\r\n",
            self.etag,
            http_date(self.meta.mtime_secs)
        );
        match self.status {
            304 => {}
            416 => {
                let _ = write!(
                    out,
                    "Content-Range: bytes */{}\r\nContent-Length: 0\r\n",
                    self.meta.size
                );
            }
            _ => {
                let _ = write!(
                    out,
                    "Content-Type: {}\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\n",
                    self.content_type, self.content_length
                );
                if let Some(range) = self.range {
                    let _ = write!(
                        out,
                        "Content-Range: bytes {}-{}/{}\r\n",
                        range.offset,
                        range.offset + range.len - 1,
                        self.meta.size
                    );
                }
            }
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.client_http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::test_head as request;

    const META: FileMeta = FileMeta {
        inode: 0x1234,
        size: 1000,
        mtime_secs: 784_111_777,
        mtime_nanos: 5,
    };

    fn plan(extra: &str) -> FileResponse {
        let req = format!("GET /f.css HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        plan_file_response(&request(req.as_bytes()), Path::new("/srv/f.css"), &META).unwrap()
    }

    #[test]
    fn path_resolution_stays_in_root() {
        let root = Path::new("/srv/www");
        let r = resolve_path(root, b"/a/./b%20c//d.txt?x=/../..").unwrap();
        assert_eq!(r.path, Path::new("/srv/www/a/b c/d.txt"));
        assert!(!r.trailing_slash);
        let r = resolve_path(root, b"/docs/").unwrap();
        assert!(r.trailing_slash);
        assert_eq!(r.index_file(), Path::new("/srv/www/docs/index.html"));
        assert_eq!(
            resolve_path(root, b"/").unwrap().path,
            Path::new("/srv/www")
        );
        for bad in [
            &b"/../etc/passwd"[..],
            b"/a/../../etc",
            b"/%2e%2e/etc/passwd",
            b"/a/%2E%2E%2fetc",
            b"/a%2f..%2f..%2fetc",
            b"/a%00.txt",
            b"/a\\..\\b",
            b"/%zz",
            b"/%4",
            b"relative",
        ] {
            assert!(
                matches!(resolve_path(root, bad), Err(Http1Error::UnsafePath { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn directory_redirect_keeps_query() {
        assert_eq!(directory_redirect_location(b"/docs?x=1"), b"/docs/?x=1");
        assert_eq!(directory_redirect_location(b"/docs"), b"/docs/");
    }

    #[test]
    fn mime_types() {
        assert_eq!(mime_type(Path::new("a/index.html")), "text/html");
        assert_eq!(mime_type(Path::new("x.CSS")), "text/css");
        assert_eq!(mime_type(Path::new("app.js")), "text/javascript");
        assert_eq!(mime_type(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn etag_changes_with_each_input() {
        let base = strong_etag(&META);
        assert_eq!(base, "\"1234-3e8-2ebc98a1.5\"");
        for other in [
            FileMeta { inode: 1, ..META },
            FileMeta { size: 1, ..META },
            FileMeta {
                mtime_secs: 1,
                ..META
            },
            FileMeta {
                mtime_nanos: 1,
                ..META
            },
        ] {
            assert_ne!(strong_etag(&other), base);
        }
    }

    #[test]
    fn range_parsing() {
        let p = |s: &str| parse_range(s.as_bytes(), 1000);
        assert_eq!(
            p("bytes=0-499"),
            RangeRequest::Partial(ByteRange {
                offset: 0,
                len: 500
            })
        );
        assert_eq!(
            p("bytes=500-"),
            RangeRequest::Partial(ByteRange {
                offset: 500,
                len: 500
            })
        );
        assert_eq!(
            p("bytes=-100"),
            RangeRequest::Partial(ByteRange {
                offset: 900,
                len: 100
            })
        );
        assert_eq!(
            p("bytes=-5000"),
            RangeRequest::Partial(ByteRange {
                offset: 0,
                len: 1000
            })
        );
        assert_eq!(
            p("bytes=900-5000"),
            RangeRequest::Partial(ByteRange {
                offset: 900,
                len: 100
            })
        );
        assert_eq!(
            p("Bytes=999-999"),
            RangeRequest::Partial(ByteRange {
                offset: 999,
                len: 1
            })
        );
        assert_eq!(p("bytes=1000-"), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=-0"), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=0-1,5-6"), RangeRequest::Full);
        assert_eq!(p("bytes=5-1"), RangeRequest::Full);
        assert_eq!(p("bytes=-"), RangeRequest::Full);
        assert_eq!(p("bytes=+1-2"), RangeRequest::Full);
        assert_eq!(p("items=0-1"), RangeRequest::Full);
        assert_eq!(p("bytes=99999999999999999999-"), RangeRequest::Full);
        assert_eq!(parse_range(b"bytes=-1", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn full_response_head() {
        let r = plan("");
        assert_eq!(
            (r.status, r.body),
            (
                200,
                Some(ByteRange {
                    offset: 0,
                    len: 1000
                })
            )
        );
        let mut out = Vec::new();
        r.write_head(true, &HttpDate::from_unix_secs(784_111_777), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nETag: \"1234-3e8-2ebc98a1.5\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
Content-Type: text/css\r\nAccept-Ranges: bytes\r\nContent-Length: 1000\r\n\r\n"
        );
    }

    #[test]
    fn conditionals() {
        let etag = strong_etag(&META);
        assert_eq!(
            plan(&format!("If-None-Match: \"x\", {etag}\r\n")).status,
            304
        );
        assert_eq!(plan(&format!("If-None-Match: W/{etag}\r\n")).status, 304);
        assert_eq!(plan("If-None-Match: *\r\n").status, 304);
        assert_eq!(plan("If-None-Match: \"other\"\r\n").status, 200);
        assert_eq!(
            plan("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n").status,
            304
        );
        assert_eq!(
            plan("If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT\r\n").status,
            200
        );
        assert_eq!(plan("If-Modified-Since: nonsense\r\n").status, 200);
        // If-None-Match wins over If-Modified-Since
        assert_eq!(
            plan(
                "If-None-Match: \"other\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            )
            .status,
            200
        );
        let r = plan(&format!("If-None-Match: {etag}\r\n"));
        assert_eq!(r.body, None);
        let mut out = Vec::new();
        r.write_head(true, &HttpDate::from_unix_secs(784_111_777), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"));
        assert!(!text.contains("Content-Length"));
    }

    #[test]
    fn ranges_and_416() {
        let r = plan("Range: bytes=10-19\r\n");
        assert_eq!(
            (r.status, r.body),
            (
                206,
                Some(ByteRange {
                    offset: 10,
                    len: 10
                })
            )
        );
        let mut out = Vec::new();
        r.write_head(false, &HttpDate::from_unix_secs(784_111_777), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\nContent-Range: bytes 10-19/1000\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 10\r\n"));
        let r = plan("Range: bytes=2000-\r\n");
        assert_eq!((r.status, r.body), (416, None));
        let mut out = Vec::new();
        r.write_head(true, &HttpDate::from_unix_secs(784_111_777), &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\r\nContent-Range: bytes */1000\r\nContent-Length: 0\r\n"));
        assert_eq!(plan("Range: bytes=0-1,3-4\r\n").status, 200);
        // If-Range that does not match: whole file
        assert_eq!(
            plan("Range: bytes=0-1\r\nIf-Range: \"old\"\r\n").status,
            200
        );
        assert_eq!(
            plan(&format!(
                "Range: bytes=0-1\r\nIf-Range: {}\r\n",
                strong_etag(&META)
            ))
            .status,
            206
        );
    }

    #[test]
    fn head_and_methods() {
        let head =
            request(b"HEAD /f HTTP/1.0\r\nConnection: keep-alive\r\nRange: bytes=0-1\r\n\r\n");
        let r = plan_file_response(&head, Path::new("f.txt"), &META).unwrap();
        assert_eq!((r.status, r.body, r.content_length), (200, None, 1000));
        let mut out = Vec::new();
        r.write_head(true, &HttpDate::from_unix_secs(784_111_777), &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Connection: keep-alive\r\n\r\n"));
        let post = request(b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            plan_file_response(&post, Path::new("f"), &META),
            Err(FileRefusal::MethodNotAllowed)
        );
        let empty = FileMeta { size: 0, ..META };
        let get = request(b"GET /e HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            plan_file_response(&get, Path::new("e"), &empty)
                .unwrap()
                .body,
            None
        );
    }
}
