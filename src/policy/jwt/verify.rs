//! The JWT check itself (RFC 7519, JWS compact serialisation RFC 7515): split the token, read the
//! header, pick keys by `kid` (or every key of the right kind when there is none), verify the
//! signature, then `exp`, `nbf` (with leeway), `iss` and `aud`. Pure: no I/O, no clock (the caller
//! passes `now_unix`), no logging; the compiled `JwtVerifier` lives in the config snapshot.

use super::keys::{parse_jwks, parse_key_file, AlgSet, KeySet};
use crate::config::{Jwt, KeySource};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Tokens longer than this are malformed without being decoded (a head limit applies anyway).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. `reason()` is the label metrics and logs use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, bad JSON, unknown critical header, claims not an object.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is "none", unknown, outside the allow list, or of another family than the key `kid` names.
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    /// The verifier has no keys yet (remote keys not fetched): fail closed.
    #[error("no verification keys loaded")]
    NoKeys,
    /// The `kid` names no loaded key.
    #[error("unknown key id")]
    UnknownKid,
    /// No key verified the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// No numeric `exp`: tokens without an expiry are refused.
    #[error("token has no exp")]
    MissingExp,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    BadIssuer,
    /// No `aud` value is among the configured audiences.
    #[error("wrong audience")]
    BadAudience,
}

impl JwtError {
    /// Short label for metrics, logs and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::AlgNotAllowed => "alg_not_allowed",
            JwtError::NoKeys => "no_keys",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::MissingExp => "missing_exp",
            JwtError::BadIssuer => "bad_issuer",
            JwtError::BadAudience => "bad_audience",
        }
    }
}

/// What a verified token says, for the policies after authentication (consumer, scopes, claims).
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    consumer: Option<Box<str>>,
    exp: u64,
    scopes: Vec<Box<str>>,
    all: Map<String, Value>,
}

impl Claims {
    /// The claims of a checked token (a verified JWT's payload, an active introspection answer):
    /// the consumer read from `consumer_claim`, scopes from `scope` and `scp`. `exp` is the expiry,
    /// already read and checked by the caller (`u64::MAX` when the token has none).
    pub fn from_object(all: Map<String, Value>, consumer_claim: &str, exp: u64) -> Claims {
        let consumer = match all.get(consumer_claim) {
            Some(Value::String(s)) => Some(s.as_str().into()),
            Some(Value::Number(n)) => Some(n.to_string().into()),
            _ => None,
        };
        let mut scopes: Vec<Box<str>> = Vec::new();
        for key in ["scope", "scp"] {
            match all.get(key) {
                Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(Box::from)),
                Some(Value::Array(list)) => {
                    scopes.extend(list.iter().filter_map(Value::as_str).map(Box::from))
                }
                _ => {}
            }
        }
        Claims {
            consumer,
            exp,
            scopes,
            all,
        }
    }

    /// The consumer claim's value: a string as is, a number in decimal; None when absent or other.
    pub fn consumer(&self) -> Option<&str> {
        self.consumer.as_deref()
    }
    /// `exp`, unix seconds.
    pub fn exp(&self) -> u64 {
        self.exp
    }
    /// Scopes from `scope` (space-separated string, RFC 8693 §4.2) or `scp` (array or string).
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(|s| &**s)
    }
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| &**s == scope)
    }
    /// A claim's JSON value.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.all.get(name)
    }
    /// A claim's value when it is a string.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.all.get(name).and_then(Value::as_str)
    }
    /// Whether claim `name` equals `want`: a string equal to it, a number or boolean spelled as it, or
    /// an array holding such a value. For `require_claims`; allocates nothing.
    pub fn claim_matches(&self, name: &str, want: &str) -> bool {
        fn one(v: &Value, want: &str) -> bool {
            match v {
                Value::String(s) => s == want,
                Value::Bool(b) => want == if *b { "true" } else { "false" },
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        want.parse::<i64>() == Ok(i)
                    } else if let Some(u) = n.as_u64() {
                        want.parse::<u64>() == Ok(u)
                    } else {
                        n.as_f64().is_some_and(|f| want.parse::<f64>() == Ok(f))
                    }
                }
                _ => false,
            }
        }
        match self.all.get(name) {
            Some(Value::Array(items)) => items.iter().any(|v| one(v, want)),
            Some(v) => one(v, want),
            None => false,
        }
    }
}

