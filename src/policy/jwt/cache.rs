//! A worker's cache of verified tokens, so the signature cost is paid once per token rather than per
//! request. Keyed by a 64-bit hash of (verifier, token) with the whole token compared on a hit; an entry
//! is good until the token's `exp` and only for the key set (serial) and config generation it was
//! verified under. Bounded: when full, expired entries go first, then an arbitrary quarter. A hit
//! allocates nothing (hashing and comparing borrow the token; the claims are an `Rc`).

use super::verify::Claims;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Entries a worker keeps by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// What a cached verdict was made under; a hit needs all of it to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// Config generation of the verifier.
    pub generation: u64,
    /// The verifier's index in that generation.
    pub verifier: usize,
    /// The key set's serial.
    pub keys: u64,
}

struct Entry {
    scope: Scope,
    token: Box<[u8]>,
    claims: Rc<Claims>,
}

/// The map's keys are already hashes: pass them through.
#[derive(Default)]
struct Prehashed(u64);
impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Verified tokens of one worker. Not `Send`.
pub struct TokenCache {
    map: HashMap<u64, Entry, BuildHasherDefault<Prehashed>>,
    /// Seeded per process, so nobody can aim tokens at one slot.
    hasher: ahash::RandomState,
    capacity: usize,
}

impl TokenCache {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: HashMap::default(),
            hasher: ahash::RandomState::new(),
            capacity: capacity.max(1),
        }
    }

    fn key(&self, scope: &Scope, token: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(scope.generation);
        h.write_usize(scope.verifier);
        h.write(token);
        h.finish()
    }

    /// The claims of `token` if it was verified under `scope` and has not expired at `now_unix`.
    pub fn get(&self, scope: &Scope, token: &[u8], now_unix: u64) -> Option<&Rc<Claims>> {
        let e = self.map.get(&self.key(scope, token))?;
        (e.scope == *scope && *e.token == *token && now_unix < e.claims.exp()).then_some(&e.claims)
    }

    /// Remembers a verified token (until its exp).
    pub fn insert(&mut self, scope: Scope, token: &[u8], claims: Rc<Claims>, now_unix: u64) {
        if now_unix >= claims.exp() {
            return;
        }
        make_room(&mut self.map, self.capacity, |e| now_unix < e.claims.exp());
        let key = self.key(&scope, token);
        // A colliding slot is simply overwritten: the full-token compare keeps hits exact.
        self.map.insert(
            key,
            Entry {
                scope,
                token: token.into(),
                claims,
            },
        );
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Before an insert into a cache bounded to `capacity`: when full, entries that are no longer `live`
/// go first, then an arbitrary quarter (only a miss pays this; a hit never does).
pub fn make_room<K: Copy + Eq + std::hash::Hash, V, S: BuildHasher>(
    map: &mut HashMap<K, V, S>,
    capacity: usize,
    live: impl Fn(&V) -> bool,
) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, v| live(v));
    if map.len() >= capacity {
        let drop: Vec<K> = map.keys().take((capacity / 4).max(1)).copied().collect();
        for k in drop {
            map.remove(&k);
        }
    }
}
