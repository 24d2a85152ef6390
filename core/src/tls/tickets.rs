//! TLS session-ticket keys: made and rotated by the control core, used by every shard.
//!
//! Owns: [`TicketKeys`], an immutable set of ticket keys (the current one, which seals new
//! tickets, and the previous one, still accepted so a ticket issued just before a rotation
//! resumes), and its [`ProducesTickets`] implementation that rustls calls on each handshake;
//! and [`TicketKeyRotation`], the control core's schedule that makes a new set every
//! [`ROTATE_EVERY`].
//!
//! Why not rustls' own rotating ticketer: it rotates behind a lock that every shard's handshake
//! would take. Here the control core makes each key set once and sends the same
//! `Arc<TicketKeys>` to every shard (`ToShard::TicketKeys`), so a ticket sealed on one shard
//! opens on any other, and the handshake path reads an immutable value: no lock, no
//! cross-shard traffic. The keys live in memory only (as nginx's and HAProxy's generated
//! keys do): a restart invalidates the tickets, and clients fall back to a full handshake.
//!
//! Ticket format: `key id (4 bytes) ‖ nonce (12) ‖ ChaCha20-Poly1305(session state) ‖ tag (16)`,
//! with the key id as associated data. A ticket whose key is unknown, or that fails to open, is
//! refused (`None`), which rustls answers with a full handshake.

use std::fmt;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How often the control core makes a new key; a ticket stays valid for at most twice this.
pub const ROTATE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// The lifetime advertised to clients in each ticket (seconds).
const TICKET_LIFETIME_SECS: u32 = ROTATE_EVERY.as_secs() as u32;

const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;

/// Why a key set could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    /// The system random source failed.
    #[error("cannot draw random ticket key material from the system")]
    Random,
}

/// One key with its id (and its material, so the next set can keep it as previous).
struct TicketKey {
    id: u32,
    material: [u8; 32],
    key: LessSafeKey,
}

impl TicketKey {
    fn generate(id: u32, random: &SystemRandom) -> Result<TicketKey, TicketKeyError> {
        let mut material = [0u8; 32];
        random.fill(&mut material).map_err(|_| TicketKeyError::Random)?;
        TicketKey::from_material(id, material)
    }

    fn from_material(id: u32, material: [u8; 32]) -> Result<TicketKey, TicketKeyError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &material).map_err(|_| TicketKeyError::Random)?;
        Ok(TicketKey { id, material, key: LessSafeKey::new(unbound) })
    }
}

/// The ticket keys in force: current (seals and opens) and previous (opens only).
pub struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
    random: SystemRandom,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| k.id))
            .finish()
    }
}

impl TicketKeys {
    /// The first key set (no previous key).
    pub fn first() -> Result<TicketKeys, TicketKeyError> {
        let random = SystemRandom::new();
        Ok(TicketKeys { current: TicketKey::generate(random_id(&random)?, &random)?, previous: None, random })
    }

    /// The next set: a new current key, this set's current one kept as previous.
    pub fn rotated(&self) -> Result<TicketKeys, TicketKeyError> {
        let random = SystemRandom::new();
        let current = TicketKey::generate(self.current.id.wrapping_add(1), &random)?;
        let previous = TicketKey::from_material(self.current.id, self.current.material)?;
        Ok(TicketKeys { current, previous: Some(previous), random })
    }

    /// The id of the key that seals new tickets.
    pub fn current_id(&self) -> u32 {
        self.current.id
    }

    fn key(&self, id: u32) -> Option<&LessSafeKey> {
        if self.current.id == id {
            return Some(&self.current.key);
        }
        self.previous.as_ref().filter(|k| k.id == id).map(|k| &k.key)
    }
}

