//! A local identity provider for JWT tests: OpenID discovery at `/.well-known/openid-configuration`
//! naming itself as issuer and its JWKS at `/jwks.json`, with the test keys in tests/data/jwt.

use super::{Backend, Reply};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The first key set.
pub const JWKS: &str = include_str!("../data/jwt/jwks.json");
/// The rotated key set.
pub const ROTATED: &str = include_str!("../data/jwt/jwks_rotated.json");

/// Starts the provider; `mode` picks what it serves, and can be changed while it runs:
/// 0 = the first key set, 1 = the rotated one, 2 = 500 for everything (an outage).
pub fn idp(mode: Arc<AtomicUsize>) -> Backend {
    let issuer: Arc<std::sync::OnceLock<String>> = Arc::default();
    let iss = issuer.clone();
    let be = Backend::start(move |req| {
        if mode.load(Ordering::SeqCst) == 2 {
            return Reply::new(500, "down");
        }
        let base = iss.get().cloned().unwrap_or_default();
        let body = match req.path.as_str() {
            "/.well-known/openid-configuration" => {
                format!("{{\"issuer\":\"{base}\",\"jwks_uri\":\"{base}/jwks.json\"}}")
            }
            "/jwks.json" if mode.load(Ordering::SeqCst) == 0 => JWKS.to_string(),
            "/jwks.json" => ROTATED.to_string(),
            _ => return Reply::new(404, "no"),
        };
        Reply::ok(body).header("content-type", "application/json")
    });
    let _ = issuer.set(format!("http://{}", be.addr()));
    be
}
