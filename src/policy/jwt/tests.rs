//! Verifier, key and cache tests with tokens signed here (jsonwebtoken's `encode`) by the test keys in
//! tests/data/jwt/ (RSA 2048 x2, EC P-256, EC P-384, Ed25519, an HMAC secret; JWKS built from them).

use super::keys::{parse_jwks, parse_key_file, KeySet};
use super::*;
use crate::config::{Jwt, KeySource};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::Duration;

const RSA_PRIV: &[u8] = include_bytes!("../../../tests/data/jwt/rsa_private.pem");
const RSA_PUB: &[u8] = include_bytes!("../../../tests/data/jwt/rsa_public.pem");
const RSA2_PRIV: &[u8] = include_bytes!("../../../tests/data/jwt/rsa2_private.pem");
const EC256_PRIV: &[u8] = include_bytes!("../../../tests/data/jwt/ec256_private.pem");
const EC256_PUB: &[u8] = include_bytes!("../../../tests/data/jwt/ec256_public.pem");
const EC384_PRIV: &[u8] = include_bytes!("../../../tests/data/jwt/ec384_private.pem");
const ED_PRIV: &[u8] = include_bytes!("../../../tests/data/jwt/ed25519_private.pem");
const ED_PUB: &[u8] = include_bytes!("../../../tests/data/jwt/ed25519_public.pem");
const HS_SECRET: &[u8] = include_bytes!("../../../tests/data/jwt/hs_secret.txt");
const JWKS: &[u8] = include_bytes!("../../../tests/data/jwt/jwks.json");

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://id.example.com/";

fn cfg(keys: KeySource, algorithms: &[Algorithm]) -> Jwt {
    Jwt {
        issuer: Some(ISS.into()),
        keys,
        audiences: vec!["api".into()],
        algorithms: algorithms.to_vec(),
        leeway: Duration::from_secs(30),
        consumer_claim: "sub".into(),
        refresh: Duration::from_secs(600),
        min_refresh_interval: Duration::from_secs(30),
        fetch_timeout: Duration::from_secs(5),
    }
}

/// A verifier over the test JWKS (all asymmetric algorithms allowed).
fn jwks_verifier() -> (JwtVerifier, KeySet) {
    let url = "https://id.example.com/jwks.json";
    let v = JwtVerifier::compile(
        "corp",
        &cfg(
            KeySource::JwksUrl(url.into()),
            &crate::config::JWT_ASYMMETRIC,
        ),
        0,
        1,
    )
    .unwrap();
    let (keys, _) = parse_jwks(JWKS, url, 7).unwrap();
    (v, keys)
}

fn claims() -> Value {
    json!({ "iss": ISS, "aud": "api", "sub": "alice", "exp": NOW + 600, "scope": "orders:read orders:write" })
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    encode(&h, claims, key).unwrap()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIV).unwrap()
}

fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, Some("rsa1"), &rsa(), claims)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn jwks_parses_usable_keys_and_skips_the_rest() {
    let (keys, skipped) = parse_jwks(JWKS, "u", 1).unwrap();
    assert_eq!(
        keys.kids().collect::<Vec<_>>(),
        ["rsa1", "rsa-any", "ec1", "ec384", "ed1"]
    );
    let why: Vec<(&str, &str)> = skipped
        .iter()
        .map(|s| (s.kid.as_deref().unwrap_or(""), s.why.as_str()))
        .collect();
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].0 == "enc1" && why[0].1.contains("sig"), "{why:?}");
    assert!(why[1].0 == "sym" && why[1].1.contains("oct"), "{why:?}");
    assert!(
        why[2].0 == "k1curve" && why[2].1.contains("secp256k1"),
        "{why:?}"
    );
    assert!(parse_jwks(b"{\"keys\":[]}", "u", 1).is_err());
    assert!(parse_jwks(b"not json", "u", 1).is_err());
    assert!(parse_jwks(
        b"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
        "u",
        1
    )
    .is_err());
}

