//! Plain proxying: methods, keep-alive, HTTP/1.0 clients, bodiless
//! responses, pipelining, 100-continue, large and chunked bodies, and
//! close-delimited upstream responses.

mod common;

use common::client::{chunked, Framing};
use common::*;
use std::time::Duration;

const BIG: usize = 10_000_000;
const BIG_HTTP: &str = "[http]\nmax_body_bytes = \"32MiB\"\n";

#[test]
fn get_passes_through_with_path_and_query() {
    let be = Backend::fixed("hello");
    let sl = proxy_to(&be);
    let r = http_get(sl.addr(), "/foo/bar?a=1&b=two", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body, b"hello");
    let req = be.last_request();
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/foo/bar?a=1&b=two");
    assert_eq!(req.body_len(), 0);
}

#[test]
fn post_body_passes_through() {
    let be = Backend::start(|r| Reply::new(201, r.body.clone()).header("x-got", &r.method));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let r = c.request(
        "POST",
        "/items",
        &[("Content-Type", "text/plain")],
        b"some body",
    );
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.body, b"some body");
    assert_eq!(r.header("x-got"), Some("POST"));
    let req = be.last_request();
    assert_eq!(req.body, b"some body");
    assert_eq!(req.header("content-type"), Some("text/plain"));
    let r = c.request("PUT", "/items/1", &[], b"put body");
    assert_eq!((r.status, r.body.as_slice()), (201, &b"put body"[..]));
    let r = c.request("DELETE", "/items/1", &[], b"");
    assert_eq!(r.status, 201);
    assert_eq!(be.last_request().method, "DELETE");
}

#[test]
fn client_keep_alive_serves_many_requests_on_one_connection() {
    let be = Backend::start(|r| Reply::ok(r.path.clone()));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    for i in 0..20 {
        let r = c.get(&format!("/k{i}"), &[]);
        assert_eq!(r.status, 200, "request {i}: {r}");
        assert_eq!(r.body_str(), format!("/k{i}"));
        assert!(
            !r.says_close(),
            "keep-alive response {i} should not close: {r}"
        );
    }
    assert_eq!(be.request_count(), 20);
    // Connection: close from the client is honoured.
    let r = c.get("/last", &[("Connection", "close")]);
    assert_eq!(r.status, 200);
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "sluice should close after Connection: close"
    );
}

#[test]
fn http10_client_gets_unchunked_response_and_close() {
    let be = Backend::start(|_| Reply::chunked(&[b"ab", b"cd", b"ef"]));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    c.send(b"GET /old HTTP/1.0\r\nHost: example.com\r\n\r\n");
    let r = c.read_response().expect("response to HTTP/1.0 request");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body, b"abcdef");
    assert_ne!(
        r.framing,
        Framing::Chunked,
        "HTTP/1.0 client must not get chunked: {r}"
    );
    assert!(!r.has_header("transfer-encoding"), "{r}");
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "HTTP/1.0 request without keep-alive: sluice should close the connection"
    );
    assert_eq!(be.last_request().path, "/old");
}

#[test]
fn head_response_has_no_body_and_connection_stays_usable() {
    let be = Backend::start(|r| Reply::ok(format!("body for {}", r.path)));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let mut both = build_request("HEAD", "/h", &[], b"");
    both.extend_from_slice(&build_request("GET", "/g", &[], b""));
    c.send(&both);
    let head = c.read_response_to("HEAD").expect("HEAD response");
    assert_eq!(head.status, 200, "{head}");
    assert_eq!(
        head.header("content-length"),
        Some("11"),
        "HEAD keeps the origin's length: {head}"
    );
    let get = c.read_response().expect("GET after HEAD");
    assert_eq!(get.status, 200, "{get}");
    assert_eq!(
        get.body, b"body for /g",
        "the HEAD response must not carry body bytes"
    );
    assert_eq!(be.requests()[0].method, "HEAD");
}

#[test]
fn status_204_and_304_have_no_body() {
    let be = Backend::start(|r| match r.path.as_str() {
        "/204" => Reply::status(204).header("x-kind", "none"),
        "/304" => Reply::status(304).header("ETag", "\"v1\""),
        p => Reply::ok(p.to_owned()),
    });
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let mut all = Vec::new();
    for p in ["/204", "/after204", "/304", "/after304"] {
        let h: &[(&str, &str)] = if p == "/304" {
            &[("If-None-Match", "\"v1\"")]
        } else {
            &[]
        };
        all.extend_from_slice(&build_request("GET", p, h, b""));
    }
    c.send(&all);
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 204, "{r}");
    assert!(
        !r.has_header("transfer-encoding"),
        "204 must not carry Transfer-Encoding: {r}"
    );
    assert_eq!(r.header("x-kind"), Some("none"));
    let r = c.read_response().unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "/after204".to_owned()),
        "stray bytes after 204? {r}"
    );
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 304, "{r}");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let r = c.read_response().unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "/after304".to_owned()),
        "stray bytes after 304? {r}"
    );
}

