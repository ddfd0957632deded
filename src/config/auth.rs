//! `[auth.NAME]`: named authentication methods that routes list in `auth = [...]`. The `type` key picks
//! the kind; `jwt` is implemented here (issuer, key source, audiences, algorithm allow list, leeway,
//! consumer claim, refresh schedule); `ext_auth` in `ext_auth.rs`; `introspection` (OAuth 2.0 token
//! introspection, RFC 7662: endpoint, client credentials, answer caching, timeout, consumer claim)
//! in `introspection.rs`. Names are unique and must not be a built-in method's (`api_key`, `basic`).
//!
//! Only the shape is checked here; key files are read and keys parsed when the snapshot is built
//! (`policy::jwt::JwtVerifier::compile`), so text-only validation never touches the disk. An
//! introspection client secret is resolved here (env or file, like `admin.token`), so a missing
//! variable fails the load and `--check` naming `auth.NAME.client_secret`.

use super::check::{http_url, nonzero, Ctx};
use super::units;
use super::ConfigError;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[auth.NAME]` as written: internally tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthToml {
    /// `type = "jwt"`.
    Jwt(JwtToml),
    /// `type = "ext_auth"`.
    ExtAuth(super::ext_auth::ExtAuthToml),
    /// `type = "introspection"`.
    Introspection(super::introspection::IntrospectionToml),
}

/// `[auth.NAME]` with `type = "jwt"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtToml {
    /// Expected `iss`; also the OpenID discovery base when no key source is given.
    pub issuer: Option<String>,
    /// JWKS URL.
    pub jwks: Option<String>,
    /// JWKS file, read at load and reload.
    pub jwks_file: Option<String>,
    /// PEM public key, or a file holding an HMAC secret.
    pub key_file: Option<String>,
    /// Accepted `aud` values; absent = `aud` not checked.
    pub audiences: Option<Vec<String>>,
    /// Allow list of `alg` values.
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "dflt::leeway", deserialize_with = "units::duration")]
    pub leeway: Duration,
    /// Claim that names the consumer.
    #[serde(default = "dflt::consumer_claim")]
    pub consumer_claim: String,
    /// How often fetched keys are refreshed.
    #[serde(default = "dflt::refresh", deserialize_with = "units::duration")]
    pub refresh: Duration,
    /// Fewest seconds between two fetches of one verifier's keys (unknown-kid refreshes, retries).
    #[serde(
        default = "dflt::min_refresh_interval",
        deserialize_with = "units::duration"
    )]
    pub min_refresh_interval: Duration,
    /// Timeout of one discovery or JWKS fetch.
    #[serde(default = "dflt::fetch_timeout", deserialize_with = "units::duration")]
    pub fetch_timeout: Duration,
}

/// A validated `[auth.NAME]`.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Table name: what routes list and metrics label.
    pub name: String,
    /// What it is.
    pub kind: AuthKind,
}

/// The kinds of `[auth.NAME]` implemented so far.
#[derive(Debug, Clone)]
pub enum AuthKind {
    /// A JWT verifier.
    Jwt(Jwt),
    /// An external authorization service.
    ExtAuth(super::ext_auth::ExtAuth),
    /// An OAuth 2.0 token introspection endpoint.
    Introspection(super::introspection::Introspection),
}

impl AuthKind {
    /// The `type` as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthKind::Jwt(_) => "jwt",
            AuthKind::ExtAuth(_) => "ext_auth",
            AuthKind::Introspection(_) => "introspection",
        }
    }
}

/// Where a JWT verifier's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration` -> `jwks_uri`; the value is the discovery URL.
    Discovery(String),
    /// A JWKS URL.
    JwksUrl(String),
    /// A JWKS file (read at load and reload).
    JwksFile(PathBuf),
    /// A PEM public key or an HMAC secret.
    KeyFile(PathBuf),
}

impl KeySource {
    /// The URL the control side fetches, when the keys are remote.
    pub fn url(&self) -> Option<&str> {
        match self {
            KeySource::Discovery(u) | KeySource::JwksUrl(u) => Some(u),
            KeySource::JwksFile(_) | KeySource::KeyFile(_) => None,
        }
    }
    /// How the admin API names it: `discovery`, `jwks`, `jwks_file`, `key_file`.
    pub fn kind(&self) -> &'static str {
        match self {
            KeySource::Discovery(_) => "discovery",
            KeySource::JwksUrl(_) => "jwks",
            KeySource::JwksFile(_) => "jwks_file",
            KeySource::KeyFile(_) => "key_file",
        }
    }
    /// The URL or path, for messages.
    pub fn location(&self) -> String {
        match self {
            KeySource::Discovery(u) | KeySource::JwksUrl(u) => u.clone(),
            KeySource::JwksFile(p) | KeySource::KeyFile(p) => p.display().to_string(),
        }
    }
}

