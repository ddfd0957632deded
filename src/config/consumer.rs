//! API management tables: `[consumers.NAME]` (who may call, with which credentials), `[api_key]`
//! (where a key is read from), `[consumer_headers]` (how the consumer is named to the upstream),
//! `[state]` (the database of runtime consumers), and the per-route access keys (`auth`, `allow`,
//! `require_scopes`, `require_claims`, `forward_credential`).

use super::check::{header_value_ok, is_token, Ctx};
use super::ConfigError;
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::PathBuf;

/// `[consumers.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerToml {
    /// Keys, plain or `sha256:<hex>`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Basic credentials.
    pub basic: Option<BasicToml>,
    /// Groups an `allow` list may name.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: IndexMap<String, String>,
    /// `[plans.NAME]` the consumer is on.
    pub plan: Option<String>,
    /// Overrides the plan's quota, field by field.
    pub quota: Option<super::limits::QuotaToml>,
    /// Verified client certificates that name this consumer (`auth = ["mtls"]`).
    pub mtls: Option<MtlsToml>,
}

/// `mtls = { san = [..], subject = [..] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsToml {
    #[serde(default)]
    pub san: Vec<String>,
    #[serde(default)]
    pub subject: Vec<String>,
}

/// A SAN as compared: DNS names in lowercase; URIs and e-mail addresses exact.
pub fn normalise_san(s: &str) -> String {
    if s.contains(':') || s.contains('@') {
        s.to_string()
    } else {
        s.to_ascii_lowercase()
    }
}

/// `basic = { user, password_hash }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicToml {
    /// User name.
    pub user: String,
    /// An argon2 PHC string or a bcrypt `$2b$` hash.
    pub password_hash: String,
}

/// `[api_key]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyToml {
    /// Header holding the key.
    pub header: Option<String>,
    /// Query parameter holding the key.
    pub query: Option<String>,
}

/// `[consumer_headers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerHeadersToml {
    /// Header naming the consumer.
    pub id: Option<String>,
    /// Header listing its groups.
    pub groups: Option<String>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateToml {
    /// The SQLite database file, created on first use.
    pub path: PathBuf,
}

/// A consumer's key as configured: the SHA-256 digest either way, so a plain key is never kept.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<api key digest>")
    }
}

/// How a password hash verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$`, `$argon2i$`, `$argon2d$`.
    Argon2,
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt,
}

/// Basic credentials, validated.
#[derive(Clone)]
pub struct Basic {
    /// User name.
    pub user: String,
    /// The hash string.
    pub password_hash: String,
    /// Which verifier reads it.
    pub kind: HashKind,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic {{ user: {:?}, {:?} hash }}", self.user, self.kind)
    }
}

/// A consumer from the file.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Table name.
    pub name: String,
    /// Key digests.
    pub api_keys: Vec<KeyDigest>,
    /// Basic credentials.
    pub basic: Option<Basic>,
    /// Groups.
    pub groups: Vec<String>,
    /// Labels.
    pub metadata: Vec<(String, String)>,
    /// The plan's name (one of `Config::plans`).
    pub plan: Option<String>,
    /// The consumer's own quota fields, over its plan's.
    pub quota: Option<super::limits::QuotaSpec>,
    /// Client certificate SANs (normalised, `normalise_san`) and subjects
    /// (`config::tls::normalise_subject`) that name this consumer.
    pub mtls_sans: Vec<String>,
    pub mtls_subjects: Vec<String>,
}

/// Where API keys are read from.
#[derive(Debug, Clone)]
pub struct ApiKeySource {
    /// Lowercase header name (default `x-api-key`).
    pub header: String,
    /// Query parameter, if keys may come in the query.
    pub query: Option<String>,
}

/// Headers naming the consumer upstream (lowercase).
#[derive(Debug, Clone)]
pub struct ConsumerHeaders {
    /// Default `x-consumer-id`.
    pub id: String,
    /// Default `x-consumer-groups`.
    pub groups: String,
}

/// One authentication method a route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `api_key`.
    ApiKey,
    /// `basic`.
    Basic,
    /// `mtls`: a verified client certificate (TLS listener with `client_ca`).
    Mtls,
    /// A named `[auth.NAME]` JWT verifier: its index in `Snapshot::jwt`, and in `Config::auth`.
    Jwt { verifier: u16, auth: u16 },
    /// A named `[auth.NAME]` external auth service: its index in `Config::auth`.
    ExtAuth { auth: u16 },
    /// A named `[auth.NAME]` token introspection endpoint: its index in `Config::auth`.
    Introspection { auth: u16 },
}

