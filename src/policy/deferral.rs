//! What a policy cannot decide without waiting, and what the wait found: the policy returns a
//! `Deferred` (`Outcome::Defer`), the pipeline awaits it and puts the `Verdict` in `ctx.verdict`, and
//! the stage runs again.

use super::{ext_auth, hasher};

/// A check a policy hands to the pipeline to await. Each carries the key its verdict is for, so the
/// policy, run again, knows the verdict answers this request's credential.
pub enum Deferred {
    /// A password hash, checked on the hashing pool.
    Hash {
        /// Digest of `user:password`.
        cred: [u8; 32],
        job: hasher::Job,
    },
    /// A check by the external auth service `auth` (index in `Config::auth`); `key` is the decision
    /// cache key, when the verifier caches and the request carries it.
    ExtAuth { auth: u16, key: Option<[u8; 32]> },
}

/// What a deferred check found (`ctx.verdict`).
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The hash check of the credential with this digest.
    Hash([u8; 32], hasher::Verdict),
    /// What external auth service `auth` decided (None: it could not be asked or gave no decision).
    ExtAuth {
        auth: u16,
        decision: Option<std::rc::Rc<ext_auth::Decision>>,
    },
}
