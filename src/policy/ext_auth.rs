//! External auth: the route's request is checked by an auth service before it goes on. The check
//! itself is a sub-request the pipeline makes (`pipeline::deferred`, `forward::subrequest`); this file
//! holds what a decision is, how it is cached per worker, and what the policy makes of it: 2xx lets the
//! request through and copies the configured headers upstream, 401/403 go back to the client with the
//! service's body, anything else (a timeout, no endpoint, a 5xx) is "unavailable" and fails closed
//! with 503 unless the route sets `failure_mode_allow`.

use crate::config::ext_auth::{CacheKey, ExtAuth};
use crate::http1::head::RequestHead;
use sha2::{Digest, Sha256};
use std::rc::Rc;

/// A response sluice sends on a policy's behalf (the auth service's refusal).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Field lines (`name: value\r\n`).
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
}

/// What the service decided.
#[derive(Debug)]
pub enum Decision {
    /// Let the request through with these field lines added upstream.
    Allow { copy: Vec<u8> },
    /// Answer the client with the service's refusal.
    Deny(Rc<Response>),
}

/// The cache key of a request for verifier `auth`: the SHA-256 of its index and the configured
/// header or cookie. None when the request lacks it (then nothing is cached) or caching is off.
pub fn cache_key(cfg: &ExtAuth, auth: u16, head: &RequestHead) -> Option<[u8; 32]> {
    let (key, _) = cfg.cache.as_ref()?;
    let value = match key {
        CacheKey::Header(n) => head.get(n.as_bytes())?,
        CacheKey::Cookie(n) => crate::http1::head::cookie(head, n.as_bytes())?,
    };
    let mut h = Sha256::new();
    h.update(auth.to_le_bytes());
    h.update(value);
    Some(h.finalize().into())
}

/// Turns the service's answer into a decision; None = it could not decide (fail closed or open).
pub fn decide(
    cfg: &ExtAuth,
    status: u16,
    header: impl Fn(&[u8]) -> Option<Vec<u8>>,
    body: Vec<u8>,
) -> Option<Decision> {
    let line = |out: &mut Vec<u8>, name: &[u8], v: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    };
    match status {
        200..=299 => {
            let mut copy = Vec::new();
            for n in &cfg.copy_headers {
                if let Some(v) = header(n.as_bytes()) {
                    line(&mut copy, n.as_bytes(), &v);
                }
            }
            Some(Decision::Allow { copy })
        }
        401 | 403 => {
            let mut headers = Vec::new();
            for n in [&b"www-authenticate"[..], b"content-type"] {
                if let Some(v) = header(n) {
                    line(&mut headers, n, &v);
                }
            }
            Some(Decision::Deny(Rc::new(Response {
                status,
                headers,
                body,
            })))
        }
        _ => None,
    }
}

/// Decisions cached per worker. Bounded: beyond this many it starts over.
const CACHE_MAX: usize = 4096;

/// A worker's cache of decisions.
#[derive(Default)]
pub struct DecisionCache {
    map:
        std::collections::HashMap<[u8; 32], (std::time::Instant, Rc<Decision>), ahash::RandomState>,
}

impl DecisionCache {
    /// The decision for `key`, if still fresh at `now`.
    pub fn get(&self, key: &[u8; 32], now: std::time::Instant) -> Option<Rc<Decision>> {
        match self.map.get(key) {
            Some((until, d)) if now < *until => Some(d.clone()),
            _ => None,
        }
    }

    /// Keeps `d` until `until`.
    pub fn put(&mut self, key: [u8; 32], until: std::time::Instant, d: Rc<Decision>) {
        if self.map.len() >= CACHE_MAX {
            let now = std::time::Instant::now();
            self.map.retain(|_, (t, _)| now < *t);
            if self.map.len() >= CACHE_MAX {
                self.map.clear();
            }
        }
        self.map.insert(key, (until, d));
    }
}
