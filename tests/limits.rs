//! Request limits and client timeouts: 431, 414, 413 (global and per
//! route), 408, 400, and the idle keep-alive timeout. Each rejection
//! checks the JSON error body and that the backend saw nothing.

mod common;

use common::client::chunked;
use common::*;
use std::time::{Duration, Instant};

const HTTP: &str = r#"
[http]
header_timeout = "400ms"
body_timeout = "400ms"
idle_timeout = "700ms"
max_header_bytes = "4KiB"
max_headers = 20
max_uri_bytes = "1KiB"
max_body_bytes = "1KiB"
"#;

fn start(be: &Backend) -> Sluice {
    Sluice::start(&config(&format!(
        "{HTTP}\n{}\
         [routes.small]\npath = \"/small\"\nupstream = \"app\"\nmax_body_bytes = 100\n\n{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )))
}

fn rejected(sl: &Sluice, raw: &[u8], status: u16) -> Conn {
    let mut c = Conn::connect(sl.addr());
    let _ = c.try_send(raw);
    let r = c
        .read_response()
        .unwrap_or_else(|e| panic!("expected a {status} response, got error: {e}"));
    assert_json_error(&r, status);
    c
}

#[test]
fn header_bytes_over_limit_is_431() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let big = "a".repeat(5000);
    rejected(
        &sl,
        &build_request("GET", "/", &[("X-Big", &big)], b""),
        431,
    );
    assert_eq!(be.bytes_received(), 0, "backend must see nothing");
    // Just under the limit passes.
    let fine = "a".repeat(2000);
    let r = http_get(sl.addr(), "/", &[("X-Big", &fine)]);
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn header_count_over_limit_is_431() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let names: Vec<String> = (0..30).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    rejected(&sl, &build_request("GET", "/", &many, b""), 431);
    assert_eq!(be.bytes_received(), 0, "backend must see nothing");
    let r = http_get(sl.addr(), "/", &many[..10]);
    assert_eq!(r.status, 200, "11 headers is within max_headers = 20: {r}");
}

#[test]
fn uri_over_limit_is_414() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let long = format!("/{}", "a".repeat(2000));
    rejected(&sl, &build_request("GET", &long, &[], b""), 414);
    assert_eq!(be.bytes_received(), 0, "backend must see nothing");
    let ok = format!("/{}", "a".repeat(500));
    assert_eq!(http_get(sl.addr(), &ok, &[]).status, 200);
}

#[test]
fn content_length_over_global_limit_is_413() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    rejected(
        &sl,
        &build_request("POST", "/upload", &[], &vec![b'x'; 2000]),
        413,
    );
    assert_eq!(
        be.bytes_received(),
        0,
        "a declared-too-large body must not be forwarded"
    );
    let mut c = Conn::connect(sl.addr());
    let r = c.request("POST", "/upload", &[], &vec![b'x'; 1000]);
    assert_eq!(r.status, 200, "1000 bytes is within 1KiB: {r}");
    assert_eq!(be.last_request().body_len(), 1000);
}

#[test]
fn chunked_body_over_global_limit_is_413() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(&chunked(&vec![b'y'; 3000], 500));
    rejected(&sl, &raw, 413);
    assert_eq!(
        be.request_count(),
        0,
        "backend must not get a complete oversized request"
    );
}

#[test]
fn route_max_body_bytes_overrides_global() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    rejected(
        &sl,
        &build_request("POST", "/small", &[], &[b'x'; 200]),
        413,
    );
    assert_eq!(be.request_count(), 0);
    let mut c = Conn::connect(sl.addr());
    assert_eq!(c.request("POST", "/small", &[], &[b'x'; 50]).status, 200);
    let mut c = Conn::connect(sl.addr());
    assert_eq!(
        c.request("POST", "/elsewhere", &[], &[b'x'; 200]).status,
        200,
        "the global limit (1KiB) applies off the /small route"
    );
}

#[test]
fn half_a_head_gets_408_then_close() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    let t = Instant::now();
    c.send(b"GET /slow-client HTTP/1.1\r\nHost: a\r\n");
    let r = c.read_response().expect("a 408 after header_timeout");
    let waited = t.elapsed();
    assert_json_error(&r, 408);
    assert!(
        waited >= Duration::from_millis(300),
        "408 came too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "408 came too late: {waited:?}"
    );
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "connection should close after 408"
    );
    assert_eq!(be.bytes_received(), 0);
}

#[test]
fn stalled_body_gets_408() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    let t = Instant::now();
    c.send(b"POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
    let r = c.read_response().expect("a 408 after body_timeout");
    assert_json_error(&r, 408);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "408 came too late: {:?}",
        t.elapsed()
    );
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "connection should close after 408"
    );
    assert_eq!(be.request_count(), 0);
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    assert_eq!(c.get("/", &[]).status, 200);
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "an idle keep-alive connection should be closed after idle_timeout (700ms)"
    );
}

fn bad_syntax(raw: &[u8]) {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = rejected(&sl, raw, 400);
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "connection should close after 400"
    );
    assert_eq!(be.bytes_received(), 0, "backend must see nothing");
    assert_eq!(
        http_get(sl.addr(), "/", &[]).status,
        200,
        "a valid request on a new connection"
    );
}

#[test]
fn garbage_request_line_is_400() {
    bad_syntax(b"GARBAGE\r\n\r\n");
}

#[test]
fn header_without_colon_is_400() {
    bad_syntax(b"GET / HTTP/1.1\r\nHost a\r\n\r\n");
}

#[test]
fn bad_version_is_400() {
    bad_syntax(b"GET / FOO/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn space_in_target_is_400() {
    bad_syntax(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn body_exactly_at_limit_passes_one_more_is_413() {
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    assert_eq!(
        c.request("POST", "/edge", &[], &[b'e'; 1024]).status,
        200,
        "1024 bytes = 1KiB is allowed"
    );
    rejected(
        &sl,
        &build_request("POST", "/edge", &[], &[b'e'; 1025]),
        413,
    );
}

#[test]
fn trickled_head_still_times_out() {
    // header_timeout bounds the whole head, not the gap between bytes (slowloris).
    let be = Backend::fixed("ok");
    let sl = start(&be);
    let mut c = Conn::connect(sl.addr());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let line = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: abcdefghijklmnopqrstuvwxyz0123456789\r\n";
        for b in line.iter().cycle().take(40) {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(75)); // pacing, ≤3 s in all
        }
    });
    let t = Instant::now();
    let r = c.read_response();
    let took = t.elapsed();
    writer.join().unwrap();
    match r {
        Ok(r) => assert_json_error(&r, 408),
        Err(e) => panic!("expected a 408 for a trickled head, got error after {took:?}: {e}"),
    }
    assert!(
        took < Duration::from_millis(2500),
        "408 should come ~header_timeout (400ms) after the first byte, took {took:?}"
    );
}
