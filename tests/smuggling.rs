//! Request smuggling and ambiguous framing (RFC 9112 §2.2, §3.2, §5, §6, §7.1).
//!
//! Each rejected variant is sent raw and must get a JSON 400, then the
//! connection must close, and the backend must have seen nothing: zero bytes
//! for head-level defects, no complete request for body-level (chunk)
//! defects, which a streaming proxy may only find after forwarding the head.
//! A valid request on a new connection (routed to a second backend, so the
//! first one's counters stay clean) must still work.
//! The accepted variants are the spellings RFC 9112 allows.

mod common;

use common::*;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Seen {
    /// Head-level defect: not one byte may reach the backend.
    NoBytes,
    /// Body-level defect: no complete request may reach the backend.
    NoRequest,
}

struct Setup {
    target: Backend,
    other: Backend,
    sl: Sluice,
}

fn setup() -> Setup {
    let target = Backend::fixed("target");
    let other = Backend::fixed("other");
    let sl = Sluice::start(&config(&format!(
        "{}{}[routes.valid]\npath = \"/valid\"\nupstream = \"other\"\n\n{}",
        upstream("app", &[target.addr()], ""),
        upstream("other", &[other.addr()], ""),
        catch_all("app")
    )));
    Setup { target, other, sl }
}

fn assert_rejected(raw: &[u8], seen: Seen) {
    let s = setup();
    let mut c = Conn::connect(s.sl.addr());
    let _ = c.try_send(raw);
    let r = c.read_response().unwrap_or_else(|e| {
        panic!(
            "expected 400 for {:?}, got error: {e}",
            String::from_utf8_lossy(raw)
        )
    });
    assert_json_error(&r, 400);
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "connection must close after a 400 for ambiguous framing; leftover: {:?}",
        String::from_utf8_lossy(c.leftover())
    );
    // A valid request on a new connection still works (and gives the
    // proxy time to have forwarded anything it was going to).
    let ok = http_get(s.sl.addr(), "/valid", &[]);
    assert_eq!((ok.status, ok.body_str().as_str()), (200, "other"), "{ok}");
    assert_eq!(s.other.request_count(), 1);
    let reqs = s.target.requests();
    assert!(
        reqs.is_empty(),
        "backend received request(s) it must not have: {:?}",
        reqs.iter().map(|r| r.head_text()).collect::<Vec<_>>()
    );
    assert_eq!(
        s.target.bad_requests(),
        0,
        "raw invalid framing was forwarded to the backend"
    );
    if let Seen::NoBytes = seen {
        assert_eq!(
            s.target.bytes_received(),
            0,
            "backend must receive nothing for a head-level defect"
        );
    }
}

fn assert_accepted(raw: &[u8], want_body: &[u8]) {
    let s = setup();
    let mut c = Conn::connect(s.sl.addr());
    c.send(raw);
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body, b"target");
    let req = s.target.last_request();
    assert_eq!(req.body, want_body, "decoded body as the backend saw it");
    assert_eq!(c.get("/after", &[]).status, 200, "connection stays in sync");
}

macro_rules! rejects {
    ($($name:ident: $seen:ident, $raw:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_rejected($raw, Seen::$seen);
        }
    )*};
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

fn with_smuggled(head: &str, body: &str) -> Vec<u8> {
    format!("{head}{body}{SMUGGLED}").into_bytes()
}

fn chunked_post(body: &str) -> Vec<u8> {
    with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        body,
    )
}

