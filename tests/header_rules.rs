//! Route header rules on the real binary: `request_headers` / `response_headers` add, set and remove,
//! every template variable (the consumer through an API key route, the client with and without
//! trusted proxies), where rules stand against consumer headers and credential stripping, rules kept
//! off sluice's own replies, the backend's software headers hidden by default (and shown with
//! `hide_backend = false`), and the config errors `--check` reports for bad rules.

mod common;

use common::*;

const ALICE_KEY: &str = "alice-key-0123456789";

const ALICE: &str =
    "[consumers.alice]\napi_keys = [\"alice-key-0123456789\"]\ngroups = [\"gold\", \"beta\"]\n\n";

/// A config with `routes` (TOML tables) over upstream `app` = `be`, the consumer alice, and a
/// catch-all without rules.
fn start(be: &Backend, routes: &str) -> Sluice {
    Sluice::start(&config(&format!(
        "{ALICE}{routes}\n{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )))
}

#[test]
fn request_rules_add_set_and_remove() {
    let be = Backend::fixed("ok");
    let sl = start(
        &be,
        r#"[routes.api]
path = "/api/*"
upstream = "app"
request_headers = { add = { "X-Tenant" = "t-{consumer}", "X-Extra" = "from-rule" }, set = { "X-Route" = "{route}" }, remove = ["X-Debug"] }
"#,
    );
    let r = Conn::connect(sl.addr()).get(
        "/api/items",
        &[
            ("X-Route", "spoofed"),
            ("x-route", "spoofed-again"),
            ("X-Debug", "1"),
            ("X-Debug", "2"),
            ("X-Extra", "from-client"),
            ("X-Kept", "yes"),
        ],
    );
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    let head = req.head_text();
    assert_eq!(
        req.header_all("x-route"),
        vec!["api"],
        "set replaces every received one:\n{head}"
    );
    assert!(
        !req.has_header("x-debug"),
        "remove drops every one:\n{head}"
    );
    assert_eq!(
        req.header_all("x-extra"),
        vec!["from-client", "from-rule"],
        "add appends beside the received one:\n{head}"
    );
    // No consumer on this route: `t-{consumer}` still has its literal part.
    assert_eq!(req.header("x-tenant"), Some("t-"), "{head}");
    assert_eq!(req.header("x-kept"), Some("yes"), "{head}");

    // A route without rules passes the same headers untouched.
    Conn::connect(sl.addr()).get("/other", &[("X-Route", "mine"), ("X-Debug", "1")]);
    let req = be.last_request();
    assert_eq!(req.header_all("x-route"), vec!["mine"]);
    assert_eq!(req.header("x-debug"), Some("1"));
}

#[test]
fn a_value_that_renders_empty_is_not_sent() {
    let be = Backend::fixed("ok");
    let sl = start(
        &be,
        r#"[routes.api]
path = "/api/*"
upstream = "app"
request_headers = { set = { "X-Tenant" = "{consumer}" } }
"#,
    );
    Conn::connect(sl.addr()).get("/api/x", &[("X-Tenant", "forged")]);
    let req = be.last_request();
    assert!(
        !req.has_header("x-tenant"),
        "no consumer: the client's value is replaced by nothing:\n{}",
        req.head_text()
    );
}

/// One `set` per template variable, each into its own header, plus literal braces.
const EVERY_VAR: &str = r#"request_headers = { set = { "X-V-Consumer" = "{consumer}", "X-V-Groups" = "{consumer_groups}", "X-V-Route" = "{route}", "X-V-Client" = "{client}", "X-V-Id" = "{request_id}", "X-V-Host" = "{host}", "X-V-Method" = "{method}", "X-V-Path" = "{path}", "X-V-Braces" = "{{consumer}}={consumer}" } }
response_headers = { set = { "X-R-Consumer" = "{consumer}", "X-R-Client" = "{client}", "X-R-Id" = "{request_id}", "X-R-Path" = "{path}" } }"#;

#[test]
fn every_template_variable_on_both_sides() {
    let be = Backend::fixed("ok");
    let sl = start(
        &be,
        &format!(
            "[routes.keyed]\npath = \"/keyed/*\"\nupstream = \"app\"\nauth = [\"api_key\"]\n{EVERY_VAR}\n"
        ),
    );
    let mut c = Conn::connect(sl.addr());
    let r = c.request(
        "POST",
        "/keyed/./a//b?q=1",
        &[("Host", "shop.example:8080"), ("X-API-Key", ALICE_KEY)],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    let head = req.head_text();
    let id = r.header("x-request-id").expect("request id").to_owned();
    for (name, want) in [
        ("x-v-consumer", "alice"),
        ("x-v-groups", "gold,beta"),
        ("x-v-route", "keyed"),
        ("x-v-client", "127.0.0.1"),
        ("x-v-id", id.as_str()),
        ("x-v-host", "shop.example:8080"),
        ("x-v-method", "POST"),
        ("x-v-path", "/keyed/a/b"),
        ("x-v-braces", "{consumer}=alice"),
    ] {
        assert_eq!(req.header_all(name), vec![want], "{name}:\n{head}");
    }
    assert_eq!(req.header("x-request-id"), Some(id.as_str()), "{head}");
    for (name, want) in [
        ("x-r-consumer", "alice"),
        ("x-r-client", "127.0.0.1"),
        ("x-r-id", id.as_str()),
        ("x-r-path", "/keyed/a/b"),
    ] {
        assert_eq!(r.header_all(name), vec![want], "{name}:\n{r}");
    }
}

#[test]
fn client_is_the_address_trusted_proxies_decide() {
    let be = Backend::fixed("ok");
    let rest = format!(
        "[routes.api]\npath = \"/*\"\nupstream = \"app\"\nrequest_headers = {{ set = {{ \"X-Client\" = \"{{client}}\" }} }}\n\n{}",
        upstream("app", &[be.addr()], "")
    );
    let listener = |extra: &str| {
        format!("{DEFAULT_TOP}\n\n[listeners.main]\nlisten = \"127.0.0.1:0\"\n{extra}\n\n{rest}\n")
    };
    let xff = [("X-Forwarded-For", "198.51.100.4, 203.0.113.9")];

    let direct = Sluice::start(&listener(""));
    Conn::connect(direct.addr()).get("/", &xff);
    assert_eq!(
        be.last_request().header("x-client"),
        Some("127.0.0.1"),
        "an untrusted peer is the client, whatever it forwards"
    );

    let proxied = Sluice::start(&listener("trusted_proxies = [\"127.0.0.0/8\"]"));
    Conn::connect(proxied.addr()).get("/", &xff);
    assert_eq!(
        be.last_request().header("x-client"),
        Some("203.0.113.9"),
        "behind a trusted proxy, the client its X-Forwarded-For names"
    );
}

#[test]
fn rules_run_after_consumer_headers_and_credential_stripping() {
    let be = Backend::fixed("ok");
    let sl = start(
        &be,
        r#"[routes.keyed]
path = "/keyed/*"
upstream = "app"
auth = ["api_key"]
request_headers = { set = { "Authorization" = "Bearer service-token" }, add = { "X-Who" = "{consumer}" } }
"#,
    );
    let r = Conn::connect(sl.addr()).get(
        "/keyed/x",
        &[
            ("X-API-Key", ALICE_KEY),
            ("Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Consumer-Id", "mallory"),
        ],
    );
    assert_eq!(r.status, 200, "{r}");
    let req = be.last_request();
    let head = req.head_text();
    assert!(
        !req.has_header("x-api-key"),
        "the key that authenticated stays stripped:\n{head}"
    );
    assert_eq!(
        req.header_all("authorization"),
        vec!["Bearer service-token"],
        "a rule may give the backend a credential of the gateway's own:\n{head}"
    );
    assert_eq!(req.header_all("x-consumer-id"), vec!["alice"], "{head}");
    assert_eq!(req.header("x-who"), Some("alice"), "{head}");
}

#[test]
fn response_rules_add_set_and_remove_but_not_on_sluices_own_replies() {
    let be = Backend::start(|_| {
        Reply::ok("ok")
            .header("X-Internal", "secret")
            .header("x-internal", "secret2")
            .header("Cache-Control", "public, max-age=600")
            .header("X-Served-By", "backend-7")
    });
    let sl = start(
        &be,
        r#"[routes.api]
path = "/api/*"
upstream = "app"
response_headers = { add = { "X-Served-By" = "sluice" }, set = { "Cache-Control" = "no-store", "X-Route" = "{route}" }, remove = ["X-Internal"] }

[routes.keyed]
path = "/keyed/*"
upstream = "app"
auth = ["api_key"]
response_headers = { add = { "X-Served-By" = "sluice" } }
"#,
    );
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/api/x", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert!(!r.has_header("x-internal"), "{r}");
    assert_eq!(r.header_all("cache-control"), vec!["no-store"], "{r}");
    assert_eq!(
        r.header_all("x-served-by"),
        vec!["backend-7", "sluice"],
        "{r}"
    );
    assert_eq!(r.header("x-route"), Some("api"), "{r}");
    assert_eq!(r.body_str(), "ok");
    // The connection goes on: the rewritten head framed the body right.
    assert_eq!(c.get("/api/y", &[]).status, 200);

    // sluice's own reply (a 401 here) gets no rules, as nginx's add_header without `always`.
    let r = c.get("/keyed/x", &[]);
    assert_json_error(&r, 401);
    assert!(!r.has_header("x-served-by"), "{r}");
    let r = c.get("/keyed/x", &[("X-API-Key", ALICE_KEY)]);
    assert_eq!(
        r.header_all("x-served-by"),
        vec!["backend-7", "sluice"],
        "{r}"
    );
}

const FINGERPRINTS: [(&str, &str); 6] = [
    ("Server", "Apache/2.4.58 (Ubuntu)"),
    ("X-Powered-By", "PHP/8.2.1"),
    ("X-AspNet-Version", "4.0.30319"),
    ("X-AspNetMvc-Version", "5.2"),
    ("X-Runtime", "0.012"),
    ("X-Backend-Server", "app-3.internal"),
];

fn telling_backend() -> Backend {
    Backend::start(|_| {
        let mut r = Reply::ok("ok").header("Via", "1.1 varnish");
        for (k, v) in FINGERPRINTS {
            r = r.header(k, v);
        }
        r
    })
}

#[test]
fn backend_software_headers_are_hidden_by_default() {
    let be = telling_backend();
    let sl = start(&be, "");
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/", &[]);
    assert_eq!(r.status, 200, "{r}");
    for (k, _) in FINGERPRINTS {
        assert!(!r.has_header(k), "{k} leaked:\n{r}");
    }
    // sluice sends no Server header of its own either, as before.
    assert!(!r.has_header("server"), "{r}");
    assert_eq!(
        r.header("via"),
        Some("1.1 varnish"),
        "Via is protocol information:\n{r}"
    );
    assert_eq!(c.get("/", &[]).status, 200);
}

#[test]
fn hide_backend_false_passes_them_and_remove_extends_the_list() {
    let be = telling_backend();
    let sl = start(
        &be,
        r#"[routes.open]
path = "/open"
upstream = "app"
hide_backend = false

[routes.stricter]
path = "/stricter"
upstream = "app"
response_headers = { remove = ["Via"] }
"#,
    );
    let r = Conn::connect(sl.addr()).get("/open", &[]);
    for (k, v) in FINGERPRINTS {
        assert_eq!(r.header(k), Some(v), "{k}:\n{r}");
    }
    let r = Conn::connect(sl.addr()).get("/stricter", &[]);
    assert!(!r.has_header("via") && !r.has_header("server"), "{r}");
}

#[test]
fn bad_rules_are_config_errors_naming_the_route_and_key() {
    let dir = temp_dir();
    for (rules, key, says) in [
        (
            r#"request_headers = { set = { "X-A" = "{tenant}" } }"#,
            "routes.r.request_headers.set.X-A",
            "unknown variable {tenant}",
        ),
        (
            r#"response_headers = { add = { "X-A" = "{consumer" } }"#,
            "routes.r.response_headers.add.X-A",
            "not closed",
        ),
        (
            r#"request_headers = { add = { "X-A" = "a}b" } }"#,
            "routes.r.request_headers.add.X-A",
            "'}' without '{'",
        ),
        (
            r#"request_headers = { set = { "X-A" = "a\r\nX-Injected: 1" } }"#,
            "routes.r.request_headers.set.X-A",
            "control characters",
        ),
        (
            r#"response_headers = { add = { "X-A" = "nul\u0000" } }"#,
            "routes.r.response_headers.add.X-A",
            "control characters",
        ),
        (
            r#"request_headers = { add = { "X Bad" = "1" } }"#,
            "routes.r.request_headers.add.X Bad",
            "expected a header name",
        ),
        (
            r#"request_headers = { set = { "Content-Length" = "5" } }"#,
            "routes.r.request_headers.set.Content-Length",
            "framing",
        ),
        (
            r#"response_headers = { add = { "Transfer-Encoding" = "chunked" } }"#,
            "routes.r.response_headers.add.Transfer-Encoding",
            "framing",
        ),
        (
            r#"request_headers = { remove = ["Connection"] }"#,
            "routes.r.request_headers.remove[0]",
            "framing",
        ),
        (
            r#"request_headers = { set = { "Upgrade" = "websocket" } }"#,
            "routes.r.request_headers.set.Upgrade",
            "framing",
        ),
        (
            r#"request_headers = { add = { "Host" = "evil" } }"#,
            "routes.r.request_headers.add.Host",
            "host_rewrite",
        ),
        (
            r#"request_headers = { set = { "X-Consumer-Id" = "admin" } }"#,
            "routes.r.request_headers.set.X-Consumer-Id",
            "names the consumer",
        ),
        (
            r#"response_headers = { set = { "X-Request-Id" = "1" } }"#,
            "routes.r.response_headers.set.X-Request-Id",
            "sluice itself",
        ),
        (
            r#"request_headers = { set = { "X-A" = "1" }, remove = ["x-a"] }"#,
            "routes.r.request_headers.remove[0]",
            "named twice",
        ),
        (
            r#"request_headers = { replace = { "X-A" = "1" } }"#,
            "replace",
            "unknown field",
        ),
    ] {
        let toml = config(&format!(
            "{}[routes.r]\npath = \"/*\"\nupstream = \"app\"\n{rules}\n",
            upstream("app", &["127.0.0.1:9".parse().expect("addr")], "")
        ));
        let path = dir.write("bad.toml", &toml);
        let out = run(
            &["--check", "-c", path.to_str().expect("utf-8")],
            &[],
            dir.path(),
        );
        assert!(!out.status.success(), "{rules} was accepted");
        let all = out.all();
        assert!(
            all.contains(key) && all.contains(says),
            "{rules}: wanted {key:?} and {says:?} in:\n{all}"
        );
    }
    // On a direct response there is nothing for the rules to act on.
    let toml = config(
        "[routes.r]\npath = \"/*\"\nrespond = { status = 200 }\nresponse_headers = { add = { \"X-A\" = \"1\" } }\n",
    );
    let path = dir.write("bad.toml", &toml);
    let out = run(
        &["--check", "-c", path.to_str().expect("utf-8")],
        &[],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        out.all().contains("routes.r.response_headers"),
        "{}",
        out.all()
    );
}