/// Method names by `AuthMethod::index`: the built-ins, then each named verifier.
pub fn method_names(cfg: &super::Config) -> Vec<std::sync::Arc<str>> {
    let mut v: Vec<std::sync::Arc<str>> = vec!["api_key".into(), "basic".into(), "mtls".into()];
    v.extend(cfg.auth.iter().map(|a| a.name.as_str().into()));
    v
}

impl AuthMethod {
    /// Its index in `method_names` (the record's `AuthMark::method`).
    pub fn index(self) -> u8 {
        match self {
            AuthMethod::ApiKey => 0,
            AuthMethod::Basic => 1,
            AuthMethod::Mtls => 2,
            // At most 253 named methods (checked when auth tables are read): the index fits.
            AuthMethod::Jwt { auth, .. }
            | AuthMethod::ExtAuth { auth }
            | AuthMethod::Introspection { auth } => (3 + auth).min(u8::MAX as u16) as u8,
        }
    }
}

/// A route's access rules.
#[derive(Debug, Clone, Default)]
pub struct RouteAccess {
    /// Methods tried in order; empty = no authentication.
    pub auth: Vec<AuthMethod>,
    /// Consumers or groups admitted; None = any authenticated caller.
    pub allow: Option<Vec<String>>,
    /// Scopes the token must carry.
    pub require_scopes: Vec<String>,
    /// Claim values the token must carry.
    pub require_claims: Vec<(String, String)>,
    /// Keep the credential on the upstream request.
    pub forward_credential: bool,
    /// Let the request through (unauthenticated) when an external auth service cannot be asked.
    pub failure_mode_allow: bool,
}

/// The most consumers a file may define (each is compiled into every worker's table).
const MAX_CONSUMERS: usize = 100_000;

pub use super::check::name_ok;

/// The digest of a key as written: `sha256:<64 hex>` or the key itself.
pub fn key_digest(written: &str) -> Result<KeyDigest, String> {
    use sha2::{Digest, Sha256};
    if let Some(hex) = written.strip_prefix("sha256:") {
        let b = hex.as_bytes();
        if b.len() != 64 {
            return Err(format!(
                "expected sha256: and 64 hex digits, got {} digits",
                b.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| "expected hex digits".to_string())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| "expected hex digits".to_string())?;
        }
        return Ok(KeyDigest(out));
    }
    if written.len() < 8 || !written.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("expected at least 8 visible ASCII characters (or sha256:<hex>)".into());
    }
    Ok(KeyDigest(Sha256::digest(written.as_bytes()).into()))
}

/// Which verifier a hash string needs, if it is one sluice can verify.
pub fn hash_kind(hash: &str) -> Result<HashKind, String> {
    if hash.starts_with("$argon2") {
        argon2::PasswordHash::new(hash)
            .map(|_| HashKind::Argon2)
            .map_err(|e| format!("not a valid argon2 PHC string: {e}"))
    } else if hash.starts_with("$2") {
        hash.parse::<bcrypt::HashParts>()
            .map(|_| HashKind::Bcrypt)
            .map_err(|e| format!("not a valid bcrypt hash: {e}"))
    } else {
        Err("expected an argon2 PHC string ($argon2id$...) or a bcrypt hash ($2b$...)".into())
    }
}

