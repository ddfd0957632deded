//! Self-tests of tests/common: the backend and the raw client talking to
//! each other directly, no sluice involved. If these fail, every other
//! integration test is suspect.

mod common;

use common::client::{chunked, Framing};
use common::*;
use std::time::{Duration, Instant};

#[test]
fn backend_fixed_keep_alive_and_records() {
    let be = Backend::fixed("hi");
    let mut c = Conn::connect(be.addr());
    for i in 0..3 {
        let r = c.get(&format!("/x{i}?q=1"), &[("X-Test", "v")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hi");
        assert_eq!(r.framing, Framing::Length(2));
    }
    assert_eq!(be.connections(), 1);
    let reqs = be.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].path, "/x2?q=1");
    assert_eq!(reqs[2].header("x-test"), Some("v"));
    assert!(reqs[0].head_text().starts_with("GET /x0?q=1 HTTP/1.1\r\n"));
}

#[test]
fn backend_decodes_chunked_and_sha256() {
    let be = Backend::sha256();
    let body = pattern_bytes(100_000, 1);
    let mut c = Conn::connect(be.addr());
    let mut req = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, 7000));
    c.send(&req);
    let r = c.read_response().unwrap();
    assert_eq!(r.body_str(), sha256_hex(&body));
    assert!(be.last_request().chunked);
    assert_eq!(be.last_request().body_len(), 100_000);
}

#[test]
fn backend_streaming_echo_10mb_both_framings() {
    let be = Backend::echo();
    let body = pattern_bytes(10_000_000, 2);
    let mut c = Conn::connect(be.addr());
    let req = build_request("POST", "/echo", &[], &body);
    let w = c.send_in_background(req);
    let r = c.read_response().unwrap();
    w.join().unwrap().unwrap();
    assert_eq!(r.body.len(), body.len());
    assert_eq!(sha256_hex(&r.body), sha256_hex(&body));

    let mut req = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body[..1_000_000], 30_000));
    let w = c.send_in_background(req);
    let r = c.read_response().unwrap();
    w.join().unwrap().unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    assert_eq!(r.body, &body[..1_000_000]);
}

#[test]
fn client_reads_pipelined_head_chunked_close_and_bodyless() {
    let be = Backend::start(|r| match r.path.as_str() {
        "/chunked" => Reply::chunked(&[b"ab", b"cd"]),
        "/204" => Reply::status(204),
        "/304" => Reply::status(304).header("ETag", "\"x\""),
        "/close" => Reply::close_delimited("till-eof"),
        p => Reply::ok(p.to_owned()),
    });
    let mut c = Conn::connect(be.addr());
    let mut all = Vec::new();
    for p in ["/a", "/chunked", "/204", "/304", "/b"] {
        all.extend_from_slice(&build_request("GET", p, &[], b""));
    }
    all.extend_from_slice(&build_request("HEAD", "/head", &[], b""));
    all.extend_from_slice(&build_request("GET", "/close", &[], b""));
    c.send(&all);
    let bodies: Vec<(u16, Vec<u8>)> = ["GET", "GET", "GET", "GET", "GET", "HEAD", "GET"]
        .iter()
        .map(|m| {
            let r = c.read_response_to(m).unwrap();
            (r.status, r.body)
        })
        .collect();
    assert_eq!(bodies[0], (200, b"/a".to_vec()));
    assert_eq!(bodies[1], (200, b"abcd".to_vec()));
    assert_eq!(bodies[2], (204, vec![]));
    assert_eq!(bodies[3], (304, vec![]));
    assert_eq!(bodies[4], (200, b"/b".to_vec()));
    assert_eq!(bodies[5], (200, vec![]));
    assert_eq!(bodies[6], (200, b"till-eof".to_vec()));
    assert!(c.closed_within(Duration::from_secs(1)));
}

#[test]
fn backend_resets_and_never_answers() {
    let be = Backend::start(|r| match r.path.as_str() {
        "/rst" => Reply::reset_before_head(),
        "/mid" => Reply::reset_mid_body(1000, 10),
        _ => Reply::never(),
    });
    let mut c = Conn::connect(be.addr());
    c.send(&build_request("GET", "/rst", &[], b""));
    assert!(c.read_response().is_err());
    let mut c = Conn::connect(be.addr());
    c.send(&build_request("GET", "/mid", &[], b""));
    let e = c.read_response().unwrap_err();
    assert!(
        e.to_string().contains("closed") || e.kind() != std::io::ErrorKind::TimedOut,
        "{e}"
    );
    let mut c = Conn::connect(be.addr());
    c.set_read_timeout(Duration::from_millis(300));
    c.send(&build_request("GET", "/never", &[], b""));
    let t = Instant::now();
    assert!(c.read_response().is_err());
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(be.request_count(), 3);
}

#[test]
fn backend_health_toggle_and_expect() {
    let be = Backend::fixed("x");
    assert_eq!(http_get(be.addr(), "/healthz", &[]).status, 200);
    be.set_healthy(false);
    assert_eq!(http_get(be.addr(), "/healthz", &[]).status, 503);
    assert_eq!(be.health_checks(), 2);
    assert_eq!(be.request_count(), 0);

    let mut c = Conn::connect(be.addr());
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_head().unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"abc");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(be.last_request().body, b"abc");
}

#[test]
fn backend_rejects_garbage_and_refused_addr_refuses() {
    let be = Backend::fixed("x");
    let out = send_raw(
        be.addr(),
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    );
    assert!(out.starts_with(b"HTTP/1.1 400"));
    assert_eq!(be.bad_requests(), 1);
    assert!(std::net::TcpStream::connect(refused_addr()).is_err());
}

#[test]
fn helpers() {
    assert!(eventually(Duration::from_millis(100), || true));
    assert!(!eventually(Duration::from_millis(50), || false));
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let body = br#"{"error":"no route","status":404,"request_id":"ab\"c"}"#;
    assert_eq!(json_str(body, "request_id").as_deref(), Some("ab\"c"));
    assert_eq!(json_num(body, "status"), Some(404));
    let d = temp_dir();
    let p = d.write("a.toml", "x = 1");
    assert_eq!(std::fs::read_to_string(p).unwrap(), "x = 1");
}

#[test]
fn backend_counts_peer_closes_and_stalls() {
    let be = Backend::start(|r| match r.path.as_str() {
        "/stall" => Reply::stall_mid_body(100, 10),
        _ => Reply::ok("x"),
    });
    let mut c = Conn::connect(be.addr());
    assert_eq!(c.get("/", &[]).status, 200);
    drop(c);
    assert!(eventually(Duration::from_secs(2), || be.closed_by_peer() == 1));
    let mut c = Conn::connect(be.addr());
    c.set_read_timeout(Duration::from_millis(300));
    c.send(&build_request("GET", "/stall", &[], b""));
    let e = c.read_response().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
}
