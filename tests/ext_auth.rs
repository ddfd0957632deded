//! External auth on the real binary, against an auth service the test runs: 2xx lets the request
//! through with the chosen headers copied upstream (a client's own copies dropped, `Authorization`
//! stripped, cookies passed on), 401/403 and their bodies go back to the client, decisions are cached
//! by the configured key, a timeout or an unreachable service answers 503 unless the route sets
//! `failure_mode_allow`, every outcome is counted, and a route whose Basic method defers a hash before
//! the service is asked gets both verdicts (wrong password + accepted session = 200; service down = 503).

mod common;

use common::metrics::{metric_value, scrape};
use common::*;
use std::time::{Duration, Instant};

fn auth_service() -> Backend {
    Backend::start(|req| match req.header("authorization") {
        Some("Bearer good") | Some("Bearer good2") => {
            Reply::status(200).header("x-user-id", "u-42")
        }
        Some("Bearer deny") => Reply::new(403, "nope\n").header("content-type", "text/plain"),
        Some("Bearer slow") => Reply::status(200).delay(Duration::from_secs(2)),
        Some("Bearer broken") => Reply::new(500, "oops"),
        _ => Reply::new(401, "{\"error\":\"login\"}")
            .header("content-type", "application/json")
            .header("www-authenticate", "Bearer realm=\"authsvc\""),
    })
}

fn setup(authsvc: &Backend, be: &Backend) -> Sluice {
    let dead = refused_addr();
    Sluice::start(&config(&format!(
        r#"[admin]
listen = "127.0.0.1:0"

[auth.authz]
type = "ext_auth"
upstream = "authsvc"
path = "/check"
forward_headers = ["authorization", "cookie"]
copy_headers = ["x-user-id"]
timeout = "300ms"
cache = {{ key = "header:authorization", ttl = "30s" }}

[auth.down]
type = "ext_auth"
upstream = "nowhere"
path = "/check"
timeout = "300ms"

[routes.api]
path = "/api/*"
upstream = "app"
auth = ["authz"]

[routes.closed]
path = "/closed/*"
upstream = "app"
auth = ["down"]

[routes.lenient]
path = "/lenient/*"
upstream = "app"
auth = ["down"]
failure_mode_allow = true

{}{}{}"#,
        upstream("authsvc", &[authsvc.addr()], ""),
        upstream("nowhere", &[dead], ""),
        upstream("app", &[be.addr()], ""),
    )))
}

