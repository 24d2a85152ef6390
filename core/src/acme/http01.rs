//! HTTP-01 challenge tokens, as every shard answers them.
//!
//! The control core builds an immutable [`Http01Challenges`] set (token → key authorization)
//! whenever an order publishes or withdraws a token, and sends the same `Arc` to every shard
//! (`ToShard::AcmeHttp01`). A shard keeps the set it was sent last in shard-local (thread-local)
//! memory ([`install_on_this_shard`]); the shard's HTTP server calls [`answer`] with the request
//! path before any route, so `/.well-known/acme-challenge/<token>` on port 80 is answered even
//! when a route redirects everything else to HTTPS.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The path prefix CAs fetch tokens under (RFC 8555 §8.3).
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The tokens published right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Http01Challenges {
    by_token: BTreeMap<String, String>,
}

impl Http01Challenges {
    /// A set with `token` added (replacing an equal token).
    pub fn with(&self, token: &str, key_authorization: &str) -> Http01Challenges {
        let mut next = self.clone();
        next.by_token.insert(token.to_string(), key_authorization.to_string());
        next
    }

    /// A set without `token`.
    pub fn without(&self, token: &str) -> Http01Challenges {
        let mut next = self.clone();
        next.by_token.remove(token);
        next
    }

    /// How many tokens are published.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// The body for a request path: the key authorization when `path` is
    /// `/.well-known/acme-challenge/<token>` for a published token (a query string is
    /// ignored), else `None` (the request goes on to the routes).
    pub fn answer(&self, path: &str) -> Option<&str> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let token = path.strip_prefix(CHALLENGE_PATH)?;
        // Tokens are base64url (RFC 8555 §8.1): nothing else can name one.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        self.by_token.get(token).map(String::as_str)
    }
}

thread_local! {
    static THIS_SHARD: RefCell<Arc<Http01Challenges>> = RefCell::new(Arc::new(Http01Challenges::default()));
}

/// Makes `set` the tokens this shard answers (called by the shard on `ToShard::AcmeHttp01`).
pub fn install_on_this_shard(set: Arc<Http01Challenges>) {
    THIS_SHARD.with(|current| *current.borrow_mut() = set);
}

/// The body to answer for `path` on this shard, if it is a published challenge token.
pub fn answer(path: &str) -> Option<String> {
    THIS_SHARD.with(|current| current.borrow().answer(path).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_published_tokens_only() {
        let set = Http01Challenges::default().with("tok_en-1", "tok_en-1.thumb").with("other", "other.thumb");
        assert_eq!(set.answer("/.well-known/acme-challenge/tok_en-1"), Some("tok_en-1.thumb"));
        assert_eq!(set.answer("/.well-known/acme-challenge/tok_en-1?x=1"), Some("tok_en-1.thumb"));
        assert_eq!(set.answer("/.well-known/acme-challenge/unknown"), None);
        assert_eq!(set.answer("/.well-known/acme-challenge/"), None);
        assert_eq!(set.answer("/.well-known/acme-challenge/../other"), None);
        assert_eq!(set.answer("/.well-known/acme-challenge/tok_en-1/x"), None);
        assert_eq!(set.answer("/index.html"), None);
        let smaller = set.without("other");
        assert_eq!(smaller.len(), 1);
        assert_eq!(smaller.answer("/.well-known/acme-challenge/other"), None);
        // The original snapshot is untouched (shards may still hold it).
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn each_shard_thread_answers_from_what_it_was_sent() {
        install_on_this_shard(Arc::new(Http01Challenges::default().with("abc", "abc.key")));
        assert_eq!(answer("/.well-known/acme-challenge/abc").as_deref(), Some("abc.key"));
        let other_thread = std::thread::spawn(|| answer("/.well-known/acme-challenge/abc")).join().expect("thread");
        assert_eq!(other_thread, None);
        install_on_this_shard(Arc::new(Http01Challenges::default()));
        assert_eq!(answer("/.well-known/acme-challenge/abc"), None);
    }
}