#[test]
fn ten_pipelined_requests_answer_in_order() {
    // Earlier requests are slower, so a proxy answering out of order would show it.
    let be = Backend::start(|r| {
        let i: u64 = r.path.trim_start_matches("/p").parse().unwrap_or(0);
        Reply::ok(r.path.clone()).delay(Duration::from_millis((10 - i.min(10)) * 10))
    });
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend_from_slice(&build_request("GET", &format!("/p{i}"), &[], b""));
    }
    c.send(&all);
    for i in 0..10 {
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("pipelined response {i}: {e}"));
        assert_eq!(r.status, 200, "response {i}: {r}");
        assert_eq!(
            r.body_str(),
            format!("/p{i}"),
            "pipelined responses out of order"
        );
    }
    assert_eq!(be.request_count(), 10);
}

#[test]
fn pipelined_requests_with_bodies_stay_framed() {
    let be = Backend::start(|r| {
        Reply::ok(format!(
            "{} {} {}",
            r.method,
            r.path,
            String::from_utf8_lossy(&r.body)
        ))
    });
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let mut all = build_request("POST", "/a", &[], b"first");
    all.extend_from_slice(&build_request("GET", "/b", &[], b""));
    all.extend_from_slice(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nthi\r\n2\r\nrd\r\n0\r\n\r\n");
    all.extend_from_slice(&build_request(
        "PUT",
        "/d",
        &[],
        b"GET /smuggle HTTP/1.1\r\n\r\n",
    ));
    all.extend_from_slice(&build_request("GET", "/e", &[], b""));
    c.send(&all);
    let want = [
        "POST /a first",
        "GET /b ",
        "POST /c third",
        "PUT /d GET /smuggle HTTP/1.1\r\n\r\n",
        "GET /e ",
    ];
    for w in want {
        let r = c.read_response().expect("pipelined response");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body_str(), w);
    }
    assert_eq!(
        be.request_count(),
        5,
        "bodies must never be parsed as requests"
    );
}

#[test]
fn expect_100_continue_gets_interim_then_final() {
    let be = Backend::start(|r| Reply::ok(format!("got {}", r.body.len())));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c
        .read_head()
        .expect("an interim response before the body is sent");
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue before sending the body, got:\n{interim}"
    );
    c.send(b"hello world");
    let r = c.read_response().expect("final response");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body, b"got 11");
    assert_eq!(be.last_request().body, b"hello world");
}

#[test]
fn upload_10mb_content_length_sha256_matches() {
    let be = Backend::sha256();
    let sl = Sluice::start(&simple_config(&[be.addr()], "", BIG_HTTP));
    let body = pattern_bytes(BIG, 11);
    let mut c = Conn::connect(sl.addr());
    let w = c.send_in_background(build_request("POST", "/up", &[], &body));
    let r = c.read_response().expect("response to 10 MB upload");
    w.join().unwrap().expect("writing 10 MB");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body_str(), sha256_hex(&body));
    assert_eq!(r.header("x-body-len"), Some("10000000"));
}

#[test]
fn download_10mb_sha256_matches() {
    let big = pattern_bytes(BIG, 12);
    let digest = sha256_hex(&big);
    let be = Backend::start(move |_| Reply::ok(big.clone()));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/down", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG);
    assert_eq!(sha256_hex(&r.body), digest);
}

#[test]
fn echo_10mb_streams_both_ways() {
    let be = Backend::echo();
    let sl = Sluice::start(&simple_config(&[be.addr()], "", BIG_HTTP));
    let body = pattern_bytes(BIG, 13);
    let mut c = Conn::connect(sl.addr());
    let w = c.send_in_background(build_request("POST", "/echo", &[], &body));
    let r = c.read_response().unwrap_or_else(|e| {
        panic!(
            "echoed 10 MB: {e}; backend received {} bytes, sent back (via sluice) {} bytes to the client",
            be.bytes_received(),
            c.total_read()
        )
    });
    w.join().unwrap().expect("writing 10 MB");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&body));
    assert_eq!(be.last_request().body_len(), BIG);
}

#[test]
fn chunked_request_body_is_decoded_for_upstream() {
    let be = Backend::sha256();
    let sl = proxy_to(&be);
    let body = pattern_bytes(300_000, 14);
    let mut c = Conn::connect(sl.addr());
    let mut req =
        b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, 7_777));
    let w = c.send_in_background(req);
    let r = c.read_response().unwrap();
    w.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body_str(), sha256_hex(&body));
    assert_eq!(be.last_request().body_len(), body.len());
    // And the connection is still in sync for a next request.
    let r = c.get("/next", &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn chunked_echo_both_ways() {
    let be = Backend::echo();
    let sl = proxy_to(&be);
    let body = pattern_bytes(2_000_000, 15);
    let mut c = Conn::connect(sl.addr());
    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, 16_384));
    let w = c.send_in_background(req);
    let r = c.read_response().unwrap();
    w.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body.len(), body.len());
    assert_eq!(sha256_hex(&r.body), sha256_hex(&body));
}

