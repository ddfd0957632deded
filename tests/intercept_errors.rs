//! `intercept_errors = true`: an upstream 5xx reaches the client as sluice's own JSON error with the
//! same status and the request id, none of the upstream's headers or body; the body is drained so the
//! upstream connection is reused when it was read whole within the limit (64 KiB, 1 s), else that
//! connection is closed. The client connection goes on either way.

mod common;

use common::*;

fn start(be: &Backend) -> Sluice {
    Sluice::start(&config(&format!(
        "[routes.caught]\npath = \"/caught/*\"\nupstream = \"app\"\nintercept_errors = true\n\
         response_headers = {{ add = {{ \"X-Rule\" = \"1\" }} }}\n\n{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )))
}

/// A backend whose answer depends on the path: `/…/500`, `/…/503-chunked`, `/…/huge`, `/…/404`, else 200.
fn backend() -> Backend {
    Backend::start(|r| {
        let tail = r.path.rsplit('/').next().unwrap_or("");
        match tail {
            "500" => Reply::new(
                500,
                "java.lang.NullPointerException at com.acme.Billing:42\n",
            )
            .header("Content-Type", "text/html")
            .header("X-Debug-Trace", "abc"),
            "503-chunked" => Reply {
                status: 503,
                ..Reply::chunked(&[b"maintenance ", b"on db-primary.internal\n"])
            }
            .header("Retry-After", "5"),
            "huge" => Reply::new(500, vec![b'x'; 1 << 20]),
            "huge-chunked" => {
                let piece = vec![b'y'; 16 * 1024];
                let pieces: Vec<&[u8]> = (0..16).map(|_| &piece[..]).collect();
                Reply {
                    status: 502,
                    ..Reply::chunked(&pieces)
                }
            }
            "404" => Reply::new(404, "not here"),
            _ => Reply::ok("fine"),
        }
    })
}

#[test]
fn off_by_default_the_upstream_5xx_passes() {
    let be = backend();
    let sl = start(&be);
    let r = Conn::connect(sl.addr()).get("/plain/500", &[]);
    assert_eq!(r.status, 500, "{r}");
    assert!(r.body_str().contains("NullPointerException"), "{r}");
    assert_eq!(r.header("x-debug-trace"), Some("abc"));
}

#[test]
fn a_5xx_becomes_sluices_json_error_and_the_upstream_connection_is_reused() {
    let be = backend();
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/caught/500", &[]);
    assert_json_error(&r, 500);
    let id = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.body_str(),
        format!("{{\"error\":\"upstream error\",\"status\":500,\"request_id\":\"{id}\"}}\n")
    );
    assert_eq!(r.header("content-length"), Some(&*r.body.len().to_string()));
    assert!(
        !r.has_header("x-debug-trace"),
        "upstream headers must not pass:\n{r}"
    );
    assert!(
        !r.has_header("x-rule"),
        "sluice's own reply gets no response rules:\n{r}"
    );
    assert_eq!(be.last_request().header("x-request-id"), Some(id));

    // A chunked 503: drained, status kept.
    let r = c.get("/caught/503-chunked", &[]);
    assert_json_error(&r, 503);
    assert!(!r.body_str().contains("db-primary"), "{r}");

    // Not a 5xx: untouched, with the route's rules.
    let r = c.get("/caught/404", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (404, "not here"), "{r}");
    assert_eq!(r.header("x-rule"), Some("1"));
    let r = c.get("/caught/ok", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "fine"), "{r}");

    // HEAD: the head with the JSON's length, no body; the connection stays in step.
    c.send(&build_request("HEAD", "/caught/500", &[], b""));
    let h = c.read_response_to("HEAD").expect("HEAD reply");
    assert_eq!(h.status, 500, "{h}");
    assert!(h.header("content-length").is_some(), "{h}");
    assert_eq!(c.get("/caught/ok", &[]).status, 200);

    assert_eq!(
        be.connections(),
        1,
        "every drained 5xx left the upstream connection reusable"
    );
}

#[test]
fn a_body_over_the_drain_limit_closes_the_upstream_connection_only() {
    let be = backend();
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    for (path, status) in [("/caught/huge", 500), ("/caught/huge-chunked", 502)] {
        let r = c.get(path, &[]);
        assert_json_error(&r, status);
        assert!(r.body.len() < 200, "{r}");
        let before = be.connections();
        // The client connection carries on; the upstream one was not reused.
        let r = c.get("/caught/ok", &[]);
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            be.connections(),
            before + 1,
            "{path}: an undrained body's connection must be closed"
        );
    }
}
