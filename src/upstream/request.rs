//! The request as it leaves for the upstream: request id, cookies, and the rewritten head
//! (path rewrite, hop-by-hop headers removed, X-Forwarded-* and X-Request-Id set), written into a reusable buffer.

use crate::http1::head::{Framing, HeaderKind, Method, RequestHead};
use crate::pipeline::Client;
use crate::router::{upstream_path, CompiledRoute, Match};
use crate::worker::ids::Ids;

/// The value of cookie `name` in the request's Cookie headers.
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

/// A 1-16 digit hex number (a sticky-session cookie's endpoint key).
pub fn parse_hex(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// Writes the request head sent upstream; `extra` is header lines a policy adds.
#[allow(clippy::too_many_arguments)]
pub fn build_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    route: &CompiledRoute,
    m: &Match,
    client: &Client,
    ids: &Ids,
    extra: &[u8],
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
    let mut has_xff = false;
    for h in &head.headers {
        let (name, value) = head.header(h);
        match h.kind {
            HeaderKind::Other => {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            // Joined into one line after the loop: written here, a received X-Forwarded-For that is
            // not the last field would run into the next field line.
            HeaderKind::XForwardedFor => has_xff = true,
            HeaderKind::HopByHop
            | HeaderKind::Host
            | HeaderKind::ContentLength
            | HeaderKind::XForwardedOther
            | HeaderKind::RequestId
            | HeaderKind::TraceParent
            | HeaderKind::Expect => {}
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if has_xff {
        forwarded_chain(out, head, client);
    } else {
        out.extend_from_slice(client.text().as_bytes());
    }
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
    out.extend_from_slice(extra);
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

/// The X-Forwarded-For value sent upstream when the request carried one: the received chain, ending
/// in the client. When the peer is the client, it is appended; when a trusted proxy's chain named the
/// client, the chain is cut after that entry, dropping the hops of the proxies sluice trusts (see
/// `pipeline::client`).
fn forwarded_chain(out: &mut Vec<u8>, head: &RequestHead, client: &Client) {
    let mut first = true;
    let lines = head
        .headers
        .iter()
        .filter(|h| h.kind == HeaderKind::XForwardedFor);
    for (line, h) in lines.enumerate() {
        let mut value = crate::http1::head::trim(head.header(h).1);
        match client.forwarded {
            Some((at, _)) if line > usize::from(at) => break,
            Some((at, end)) if line == usize::from(at) => {
                value = value.get(..end as usize).unwrap_or(value);
            }
            _ => {}
        }
        if value.is_empty() {
            continue;
        }
        if !first {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value);
        first = false;
    }
    if client.forwarded.is_none() {
        if !first {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(client.text().as_bytes());
    }
}
