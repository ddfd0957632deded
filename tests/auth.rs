//! Consumers, API keys, Basic and access rules on the real binary: 401 with a challenge per method,
//! 403 for a caller the route does not admit, the consumer named upstream, the credential stripped
//! (or kept with `forward_credential`), spoofed consumer headers dropped, outcomes in /metrics and the
//! access log, and config errors that name the key.

mod common;

use common::metrics::{metric_value, scrape};
use common::*;
use std::time::Duration;

const ALICE_KEY: &str = "alice-key-0123456789";
const CAROL_KEY: &str = "carol-secret-key-42";

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn setup(be: &Backend, extra: &str) -> Sluice {
    let carol_digest = sha256_hex(CAROL_KEY.as_bytes());
    Sluice::start(&config(&format!(
        r#"[admin]
listen = "127.0.0.1:0"

[consumers.alice]
api_keys = ["{ALICE_KEY}"]
basic = {{ user = "alice", password_hash = "{argon}" }}
groups = ["gold", "beta"]
metadata = {{ tenant = "t-17" }}

[consumers.bob]
basic = {{ user = "bob", password_hash = "{bcrypt}" }}

[consumers.carol]
api_keys = ["sha256:{carol_digest}"]

{extra}

[routes.api]
path = "/v1/*"
upstream = "app"
auth = ["api_key", "basic"]

[routes.gold]
path = "/gold/*"
upstream = "app"
auth = ["api_key", "basic"]
allow = ["gold", "carol"]

[routes.keep]
path = "/keep/*"
upstream = "app"
auth = ["basic"]
forward_credential = true

[routes.scoped]
path = "/scoped/*"
upstream = "app"
auth = ["api_key"]
require_scopes = ["orders:read"]

{up}{all}"#,
        argon = argon2_hash("wonderland"),
        bcrypt = bcrypt_hash("builder"),
        up = upstream("app", &[be.addr()], ""),
        all = catch_all("app"),
    )))
}

#[test]
fn api_key_names_the_consumer_and_is_stripped() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    let r = http_get(s.addr(), "/v1/orders", &[("X-API-Key", ALICE_KEY)]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = be.last_request();
    assert_eq!(seen.header("x-consumer-id"), Some("alice"));
    assert_eq!(seen.header("x-consumer-groups"), Some("gold,beta"));
    assert!(!seen.has_header("x-api-key"), "{}", seen.head_text());

    // Header names are case-insensitive; a stored SHA-256 digest verifies the plain key.
    let r = http_get(s.addr(), "/v1/orders", &[("x-api-KEY", CAROL_KEY)]);
    assert_eq!(r.status, 200);
    assert_eq!(be.last_request().header("x-consumer-id"), Some("carol"));
    assert_eq!(be.last_request().header("x-consumer-groups"), Some(""));
}

#[test]
fn missing_or_wrong_credentials_get_401_with_challenges() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    let before = be.request_count();
    for headers in [
        vec![],
        vec![("X-API-Key", "not-a-key-at-all")],
        vec![("X-API-Key", &ALICE_KEY[..ALICE_KEY.len() - 1])],
        vec![("Authorization", "Basic !!!")],
        vec![("Authorization", &*format!("Basic {}", b64("alice:wrong")))],
        vec![(
            "Authorization",
            &*format!("Basic {}", b64("nobody:wonderland")),
        )],
        // Two different keys: ambiguous, never the first or the last.
        vec![("X-API-Key", ALICE_KEY), ("X-API-Key", "other-key-12345")],
    ] {
        let r = http_get(s.addr(), "/v1/x", &headers);
        assert_json_error(&r, 401);
        let challenges = r.header_all("www-authenticate");
        assert!(
            challenges.iter().any(|c| c.starts_with("ApiKey ")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic realm=")),
            "{challenges:?}"
        );
    }
    assert_eq!(
        be.request_count(),
        before,
        "no refused request reaches the upstream"
    );
}

