//! Routing: host precedence, path precedence, methods, header and query
//! matchers, path rewriting, respond routes, 404, traffic splits.

mod common;

use common::*;

fn respond(name: &str, extra: &str) -> String {
    format!("[routes.{name}]\n{extra}\nrespond = {{ status = 200, body = \"{name}\" }}\n\n")
}

/// Respond-only routes; each answers with its own name.
fn matching_config() -> String {
    let mut t = String::new();
    t += &respond("any_host", "path = \"/*\"\nhost = \"*\"");
    t += &respond("wild", "host = \"*.example.com\"\npath = \"/*\"");
    t += &respond("exact_host", "host = \"api.example.com\"\npath = \"/*\"");
    t += &respond("wild_deep", "host = \"*.deep.example.com\"\npath = \"/*\"");
    t += &respond("prefix", "path = \"/users/*\"");
    t += &respond("param", "path = \"/users/{id}\"");
    t += &respond("literal", "path = \"/users/me\"");
    t += &respond("exact", "path = \"/exact\"");
    t += &respond("m_get", "path = \"/m\"\nmethods = [\"GET\"]");
    t += &respond("m_write", "path = \"/m\"\nmethods = [\"POST\", \"PUT\"]");
    t += &respond("h_plain", "path = \"/h\"");
    t += &respond(
        "h_canary",
        "path = \"/h\"\nmatch_headers = { \"x-canary\" = \"1\" }",
    );
    t += &respond(
        "h_flag",
        "path = \"/h\"\nmatch_headers = { \"x-flag\" = \"*\" }",
    );
    t += &respond("q_plain", "path = \"/q\"");
    t += &respond(
        "q_debug",
        "path = \"/q\"\nmatch_query = { \"debug\" = \"true\" }",
    );
    config(&t)
}

/// Host-less test config: `any_host` is not there, so unmatched paths 404.
fn paths_only_config() -> String {
    let full = matching_config();
    full.replace("path = \"/*\"\nhost = \"*\"", "path = \"/any-host-only\"")
}

fn route_of(sl: &Sluice, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut c = Conn::connect(sl.addr());
    let r = c.request(method, path, headers, b"");
    (r.status, r.body_str())
}

fn hits(sl: &Sluice, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, body) = route_of(sl, "GET", path, headers);
    assert_eq!(status, 200, "GET {path} {headers:?} -> {status} {body}");
    body
}

#[test]
fn host_exact_beats_wildcard_beats_any() {
    let sl = Sluice::start(&matching_config());
    assert_eq!(
        hits(&sl, "/x", &[("Host", "api.example.com")]),
        "exact_host"
    );
    assert_eq!(hits(&sl, "/x", &[("Host", "www.example.com")]), "wild");
    assert_eq!(
        hits(&sl, "/x", &[("Host", "a.deep.example.com")]),
        "wild_deep",
        "longest wildcard wins"
    );
    assert_eq!(hits(&sl, "/x", &[("Host", "other.org")]), "any_host");
    // Host beats path: a host route wins even where an any-host route has a more specific path.
    assert_eq!(
        hits(&sl, "/users/me", &[("Host", "api.example.com")]),
        "exact_host"
    );
    assert_eq!(hits(&sl, "/users/me", &[("Host", "other.org")]), "literal");
}

#[test]
fn host_match_ignores_case_and_port() {
    let sl = Sluice::start(&matching_config());
    assert_eq!(
        hits(&sl, "/x", &[("Host", "API.Example.COM")]),
        "exact_host"
    );
    assert_eq!(
        hits(&sl, "/x", &[("Host", "api.example.com:8080")]),
        "exact_host"
    );
    assert_eq!(hits(&sl, "/x", &[("Host", "www.example.com:8080")]), "wild");
}

#[test]
fn path_literal_beats_param_beats_prefix() {
    let sl = Sluice::start(&paths_only_config());
    assert_eq!(hits(&sl, "/users/me", &[]), "literal");
    assert_eq!(hits(&sl, "/users/42", &[]), "param");
    assert_eq!(hits(&sl, "/users/42/posts", &[]), "prefix");
    assert_eq!(
        hits(&sl, "/users/42?x=1", &[]),
        "param",
        "the query is not part of the path"
    );
    assert_eq!(hits(&sl, "/exact", &[]), "exact");
    let (status, _) = route_of(&sl, "GET", "/exact/more", &[]);
    assert_eq!(status, 404, "an exact path must not match as a prefix");
    let (status, _) = route_of(&sl, "GET", "/exactly", &[]);
    assert_eq!(status, 404);
}

#[test]
fn methods_select_routes() {
    let sl = Sluice::start(&paths_only_config());
    assert_eq!(route_of(&sl, "GET", "/m", &[]), (200, "m_get".into()));
    assert_eq!(route_of(&sl, "POST", "/m", &[]), (200, "m_write".into()));
    assert_eq!(route_of(&sl, "PUT", "/m", &[]), (200, "m_write".into()));
    // Routes match the path but none takes the method: 405 (issue #11), see tests/access_rules.rs.
    assert_eq!(route_of(&sl, "DELETE", "/m", &[]).0, 405);
}

#[test]
fn match_headers_prefer_more_specific_route() {
    let sl = Sluice::start(&paths_only_config());
    assert_eq!(hits(&sl, "/h", &[]), "h_plain");
    assert_eq!(
        hits(&sl, "/h", &[("X-Canary", "1")]),
        "h_canary",
        "more matchers win over config order"
    );
    assert_eq!(hits(&sl, "/h", &[("X-Canary", "2")]), "h_plain");
    assert_eq!(
        hits(&sl, "/h", &[("X-Flag", "anything")]),
        "h_flag",
        "\"*\" means present"
    );
    assert_eq!(
        hits(&sl, "/h", &[("X-Flag", "")]),
        "h_flag",
        "\"*\" means present, even empty"
    );
    assert_eq!(
        hits(&sl, "/h", &[("X-Flag", "y"), ("X-Canary", "1")]),
        "h_canary",
        "equal matcher count: config order"
    );
}

