//! Header handling: hop-by-hop stripping both ways (RFC 9110 §7.6.1),
//! X-Forwarded-*, Host preservation and host_rewrite, X-Request-Id.

mod common;

use common::*;
use std::collections::HashSet;

fn start_with_rewrite(be: &Backend) -> Sluice {
    Sluice::start(&config(&format!(
        "{}[routes.rewritten]\npath = \"/rw/*\"\nupstream = \"app\"\nhost_rewrite = \"internal.example\"\n\n{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )))
}

fn connection_tokens(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn hop_by_hop_request_headers_are_stripped() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    let r = http_get(
        sl.addr(),
        "/",
        &[
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("X-Custom-Hop", "secret-hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "kept"),
        ],
    );
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    let head = req.head_text();
    assert!(
        !req.has_header("x-custom-hop"),
        "header named in Connection must be stripped:\n{head}"
    );
    assert!(
        !req.has_header("keep-alive"),
        "Keep-Alive must be stripped:\n{head}"
    );
    assert!(
        !req.has_header("proxy-connection"),
        "Proxy-Connection must be stripped (RFC 9110 §7.6.1):\n{head}"
    );
    assert_eq!(req.header("x-end-to-end"), Some("kept"), "{head}");
    let conn = connection_tokens(&req.header_all("connection"));
    assert!(
        !conn.iter().any(|t| t == "x-custom-hop"),
        "the client's Connection header must not be forwarded:\n{head}"
    );
}

#[test]
fn hop_by_hop_response_headers_are_stripped() {
    let be = Backend::start(|_| {
        Reply::ok("ok")
            .header("Connection", "X-Backend-Hop")
            .header("X-Backend-Hop", "internal")
            .header("Keep-Alive", "timeout=99")
            .header("X-Backend-Kept", "yes")
    });
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert!(
        !r.has_header("x-backend-hop"),
        "header named in the upstream's Connection must be stripped:\n{r}"
    );
    assert!(
        !r.has_header("keep-alive") || r.header("keep-alive") != Some("timeout=99"),
        "upstream Keep-Alive leaked:\n{r}"
    );
    assert_eq!(r.header("x-backend-kept"), Some("yes"), "{r}");
    let conn = connection_tokens(&r.header_all("connection"));
    assert!(!conn.iter().any(|t| t == "x-backend-hop"), "{r}");
    assert_eq!(
        c.get("/", &[]).status,
        200,
        "client connection still usable"
    );
}

#[test]
fn x_forwarded_for_is_set_and_appended() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    http_get(sl.addr(), "/", &[]);
    let req = be.last_request();
    assert_eq!(
        req.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "{}",
        req.head_text()
    );
    http_get(sl.addr(), "/", &[("X-Forwarded-For", "203.0.113.7")]);
    let req = be.last_request();
    let xff = req.header_all("x-forwarded-for").join(", ");
    assert_eq!(
        xff,
        "203.0.113.7, 127.0.0.1",
        "XFF must be appended to:\n{}",
        req.head_text()
    );
}

#[test]
fn x_forwarded_proto_and_host() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    http_get(sl.addr(), "/", &[("Host", "shop.example.com:8443")]);
    let req = be.last_request();
    assert_eq!(
        req.header("x-forwarded-proto"),
        Some("http"),
        "{}",
        req.head_text()
    );
    assert_eq!(
        req.header("x-forwarded-host"),
        Some("shop.example.com:8443"),
        "{}",
        req.head_text()
    );
}

#[test]
fn host_is_preserved_by_default() {
    let be = Backend::fixed("ok");
    let sl = start_with_rewrite(&be);
    http_get(sl.addr(), "/plain", &[("Host", "www.example.org")]);
    let req = be.last_request();
    assert_eq!(
        req.header_all("host"),
        vec!["www.example.org"],
        "{}",
        req.head_text()
    );
}

#[test]
fn host_rewrite_sets_upstream_host() {
    let be = Backend::fixed("ok");
    let sl = start_with_rewrite(&be);
    let r = http_get(sl.addr(), "/rw/thing", &[("Host", "www.example.org")]);
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    assert_eq!(
        req.header_all("host"),
        vec!["internal.example"],
        "{}",
        req.head_text()
    );
    assert_eq!(
        req.header("x-forwarded-host"),
        Some("www.example.org"),
        "X-Forwarded-Host keeps the client's host:\n{}",
        req.head_text()
    );
}

#[test]
fn request_id_generated_when_absent_and_returned() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let r = http_get(sl.addr(), "/", &[]);
        let sent = be.last_request().header("x-request-id").map(str::to_owned);
        let sent = sent.unwrap_or_else(|| {
            panic!(
                "no X-Request-Id upstream:\n{}",
                be.last_request().head_text()
            )
        });
        assert!(!sent.is_empty());
        assert_eq!(
            r.header("x-request-id"),
            Some(sent.as_str()),
            "response carries the same id:\n{r}"
        );
        ids.insert(sent);
    }
    assert_eq!(ids.len(), 5, "generated ids must differ: {ids:?}");
}

#[test]
fn request_id_kept_when_present() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    let r = http_get(sl.addr(), "/", &[("X-Request-Id", "client-abc-123")]);
    let req = be.last_request();
    assert_eq!(
        req.header_all("x-request-id"),
        vec!["client-abc-123"],
        "{}",
        req.head_text()
    );
    assert_eq!(r.header("x-request-id"), Some("client-abc-123"), "{r}");
}

#[test]
fn request_id_on_error_responses_matches_body() {
    let sl = Sluice::start(&config(
        "[routes.only]\npath = \"/only\"\nrespond = { status = 200, body = \"x\" }\n",
    ));
    let r = http_get(sl.addr(), "/nope", &[("X-Request-Id", "err-id-1")]);
    assert_json_error(&r, 404);
    assert_eq!(
        json_str(&r.body, "request_id").as_deref(),
        Some("err-id-1"),
        "{r}"
    );
}

#[test]
fn respond_route_responses_carry_request_id() {
    let sl = Sluice::start(&config(
        "[routes.only]\npath = \"/only\"\nrespond = { status = 200, body = \"x\" }\n",
    ));
    let r = http_get(sl.addr(), "/only", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{r}"
    );
    let r = http_get(sl.addr(), "/only", &[("X-Request-Id", "mine-1")]);
    assert_eq!(r.header("x-request-id"), Some("mine-1"), "{r}");
}

#[test]
fn absolute_form_target_is_sent_upstream_in_origin_form() {
    // RFC 9112 §3.2.1/§3.2.2: origin-form towards the origin; Host comes from the target.
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    c.send(b"GET http://abs.example/p/q?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    assert_eq!(req.path, "/p/q?x=1", "{}", req.head_text());
    assert_eq!(
        req.header_all("host"),
        vec!["abs.example"],
        "{}",
        req.head_text()
    );
}