#[test]
fn basic_with_argon2_and_bcrypt() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    for _ in 0..3 {
        let r = http_get(
            s.addr(),
            "/v1/x",
            &[(
                "Authorization",
                &format!("Basic {}", b64("alice:wonderland")),
            )],
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        let seen = be.last_request();
        assert_eq!(seen.header("x-consumer-id"), Some("alice"));
        assert!(!seen.has_header("authorization"));
    }
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let r = http_get(
        s.addr(),
        "/v1/x",
        &[("Authorization", &format!("bAsIc {}", b64("bob:builder")))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(be.last_request().header("x-consumer-id"), Some("bob"));
    // A cached success does not admit another password.
    let r = http_get(
        s.addr(),
        "/v1/x",
        &[("Authorization", &format!("Basic {}", b64("bob:builder2")))],
    );
    assert_json_error(&r, 401);
}

#[test]
fn forward_credential_keeps_authorization() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    let auth = format!("Basic {}", b64("bob:builder"));
    let r = http_get(s.addr(), "/keep/x", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        be.last_request().header("authorization"),
        Some(auth.as_str())
    );
}

#[test]
fn allow_admits_consumers_and_groups_only() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    let r = http_get(s.addr(), "/gold/x", &[("X-API-Key", ALICE_KEY)]);
    assert_eq!(r.status, 200, "alice is in group gold");
    let r = http_get(s.addr(), "/gold/x", &[("X-API-Key", CAROL_KEY)]);
    assert_eq!(r.status, 200, "carol is named");
    let r = http_get(
        s.addr(),
        "/gold/x",
        &[("Authorization", &format!("Basic {}", b64("bob:builder")))],
    );
    assert_json_error(&r, 403);
    assert!(!r.has_header("www-authenticate"));
    let r = http_get(s.addr(), "/gold/x", &[]);
    assert_json_error(&r, 401);
    // Scopes come only from tokens: a key carries none.
    let r = http_get(s.addr(), "/scoped/x", &[("X-API-Key", ALICE_KEY)]);
    assert_json_error(&r, 403);
}

#[test]
fn spoofed_consumer_headers_and_proxy_authorization_never_pass() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    let r = http_get(
        s.addr(),
        "/open",
        &[
            ("X-Consumer-Id", "admin"),
            ("x-consumer-groups", "root"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Authorization", "Bearer kept-on-open-routes"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = be.last_request();
    assert!(!seen.has_header("x-consumer-id"), "{}", seen.head_text());
    assert!(!seen.has_header("x-consumer-groups"));
    assert!(!seen.has_header("proxy-authorization"));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer kept-on-open-routes")
    );
    // On an authenticated route the spoofed name is replaced by the real one.
    let r = http_get(
        s.addr(),
        "/v1/x",
        &[("X-API-Key", CAROL_KEY), ("X-Consumer-Id", "alice")],
    );
    assert_eq!(r.status, 200);
    let seen = be.last_request();
    assert_eq!(
        seen.header_all("x-consumer-id"),
        vec!["carol"],
        "{}",
        seen.head_text()
    );
}

#[test]
fn keys_in_the_query_are_read_and_removed() {
    let be = Backend::fixed("ok");
    let s = setup(
        &be,
        "[api_key]\nheader = \"x-token\"\nquery = \"apikey\"\n\n[consumer_headers]\nid = \"x-user\"\ngroups = \"x-roles\"\n",
    );
    let r = http_get(
        s.addr(),
        &format!("/v1/x?a=1&apikey={}&b=2", ALICE_KEY.replace('-', "%2D")),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = be.last_request();
    assert_eq!(seen.path, "/v1/x?a=1&b=2");
    assert_eq!(seen.header("x-user"), Some("alice"));
    assert_eq!(seen.header("x-roles"), Some("gold,beta"));
    let r = http_get(s.addr(), &format!("/v1/x?apikey={ALICE_KEY}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(be.last_request().path, "/v1/x");
    // The configured header replaces X-API-Key.
    let r = http_get(s.addr(), "/v1/x", &[("x-token", ALICE_KEY)]);
    assert_eq!(r.status, 200);
    assert!(!be.last_request().has_header("x-token"));
    let r = http_get(s.addr(), "/v1/x", &[("x-api-key", ALICE_KEY)]);
    assert_json_error(&r, 401);
}

#[test]
fn outcomes_are_counted_and_logged() {
    let be = Backend::fixed("ok");
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let s = setup(
        &be,
        &format!(
            "[access_log]\npath = \"{}\"\n",
            log.to_str().expect("utf-8")
        ),
    );
    assert_eq!(
        http_get(s.addr(), "/v1/x", &[("X-API-Key", ALICE_KEY)]).status,
        200
    );
    assert_eq!(http_get(s.addr(), "/v1/x", &[]).status, 401);
    assert_eq!(
        http_get(
            s.addr(),
            "/gold/x",
            &[("Authorization", &format!("Basic {}", b64("bob:builder")))]
        )
        .status,
        403
    );
    let admin = s.admin_addr().expect("admin");
    let want = [
        ("api", "api_key", "ok"),
        ("api", "api_key", "missing"),
        ("gold", "basic", "denied"),
    ];
    let counted = eventually(Duration::from_secs(5), || {
        let text = scrape(admin);
        want.iter().all(|(route, method, outcome)| {
            metric_value(
                &text,
                "sluice_auth_total",
                &format!("route=\"{route}\",method=\"{method}\",outcome=\"{outcome}\""),
            ) == Some(1.0)
        })
    });
    assert!(counted, "{}", scrape(admin));
    let logged = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3)
    });
    assert!(logged);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["consumer"] == "alice" && l["auth"] == "api_key:ok"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["consumer"].is_null() && l["auth"] == "api_key:missing"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["consumer"] == "bob" && l["auth"] == "basic:denied"),
        "{text}"
    );
}

