//! The `serve` action: static files from a folder, with the rules of
//! `shardgate_http1::static_files` (no path escape, `index.html`, MIME types, ETag and
//! conditionals, single ranges, HEAD).
//!
//! Owns: the stat and open (a symlink whose target leaves the root is refused), sending the
//! head, and sending the body: small files go in the same write as the head; larger ones
//! with `sendfile(2)` (zero copy) on plain and kTLS sockets, or read and encrypted in
//! userspace on a rustls session.
//!
//! The stat/open/read calls are ordinary blocking syscalls on the shard: glommio 0.9 has no
//! asynchronous stat, and served files are expected to be in the page cache (as with
//! nginx without `aio`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use shardgate_http1::reply::{self, ErrorStatus};
use shardgate_http1::request::RequestHead;
use shardgate_http1::static_files::{self, FileMeta, FileRefusal};

use super::date_now;
use super::stream::ClientStream;
use crate::config::Serve;
use crate::relay::splice::set_nonblocking;

/// Bodies up to this size are read into the head's write; larger ones use `sendfile`.
const INLINE_BODY_MAX: u64 = 64 * 1024;

/// What serving one request produced.
pub struct Served {
    /// The status sent.
    pub status: u16,
    /// The connection may carry another request.
    pub keep_alive: bool,
}

/// Answers `head` from `serve.root`. `out` is scratch space for the head.
pub async fn serve_file(serve: &Serve, head: &RequestHead, keep_alive: bool, client: &mut ClientStream, out: &mut Vec<u8>) -> io::Result<Served> {
    out.clear();
    let error = |status: ErrorStatus, out: &mut Vec<u8>| Served { status: status.code(), keep_alive: reply::error(status, keep_alive, &date_now(), out) };
    let served = match locate(&serve.root, head.path()) {
        Located::Missing => error(ErrorStatus::NotFound, out),
        Located::Redirect(location) => {
            let _ = reply::redirect(301, &location, keep_alive, &date_now(), out);
            Served { status: 301, keep_alive }
        }
        Located::File(path, file, meta) => match static_files::plan_file_response(head, &path, &meta) {
            Err(FileRefusal::MethodNotAllowed) => {
                Served { status: 405, keep_alive: reply::method_not_allowed("GET, HEAD", keep_alive, &date_now(), out) }
            }
            Ok(plan) => {
                plan.write_head(keep_alive, &date_now(), out);
                match plan.body {
                    None => {}
                    Some(range) if range.len <= INLINE_BODY_MAX || !matches!(client, ClientStream::Plain(_) | ClientStream::Ktls(_)) => {
                        send_by_copy(client, out, &file, range.offset, range.len).await?;
                        return Ok(Served { status: plan.status, keep_alive });
                    }
                    Some(range) => {
                        client.write_all(out).await?;
                        out.clear();
                        send_by_sendfile(client, &file, range.offset, range.len).await?;
                        return Ok(Served { status: plan.status, keep_alive });
                    }
                }
                Served { status: plan.status, keep_alive }
            }
        },
    };
    client.write_all(out).await?;
    Ok(served)
}

enum Located {
    Missing,
    Redirect(Vec<u8>),
    File(std::path::PathBuf, File, FileMeta),
}

fn locate(root: &Path, target: &[u8]) -> Located {
    let Ok(resolved) = static_files::resolve_path(root, target) else {
        return Located::Missing;
    };
    let Ok(meta) = std::fs::metadata(&resolved.path) else {
        return Located::Missing;
    };
    let path = if meta.is_dir() {
        if !resolved.trailing_slash {
            return Located::Redirect(static_files::directory_redirect_location(target));
        }
        resolved.index_file()
    } else {
        resolved.path
    };
    // Symlinks are followed only while they stay inside the root.
    let Ok(real) = std::fs::canonicalize(&path) else {
        return Located::Missing;
    };
    if !real.starts_with(root) {
        return Located::Missing;
    }
    let Ok(file) = File::open(&real) else {
        return Located::Missing;
    };
    let Ok(meta) = file.metadata() else {
        return Located::Missing;
    };
    if !meta.is_file() {
        return Located::Missing;
    }
    let meta = FileMeta { inode: meta.ino(), size: meta.len(), mtime_secs: meta.mtime(), mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32 };
    Located::File(path, file, meta)
}

/// Reads the range and sends it after the head in `out`, in writes of at most 256 KiB.
async fn send_by_copy(client: &mut ClientStream, out: &mut Vec<u8>, file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    while left > 0 {
        let start = out.len();
        let want = left.min(256 * 1024) as usize;
        out.resize(start + want, 0);
        file.read_exact(&mut out[start..])?;
        left -= want as u64;
        client.write_all(out).await?;
        out.clear();
    }
    if !out.is_empty() {
        client.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Sends the range with `sendfile(2)` on a non-blocking socket. When the socket's send
/// buffer is full, one byte goes through glommio's write (which waits for writability in
/// io_uring) and `sendfile` resumes after it — the same readiness trick as the splice relay.
async fn send_by_sendfile(client: &mut ClientStream, file: &File, offset: u64, len: u64) -> io::Result<()> {
    let socket = client.tcp().as_raw_fd();
    set_nonblocking(socket)?;
    let mut offset = offset as libc::off_t;
    let end = offset + len as libc::off_t;
    while offset < end {
        let chunk = ((end - offset) as usize).min(4 << 20);
        // SAFETY: sendfile between two descriptors we keep open; `offset` is ours.
        let n = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, chunk) };
        if n > 0 {
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
        let mut byte = [0u8; 1];
        // SAFETY: pread of one byte into our buffer.
        if unsafe { libc::pread(file.as_raw_fd(), byte.as_mut_ptr().cast(), 1, offset) } != 1 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
        }
        client.write_all(&byte).await?;
        offset += 1;
    }
    Ok(())
}
