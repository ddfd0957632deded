//! OAuth 2.0 token introspection (RFC 7662) on the real binary, against an introspection endpoint the
//! test runs (a threaded std::net server on an ephemeral port) that checks sluice's client
//! credentials and form body. An active token reaches the upstream as its consumer (or an anonymous
//! identity) without its `Authorization`; inactive and expired tokens are 401 `invalid_token`;
//! answers are cached per worker until the sooner of `exp` and `cache_ttl`; an endpoint that is down,
//! slow, failing, talking nonsense or refusing sluice's client secret is 503 in bounded time; scopes
//! feed `require_scopes`; `forward_credential` keeps the token; config errors name the key; outcomes
//! are counted and `GET /auth` shows the verifier.

mod common;

use base64::Engine;
use common::metrics::{metric_value, scrape};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "s3cret:with/odd chars";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What sluice must send as client credentials: RFC 6749 §2.3.1, id and secret form-urlencoded.
fn client_basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("gateway:s3cret%3Awith%2Fodd+chars")
    )
}

fn json(status: u16, body: String) -> Reply {
    Reply::new(status, body).header("content-type", "application/json")
}

/// The introspection endpoint. Tokens: `good` (alice, scopes orders:read), `anon` (a subject no
/// consumer has, no scope), `inactive`, `expired` (active, but exp is past), `exp<N>` (active until
/// unix second N), `slow`, `broken` (500), `notjson`. Anything else is inactive.
fn endpoint() -> Backend {
    Backend::start(|req| {
        if req.method != "POST" || req.path != "/oauth2/introspect" {
            return Reply::new(404, "no");
        }
        if req.header("authorization") != Some(client_basic().as_str()) {
            return json(401, r#"{"error":"invalid_client"}"#.into());
        }
        if req.header("content-type") != Some("application/x-www-form-urlencoded") {
            return Reply::new(415, "form expected");
        }
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let Some(token) = body
            .strip_prefix("token=")
            .and_then(|r| r.strip_suffix("&token_type_hint=access_token"))
        else {
            return Reply::new(400, "bad form");
        };
        let exp = now() + 600;
        match token {
            "good" => json(
                200,
                format!(
                    r#"{{"active":true,"sub":"alice","exp":{exp},"scope":"orders:read orders:write","client_id":"app"}}"#
                ),
            ),
            "anon" => json(
                200,
                format!(r#"{{"active":true,"sub":"someone-else","exp":{exp}}}"#),
            ),
            "expired" => json(
                200,
                format!(r#"{{"active":true,"sub":"alice","exp":{}}}"#, now() - 30),
            ),
            "slow" => json(
                200,
                format!(r#"{{"active":true,"sub":"alice","exp":{exp}}}"#),
            )
            .delay(Duration::from_secs(3)),
            "broken" => Reply::new(500, "oops"),
            "notjson" => Reply::new(200, "<html>login</html>"),
            t if t.starts_with("exp") => json(
                200,
                format!(r#"{{"active":true,"sub":"alice","exp":{}}}"#, &t[3..]),
            ),
            _ => json(200, r#"{"active":false}"#.into()),
        }
    })
}

fn setup(idp: &Backend, be: &Backend) -> Sluice {
    let dead = refused_addr();
    Sluice::start_env(
        &config(&format!(
            r#"[admin]
listen = "127.0.0.1:0"

[consumers.alice]
groups = ["gold"]

[auth.idp]
type = "introspection"
endpoint = "http://{idp}/oauth2/introspect"
client_id = "gateway"
client_secret = {{ env = "INTROSPECT_SECRET" }}
cache_ttl = "60s"
negative_cache_ttl = "30s"
timeout = "500ms"

[auth.idp_short]
type = "introspection"
endpoint = "http://{idp}/oauth2/introspect"
client_id = "gateway"
client_secret = {{ env = "INTROSPECT_SECRET" }}
cache_ttl = "1s"
timeout = "500ms"

[auth.idp_wrong_secret]
type = "introspection"
endpoint = "http://{idp}/oauth2/introspect"
client_id = "gateway"
client_secret = "not-the-secret"

[auth.idp_down]
type = "introspection"
endpoint = "http://{dead}/oauth2/introspect"
client_id = "gateway"
client_secret = "x"

[routes.api]
path = "/api/*"
upstream = "app"
auth = ["idp"]

[routes.gold]
path = "/gold/*"
upstream = "app"
auth = ["idp"]
allow = ["gold"]

[routes.scoped]
path = "/scoped/*"
upstream = "app"
auth = ["idp"]
require_scopes = ["orders:read"]

[routes.admin]
path = "/admin/*"
upstream = "app"
auth = ["idp"]
require_scopes = ["admin"]

[routes.keep]
path = "/keep/*"
upstream = "app"
auth = ["idp"]
forward_credential = true

[routes.ttl]
path = "/ttl/*"
upstream = "app"
auth = ["idp_short"]

[routes.wrong_secret]
path = "/wrong-secret/*"
upstream = "app"
auth = ["idp_wrong_secret"]

[routes.down]
path = "/down/*"
upstream = "app"
auth = ["idp_down"]

{}"#,
            upstream("app", &[be.addr()], ""),
            idp = idp.addr(),
        )),
        &[("INTROSPECT_SECRET", SECRET)],
    )
}

fn get(s: &Sluice, path: &str, token: &str) -> Response {
    http_get(
        s.addr(),
        path,
        &[("Authorization", &format!("Bearer {token}"))],
    )
}

#[test]
fn an_active_token_reaches_the_upstream_as_its_consumer() {
    let idp = endpoint();
    let be = Backend::fixed("ok");
    let s = setup(&idp, &be);
    let r = get(&s, "/api/x", "good");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = be.last_request();
    assert_eq!(seen.header("x-consumer-id"), Some("alice"));
    assert_eq!(seen.header("x-consumer-groups"), Some("gold"));
    assert!(!seen.has_header("authorization"), "{}", seen.head_text());
    let call = idp.last_request();
    assert_eq!(call.method, "POST");
    assert_eq!(call.body, b"token=good&token_type_hint=access_token");
    assert_eq!(call.header("accept"), Some("application/json"));

    // A subject no consumer has: an anonymous identity, as for JWT.
    let r = get(&s, "/api/x", "anon");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = be.last_request();
    assert_eq!(seen.header("x-consumer-id"), Some("someone-else"));
    assert_eq!(seen.header("x-consumer-groups").unwrap_or(""), "");
    // ... which no `allow` list admits; the consumer does get in.
    let r = get(&s, "/gold/x", "anon");
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert_eq!(get(&s, "/gold/x", "good").status, 200);

    // forward_credential keeps the token for the backend.
    assert_eq!(get(&s, "/keep/x", "good").status, 200);
    assert_eq!(
        be.last_request().header("authorization"),
        Some("Bearer good")
    );
}

#[test]
fn inactive_expired_and_missing_tokens_are_401() {
    let idp = endpoint();
    let be = Backend::fixed("ok");
    let s = setup(&idp, &be);
    for token in ["inactive", "expired", &format!("exp{}", now() - 1)] {
        let r = get(&s, "/api/x", token);
        assert_json_error(&r, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"sluice\", error=\"invalid_token\""),
            "{token}"
        );
    }
    let r = http_get(s.addr(), "/api/x", &[]);
    assert_json_error(&r, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"sluice\"")
    );
    // Not a b64token: refused without asking the endpoint.
    let asked = idp.request_count();
    assert_json_error(&get(&s, "/api/x", "a\"b"), 401);
    assert_eq!(idp.request_count(), asked);
    assert_eq!(be.request_count(), 0);

    let admin = s.admin_addr().expect("admin");
    let counted = eventually(Duration::from_secs(5), || {
        let text = scrape(admin);
        let n = |outcome: &str| {
            metric_value(
                &text,
                "sluice_auth_total",
                &format!("route=\"api\",method=\"idp\",outcome=\"{outcome}\""),
            )
        };
        n("invalid") == Some(1.0)
            && n("expired") == Some(2.0)
            && n("missing") == Some(1.0)
            && n("malformed") == Some(1.0)
    });
    assert!(counted, "{}", scrape(admin));
}

#[test]
fn answers_are_cached_until_the_sooner_of_exp_and_the_ttl() {
    let idp = endpoint();
    let be = Backend::fixed("ok");
    let s = setup(&idp, &be);
    let asked = idp.request_count();
    for _ in 0..5 {
        assert_eq!(get(&s, "/api/x", "good").status, 200);
    }
    assert_eq!(idp.request_count(), asked + 1, "one call, then the cache");

    // negative_cache_ttl: an inactive answer is reused too on `idp`; `idp_short` has none.
    let asked = idp.request_count();
    for _ in 0..3 {
        assert_eq!(get(&s, "/api/x", "nobody").status, 401);
    }
    assert_eq!(idp.request_count(), asked + 1);
    let asked = idp.request_count();
    for _ in 0..3 {
        assert_eq!(get(&s, "/ttl/x", "nobody").status, 401);
    }
    assert_eq!(idp.request_count(), asked + 3);

    // The TTL: `idp_short` keeps an answer for 1s.
    let asked = idp.request_count();
    let start = Instant::now();
    assert_eq!(get(&s, "/ttl/x", "good").status, 200);
    assert_eq!(get(&s, "/ttl/x", "good").status, 200);
    assert_eq!(idp.request_count(), asked + 1);
    let asked_again = eventually(Duration::from_secs(5), || {
        assert_eq!(get(&s, "/ttl/x", "good").status, 200);
        idp.request_count() > asked + 1
    });
    assert!(asked_again, "the answer is asked for again after the TTL");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(idp.request_count(), asked + 2);

    // Never past the token's exp, though the TTL (60s) is longer.
    let exp = now() + 2;
    let token = format!("exp{exp}");
    let asked = idp.request_count();
    assert_eq!(get(&s, "/api/x", &token).status, 200);
    assert_eq!(get(&s, "/api/x", &token).status, 200);
    assert_eq!(idp.request_count(), asked + 1);
    let past = eventually(Duration::from_secs(5), || now() >= exp);
    assert!(past);
    let r = get(&s, "/api/x", &token);
    assert_json_error(&r, 401);
    assert_eq!(
        idp.request_count(),
        asked + 2,
        "past exp the cached answer is not used"
    );
}

#[test]
fn an_endpoint_that_cannot_answer_is_503_in_bounded_time() {
    let idp = endpoint();
    let be = Backend::fixed("ok");
    let s = setup(&idp, &be);
    let t = Instant::now();
    assert_json_error(&get(&s, "/api/x", "slow"), 503);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "timeout 500ms, answered after {:?}",
        t.elapsed()
    );
    assert_json_error(&get(&s, "/api/x", "broken"), 503);
    assert_json_error(&get(&s, "/api/x", "notjson"), 503);
    // The endpoint refuses sluice's client secret (401): that is sluice's problem, not the client's.
    let r = get(&s, "/wrong-secret/x", "good");
    assert_json_error(&r, 503);
    let t = Instant::now();
    assert_json_error(&get(&s, "/down/x", "good"), 503);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(be.request_count(), 0);
    // Failures are not cached: the endpoint is asked again.
    let asked = idp.request_count();
    assert_json_error(&get(&s, "/api/x", "broken"), 503);
    assert_eq!(idp.request_count(), asked + 1);

    let admin = s.admin_addr().expect("admin");
    let counted = eventually(Duration::from_secs(5), || {
        let text = scrape(admin);
        let n = |route: &str, method: &str| {
            metric_value(
                &text,
                "sluice_auth_total",
                &format!("route=\"{route}\",method=\"{method}\",outcome=\"unavailable\""),
            )
        };
        n("api", "idp") == Some(4.0)
            && n("wrong_secret", "idp_wrong_secret") == Some(1.0)
            && n("down", "idp_down") == Some(1.0)
            && metric_value(
                &text,
                "sluice_auth_introspection_calls_total",
                "auth=\"idp\",result=\"failed\"",
            ) == Some(4.0)
    });
    assert!(counted, "{}", scrape(admin));
    let r = http_get(admin, "/auth", &[]);
    assert_eq!(r.status, 200);
    let body = r.body_str();
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let list = v["verifiers"].as_array().expect("verifiers");
    let wrong = list
        .iter()
        .find(|v| v["name"] == "idp_wrong_secret")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(wrong["type"], "introspection");
    assert_eq!(wrong["calls"]["failed"], 1);
    assert_eq!(wrong["failing"], true);
    assert!(
        wrong["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{body}"
    );
    assert!(!body.contains("not-the-secret"), "secrets never shown");
}

#[test]
fn scopes_from_the_answer_feed_require_scopes() {
    let idp = endpoint();
    let be = Backend::fixed("ok");
    let s = setup(&idp, &be);
    assert_eq!(get(&s, "/scoped/x", "good").status, 200);
    for (path, token, scope) in [
        ("/admin/x", "good", "admin"),
        ("/scoped/x", "anon", "orders:read"),
    ] {
        let r = get(&s, path, token);
        assert_json_error(&r, 403);
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                format!("Bearer realm=\"sluice\", error=\"insufficient_scope\", scope=\"{scope}\"")
                    .as_str()
            ),
            "{path} {token}"
        );
    }
    let admin = s.admin_addr().expect("admin");
    let counted = eventually(Duration::from_secs(5), || {
        metric_value(
            &scrape(admin),
            "sluice_auth_total",
            "route=\"admin\",method=\"idp\",outcome=\"insufficient_scope\"",
        ) == Some(1.0)
    });
    assert!(counted, "{}", scrape(admin));
    let r = http_get(admin, "/auth", &[]);
    let v: serde_json::Value = serde_json::from_str(&r.body_str()).expect("json");
    let idp_status = v["verifiers"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "idp"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        idp_status["endpoint"],
        format!("http://{}/oauth2/introspect", idp.addr())
    );
    assert_eq!(idp_status["auth_method"], "client_secret_basic");
    assert_eq!(idp_status["calls"]["active"], 2, "{idp_status}");
}

fn check(toml: &str, env: &[(&str, &str)]) -> Output {
    let dir = temp_dir();
    let path = dir.write("sluice.toml", toml);
    run(
        &["--check", "-c", path.to_str().expect("utf-8 path")],
        env,
        dir.path(),
    )
}

#[test]
fn config_errors_name_the_key() {
    let idp: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let base = |body: &str| {
        config(&format!(
            "[auth.idp]\ntype = \"introspection\"\n{body}\n[routes.r]\npath = \"/*\"\nrespond = {{ status = 200 }}\nauth = [\"idp\"]\n"
        ))
    };
    let ok = format!("endpoint = \"http://{idp}/i\"\nclient_id = \"gateway\"\nclient_secret = {{ env = \"INTROSPECT_SECRET\" }}\n");
    let out = check(&base(&ok), &[("INTROSPECT_SECRET", "x")]);
    assert!(out.status.success(), "{}", out.all());
    for (body, env, needles) in [
        (
            "client_id = \"gateway\"\nclient_secret = \"x\"\n".to_string(),
            &[][..],
            &["auth.idp", "endpoint"][..],
        ),
        (
            format!("{ok}cache_tll = \"5s\"\n"),
            &[("INTROSPECT_SECRET", "x")][..],
            &["auth.idp", "cache_tll"][..],
        ),
        (
            ok.clone(),
            &[][..],
            &["auth.idp.client_secret", "INTROSPECT_SECRET"][..],
        ),
        (
            ok.replace("http://", "ldap://"),
            &[("INTROSPECT_SECRET", "x")][..],
            &["auth.idp.endpoint", "URL"][..],
        ),
    ] {
        let out = check(&base(&body), env);
        assert!(!out.status.success(), "{body}: {}", out.all());
        for n in needles {
            assert!(
                out.stderr.contains(n),
                "{body}: wants {n:?} in {}",
                out.all()
            );
        }
    }
}
