//! `RequestHead::parse` over arbitrary bytes, under limits picked by the first byte.
//! On a complete head: the limits hold, every accessor is a slice of `bytes()`, every strict prefix
//! of the head is "need more" (a head split across reads parses the same), and parsing the head
//! bytes again, into the same (reused) head and into a fresh one, gives the same head.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::http1::head::{Framing, HeaderKind, Limits, Method, RequestHead};

/// The defaults, the smallest limits the config accepts, something between, the largest.
const LIMITS: [Limits; 4] = [
    Limits {
        max_header_bytes: 16 * 1024,
        max_headers: 100,
        max_uri_bytes: 8 * 1024,
    },
    Limits {
        max_header_bytes: 1024,
        max_headers: 1,
        max_uri_bytes: 16,
    },
    Limits {
        max_header_bytes: 2048,
        max_headers: 8,
        max_uri_bytes: 64,
    },
    Limits {
        max_header_bytes: 1 << 20,
        max_headers: 256,
        max_uri_bytes: 1 << 20,
    },
];

/// A parsed head as owned values, to compare two parses.
#[derive(Debug, PartialEq)]
struct Seen {
    len: usize,
    method: Vec<u8>,
    method_kind: Method,
    path: Vec<u8>,
    query: Option<Vec<u8>>,
    host: Option<Vec<u8>>,
    minor: u8,
    headers: Vec<(Vec<u8>, Vec<u8>, HeaderKind)>,
    body: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// Checks the accessors of a parsed head and returns what it saw.
fn check(head: &RequestHead, limits: &Limits) -> Seen {
    let b = head.bytes();
    assert!(!b.is_empty() && b.len() <= limits.max_header_bytes);
    assert!(b.ends_with(b"\r\n\r\n"));
    let method = head.method();
    assert!(inside(b, method) && !method.is_empty());
    assert_ne!(method, b"CONNECT");
    let kind = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"TRACE" => Method::Trace,
        _ => Method::Other,
    };
    assert_eq!(head.method_kind(), kind);
    let path = head.path();
    assert!(inside(b, path));
    // Origin-form, "*" for OPTIONS, or the empty path of "http://host".
    assert!(path.is_empty() || path[0] == b'/' || (path == b"*" && kind == Method::Options));
    let query = head.query();
    if let Some(q) = query {
        assert!(inside(b, q));
    }
    assert!(path.len() + query.map_or(0, |q| q.len() + 1) <= limits.max_uri_bytes);
    let host = head.host();
    if let Some(h) = host {
        assert!(inside(b, h));
    }
    assert!(head.minor <= 1);
    if head.minor == 1 {
        assert!(host.is_some(), "HTTP/1.1 head without a host");
    }
    assert!(head.headers.len() <= limits.max_headers);
    let mut headers = Vec::with_capacity(head.headers.len());
    for h in &head.headers {
        let (name, value) = head.header(h);
        assert!(inside(b, name) && inside(b, value));
        assert!(!name.is_empty());
        assert!(!value.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0));
        assert!(head.get(&name.to_ascii_lowercase()).is_some());
        headers.push((name.to_vec(), value.to_vec(), h.kind));
    }
    match head.body() {
        Framing::Chunked => assert_eq!(head.minor, 1),
        Framing::Length(n) => assert!(n > 0),
        Framing::None => {}
        Framing::Close => panic!("a request body delimited by close"),
    }
    Seen {
        len: b.len(),
        method: method.to_vec(),
        method_kind: kind,
        path: path.to_vec(),
        query: query.map(<[u8]>::to_vec),
        host: host.map(<[u8]>::to_vec),
        minor: head.minor,
        headers,
        body: head.body(),
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let limits = LIMITS[(pick & 3) as usize];
    let mut head = RequestHead::default();
    let mut buf = BytesMut::from(input);
    match head.parse(&mut buf, &limits) {
        Err(_) => {}
        Ok(None) => {
            assert_eq!(&buf[..], input, "need-more must leave the buffer alone");
            assert!(input.len() <= limits.max_header_bytes);
        }
        Ok(Some(())) => {
            let len = head.bytes().len();
            assert_eq!(head.bytes(), &input[..len]);
            assert_eq!(&buf[..], &input[len..], "the rest stays for the body");
            let seen = check(&head, &limits);

            // Split reads: every strict prefix of a complete head is "need more". Two of them per input.
            let cut = (pick as usize >> 2) * len / 64;
            for at in [len - 1, cut.min(len - 1)] {
                let mut part = BytesMut::from(&input[..at]);
                let r = RequestHead::default().parse(&mut part, &limits);
                assert_eq!(r, Ok(None), "prefix of {at} of {len} bytes");
            }

            // The head alone, into the reused head and into a fresh one.
            let mut again = BytesMut::from(&input[..len]);
            assert_eq!(head.parse(&mut again, &limits), Ok(Some(())));
            assert!(again.is_empty());
            assert_eq!(check(&head, &limits), seen);
            let mut fresh = RequestHead::default();
            let mut again = BytesMut::from(&input[..len]);
            assert_eq!(fresh.parse(&mut again, &limits), Ok(Some(())));
            assert_eq!(check(&fresh, &limits), seen);

            head.release();
            assert!(head.bytes().is_empty() && head.path().is_empty() && head.headers.is_empty());
        }
    }
});
