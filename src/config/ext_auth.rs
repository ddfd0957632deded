//! `[auth.NAME]` with `type = "ext_auth"`: an external authorization service asked before the request
//! goes on (like nginx `auth_request` and Envoy `ext_authz`), reached through an `[upstreams.NAME]`
//! group, with an optional decision cache.

use super::check::{is_token, nonzero, Ctx, UpstreamIndex};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// As written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthToml {
    /// The upstream group of the auth service.
    pub upstream: String,
    /// Path of the check.
    #[serde(default = "dflt::path")]
    pub path: String,
    /// Request headers passed to the service.
    #[serde(default = "dflt::forward_headers")]
    pub forward_headers: Vec<String>,
    /// Headers of the service's 2xx answer copied into the upstream request.
    #[serde(default)]
    pub copy_headers: Vec<String>,
    /// The whole check, connect to answer.
    #[serde(default = "dflt::timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    /// Decision cache.
    pub cache: Option<ExtCacheToml>,
}

/// `cache = { key, ttl }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtCacheToml {
    /// `header:NAME` or `cookie:NAME`.
    pub key: String,
    /// How long a decision is reused.
    #[serde(deserialize_with = "units::duration")]
    pub ttl: Duration,
}

/// What a decision is cached by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKey {
    /// A request header's value (lowercase name).
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

/// Validated.
#[derive(Debug, Clone)]
pub struct ExtAuth {
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub path: String,
    /// Lowercase.
    pub forward_headers: Vec<String>,
    /// Lowercase.
    pub copy_headers: Vec<String>,
    pub timeout: Duration,
    /// Key and time to live.
    pub cache: Option<(CacheKey, Duration)>,
}

/// Headers sluice sets on the check itself; forwarding a client's copy would let it lie about them.
const OWN: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-request-id",
];

pub(super) fn ext_auth(
    cx: &Ctx,
    key: &str,
    t: ExtAuthToml,
    upstreams: &UpstreamIndex,
) -> Result<ExtAuth, ConfigError> {
    let upstream = *upstreams.get(t.upstream.as_str()).ok_or_else(|| {
        cx.err(
            format!("{key}.upstream"),
            format!("unknown upstream {:?}", t.upstream),
        )
    })?;
    if !t.path.starts_with('/')
        || !t
            .path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'"')
    {
        return Err(cx.err(
            format!("{key}.path"),
            "expected an origin-form path like \"/check\" (query allowed, no spaces)",
        ));
    }
    let names = |list: Vec<String>, field: &str| -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, n) in list.into_iter().enumerate() {
            let lower = n.to_ascii_lowercase();
            if !is_token(&n) || OWN.contains(&lower.as_str()) {
                return Err(cx.err(
                    format!("{key}.{field}[{i}]"),
                    format!("expected a header name sluice does not set itself, got {n:?}"),
                ));
            }
            out.push(lower);
        }
        Ok(out)
    };
    let forward_headers = names(t.forward_headers, "forward_headers")?;
    let copy_headers = names(t.copy_headers, "copy_headers")?;
    let timeout = nonzero(cx, &format!("{key}.timeout"), t.timeout)?;
    let cache = match t.cache {
        None => None,
        Some(c) => {
            let k = match c.key.split_once(':') {
                Some(("header", n)) if is_token(n) => CacheKey::Header(n.to_ascii_lowercase()),
                Some(("cookie", n)) if is_token(n) => CacheKey::Cookie(n.to_string()),
                _ => {
                    return Err(cx.err(
                        format!("{key}.cache.key"),
                        format!(
                            "expected \"header:NAME\" or \"cookie:NAME\", got {:?}",
                            c.key
                        ),
                    ))
                }
            };
            Some((k, nonzero(cx, &format!("{key}.cache.ttl"), c.ttl)?))
        }
    };
    Ok(ExtAuth {
        upstream,
        path: t.path,
        forward_headers,
        copy_headers,
        timeout,
        cache,
    })
}

mod dflt {
    use std::time::Duration;
    pub fn path() -> String {
        "/".into()
    }
    pub fn forward_headers() -> Vec<String> {
        vec!["authorization".into(), "cookie".into()]
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(1)
    }
}
