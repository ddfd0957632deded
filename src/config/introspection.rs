//! `[auth.NAME]` with `type = "introspection"`: opaque bearer tokens checked by an OAuth 2.0 token
//! introspection endpoint (RFC 7662), with the client credentials sluice authenticates itself with
//! there, and how long answers are reused per worker. Only the shape is checked here; nothing is
//! fetched at load (the endpoint is first asked when a token arrives).

use super::check::{header_value_ok, http_url, nonzero, Ctx};
use super::secret::{resolve_at, Secret, SecretToml};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// As written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionToml {
    /// The introspection endpoint (`http://` or `https://`).
    pub endpoint: String,
    /// The client id sluice authenticates with at the endpoint.
    pub client_id: String,
    /// Its secret: inline, `{ env = "VAR" }` or `{ file = "path" }`.
    pub client_secret: SecretToml,
    /// How client credentials are sent: `client_secret_basic` or `client_secret_post`.
    #[serde(default = "dflt::auth_method")]
    pub auth_method: String,
    /// How long an active answer is reused (never past the token's `exp`); "0" = not cached.
    #[serde(default = "dflt::cache_ttl", deserialize_with = "units::duration")]
    pub cache_ttl: Duration,
    /// How long an inactive answer is reused; absent = not cached.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub negative_cache_ttl: Option<Duration>,
    /// The whole call to the endpoint, queueing included.
    #[serde(default = "dflt::timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    /// Member of the answer that names the consumer.
    #[serde(default = "dflt::consumer_claim")]
    pub consumer_claim: String,
}

/// How sluice authenticates itself to the endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` of the form-urlencoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

impl ClientAuth {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Basic => "client_secret_basic",
            ClientAuth::Post => "client_secret_post",
        }
    }
}

/// Validated.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: ClientAuth,
    /// Zero: active answers are not cached.
    pub cache_ttl: Duration,
    /// None: inactive answers are not cached.
    pub negative_cache_ttl: Option<Duration>,
    pub timeout: Duration,
    pub consumer_claim: String,
}

/// The longest a call may take: a worker's request waits for it.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn introspection(
    cx: &Ctx,
    key: &str,
    t: IntrospectionToml,
) -> Result<Introspection, ConfigError> {
    http_url(cx, &format!("{key}.endpoint"), &t.endpoint)?;
    if t.client_id.is_empty() || !header_value_ok(&t.client_id) {
        return Err(cx.err(
            format!("{key}.client_id"),
            "expected a non-empty client id without control characters",
        ));
    }
    let skey = format!("{key}.client_secret");
    let client_secret = resolve_at(cx, &skey, &t.client_secret)?;
    if client_secret.expose().is_empty() {
        return Err(cx.err(skey, "expected a non-empty secret"));
    }
    let auth_method = match t.auth_method.as_str() {
        "client_secret_basic" => ClientAuth::Basic,
        "client_secret_post" => ClientAuth::Post,
        other => {
            return Err(cx.err(
                format!("{key}.auth_method"),
                format!(
                    "expected \"client_secret_basic\" or \"client_secret_post\", got {other:?}"
                ),
            ))
        }
    };
    let tkey = format!("{key}.timeout");
    let timeout = nonzero(cx, &tkey, t.timeout)?;
    if timeout > MAX_TIMEOUT {
        return Err(cx.err(tkey, format!("expected at most 60s, got {timeout:?}")));
    }
    let negative_cache_ttl = match t.negative_cache_ttl {
        Some(d) => Some(nonzero(cx, &format!("{key}.negative_cache_ttl"), d)?),
        None => None,
    };
    if t.consumer_claim.is_empty() {
        return Err(cx.err(format!("{key}.consumer_claim"), "expected a claim name"));
    }
    Ok(Introspection {
        endpoint: t.endpoint,
        client_id: t.client_id,
        client_secret,
        auth_method,
        cache_ttl: t.cache_ttl,
        negative_cache_ttl,
        timeout,
        consumer_claim: t.consumer_claim,
    })
}

/// Defaults, one function per key.
mod dflt {
    use std::time::Duration;
    pub fn auth_method() -> String {
        "client_secret_basic".into()
    }
    pub fn cache_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn consumer_claim() -> String {
        "sub".into()
    }
}