#[test]
fn chunked_response_reaches_client_intact() {
    let be =
        Backend::start(|_| Reply::chunked(&[b"first-", b"second-", &[b'z'; 70_000], b"-last"]));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    for _ in 0..2 {
        let r = c.get("/chunked", &[]);
        assert_eq!(r.status, 200, "{r}");
        let mut want = b"first-second-".to_vec();
        want.extend_from_slice(&[b'z'; 70_000]);
        want.extend_from_slice(b"-last");
        assert_eq!(r.body, want);
    }
}

#[test]
fn close_delimited_upstream_response_is_delivered_whole() {
    let body: Vec<u8> = pattern_bytes(200_000, 16);
    let b2 = body.clone();
    let be = Backend::start(move |_| Reply::close_delimited(b2.clone()));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/eof", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body.len(), body.len());
    assert_eq!(r.body, body);
    if r.framing != Framing::Close {
        // Re-framed for the client (chunked or length): the connection may go on.
        let r = c.get("/eof", &[]);
        assert_eq!(r.body, body);
    }
}

/// A body that is not a repeating pattern, so a misplaced or repeated piece shows.
fn numbered_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn bodies_around_the_one_write_bound_arrive_whole_when_trickled() {
    // 16-64 KiB bodies are gathered and sent with their head in one write; the sizes either side take
    // the other paths. The origin writes each in pieces with pauses, so the gathering must wait for all.
    let sizes = [
        16 * 1024,
        16 * 1024 + 1,
        40_000,
        64 * 1024,
        64 * 1024 + 1,
        200_000,
    ];
    let be = Backend::start(move |r| {
        let i: usize = r.path.trim_start_matches('/').parse().unwrap_or(0);
        Reply::trickled(numbered_body(sizes[i]), 4, Duration::from_millis(20))
    });
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    for (i, len) in sizes.iter().enumerate() {
        let r = c.get(&format!("/{i}"), &[]);
        assert_eq!(r.status, 200, "{len} bytes: {r}");
        assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
        assert!(r.body == numbered_body(*len), "{len} bytes: body differs");
    }
    // One keep-alive connection upstream served them all: every body was read to its end.
    assert_eq!(be.connections(), 1);
}

#[test]
fn a_gathered_body_cut_short_by_the_origin_becomes_a_502() {
    // 40,000 bytes declared (a size that is gathered before anything is sent), 30,000 sent, then a reset:
    // nothing has reached the client, so it gets a proper 502 rather than a connection cut mid-response.
    let be = Backend::start(|_| Reply::reset_mid_body(40_000, 30_000));
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    c.set_read_timeout(Duration::from_secs(5));
    c.send(&build_request("GET", "/", &[], b""));
    let r = c.read_response().expect("a 502, not a cut-off response");
    assert_json_error(&r, 502);
}

#[test]
fn a_gathered_body_that_stalls_becomes_a_504() {
    let be = Backend::start(|_| Reply::stall_mid_body(40_000, 30_000));
    let sl = Sluice::start(&config(&format!(
        "{}{}",
        upstream("app", &[be.addr()], "retries = 0\nidle_timeout = \"300ms\""),
        catch_all("app")
    )));
    let mut c = Conn::connect(sl.addr());
    c.set_read_timeout(Duration::from_secs(5));
    let t = std::time::Instant::now();
    c.send(&build_request("GET", "/", &[], b""));
    let r = c.read_response().expect("a 504, not a cut-off response");
    assert_json_error(&r, 504);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_reply_that_ends_the_connection_arrives_at_once_with_its_close() {
    // When the client asks to close, the reply's tail is held for the FIN (MSG_MORE): it must still arrive
    // at once, whole, followed by the close, for small, gathered and streamed bodies.
    let sizes = [13usize, 40_000, 200_000];
    let be = Backend::start(move |r| {
        let i: usize = r.path.trim_start_matches('/').parse().unwrap_or(0);
        Reply::ok(numbered_body(sizes[i]))
    });
    let sl = proxy_to(&be);
    for (i, len) in sizes.iter().enumerate() {
        let mut c = Conn::connect(sl.addr());
        let t = std::time::Instant::now();
        let r = c.get(&format!("/{i}"), &[("Connection", "close")]);
        assert_eq!(r.status, 200, "{len} bytes: {r}");
        assert!(r.body == numbered_body(*len), "{len} bytes: body differs");
        assert!(
            c.closed_within(Duration::from_secs(2)),
            "{len} bytes: sluice should close after Connection: close"
        );
        // A held-back tail that waited for anything but the close would show here as a stall.
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{len} bytes: reply and close took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn a_request_pipelined_behind_connection_close_does_not_cost_the_reply() {
    // Bytes after a `Connection: close` request are never answered, but the reply to it must arrive.
    let be = Backend::fixed("first");
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    let mut two = build_request("GET", "/a", &[("Connection", "close")], b"");
    two.extend_from_slice(&build_request("GET", "/b", &[], b""));
    c.send(&two);
    let r = c.read_response().expect("the reply to the close request");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body_str(), "first");
    assert!(c.closed_within(Duration::from_secs(2)));
    assert_eq!(be.request_count(), 1);
}
