//! The request as it leaves for the upstream: request id, cookies, and the rewritten head
//! (path rewrite, hop-by-hop headers removed, X-Forwarded-* and X-Request-Id set), written into a reusable buffer.

use crate::http1::head::{Framing, HeaderKind, Method, RequestHead};
use crate::router::{upstream_path, CompiledRoute, Match};
use crate::worker::Worker;

/// Request id and W3C trace context of one request, kept on the stack.
pub struct Ids {
    id: [u8; 128],
    id_len: u8,
    traceparent: [u8; 55],
}

fn is_lower_hex(v: &[u8]) -> bool {
    v.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// A W3C traceparent of version 00 with non-zero ids (W3C Trace Context §3.2).
fn valid_traceparent(v: &[u8]) -> bool {
    v.len() == 55
        && &v[..3] == b"00-"
        && v[35] == b'-'
        && v[52] == b'-'
        && is_lower_hex(&v[3..35])
        && is_lower_hex(&v[36..52])
        && is_lower_hex(&v[53..55])
        && v[3..35].iter().any(|&b| b != b'0')
        && v[36..52].iter().any(|&b| b != b'0')
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(out: &mut [u8], v: u64) {
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
}

impl Ids {
    /// Takes the client's X-Request-Id when it is sane, else a fresh one; continues the client's trace
    /// with a new span of ours, or starts one whose trace id is the request id.
    pub fn new(w: &Worker, head: &RequestHead) -> Ids {
        let mut ids = Ids {
            id: [0u8; 128],
            id_len: 0,
            traceparent: *b"00-00000000000000000000000000000000-0000000000000000-01",
        };
        let client_id = head
            .headers
            .iter()
            .find(|h| h.kind == HeaderKind::RequestId)
            .map(|h| head.header(h).1)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
            });
        let mut fresh = [0u8; 32];
        match client_id {
            Some(v) => {
                ids.id[..v.len()].copy_from_slice(v);
                ids.id_len = v.len() as u8;
            }
            None => {
                w.next_request_id(&mut fresh);
                ids.id[..32].copy_from_slice(&fresh);
                ids.id_len = 32;
            }
        }
        let incoming = head
            .headers
            .iter()
            .find(|h| h.kind == HeaderKind::TraceParent)
            .map(|h| head.header(h).1)
            .filter(|v| valid_traceparent(v));
        match incoming {
            Some(tp) => {
                ids.traceparent.copy_from_slice(tp);
            }
            None => {
                if client_id.is_none() {
                    ids.traceparent[3..35].copy_from_slice(&fresh);
                } else {
                    w.next_request_id(&mut fresh);
                    ids.traceparent[3..35].copy_from_slice(&fresh);
                }
            }
        }
        // Our own span: the upstream sees sluice as its parent.
        hex_into(&mut ids.traceparent[36..52], w.next_span_id());
        ids
    }

    /// The request id.
    pub fn id(&self) -> &[u8] {
        &self.id[..self.id_len as usize]
    }

    /// The traceparent sent upstream.
    pub fn traceparent(&self) -> &[u8] {
        &self.traceparent
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &[u8] {
        &self.traceparent[3..35]
    }
}

pub fn cookie<'a>(head: &'a RequestHead, name: &[u8]) -> Option<&'a [u8]> {
    for h in &head.headers {
        let (n, v) = head.header(h);
        if !n.eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for pair in v.split(|&b| b == b';') {
            let pair = crate::http1::head::trim(pair);
            if let Some(eq) = memchr::memchr(b'=', pair) {
                if &pair[..eq] == name {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

pub fn parse_hex(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// Writes the request head sent upstream.
pub fn build_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    route: &CompiledRoute,
    m: &Match,
    peer_ip: &str,
    ids: &Ids,
    body: Framing,
    fallback_host: Option<std::net::SocketAddr>,
) {
    out.extend_from_slice(head.method());
    out.push(b' ');
    if head.path() == b"*" {
        out.push(b'*');
    } else {
        upstream_path(route, m, head.path(), out);
    }
    if let Some(q) = head.query() {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    let orig_host = head.host();
    match (&route.host_rewrite, orig_host) {
        (Some(h), _) => out.extend_from_slice(h),
        (None, Some(h)) => out.extend_from_slice(h),
        // HTTP/1.0 without Host: name the first endpoint (formatting happens only in this rare case).
        (None, None) => {
            if let Some(a) = fallback_host {
                use std::io::Write;
                let _ = write!(out, "{a}");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    let mut xff_started = false;
    for h in &head.headers {
        let (name, value) = head.header(h);
        match h.kind {
            HeaderKind::Other => {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            HeaderKind::XForwardedFor => {
                out.extend_from_slice(if xff_started {
                    &b", "[..]
                } else {
                    b"x-forwarded-for: "
                });
                out.extend_from_slice(crate::http1::head::trim(value));
                xff_started = true;
            }
            HeaderKind::HopByHop
            | HeaderKind::Host
            | HeaderKind::ContentLength
            | HeaderKind::XForwardedOther
            | HeaderKind::RequestId
            | HeaderKind::TraceParent
            | HeaderKind::Expect => {}
        }
    }
    out.extend_from_slice(if xff_started {
        &b", "[..]
    } else {
        b"x-forwarded-for: "
    });
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(h) = orig_host {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ids.id());
    out.extend_from_slice(b"\r\ntraceparent: ");
    out.extend_from_slice(ids.traceparent());
    out.extend_from_slice(b"\r\n");
    match body {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {
            // RFC 9110 §8.6: a user agent should send Content-Length: 0 for POST/PUT without a body.
            if matches!(head.method_kind(), Method::Post | Method::Put) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}
