//! CORS (the Fetch standard's CORS protocol) for routes with `cors = { ... }`: preflights are
//! answered here, never forwarded, and responses to actual requests from an allowed origin carry
//! `Access-Control-Allow-Origin`. Runs first among the route policies, so a rejection by a later one
//! (401, 429) still carries the CORS headers a script needs to read it.
//!
//! Like Kong's CORS plugin, an origin that is not allowed is not refused: its preflight is answered
//! 204 and its requests pass, both without `Access-Control-*` headers, and the browser withholds the
//! response from the script. CORS protects browser users, not the backend: a non-browser client
//! ignores it either way, so refusing would add nothing but a second way to fail.
//!
//! A preflight is routed by the method it announces (`Access-Control-Request-Method`), not by
//! OPTIONS (see `Preflight`), so a route with `methods = ["GET", "POST"]` answers its own preflights.
//! Routes without `cors` cost one `Option` check; nothing allocates unless a route has CORS rules.

use super::{Input, Outcome};
use crate::http1::head::{trim, Method, RequestHead};
use crate::pipeline::ctx::Ctx;
use crate::router::RouteInput;

/// A preflight, as the router sees it: the request with the method its preflight announces.
pub struct Preflight<'a> {
    /// The OPTIONS request.
    pub head: &'a RequestHead,
    /// Its `Access-Control-Request-Method`.
    pub method: &'a [u8],
}

impl<'a> Preflight<'a> {
    /// The preflight view of `head` when it is one: OPTIONS with `Origin` and
    /// `Access-Control-Request-Method`. Anything else is an ordinary request.
    #[inline]
    pub fn of(head: &'a RequestHead) -> Option<Preflight<'a>> {
        // Asked of every request: the method test stays inline, the header lookups do not.
        if head.method_kind() != Method::Options {
            return None;
        }
        Preflight::of_options(head)
    }

    fn of_options(head: &'a RequestHead) -> Option<Preflight<'a>> {
        head.get(b"origin")?;
        let method = trim(head.get(b"access-control-request-method")?);
        (!method.is_empty()).then_some(Preflight { head, method })
    }
}

impl RouteInput for Preflight<'_> {
    fn method(&self) -> &[u8] {
        self.method
    }
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]> {
        self.head.get(lower_name)
    }
    fn query(&self) -> Option<&[u8]> {
        self.head.query()
    }
}

/// Answers preflights with 204; adds the origin's headers to other responses.
pub fn cors(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    let Some(c) = input.route.and_then(|r| r.cors.as_deref()) else {
        return Outcome::Continue;
    };
    let head = input.head;
    let origin = head.get(b"origin").map(trim);
    let allowed = origin.filter(|o| match &c.origins {
        None => true,
        Some(list) => list.iter().any(|a| a.eq_ignore_ascii_case(o)),
    });
    // With an origin list (or credentials) the answer depends on Origin, so caches must key on it.
    let varies = c.origins.is_some() || c.credentials;
    let e = &mut ctx.downstream_edits;
    let preflight = Preflight::of(head).is_some();
    if preflight {
        match (varies, c.echo_headers) {
            (true, true) => e.push(b"vary", b"Origin, Access-Control-Request-Headers"),
            (true, false) => e.push(b"vary", b"Origin"),
            (false, true) => e.push(b"vary", b"Access-Control-Request-Headers"),
            (false, false) => {}
        }
    } else if varies {
        e.push(b"vary", b"Origin");
    }
    if let Some(o) = allowed {
        // `*` only where no credentials are involved: browsers refuse it with them (Fetch §3.2.5).
        let value = if c.origins.is_none() && !c.credentials {
            &b"*"[..]
        } else {
            o
        };
        e.push(b"access-control-allow-origin", value);
        if preflight {
            e.add.extend_from_slice(&c.preflight);
            if c.echo_headers {
                if let Some(h) = head.get(b"access-control-request-headers") {
                    e.push(b"access-control-allow-headers", trim(h));
                }
            }
        } else {
            e.add.extend_from_slice(&c.response);
        }
    }
    if preflight {
        return Outcome::Answer(204);
    }
    Outcome::Continue
}
