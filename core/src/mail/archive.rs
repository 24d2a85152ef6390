//! The file list of a zip archive attached to a message, for attachment filtering.
//!
//! Owns: [`zip_entries`] — the names and declared sizes of an archive's members, read from
//! its central directory only (nothing is decompressed, so a decompression bomb costs
//! nothing), plus the members of zip archives inside it, one level deep: those are the one
//! thing decompressed, each capped at [`MAX_NESTED_SIZE`] octets however large it claims to
//! be. At most [`MAX_ENTRIES`] members are listed.
//! Not here: what a member's name means (`crate::mail::scan` checks it like an attachment).

use std::io::{Cursor, Read};

/// Most members listed per archive (nested ones included).
pub const MAX_ENTRIES: usize = 10_000;

/// Largest nested archive decompressed to list its members.
pub const MAX_NESTED_SIZE: u64 = 16 * 1024 * 1024;

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
}