/// One `[auth.NAME]` of type jwt, compiled: what a worker checks tokens against.
#[derive(Debug)]
pub struct JwtVerifier {
    /// The table name.
    pub name: Arc<str>,
    /// Position among the snapshot's verifiers (`Snapshot::jwt`).
    pub index: usize,
    /// Snapshot generation it was compiled for (scopes cached verdicts to one config).
    pub generation: u64,
    issuer: Option<Box<str>>,
    audiences: Box<[Box<str>]>,
    allowed: AlgSet,
    leeway_secs: u64,
    consumer_claim: Box<str>,
    source: KeySource,
    /// Keys read at load (key_file, jwks_file); None when fetched at runtime.
    static_keys: Option<Arc<KeySet>>,
}

impl JwtVerifier {
    /// Compiles a validated verifier, reading its key_file or jwks_file (blocking: never on a worker).
    /// The error is the message for `auth.NAME.<key>`, with that key.
    pub fn compile(
        name: &str,
        cfg: &Jwt,
        index: usize,
        generation: u64,
    ) -> Result<JwtVerifier, (&'static str, String)> {
        let static_keys = match &cfg.keys {
            KeySource::KeyFile(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| ("key_file", format!("cannot read {}: {e}", p.display())))?;
                let set = parse_key_file(&bytes, &cfg.algorithms)
                    .map_err(|e| ("key_file", format!("{}: {e}", p.display())))?;
                Some(Arc::new(set))
            }
            KeySource::JwksFile(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| ("jwks_file", format!("cannot read {}: {e}", p.display())))?;
                let (set, skipped) = parse_jwks(&bytes, "", 0)
                    .map_err(|e| ("jwks_file", format!("{}: {e}", p.display())))?;
                for s in skipped {
                    tracing::warn!(verifier = name, kid = ?s.kid, why = %s.why, "JWKS key skipped");
                }
                Some(Arc::new(set))
            }
            KeySource::Discovery(_) | KeySource::JwksUrl(_) => None,
        };
        Ok(JwtVerifier {
            name: Arc::from(name),
            index,
            generation,
            issuer: cfg.issuer.as_deref().map(Box::from),
            audiences: cfg
                .audiences
                .iter()
                .map(|a| Box::from(a.as_str()))
                .collect(),
            allowed: AlgSet::of(&cfg.algorithms),
            leeway_secs: cfg.leeway.as_secs(),
            consumer_claim: cfg.consumer_claim.as_str().into(),
            source: cfg.keys.clone(),
            static_keys,
        })
    }

    /// Widens the allow list past what config validation permits, to prove keys still bind families.
    #[cfg(test)]
    pub(super) fn allow_for_test(&mut self, algs: &[jsonwebtoken::Algorithm]) {
        self.allowed = AlgSet::of(algs);
    }

    /// The URL the control side fetches keys from (discovery document or JWKS), if remote.
    pub fn remote_url(&self) -> Option<&str> {
        self.source.url()
    }

    /// Where keys come from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Keys read at load, for key_file and jwks_file verifiers.
    pub fn static_keys(&self) -> Option<&Arc<KeySet>> {
        self.static_keys.as_ref()
    }

    /// The keys this verifier uses: its static keys, else `fetched` when they came from its URL.
    pub fn keys<'a>(&'a self, fetched: Option<&'a Arc<KeySet>>) -> Option<&'a Arc<KeySet>> {
        match (&self.static_keys, self.remote_url()) {
            (Some(k), _) => Some(k),
            (None, Some(url)) => fetched.filter(|k| &*k.source == url),
            (None, None) => None,
        }
    }

    /// Checks a token against the static keys (key_file, jwks_file); remote verifiers need
    /// `verify_with` and the fetched keys (without them this fails with `NoKeys`).
    pub fn verify(&self, token: &[u8], now_unix: u64) -> Result<Claims, JwtError> {
        self.verify_with(self.static_keys.as_deref(), token, now_unix)
    }

    /// Checks a token against `keys` (None or empty: `NoKeys`, fail closed).
    pub fn verify_with(
        &self,
        keys: Option<&KeySet>,
        token: &[u8],
        now_unix: u64,
    ) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("too long"));
        }
        let token = std::str::from_utf8(token).map_err(|_| JwtError::Malformed("not ASCII"))?;
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three parts"));
        };
        if h64.is_empty() || p64.is_empty() {
            return Err(JwtError::Malformed("empty part"));
        }
        let header = decode_part(h64)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| JwtError::Malformed("header JSON"))?;
        // RFC 7515 §4.1.11: a critical extension we do not understand makes the token invalid.
        if header.crit.is_some() {
            return Err(JwtError::Malformed("crit header"));
        }
        let alg = super::keys::parse_alg(&header.alg).ok_or(JwtError::AlgNotAllowed)?;
        if !self.allowed.contains(alg) {
            return Err(JwtError::AlgNotAllowed);
        }
        if sig.is_empty() {
            // An unsecured JWS (RFC 7515 §A.5) under a real alg name.
            return Err(JwtError::BadSignature);
        }
        let keys = match keys {
            Some(k) if !k.is_empty() => k,
            _ => return Err(JwtError::NoKeys),
        };
        let message = &token.as_bytes()[..h64.len() + 1 + p64.len()];
        let verified = match header.kid.as_deref() {
            Some(kid) => {
                // A key without a kid (a key_file, a JWK that has none) stands for any kid; a kid
                // that matches neither a key nor such a key is unknown (and may mean a rotation).
                let named = |k: &&super::keys::Key| k.kid.as_deref() == Some(kid);
                let candidates: &dyn Fn(&&super::keys::Key) -> bool =
                    if keys.keys.iter().any(|k| named(&k)) {
                        &named
                    } else if keys.keys.iter().any(|k| k.kid.is_none()) {
                        &|k: &&super::keys::Key| k.kid.is_none()
                    } else {
                        return Err(JwtError::UnknownKid);
                    };
                let mut fitting = keys
                    .keys
                    .iter()
                    .filter(candidates)
                    .filter(|k| k.algs.contains(alg))
                    .peekable();
                if fitting.peek().is_none() {
                    return Err(JwtError::AlgNotAllowed);
                }
                fitting.any(|k| check(sig, message, k, alg))
            }
            None => {
                let mut fitting = keys.keys.iter().filter(|k| k.algs.contains(alg)).peekable();
                if fitting.peek().is_none() {
                    return Err(JwtError::AlgNotAllowed);
                }
                fitting.any(|k| check(sig, message, k, alg))
            }
        };
        if !verified {
            return Err(JwtError::BadSignature);
        }
        let payload = decode_part(p64)?;
        let Ok(Value::Object(all)) = serde_json::from_slice::<Value>(&payload) else {
            return Err(JwtError::Malformed("claims are not a JSON object"));
        };
        self.check_claims(all, now_unix)
    }

    fn check_claims(&self, all: Map<String, Value>, now: u64) -> Result<Claims, JwtError> {
        let exp = all
            .get("exp")
            .and_then(numeric_date)
            .ok_or(JwtError::MissingExp)?;
        // RFC 7519 §4.1.4: the token must not be accepted on or after exp.
        if now >= exp.saturating_add(self.leeway_secs) {
            return Err(JwtError::Expired);
        }
        if let Some(v) = all.get("nbf") {
            let nbf = numeric_date(v).ok_or(JwtError::Malformed("nbf is not a number"))?;
            if now.saturating_add(self.leeway_secs) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iss) = &self.issuer {
            if all.get("iss").and_then(Value::as_str) != Some(&**iss) {
                return Err(JwtError::BadIssuer);
            }
        }
        if !self.audiences.is_empty() {
            let ok = match all.get("aud") {
                Some(Value::String(a)) => self.audiences.iter().any(|w| **w == **a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|w| &**w == a)),
                _ => false,
            };
            if !ok {
                return Err(JwtError::BadAudience);
            }
        }
        Ok(Claims::from_object(all, &self.consumer_claim, exp))
    }
}

/// The JOSE header members sluice reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

fn decode_part(s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("not base64url"))
}

fn check(sig: &str, message: &[u8], key: &super::keys::Key, alg: jsonwebtoken::Algorithm) -> bool {
    debug_assert!(key.algs.contains(alg));
    // An error here is a key the crypto backend cannot use for `alg` (or a signature that is not
    // base64url): as good as a wrong signature.
    jsonwebtoken::crypto::verify(sig, message, &key.decoding, alg).unwrap_or(false)
}

/// RFC 7519 §2 NumericDate: seconds, possibly fractional; negative counts as 0.
pub fn numeric_date(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    n.as_u64()
        .or_else(|| n.as_i64().map(|i| i.max(0) as u64))
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.max(0.0) as u64)
        })
}
