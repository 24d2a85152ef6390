//! The doorbell: how a thread outside glommio wakes a shard that waits for messages.
//!
//! Messages travel on a crossbeam channel; crossbeam's receive would block the executor, so a
//! shard never calls it blindly. Each shard owns an `eventfd`. The sender pushes the message
//! and then adds 1 to the eventfd ([`Doorbell::ring`]); the shard keeps one io_uring read on
//! the eventfd in flight through glommio (`BufferedFile::read_at`, which completes as soon as
//! the counter is non-zero and resets it), then drains the channel with `try_recv`. No wake-up
//! is lost: a ring between the drain and the next read leaves the counter non-zero, so the
//! next read completes at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// The sending side of a shard's mailbox: a channel plus its doorbell.
#[derive(Debug)]
pub struct Mailbox<T> {
    sender: Sender<T>,
    doorbell: Arc<OwnedFd>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox { sender: self.sender.clone(), doorbell: self.doorbell.clone() }
    }
}

/// The receiving side, used on the shard's executor.
#[derive(Debug)]
pub struct Inbox<T> {
    receiver: Receiver<T>,
    doorbell: Arc<OwnedFd>,
}

/// Creates a mailbox and its inbox.
pub fn mailbox<T>() -> io::Result<(Mailbox<T>, Inbox<T>)> {
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let doorbell = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (sender, receiver) = crossbeam_channel::unbounded();
    Ok((Mailbox { sender, doorbell: doorbell.clone() }, Inbox { receiver, doorbell }))
}

impl<T> Mailbox<T> {
    /// Sends a message and rings the doorbell. Fails only when the inbox is gone.
    pub fn send(&self, message: T) -> Result<(), T> {
        self.sender.send(message).map_err(|e| e.0)?;
        ring(self.doorbell.as_raw_fd());
        Ok(())
    }
}

fn ring(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we keep open; EAGAIN (counter
    // saturated) still leaves the doorbell rung, so the result can be ignored.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

impl<T> Inbox<T> {
    /// Waits for the next message on the current glommio executor. `None` when every
    /// mailbox is gone.
    pub async fn recv(&self, bell: &glommio::io::BufferedFile) -> Option<T> {
        loop {
            match self.receiver.try_recv() {
                Ok(message) => return Some(message),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if bell.read_at(0, 8).await.is_err() {
                // The eventfd cannot fail a read of 8 bytes; if it ever does, fall back to a
                // short sleep so messages still arrive.
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// The next message if one is waiting, without waiting (the doorbell is not read).
    pub fn try_recv(&self) -> Option<T> {
        self.receiver.try_recv().ok()
    }

    /// A glommio file handle on this inbox's doorbell, for [`Inbox::recv`]. Must be created
    /// on the executor that will wait.
    pub fn bell(&self) -> io::Result<glommio::io::BufferedFile> {
        // SAFETY: dup of a descriptor we keep open; the duplicate is owned by the file.
        let fd = unsafe { libc::dup(self.doorbell.as_raw_fd()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by the returned file from here on.
        Ok(unsafe { glommio::io::BufferedFile::from_raw_fd(fd) })
    }
}
