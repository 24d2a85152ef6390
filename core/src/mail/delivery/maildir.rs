//! Local delivery (`action = { type = "deliver" }`): one Maildir per recipient under the data
//! folder, `<data_dir>/mail/mailboxes/<recipient>/{tmp,new,cur}`.
//!
//! Owns: the mailbox folder name of an address (lower-cased, only characters that are safe
//! in a path: never `/`, never a leading `.`), Maildir unique file names
//! (`<secs>.M<micros>P<pid>Q<counter>.<host>`), and the crash-safe write: the message is
//! streamed into `tmp/` (a `Delivered-To:` and `Return-Path:` header first), fsynced, linked
//! into `new/` and the `new/` folder fsynced — a reader never sees a partial message, and a
//! message in `new/` survives a power cut.
//! Does not own: the spool (the caller passes a reader positioned at the message text) or
//! recording the outcome in the queue.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The folder under the data folder that holds the mailboxes.
pub const MAILBOXES: &str = "mail/mailboxes";

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Why a local delivery failed (all transient: a full disk or a permission problem can be
/// fixed by the operator, and the message stays queued meanwhile).
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// The recipient's address cannot name a folder.
    #[error("recipient `{0}` cannot be a mailbox name")]
    BadRecipient(String),
    /// Writing failed.
    #[error("mailbox {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The mailbox folder name for `address`: lower case; anything but letters, digits and
/// `@ . _ + = -` becomes `_`; never empty, never starting with `.`.
pub fn mailbox_name(address: &str) -> Result<String, MaildirError> {
    let name: String = address
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || "@._+=-".contains(c) { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with('.') || name.len() > 255 {
        return Err(MaildirError::BadRecipient(address.to_string()));
    }
    Ok(name)
}

/// The Maildir of `address` under `data_dir`.
pub fn mailbox_path(data_dir: &Path, address: &str) -> Result<PathBuf, MaildirError> {
    Ok(data_dir.join(MAILBOXES).join(mailbox_name(address)?))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> MaildirError + '_ {
    move |source| MaildirError::Io { path: path.to_path_buf(), source }
}

fn host_name() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name.trim().chars().map(|c| if c == '/' || c == ':' { '_' } else { c }).collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Stores the message read from `body` (the text as received) in `address`'s Maildir and
/// returns the file's path in `new/`. `return_path` is the envelope sender (empty for `<>`).
pub fn deliver(data_dir: &Path, address: &str, return_path: &str, body: &mut dyn Read) -> Result<PathBuf, MaildirError> {
    let mailbox = mailbox_path(data_dir, address)?;
    for sub in ["tmp", "new", "cur"] {
        let dir = mailbox.join(sub);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let unique = format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        DELIVERIES.fetch_add(1, Ordering::Relaxed),
        host_name()
    );
    let tmp = mailbox.join("tmp").join(&unique);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_error(&tmp))?;
    let written = (|| -> io::Result<()> {
        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
        write!(file, "Return-Path: <{}>\r\nDelivered-To: {}\r\n", clean(return_path), clean(address))?;
        io::copy(body, &mut file)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(MaildirError::Io { path: tmp, source: e });
    }
    drop(file);
    let new = mailbox.join("new").join(&unique);
    fs::hard_link(&tmp, &new).map_err(io_error(&new))?;
    let _ = fs::remove_file(&tmp);
    let new_dir = mailbox.join("new");
    File::open(&new_dir).and_then(|dir| dir.sync_all()).map_err(io_error(&new_dir))?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_folder_names() {
        assert_eq!(mailbox_name("Alice@Example.COM").expect("ok"), "alice@example.com");
        assert!(mailbox_name("../../etc/passwd@x").is_err());
        assert_eq!(mailbox_name("x/../../y@z").expect("ok"), "x_.._.._y@z");
        assert!(!mailbox_name("a/b@x").expect("ok").contains('/'));
        assert!(mailbox_name(".hidden@x").is_err());
        assert!(mailbox_name("").is_err());
    }

    #[test]
    fn delivery_lands_complete_in_new_with_headers_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = deliver(dir.path(), "Bob@Example.test", "a@b.org", &mut &b"Subject: x\r\n\r\nhi\r\n"[..]).expect("deliver");
        assert!(path.starts_with(dir.path().join("mail/mailboxes/bob@example.test/new")));
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "Return-Path: <a@b.org>\r\nDelivered-To: Bob@Example.test\r\nSubject: x\r\n\r\nhi\r\n");
        let second = deliver(dir.path(), "bob@example.test", "", &mut &b"x"[..]).expect("deliver");
        assert_ne!(path, second);
        assert_eq!(fs::read_dir(dir.path().join("mail/mailboxes/bob@example.test/tmp")).expect("tmp").count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("mail/mailboxes/bob@example.test/new")).expect("new").count(), 2);
    }
}
