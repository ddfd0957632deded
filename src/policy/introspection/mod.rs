//! OAuth 2.0 token introspection (RFC 7662) for `[auth.NAME]` tables of type introspection: what a
//! worker makes of an opaque bearer token. A token is looked up in the worker's cache (`cache`, by
//! the SHA-256 of generation, verifier and token, so the token itself is never kept); on a miss the
//! policy defers, and the call to the endpoint runs on the `sluice-introspect` threads (`client`),
//! never on a worker's event loop. The endpoint's answer becomes `Claims`, like a verified JWT's, so
//! the consumer claim, anonymous identities, `require_scopes` and `require_claims` work the same.
//!
//! Fail closed: an endpoint that cannot be reached, is slow, refuses sluice's client credentials or
//! answers anything but an introspection response is "unavailable" (503), never "active".

pub mod cache;
pub mod client;

pub use cache::AnswerCache;
pub use client::IntrospectError;

use crate::policy::jwt::Claims;
use sha2::{Digest, Sha256};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tokens longer than this are refused as malformed without a call (the head limit applies anyway).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token's introspection came to, on the worker.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `active: true`; the answer's members as claims.
    Active(Rc<Claims>),
    /// `active: false`.
    Inactive,
    /// No usable answer: nobody could say (never cached).
    Unavailable,
}

/// The cache and verdict key of `token` for verifier `auth` (index in `Config::auth`) of config
/// `generation`: a reload (which may change the endpoint or its client) never reuses an answer.
pub fn cache_key(generation: u64, auth: u16, token: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update(auth.to_le_bytes());
    h.update(token);
    h.finalize().into()
}

/// What the request path looks up first: the cache key of `token` for verifier `auth` of
/// `generation`, and the worker's fresh answer for it at `now`, if any. None when the token is not one
/// that may be sent (`token_ok`). Allocates nothing.
pub fn cached(
    cache: &AnswerCache,
    generation: u64,
    auth: u16,
    token: &[u8],
    now: Instant,
) -> Option<([u8; 32], Option<Answer>)> {
    if !token_ok(token) {
        return None;
    }
    let key = cache_key(generation, auth, token);
    Some((key, cache.get(&key, now)))
}

/// Whether `token` may be sent to the endpoint: RFC 6750 §2.1 b64token characters (letters, digits,
/// `-._~+/`, then `=` padding), at most `MAX_TOKEN_BYTES`. Anything else is refused unasked.
pub fn token_ok(token: &[u8]) -> bool {
    let body = token
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(&token[..0], |i| &token[..=i]);
    !body.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Until when an answer may be reused, from `now`: an active one for `cache_ttl` but never past the
/// token's `exp` (`u64::MAX`: none); an inactive one for `negative_ttl`. None: not cached.
pub fn cache_until(
    answer: &Answer,
    cache_ttl: Duration,
    negative_ttl: Option<Duration>,
    now: Instant,
    now_wall: SystemTime,
) -> Option<Instant> {
    let ttl = match answer {
        Answer::Active(c) => {
            // Exact to the nanosecond: a whole-second clock could keep an answer up to a second
            // past `exp`.
            let left = match c.exp() {
                u64::MAX => cache_ttl,
                exp => (UNIX_EPOCH + Duration::from_secs(exp))
                    .duration_since(now_wall)
                    .unwrap_or(Duration::ZERO),
            };
            cache_ttl.min(left)
        }
        Answer::Inactive => negative_ttl?,
        Answer::Unavailable => return None,
    };
    (!ttl.is_zero()).then(|| now + ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn active(exp: u64) -> Answer {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_value(json!({"sub": "a"})) else {
            panic!("object");
        };
        Answer::Active(Rc::new(Claims::from_object(m, "sub", exp)))
    }

    #[test]
    fn keys_differ_by_generation_verifier_and_token() {
        let k = cache_key(1, 0, b"t");
        assert_eq!(k, cache_key(1, 0, b"t"));
        assert_ne!(k, cache_key(2, 0, b"t"));
        assert_ne!(k, cache_key(1, 1, b"t"));
        assert_ne!(k, cache_key(1, 0, b"u"));
    }

    #[test]
    fn tokens_are_b64token() {
        assert!(token_ok(b"abc-._~+/DEF123=="));
        assert!(!token_ok(b""));
        assert!(!token_ok(b"=="));
        assert!(!token_ok(b"a=b"));
        assert!(!token_ok(b"a b"));
        assert!(!token_ok(b"a\"b"));
        assert!(!token_ok(&[b'a'; MAX_TOKEN_BYTES + 1]));
    }

    #[test]
    fn answers_are_kept_until_the_sooner_of_exp_and_ttl() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let ttl = Duration::from_secs(60);
        let until = |a: &Answer, neg| cache_until(a, ttl, neg, now, wall);
        assert_eq!(
            until(&active(1_010), None),
            Some(now + Duration::from_secs(10))
        );
        assert_eq!(until(&active(5_000), None), Some(now + ttl));
        assert_eq!(until(&active(u64::MAX), None), Some(now + ttl));
        // At or past exp: not cached at all.
        assert_eq!(until(&active(1_000), None), None);
        assert_eq!(until(&active(10), None), None);
        let half = wall + Duration::from_millis(500);
        assert_eq!(
            cache_until(&active(1_001), ttl, None, now, half),
            Some(now + Duration::from_millis(500))
        );
        assert_eq!(until(&Answer::Inactive, None), None);
        let neg = Some(Duration::from_secs(5));
        assert_eq!(
            until(&Answer::Inactive, neg),
            Some(now + Duration::from_secs(5))
        );
        assert_eq!(until(&Answer::Unavailable, neg), None);
        assert_eq!(
            cache_until(&active(5_000), Duration::ZERO, None, now, wall),
            None
        );
    }
}
