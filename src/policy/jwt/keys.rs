//! Verification keys: a JWKS document (RFC 7517) or a `key_file` (PEM public key or HMAC secret) turned
//! into a `KeySet`. Every `Key` is bound at parse time to the algorithms its key type can verify (RSA:
//! RS*/PS*, EC P-256: ES256, EC P-384: ES384, OKP Ed25519: EdDSA, secret: HS*), narrowed by the JWK's
//! `alg` when it has one; the verifier accepts a token only through a key whose set holds the token's
//! `alg`, so an HS token can never be checked against a public key (algorithm confusion).
//!
//! Pure parsing: the caller reads the bytes (the fetch thread, or the snapshot build for files) and
//! logs what was skipped. Never runs on a worker's request path.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::fmt;

/// A set of algorithms, one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

impl AlgSet {
    /// The empty set.
    pub const EMPTY: AlgSet = AlgSet(0);
    const RSA: AlgSet = AlgSet(
        bit(Algorithm::RS256)
            | bit(Algorithm::RS384)
            | bit(Algorithm::RS512)
            | bit(Algorithm::PS256)
            | bit(Algorithm::PS384)
            | bit(Algorithm::PS512),
    );
    const HMAC: AlgSet =
        AlgSet(bit(Algorithm::HS256) | bit(Algorithm::HS384) | bit(Algorithm::HS512));

    /// A set of one.
    pub const fn one(a: Algorithm) -> AlgSet {
        AlgSet(bit(a))
    }
    /// The set of `list`.
    pub fn of(list: &[Algorithm]) -> AlgSet {
        AlgSet(list.iter().fold(0, |acc, a| acc | bit(*a)))
    }
    /// Whether `a` is in the set.
    pub fn contains(self, a: Algorithm) -> bool {
        self.0 & bit(a) != 0
    }
    /// Both sets.
    pub fn and(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }
    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(all().filter(|a| self.contains(*a)))
            .finish()
    }
}

/// Every algorithm sluice verifies: the HMAC family, then the asymmetric ones of the config's
/// default allow list.
fn all() -> impl Iterator<Item = Algorithm> {
    [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        .into_iter()
        .chain(crate::config::JWT_ASYMMETRIC)
}

const fn bit(a: Algorithm) -> u16 {
    1 << match a {
        Algorithm::HS256 => 0,
        Algorithm::HS384 => 1,
        Algorithm::HS512 => 2,
        Algorithm::RS256 => 3,
        Algorithm::RS384 => 4,
        Algorithm::RS512 => 5,
        Algorithm::PS256 => 6,
        Algorithm::PS384 => 7,
        Algorithm::PS512 => 8,
        Algorithm::ES256 => 9,
        Algorithm::ES384 => 10,
        Algorithm::EdDSA => 11,
    }
}

/// Parses a JOSE `alg` name; `None` for "none" and anything unknown.
pub fn parse_alg(s: &str) -> Option<Algorithm> {
    all().find(|a| alg_name(*a) == s)
}

/// The JOSE name of `a`.
pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// One verification key, bound to the algorithms it may verify.
#[derive(Debug, Clone)]
pub struct Key {
    /// The JWK `kid`, if any.
    pub kid: Option<Box<str>>,
    /// Algorithms this key verifies (its family, narrowed by the JWK's `alg`).
    pub algs: AlgSet,
    pub(super) decoding: DecodingKey,
}

/// The keys one verifier holds at a time.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The keys, in document order.
    pub keys: Vec<Key>,
    /// Changes whenever the set changes, so cached verdicts made with an older set are not reused.
    pub serial: u64,
    /// The URL the set was fetched from (empty for files): fetched keys are used only by a verifier
    /// whose configured source is still this URL.
    pub source: Box<str>,
}

impl KeySet {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// The kids, in order (keys without one are left out).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }
}

/// Why a key document could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not JSON, or not a JWKS.
    #[error("not a JWKS document: {0}")]
    Jwks(String),
    /// A JWKS with no usable key.
    #[error("no usable key in the JWKS ({skipped} skipped)")]
    NoUsableKey {
        /// How many keys were skipped.
        skipped: usize,
    },
    /// A PEM that is not an RSA, EC or Ed25519 public key.
    #[error("not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM: {0}")]
    Pem(String),
    /// A private key where a public key belongs.
    #[error("holds a private key; give the public key")]
    PrivateKey,
    /// A PEM key with algorithms of another family, or an HMAC secret with asymmetric ones.
    #[error("the key is {key} but algorithms allow {allowed}")]
    Mismatch {
        /// What the key is.
        key: &'static str,
        /// What the allow list has.
        allowed: String,
    },
    /// An empty or too short HMAC secret.
    #[error("an HMAC secret must be at least 32 bytes, got {0}")]
    ShortSecret(usize),
}

/// A key of the JWKS that was left out, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its kid, if any.
    pub kid: Option<String>,
    /// Why.
    pub why: String,
}

