//! The policy chain: checks that run on every request, in a fixed order, each able to let the request
//! go on or answer it. `PRE_ROUTE` policies run before the route lookup (they cannot depend on the
//! route: IP rules, global limits); `ROUTE` policies run once the route is known (body limits,
//! authentication, access rules, rate limits, quotas). Policies are pure checks over the request head,
//! its canonical path, and the `Ctx`: no sockets, no awaiting, no allocation on the pass path. Work
//! that cannot run on a worker (a password hash, an auth service's check, a token introspection call)
//! is handed back as `Outcome::Defer`; the pipeline
//! awaits it and runs the stage again with the verdict added to `ctx.verdicts`.
//!
//! A new policy is one file in this folder, plus a `chain::Step` (where it runs and when it
//! applies) and its line in `policy`. Beside the chain, `headers` holds a route's header rules,
//! which run when the upstream request and the response heads are written, not as a check.

mod acl;
pub mod api_key;
pub mod auth;
pub mod auth_state;
pub mod authorization;
pub mod basic;
mod body_size;
pub mod chain;
pub mod ext_auth;
pub mod consumers;
pub mod deferral;
pub mod hasher;
pub mod headers;
pub mod introspection;
pub mod jwt;
pub mod offload;
pub mod cors;
mod ip;
pub mod quota;
pub mod rate_limit;

use crate::http1::head::RequestHead;
use crate::pipeline::ctx::Ctx;
use crate::respond::ProxyError;
use crate::router::CompiledRoute;
use crate::worker::Worker;
use auth_state::AuthState;
pub use chain::Chains;
use chain::Step;
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
    /// Work that must not run on the worker (a password hash): the pipeline awaits it, adds its
    /// verdict to `ctx.verdicts`, and runs the stage again, which then decides.
    Defer(Deferred),
    /// The gateway answers the request itself with this status, an empty body and the headers in
    /// `ctx.downstream_edits` (a CORS preflight's 204).
    Answer(u16),
}

impl Outcome {
    /// `None` for `Continue`, else the outcome. Every request that passes a policy comes through
    /// here: `Continue` holds nothing, so it is let go without the out-of-line call into the enum's
    /// drop glue (there for the variants that do hold something) that an ordinary drop would cost.
    #[inline]
    pub fn decided(self) -> Option<Outcome> {
        if matches!(self, Outcome::Continue) {
            std::mem::forget(self);
            None
        } else {
            Some(self)
        }
    }
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

/// The policy a step names.
fn policy(step: Step) -> Policy {
    match step {
        Step::ListenerIp => ip::listener,
        Step::RouteIp => ip::route,
        Step::Cors => cors::cors,
        Step::BodySize => body_size::declared_length,
        Step::Auth => auth::authenticate,
        Step::Acl => acl::check,
        Step::RateLimit => rate_limit::check,
        Step::Quota => quota::check,
    }
}

/// Runs the policies of `stage` that apply until one does not continue. Before routing they are
/// the client's listener's (`ctx.client.listener`); after, those of `route` (its index, and it).
pub fn run(
    stage: Stage,
    head: &RequestHead,
    path: &[u8],
    ctx: &mut Ctx,
    route: Option<(usize, &CompiledRoute)>,
    worker: &Worker,
) -> Outcome {
    let (list, chain, route) = match (stage, route) {
        (Stage::PreRoute, _) => (
            chain::PRE_ROUTE,
            ctx.gen.chains.listener(usize::from(ctx.client.listener)),
            None,
        ),
        (Stage::Route, Some((i, r))) => (chain::ROUTE, ctx.gen.chains.route(i), Some(r)),
        (Stage::Route, None) => return Outcome::Continue,
    };
    let input = Input {
        head,
        path,
        route,
        auth: &worker.auth,
        worker,
    };
    for step in chain.steps(list) {
        if let Some(decided) = policy(step)(&input, ctx).decided() {
            return decided;
        }
    }
    Outcome::Continue
}