#[test]
fn good_tokens_of_every_asymmetric_algorithm_verify() {
    let (v, keys) = jwks_verifier();
    let c = claims();
    let tokens = [
        rs256(&c),
        sign(Algorithm::RS512, Some("rsa-any"), &rsa(), &c),
        sign(Algorithm::PS256, Some("rsa-any"), &rsa(), &c),
        sign(
            Algorithm::ES256,
            Some("ec1"),
            &EncodingKey::from_ec_pem(EC256_PRIV).unwrap(),
            &c,
        ),
        sign(
            Algorithm::ES384,
            Some("ec384"),
            &EncodingKey::from_ec_pem(EC384_PRIV).unwrap(),
            &c,
        ),
        sign(
            Algorithm::EdDSA,
            Some("ed1"),
            &EncodingKey::from_ed_pem(ED_PRIV).unwrap(),
            &c,
        ),
        // No kid: every key of the right kind is tried.
        sign(
            Algorithm::ES384,
            None,
            &EncodingKey::from_ec_pem(EC384_PRIV).unwrap(),
            &c,
        ),
    ];
    for t in &tokens {
        let got = v.verify_with(Some(&keys), t.as_bytes(), NOW);
        let got = got.unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(got.consumer(), Some("alice"));
        assert_eq!(got.exp(), NOW + 600);
        assert!(got.has_scope("orders:read") && got.has_scope("orders:write"));
        assert!(!got.has_scope("orders"));
        assert_eq!(got.claim_str("iss"), Some(ISS));
    }
}

#[test]
fn rsa1_jwk_is_bound_to_its_alg() {
    // The rsa1 JWK says alg RS256: an RS512 token under its kid is refused, though the same key
    // without an alg (rsa-any) accepts it.
    let (v, keys) = jwks_verifier();
    let t = sign(Algorithm::RS512, Some("rsa1"), &rsa(), &claims());
    assert_eq!(
        v.verify_with(Some(&keys), t.as_bytes(), NOW),
        Err(JwtError::AlgNotAllowed)
    );
}

#[test]
fn time_checks_use_the_leeway() {
    let (v, keys) = jwks_verifier();
    let mut c = claims();
    c["exp"] = json!(NOW - 10);
    // Expired 10 s ago, within the 30 s leeway.
    assert!(v
        .verify_with(Some(&keys), rs256(&c).as_bytes(), NOW)
        .is_ok());
    c["exp"] = json!(NOW - 30);
    assert_eq!(
        v.verify_with(Some(&keys), rs256(&c).as_bytes(), NOW),
        Err(JwtError::Expired)
    );
    let mut c = claims();
    c["nbf"] = json!(NOW + 20);
    assert!(v
        .verify_with(Some(&keys), rs256(&c).as_bytes(), NOW)
        .is_ok());
    c["nbf"] = json!(NOW + 31);
    assert_eq!(
        v.verify_with(Some(&keys), rs256(&c).as_bytes(), NOW),
        Err(JwtError::NotYetValid)
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.verify_with(Some(&keys), rs256(&c).as_bytes(), NOW),
        Err(JwtError::MissingExp)
    );
}

#[test]
fn issuer_and_audience() {
    let (v, keys) = jwks_verifier();
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com/");
    assert_eq!(
        v.verify_with(Some(&keys), rs256(&c).as_bytes(), NOW),
        Err(JwtError::BadIssuer)
    );
    let mut c = claims();
    c["aud"] = json!("other");
    let e = v.verify_with(Some(&keys), rs256(&c).as_bytes(), NOW);
    assert_eq!(e, Err(JwtError::BadAudience));
    assert_eq!(JwtError::BadAudience.reason(), "bad_audience");
    c["aud"] = json!(["other", "api"]);
    assert!(v
        .verify_with(Some(&keys), rs256(&c).as_bytes(), NOW)
        .is_ok());
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        v.verify_with(Some(&keys), rs256(&c).as_bytes(), NOW),
        Err(JwtError::BadAudience)
    );
}

