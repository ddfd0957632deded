//! Access rules on the real binary: IP allow and deny lists per listener and per route, trusted
//! proxies and the client they name (allow lists, X-Forwarded-For upstream, access log), 405 with
//! `Allow`, and CORS preflights and responses.

mod common;

use common::*;
use std::time::Duration;

/// One listener `main` with `listener` keys, then `rest`.
fn with_listener(listen: &str, listener: &str, rest: &str) -> String {
    format!("{DEFAULT_TOP}\n\n[listeners.main]\nlisten = \"{listen}\"\n{listener}\n\n{rest}\n")
}

/// A backend-proxying route named `name` on `path` with extra keys.
fn route(name: &str, path: &str, extra: &str) -> String {
    format!("[routes.{name}]\npath = \"{path}\"\nupstream = \"app\"\n{extra}\n\n")
}

fn get(sl: &Sluice, path: &str, headers: &[(&str, &str)]) -> Response {
    Conn::connect(sl.addr()).get(path, headers)
}

#[test]
fn listener_deny_list_refuses_with_403_before_routing() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&with_listener(
        "127.0.0.1:0",
        "ip_deny = [\"10.0.0.0/8\", \"127.0.0.0/8\"]",
        &format!("{}{}", upstream("app", &[be.addr()], ""), catch_all("app")),
    ));
    let r = get(&sl, "/anything", &[]);
    assert_json_error(&r, 403);
    // Refused before routing: even a path no route matches is 403, not 404.
    assert_eq!(be.request_count(), 0);
}

#[test]
fn listener_allow_list_admits_only_its_networks() {
    let be = Backend::fixed("ok");
    let rest = format!("{}{}", upstream("app", &[be.addr()], ""), catch_all("app"));
    let admitted = Sluice::start(&with_listener(
        "127.0.0.1:0",
        "ip_allow = [\"127.0.0.1\"]",
        &rest,
    ));
    assert_eq!(get(&admitted, "/", &[]).status, 200);
    let refused = Sluice::start(&with_listener(
        "127.0.0.1:0",
        "ip_allow = [\"192.0.2.0/24\", \"2001:db8::/32\"]",
        &rest,
    ));
    assert_json_error(&get(&refused, "/", &[]), 403);
    // Deny wins over allow.
    let carved = Sluice::start(&with_listener(
        "127.0.0.1:0",
        "ip_allow = [\"127.0.0.0/8\"]\nip_deny = [\"127.0.0.1/32\"]",
        &rest,
    ));
    assert_json_error(&get(&carved, "/", &[]), 403);
}

#[test]
fn route_lists_apply_to_their_route_only() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&config(&format!(
        "{}{}{}{}{}",
        upstream("app", &[be.addr()], ""),
        route("admin", "/admin/*", "ip_allow = [\"192.0.2.0/24\"]"),
        route("banned", "/banned", "ip_deny = [\"127.0.0.1\"]"),
        route("local", "/local", "ip_allow = [\"127.0.0.0/8\", \"::1\"]"),
        catch_all("app"),
    )));
    let r = get(&sl, "/admin/users", &[]);
    assert_json_error(&r, 403);
    assert_json_error(&get(&sl, "/banned", &[]), 403);
    assert_eq!(
        be.request_count(),
        0,
        "refused requests never reach the backend"
    );
    assert_eq!(get(&sl, "/local", &[]).status, 200);
    assert_eq!(get(&sl, "/other", &[]).status, 200);
    // The connection stays usable after a 403.
    let mut c = Conn::connect(sl.addr());
    assert_eq!(c.get("/banned", &[]).status, 403);
    assert_eq!(c.get("/local", &[]).status, 200);
}

#[test]
fn a_trusted_proxy_names_the_client() {
    let be = Backend::fixed("ok");
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let sl = Sluice::start(&with_listener(
        "127.0.0.1:0",
        "trusted_proxies = [\"127.0.0.0/8\"]",
        &format!(
            "[access_log]\npath = \"{}\"\n\n{}{}{}",
            log.display(),
            upstream("app", &[be.addr()], ""),
            route("partners", "/partners/*", "ip_allow = [\"192.0.2.0/24\"]"),
            catch_all("app"),
        ),
    ));
    let r = get(&sl, "/partners/x", &[("X-Forwarded-For", "192.0.2.7")]);
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    assert_eq!(
        req.header_all("x-forwarded-for").join(", "),
        "192.0.2.7",
        "{}",
        req.head_text()
    );
    // A chain through another trusted hop: the hop is passed over, and dropped from the chain.
    let r = get(
        &sl,
        "/partners/x",
        &[("X-Forwarded-For", "198.51.100.1, 192.0.2.8, 127.0.0.9")],
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        be.last_request().header_all("x-forwarded-for").join(", "),
        "198.51.100.1, 192.0.2.8"
    );
    // A spoofed entry on the left does not help a client on the right.
    let spoofed = get(
        &sl,
        "/partners/x",
        &[("X-Forwarded-For", "192.0.2.7, 203.0.113.9")],
    );
    assert_json_error(&spoofed, 403);
    // No header: the trusted peer itself is the client.
    assert_json_error(&get(&sl, "/partners/x", &[]), 403);
    // Garbage stops the walk at the last address (the trusted peer): refused.
    let garbage = get(
        &sl,
        "/partners/x",
        &[("X-Forwarded-For", "192.0.2.7, not-an-ip")],
    );
    assert_json_error(&garbage, 403);
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 5)
        }),
        "access log: {:?}",
        std::fs::read_to_string(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let first = text.lines().next().unwrap_or("");
    assert!(
        first.contains("\"client\":\"192.0.2.7\""),
        "access log names the resolved client: {first}"
    );
    assert!(text.contains("\"client\":\"203.0.113.9\""), "{text}");
}