#[test]
fn allowed_requests_carry_the_copied_headers() {
    let authsvc = auth_service();
    let be = Backend::fixed("ok");
    let s = setup(&authsvc, &be);
    let r = http_get(
        s.addr(),
        "/api/./x?q=1",
        &[
            ("Authorization", "Bearer good"),
            ("Cookie", "session=abc"),
            ("X-User-Id", "admin"),
            ("X-Other", "not forwarded to the auth service"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = be.last_request();
    assert_eq!(
        seen.header_all("x-user-id"),
        vec!["u-42"],
        "{}",
        seen.head_text()
    );
    assert!(!seen.has_header("authorization"));
    assert_eq!(seen.header("cookie"), Some("session=abc"));
    let check = authsvc.last_request();
    assert_eq!(check.method, "GET");
    assert_eq!(check.path, "/check");
    assert_eq!(check.header("x-forwarded-uri"), Some("/api/x?q=1"));
    assert_eq!(check.header("x-forwarded-method"), Some("GET"));
    assert_eq!(check.header("cookie"), Some("session=abc"));
    assert_eq!(check.header("authorization"), Some("Bearer good"));
    assert!(!check.has_header("x-other"));
    assert!(!check.has_header("x-user-id"));
    assert!(check.has_header("x-request-id"));
}

#[test]
fn refusals_go_back_with_their_bodies_and_decisions_are_cached() {
    let authsvc = auth_service();
    let be = Backend::fixed("ok");
    let s = setup(&authsvc, &be);
    let r = http_get(s.addr(), "/api/x", &[("Authorization", "Bearer deny")]);
    assert_eq!(r.status, 403);
    assert_eq!(r.body_str(), "nope\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = http_get(s.addr(), "/api/x", &[("Authorization", "Bearer who")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body_str(), "{\"error\":\"login\"}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"authsvc\"")
    );
    assert_eq!(
        be.request_count(),
        0,
        "no refused request reaches the upstream"
    );

    let asked = authsvc.request_count();
    for _ in 0..5 {
        assert_eq!(
            http_get(s.addr(), "/api/x", &[("Authorization", "Bearer good2")]).status,
            200
        );
        assert_eq!(
            http_get(s.addr(), "/api/x", &[("Authorization", "Bearer deny")]).status,
            403
        );
    }
    assert_eq!(
        authsvc.request_count(),
        asked + 1,
        "one check for the new token; the refusal was cached already"
    );
    assert_eq!(be.request_count(), 5);
}

#[test]
fn an_unavailable_service_fails_closed_unless_the_route_says_otherwise() {
    let authsvc = auth_service();
    let be = Backend::fixed("ok");
    let s = setup(&authsvc, &be);
    let t = Instant::now();
    let r = http_get(s.addr(), "/api/x", &[("Authorization", "Bearer slow")]);
    assert_json_error(&r, 503);
    assert!(
        t.elapsed() < Duration::from_millis(1800),
        "{:?}",
        t.elapsed()
    );
    assert_json_error(
        &http_get(s.addr(), "/api/x", &[("Authorization", "Bearer broken")]),
        503,
    );
    assert_json_error(
        &http_get(s.addr(), "/closed/x", &[("Authorization", "Bearer good")]),
        503,
    );
    assert_eq!(be.request_count(), 0);
    let r = http_get(
        s.addr(),
        "/lenient/x",
        &[("Authorization", "Bearer good"), ("X-Consumer-Id", "spoof")],
    );
    assert_eq!(r.status, 200);
    let seen = be.last_request();
    assert!(!seen.has_header("x-consumer-id"));
    // Failing open authenticates nothing: the credential goes on untouched.
    assert_eq!(seen.header("authorization"), Some("Bearer good"));

    let admin = s.admin_addr().expect("admin");
    let counted = eventually(Duration::from_secs(5), || {
        let text = scrape(admin);
        metric_value(
            &text,
            "sluice_auth_total",
            "route=\"api\",method=\"authz\",outcome=\"unavailable\"",
        ) == Some(2.0)
            && metric_value(
                &text,
                "sluice_auth_total",
                "route=\"closed\",method=\"down\",outcome=\"unavailable\"",
            ) == Some(1.0)
            && metric_value(
                &text,
                "sluice_auth_total",
                "route=\"lenient\",method=\"down\",outcome=\"unavailable\"",
            ) == Some(1.0)
    });
    assert!(counted, "{}", scrape(admin));
}

/// A route whose methods both defer (a Basic password hash, then an auth service): each re-run of
/// the stage must find every verdict it already has, not just the last one.
#[test]
fn two_deferring_methods_each_get_their_own_verdict() {
    use base64::Engine;
    let authsvc = Backend::start(|req| match req.header("cookie") {
        Some("session=ok") => Reply::status(200).header("x-user-id", "u-7"),
        _ => Reply::new(401, "no session"),
    });
    let be = Backend::fixed("ok");
    let dead = refused_addr();
    let s = Sluice::start(&config(&format!(
        r#"[consumers.alice]
basic = {{ user = "alice", password_hash = "{hash}" }}

[auth.authz]
type = "ext_auth"
upstream = "authsvc"
copy_headers = ["x-user-id"]
timeout = "300ms"

[auth.down]
type = "ext_auth"
upstream = "nowhere"
timeout = "300ms"

[routes.both]
path = "/both/*"
upstream = "app"
auth = ["basic", "authz"]

[routes.both_down]
path = "/both-down/*"
upstream = "app"
auth = ["basic", "down"]

{}{}{}"#,
        upstream("authsvc", &[authsvc.addr()], ""),
        upstream("nowhere", &[dead], ""),
        upstream("app", &[be.addr()], ""),
        hash = argon2_hash("wonderland"),
    )));
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    let wrong = basic("alice:not-the-password");

    // Wrong password (a hash on the pool), then the service lets the session in.
    let r = http_get(
        s.addr(),
        "/both/x",
        &[("Authorization", &wrong), ("Cookie", "session=ok")],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(be.last_request().header("x-user-id"), Some("u-7"));
    // Wrong password and no session: the service's refusal.
    let r = http_get(s.addr(), "/both/x", &[("Authorization", &wrong)]);
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(r.body_str(), "no session");
    // The right password needs no service.
    let asked = authsvc.request_count();
    let r = http_get(
        s.addr(),
        "/both/x",
        &[("Authorization", &basic("alice:wonderland"))],
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(authsvc.request_count(), asked);
    // Wrong password and the service unreachable: 503, never 500.
    let r = http_get(
        s.addr(),
        "/both-down/x",
        &[("Authorization", &wrong), ("Cookie", "session=ok")],
    );
    assert_json_error(&r, 503);
}