fn random_id(random: &SystemRandom) -> Result<u32, TicketKeyError> {
    let mut bytes = [0u8; 4];
    random.fill(&mut bytes).map_err(|_| TicketKeyError::Random)?;
    Ok(u32::from_be_bytes(bytes))
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let id = self.current.id.to_be_bytes();
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&id);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id), &mut sealed)
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = cipher.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let id: [u8; KEY_ID_LEN] = id.try_into().ok()?;
        let key = self.key(u32::from_be_bytes(id))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(id), &mut buffer).ok()?;
        let len = plain.len();
        buffer.truncate(len);
        Some(buffer)
    }
}

/// The control core's rotation schedule: a new [`TicketKeys`] every [`ROTATE_EVERY`].
#[derive(Debug)]
pub struct TicketKeyRotation {
    keys: std::sync::Arc<TicketKeys>,
    next: Instant,
}

impl TicketKeyRotation {
    /// Starts with a fresh key set.
    pub fn start(now: Instant) -> Result<TicketKeyRotation, TicketKeyError> {
        Ok(TicketKeyRotation { keys: std::sync::Arc::new(TicketKeys::first()?), next: now + ROTATE_EVERY })
    }

    /// The keys in force.
    pub fn keys(&self) -> std::sync::Arc<TicketKeys> {
        self.keys.clone()
    }

    /// A new key set when one is due (for the caller to send to every shard), else `None`.
    pub fn due(&mut self, now: Instant) -> Option<std::sync::Arc<TicketKeys>> {
        if now < self.next {
            return None;
        }
        match self.keys.rotated() {
            Ok(keys) => {
                self.keys = std::sync::Arc::new(keys);
                self.next = now + ROTATE_EVERY;
                tracing::info!(key = self.keys.current_id(), "TLS session-ticket key rotated");
                Some(self.keys.clone())
            }
            Err(e) => {
                // Keep the old keys; try again in a minute.
                self.next = now + Duration::from_secs(60);
                tracing::error!(error = %e, "TLS session-ticket key rotation failed; the current key stays");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_its_set_and_the_next_but_not_the_one_after() {
        let first = TicketKeys::first().expect("keys");
        let ticket = first.encrypt(b"session state").expect("sealed");
        assert_ne!(&ticket[KEY_ID_LEN + NONCE_LEN..], b"session state");
        assert_eq!(first.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        let second = first.rotated().expect("rotate");
        assert_eq!(second.decrypt(&ticket).as_deref(), Some(&b"session state"[..]), "previous key still opens");
        let new_ticket = second.encrypt(b"newer").expect("sealed");
        assert_eq!(first.decrypt(&new_ticket), None, "an older set does not know the new key");
        let third = second.rotated().expect("rotate");
        assert_eq!(third.decrypt(&ticket), None, "two rotations later the ticket is refused");
        assert_eq!(third.decrypt(&new_ticket).as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn tampered_short_and_foreign_tickets_are_refused() {
        let keys = TicketKeys::first().expect("keys");
        let ticket = keys.encrypt(b"state").expect("sealed");
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 1;
            assert_eq!(keys.decrypt(&bad), None, "byte {i} flipped");
        }
        assert_eq!(keys.decrypt(&ticket[..ticket.len() - 1]), None);
        assert_eq!(keys.decrypt(&[]), None);
        let other = TicketKeys::first().expect("keys");
        assert_eq!(other.decrypt(&ticket), None);
        // Two tickets of the same state differ (random nonces).
        assert_ne!(keys.encrypt(b"state"), keys.encrypt(b"state"));
    }

    #[test]
    fn rotation_is_due_every_period() {
        let start = Instant::now();
        let mut rotation = TicketKeyRotation::start(start).expect("start");
        let first = rotation.keys().current_id();
        assert!(rotation.due(start + ROTATE_EVERY / 2).is_none());
        let next = rotation.due(start + ROTATE_EVERY).expect("due");
        assert_eq!(next.current_id(), first.wrapping_add(1));
        assert!(rotation.due(start + ROTATE_EVERY + Duration::from_secs(1)).is_none());
    }
}
