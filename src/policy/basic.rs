//! HTTP Basic authentication (RFC 7617): `Authorization: Basic base64(user:password)`, checked
//! against the consumer's argon2 or bcrypt hash. A verified credential is remembered per worker (by
//! the SHA-256 of `user:password`, bound to the hash it verified against), so the deliberately slow
//! hash is paid once per credential and worker, not per request. Decoding uses a stack buffer.

use super::auth_state::AuthState;
use super::consumers::ConsumerSet;
use crate::config::consumer::HashKind;
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

/// Whether `password` is `user`'s in `set` (consumer `i`): from the cache, or by verifying the hash.
pub fn verify(st: &AuthState, set: &ConsumerSet, i: u32, user: &[u8], password: &[u8]) -> bool {
    let Some(e) = set.get(i) else {
        return false;
    };
    let Some((_, hash, kind)) = &e.basic else {
        return false;
    };
    let mut h = Sha256::new();
    h.update(user);
    h.update(b":");
    h.update(password);
    let cred: [u8; 32] = h.finalize().into();
    if st.basic_cached(&cred, &e.basic_id) {
        return true;
    }
    let ok = match kind {
        HashKind::Argon2 => {
            use argon2::PasswordVerifier;
            match argon2::PasswordHash::new(hash) {
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok(),
                Err(_) => false,
            }
        }
        HashKind::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
    };
    if ok {
        st.basic_remember(cred, e.basic_id);
    }
    ok
}
