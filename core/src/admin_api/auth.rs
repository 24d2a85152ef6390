//! Admin API authentication: login tokens and the failed-login limiter.
//!
//! Owns: [`Sessions`] — bearer tokens issued by `POST /api/login` (256 random bits, hex, valid
//! for `[admin] token_ttl`), checked on every other call, and per-client-IP failed-login
//! counting (more than [`MAX_FAILED_LOGINS`] failures within [`FAILED_LOGIN_WINDOW`] → 429
//! until the window has passed). Password checks are the SMTP crate's argon2/SHA-crypt
//! verifier (`AdminSettings::user_directory`). Does not own: where the token is read from a
//! request (`handlers`) or the users (the config).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom as _;

/// Failed logins one client IP may make per window.
pub const MAX_FAILED_LOGINS: u32 = 5;

/// The window failed logins are counted in.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Most live tokens kept; the oldest is dropped beyond (a login flood cannot grow memory).
const MAX_TOKENS: usize = 10_000;

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub user: String,
    /// Until when the token is valid.
    pub expires: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
}

/// Issued tokens and failed-login counts.
#[derive(Debug)]
pub struct Sessions {
    tokens: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    random: ring::rand::SystemRandom,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { tokens: Mutex::default(), failures: Mutex::default(), random: ring::rand::SystemRandom::new() }
    }
}

impl Sessions {
    /// `Err(retry_after)` when `client` failed too often recently.
    pub fn login_allowed(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(failures) = self.failures.lock() else { return Ok(()) };
        match failures.get(&client) {
            Some(f) if f.count >= MAX_FAILED_LOGINS && now.duration_since(f.window_start) < FAILED_LOGIN_WINDOW => {
                Err(FAILED_LOGIN_WINDOW.saturating_sub(now.duration_since(f.window_start)).max(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed login of `client`.
    pub fn record_failure(&self, client: IpAddr, now: Instant) {
        let Ok(mut failures) = self.failures.lock() else { return };
        failures.retain(|_, f| now.duration_since(f.window_start) < FAILED_LOGIN_WINDOW);
        let entry = failures.entry(client).or_insert(Failures { count: 0, window_start: now });
        entry.count += 1;
    }

    /// Forgets `client`'s failures (it logged in).
    pub fn clear_failures(&self, client: IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&client);
        }
    }

    /// A new token for `user`, valid for `ttl`. `None` only if the system RNG fails.
    pub fn issue(&self, user: &str, ttl: Duration, now: Instant) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).ok()?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut tokens = self.tokens.lock().ok()?;
        tokens.retain(|_, s| s.expires > now);
        if tokens.len() >= MAX_TOKENS {
            if let Some(oldest) = tokens.iter().min_by_key(|(_, s)| s.expires).map(|(t, _)| t.clone()) {
                tokens.remove(&oldest);
            }
        }
        tokens.insert(token.clone(), Session { user: user.to_string(), expires: now + ttl });
        Some(token)
    }

    /// The session of a valid, unexpired token.
    pub fn check(&self, token: &str, now: Instant) -> Option<Session> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(token).filter(|s| s.expires > now).cloned()
    }

    /// Drops every token (a config change removed or changed users).
    pub fn revoke_all(&self) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let token = sessions.issue("ops", Duration::from_secs(60), now).expect("token");
        assert_eq!(token.len(), 64);
        assert_eq!(sessions.check(&token, now).map(|s| s.user), Some("ops".to_string()));
        assert!(sessions.check(&token, now + Duration::from_secs(61)).is_none());
        assert!(sessions.check("not-a-token", now).is_none());
        sessions.revoke_all();
        assert!(sessions.check(&token, now).is_none());
    }

    #[test]
    fn failed_logins_are_limited_per_ip_for_a_window() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let client: IpAddr = [192, 0, 2, 7].into();
        let other: IpAddr = [192, 0, 2, 8].into();
        for _ in 0..MAX_FAILED_LOGINS {
            assert!(sessions.login_allowed(client, now).is_ok());
            sessions.record_failure(client, now);
        }
        let retry = sessions.login_allowed(client, now).expect_err("limited");
        assert!(retry <= FAILED_LOGIN_WINDOW && retry >= Duration::from_secs(1));
        assert!(sessions.login_allowed(other, now).is_ok());
        assert!(sessions.login_allowed(client, now + FAILED_LOGIN_WINDOW).is_ok());
        sessions.clear_failures(client);
        assert!(sessions.login_allowed(client, now).is_ok());
    }
}
