//! JWT verification for `[auth.NAME]` tables of type jwt: keys (`keys`), the pure check (`verify`),
//! the per-worker cache of verified tokens (`cache`), and `JwtState`, what one worker holds: the keys
//! the control side fetched (they arrive as `ToWorker::JwtKeys`) and the cache.
//!
//! Nothing here does I/O on a request: key files are read when the snapshot is built and remote keys
//! are fetched by `control::jwks`. Until a remote verifier's keys arrive, its tokens fail with
//! `no_keys` (fail closed).

pub mod cache;
pub mod keys;
pub mod verify;

pub use cache::{Scope, TokenCache};
pub use keys::{Key, KeyError, KeySet};
pub use verify::{Claims, JwtError, JwtVerifier};

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Fewest seconds between two unknown-kid refresh requests a worker sends for one verifier (the
/// control side rate-limits again, per verifier, with `min_refresh_interval`).
pub const UNKNOWN_KID_ASK_SECS: u64 = 5;

/// One worker's JWT state. Not `Send`; lives in a `RefCell` on the worker.
pub struct JwtState {
    /// Keys fetched by the control side, by verifier name.
    fetched: HashMap<Arc<str>, Arc<KeySet>>,
    cache: TokenCache,
    /// When this worker last asked for an unknown-kid refresh, by verifier name (unix seconds).
    asked: HashMap<Arc<str>, u64>,
}

impl Default for JwtState {
    fn default() -> Self {
        JwtState::new(cache::DEFAULT_CAPACITY)
    }
}

impl JwtState {
    /// Empty, with a cache of `capacity` tokens.
    pub fn new(capacity: usize) -> JwtState {
        JwtState {
            fetched: HashMap::new(),
            cache: TokenCache::new(capacity),
            asked: HashMap::new(),
        }
    }

    /// Takes keys the control side fetched for verifier `name` (replacing older ones). They outlive
    /// reloads: a verifier of the same name uses them as long as its URL is the one they came from.
    pub fn set_keys(&mut self, name: Arc<str>, keys: Arc<KeySet>) {
        self.fetched.insert(name, keys);
    }

    /// The keys `v` verifies with now.
    pub fn keys<'a>(&'a self, v: &'a JwtVerifier) -> Option<&'a Arc<KeySet>> {
        v.keys(self.fetched.get(&v.name))
    }

    /// Verifies `token` with `v`, through the cache: a hit costs a hash and a compare and allocates
    /// nothing; a miss verifies and caches the claims until the token's `exp`.
    pub fn verify(
        &mut self,
        v: &JwtVerifier,
        token: &[u8],
        now_unix: u64,
    ) -> Result<Rc<Claims>, JwtError> {
        // Field borrows, not `self.keys()`: the keys stay borrowed while the cache is written.
        let keys = v.keys(self.fetched.get(&v.name));
        let scope = Scope {
            generation: v.generation,
            verifier: v.index,
            keys: keys.map_or(u64::MAX, |k| k.serial),
        };
        if let Some(c) = self.cache.get(&scope, token, now_unix) {
            return Ok(c.clone());
        }
        let claims = Rc::new(v.verify_with(keys.map(|k| &**k), token, now_unix)?);
        self.cache.insert(scope, token, claims.clone(), now_unix);
        Ok(claims)
    }

    /// Whether an `UnknownKid` from `v` should be reported to the control side now (remote keys
    /// only, at most once per `UNKNOWN_KID_ASK_SECS` per verifier); records the ask.
    pub fn should_ask_refresh(&mut self, v: &JwtVerifier, now_unix: u64) -> bool {
        if v.remote_url().is_none() {
            return false;
        }
        match self.asked.get_mut(&v.name) {
            Some(last) if now_unix < last.saturating_add(UNKNOWN_KID_ASK_SECS) => false,
            Some(last) => {
                *last = now_unix;
                true
            }
            None => {
                self.asked.insert(v.name.clone(), now_unix);
                true
            }
        }
    }

    /// Cached tokens (for tests and gauges).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests;
