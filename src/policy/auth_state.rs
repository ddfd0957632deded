//! What a worker keeps for authentication between requests: the runtime consumer table (replaced whole
//! when the control thread sends a new one) and the caches of verified Basic credentials, external auth
//! decisions and introspection answers. Per worker,
//! never shared; no borrow of it outlives a policy call.

use super::consumers::ConsumerSet;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Verified Basic credentials kept per worker. Beyond this many the cache starts over: an attacker
/// who cycles through valid credentials can only make the worker pay the hash again.
const BASIC_CACHE_MAX: usize = 4096;

/// A worker's authentication state.
#[derive(Default)]
pub struct AuthState {
    runtime: RefCell<Rc<ConsumerSet>>,
    /// SHA-256 of `user:password` -> SHA-256 of the password hash it verified against.
    basic: RefCell<HashMap<[u8; 32], [u8; 32], ahash::RandomState>>,
    /// External auth decisions by cache key.
    pub ext: RefCell<super::ext_auth::DecisionCache>,
    /// Token introspection answers by cache key.
    pub introspection: RefCell<super::introspection::AnswerCache>,
}

impl AuthState {
    /// The runtime consumer table (an Rc clone: a request that names a runtime consumer keeps the
    /// table it was found in).
    pub fn runtime(&self) -> Rc<ConsumerSet> {
        self.runtime.borrow().clone()
    }

    /// Whether any runtime consumer exists (saves the lookup when none does).
    pub fn has_runtime(&self) -> bool {
        !self.runtime.borrow().is_empty()
    }

    /// Replaces the runtime table.
    pub fn set_runtime(&self, set: ConsumerSet) {
        *self.runtime.borrow_mut() = Rc::new(set);
    }

    /// Whether `cred` (digest of `user:password`) was verified against the hash with id `hash_id`.
    pub fn basic_cached(&self, cred: &[u8; 32], hash_id: &[u8; 32]) -> bool {
        self.basic.borrow().get(cred) == Some(hash_id)
    }

    /// Remembers a verified credential.
    pub fn basic_remember(&self, cred: [u8; 32], hash_id: [u8; 32]) {
        let mut c = self.basic.borrow_mut();
        if c.len() >= BASIC_CACHE_MAX {
            c.clear();
        }
        c.insert(cred, hash_id);
    }
}