/// `type = "jwt"`, validated.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Key source.
    pub keys: KeySource,
    /// Accepted audiences; empty = `aud` not checked.
    pub audiences: Vec<String>,
    /// Allowed algorithms (never "none"; HMAC only with a `key_file` secret).
    pub algorithms: Vec<Algorithm>,
    /// Skew allowed on `exp`/`nbf`.
    pub leeway: Duration,
    /// Claim naming the consumer.
    pub consumer_claim: String,
    /// Scheduled refresh of remote keys.
    pub refresh: Duration,
    /// Rate limit of fetches (unknown kid, retries after a failure).
    pub min_refresh_interval: Duration,
    /// One fetch's timeout.
    pub fetch_timeout: Duration,
}

/// Every asymmetric algorithm: the default allow list for JWKS, discovery and PEM keys. Each key is
/// bound to its own family, so allowing them all lets no token through a key of another kind.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Validates every `[auth.NAME]`, in file order.
pub(super) fn auths(
    cx: &Ctx,
    raw: indexmap::IndexMap<String, AuthToml>,
    upstreams: &super::check::UpstreamIndex,
) -> Result<Vec<Auth>, ConfigError> {
    if raw.len() > 200 {
        return Err(cx.err(
            "auth",
            format!("at most 200 [auth.NAME] tables, got {}", raw.len()),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (name, t) in raw {
        let key = format!("auth.{name}");
        if !super::is_token(&name) {
            return Err(cx.err(key, "expected a name of letters, digits, '-' or '_'"));
        }
        if name == "api_key" || name == "basic" || name == "mtls" {
            return Err(cx.err(
                key,
                format!("{name:?} is a built-in method name; choose another"),
            ));
        }
        let kind = match t {
            AuthToml::Jwt(j) => AuthKind::Jwt(jwt(cx, &key, j)?),
            AuthToml::ExtAuth(t) => {
                AuthKind::ExtAuth(super::ext_auth::ext_auth(cx, &key, t, upstreams)?)
            }
            AuthToml::Introspection(t) => {
                AuthKind::Introspection(super::introspection::introspection(cx, &key, t)?)
            }
        };
        out.push(Auth { name, kind });
    }
    Ok(out)
}

fn jwt(cx: &Ctx, key: &str, t: JwtToml) -> Result<Jwt, ConfigError> {
    let given = [
        t.jwks.is_some(),
        t.jwks_file.is_some(),
        t.key_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        return Err(cx.err(key, "give at most one of jwks, jwks_file and key_file"));
    }
    if let Some(i) = &t.issuer {
        if i.is_empty() {
            return Err(cx.err(format!("{key}.issuer"), "expected a non-empty issuer"));
        }
    }
    let keys = if let Some(u) = t.jwks {
        http_url(cx, &format!("{key}.jwks"), &u)?;
        KeySource::JwksUrl(u)
    } else if let Some(f) = t.jwks_file {
        KeySource::JwksFile(PathBuf::from(f))
    } else if let Some(f) = t.key_file {
        KeySource::KeyFile(PathBuf::from(f))
    } else {
        let Some(issuer) = &t.issuer else {
            return Err(cx.err(
                key,
                "expected one of jwks, jwks_file or key_file, or an issuer to discover keys from",
            ));
        };
        http_url(cx, &format!("{key}.issuer"), issuer)?;
        // OpenID Connect Discovery 1.0 §4: the issuer with any trailing slash removed, then the path.
        KeySource::Discovery(format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
    };

    let akey = format!("{key}.algorithms");
    let algorithms = match &t.algorithms {
        None if matches!(keys, KeySource::KeyFile(_)) => {
            // A key_file may be a PEM key or an HMAC secret; which one is known only once it is read.
            return Err(cx.err(
                akey,
                "expected the list of algorithms the key_file is for, e.g. [\"HS256\"] or [\"RS256\"]",
            ));
        }
        None => ASYMMETRIC.to_vec(),
        Some(list) => {
            if list.is_empty() {
                return Err(cx.err(akey, "expected at least one algorithm"));
            }
            let mut algs = Vec::with_capacity(list.len());
            for (i, a) in list.iter().enumerate() {
                let k = format!("{akey}[{i}]");
                if a.eq_ignore_ascii_case("none") {
                    return Err(cx.err(k, "\"none\" is never accepted"));
                }
                let alg: Algorithm = a.parse().map_err(|_| {
                    cx.err(
                        &k,
                        format!("expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; got {a:?}"),
                    )
                })?;
                if !algs.contains(&alg) {
                    algs.push(alg);
                }
            }
            algs
        }
    };
    let hmac = algorithms
        .iter()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .count();
    if hmac > 0 && !matches!(keys, KeySource::KeyFile(_)) {
        return Err(cx.err(
            akey,
            "HS256/HS384/HS512 need a key_file holding the shared secret (keys from a JWKS or an issuer are public keys)",
        ));
    }
    if hmac > 0 && hmac < algorithms.len() {
        return Err(cx.err(
            akey,
            "a key_file is either an HMAC secret (HS*) or a public key (RS*, PS*, ES*, EdDSA), not both",
        ));
    }

    let mut audiences = t.audiences.unwrap_or_default();
    audiences.dedup();
    if audiences.iter().any(String::is_empty) {
        return Err(cx.err(format!("{key}.audiences"), "expected non-empty audiences"));
    }
    if t.consumer_claim.is_empty() {
        return Err(cx.err(format!("{key}.consumer_claim"), "expected a claim name"));
    }
    let refresh = nonzero(cx, &format!("{key}.refresh"), t.refresh)?;
    let fetch_timeout = nonzero(cx, &format!("{key}.fetch_timeout"), t.fetch_timeout)?;
    Ok(Jwt {
        issuer: t.issuer,
        keys,
        audiences,
        algorithms,
        leeway: t.leeway,
        consumer_claim: t.consumer_claim,
        refresh,
        min_refresh_interval: t.min_refresh_interval,
        fetch_timeout,
    })
}

/// Defaults, one function per key.
mod dflt {
    use std::time::Duration;
    pub fn leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub fn consumer_claim() -> String {
        "sub".into()
    }
    pub fn refresh() -> Duration {
        Duration::from_secs(600)
    }
    pub fn min_refresh_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn fetch_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, AuthKind, ConfigError, KeySource, Source};

    fn load(auth: &str) -> Result<crate::config::Config, ConfigError> {
        parse(
            &format!("[listeners.a]\nlisten = \"127.0.0.1:0\"\n{auth}"),
            Source::File("t.toml".into()),
        )
    }

    #[test]
    fn issuer_alone_discovers() {
        let c = load("[auth.corp]\ntype = \"jwt\"\nissuer = \"https://id.example.com/\"\naudiences = [\"api\"]\n").unwrap();
        let AuthKind::Jwt(j) = &c.auth[0].kind else {
            panic!("not a jwt verifier");
        };
        assert_eq!(
            j.keys,
            KeySource::Discovery("https://id.example.com/.well-known/openid-configuration".into())
        );
        assert_eq!(j.leeway.as_secs(), 30);
        assert_eq!(j.refresh.as_secs(), 600);
        assert_eq!(j.consumer_claim, "sub");
        assert_eq!(j.algorithms.len(), super::ASYMMETRIC.len());
    }

    #[test]
    fn rules_name_the_key() {
        let cases = [
            ("type = \"jwt\"\n", "auth.x", "issuer"),
            ("type = \"jwt\"\njwks = \"https://a/j\"\nkey_file = \"k\"\nalgorithms = [\"RS256\"]\n", "auth.x", "at most one"),
            ("type = \"jwt\"\njwks = \"https://a/j\"\nalgorithms = [\"none\"]\n", "auth.x.algorithms[0]", "never"),
            ("type = \"jwt\"\njwks = \"https://a/j\"\nalgorithms = [\"XS256\"]\n", "auth.x.algorithms[0]", "XS256"),
            ("type = \"jwt\"\njwks = \"https://a/j\"\nalgorithms = [\"HS256\"]\n", "auth.x.algorithms", "key_file"),
            ("type = \"jwt\"\nkey_file = \"k\"\nalgorithms = [\"HS256\", \"RS256\"]\n", "auth.x.algorithms", "not both"),
            ("type = \"jwt\"\nkey_file = \"k\"\n", "auth.x.algorithms", "key_file"),
            ("type = \"jwt\"\njwks = \"ftp://a/j\"\n", "auth.x.jwks", "URL"),
            ("type = \"jwt\"\nissuer = \"id.example.com\"\n", "auth.x.issuer", "URL"),
            ("type = \"jwt\"\njwks = \"https://a/j\"\nrefresh = \"0\"\n", "auth.x.refresh", "greater"),
            ("type = \"ext_auth\"\nupstream = \"authsvc\"\n", "auth.x.upstream", "unknown upstream"),
            ("type = \"introspection\"\nendpoint = \"ftp://a\"\nclient_id = \"g\"\nclient_secret = \"s\"\n", "auth.x.endpoint", "URL"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"\"\nclient_secret = \"s\"\n", "auth.x.client_id", "client id"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"\"\n", "auth.x.client_secret", "non-empty"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = { env = \"SLUICE_TEST_UNSET_SECRET\" }\n", "auth.x.client_secret", "SLUICE_TEST_UNSET_SECRET"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"s\"\nauth_method = \"private_key_jwt\"\n", "auth.x.auth_method", "client_secret_basic"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"s\"\ntimeout = \"0\"\n", "auth.x.timeout", "greater"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"s\"\ntimeout = \"2m\"\n", "auth.x.timeout", "at most"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"s\"\nnegative_cache_ttl = \"0\"\n", "auth.x.negative_cache_ttl", "greater"),
            ("type = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"s\"\nconsumer_claim = \"\"\n", "auth.x.consumer_claim", "claim"),
        ];
        for (body, key, needle) in cases {
            let e = load(&format!("[auth.x]\n{body}")).unwrap_err();
            assert_eq!(e.key, key, "{body}: {e}");
            assert!(e.message.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn introspection_defaults() {
        let c = load("[auth.idp]\ntype = \"introspection\"\nendpoint = \"https://id.example.com/oauth2/introspect\"\nclient_id = \"gateway\"\nclient_secret = \"s3cret\"\n").unwrap();
        let AuthKind::Introspection(i) = &c.auth[0].kind else {
            panic!("not an introspection verifier");
        };
        assert_eq!(i.endpoint, "https://id.example.com/oauth2/introspect");
        assert_eq!(i.client_secret.expose(), "s3cret");
        assert_eq!(
            i.auth_method,
            crate::config::introspection::ClientAuth::Basic
        );
        assert_eq!(i.cache_ttl.as_secs(), 60);
        assert_eq!(i.negative_cache_ttl, None);
        assert_eq!(i.timeout.as_secs(), 2);
        assert_eq!(i.consumer_claim, "sub");
        assert!(
            !format!("{i:?}").contains("s3cret"),
            "the secret is never printed"
        );
    }

    #[test]
    fn introspection_required_and_unknown_keys() {
        let e = load(
            "[auth.idp]\ntype = \"introspection\"\nclient_id = \"g\"\nclient_secret = \"s\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let e = load("[auth.idp]\ntype = \"introspection\"\nendpoint = \"https://a/i\"\nclient_id = \"g\"\nclient_secret = \"s\"\nttl = \"5s\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
    }

    #[test]
    fn unknown_keys_and_types_are_errors() {
        let e = load("[auth.x]\ntype = \"jwt\"\njwks = \"https://a/j\"\naudience = \"api\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("audience"), "{e}");
        let e = load("[auth.x]\ntype = \"saml\"\n").unwrap_err();
        assert!(e.to_string().contains("saml"), "{e}");
        let e = load("[auth.api_key]\ntype = \"jwt\"\njwks = \"https://a/j\"\n").unwrap_err();
        assert!(e.to_string().contains("built-in"), "{e}");
    }

    #[test]
    fn mtls_is_a_built_in_method_mapped_by_consumers() {
        let e = load("[auth.mtls]\ntype = \"jwt\"\njwks = \"https://a/j\"\n").unwrap_err();
        assert!(e.to_string().contains("built-in"), "{e}");
        load("[routes.r]\npath = \"/*\"\nrespond = { status = 200 }\nauth = [\"mtls\"]\n\n[consumers.a]\nmtls = { san = [\"A.Example\"], subject = [\"cn = a, O=X\"] }\n")
            .expect("mtls route");
        let e = load("[consumers.a]\nmtls = {}\n").unwrap_err();
        assert!(e.to_string().contains("consumers.a.mtls"), "{e}");
        let e = load("[consumers.a]\nmtls = { san = [\"a.example\"] }\n[consumers.b]\nmtls = { san = [\"A.example\"] }\n").unwrap_err();
        assert!(e.to_string().contains("consumers.b.mtls.san[0]"), "{e}");
    }
}