#[test]
fn bad_access_config_names_the_key() {
    let dir = temp_dir();
    for (toml, key) in [
        (
            "[routes.r]\npath = \"/*\"\nrespond = { status = 200 }\nauth = [\"kerberos\"]\n",
            "routes.r.auth[0]",
        ),
        (
            "[routes.r]\npath = \"/*\"\nrespond = { status = 200 }\nallow = [\"gold\"]\n",
            "routes.r.allow",
        ),
        (
            "[consumers.a]\napi_keys = [\"short\"]\n",
            "consumers.a.api_keys[0]",
        ),
        (
            "[consumers.a]\napi_keys = [\"sha256:abcd\"]\n",
            "consumers.a.api_keys[0]",
        ),
        (
            "[consumers.a]\napi_keys = [\"same-key-123\"]\n[consumers.b]\napi_keys = [\"same-key-123\"]\n",
            "consumers.b.api_keys[0]",
        ),
        (
            "[consumers.a]\nbasic = { user = \"a\", password_hash = \"plaintext\" }\n",
            "consumers.a.basic.password_hash",
        ),
        ("[consumers.a]\ncolour = \"red\"\n", "colour"),
        ("[api_key]\nheader = \"x bad\"\n", "api_key.header"),
    ] {
        let path = dir.write("bad.toml", &config(toml));
        let out = run(
            &["--check", "-c", path.to_str().expect("utf-8")],
            &[],
            dir.path(),
        );
        assert!(!out.status.success(), "{toml} was accepted");
        assert!(out.all().contains(key), "{toml}: {}", out.all());
    }
}

#[test]
fn a_slow_hash_does_not_stall_the_worker() {
    use std::io::{Read, Write};
    let be = Backend::fixed("ok");
    // bcrypt cost 13: hundreds of milliseconds per check, on one worker.
    let hash = bcrypt::hash("slow-password", 13).expect("bcrypt");
    let s = Sluice::start(&config(&format!(
        "[consumers.slow]\nbasic = {{ user = \"slow\", password_hash = \"{hash}\" }}\n\n\
         [routes.slow]\npath = \"/slow/*\"\nupstream = \"app\"\nauth = [\"basic\"]\n\n{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )));
    let mut a = std::net::TcpStream::connect(s.addr()).expect("connect");
    a.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let req = format!(
        "GET /slow/x HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        b64("slow:slow-password")
    );
    a.write_all(req.as_bytes()).expect("write");
    // While the hash is being checked, the same worker answers another connection.
    let r = http_get(s.addr(), "/open", &[]);
    assert_eq!(r.status, 200);
    a.set_nonblocking(true).expect("nonblocking");
    let mut probe = [0u8; 1];
    let pending =
        matches!(a.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        pending,
        "the Basic request was answered before an unrelated one: the check is too fast to show anything"
    );
    a.set_nonblocking(false).expect("blocking");
    let mut out = Vec::new();
    let _ = a.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(be.last_request().header("x-consumer-id"), Some("slow"));
}

#[test]
fn an_acl_holds_however_the_path_is_spelled() {
    let be = Backend::fixed("ok");
    let s = setup(&be, "");
    let before = be.request_count();
    for path in [
        "/gold/x",
        "/%67old/x",
        "/%67OLD/x",
        "//gold/x",
        "/./gold/x",
        "/open/../gold/x",
        "/open/%2e%2e/gold/x",
        "/open/%2E%2e/gold/x",
        "/gold/./x",
    ] {
        let r = http_get(
            s.addr(),
            path,
            &[("Authorization", &format!("Basic {}", b64("bob:builder")))],
        );
        // %67OLD decodes to gOLD: another route (the open catch-all), which is not the gold ACL.
        if path == "/%67OLD/x" {
            assert_eq!(r.status, 200, "{path}");
            continue;
        }
        assert_json_error(&r, 403);
    }
    assert_eq!(
        be.request_count(),
        before + 1,
        "only /gOLD/x reached the upstream"
    );
}
