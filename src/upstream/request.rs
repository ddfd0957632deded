//! The request as it leaves for the upstream: request id, cookies, and the rewritten head
//! (canonical or received path, path rewrite, hop-by-hop headers removed, X-Forwarded-* and X-Request-Id set), written into a reusable buffer.

use crate::config::ForwardPath;
use crate::http1::head::{Framing, HeaderKind, Method, RequestHead};
use crate::pipeline::client::Client;
use crate::pipeline::ctx::{Credential, Ctx};
use crate::policy::headers::Vars;
use crate::router::{upstream_path, CompiledRoute, Match};

pub use crate::http1::head::cookie;

/// A 1-16 digit hex number (a sticky-session cookie's endpoint key).
pub fn parse_hex(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// Writes the request head sent upstream, with what the request's policies decided (`ctx`): header
/// lines they add, the consumer they named, the credential to remove. `path` is the canonical path
/// `m` was matched on. The route's `request_headers` rules run last, on what is left: their `set` and
/// `remove` drop the client's fields (a credential already stripped stays stripped; no template can
/// name a received header, so no rule can copy it back) and the policies' lines, then their `set` and
/// `add` fields follow. `vars` is given when the route has header rules.
#[allow(clippy::too_many_arguments)]
/// Appends `v` as a header value: a certificate's text may hold any byte, and a control character
/// must not end the field (or start another).
fn header_safe(out: &mut Vec<u8>, v: &[u8]) {
    out.extend(
        v.iter()
            .map(|&b| if b < 0x20 || b == 0x7f { b'?' } else { b }),
    );
}

pub fn build_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    path: &[u8],
    route: &CompiledRoute,
    m: &Match,
    ctx: &Ctx,
    body: Framing,
    fallback_host: Option<std::net::SocketAddr>,
    vars: Option<&Vars<'_>>,
) {
    let ids = &ctx.ids;
    let cfg = &ctx.gen.config;
    let strip = if route.access.forward_credential {
        Credential::None
    } else {
        ctx.credential
    };
    let id_header = cfg.consumer_headers.id.as_bytes();
    let groups_header = cfg.consumer_headers.groups.as_bytes();
    let key_header = cfg.api_key.header.as_bytes();
    let is = |name: &[u8], want: &[u8]| name.len() == want.len() && name.eq_ignore_ascii_case(want);
    // The listener's identity headers: only sluice writes them, from the verified certificate.
    let (subject_header, san_header) = match cfg
        .listeners
        .get(usize::from(ctx.client.listener))
        .and_then(|l| l.tls.as_deref())
    {
        Some(t) => (
            t.subject_header.as_deref().map(str::as_bytes),
            t.san_header.as_deref().map(str::as_bytes),
        ),
        None => (None, None),
    };
    let identity_named = |name: &[u8]| {
        subject_header.is_some_and(|h| is(name, h)) || san_header.is_some_and(|h| is(name, h))
    };
    // Headers an external auth service sets: a client's own copies never pass.
    let ext_copied: &[String] = match ctx
        .ext_strip
        .and_then(|i| cfg.auth.get(i as usize))
        .map(|a| &a.kind)
    {
        Some(crate::config::AuthKind::ExtAuth(e)) => &e.copy_headers,
        _ => &[],
    };
    out.extend_from_slice(head.method());
    out.push(b' ');
    match route.forward_path {
        _ if head.path() == b"*" => out.push(b'*'),
        ForwardPath::Normalized => upstream_path(route, m, path, out),
        // Config validation keeps strip_prefix and rewrite_path off such routes: both cut the
        // canonical path, whose offsets mean nothing in the received one.
        ForwardPath::AsReceived => match head.path() {
            b"" => out.push(b'/'),
            received => out.extend_from_slice(received),
        },
    }
    if let Some(q) = head.query() {
        match (&cfg.api_key.query, strip) {
            (Some(param), Credential::KeyQuery) => query_without(out, q, param.as_bytes()),
            _ => {
                out.push(b'?');
                out.extend_from_slice(q);
            }
        }
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
    let rules = &route.request_headers;
    let ruled = !rules.is_empty();
    let mut has_xff = false;
    for h in &head.headers {
        let (name, value) = head.header(h);
        match h.kind {
            // A consumer header from the client is never believed: only sluice names the consumer.
            HeaderKind::Other
                if is(name, id_header)
                    || is(name, groups_header)
                    || (strip == Credential::KeyHeader && is(name, key_header))
                    || ext_copied.iter().any(|c| is(name, c.as_bytes()))
                    || identity_named(name) => {}
            HeaderKind::Authorization if strip == Credential::Authorization => {}
            // Config validation keeps every other kind's names out of the rules.
            HeaderKind::Other | HeaderKind::Authorization if ruled && rules.drops(name) => {}
            HeaderKind::Other | HeaderKind::Authorization => {
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
        forwarded_chain(out, head, &ctx.client);
    } else {
        out.extend_from_slice(ctx.client.as_bytes());
    }
    out.extend_from_slice(if ctx.client.tls {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if let Some(id) = &ctx.peer_identity {
        if let Some(h) = subject_header {
            out.extend_from_slice(h);
            out.extend_from_slice(b": ");
            header_safe(out, id.subject.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let (Some(h), false) = (san_header, id.sans.is_empty()) {
            out.extend_from_slice(h);
            out.extend_from_slice(b": ");
            for (i, san) in id.sans.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                header_safe(out, san.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
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
    if let Some((name, groups)) = ctx.identity.as_ref().and_then(|id| id.names(&ctx.gen)) {
        out.extend_from_slice(id_header);
        out.extend_from_slice(b": ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(groups_header);
        out.extend_from_slice(b": ");
        out.extend_from_slice(groups.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match vars {
        Some(v) if ruled => {
            rules.copy_kept(out, &ctx.upstream_edits.add);
            rules.write_fields(out, v);
        }
        _ => out.extend_from_slice(&ctx.upstream_edits.add),
    }
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

/// Writes `?query` without the parameter `param` (the API key), or nothing if no other is left.
fn query_without(out: &mut Vec<u8>, q: &[u8], param: &[u8]) {
    let mut first = true;
    for pair in q.split(|&b| b == b'&') {
        let name = match memchr::memchr(b'=', pair) {
            Some(i) => &pair[..i],
            None => pair,
        };
        if name == param {
            continue;
        }
        out.push(if first { b'?' } else { b'&' });
        out.extend_from_slice(pair);
        first = false;
    }
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
        out.extend_from_slice(client.as_bytes());
    }
}
