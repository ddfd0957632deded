//! The policy chain: checks that run on every request, in a fixed order, each able to let the request
//! go on or answer it. `PRE_ROUTE` policies run before the route lookup (they cannot depend on the
//! route: IP rules, global limits); `ROUTE` policies run once the route is known (body limits,
//! authentication, access rules, rate limits, quotas). Policies are pure checks over the request head
//! and the `Ctx`: no sockets, no awaiting, no allocation on the pass path.
//!
//! A new policy is one file in this folder plus one line in `PRE_ROUTE` or `ROUTE`.

mod body_size;
pub mod cors;
mod ip;

use crate::http1::head::RequestHead;
use crate::pipeline::ctx::Ctx;
use crate::respond::ProxyError;
use crate::router::CompiledRoute;

/// What a policy decided.
pub enum Outcome {
    /// The next policy (or the action) runs.
    Continue,
    /// The request is answered with this error (its status and message from `respond`), plus any
    /// headers the policy left in `ctx.downstream_edits` (`WWW-Authenticate`, `Retry-After`, ...).
    Reject(ProxyError),
    /// The gateway answers the request itself with this status, an empty body and the headers in
    /// `ctx.downstream_edits` (a CORS preflight's 204).
    Answer(u16),
}

/// Where in the pipeline a policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before the route lookup.
    PreRoute,
    /// After it.
    Route,
}

/// What a policy sees.
pub struct Input<'a> {
    /// The request head.
    pub head: &'a RequestHead,
    /// The matched route (None before routing).
    pub route: Option<&'a CompiledRoute>,
}

/// One check of the chain.
pub type Policy = fn(&Input<'_>, &mut Ctx) -> Outcome;

/// Policies before routing, in order.
const PRE_ROUTE: &[Policy] = &[ip::listener];

/// Policies once the route is known, in order.
// IP rules first: a refused client learns nothing else. CORS next, so the rejections after it carry
// the headers a browser script needs to read them.
const ROUTE: &[Policy] = &[ip::route, cors::cors, body_size::declared_length];

/// Runs the policies of `stage` until one does not continue.
pub fn run(
    stage: Stage,
    head: &RequestHead,
    ctx: &mut Ctx,
    route: Option<&CompiledRoute>,
) -> Outcome {
    let chain = match stage {
        Stage::PreRoute => PRE_ROUTE,
        Stage::Route => ROUTE,
    };
    let input = Input { head, route };
    for p in chain {
        match p(&input, ctx) {
            Outcome::Continue => {}
            other => return other,
        }
    }
    Outcome::Continue
}
