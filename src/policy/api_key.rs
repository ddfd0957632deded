//! API keys: read from the configured header (default `X-API-Key`) or query parameter, hashed with
//! SHA-256 and looked up by digest in the file's and the runtime consumer tables. Only digests are
//! kept, the final comparison of digests is constant-time, and nothing here allocates.

use super::consumers::ConsumerSet;
use crate::config::consumer::ApiKeySource;
use crate::hex;
use crate::http1::head::{trim, RequestHead};
use crate::pipeline::ctx::Credential;
use sha2::{Digest, Sha256};

/// The longest key read; longer ones are refused without hashing.
const MAX_KEY: usize = 512;

/// What the request carries.
pub enum Presented {
    /// No key.
    None,
    /// A key too long, sent twice with different values, or badly escaped.
    Malformed,
    /// The key's digest, and where it came from.
    Key([u8; 32], Credential),
}

/// Finds the request's API key: the header first, then the query parameter.
pub fn presented(head: &RequestHead, src: &ApiKeySource) -> Presented {
    let name = src.header.as_bytes();
    let mut found: Option<&[u8]> = None;
    for h in &head.headers {
        let (n, v) = head.header(h);
        if n.eq_ignore_ascii_case(name) {
            let v = trim(v);
            match found {
                Some(prev) if prev != v => return Presented::Malformed,
                _ => found = Some(v),
            }
        }
    }
    if let Some(v) = found {
        if v.is_empty() || v.len() > MAX_KEY {
            return Presented::Malformed;
        }
        return Presented::Key(Sha256::digest(v).into(), Credential::KeyHeader);
    }
    let (Some(param), Some(q)) = (&src.query, head.query()) else {
        return Presented::None;
    };
    let mut buf = [0u8; MAX_KEY];
    let mut key: Option<usize> = None;
    for pair in q.split(|&b| b == b'&') {
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if k != param.as_bytes() {
            continue;
        }
        if key.is_some() {
            return Presented::Malformed;
        }
        match percent_decode(v, &mut buf) {
            Some(n) if n > 0 => key = Some(n),
            _ => return Presented::Malformed,
        }
    }
    match key {
        Some(n) => Presented::Key(Sha256::digest(&buf[..n]).into(), Credential::KeyQuery),
        None => Presented::None,
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it) into `out`; None if it does not fit or
/// an escape is malformed.
pub fn percent_decode(v: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut i = 0;
    while i < v.len() {
        let b = match v[i] {
            b'%' => {
                let hi = hex::digit(*v.get(i + 1)?)?;
                let lo = hex::digit(*v.get(i + 2)?)?;
                i += 2;
                hi << 4 | lo
            }
            b'+' => b' ',
            b => b,
        };
        *out.get_mut(n)? = b;
        n += 1;
        i += 1;
    }
    Some(n)
}

/// The consumer holding the key, looked up in `set`. The map finds the entry by digest; the digests
/// are compared once more in constant time, so no timing depends on how much of a guess was right.
pub fn lookup(set: &ConsumerSet, digest: &[u8; 32], now_unix: u64) -> Option<u32> {
    use subtle::ConstantTimeEq;
    let (found, i) = set.by_key_digest(digest, now_unix)?;
    bool::from(found.ct_eq(digest)).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_escapes() {
        let mut b = [0u8; 16];
        assert_eq!(percent_decode(b"a%2Fb+c", &mut b), Some(5));
        assert_eq!(&b[..5], b"a/b c");
        assert_eq!(percent_decode(b"%2", &mut b), None);
        assert_eq!(percent_decode(b"%zz", &mut b), None);
        assert_eq!(percent_decode(&[b'a'; 17], &mut b), None);
    }
}
