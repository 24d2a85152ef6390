//! The file list of an archive attached to a message, for attachment filtering.
//!
//! Owns: [`archive_entries`] (which format, by name, type or content) and the readers:
//! - zip ([`zip_entries`]): names and declared sizes from the central directory only
//!   (nothing is decompressed, so a decompression bomb costs nothing), plus the members of
//!   zip archives inside it, one level deep: those are the one thing decompressed, each
//!   capped at [`MAX_NESTED_SIZE`] octets however large it claims to be;
//! - tar ([`tar_entries`]): the 512-octet headers (ustar, GNU long names, pax `path`), the
//!   data skipped; a `.tar.gz`/`.tgz` is read through a gzip decoder that stops after
//!   [`MAX_INFLATED`] octets (the members seen by then are listed);
//! - a lone gzip file: the original name its header carries (`FNAME`), not inflated.
//!
//! At most [`MAX_ENTRIES`] members are listed.
//! Not here: what a member's name means (`crate::mail::scan` checks it like an attachment).

use std::io::{Cursor, Read};

/// Most members listed per archive (nested ones included).
pub const MAX_ENTRIES: usize = 10_000;

/// Largest nested archive decompressed to list its members.
pub const MAX_NESTED_SIZE: u64 = 16 * 1024 * 1024;

/// Most octets a compressed tar is inflated to while its headers are read.
pub const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// An archive format we list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// zip (and jar-like formats).
    Zip,
    /// tar, uncompressed.
    Tar,
    /// tar in gzip (`.tar.gz`, `.tgz`).
    TarGz,
    /// One gzip-compressed file (`.gz`).
    Gzip,
}

/// Which archive an attachment is, from its file name, declared type and first octets.
pub fn archive_kind(name: Option<&str>, mime: Option<&str>, contents: &[u8]) -> Option<ArchiveKind> {
    let name = name.map(str::to_ascii_lowercase).unwrap_or_default();
    let gzip_magic = contents.starts_with(&[0x1f, 0x8b]);
    if name.ends_with(".zip") || matches!(mime, Some("application/zip" | "application/x-zip-compressed" | "application/x-zip")) || looks_like_zip(contents) {
        Some(ArchiveKind::Zip)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(ArchiveKind::TarGz)
    } else if name.ends_with(".tar") || mime == Some("application/x-tar") || looks_like_tar(contents) {
        Some(ArchiveKind::Tar)
    } else if name.ends_with(".gz") || matches!(mime, Some("application/gzip" | "application/x-gzip")) || gzip_magic {
        // A gzip whose content is a tar is listed as one.
        if gzip_inner_name(contents).is_some_and(|inner| inner.to_ascii_lowercase().ends_with(".tar")) {
            Some(ArchiveKind::TarGz)
        } else {
            Some(ArchiveKind::Gzip)
        }
    } else {
        None
    }
}

/// The members of `contents`, an archive of `kind`.
pub fn archive_entries(kind: ArchiveKind, contents: &[u8]) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    match kind {
        ArchiveKind::Zip => zip_entries(contents),
        ArchiveKind::Tar => tar_entries(contents),
        ArchiveKind::TarGz => tar_gz_entries(contents, MAX_INFLATED),
        ArchiveKind::Gzip => Ok(gzip_inner_name(contents).map(|path| vec![ArchiveEntry { path, size: 0 }]).unwrap_or_default()),
    }
}

/// The members of a gzip-compressed tar, inflating at most `cap` octets.
fn tar_gz_entries(contents: &[u8], cap: u64) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    tar_entries(flate2::read::GzDecoder::new(contents).take(cap))
}

/// Whether `bytes` start with a ustar header.
fn looks_like_tar(bytes: &[u8]) -> bool {
    bytes.len() >= 512 && &bytes[257..262] == b"ustar"
}

/// The original file name in a gzip header (RFC 1952 `FNAME`), read without inflating.
pub fn gzip_inner_name(bytes: &[u8]) -> Option<String> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    if bytes.len() < 10 || bytes[0] != 0x1f || bytes[1] != 0x8b || bytes[2] != 8 {
        return None;
    }
    let flags = bytes[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*bytes.get(10)?, *bytes.get(11)?]));
        at += 2 + len;
    }
    if flags & FNAME == 0 {
        return None;
    }
    let rest = bytes.get(at..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    // FNAME is ISO 8859-1.
    Some(rest[..end].iter().map(|b| char::from(*b)).collect())
}