#[test]
fn an_untrusted_peer_is_not_believed() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&with_listener(
        "127.0.0.1:0",
        "trusted_proxies = [\"10.0.0.0/8\"]",
        &format!(
            "{}{}{}",
            upstream("app", &[be.addr()], ""),
            route("partners", "/partners/*", "ip_allow = [\"192.0.2.0/24\"]"),
            catch_all("app"),
        ),
    ));
    let r = get(&sl, "/partners/x", &[("X-Forwarded-For", "192.0.2.7")]);
    assert_json_error(&r, 403);
    // Elsewhere the header passes on, with the real peer appended.
    let r = get(&sl, "/x", &[("X-Forwarded-For", "192.0.2.7")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        be.last_request().header_all("x-forwarded-for").join(", "),
        "192.0.2.7, 127.0.0.1"
    );
}

#[test]
fn x_forwarded_for_before_other_fields_stays_one_line() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    let r = get(
        &sl,
        "/",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-After", "1"),
            ("X-Forwarded-For", "203.0.113.8"),
        ],
    );
    assert_eq!(r.status, 200);
    let req = be.last_request();
    assert_eq!(req.header("x-after"), Some("1"), "{}", req.head_text());
    assert_eq!(
        req.header_all("x-forwarded-for").join(", "),
        "203.0.113.7, 203.0.113.8, 127.0.0.1"
    );
}

#[test]
fn ipv6_loopback_listener() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let be = Backend::fixed("ok");
    let rest = format!(
        "{}{}{}",
        upstream("app", &[be.addr()], ""),
        route("v4only", "/v4only", "ip_allow = [\"127.0.0.0/8\"]"),
        catch_all("app")
    );
    let sl = Sluice::start(&with_listener("[::1]:0", "ip_allow = [\"::1/128\"]", &rest));
    assert!(sl.addr().is_ipv6());
    assert_eq!(get(&sl, "/", &[]).status, 200);
    assert_eq!(
        be.last_request().header_all("x-forwarded-for").join(", "),
        "::1"
    );
    assert_json_error(&get(&sl, "/v4only", &[]), 403);
    let denied = Sluice::start(&with_listener("[::1]:0", "ip_deny = [\"::/0\"]", &rest));
    assert_json_error(&get(&denied, "/", &[]), 403);
}

#[test]
fn bad_cidr_is_a_config_error_naming_the_entry() {
    let dir = temp_dir();
    let path = dir.write(
        "bad.toml",
        &with_listener(
            "127.0.0.1:0",
            "ip_deny = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            "[routes.r]\npath = \"/\"\nrespond = { status = 200 }\n",
        ),
    );
    let out = run(
        &["--check", "-c", path.to_str().unwrap_or_default()],
        &[],
        dir.path(),
    );
    assert!(
        out.all().contains("listeners.main.ip_deny[1]"),
        "{}",
        out.all()
    );
}

// ---------------------------------------------------------------- 405

fn respond(name: &str, extra: &str) -> String {
    format!("[routes.{name}]\n{extra}\nrespond = {{ status = 200, body = \"{name}\" }}\n\n")
}

#[test]
fn method_not_allowed_lists_the_methods_of_the_path() {
    let sl = Sluice::start(&config(&format!(
        "{}{}{}",
        respond("read", "path = \"/x\"\nmethods = [\"GET\"]"),
        respond("write", "path = \"/x\"\nmethods = [\"PUT\", \"GET\"]"),
        respond("other", "path = \"/y\"\nmethods = [\"DELETE\"]"),
    )));
    let mut c = Conn::connect(sl.addr());
    let r = c.request("POST", "/x", &[], b"abc");
    assert_json_error(&r, 405);
    assert_eq!(r.header("allow"), Some("GET, PUT"), "{r}");
    // The POST's body was left unread, so that connection closed; carry on on a new one.
    let mut c = Conn::connect(sl.addr());
    // The connection carries on; matching methods still route; unmatched paths are 404.
    assert_eq!(c.request("GET", "/x", &[], b"").body_str(), "read");
    assert_eq!(c.request("PUT", "/x", &[], b"").body_str(), "write");
    let r = c.request("GET", "/nothing", &[], b"");
    assert_json_error(&r, 404);
    assert!(!r.has_header("allow"));
    // The Allow list is worked out on the canonical path, the one routes match: `/./x` and `//x` are `/x`.
    for spelling in ["//x", "/./x", "/%78", "/y/../x"] {
        let r = c.request("DELETE", spelling, &[], b"");
        assert_json_error(&r, 405);
        assert_eq!(r.header("allow"), Some("GET, PUT"), "{spelling}: {r}");
    }
}

