//! Unit tests of the head parsers (kept beside `head.rs` so the parser reads on its own).
use super::*;
use proptest::prelude::*;

const LIM: Limits = Limits {
    max_header_bytes: 16384,
    max_headers: 100,
    max_uri_bytes: 8192,
};

fn req(s: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut b = BytesMut::from(s);
    let mut h = RequestHead::default();
    Ok(h.parse(&mut b, &LIM)?.map(|_| h))
}

#[test]
fn basic() {
    let h = req(b"GET /a/b?x=1 HTTP/1.1\r\nHost: ex.com\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.method(), b"GET");
    assert_eq!(h.path(), b"/a/b");
    assert_eq!(h.query(), Some(&b"x=1"[..]));
    assert_eq!(h.host(), Some(&b"ex.com"[..]));
    assert!(h.keep_alive);
    assert_eq!(h.headers[2].kind, HeaderKind::HopByHop);
}

#[test]
fn released_head_lets_the_read_buffer_be_reused() {
    let wire = b"GET /a HTTP/1.1\r\nHost: ex.com\r\n\r\n";
    for release in [true, false] {
        let mut buf = BytesMut::with_capacity(1024);
        let start = buf.as_ptr();
        buf.extend_from_slice(wire);
        let mut h = RequestHead::default();
        h.parse(&mut buf, &LIM).unwrap().unwrap();
        assert!(buf.is_empty());
        if release {
            h.release();
            assert_eq!((h.path(), h.host(), h.headers.len()), (&b""[..], None, 0));
        }
        // What `read_more` does once the buffer has run out of room.
        buf.reserve(1024);
        assert_eq!(buf.as_ptr() == start, release, "release = {release}");
    }
    let mut buf = BytesMut::with_capacity(1024);
    let start = buf.as_ptr();
    buf.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let mut r = ResponseHead::default();
    r.parse(&mut buf, false, 16384).unwrap().unwrap();
    r.release();
    assert_eq!((r.reason(), r.headers.len()), (&b""[..], 0));
    buf.reserve(1024);
    assert_eq!(buf.as_ptr(), start);
}

#[test]
fn absolute_form() {
    let h = req(b"GET http://other.com/p?q HTTP/1.1\r\nHost: ex.com\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.host(), Some(&b"other.com"[..]));
    assert_eq!(h.path(), b"/p");
}

#[test]
fn hosts_must_be_uri_hosts() {
    for host in ["exa mple", "a:99999", "[::1", "a/b", ":80"] {
        let wire = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            req(wire.as_bytes()).err(),
            Some(HeadError::InvalidHost),
            "{host:?}"
        );
    }
    let absolute = b"GET http://a:99999/p HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(req(absolute).err(), Some(HeadError::InvalidHost));
    // Optional whitespace around the value is not part of it (RFC 9110 §5.5).
    let h = req(b"GET / HTTP/1.1\r\nHost:  [::1]:8080 \r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.host(), Some(&b"[::1]:8080"[..]));
    let h = req(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.host(), Some(&b""[..]));
}

#[test]
fn smuggling_rejected() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for c in cases {
        assert!(req(c).is_err(), "accepted {:?}", String::from_utf8_lossy(c));
    }
}

#[test]
fn framing() {
    let h = req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.body(), Framing::Chunked);
    let h = req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.body(), Framing::Length(7));
    let h = req(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!h.keep_alive);
}

#[test]
fn limits() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert_eq!(req(long.as_bytes()).err(), Some(HeadError::UriTooLong));
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let r = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(req(r.as_bytes()).err(), Some(HeadError::TooManyHeaders));
    assert!(req(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
}

#[test]
fn response_framing() {
    let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"[..]);
    let mut r = ResponseHead::default();
    r.parse(&mut b, false, 65536).unwrap().unwrap();
    assert_eq!(r.body(), Framing::Length(3));
    assert_eq!(&b[..], b"abc");
    let mut b = BytesMut::from(&b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"[..]);
    r.parse(&mut b, false, 65536).unwrap().unwrap();
    assert_eq!(r.body(), Framing::None);
    let mut b = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
    r.parse(&mut b, false, 65536).unwrap().unwrap();
    assert_eq!(r.body(), Framing::Close);
    assert!(!r.keep_alive);
}

fn status_line(wire: &[u8]) -> Result<(u16, Vec<u8>), HeadError> {
    let mut b = BytesMut::from(wire);
    let mut r = ResponseHead::default();
    r.parse(&mut b, false, 65536)?.ok_or(HeadError::Syntax)?;
    Ok((r.status, r.reason().to_vec()))
}

#[test]
fn reason_phrase_is_kept_as_received() {
    let ok = |wire: &[u8], reason: &[u8]| {
        assert_eq!(status_line(wire), Ok((200, reason.to_vec())), "{wire:?}");
    };
    ok(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", b"");
    ok(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", b"");
    ok(b"HTTP/1.1 200 \x80\r\nContent-Length: 0\r\n\r\n", b"\x80");
    ok(b"HTTP/1.1 200 Caf\xe9\r\n\r\n", b"Caf\xe9");
    ok(b"HTTP/1.1 200 Very OK\r\n\r\n", b"Very OK");
    ok(b"\r\nHTTP/1.1 200 OK\r\n\r\n", b"OK");
    assert_eq!(
        status_line(b"HTTP/1.1 103\r\nLink: </a>\r\n\r\n"),
        Ok((103, vec![]))
    );
}

#[test]
fn status_outside_100_to_599_is_rejected() {
    for wire in [
        &b"HTTP/1.1 000 Zero\r\n\r\n"[..],
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\n\r\n",
        b"HTTP/1.1 999 X\r\n\r\n",
    ] {
        assert_eq!(status_line(wire), Err(HeadError::BadStatus), "{wire:?}");
    }
    assert!(status_line(b"HTTP/1.1 20 OK\r\n\r\n").is_err());
    assert!(status_line(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
    assert_eq!(
        status_line(b"HTTP/1.1 599 X\r\n\r\n"),
        Ok((599, b"X".to_vec()))
    );
    assert_eq!(
        status_line(b"HTTP/1.1 100 Continue\r\n\r\n").map(|s| s.0),
        Ok(100)
    );
}

#[test]
fn span_of_a_foreign_slice_is_empty() {
    let buf = b"abcdef";
    assert_eq!(Span::of(buf, &buf[2..4]).get(buf), b"cd");
    assert_eq!(Span::of(buf, &buf[6..]), Span { start: 6, end: 6 });
    assert_eq!(Span::of(buf, b""), Span::default());
}

proptest! {
    /// Well-formed status lines with any reason bytes and code: the parse never panics, and a
    /// reason it accepts is exactly the bytes sent.
    #[test]
    fn status_lines(code in 0u16..1000, reason in proptest::collection::vec(any::<u8>(), 0..20), sp in any::<bool>()) {
        let mut wire = format!("HTTP/1.1 {code:03}").into_bytes();
        if sp || !reason.is_empty() {
            wire.push(b' ');
        }
        wire.extend_from_slice(&reason);
        wire.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        if let Ok((status, got)) = status_line(&wire) {
            prop_assert_eq!(status, code);
            prop_assert_eq!(got, reason);
        } else if (100..=599).contains(&code) {
            prop_assert!(reason.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f));
        }
    }

    #[test]
    fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = req(&data);
        let mut b = BytesMut::from(&data[..]);
        let _ = ResponseHead::default().parse(&mut b, false, 65536);
    }
}