rejects! {
    // §6.3: both framings present.
    cl_and_te: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\n\r\n");
    te_and_cl: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n", "0\r\n\r\n");
    // §6.3 (5): differing or invalid Content-Length.
    duplicate_differing_content_length: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "hello!");
    content_length_list_differing: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", "hello!");
    content_length_plus_sign: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", "hello");
    content_length_negative: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "");
    content_length_hex: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", "hello");
    content_length_overflow: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", "hello");
    // §6.1/§6.3: chunked must be the final coding; anything else in a request is a 400.
    te_xchunked: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "0\r\n\r\n");
    te_chunked_then_identity: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "0\r\n\r\n");
    te_unknown_coding: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "0\r\n\r\n");
    te_chunked_twice: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\n\r\n");
    te_vertical_tab: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", "0\r\n\r\n");
    te_quoted: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", "0\r\n\r\n");
    // §5.1: no whitespace between field name and colon.
    te_space_before_colon: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", "0\r\n\r\n");
    content_length_tab_before_colon: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n", "hello");
    // §5.2: obs-fold.
    obs_fold: NoBytes, b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n";
    obs_fold_transfer_encoding: NoBytes, &with_smuggled(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n", "0\r\n\r\n");
    // §2.2: whitespace between the start line and the first field.
    whitespace_before_first_header: NoBytes, b"GET / HTTP/1.1\r\n Host: a\r\n\r\n";
    // §2.2: a bare LF inside an otherwise CRLF head.
    bare_lf_in_head: NoBytes, b"GET / HTTP/1.1\r\nHost: a\nX-Other: b\r\n\r\n";
    // RFC 9110 §5.5: NUL and CR are never allowed in a field value.
    nul_in_header_value: NoBytes, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n";
    cr_in_header_value: NoBytes, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n";
    space_in_header_name: NoBytes, b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n";
    // §3.2: exactly one Host in HTTP/1.1.
    missing_host: NoBytes, b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n";
    duplicate_host: NoBytes, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    // §7.1: chunk framing.
    bare_lf_in_chunk_line: NoRequest, &chunked_post("5\nhello\r\n0\r\n\r\n");
    chunk_size_0x_prefix: NoRequest, &chunked_post("0x5\r\nhello\r\n0\r\n\r\n");
    chunk_size_negative: NoRequest, &chunked_post("-1\r\nhello\r\n0\r\n\r\n");
    chunk_size_overflow: NoRequest, &chunked_post("fffffffffffffffffffffff5\r\nhello\r\n0\r\n\r\n");
    chunk_size_empty: NoRequest, &chunked_post("\r\nhello\r\n0\r\n\r\n");
    chunk_size_not_hex: NoRequest, &chunked_post("5g\r\nhello\r\n0\r\n\r\n");
    chunk_data_longer_than_size: NoRequest, &chunked_post("5\r\nhelloXX\r\n0\r\n\r\n");
    bare_lf_after_chunk_data: NoRequest, &chunked_post("5\r\nhello\n0\r\n\r\n");
}

#[test]
fn te_chunked_any_case_is_accepted() {
    assert_accepted(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"hello world",
    );
}

#[test]
fn te_chunked_with_ows_tabs_is_accepted() {
    assert_accepted(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\t chunked \t\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
        b"hello world",
    );
}

#[test]
fn chunk_extensions_and_trailers_are_accepted() {
    assert_accepted(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n6;flag\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"hello world",
    );
}

#[test]
fn uppercase_hex_chunk_size_is_accepted() {
    let mut raw =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1A\r\n".to_vec();
    raw.extend_from_slice(&[b'q'; 26]);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_accepted(&raw, &[b'q'; 26]);
}

// ------------------------------------------------------------- responses

/// sluice proxying to a backend that answers every request with `raw` and closes.
fn raw_upstream(raw: &'static str) -> (Backend, Sluice) {
    let be = Backend::start(move |_| Reply::raw(raw));
    let sl = proxy_to(&be);
    (be, sl)
}

#[test]
fn upstream_response_with_differing_content_lengths_is_502() {
    // RFC 9112 §6.3 (5): a proxy MUST discard it and answer 502.
    let (_be, sl) =
        raw_upstream("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    let r = http_get(sl.addr(), "/", &[]);
    assert_json_error(&r, 502);
}

#[test]
fn upstream_response_with_invalid_content_length_is_502() {
    let (_be, sl) = raw_upstream("HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello");
    let r = http_get(sl.addr(), "/", &[]);
    assert_json_error(&r, 502);
}

#[test]
fn upstream_response_with_cl_and_te_is_never_forwarded_ambiguous() {
    // RFC 9112 §6.3 (3): Transfer-Encoding wins; a proxy forwarding it must drop Content-Length.
    let (_be, sl) = raw_upstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/", &[]);
    if r.status != 502 {
        assert_eq!(r.status, 200, "{r}");
        assert!(
            !(r.has_header("content-length") && r.has_header("transfer-encoding")),
            "response forwarded with both framings:\n{r}"
        );
        assert_eq!(
            r.body, b"hello",
            "Transfer-Encoding must win over Content-Length"
        );
    }
    let next = c.get("/", &[]);
    assert!(
        next.status == 200 || next.status == 502,
        "client connection desynchronised:\n{next}"
    );
}

#[test]
fn upstream_response_with_bad_chunk_is_not_completed() {
    let (_be, sl) = raw_upstream(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
    );
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    match c.read_response() {
        Ok(r) => assert_eq!(
            r.status, 502,
            "a broken chunked upstream body must not look complete:\n{r}"
        ),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "sluice left the client hanging: {e}"
        ),
    }
}
