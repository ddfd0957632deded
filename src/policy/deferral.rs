//! What a policy cannot decide without waiting, and what the wait found: the policy returns a
//! `Deferred` (`Outcome::Defer`), the pipeline awaits it and adds the `Verdict` to `ctx.verdicts`, and
//! the stage runs again. Every verdict of the request is kept, each under the key of what it answers,
//! because one run may pass several deferring methods (a Basic hash, then an auth service): run again,
//! each finds its own verdict instead of deferring a second time.

use super::{ext_auth, hasher, introspection};
use std::rc::Rc;

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
    /// A call to introspection endpoint `auth` (index in `Config::auth`) for `token`; `key` is its
    /// `introspection::cache_key`.
    Introspect {
        auth: u16,
        key: [u8; 32],
        token: String,
    },
    /// A lease of `consumer`'s quota, asked of the control thread already: wait for it and take the
    /// request's part (one of `requests`, an estimate of `bytes`: the counts, when that part waits).
    Quota {
        consumer: Box<str>,
        period: crate::config::limits::Period,
        requests: Option<u64>,
        bytes: Option<u64>,
    },
}

/// What a deferred check found.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The hash check of the credential with this digest.
    Hash([u8; 32], hasher::Verdict),
    /// What external auth service `auth` decided (None: it could not be asked or gave no decision).
    ExtAuth {
        auth: u16,
        decision: Option<Rc<ext_auth::Decision>>,
    },
    /// What the introspection of the token with this cache key came to.
    Introspect {
        key: [u8; 32],
        answer: introspection::Answer,
    },
    /// What waiting for a quota's pool came to, for the requests part and the bytes part.
    Quota { requests: Waited, bytes: Waited },
}

/// One part of a quota check that waited for the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// It did not wait.
    No,
    /// Taken: for requests, what is left (for the `RateLimit-Remaining` field); for bytes, what was
    /// reserved.
    Taken(u64),
    /// Used up until this Unix second.
    Exhausted(u64),
    /// The pool did not answer in time.
    TimedOut,
}

/// The verdicts of one request's deferred checks (`ctx.verdicts`). Empty costs nothing: the list
/// allocates only when a first check was deferred, which allocated already.
#[derive(Debug, Default)]
pub struct Verdicts(Vec<Verdict>);

impl Verdicts {
    /// Keeps a verdict for the policies' next run.
    pub fn push(&mut self, v: Verdict) {
        self.0.push(v);
    }

    /// How many checks were deferred.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no check was deferred.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hash check of the credential with digest `cred`.
    pub fn hash(&self, cred: &[u8; 32]) -> Option<hasher::Verdict> {
        self.0.iter().find_map(|v| match v {
            Verdict::Hash(c, v) if c == cred => Some(*v),
            _ => None,
        })
    }

    /// What external auth service `auth` decided, if it was asked for this request.
    pub fn ext_auth(&self, auth: u16) -> Option<&Option<Rc<ext_auth::Decision>>> {
        self.0.iter().find_map(|v| match v {
            Verdict::ExtAuth { auth: a, decision } if *a == auth => Some(decision),
            _ => None,
        })
    }

    /// What a quota check's wait came to, if it waited: (requests, bytes).
    pub fn quota(&self) -> Option<(Waited, Waited)> {
        self.0.iter().find_map(|v| match v {
            Verdict::Quota { requests, bytes } => Some((*requests, *bytes)),
            _ => None,
        })
    }

    /// What the introspection of the token with cache key `key` came to.
    pub fn introspection(&self, key: &[u8; 32]) -> Option<&introspection::Answer> {
        self.0.iter().find_map(|v| match v {
            Verdict::Introspect { key: k, answer } if k == key => Some(answer),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_finds_its_own_verdict() {
        let mut vs = Verdicts::default();
        assert!(vs.is_empty());
        vs.push(Verdict::Hash([1; 32], hasher::Verdict::Mismatch));
        vs.push(Verdict::ExtAuth {
            auth: 3,
            decision: None,
        });
        // The later verdict does not hide the earlier one.
        assert_eq!(vs.hash(&[1; 32]), Some(hasher::Verdict::Mismatch));
        assert_eq!(vs.hash(&[2; 32]), None);
        assert!(matches!(vs.ext_auth(3), Some(None)));
        assert!(vs.ext_auth(4).is_none());
        vs.push(Verdict::Introspect {
            key: [9; 32],
            answer: introspection::Answer::Inactive,
        });
        assert!(matches!(
            vs.introspection(&[9; 32]),
            Some(introspection::Answer::Inactive)
        ));
        assert!(vs.introspection(&[1; 32]).is_none());
        assert_eq!(vs.hash(&[1; 32]), Some(hasher::Verdict::Mismatch));
        assert_eq!(vs.len(), 3);
    }
}