pub(super) fn consumers(
    cx: &Ctx,
    raw: IndexMap<String, ConsumerToml>,
    plans: &[super::limits::Plan],
) -> Result<Vec<Consumer>, ConfigError> {
    if raw.len() > MAX_CONSUMERS {
        return Err(cx.err(
            "consumers",
            format!("at most {MAX_CONSUMERS} consumers, got {}", raw.len()),
        ));
    }
    let mut out: Vec<Consumer> = Vec::with_capacity(raw.len());
    let mut keys: ahash::HashMap<[u8; 32], String> = Default::default();
    let mut users: ahash::HashMap<String, String> = Default::default();
    for (name, c) in raw {
        let base = || format!("consumers.{name}");
        if !name_ok(&name) {
            return Err(cx.err(
                base(),
                "expected a name of letters, digits and - _ . @ (at most 128)",
            ));
        }
        let mut api_keys = Vec::with_capacity(c.api_keys.len());
        for (i, k) in c.api_keys.iter().enumerate() {
            let key = || format!("{}.api_keys[{i}]", base());
            let d = key_digest(k).map_err(|m| cx.err(key(), m))?;
            if let Some(other) = keys.insert(d.0, name.clone()) {
                return Err(cx.err(
                    key(),
                    format!("the same key is given to consumer {other:?}"),
                ));
            }
            api_keys.push(d);
        }
        let basic = match c.basic {
            None => None,
            Some(b) => {
                if b.user.is_empty() || b.user.contains(':') || !header_value_ok(&b.user) {
                    return Err(cx.err(
                        format!("{}.basic.user", base()),
                        "expected a non-empty user name without ':' or control characters",
                    ));
                }
                let kind = hash_kind(&b.password_hash)
                    .map_err(|m| cx.err(format!("{}.basic.password_hash", base()), m))?;
                if let Some(other) = users.insert(b.user.clone(), name.clone()) {
                    return Err(cx.err(
                        format!("{}.basic.user", base()),
                        format!("user {:?} is also consumer {other:?}'s", b.user),
                    ));
                }
                Some(Basic {
                    user: b.user,
                    password_hash: b.password_hash,
                    kind,
                })
            }
        };
        for (i, g) in c.groups.iter().enumerate() {
            if !name_ok(g) {
                return Err(cx.err(
                    format!("{}.groups[{i}]", base()),
                    "expected a group name of letters, digits and - _ . @",
                ));
            }
        }
        let mut metadata = Vec::with_capacity(c.metadata.len());
        for (k, v) in c.metadata {
            if !name_ok(&k) || !header_value_ok(&v) {
                return Err(cx.err(
                    format!("{}.metadata.{k}", base()),
                    "expected a name of letters, digits and - _ . @ and a value without control characters",
                ));
            }
            metadata.push((k, v));
        }
        if let Some(p) = &c.plan {
            if !plans.iter().any(|x| x.name == *p) {
                return Err(cx.err(
                    format!("{}.plan", base()),
                    format!("names plan {p:?}, which no [plans.{p}] defines"),
                ));
            }
        }
        let plan = c.plan;
        let quota = match &c.quota {
            Some(q) => Some(super::limits::quota_spec(
                cx,
                &format!("{}.quota", base()),
                q,
            )?),
            None => None,
        };
        let (mut mtls_sans, mut mtls_subjects) = (Vec::new(), Vec::new());
        if let Some(m) = &c.mtls {
            if m.san.is_empty() && m.subject.is_empty() {
                return Err(cx.err(
                    format!("{}.mtls", base()),
                    "expected at least one `san` or `subject`",
                ));
            }
            for (i, v) in m.san.iter().enumerate() {
                let v = normalise_san(v.trim());
                if v.is_empty() || !header_value_ok(&v) {
                    return Err(cx.err(
                        format!("{}.mtls.san[{i}]", base()),
                        "expected a DNS name, URI or e-mail address",
                    ));
                }
                if let Some(o) = out.iter().find(|o: &&Consumer| o.mtls_sans.contains(&v)) {
                    return Err(cx.err(
                        format!("{}.mtls.san[{i}]", base()),
                        format!("{v:?} already names consumer {:?}", o.name),
                    ));
                }
                mtls_sans.push(v);
            }
            for (i, v) in m.subject.iter().enumerate() {
                let v = super::tls::normalise_subject(v);
                if !v.contains('=') || !header_value_ok(&v) {
                    return Err(cx.err(
                        format!("{}.mtls.subject[{i}]", base()),
                        "expected attributes like \"CN=alice,O=Example\"",
                    ));
                }
                if let Some(o) = out
                    .iter()
                    .find(|o: &&Consumer| o.mtls_subjects.contains(&v))
                {
                    return Err(cx.err(
                        format!("{}.mtls.subject[{i}]", base()),
                        format!("{v:?} already names consumer {:?}", o.name),
                    ));
                }
                mtls_subjects.push(v);
            }
        }
        out.push(Consumer {
            mtls_sans,
            mtls_subjects,
            name,
            api_keys,
            basic,
            groups: c.groups,
            metadata,
            plan,
            quota,
        });
    }
    Ok(out)
}

fn header_name(cx: &Ctx, key: &str, v: &str) -> Result<String, ConfigError> {
    if !is_token(v) {
        return Err(cx.err(key, format!("expected a header name, got {v:?}")));
    }
    Ok(v.to_ascii_lowercase())
}

pub(super) fn api_key(cx: &Ctx, raw: ApiKeyToml) -> Result<ApiKeySource, ConfigError> {
    let header = match raw.header {
        Some(h) => header_name(cx, "api_key.header", &h)?,
        None => "x-api-key".into(),
    };
    if let Some(q) = &raw.query {
        if q.is_empty()
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(cx.err(
                "api_key.query",
                "expected a query parameter name of letters, digits and - _ .",
            ));
        }
    }
    Ok(ApiKeySource {
        header,
        query: raw.query,
    })
}

