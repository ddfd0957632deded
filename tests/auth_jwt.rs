//! JWT authentication on the request path, on the real binary: tokens signed here with the test keys
//! in tests/data/jwt, verified by an HS256 `key_file` verifier and by an RS256 verifier that finds its
//! keys through OpenID discovery on a local server. The consumer claim names a file consumer or an
//! anonymous identity; expired, not-yet-valid, wrong audience, wrong issuer, `alg: none` and HS/RS
//! confusion are 401 with `error="invalid_token"`; scopes and claims are 403; an unknown `kid` is
//! answered once the rotated JWKS is fetched, and an outage keeps the keys.

mod common;

use common::idp::idp;
use common::metrics::{metric_value, scrape};
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RSA_PRIV: &[u8] = include_bytes!("data/jwt/rsa_private.pem");
const RSA_PUB: &[u8] = include_bytes!("data/jwt/rsa_public.pem");
const RSA2_PRIV: &[u8] = include_bytes!("data/jwt/rsa2_private.pem");

fn data(name: &str) -> String {
    format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hs_secret() -> Vec<u8> {
    std::fs::read(data("hs_secret.txt"))
        .expect("secret")
        .trim_ascii()
        .to_vec()
}

fn hs_token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&hs_secret()),
    )
    .expect("sign")
}

fn rs_token(kid: &str, key: &[u8], claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(&h, &claims, &EncodingKey::from_rsa_pem(key).expect("key")).expect("sign")
}

fn claims(sub: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"sub": sub, "iss": "https://id.test/", "aud": "api", "exp": now() + 600});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn hs_setup(be: &Backend) -> Sluice {
    Sluice::start(&config(&format!(
        r#"[admin]
listen = "127.0.0.1:0"

[consumers.alice]
groups = ["gold"]

[auth.hs]
type = "jwt"
key_file = "{secret}"
algorithms = ["HS256"]
issuer = "https://id.test/"
audiences = ["api"]
leeway = "5s"

[routes.api]
path = "/v1/*"
upstream = "app"
auth = ["hs"]

[routes.gold]
path = "/gold/*"
upstream = "app"
auth = ["hs"]
allow = ["gold"]

[routes.orders]
path = "/orders/*"
upstream = "app"
auth = ["hs"]
require_scopes = ["orders:read"]
require_claims = {{ tenant = "t-17" }}

{up}"#,
        secret = data("hs_secret.txt"),
        up = upstream("app", &[be.addr()], ""),
    )))
}

#[test]
fn a_valid_token_names_the_consumer() {
    let be = Backend::fixed("ok");
    let s = hs_setup(&be);
    let t = hs_token(claims("alice", json!({})));
    for _ in 0..3 {
        let r = http_get(s.addr(), "/v1/x", &[("Authorization", &bearer(&t))]);
        assert_eq!(r.status, 200, "{}", r.body_str());
        let seen = be.last_request();
        assert_eq!(seen.header("x-consumer-id"), Some("alice"));
        assert_eq!(seen.header("x-consumer-groups"), Some("gold"));
        assert!(!seen.has_header("authorization"));
    }
    assert_eq!(
        http_get(s.addr(), "/gold/x", &[("Authorization", &bearer(&t))]).status,
        200
    );
}

#[test]
fn an_unknown_subject_is_an_anonymous_identity() {
    let be = Backend::fixed("ok");
    let s = hs_setup(&be);
    let t = hs_token(claims("user-8812", json!({})));
    let r = http_get(s.addr(), "/v1/x", &[("Authorization", &bearer(&t))]);
    assert_eq!(r.status, 200);
    let seen = be.last_request();
    assert_eq!(seen.header("x-consumer-id"), Some("user-8812"));
    assert_eq!(seen.header("x-consumer-groups"), Some(""));
    let r = http_get(s.addr(), "/gold/x", &[("Authorization", &bearer(&t))]);
    assert_json_error(&r, 403);
    // A subject that could not be a header value is refused, never forwarded.
    let t = hs_token(claims("evil\r\nx-admin: 1", json!({})));
    let r = http_get(s.addr(), "/v1/x", &[("Authorization", &bearer(&t))]);
    assert_json_error(&r, 401);
}