#[test]
fn match_query_selects_route() {
    let sl = Sluice::start(&paths_only_config());
    assert_eq!(hits(&sl, "/q", &[]), "q_plain");
    assert_eq!(hits(&sl, "/q?debug=true", &[]), "q_debug");
    assert_eq!(hits(&sl, "/q?x=1&debug=true&y=2", &[]), "q_debug");
    assert_eq!(hits(&sl, "/q?debug=false", &[]), "q_plain");
    assert_eq!(hits(&sl, "/q?nodebug=true", &[]), "q_plain");
}

#[test]
fn no_route_is_json_404() {
    let sl = Sluice::start(&paths_only_config());
    let r = http_get(sl.addr(), "/nowhere", &[]);
    assert_json_error(&r, 404);
    assert!(r.has_header("x-request-id"), "{r}");
}

#[test]
fn respond_route_with_status_and_headers() {
    let sl = Sluice::start(&config(
        "[routes.made]\npath = \"/made\"\n\
         respond = { status = 201, body = \"made it\\n\", headers = { \"content-type\" = \"text/plain\", \"x-from\" = \"sluice\" } }\n",
    ));
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/made", &[]);
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.body, b"made it\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-from"), Some("sluice"));
    let r = c.request("HEAD", "/made", &[], b"");
    assert_eq!(r.status, 201);
    assert!(r.body.is_empty());
    assert_eq!(
        c.get("/made", &[]).body,
        b"made it\n",
        "connection in sync after HEAD"
    );
}

fn rewrite_setup() -> (Backend, Sluice) {
    let be = Backend::start(|r| Reply::ok(r.path.clone()));
    let sl = Sluice::start(&config(&format!(
        "{}\
         [routes.strip]\npath = \"/api/*\"\nupstream = \"app\"\nstrip_prefix = \"/api\"\n\n\
         [routes.param]\npath = \"/u/{{id}}\"\nupstream = \"app\"\nrewrite_path = \"/v2/users/{{id}}\"\n\n\
         [routes.tail]\npath = \"/files/*\"\nupstream = \"app\"\nrewrite_path = \"/storage/{{*}}\"\n\n\
         [routes.two]\npath = \"/org/{{org}}/repo/{{repo}}\"\nupstream = \"app\"\nrewrite_path = \"/r/{{repo}}/o/{{org}}\"\n\n",
        upstream("app", &[be.addr()], "")
    )));
    (be, sl)
}

#[test]
fn strip_prefix_keeps_rest_and_query() {
    let (be, sl) = rewrite_setup();
    assert_eq!(hits(&sl, "/api/users/7?x=1", &[]), "/users/7?x=1");
    assert_eq!(be.last_request().path, "/users/7?x=1");
}

#[test]
fn rewrite_path_substitutes_params() {
    let (be, sl) = rewrite_setup();
    assert_eq!(hits(&sl, "/u/42", &[]), "/v2/users/42");
    assert_eq!(hits(&sl, "/org/acme/repo/tools", &[]), "/r/tools/o/acme");
    assert_eq!(
        hits(&sl, "/u/42?full=1", &[]),
        "/v2/users/42?full=1",
        "the query survives a rewrite"
    );
    assert_eq!(be.request_count(), 3);
}

#[test]
fn rewrite_path_substitutes_tail() {
    let (_be, sl) = rewrite_setup();
    assert_eq!(hits(&sl, "/files/a/b/c.txt", &[]), "/storage/a/b/c.txt");
}

fn split_setup() -> (Backend, Backend, Sluice) {
    let blue = Backend::fixed("blue");
    let green = Backend::fixed("green");
    let sl = Sluice::start(&config(&format!(
        "{}{}[routes.split]\npath = \"/*\"\n\
         split = [ {{ upstream = \"green\", header = \"x-canary\", value = \"1\" }}, \
                   {{ upstream = \"blue\", weight = 90 }}, {{ upstream = \"green\", weight = 10 }} ]\n",
        upstream("blue", &[blue.addr()], ""),
        upstream("green", &[green.addr()], "")
    )));
    (blue, green, sl)
}

#[test]
fn weighted_split_90_10() {
    let (blue, green, sl) = split_setup();
    let mut c = Conn::connect(sl.addr());
    let mut n_green = 0;
    for i in 0..1000 {
        let r = c.get(&format!("/s{i}"), &[]);
        assert_eq!(r.status, 200, "request {i}: {r}");
        if r.body == b"green" {
            n_green += 1;
        }
    }
    assert_eq!(blue.request_count() + green.request_count(), 1000);
    assert!(
        (60..=140).contains(&n_green),
        "expected ~100 of 1000 on green (10%), got {n_green}"
    );
}

#[test]
fn header_split_overrides_weights() {
    let (_blue, green, sl) = split_setup();
    let mut c = Conn::connect(sl.addr());
    for i in 0..30 {
        let r = c.get(&format!("/c{i}"), &[("X-Canary", "1")]);
        assert_eq!(
            r.body_str(),
            "green",
            "x-canary: 1 must always go to green (request {i})"
        );
    }
    assert_eq!(green.request_count(), 30);
    let mut blue_seen = 0;
    for i in 0..30 {
        if c.get(&format!("/n{i}"), &[("X-Canary", "0")]).body == b"blue" {
            blue_seen += 1;
        }
    }
    assert!(
        blue_seen >= 20,
        "x-canary: 0 falls back to the weights (90% blue); blue got {blue_seen}/30"
    );
}