pub(super) fn consumer_headers(
    cx: &Ctx,
    raw: ConsumerHeadersToml,
) -> Result<ConsumerHeaders, ConfigError> {
    Ok(ConsumerHeaders {
        id: match raw.id {
            Some(h) => header_name(cx, "consumer_headers.id", &h)?,
            None => "x-consumer-id".into(),
        },
        groups: match raw.groups {
            Some(h) => header_name(cx, "consumer_headers.groups", &h)?,
            None => "x-consumer-groups".into(),
        },
    })
}

/// The access keys of one route, as written.
pub(super) struct RouteAccessToml {
    pub auth: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub require_scopes: Option<Vec<String>>,
    pub require_claims: Option<IndexMap<String, String>>,
    pub forward_credential: bool,
    pub failure_mode_allow: bool,
}

pub(super) fn route_access(
    cx: &Ctx,
    route: &str,
    named: &[super::auth::Auth],
    raw: RouteAccessToml,
) -> Result<RouteAccess, ConfigError> {
    let key = |k: &str| format!("routes.{route}.{k}");
    let mut auth = Vec::new();
    for (i, m) in raw.auth.unwrap_or_default().iter().enumerate() {
        let method = match m.as_str() {
            "api_key" => AuthMethod::ApiKey,
            "basic" => AuthMethod::Basic,
            "mtls" => AuthMethod::Mtls,
            other => match named.iter().position(|a| a.name == other) {
                Some(auth) if matches!(named[auth].kind, super::auth::AuthKind::ExtAuth(_)) => {
                    AuthMethod::ExtAuth { auth: auth as u16 }
                }
                Some(auth)
                    if matches!(named[auth].kind, super::auth::AuthKind::Introspection(_)) =>
                {
                    AuthMethod::Introspection { auth: auth as u16 }
                }
                Some(auth) => {
                    let verifier = named[..auth]
                        .iter()
                        .filter(|a| matches!(a.kind, super::auth::AuthKind::Jwt(_)))
                        .count();
                    AuthMethod::Jwt {
                        verifier: verifier as u16,
                        auth: auth as u16,
                    }
                }
                None => {
                    let mut known = vec!["api_key".to_string(), "basic".to_string()];
                    known.extend(named.iter().map(|a| a.name.clone()));
                    return Err(cx.err(
                        format!("{}[{i}]", key("auth")),
                        format!("unknown auth method {other:?} (defined: {known:?})"),
                    ));
                }
            },
        };
        if auth.contains(&method) {
            return Err(cx.err(format!("{}[{i}]", key("auth")), "named twice"));
        }
        auth.push(method);
    }
    let needs_auth = |k: &str| -> Result<(), ConfigError> {
        if auth.is_empty() {
            Err(cx.err(key(k), "needs `auth` on the same route"))
        } else {
            Ok(())
        }
    };
    if let Some(allow) = &raw.allow {
        needs_auth("allow")?;
        for (i, n) in allow.iter().enumerate() {
            if !name_ok(n) {
                return Err(cx.err(
                    format!("{}[{i}]", key("allow")),
                    "expected a consumer or group name",
                ));
            }
        }
    }
    let require_scopes = raw.require_scopes.unwrap_or_default();
    if !require_scopes.is_empty() {
        needs_auth("require_scopes")?;
    }
    for (i, s) in require_scopes.iter().enumerate() {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(cx.err(
                format!("{}[{i}]", key("require_scopes")),
                "expected a scope (visible ASCII, no quotes)",
            ));
        }
    }
    let require_claims: Vec<(String, String)> =
        raw.require_claims.unwrap_or_default().into_iter().collect();
    if !require_claims.is_empty() {
        needs_auth("require_claims")?;
    }
    if raw.forward_credential {
        needs_auth("forward_credential")?;
    }
    if raw.failure_mode_allow && !auth.iter().any(|m| matches!(m, AuthMethod::ExtAuth { .. })) {
        return Err(cx.err(
            key("failure_mode_allow"),
            "needs an ext_auth method in `auth` on the same route",
        ));
    }
    Ok(RouteAccess {
        auth,
        allow: raw.allow,
        require_scopes,
        require_claims,
        forward_credential: raw.forward_credential,
        failure_mode_allow: raw.failure_mode_allow,
    })
}

pub(super) fn state(_cx: &Ctx, raw: Option<StateToml>) -> Option<PathBuf> {
    raw.map(|s| s.path)
}