#[test]
fn alg_none_is_refused() {
    let (v, keys) = jwks_verifier();
    for alg in ["none", "None", "NONE", ""] {
        let t = format!("{}.{}.", b64(&json!({"alg": alg})), b64(&claims()));
        assert_eq!(
            v.verify_with(Some(&keys), t.as_bytes(), NOW),
            Err(JwtError::AlgNotAllowed),
            "{alg}"
        );
    }
    // A real alg name with the signature left off.
    let t = format!(
        "{}.{}.",
        b64(&json!({"alg": "RS256", "kid": "rsa1"})),
        b64(&claims())
    );
    assert_eq!(
        v.verify_with(Some(&keys), t.as_bytes(), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn hs_token_signed_with_the_public_key_is_refused() {
    // The classic confusion: an HS256 token whose "secret" is the RSA public key's PEM.
    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(RSA_PUB),
        &claims(),
    );
    let forged_kid = sign(
        Algorithm::HS256,
        Some("rsa1"),
        &EncodingKey::from_secret(RSA_PUB),
        &claims(),
    );
    // Against a JWKS verifier: HS256 is outside any asymmetric allow list.
    let (v, keys) = jwks_verifier();
    for t in [&forged, &forged_kid] {
        assert_eq!(
            v.verify_with(Some(&keys), t.as_bytes(), NOW),
            Err(JwtError::AlgNotAllowed)
        );
    }
    // Even if the allow list named HS256 next to RS256, an RSA key verifies no HS token.
    let mut v = JwtVerifier::compile(
        "pem",
        &cfg(
            KeySource::KeyFile("tests/data/jwt/rsa_public.pem".into()),
            &[Algorithm::RS256],
        ),
        0,
        1,
    )
    .unwrap();
    v.allow_for_test(&[Algorithm::RS256, Algorithm::HS256]);
    assert_eq!(
        v.verify(forged.as_bytes(), NOW),
        Err(JwtError::AlgNotAllowed)
    );
    assert!(v.verify(rs256(&claims()).as_bytes(), NOW).is_ok());
}

#[test]
fn key_file_pem_and_secret() {
    let rs = parse_key_file(RSA_PUB, &[Algorithm::RS256, Algorithm::PS256]).unwrap();
    assert_eq!(rs.len(), 1);
    assert!(parse_key_file(RSA_PUB, &[Algorithm::HS256]).is_err());
    assert!(parse_key_file(RSA_PUB, &[Algorithm::ES256]).is_err());
    assert!(parse_key_file(EC256_PUB, &[Algorithm::ES256]).is_ok());
    assert!(parse_key_file(EC256_PUB, &[Algorithm::ES384]).is_err());
    assert!(parse_key_file(ED_PUB, &[Algorithm::EdDSA]).is_ok());
    assert!(matches!(
        parse_key_file(RSA_PRIV, &[Algorithm::RS256]),
        Err(KeyError::PrivateKey)
    ));
    assert!(parse_key_file(HS_SECRET, &[Algorithm::HS256, Algorithm::HS512]).is_ok());
    assert!(parse_key_file(HS_SECRET, &[Algorithm::RS256]).is_err());
    assert!(matches!(
        parse_key_file(b"short\n", &[Algorithm::HS256]),
        Err(KeyError::ShortSecret(5))
    ));
}

#[test]
fn hs256_with_a_secret_key_file() {
    let v = JwtVerifier::compile(
        "hs",
        &cfg(
            KeySource::KeyFile("tests/data/jwt/hs_secret.txt".into()),
            &[Algorithm::HS256],
        ),
        0,
        1,
    )
    .unwrap();
    let secret = std::str::from_utf8(HS_SECRET).unwrap().trim();
    let key = EncodingKey::from_secret(secret.as_bytes());
    let t = sign(Algorithm::HS256, None, &key, &claims());
    assert_eq!(
        v.verify(t.as_bytes(), NOW).unwrap().consumer(),
        Some("alice")
    );
    let t = sign(Algorithm::HS512, None, &key, &claims());
    assert_eq!(v.verify(t.as_bytes(), NOW), Err(JwtError::AlgNotAllowed));
    let wrong = EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!");
    let t = sign(Algorithm::HS256, None, &wrong, &claims());
    assert_eq!(v.verify(t.as_bytes(), NOW), Err(JwtError::BadSignature));
}

#[test]
fn unknown_kid_bad_signature_and_no_keys() {
    let (v, keys) = jwks_verifier();
    let t = sign(Algorithm::RS256, Some("rsa9"), &rsa(), &claims());
    assert_eq!(
        v.verify_with(Some(&keys), t.as_bytes(), NOW),
        Err(JwtError::UnknownKid)
    );
    // Signed by rsa2's private key but claiming rsa1.
    let other = EncodingKey::from_rsa_pem(RSA2_PRIV).unwrap();
    let t = sign(Algorithm::RS256, Some("rsa1"), &other, &claims());
    assert_eq!(
        v.verify_with(Some(&keys), t.as_bytes(), NOW),
        Err(JwtError::BadSignature)
    );
    // A changed payload under a good signature.
    let good = rs256(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("mallory");
    let t = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_eq!(
        v.verify_with(Some(&keys), t.as_bytes(), NOW),
        Err(JwtError::BadSignature)
    );
    // Remote keys not fetched yet: fail closed.
    assert_eq!(v.verify(good.as_bytes(), NOW), Err(JwtError::NoKeys));
    assert_eq!(
        v.verify_with(Some(&KeySet::default()), good.as_bytes(), NOW),
        Err(JwtError::NoKeys)
    );
}

#[test]
fn malformed_tokens() {
    let (v, keys) = jwks_verifier();
    let good = rs256(&claims());
    let crit = format!(
        "{}.{}.sig",
        b64(&json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]})),
        b64(&claims())
    );
    let long = "a".repeat(verify::MAX_TOKEN_BYTES + 1);
    for t in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        ".b.c",
        "!!.b.c",
        "e30.e30.c",
        &good[1..],
        &format!("{good}.x"),
        &crit,
        &long,
    ] {
        let e = v.verify_with(Some(&keys), t.as_bytes(), NOW);
        assert!(
            matches!(
                e,
                Err(JwtError::Malformed(_)) | Err(JwtError::AlgNotAllowed)
            ),
            "{t:.40}: {e:?}"
        );
    }
    assert!(v
        .verify_with(Some(&keys), &[0xff, b'.', b'a', b'.', b'b'], NOW)
        .is_err());
}

