//! The policy chain: checks that run on every request, in a fixed order, each able to let the request
//! go on or answer it. `PRE_ROUTE` policies run before the route lookup (they cannot depend on the
//! route: IP rules, global limits); `ROUTE` policies run once the route is known (body limits,
//! authentication, access rules, rate limits, quotas). Policies are pure checks over the request head,
//! its canonical path, and the `Ctx`: no sockets, no awaiting, no allocation on the pass path. Work
//! that cannot run on a worker (a password hash) is handed back as `Outcome::Defer`; the pipeline
//! awaits it and runs the stage again with the verdict in `ctx.verdict`.
//!
//! A new policy is one file in this folder plus one line in `PRE_ROUTE` or `ROUTE`. Beside the chain,
//! `headers` holds a route's header rules, which run when the upstream request and the response heads
//! are written, not as a check.

mod acl;
pub mod api_key;
pub mod auth;
pub mod auth_state;
pub mod authorization;
pub mod basic;
mod body_size;
pub mod ext_auth;
pub mod consumers;
pub mod deferral;
pub mod hasher;
pub mod headers;
pub mod jwt;
pub mod cors;
mod ip;

use crate::http1::head::RequestHead;
use crate::pipeline::ctx::Ctx;
use crate::respond::ProxyError;
use crate::router::CompiledRoute;
use crate::worker::Worker;
use auth_state::AuthState;
pub use deferral::{Deferred, Verdict};

/// What a policy decided.
pub enum Outcome {
    /// The next policy (or the action) runs.
    Continue,
    /// The request is answered with this error (its status and message from `respond`), plus any
    /// headers the policy left in `ctx.downstream_edits` (`WWW-Authenticate`, `Retry-After`, ...).
    Reject(ProxyError),
    /// The request is answered with this response (an external auth service's refusal).
    Respond(std::rc::Rc<ext_auth::Response>),
    /// Work that must not run on the worker (a password hash): the pipeline awaits it, puts its
    /// verdict in `ctx.verdict`, and runs the stage again, which then decides.
    Defer(Deferred),
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
    /// The canonical path (`http1::path`): what routing matched, and what every policy must judge
    /// instead of `head.path()`, the path as received.
    pub path: &'a [u8],
    /// The matched route (None before routing).
    pub route: Option<&'a CompiledRoute>,
    /// The worker's authentication state (runtime consumers, caches).
    pub auth: &'a AuthState,
    /// The worker (its token cache and fetched keys).
    pub worker: &'a Worker,
}

/// One check of the chain.
pub type Policy = fn(&Input<'_>, &mut Ctx) -> Outcome;

/// Policies before routing, in order.
const PRE_ROUTE: &[Policy] = &[ip::listener];

/// Policies once the route is known, in order.
// IP rules first: a refused client learns nothing else. CORS next, so the rejections after it carry
// the headers a browser script needs to read them. Then body size, authentication, access rules.
const ROUTE: &[Policy] = &[
    ip::route,
    cors::cors,
    body_size::declared_length,
    auth::authenticate,
    acl::check,
];

/// Runs the policies of `stage` until one does not continue.
pub fn run(
    stage: Stage,
    head: &RequestHead,
    path: &[u8],
    ctx: &mut Ctx,
    route: Option<&CompiledRoute>,
    worker: &Worker,
) -> Outcome {
    let chain = match stage {
        Stage::PreRoute => PRE_ROUTE,
        Stage::Route => ROUTE,
    };
    let input = Input {
        head,
        path,
        route,
        auth: &worker.auth,
        worker,
    };
    for p in chain {
        match p(&input, ctx) {
            Outcome::Continue => {}
            other => return other,
        }
    }
    Outcome::Continue
}
