//! Paths normalised before matching (issue 11, item 2), on the real binary: however a client spells
//! `/admin/x` (escapes of either case, dot segments, repeated slashes), it reaches the `/admin/*`
//! route and never the catch-all beside it; encoded slashes and NULs get 400 unless the route allows
//! them; bad Host values get 400; and the backend receives the canonical path, or the received one
//! on an `as_received` route. Every assertion is on what crossed the wire: the client's status and
//! body, and the request line the backend read.

mod common;

use common::*;

/// Two backends that answer with their own name, and sluice in front of them.
struct Setup {
    admin: Backend,
    app: Backend,
    sl: Sluice,
}

/// `/admin/*` to the admin backend; `/files/*` (encoded slashes allowed), `/raw/*` (path forwarded
/// as received) and the catch-all `/*` to the app backend. `http` is extra `[http]` keys.
fn setup(http: &str) -> Setup {
    let admin = Backend::fixed("admin");
    let app = Backend::fixed("app");
    let sl = Sluice::start(&config(&format!(
        "[http]\n{http}\n\n{}{}\
         [routes.admin]\npath = \"/admin/*\"\nupstream = \"admin\"\n\n\
         [routes.files]\npath = \"/files/*\"\nupstream = \"app\"\nallow_encoded_slash = true\n\n\
         [routes.raw]\npath = \"/raw/*\"\nupstream = \"app\"\nforward_path = \"as_received\"\n\n\
         [routes.all]\npath = \"/*\"\nupstream = \"app\"\n",
        upstream("admin", &[admin.addr()], ""),
        upstream("app", &[app.addr()], ""),
    )));
    Setup { admin, app, sl }
}

/// GET `target` on a fresh connection: (status, body).
fn get(sl: &Sluice, target: &str, headers: &[(&str, &str)]) -> Response {
    Conn::connect(sl.addr()).get(target, headers)
}

#[test]
fn every_spelling_of_admin_reaches_the_admin_route() {
    let s = setup("");
    for (target, canonical) in [
        ("/admin/x", "/admin/x"),
        ("/%61dmin/x", "/admin/x"),
        ("/%41dmin/x", "/Admin/x"), // decoded, and paths stay case-sensitive: not admin
        ("/./admin/x", "/admin/x"),
        ("/x/../admin/x", "/admin/x"),
        ("/%2e%2e/admin", "/admin"),
        ("/%2E%2e/admin", "/admin"),
        ("/../../admin/x", "/admin/x"),
        ("//admin/x", "/admin/x"),
        ("/admin//x", "/admin/x"),
        ("/%2e/admin/.%2E/admin/%78", "/admin/x"),
    ] {
        let r = get(&s.sl, target, &[]);
        assert_eq!(r.status, 200, "{target}: {r}");
        let want = if canonical.starts_with("/admin") {
            "admin"
        } else {
            "app"
        };
        assert_eq!(r.body_str(), want, "{target}");
        let be = if want == "admin" { &s.admin } else { &s.app };
        assert_eq!(be.last_request().path, canonical, "{target}");
    }
    // The query is not part of the path: it goes through untouched.
    let r = get(&s.sl, "/x/../admin/x?a=%2e%2e&b=//", &[]);
    assert_eq!(r.body_str(), "admin");
    assert_eq!(s.admin.last_request().path, "/admin/x?a=%2e%2e&b=//");
    assert_eq!(
        s.app
            .requests()
            .iter()
            .filter(|r| r.path.contains("dmin"))
            .count(),
        1,
        "only /Admin/x may reach the catch-all"
    );
}

#[test]
fn without_merge_slashes_a_double_slash_is_not_admin() {
    let s = setup("merge_slashes = false");
    let r = get(&s.sl, "//admin/x", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "app"), "{r}");
    assert_eq!(s.app.last_request().path, "//admin/x");
    // Everything else is still normalised.
    let r = get(&s.sl, "/x/../%61dmin/x", &[]);
    assert_eq!(r.body_str(), "admin");
    assert_eq!(s.admin.last_request().path, "/admin/x");
    assert_eq!(s.admin.request_count(), 1);
}

#[test]
fn encoded_slash_and_nul_are_refused_unless_the_route_allows_them() {
    let s = setup("");
    let mut c = Conn::connect(s.sl.addr());
    for target in [
        "/admin%2fx",
        "/admin%2Fx",
        "/admin/a%2fb",
        "/admin/%00",
        "/files/%00",
        "/admin/%zz",
        "/admin/%2",
    ] {
        let r = c.get(target, &[]);
        assert_json_error(&r, 400);
        // A refused path leaves the framing intact: the connection carries on.
        assert!(!r.says_close(), "{target}: {r}");
    }
    assert_eq!(s.admin.request_count() + s.app.request_count(), 0);
    // The route that allows it gets the slash still encoded, in the canonical spelling.
    let r = c.get("/files/a%2fb/c", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "app"), "{r}");
    assert_eq!(s.app.last_request().path, "/files/a%2Fb/c");
    // An encoded slash is not a separator: it cannot climb out of its segment.
    let r = c.get("/files/..%2f..%2fadmin/x", &[]);
    assert_eq!(r.body_str(), "app");
    assert_eq!(s.app.last_request().path, "/files/..%2F..%2Fadmin/x");
    assert_eq!(s.admin.request_count(), 0);
}

#[test]
fn hosts_that_are_not_uri_hosts_get_400() {
    let s = setup("");
    for host in ["exa mple", "a:99999", "[::1", "a/b", "a@b", ":80"] {
        let r = get(&s.sl, "/admin/x", &[("Host", host)]);
        assert_json_error(&r, 400);
    }
    let mut c = Conn::connect(s.sl.addr());
    c.send(b"GET http://a:99999/admin/x HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c
        .read_response()
        .expect("response to an absolute-form target");
    assert_json_error(&r, 400);
    assert_eq!(s.admin.request_count() + s.app.request_count(), 0);
    for host in ["example.com:8080", "[::1]:80", "127.0.0.1", "Example.COM."] {
        let r = get(&s.sl, "/admin/x", &[("Host", host)]);
        assert_eq!((r.status, r.body_str().as_str()), (200, "admin"), "{host}");
    }
}

#[test]
fn backends_get_the_canonical_path_unless_the_route_says_as_received() {
    let s = setup("");
    let r = get(&s.sl, "/%61pp/./b//c/%7e%3a?q=%41", &[]);
    assert_eq!(r.body_str(), "app");
    assert_eq!(s.app.last_request().path, "/app/b/c/~%3A?q=%41");
    let raw = "/raw/%61b/./c//d%3a?q=%41";
    let r = get(&s.sl, raw, &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(s.app.last_request().path, raw);
    // The route was chosen on the canonical path all the same.
    let r = get(&s.sl, "/x/../r%61w/y", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(s.app.last_request().path, "/x/../r%61w/y");
    assert!(s
        .app
        .last_request()
        .raw_head
        .starts_with(b"GET /x/../r%61w/y HTTP/1.1\r\n"));
}
