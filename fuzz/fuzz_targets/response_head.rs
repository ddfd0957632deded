//! `ResponseHead::parse` with `MAX_RESPONSE_HEAD`, on arbitrary bytes and on heads built around a
//! well-formed status line (random bytes rarely form one, and the reason phrase is where httparse
//! hands back a static "" instead of a slice of the buffer).
//! On a complete head: status 100..=599, `reason()` is the status line's bytes after
//! `HTTP/1.x NNN ` up to CR and a slice of `bytes()`, every header is a slice of `bytes()`, framing
//! follows the status, every strict prefix is "need more", and parsing the head again gives the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::http1::head::{Framing, HeaderKind, ResponseHead, MAX_RESPONSE_HEAD};

/// Input layout: flags, then (structured) status, reason length, reason, header lines; or raw bytes.
const STRUCTURED: u8 = 1;
const HEAD_REQUEST: u8 = 2;
const HTTP_10: u8 = 4;
/// Any three digits rather than 100..=599.
const ANY_STATUS: u8 = 8;
/// `HTTP/1.1 200\r\n`: no space after the code (only with an empty reason).
const NO_SPACE: u8 = 16;

#[derive(Debug, PartialEq)]
struct Seen {
    len: usize,
    status: u16,
    minor: u8,
    reason: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>, HeaderKind)>,
    body: Framing,
    keep_alive: bool,
}

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// The reason phrase read off the head independently: skip empty lines (RFC 9112 §2.2), take the
/// status line up to CR, check `HTTP/1.x NNN`, and return what follows the space.
fn reason_of(b: &[u8], status: u16, minor: u8) -> &[u8] {
    let start = b.iter().position(|&c| c != b'\r' && c != b'\n').unwrap();
    let line = &b[start..];
    let line = &line[..line.iter().position(|&c| c == b'\r').unwrap()];
    assert!(line.len() >= 12, "status line {line:?}");
    assert_eq!(&line[..7], b"HTTP/1.");
    assert_eq!(line[7], b'0' + minor);
    assert_eq!(line[8], b' ');
    assert_eq!(&line[9..12], format!("{status:03}").as_bytes());
    match line.get(12) {
        None => &[],
        Some(b' ') => &line[13..],
        Some(c) => panic!("byte {c:#x} after the status code"),
    }
}

fn check(head: &ResponseHead, head_request: bool) -> Seen {
    let b = head.bytes();
    assert!(b.ends_with(b"\r\n\r\n"));
    assert!((100..=599).contains(&head.status), "status {}", head.status);
    assert!(head.minor <= 1);
    let reason = head.reason();
    assert!(inside(b, reason), "reason is not a slice of the head");
    assert_eq!(reason, reason_of(b, head.status, head.minor));
    let mut headers = Vec::with_capacity(head.headers.len());
    for h in &head.headers {
        let (name, value) = head.header(h);
        assert!(inside(b, name) && inside(b, value));
        assert!(!name.is_empty());
        assert!(!value.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0));
        headers.push((name.to_vec(), value.to_vec(), h.kind));
    }
    let bodiless = head_request
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304;
    match head.body() {
        Framing::None => {}
        Framing::Length(n) => assert!(!bodiless && n > 0),
        Framing::Chunked | Framing::Close => assert!(!bodiless),
    }
    if head.body() == Framing::Close {
        assert!(!head.keep_alive);
    }
    Seen {
        len: b.len(),
        status: head.status,
        minor: head.minor,
        reason: reason.to_vec(),
        headers,
        body: head.body(),
        keep_alive: head.keep_alive,
    }
}

/// `HTTP/1.m NNN reason\r\n`, then each `\n`-separated piece of the rest as a header line, a blank
/// line and a few body bytes. Returns the input, the status written and the reason written.
fn build(flags: u8, data: &[u8]) -> Option<(Vec<u8>, u16, Vec<u8>)> {
    let (code, rest) = data.split_first_chunk::<2>()?;
    let code = u16::from_le_bytes(*code);
    let status = if flags & ANY_STATUS != 0 {
        code % 1000
    } else {
        100 + code % 500
    };
    let (&n, rest) = rest.split_first()?;
    let n = (n as usize).min(rest.len());
    let reason: Vec<u8> = rest[..n]
        .iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect();
    let minor = if flags & HTTP_10 != 0 { 0 } else { 1 };
    let mut out = format!("HTTP/1.{minor} {status:03}").into_bytes();
    if !(reason.is_empty() && flags & NO_SPACE != 0) {
        out.push(b' ');
    }
    out.extend_from_slice(&reason);
    out.extend_from_slice(b"\r\n");
    for line in rest[n..].split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\nok");
    Some((out, status, reason))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let head_request = flags & HEAD_REQUEST != 0;
    let (input, built) = if flags & STRUCTURED != 0 {
        let Some((input, status, reason)) = build(flags, rest) else {
            return;
        };
        (input, Some((status, reason)))
    } else {
        (rest.to_vec(), None)
    };
    let mut head = ResponseHead::default();
    let mut buf = BytesMut::from(&input[..]);
    let result = head.parse(&mut buf, head_request, MAX_RESPONSE_HEAD);
    if let Some((status, _)) = &built {
        if !(100..=599).contains(status) {
            assert!(result.is_err(), "status {status} accepted");
        }
    }
    match result {
        Err(_) => {}
        Ok(None) => {
            assert_eq!(&buf[..], &input[..]);
            assert!(input.len() <= MAX_RESPONSE_HEAD);
        }
        Ok(Some(())) => {
            let len = head.bytes().len();
            assert_eq!(head.bytes(), &input[..len]);
            assert_eq!(&buf[..], &input[len..]);
            let seen = check(&head, head_request);
            if let Some((status, reason)) = &built {
                assert_eq!(head.status, *status);
                assert_eq!(head.minor, if flags & HTTP_10 != 0 { 0 } else { 1 });
                assert_eq!(head.reason(), &reason[..], "reason phrase changed");
            }

            let cut = (flags as usize >> 5) * len / 8;
            for at in [len - 1, cut.min(len - 1)] {
                let mut part = BytesMut::from(&input[..at]);
                let r = ResponseHead::default().parse(&mut part, head_request, MAX_RESPONSE_HEAD);
                assert_eq!(r, Ok(None), "prefix of {at} of {len} bytes");
            }

            let mut again = BytesMut::from(&input[..len]);
            let r = head.parse(&mut again, head_request, MAX_RESPONSE_HEAD);
            assert_eq!(r, Ok(Some(())));
            assert!(again.is_empty());
            assert_eq!(check(&head, head_request), seen);
            let mut fresh = ResponseHead::default();
            let mut again = BytesMut::from(&input[..len]);
            let r = fresh.parse(&mut again, head_request, MAX_RESPONSE_HEAD);
            assert_eq!(r, Ok(Some(())));
            assert_eq!(check(&fresh, head_request), seen);

            head.release();
            assert!(head.bytes().is_empty() && head.reason().is_empty() && head.headers.is_empty());
        }
    }
});
