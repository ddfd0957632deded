//! `[routes.NAME]`: what a route matches (host, path, methods, headers, query), what it does (forward
//! to an upstream or a weighted/header split, or answer directly), and its per-route settings.

use super::check::{header_value_ok, is_token, Ctx};
use super::consumer::ConsumerHeaders;
use super::cors::{cors, Cors, CorsToml};
use super::headers::{header_rules, HeaderRulesToml};
use super::listener::cidr_list;
use super::units;
use super::upstream::Upstream;
use super::ConfigError;
use crate::cidr::IpRules;
use crate::policy::headers::{HeaderRules, Side};
use indexmap::IndexMap;
use serde::Deserialize;

/// `[routes.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteToml {
    /// Host matcher.
    pub host: Option<String>,
    /// Path pattern.
    #[serde(default = "dflt::path")]
    pub path: String,
    /// Allowed methods.
    pub methods: Option<Vec<String>>,
    /// Header matchers ("*" = present).
    pub match_headers: Option<IndexMap<String, String>>,
    /// Query parameter matchers ("*" = present).
    pub match_query: Option<IndexMap<String, String>>,
    /// Single upstream group.
    pub upstream: Option<String>,
    /// Several groups by weight or header.
    pub split: Option<Vec<SplitToml>>,
    /// Removed from the front of the path before forwarding.
    pub strip_prefix: Option<String>,
    /// New path template with {param} and {*}.
    pub rewrite_path: Option<String>,
    /// Host header sent upstream.
    pub host_rewrite: Option<String>,
    /// Per-route body limit.
    #[serde(default, deserialize_with = "units::opt_size")]
    pub max_body_bytes: Option<u64>,
    /// Answer directly.
    pub respond: Option<RespondToml>,
    /// Authentication methods, tried in order.
    pub auth: Option<Vec<String>>,
    /// Consumers or groups admitted.
    pub allow: Option<Vec<String>>,
    /// Scopes a token must carry.
    pub require_scopes: Option<Vec<String>>,
    /// Claim values a token must carry.
    pub require_claims: Option<IndexMap<String, String>>,
    /// Keep the credential on the upstream request.
    #[serde(default)]
    pub forward_credential: bool,
    /// Let requests through when an external auth service cannot be asked.
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// An encoded slash (`%2F`) in the path is let through instead of refused with 400.
    #[serde(default)]
    pub allow_encoded_slash: bool,
    /// The path sent upstream: "normalized" (default) or "as_received".
    pub forward_path: Option<String>,
    /// Only these clients (CIDR list; empty = any).
    #[serde(default)]
    pub ip_allow: Vec<String>,
    /// Never these clients (CIDR list).
    #[serde(default)]
    pub ip_deny: Vec<String>,
    /// Cross-origin requests from browsers.
    pub cors: Option<CorsToml>,
    /// Header rules for the request sent upstream.
    pub request_headers: Option<HeaderRulesToml>,
    /// Header rules for the upstream's response.
    pub response_headers: Option<HeaderRulesToml>,
    /// Remove headers naming the backend's software (`Server`, `X-Powered-By`, ...) from responses.
    #[serde(default = "dflt::hide_backend")]
    pub hide_backend: bool,
    /// Replace an upstream 5xx response's body with sluice's JSON error.
    #[serde(default)]
    pub intercept_errors: bool,
    /// Limit names, or one inline limit.
    pub rate_limit: Option<super::limits::RateLimitToml>,
}
/// One entry of `split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitToml {
    /// Target group.
    pub upstream: String,
    /// Weighted share (when no header rule matched).
    pub weight: Option<u32>,
    /// Header that selects this entry.
    pub header: Option<String>,
    /// Value of `header` that selects it ("*" = present).
    pub value: Option<String>,
}
/// `respond = { status, body, headers }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondToml {
    /// Status code.
    #[serde(default = "dflt::status")]
    pub status: u16,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Extra response headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
}