/// A tar header's octal (or GNU base-256) number.
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Some(field[1..].iter().fold(0u64, |n, b| n.saturating_mul(256).saturating_add(u64::from(*b))));
    }
    let text = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn tar_string(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Reads exactly `buf.len()` octets; `false` at a clean or torn end.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> bool {
    reader.read_exact(buf).is_ok()
}

/// Skips `n` octets.
fn skip(reader: &mut impl Read, n: u64) -> bool {
    std::io::copy(&mut reader.take(n), &mut std::io::sink()).is_ok_and(|copied| copied == n)
}

/// The members of the tar stream `reader` (headers only; member data is skipped). A torn or
/// capped stream ends the list where it ends.
pub fn tar_entries(mut reader: impl Read) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    let mut out = Vec::new();
    let mut header = [0u8; 512];
    let mut long_name: Option<String> = None;
    let mut first = true;
    while out.len() < MAX_ENTRIES && fill(&mut reader, &mut header) {
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let checksum = tar_number(&header[148..156]);
        let sum: u64 = header.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u64::from(*b) }).sum();
        if checksum != Some(sum) {
            if first {
                return Err(ArchiveError::Tar("not a tar archive (header checksum)".into()));
            }
            break;
        }
        first = false;
        let size = tar_number(&header[124..136]).unwrap_or(0);
        let padded = size.div_ceil(512) * 512;
        match header[156] {
            // GNU long name, pax extended header: the next member's name is in the data.
            b'L' | b'x' if size <= 64 * 1024 => {
                let mut data = vec![0u8; padded as usize];
                if !fill(&mut reader, &mut data) {
                    break;
                }
                let data = &data[..size as usize];
                long_name = if header[156] == b'L' {
                    Some(tar_string(data))
                } else {
                    pax_path(data).or(long_name)
                };
                continue;
            }
            b'g' | b'L' | b'x' | b'K' => {
                if !skip(&mut reader, padded) {
                    break;
                }
                continue;
            }
            _ => {}
        }
        let name = long_name.take().unwrap_or_else(|| {
            let base = tar_string(&header[0..100]);
            let prefix = if &header[257..262] == b"ustar" { tar_string(&header[345..500]) } else { String::new() };
            if prefix.is_empty() { base } else { format!("{prefix}/{base}") }
        });
        let directory = header[156] == b'5' || name.ends_with('/');
        if !directory {
            out.push(ArchiveEntry { path: name, size });
        }
        // Links and directories have no data; regular files (and unknown types) do.
        let data = if matches!(header[156], b'1' | b'2' | b'3' | b'4' | b'5' | b'6') { 0 } else { padded };
        if !skip(&mut reader, data) {
            break;
        }
    }
    Ok(out)
}

/// The `path` record of a pax extended header (`<len> path=<name>\n` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|line| line.split_once(' ').and_then(|(_, record)| record.strip_prefix("path=")).map(str::to_string))
}

/// One member of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// Its path in the archive; a nested archive's members are `inner.zip/member`.
    pub path: String,
    /// Its declared uncompressed size.
    pub size: u64,
}

/// Why an archive could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a zip archive, or a broken one.
    #[error("not a readable zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Not a tar archive.
    #[error("{0}")]
    Tar(String),
}

/// Whether `bytes` start like a zip archive (local file header or empty archive).
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// The members of the zip archive `bytes`, and those of zip archives inside it (one level).
pub fn zip_entries(bytes: &[u8]) -> Result<Vec<ArchiveEntry>, ArchiveError> {
    let mut out = Vec::new();
    list(bytes, "", true, &mut out)?;
    Ok(out)
}