#[test]
fn a_catch_all_that_allows_the_method_takes_the_request() {
    let sl = Sluice::start(&config(&format!(
        "{}{}",
        respond("read", "path = \"/x\"\nmethods = [\"GET\"]"),
        respond("posts", "path = \"/*\"\nmethods = [\"POST\"]"),
    )));
    let mut c = Conn::connect(sl.addr());
    assert_eq!(c.request("POST", "/x", &[], b"").body_str(), "posts");
    // Neither takes DELETE: both are offered.
    let r = c.request("DELETE", "/x", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
}

// ---------------------------------------------------------------- CORS

const APP: &str = "https://app.example.com";

fn cors_config(be: &Backend) -> String {
    config(&format!(
        "{}{}{}{}",
        upstream("app", &[be.addr()], ""),
        route(
            "api",
            "/api/*",
            "methods = [\"GET\", \"POST\"]\n\
             cors = { allow_origins = [\"https://app.example.com\"], allow_methods = [\"GET\", \"POST\"], \
             allow_headers = [\"authorization\", \"content-type\"], expose_headers = [\"x-total\"], \
             max_age = \"10m\", allow_credentials = true }",
        ),
        "[routes.public]\npath = \"/public\"\ncors = { allow_origins = [\"*\"] }\n\
         respond = { status = 200, body = \"pub\", headers = { \"x-own\" = \"1\" } }\n\n",
        "[routes.plain]\npath = \"/plain\"\nupstream = \"app\"\n\n",
    ))
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("Origin", origin.to_string()),
        ("Access-Control-Request-Method", method.to_string()),
    ];
    if let Some(v) = headers {
        h.push(("Access-Control-Request-Headers", v.to_string()));
    }
    h
}

fn send(c: &mut Conn, method: &str, path: &str, h: &[(&'static str, String)]) -> Response {
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.request(method, path, &h, b"")
}

#[test]
fn preflight_is_answered_at_the_gateway() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&cors_config(&be));
    let mut c = Conn::connect(sl.addr());
    let r = send(
        &mut c,
        "OPTIONS",
        "/api/orders",
        &preflight(APP, "POST", Some("authorization")),
    );
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert!(r.body.is_empty());
    // A disallowed origin: still answered here, but without CORS headers (the browser refuses).
    let r = send(
        &mut c,
        "OPTIONS",
        "/api/orders",
        &preflight("https://evil.example", "POST", None),
    );
    assert_eq!(r.status, 204);
    assert!(!r.has_header("access-control-allow-origin"), "{r}");
    assert!(!r.has_header("access-control-allow-methods"), "{r}");
    assert_eq!(be.request_count(), 0, "preflights never reach the backend");
    // A method no route takes: 405, with what the path allows.
    let r = send(
        &mut c,
        "OPTIONS",
        "/api/orders",
        &preflight(APP, "DELETE", None),
    );
    assert_eq!(r.status, 405, "{r}");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    // A plain OPTIONS (no preflight headers) on a route without CORS is forwarded as usual.
    let r = c.request("OPTIONS", "/plain", &[("Origin", APP)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(be.request_count(), 1);
}

#[test]
fn actual_requests_from_allowed_origins_get_the_headers() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&cors_config(&be));
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/api/orders", &[("Origin", APP)]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{r}");
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-total"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = c.get("/api/orders", &[("Origin", "https://evil.example")]);
    assert_eq!(r.status, 200);
    assert!(!r.has_header("access-control-allow-origin"), "{r}");
    assert_eq!(r.header("vary"), Some("Origin"));
    // Same-origin and non-browser requests carry no CORS headers either.
    let r = c.get("/api/orders", &[]);
    assert!(!r.has_header("access-control-allow-origin"));
    // A direct response: `*` for any origin, next to the route's own headers; requested headers echoed.
    let r = c.get("/public", &[("Origin", "https://x.example")]);
    assert_eq!(r.body_str(), "pub");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r}");
    assert_eq!(r.header("x-own"), Some("1"));
    let r = send(
        &mut c,
        "OPTIONS",
        "/public",
        &preflight("https://x.example", "GET", Some("x-a, x-b")),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-a, x-b"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, PUT, PATCH, POST, DELETE")
    );
}