pub(super) use super::check::UpstreamIndex;

/// A host matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host.
    Any,
    /// Exact, lowercase.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}
/// A header or query matcher; `None` value = must be present.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Lowercase header name or exact query key.
    pub name: String,
    /// Required value.
    pub value: Option<String>,
}
/// One target of a route.
#[derive(Debug, Clone)]
pub struct SplitTarget {
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Weighted share.
    pub weight: u32,
    /// Header rule that selects this target outright.
    pub when: Option<Matcher>,
}
/// A direct response.
#[derive(Debug, Clone)]
pub struct Respond {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}
/// Which spelling of the path a route sends upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardPath {
    /// The canonical path routing saw (with `strip_prefix` / `rewrite_path` applied).
    #[default]
    Normalized,
    /// The path exactly as the client sent it, for backends that need its spelling.
    AsReceived,
}
/// What a route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one of these groups.
    Proxy(Vec<SplitTarget>),
    /// Answer directly.
    Respond(Respond),
}
/// A route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Table name.
    pub name: String,
    /// Host matcher.
    pub host: HostPattern,
    /// Path pattern as written (validated).
    pub path: String,
    /// Allowed methods, uppercase; None = any.
    pub methods: Option<Vec<String>>,
    /// Header matchers.
    pub match_headers: Vec<Matcher>,
    /// Query matchers.
    pub match_query: Vec<Matcher>,
    /// Action.
    pub action: RouteAction,
    /// Prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Path template.
    pub rewrite_path: Option<String>,
    /// Host sent upstream.
    pub host_rewrite: Option<String>,
    /// Body limit override.
    pub max_body_bytes: Option<u64>,
    /// Authentication and access rules.
    pub access: super::consumer::RouteAccess,
    /// `%2F` in the path is allowed.
    pub allow_encoded_slash: bool,
    /// The path sent upstream.
    pub forward_path: ForwardPath,
    /// Client allow and deny lists (after the listener's).
    pub ip: IpRules,
    /// CORS rules.
    pub cors: Option<Cors>,
    /// Header rules for the upstream request.
    pub request_headers: HeaderRules,
    /// Header rules for the upstream's response.
    pub response_headers: HeaderRules,
    /// Upstream `Server`, `X-Powered-By`, ... are removed from responses.
    pub hide_backend: bool,
    /// An upstream 5xx gets sluice's JSON error body instead of its own.
    pub intercept_errors: bool,
    /// Indices into `Config::limits`.
    pub rate_limit: Vec<usize>,
}
/// `key` is called only to name an error: building it for every route was a measurable part of a reload.
fn matchers(
    cx: &Ctx,
    key: impl Fn() -> String,
    m: Option<indexmap::IndexMap<String, String>>,
    header: bool,
) -> Result<Vec<Matcher>, ConfigError> {
    let Some(m) = m else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(m.len());
    for (name, value) in m {
        if header && !is_token(&name) {
            return Err(cx.err(format!("{}.{name}", key()), "expected a header name"));
        }
        if !header_value_ok(&value) {
            return Err(cx.err(format!("{}.{name}", key()), "value has control characters"));
        }
        out.push(Matcher {
            name: if header {
                name.to_ascii_lowercase()
            } else {
                name
            },
            value: if value == "*" { None } else { Some(value) },
        });
    }
    Ok(out)
}
/// Checks a path pattern; returns its parameter names (and whether it ends in `*`).
pub fn path_params(pattern: &str) -> Result<(Vec<String>, bool), String> {
    if !pattern.starts_with('/') {
        return Err(format!(
            "expected a path starting with '/', got {pattern:?}"
        ));
    }
    let mut params = Vec::new();
    let mut segs = pattern[1..].split('/').peekable();
    let mut wildcard = false;
    while let Some(seg) = segs.next() {
        if seg == "*" {
            if segs.peek().is_some() {
                return Err(format!("'*' must be the last segment in {pattern:?}"));
            }
            wildcard = true;
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("bad parameter name {seg:?} in {pattern:?}"));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter {{{name}}} appears twice in {pattern:?}"));
            }
            params.push(name.to_string());
        } else if seg
            .bytes()
            .any(|b| matches!(b, b'{' | b'}' | b'*' | b'?' | b'#') || b <= b' ' || b == 0x7f)
        {
            return Err(format!(
                "bad segment {seg:?} in {pattern:?} (literals, {{name}} or a final *)"
            ));
        }
    }
    if params.len() > super::MAX_PARAMS {
        return Err(format!("at most {} parameters per path", super::MAX_PARAMS));
    }
    Ok((params, wildcard))
}
pub(super) fn route(
    cx: &Ctx,
    name: String,
    r: RouteToml,
    upstreams: &[Upstream],
    by_name: &UpstreamIndex,
    auth: &[super::auth::Auth],
    consumer_headers: &ConsumerHeaders,
) -> Result<Route, ConfigError> {
    // Key paths are built only for an error: formatting them for each of 10,000 routes cost more than
    // checking the route.
    let base = || format!("routes.{name}");
    let host = match r.host {
        None => HostPattern::Any,
        Some(h) if h == "*" => HostPattern::Any,
        Some(h) => {
            // Most hosts are written in lowercase already: keep the string rather than copy it.
            let lower = if h.bytes().any(|b| b.is_ascii_uppercase()) {
                h.to_ascii_lowercase()
            } else {
                h.clone()
            };
            let check = lower.strip_prefix("*.").unwrap_or(&lower);
            if check.is_empty()
                || !check
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
            {
                return Err(cx.err(
                    format!("{}.host", base()),
                    format!("expected \"example.com\", \"*.example.com\" or \"*\", got {h:?}"),
                ));
            }
            match lower.strip_prefix('*') {
                Some(suffix) => HostPattern::Suffix(suffix.to_string()),
                None => HostPattern::Exact(lower),
            }
        }
    };
    let (params, wildcard) =
        path_params(&r.path).map_err(|m| cx.err(format!("{}.path", base()), m))?;
    // Requests are matched on their canonical path, so a pattern spelled otherwise never matches.
    let mut canon = Vec::new();
    let never = match crate::http1::path::normalise(r.path.as_bytes(), false, &mut canon) {
        Ok(crate::http1::path::Canonical::AsIs) => None,
        Ok(crate::http1::path::Canonical::Rewritten { .. }) => Some(format!(
            "requests are matched on their normalised path, so {:?} never matches; write {:?}",
            r.path,
            String::from_utf8_lossy(&canon)
        )),
        Err(e) => Some(format!("{e}: {:?}", r.path)),
    };
    if let Some(message) = never {
        return Err(cx.err(format!("{}.path", base()), message));
    }
    let methods = match r.methods {
        None => None,
        Some(ms) => {
            let mut out = Vec::new();
            for (i, m) in ms.into_iter().enumerate() {
                if !is_token(&m) {
                    return Err(cx.err(
                        format!("{}.methods[{i}]", base()),
                        format!("expected a method name, got {m:?}"),
                    ));
                }
                out.push(m.to_ascii_uppercase());
            }
            Some(out)
        }
    };
    let find = |key: &dyn Fn() -> String, n: &str| -> Result<usize, ConfigError> {
        by_name.get(n).copied().ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            cx.err(
                key(),
                format!("unknown upstream {n:?} (defined: {known:?})"),
            )
        })
    };
    let action = match (r.respond, r.upstream, r.split) {
        (Some(resp), None, None) => {
            // A direct response has no upstream request or response for these to act on.
            for (set, key) in [
                (r.request_headers.is_some(), "request_headers"),
                (r.response_headers.is_some(), "response_headers"),
                (r.intercept_errors, "intercept_errors"),
            ] {
                if set {
                    return Err(cx.err(
                        format!("{}.{key}", base()),
                        "a `respond` route has no upstream; its own headers go in respond.headers",
                    ));
                }
            }
            if !(100..=999).contains(&resp.status) || (100..200).contains(&resp.status) {
                return Err(cx.err(
                    format!("{}.respond.status", base()),
                    format!("expected 200..=999, got {}", resp.status),
                ));
            }
            let mut headers = Vec::new();
            for (k, v) in resp.headers {
                if !is_token(&k) || !header_value_ok(&v) {
                    return Err(cx.err(
                        format!("{}.respond.headers.{k}", base()),
                        "expected a header name and a value without control characters",
                    ));
                }
                let lower = k.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ) {
                    return Err(cx.err(
                        format!("{}.respond.headers.{k}", base()),
                        "set by sluice itself",
                    ));
                }
                headers.push((k, v));
            }
            RouteAction::Respond(Respond {
                status: resp.status,
                body: resp.body,
                headers,
            })
        }
        (None, Some(u), None) => RouteAction::Proxy(vec![SplitTarget {
            upstream: find(&|| format!("{}.upstream", base()), &u)?,
            weight: 1,
            when: None,
        }]),
        (None, None, Some(split)) => {
            if split.is_empty() {
                return Err(cx.err(format!("{}.split", base()), "expected at least one entry"));
            }
            let mut targets = Vec::new();
            for (i, s) in split.into_iter().enumerate() {
                let key = || format!("{}.split[{i}]", base());
                let upstream = find(&|| format!("{}.upstream", key()), &s.upstream)?;
                let when = match (s.header, s.value) {
                    (Some(h), v) => {
                        if !is_token(&h) {
                            return Err(
                                cx.err(format!("{}.header", key()), "expected a header name")
                            );
                        }
                        Some(Matcher {
                            name: h.to_ascii_lowercase(),
                            value: v.filter(|v| v != "*"),
                        })
                    }
                    (None, Some(_)) => {
                        return Err(cx.err(format!("{}.value", key()), "needs `header`"))
                    }
                    (None, None) => None,
                };
                let weight = match (s.weight, &when) {
                    (Some(w), _) if w > 1_000_000 => {
                        return Err(cx.err(
                            format!("{}.weight", key()),
                            format!("expected 0..=1000000, got {w}"),
                        ))
                    }
                    (Some(w), _) => w,
                    (None, Some(_)) => 0,
                    (None, None) => {
                        return Err(cx.err(key(), "expected `weight`, or `header` (and `value`)"))
                    }
                };
                targets.push(SplitTarget {
                    upstream,
                    weight,
                    when,
                });
            }
            if targets.iter().all(|t| t.weight == 0) && targets.iter().all(|t| t.when.is_some()) {
                return Err(cx.err(format!("{}.split", base()), "needs at least one entry with a weight above 0 for requests no header rule selects"));
            }
            RouteAction::Proxy(targets)
        }
        (None, None, None) => {
            return Err(cx.err(base(), "expected one of `upstream`, `split` or `respond`"))
        }
        _ => {
            return Err(cx.err(
                base(),
                "`upstream`, `split` and `respond` are exclusive: set exactly one",
            ))
        }
    };
    if let Some(p) = &r.strip_prefix {
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
            return Err(cx.err(
                format!("{}.strip_prefix", base()),
                format!("expected a path like \"/v1\", got {p:?}"),
            ));
        }
    }
    if let Some(t) = &r.rewrite_path {
        if r.strip_prefix.is_some() {
            return Err(cx.err(
                format!("{}.rewrite_path", base()),
                "use either strip_prefix or rewrite_path",
            ));
        }
        if !t.starts_with('/') {
            return Err(cx.err(
                format!("{}.rewrite_path", base()),
                format!("expected a path starting with '/', got {t:?}"),
            ));
        }
        let mut rest = t.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| cx.err(format!("{}.rewrite_path", base()), "unclosed '{'"))?
                + open;
            let name = &rest[open + 1..close];
            if name == "*" {
                if !wildcard {
                    return Err(cx.err(
                        format!("{}.rewrite_path", base()),
                        "{*} needs a path ending in /*",
                    ));
                }
            } else if !params.iter().any(|p| p == name) {
                return Err(cx.err(
                    format!("{}.rewrite_path", base()),
                    format!("{{{name}}} is not a parameter of path {:?}", r.path),
                ));
            }
            rest = &rest[close + 1..];
        }
        if t.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(cx.err(
                format!("{}.rewrite_path", base()),
                "has spaces or control characters",
            ));
        }
    }
    if let Some(h) = &r.host_rewrite {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        {
            return Err(cx.err(
                format!("{}.host_rewrite", base()),
                format!("expected a host name, got {h:?}"),
            ));
        }
    }
    let forward_path = match r.forward_path.as_deref() {
        None | Some("normalized") => ForwardPath::Normalized,
        Some("as_received") => {
            // strip_prefix and rewrite_path work on the canonical path (the match's captures are
            // offsets into it): applied to another spelling they would cut in the wrong place.
            for (set, key) in [
                (r.strip_prefix.is_some(), "strip_prefix"),
                (r.rewrite_path.is_some(), "rewrite_path"),
            ] {
                if set {
                    return Err(cx.err(
                        format!("{}.forward_path", base()),
                        format!("\"as_received\" sends the path as the client wrote it, so it cannot be combined with {key}"),
                    ));
                }
            }
            ForwardPath::AsReceived
        }
        Some(other) => {
            return Err(cx.err(
                format!("{}.forward_path", base()),
                format!("expected \"normalized\" or \"as_received\", got {other:?}"),
            ))
        }
    };
    let match_headers = matchers(
        cx,
        || format!("{}.match_headers", base()),
        r.match_headers,
        true,
    )?;
    let match_query = matchers(
        cx,
        || format!("{}.match_query", base()),
        r.match_query,
        false,
    )?;
    let access = super::consumer::route_access(
        cx,
        &name,
        auth,
        super::consumer::RouteAccessToml {
            auth: r.auth,
            allow: r.allow,
            require_scopes: r.require_scopes,
            require_claims: r.require_claims,
            forward_credential: r.forward_credential,
            failure_mode_allow: r.failure_mode_allow,
        },
    )?;
    let ip = IpRules {
        allow: cidr_list(cx, &base, "ip_allow", &r.ip_allow)?,
        deny: cidr_list(cx, &base, "ip_deny", &r.ip_deny)?,
    };
    let cors = match r.cors {
        Some(t) => Some(cors(cx, &base, t, methods.as_deref())?),
        None => None,
    };
    let request_headers = header_rules(
        cx,
        &base,
        "request_headers",
        r.request_headers,
        Side::Request,
        consumer_headers,
    )?;
    let response_headers = header_rules(
        cx,
        &base,
        "response_headers",
        r.response_headers,
        Side::Response,
        consumer_headers,
    )?;
    Ok(Route {
        name,
        host,
        path: r.path,
        methods,
        match_headers,
        match_query,
        action,
        strip_prefix: r.strip_prefix,
        rewrite_path: r.rewrite_path,
        host_rewrite: r.host_rewrite,
        max_body_bytes: r.max_body_bytes,
        access,
        allow_encoded_slash: r.allow_encoded_slash,
        forward_path,
        ip,
        cors,
        request_headers,
        response_headers,
        hide_backend: r.hide_backend,
        intercept_errors: r.intercept_errors,
        rate_limit: Vec::new(),
    })
}

/// Defaults, one function per key (serde needs functions); each is named after its key.
mod dflt {

    pub fn path() -> String {
        "/*".into()
    }
    pub fn status() -> u16 {
        200
    }
    pub fn hide_backend() -> bool {
        true
    }
}
