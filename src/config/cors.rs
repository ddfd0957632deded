//! `cors = { ... }` on a route: which origins a browser may call it from, and what the gateway answers
//! to their preflights. Validated into the form the CORS policy (`policy::cors`) runs on: the origins
//! as lowercase bytes and the fixed header lines already written, so a request only adds its origin.

use super::check::{is_token, Ctx};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// `cors = { allow_origins, allow_methods, allow_headers, expose_headers, max_age, allow_credentials }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsToml {
    /// `"https://app.example.com"` entries, or `"*"` for any origin.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may announce; default: the route's `methods`, else the common ones.
    pub allow_methods: Option<Vec<String>>,
    /// Request headers a preflight may announce; default: whatever the preflight asks for.
    pub allow_headers: Option<Vec<String>>,
    /// Response headers scripts may read besides the CORS-safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub max_age: Option<Duration>,
    /// Whether requests with credentials (cookies, `Authorization`) may be read by the script.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// A route's CORS rules, ready for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins, lowercase, no trailing slash; None = any (`"*"`).
    pub origins: Option<Vec<Box<[u8]>>>,
    /// Preflight answer lines besides the origin: methods, headers (when fixed), max age, credentials.
    pub preflight: Box<[u8]>,
    /// Whether a preflight's `Access-Control-Request-Headers` is echoed (no `allow_headers` given).
    pub echo_headers: bool,
    /// Lines for an actual request's response besides the origin: expose headers, credentials.
    pub response: Box<[u8]>,
    /// `Access-Control-Allow-Credentials: true` is sent (then the origin is echoed, never `*`).
    pub credentials: bool,
}

/// Methods a preflight may announce when neither `cors.allow_methods` nor the route's `methods` says.
const DEFAULT_METHODS: &str = "GET, HEAD, PUT, PATCH, POST, DELETE";

/// Validates `routes.NAME.cors`; `route_methods` are the route's own (uppercase), if it has any.
pub(super) fn cors(
    cx: &Ctx,
    base: &dyn Fn() -> String,
    t: CorsToml,
    route_methods: Option<&[String]>,
) -> Result<Cors, ConfigError> {
    let key = |k: &str| format!("{}.cors.{k}", base());
    if t.allow_origins.is_empty() {
        return Err(cx.err(
            key("allow_origins"),
            "expected at least one origin like \"https://app.example.com\", or \"*\"",
        ));
    }
    let mut origins = Some(Vec::new());
    for (i, o) in t.allow_origins.iter().enumerate() {
        if o == "*" {
            origins = None;
            continue;
        }
        let o = o.strip_suffix('/').unwrap_or(o);
        let ok = o.split_once("://").is_some_and(|(scheme, rest)| {
            is_token(scheme)
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        });
        if !ok {
            return Err(cx.err(
                format!("{}[{i}]", key("allow_origins")),
                format!("expected \"scheme://host[:port]\" or \"*\", got {o:?}"),
            ));
        }
        if let Some(list) = origins.as_mut() {
            list.push(o.to_ascii_lowercase().into_bytes().into_boxed_slice());
        }
    }
    let tokens = |k: &str, v: &[String], upper: bool| -> Result<String, ConfigError> {
        for (i, m) in v.iter().enumerate() {
            if !is_token(m) {
                return Err(cx.err(
                    format!("{}[{i}]", key(k)),
                    format!("expected a token, got {m:?}"),
                ));
            }
        }
        let joined = v.join(", ");
        Ok(if upper {
            joined.to_ascii_uppercase()
        } else {
            joined
        })
    };
    let methods = match (&t.allow_methods, route_methods) {
        (Some(m), _) => tokens("allow_methods", m, true)?,
        (None, Some(m)) => m.join(", "),
        (None, None) => DEFAULT_METHODS.to_string(),
    };
    let mut preflight = format!("access-control-allow-methods: {methods}\r\n");
    if let Some(h) = &t.allow_headers {
        let h = tokens("allow_headers", h, false)?;
        preflight.push_str(&format!("access-control-allow-headers: {h}\r\n"));
    }
    if let Some(age) = t.max_age {
        preflight.push_str(&format!("access-control-max-age: {}\r\n", age.as_secs()));
    }
    let mut response = String::new();
    if !t.expose_headers.is_empty() {
        let h = tokens("expose_headers", &t.expose_headers, false)?;
        response.push_str(&format!("access-control-expose-headers: {h}\r\n"));
    }
    if t.allow_credentials {
        preflight.push_str("access-control-allow-credentials: true\r\n");
        response.push_str("access-control-allow-credentials: true\r\n");
    }
    Ok(Cors {
        origins,
        preflight: preflight.into_bytes().into_boxed_slice(),
        echo_headers: t.allow_headers.is_none(),
        response: response.into_bytes().into_boxed_slice(),
        credentials: t.allow_credentials,
    })
}
