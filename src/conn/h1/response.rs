//! The response head as the client gets it: the upstream's status and headers without hop-by-hop ones, a
//! repeated Content-Length, or (by default) the ones naming the backend's software, plus the request id,
//! a sticky-session cookie, the route's response header rules, chunked framing and the connection
//! header the client's side needs.

use crate::config::Sticky;
use crate::http1::head::{HeaderKind, ResponseHead};
use crate::policy::headers::{fingerprint, HeaderRules, Vars};

/// What the rewrite needs from the request side.
pub struct Rewrite<'a> {
    /// Added as `x-request-id` when the upstream sent none.
    pub id: &'a [u8],
    /// A sticky-session cookie to set: the policy and the endpoint's key.
    pub set_cookie: Option<(&'a Sticky, u64)>,
    /// Header lines policies add, in field-line form.
    pub extra: &'a [u8],
    /// The route's response header rules and the request's template values (None: no rules).
    pub rules: Option<(&'a HeaderRules, &'a Vars<'a>)>,
    /// Drop `Server`, `X-Powered-By` and the rest of `policy::headers::FINGERPRINTS`.
    pub hide_backend: bool,
    /// The client's HTTP minor version (1.0 clients are told about keep-alive).
    pub client_minor: u8,
    /// The body goes to the client chunked.
    pub chunked: bool,
    /// The connection stays open after this response.
    pub client_keep: bool,
}

/// Writes the client's response head into `out` (cleared first).
pub fn write_head(out: &mut Vec<u8>, resp: &ResponseHead, r: &Rewrite<'_>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason());
    out.extend_from_slice(b"\r\n");
    let mut has_id = false;
    let mut cl_written = false;
    for h in &resp.headers {
        let (name, value) = resp.header(h);
        match h.kind {
            HeaderKind::HopByHop => continue,
            HeaderKind::ContentLength if cl_written => continue,
            HeaderKind::ContentLength => cl_written = true,
            HeaderKind::RequestId => has_id = true,
            _ if r.hide_backend && fingerprint(name) => continue,
            _ if r.rules.is_some_and(|(rules, _)| rules.drops(name)) => continue,
            _ => {}
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(r.id);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((s, key)) = r.set_cookie {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(s.cookie.as_bytes());
        out.push(b'=');
        let mut hex = [0u8; 16];
        crate::hex::hex_into(&mut hex, key);
        out.extend_from_slice(&hex);
        out.extend_from_slice(b"; Path=/; HttpOnly");
        if let Some(ttl) = s.ttl {
            out.extend_from_slice(b"; Max-Age=");
            out.extend_from_slice(itoa::Buffer::new().format(ttl.as_secs()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    match r.rules {
        // Rules run last, so a `set` or `remove` also reaches what policies added (CORS, ...).
        Some((rules, vars)) => {
            rules.copy_kept(out, r.extra);
            rules.write_fields(out, vars);
        }
        None => out.extend_from_slice(r.extra),
    }
    if r.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !r.client_keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if r.client_minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
