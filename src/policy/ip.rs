//! IP allow and deny lists: the listener's before routing, the route's once it is known, both
//! against the resolved client (`Ctx::client`: the peer, or whom a trusted proxy's X-Forwarded-For
//! names). Deny wins over allow; a refused client gets 403 with sluice's JSON error.
//!
//! Checked per request, not at accept: with trusted proxies the client is known only once the head
//! is read, and one rule for both cases keeps them from disagreeing. An empty list costs a length
//! check; a lookup is a binary search over ranges compiled at config load, with no allocation.

use super::{Input, Outcome};
use crate::pipeline::ctx::Ctx;
use crate::respond::{PolicyError, ProxyError};

/// The listener's `ip_allow` / `ip_deny` (a PRE_ROUTE policy).
pub fn listener(_input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    // A listener index from before a reload that removed listeners names none: nothing to check.
    match ctx
        .gen
        .config
        .listeners
        .get(usize::from(ctx.client.listener))
    {
        Some(l) if !l.ip.is_empty() && !l.ip.admits(ctx.client.ip) => denied(),
        _ => Outcome::Continue,
    }
}

/// The route's `ip_allow` / `ip_deny` (a ROUTE policy).
pub fn route(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    match input.route {
        Some(r) if !r.ip.is_empty() && !r.ip.admits(ctx.client.ip) => denied(),
        _ => Outcome::Continue,
    }
}

fn denied() -> Outcome {
    Outcome::Reject(ProxyError::Policy(PolicyError::IpDenied))
}