/// One JWK as far as sluice reads it (RFC 7517 §4, RFC 7518 §6); other members are ignored.
#[derive(Deserialize)]
struct JwkDoc {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWKS document into the keys that can verify signatures; the others are returned in
/// `Skipped` (encryption keys, symmetric `oct` keys, unknown types and curves, short RSA moduli).
pub fn parse_jwks(
    json: &[u8],
    source: &str,
    serial: u64,
) -> Result<(KeySet, Vec<Skipped>), KeyError> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
    let mut keys = Vec::with_capacity(doc.keys.len());
    let mut skipped = Vec::new();
    for v in doc.keys {
        let jwk: JwkDoc = match serde_json::from_value(v) {
            Ok(j) => j,
            Err(e) => {
                skipped.push(Skipped {
                    kid: None,
                    why: format!("not a JWK: {e}"),
                });
                continue;
            }
        };
        match jwk_key(&jwk) {
            Ok(k) => keys.push(k),
            Err(why) => skipped.push(Skipped {
                kid: jwk.kid.clone(),
                why,
            }),
        }
    }
    if keys.is_empty() {
        return Err(KeyError::NoUsableKey {
            skipped: skipped.len(),
        });
    }
    Ok((
        KeySet {
            keys,
            serial,
            source: source.into(),
        },
        skipped,
    ))
}

fn b64(field: &str, v: &Option<String>) -> Result<Vec<u8>, String> {
    let s = v.as_deref().ok_or_else(|| format!("missing {field:?}"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("{field:?} is not base64url"))
}

fn jwk_key(j: &JwkDoc) -> Result<Key, String> {
    if let Some(u) = j.use_.as_deref() {
        if u != "sig" {
            return Err(format!("use {u:?} is not \"sig\""));
        }
    }
    if let Some(ops) = &j.key_ops {
        if !ops.iter().any(|o| o == "verify") {
            return Err("key_ops has no \"verify\"".into());
        }
    }
    let kty = j.kty.as_deref().unwrap_or("");
    let (family, decoding) = match (kty, j.crv.as_deref()) {
        ("RSA", _) => {
            let n = b64("n", &j.n)?;
            let e = b64("e", &j.e)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            // RFC 7518 §3.3: RSA keys for signatures are 2048 bits or larger.
            if bits < 2048 {
                return Err(format!("RSA modulus of {bits} bits is below 2048"));
            }
            (AlgSet::RSA, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (size, alg) = if crv == "P-256" {
                (32, Algorithm::ES256)
            } else {
                (48, Algorithm::ES384)
            };
            let x = b64("x", &j.x)?;
            let y = b64("y", &j.y)?;
            if x.len() != size || y.len() != size {
                return Err(format!("{crv} coordinates must be {size} bytes"));
            }
            let (Some(xs), Some(ys)) = (&j.x, &j.y) else {
                return Err("missing x or y".into());
            };
            let key =
                DecodingKey::from_ec_components(xs, ys).map_err(|e| format!("bad EC key: {e}"))?;
            (AlgSet::one(alg), key)
        }
        ("EC", crv) => return Err(format!("EC curve {crv:?} is not supported")),
        ("OKP", Some("Ed25519")) => {
            let x = b64("x", &j.x)?;
            if x.len() != 32 {
                return Err("Ed25519 x must be 32 bytes".into());
            }
            (AlgSet::one(Algorithm::EdDSA), DecodingKey::from_ed_der(&x))
        }
        ("OKP", crv) => return Err(format!("OKP curve {crv:?} is not supported")),
        ("oct", _) => {
            return Err("symmetric (oct) keys are not taken from a JWKS; use key_file".into())
        }
        (other, _) => return Err(format!("kty {other:?} is not supported")),
    };
    let algs = match j.alg.as_deref() {
        None => family,
        Some(a) => match parse_alg(a) {
            Some(alg) if family.contains(alg) => AlgSet::one(alg),
            _ => return Err(format!("alg {a:?} does not fit kty {kty:?}")),
        },
    };
    Ok(Key {
        kid: j.kid.as_deref().map(Box::from),
        algs,
        decoding,
    })
}

/// Parses a `key_file`: a PEM public key (RSA, EC P-256/P-384, Ed25519) when it holds a PEM block,
/// otherwise the HMAC secret (surrounding whitespace trimmed). `allowed` is the verifier's allow list,
/// which must fit the key's kind.
pub fn parse_key_file(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, KeyError> {
    let allow = AlgSet::of(allowed);
    let names = || {
        allowed
            .iter()
            .map(|a| alg_name(*a))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = String::from_utf8_lossy(bytes);
    let (kind, family, decoding) = if text.contains("-----BEGIN") {
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
            // SEC1 uncompressed point: 0x04 || x || y.
            match k.as_bytes().len() {
                65 => ("an EC P-256 key", AlgSet::one(Algorithm::ES256), k),
                97 => ("an EC P-384 key", AlgSet::one(Algorithm::ES384), k),
                n => return Err(KeyError::Pem(format!("EC point of {n} bytes"))),
            }
        } else if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
            ("an Ed25519 key", AlgSet::one(Algorithm::EdDSA), k)
        } else {
            match DecodingKey::from_rsa_pem(bytes) {
                Ok(k) => ("an RSA key", AlgSet::RSA, k),
                Err(e) => return Err(KeyError::Pem(e.to_string())),
            }
        }
    } else {
        let secret = text.trim().as_bytes();
        // RFC 7518 §3.2: a key of the same size as the hash output or larger; 32 bytes for HS256.
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret(secret.len()));
        }
        (
            "an HMAC secret",
            AlgSet::HMAC,
            DecodingKey::from_secret(secret),
        )
    };
    if allow.and(family) != allow {
        return Err(KeyError::Mismatch {
            key: kind,
            allowed: names(),
        });
    }
    Ok(KeySet {
        keys: vec![Key {
            kid: None,
            algs: family,
            decoding,
        }],
        serial: 0,
        source: "".into(),
    })
}