fn list(bytes: &[u8], prefix: &str, descend: bool, out: &mut Vec<ArchiveEntry>) -> Result<(), ArchiveError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))?;
    for index in 0..archive.len() {
        if out.len() >= MAX_ENTRIES {
            return Ok(());
        }
        let (path, size, nested) = {
            let member = archive.by_index_raw(index)?;
            let name = String::from_utf8_lossy(member.name_raw()).into_owned();
            let nested = descend && !member.is_dir() && !member.encrypted() && name.to_ascii_lowercase().ends_with(".zip");
            (name, member.size(), nested)
        };
        out.push(ArchiveEntry { path: format!("{prefix}{path}"), size });
        if nested && size <= MAX_NESTED_SIZE {
            let mut inner = Vec::new();
            let read = match archive.by_index(index) {
                Ok(member) => member.take(MAX_NESTED_SIZE + 1).read_to_end(&mut inner).is_ok(),
                Err(_) => false,
            };
            if read && inner.len() as u64 <= MAX_NESTED_SIZE {
                // A broken inner archive is just not listed; the outer list stands.
                let _ = list(&inner, &format!("{prefix}{path}/"), false, out);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    /// A zip archive of `members` (name, content), deflated.
    pub(crate) fn make_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in members {
            writer.start_file(*name, options).expect("start");
            writer.write_all(content).expect("write");
        }
        writer.finish().expect("finish").into_inner()
    }

    #[test]
    fn lists_members_and_one_nested_level() {
        let deepest = make_zip(&[("deep.exe", b"MZ")]);
        let inner = make_zip(&[("run.js", b"alert(1)"), ("deeper.zip", &deepest)]);
        let outer = make_zip(&[("readme.txt", b"hello"), ("docs/inner.zip", &inner)]);
        assert!(looks_like_zip(&outer));
        let paths: Vec<String> = zip_entries(&outer).expect("list").into_iter().map(|e| e.path).collect();
        // deeper.zip is listed as a member of inner.zip, but not opened (one level only).
        assert_eq!(paths, ["readme.txt", "docs/inner.zip", "docs/inner.zip/run.js", "docs/inner.zip/deeper.zip"]);
    }

    #[test]
    fn declared_sizes_come_from_the_directory_without_inflating() {
        // 8 MiB of zeros deflate to a few KiB: the size is read, nothing is inflated.
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let archive = make_zip(&[("big.bin", &zeros)]);
        assert!(archive.len() < 64 * 1024, "{}", archive.len());
        let entries = zip_entries(&archive).expect("list");
        assert_eq!(entries, vec![ArchiveEntry { path: "big.bin".into(), size: 8 * 1024 * 1024 }]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(zip_entries(b"PK\x03\x04 not really").is_err());
        assert!(zip_entries(b"").is_err());
    }

    /// A ustar archive of `members` (GNU long-name records for names over 100 octets).
    pub(crate) fn make_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        fn header(name: &[u8], size: usize, kind: u8) -> [u8; 512] {
            let mut h = [0u8; 512];
            h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
            h[100..108].copy_from_slice(b"0000644\0");
            h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
            h[136..148].copy_from_slice(b"00000000000\0");
            h[156] = kind;
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            h
        }
        let mut out = Vec::new();
        let data = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(bytes);
            out.resize(out.len().div_ceil(512) * 512, 0);
        };
        for (name, content) in members {
            if name.len() > 100 {
                out.extend_from_slice(&header(b"././@LongLink", name.len() + 1, b'L'));
                data(&mut out, format!("{name}\0").as_bytes());
            }
            out.extend_from_slice(&header(name.as_bytes(), content.len(), b'0'));
            data(&mut out, content);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn gzip(bytes: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut builder = flate2::GzBuilder::new();
        if let Some(name) = name {
            builder = builder.filename(name);
        }
        let mut encoder = builder.write(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("finish")
    }

    #[test]
    fn tar_headers_are_listed_and_data_skipped() {
        let long = format!("{}/payload.exe", "d".repeat(120));
        let tar = make_tar(&[("readme.txt", b"hello"), (&long, b"MZ")]);
        assert_eq!(archive_kind(Some("backup.tar"), None, &tar), Some(ArchiveKind::Tar));
        assert_eq!(archive_kind(Some("noname.bin"), None, &tar), Some(ArchiveKind::Tar), "by content");
        let entries = archive_entries(ArchiveKind::Tar, &tar).expect("list");
        assert_eq!(entries, vec![ArchiveEntry { path: "readme.txt".into(), size: 5 }, ArchiveEntry { path: long, size: 2 }]);
        assert!(tar_entries(&b"not a tar"[..]).expect("short input ends the list").is_empty());
        assert!(tar_entries(&[7u8; 1024][..]).is_err());
    }

    #[test]
    fn tar_gz_is_inflated_with_a_cap_and_lone_gzip_names_are_read_from_the_header() {
        let tgz = gzip(&make_tar(&[("bin/run.js", b"alert(1)")]), None);
        assert_eq!(archive_kind(Some("src.tgz"), None, &tgz), Some(ArchiveKind::TarGz));
        let paths: Vec<String> = archive_entries(ArchiveKind::TarGz, &tgz).expect("list").into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["bin/run.js"]);
        // A gzip whose header names a tar is listed as one, whatever it is called.
        let named = gzip(&make_tar(&[("x.scr", b"MZ")]), Some("stuff.tar"));
        assert_eq!(archive_kind(Some("stuff.dat"), None, &named), Some(ArchiveKind::TarGz));
        // One gzipped file: its original name, without inflating.
        let lone = gzip(b"MZ", Some("invoice.pdf.exe"));
        assert_eq!(gzip_inner_name(&lone).as_deref(), Some("invoice.pdf.exe"));
        assert_eq!(archive_kind(Some("invoice.gz"), None, &lone), Some(ArchiveKind::Gzip));
        assert_eq!(archive_entries(ArchiveKind::Gzip, &lone).expect("name")[0].path, "invoice.pdf.exe");
    }

    #[test]
    fn a_tar_bomb_stops_at_the_inflate_cap() {
        // A member holding 4 MiB of zeros, then one more: a 1 MiB cap (the real one is
        // MAX_INFLATED) cuts the stream inside the first member's data, so the second is
        // never reached; with room for all, both are listed.
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let tgz = gzip(&make_tar(&[("zeros.bin", &zeros), ("after.exe", b"MZ")]), None);
        assert!(tgz.len() < 64 * 1024);
        let paths = |cap: u64| -> Vec<String> { tar_gz_entries(&tgz, cap).expect("list").into_iter().map(|e| e.path).collect() };
        assert_eq!(paths(1024 * 1024), ["zeros.bin"]);
        assert_eq!(paths(8 * 1024 * 1024), ["zeros.bin", "after.exe"]);
    }
}