#[test]
fn claims_for_later_policies() {
    let (v, keys) = jwks_verifier();
    let c = json!({ "iss": ISS, "aud": ["api"], "sub": 42, "exp": NOW + 60,
                    "scp": ["a", "b"], "tier": "gold", "admin": true, "groups": ["x", "y"], "level": 3 });
    let got = v
        .verify_with(Some(&keys), rs256(&c).as_bytes(), NOW)
        .unwrap();
    assert_eq!(got.consumer(), Some("42"));
    assert_eq!(got.scopes().collect::<Vec<_>>(), ["a", "b"]);
    assert!(got.claim_matches("tier", "gold"));
    assert!(!got.claim_matches("tier", "silver"));
    assert!(got.claim_matches("admin", "true"));
    assert!(got.claim_matches("groups", "y"));
    assert!(got.claim_matches("level", "3"));
    assert!(!got.claim_matches("missing", ""));
    assert_eq!(got.claim("level"), Some(&json!(3)));
}

#[test]
fn state_caches_until_exp_and_per_key_set() {
    let (v, keys) = jwks_verifier();
    let mut st = JwtState::new(8);
    let t = rs256(&claims());
    assert_eq!(st.verify(&v, t.as_bytes(), NOW), Err(JwtError::NoKeys));
    assert_eq!(st.cached(), 0);
    st.set_keys(v.name.clone(), std::sync::Arc::new(keys.clone()));
    let a = st.verify(&v, t.as_bytes(), NOW).unwrap();
    let b = st.verify(&v, t.as_bytes(), NOW + 1).unwrap();
    assert!(std::rc::Rc::ptr_eq(&a, &b), "second verify is a cache hit");
    assert_eq!(st.cached(), 1);
    // Past exp the cached verdict is not used (and the token fails on its own).
    assert_eq!(
        st.verify(&v, t.as_bytes(), NOW + 600 + 30),
        Err(JwtError::Expired)
    );
    // New keys (rotation without rsa1): the cached verdict does not outlive them.
    let rotated = include_bytes!("../../../tests/data/jwt/jwks_rotated.json");
    let (new, _) = parse_jwks(rotated, &keys.source, 8).unwrap();
    st.set_keys(v.name.clone(), std::sync::Arc::new(new));
    assert_eq!(st.verify(&v, t.as_bytes(), NOW), Err(JwtError::UnknownKid));
    // Keys from another URL are ignored.
    let (elsewhere, _) = parse_jwks(JWKS, "https://other.example.com/jwks", 9).unwrap();
    st.set_keys(v.name.clone(), std::sync::Arc::new(elsewhere));
    assert_eq!(st.verify(&v, t.as_bytes(), NOW), Err(JwtError::NoKeys));
}

#[test]
fn cache_is_bounded_and_exact() {
    let (v, keys) = jwks_verifier();
    let mut st = JwtState::new(16);
    st.set_keys(v.name.clone(), std::sync::Arc::new(keys));
    for i in 0..100 {
        let mut c = claims();
        c["jti"] = json!(i);
        st.verify(&v, rs256(&c).as_bytes(), NOW).unwrap();
        assert!(st.cached() <= 16);
    }
    let mut c = claims();
    c["sub"] = json!("bob");
    let t = rs256(&c);
    assert_eq!(
        st.verify(&v, t.as_bytes(), NOW).unwrap().consumer(),
        Some("bob")
    );
    assert_eq!(
        st.verify(&v, t.as_bytes(), NOW).unwrap().consumer(),
        Some("bob")
    );
}

#[test]
fn unknown_kid_asks_are_rate_limited_per_worker() {
    let (v, _) = jwks_verifier();
    let mut st = JwtState::default();
    assert!(st.should_ask_refresh(&v, NOW));
    assert!(!st.should_ask_refresh(&v, NOW + UNKNOWN_KID_ASK_SECS - 1));
    assert!(st.should_ask_refresh(&v, NOW + UNKNOWN_KID_ASK_SECS));
}