#[test]
fn bad_tokens_are_401_with_invalid_token() {
    let be = Backend::fixed("ok");
    let s = hs_setup(&be);
    let n = now();
    let none_token = {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(br#"{"alg":"none","typ":"JWT"}"#),
            e.encode(claims("alice", json!({})).to_string())
        )
    };
    // The signature's first character changes (all six of its bits count; the last one's padding
    // bits do not, and it may have been 'A' already: the test passed a valid token 1 time in 16).
    let tampered = {
        let t = hs_token(claims("alice", json!({})));
        let at = t.rfind('.').expect("three parts") + 1;
        let flipped = if t.as_bytes()[at] == b'A' { "B" } else { "A" };
        format!("{}{flipped}{}", &t[..at], &t[at + 1..])
    };
    let cases = [
        ("expired", hs_token(claims("alice", json!({"exp": n - 60})))),
        (
            "not yet valid",
            hs_token(claims("alice", json!({"nbf": n + 60}))),
        ),
        (
            "wrong audience",
            hs_token(claims("alice", json!({"aud": "other"}))),
        ),
        (
            "wrong issuer",
            hs_token(claims("alice", json!({"iss": "https://evil.test/"}))),
        ),
        ("alg none", none_token),
        ("tampered signature", tampered),
        ("not a token", "abc.def".to_string()),
        (
            "RS256 for an HS256 verifier",
            rs_token("rsa1", RSA_PRIV, claims("alice", json!({}))),
        ),
    ];
    let before = be.request_count();
    for (what, t) in &cases {
        let r = http_get(s.addr(), "/v1/x", &[("Authorization", &bearer(t))]);
        assert_json_error(&r, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"sluice\", error=\"invalid_token\""),
            "{what}"
        );
    }
    // Within the leeway (5 s) an expired token still passes.
    let t = hs_token(claims("alice", json!({"exp": n - 1})));
    assert_eq!(
        http_get(s.addr(), "/v1/x", &[("Authorization", &bearer(&t))]).status,
        200
    );
    assert_eq!(be.request_count(), before + 1);
    let r = http_get(s.addr(), "/v1/x", &[]);
    assert_json_error(&r, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"sluice\"")
    );
    let admin = s.admin_addr().expect("admin");
    let counted = eventually(Duration::from_secs(5), || {
        let text = scrape(admin);
        [
            "expired",
            "not_yet_valid",
            "bad_audience",
            "bad_issuer",
            "alg_not_allowed",
            "bad_signature",
            "malformed",
            "missing",
        ]
        .iter()
        .all(|o| {
            metric_value(
                &text,
                "sluice_auth_total",
                &format!("route=\"api\",method=\"hs\",outcome=\"{o}\""),
            )
            .is_some()
        })
    });
    assert!(counted, "{}", scrape(admin));
}

#[test]
fn scopes_and_claims_are_required() {
    let be = Backend::fixed("ok");
    let s = hs_setup(&be);
    let good = hs_token(claims(
        "alice",
        json!({"scope": "orders:read orders:write", "tenant": "t-17"}),
    ));
    assert_eq!(
        http_get(s.addr(), "/orders/1", &[("Authorization", &bearer(&good))]).status,
        200
    );
    let scp = hs_token(claims(
        "alice",
        json!({"scp": ["orders:read"], "tenant": "t-17"}),
    ));
    assert_eq!(
        http_get(s.addr(), "/orders/1", &[("Authorization", &bearer(&scp))]).status,
        200
    );
    for t in [
        hs_token(claims(
            "alice",
            json!({"scope": "orders:write", "tenant": "t-17"}),
        )),
        hs_token(claims(
            "alice",
            json!({"scope": "orders:read", "tenant": "t-18"}),
        )),
        hs_token(claims("alice", json!({"scope": "orders:read"}))),
    ] {
        let r = http_get(s.addr(), "/orders/1", &[("Authorization", &bearer(&t))]);
        assert_json_error(&r, 403);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"sluice\", error=\"insufficient_scope\", scope=\"orders:read\"")
        );
    }
}

#[test]
fn discovery_unknown_kid_rotation_and_outage() {
    let mode = Arc::new(AtomicUsize::new(0));
    let id = idp(mode.clone());
    let issuer = format!("http://{}", id.addr());
    let be = Backend::fixed("ok");
    let s = Sluice::start(&config(&format!(
        r#"[auth.idp]
type = "jwt"
issuer = "{issuer}"
audiences = ["api"]
algorithms = ["RS256"]
refresh = "1h"
min_refresh_interval = "1s"

[routes.api]
path = "/*"
upstream = "app"
auth = ["idp"]

{up}"#,
        up = upstream("app", &[be.addr()], ""),
    )));
    let claims = |sub: &str| json!({"sub": sub, "iss": issuer, "aud": "api", "exp": now() + 600});
    let t1 = rs_token("rsa1", RSA_PRIV, claims("first"));
    let ok = eventually(Duration::from_secs(10), || {
        http_get(s.addr(), "/x", &[("Authorization", &bearer(&t1))]).status == 200
    });
    assert!(ok, "keys from discovery never verified a token");
    // HS256 signed with the RSA public key as the secret: algorithm confusion must fail.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa1".into());
    let confused = encode(&h, &claims("first"), &EncodingKey::from_secret(RSA_PUB)).expect("sign");
    assert_json_error(
        &http_get(s.addr(), "/x", &[("Authorization", &bearer(&confused))]),
        401,
    );
    // A token from the rotated key: unknown until the JWKS changes, then the unknown kid triggers an
    // early refresh (the scheduled one is an hour away).
    let t2 = rs_token("rsa2", RSA2_PRIV, claims("second"));
    assert_json_error(
        &http_get(s.addr(), "/x", &[("Authorization", &bearer(&t2))]),
        401,
    );
    mode.store(1, Ordering::SeqCst);
    let rotated = eventually(Duration::from_secs(10), || {
        http_get(s.addr(), "/x", &[("Authorization", &bearer(&t2))]).status == 200
    });
    assert!(rotated, "the rotated key was never fetched");
    assert_eq!(be.last_request().header("x-consumer-id"), Some("second"));
    // An outage keeps the last good keys.
    mode.store(2, Ordering::SeqCst);
    let asked = id.request_count();
    let t3 = rs_token("rsa-unknown", RSA2_PRIV, claims("third"));
    // Unknown kids ask for refreshes; they fail against the outage.
    let failed = eventually(Duration::from_secs(10), || {
        http_get(s.addr(), "/x", &[("Authorization", &bearer(&t3))]).status == 401
            && id.request_count() > asked
    });
    assert!(failed, "no refresh was tried during the outage");
    assert_eq!(
        http_get(s.addr(), "/x", &[("Authorization", &bearer(&t2))]).status,
        200
    );
}
