//! HTTP Basic authentication (RFC 7617): `Authorization: Basic base64(user:password)`, checked
//! against the consumer's argon2 or bcrypt hash. A verified credential is remembered per worker (by
//! the SHA-256 of `user:password`, bound to the hash it verified against), so the deliberately slow
//! hash is paid once per credential and worker, not per request; the hash itself is checked off the
//! worker (`hasher`). Decoding uses a stack buffer.

use super::auth_state::AuthState;
use super::consumers::ConsumerSet;
use super::hasher::Job;
use crate::http1::head::{trim, RequestHead};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The longest `user:password` accepted.
const MAX_CREDENTIAL: usize = 512;

/// What the request carries.
pub enum Presented<'a> {
    /// No Basic credential.
    None,
    /// `Basic` with a value that is not base64 of `user:password`, or too long.
    Malformed,
    /// User and password.
    Credential { user: &'a [u8], password: &'a [u8] },
}

/// The request's Basic credential, decoded into `buf`. More than one `Authorization` header is
/// malformed (RFC 9110 §11.6.2 allows one credential).
pub fn presented<'a>(head: &RequestHead, buf: &'a mut [u8; MAX_CREDENTIAL]) -> Presented<'a> {
    let Some(v) = super::authorization::authorization(head) else {
        return Presented::None;
    };
    let Ok(v) = v else {
        return Presented::Malformed;
    };
    let Some(b64) = super::authorization::scheme_value(v, b"basic") else {
        return Presented::None;
    };
    let b64 = trim(b64);
    if b64.len() > MAX_CREDENTIAL / 3 * 4 {
        return Presented::Malformed;
    }
    let Ok(n) = base64::engine::general_purpose::STANDARD.decode_slice(b64, &mut buf[..]) else {
        return Presented::Malformed;
    };
    let cred = &buf[..n];
    match memchr::memchr(b':', cred) {
        Some(i) if i > 0 => Presented::Credential {
            user: &cred[..i],
            password: &cred[i + 1..],
        },
        _ => Presented::Malformed,
    }
}

/// A buffer for `presented`.
pub fn buffer() -> [u8; MAX_CREDENTIAL] {
    [0u8; MAX_CREDENTIAL]
}

/// What it takes to check a credential against consumer `i` of `set`.
pub enum Check {
    /// The consumer has no Basic credential.
    NoPassword,
    /// Verified before on this worker (the hash is unchanged).
    Cached,
    /// Not yet verified: the hash must be checked (off the worker, see `hasher`).
    Hash {
        /// Digest of `user:password`, the cache key.
        cred: [u8; 32],
        /// Id of the hash it is checked against.
        hash_id: [u8; 32],
        job: Job,
    },
}

/// The SHA-256 of `user:password`.
pub fn credential_digest(user: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user);
    h.update(b":");
    h.update(password);
    h.finalize().into()
}

/// Whether `password` is `user`'s in `set` (consumer `i`) per the cache, or the job that would tell.
pub fn check(st: &AuthState, set: &ConsumerSet, i: u32, user: &[u8], password: &[u8]) -> Check {
    let Some(e) = set.get(i) else {
        return Check::NoPassword;
    };
    let Some((_, hash, kind)) = &e.basic else {
        return Check::NoPassword;
    };
    let cred = credential_digest(user, password);
    if st.basic_cached(&cred, &e.basic_id) {
        return Check::Cached;
    }
    Check::Hash {
        cred,
        hash_id: e.basic_id,
        job: Job {
            kind: *kind,
            hash: hash.clone(),
            password: password.to_vec(),
        },
    }
}
