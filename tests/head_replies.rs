//! Answers sluice writes itself to a HEAD request (RFC 9110 §9.3.2): the head, with the Content-Length
//! the same GET would get, and no body, so the next response on the keep-alive connection parses.
//! Raw TCP: a body after a HEAD reply would be read as the start of the next response.

mod common;

use common::*;

fn start(be: &Backend) -> Sluice {
    Sluice::start(&config(&format!(
        r#"[consumers.alice]
api_keys = ["alice-key-0123456789"]

[routes.secret]
path = "/secret/*"
upstream = "app"
auth = ["api_key"]

[routes.post_only]
path = "/post-only"
methods = ["POST"]
upstream = "app"

[routes.down]
path = "/down"
upstream = "gone"

[routes.hello]
path = "/hello"
respond = {{ status = 200, body = "hello\n" }}

{}{}"#,
        upstream("app", &[be.addr()], ""),
        upstream("gone", &[refused_addr()], "retries = 0"),
    )))
}

fn head(path: &str) -> Vec<u8> {
    build_request("HEAD", path, &[], b"")
}

#[test]
fn head_errors_carry_no_body_and_keep_the_connection_in_step() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    for (path, status) in [
        ("/nope", 404),
        ("/secret/x", 401),
        ("/post-only", 405),
        ("/down", 502),
    ] {
        c.send(&head(path));
        let h = c
            .read_response_to("HEAD")
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        assert_eq!(h.status, status, "HEAD {path}:\n{h}");
        let len: usize = h
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("HEAD {path} needs the GET's Content-Length:\n{h}"));
        // The same request as a GET on the same connection: it must parse (no stray body before it),
        // and its body is as long as the HEAD said (request ids are all 32 hex digits).
        let g = c.get(path, &[]);
        assert_json_error(&g, status);
        assert_eq!(
            g.body.len(),
            len,
            "GET {path} vs the HEAD's Content-Length:\n{g}"
        );
        if status == 401 {
            assert!(h.has_header("www-authenticate"), "{h}");
        }
        if status == 405 {
            assert_eq!(h.header("allow"), Some("POST"), "{h}");
        }
    }
    // Nothing was left on the wire.
    assert_eq!(c.get("/hello", &[]).body_str(), "hello\n");
}

#[test]
fn pipelined_head_errors_do_not_desynchronise_the_client() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    let mut burst = head("/nope");
    burst.extend(head("/secret/x"));
    burst.extend(head("/hello"));
    burst.extend(build_request("GET", "/hello", &[], b""));
    c.send(&burst);
    for (want, method) in [(404, "HEAD"), (401, "HEAD"), (200, "HEAD"), (200, "GET")] {
        let r = c
            .read_response_to(method)
            .unwrap_or_else(|e| panic!("{method} reply {want}: {e}"));
        assert_eq!(r.status, want, "{r}");
    }
    assert!(c.leftover().is_empty(), "stray bytes: {:?}", c.leftover());
    assert!(!c.closed_within(std::time::Duration::from_millis(200)));
}
