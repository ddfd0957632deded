//! JWT key fetching on the real binary: keys come from an issuer's OpenID discovery document and its
//! JWKS served by a local backend; `GET /auth` shows them; a rotated JWKS is picked up by the scheduled
//! refresh; an outage (500) keeps the last good keys and is counted in `GET /auth` and `/metrics`; a
//! reload to another source switches; key_file keys load at start and a bad key_file fails `--check`.

mod common;

use common::idp::idp;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn data(name: &str) -> String {
    format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn auth_config(verifiers: &str) -> String {
    config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0ken\"\n\n{verifiers}"
    ))
}

fn auth_json(admin: SocketAddr) -> Value {
    let r = http_get(admin, "/auth", &[("Authorization", "Bearer t0ken")]);
    assert_eq!(r.status, 200, "{r}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r}"))
}

fn verifier(admin: SocketAddr, name: &str) -> Value {
    auth_json(admin)["verifiers"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

fn kids(v: &Value) -> Vec<String> {
    v["kids"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn discovery_rotation_and_outage() {
    let mode = Arc::new(AtomicUsize::new(0));
    let be = idp(mode.clone());
    let sluice = Sluice::start(&auth_config(&format!(
        "[auth.corp]\ntype = \"jwt\"\nissuer = \"http://{}\"\naudiences = [\"api\"]\n\
         refresh = \"1s\"\nmin_refresh_interval = \"1s\"\nfetch_timeout = \"2s\"\n",
        be.addr()
    )));
    let admin = sluice.admin_addr().expect("admin address");

    // The token guards /auth like every admin endpoint.
    assert_eq!(http_get(admin, "/auth", &[]).status, 401);

    assert!(
        eventually(WAIT, || kids(&verifier(admin, "corp")).len() == 5),
        "keys loaded from discovery: {}\n{}",
        auth_json(admin),
        sluice.stderr_text()
    );
    let v = verifier(admin, "corp");
    assert_eq!(v["type"], "jwt");
    assert_eq!(v["source"], "discovery");
    assert_eq!(
        v["location"],
        format!("http://{}/.well-known/openid-configuration", be.addr())
    );
    assert_eq!(v["jwks_uri"], format!("http://{}/jwks.json", be.addr()));
    assert_eq!(kids(&v), ["rsa1", "rsa-any", "ec1", "ec384", "ed1"]);
    assert_eq!(v["keys"], 5);
    assert_eq!(v["failures"], 0);
    assert!(
        v["last_refresh"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000),
        "{v}"
    );
    // The enc, oct and secp256k1 keys were skipped, and said so.
    assert!(sluice.stderr_text().contains("JWKS key skipped"));

    // Rotation: the scheduled refresh (1s) picks up the new set.
    mode.store(1, Ordering::SeqCst);
    assert!(
        eventually(WAIT, || kids(&verifier(admin, "corp")) == ["rsa2"]),
        "rotated keys: {}",
        auth_json(admin)
    );
    let refreshes = verifier(admin, "corp")["refreshes"].as_u64().unwrap_or(0);
    assert!(refreshes >= 2, "{}", auth_json(admin));

    // Outage: failures are counted, the last good keys stay.
    mode.store(2, Ordering::SeqCst);
    assert!(
        eventually(WAIT, || verifier(admin, "corp")["failures"]
            .as_u64()
            .is_some_and(|f| f >= 2)),
        "failures counted: {}",
        auth_json(admin)
    );
    let v = verifier(admin, "corp");
    assert_eq!(kids(&v), ["rsa2"], "last good keys kept: {v}");
    assert!(
        v["last_error"].as_str().is_some_and(|e| e.contains("500")),
        "{v}"
    );
    assert!(sluice.stderr_text().contains("JWT key refresh failed"));
    let text = http_get(admin, "/metrics", &[("Authorization", "Bearer t0ken")]).body_str();
    let failures = metric_value(
        &text,
        "sluice_auth_key_refresh_failures_total",
        "auth=\"corp\"",
    );
    assert!(failures.is_some_and(|f| f >= 2.0), "{text}");
    assert_eq!(
        metric_value(&text, "sluice_auth_keys", "auth=\"corp\""),
        Some(1.0)
    );

    // Back up: refreshes resume.
    mode.store(1, Ordering::SeqCst);
    let before = verifier(admin, "corp")["refreshes"].as_u64().unwrap_or(0);
    assert!(eventually(WAIT, || verifier(admin, "corp")["refreshes"]
        .as_u64()
        .is_some_and(|r| r > before)));
}

#[test]
fn jwks_url_key_file_and_reload() {
    let mode = Arc::new(AtomicUsize::new(0));
    let be = idp(mode);
    let dead = refused_addr();
    let sluice = Sluice::start(&auth_config(&format!(
        "[auth.down]\ntype = \"jwt\"\njwks = \"http://{dead}/jwks.json\"\nfetch_timeout = \"1s\"\nmin_refresh_interval = \"1s\"\n\n\
         [auth.pem]\ntype = \"jwt\"\nkey_file = \"{}\"\nalgorithms = [\"RS256\", \"PS256\"]\n\n\
         [auth.hs]\ntype = \"jwt\"\nkey_file = \"{}\"\nalgorithms = [\"HS256\"]\n",
        data("rsa_public.pem"),
        data("hs_secret.txt"),
    )));
    let admin = sluice.admin_addr().expect("admin address");
    assert!(eventually(WAIT, || verifier(admin, "down")["failures"]
        .as_u64()
        .is_some_and(|f| f >= 1)));
    let down = verifier(admin, "down");
    assert_eq!(down["keys"], 0, "{down}");
    assert_eq!(down["source"], "jwks");
    assert!(down["last_refresh"].is_null(), "{down}");
    for name in ["pem", "hs"] {
        let v = verifier(admin, name);
        assert_eq!(v["source"], "key_file", "{v}");
        assert_eq!(v["keys"], 1, "{v}");
        assert_eq!(v["refreshes"], 1, "{v}");
    }

    // A reload pointing `down` at a live JWKS loads its keys.
    sluice.rewrite_config(&auth_config(&format!(
        "[auth.down]\ntype = \"jwt\"\njwks = \"http://{}/jwks.json\"\n",
        be.addr()
    )));
    assert_eq!(sluice.reload(), Reload::Applied);
    assert!(
        eventually(WAIT, || verifier(admin, "down")["keys"] == 5),
        "{}",
        auth_json(admin)
    );
    let names: Vec<Value> = auth_json(admin)["verifiers"]
        .as_array()
        .map(|l| l.iter().map(|v| v["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["down"]);
}

#[test]
fn bad_key_file_fails_check() {
    let dir = temp_dir();
    let path = dir.write(
        "sluice.toml",
        &config(&format!(
            "[auth.pem]\ntype = \"jwt\"\nkey_file = \"{}\"\nalgorithms = [\"ES256\"]\n",
            data("rsa_public.pem")
        )),
    );
    let out = run(&["--check", "-c", &path.to_string_lossy()], &[], dir.path());
    assert!(!out.status.success(), "{}", out.all());
    assert!(
        out.all().contains("auth.pem.key_file"),
        "names the key: {}",
        out.all()
    );
}
