//! Access rules, once the caller is known: the route's `allow` list (consumer or group names; absent
//! = any authenticated caller) and the scopes and claim values it requires of the token that
//! authenticated the request. Refusals are 403.

use super::{Input, Outcome};
use crate::metrics::{AuthMark, AuthOutcome};
use crate::pipeline::ctx::Ctx;
use crate::respond::{PolicyError, ProxyError};

/// The access rule policy.
pub fn check(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    let Some(route) = input.route else {
        return Outcome::Continue;
    };
    let access = &route.access;
    if access.auth.is_empty() {
        return Outcome::Continue;
    }
    let refuse = |ctx: &mut Ctx, outcome| {
        if let Some(a) = ctx.rec.auth {
            ctx.rec.auth = Some(AuthMark { outcome, ..a });
        }
        Outcome::Reject(ProxyError::Policy(PolicyError::Forbidden))
    };
    if let Some(allow) = &access.allow {
        let admitted = match &ctx.identity {
            Some(id) => id.entry(&ctx.gen).is_some_and(|e| e.allowed_by(allow)),
            None => false,
        };
        if !admitted {
            return refuse(ctx, AuthOutcome::Denied);
        }
    }
    // A plan names the routes its consumers may call. A runtime consumer whose plan a reload took
    // away is refused rather than let through without the plan's limits.
    let plan = ctx
        .identity
        .as_ref()
        .and_then(|i| i.entry(&ctx.gen))
        .and_then(|e| e.plan.as_deref());
    let outside_plan =
        plan.is_some_and(
            |name| match ctx.gen.config.plans.iter().find(|p| &*p.name == name) {
                Some(p) => p
                    .allow
                    .as_ref()
                    .is_some_and(|allow| !allow.contains(&route.name)),
                None => true,
            },
        );
    if outside_plan {
        return refuse(ctx, AuthOutcome::Denied);
    }
    // Scopes and claims come only from tokens; a key or password carries none.
    if !access.require_scopes.is_empty() || !access.require_claims.is_empty() {
        let ok = ctx.claims.as_ref().is_some_and(|c| {
            access.require_scopes.iter().all(|s| c.has_scope(s))
                && access
                    .require_claims
                    .iter()
                    .all(|(name, want)| c.claim_matches(name, want))
        });
        if !ok {
            // RFC 6750 §3.1: say which scope the resource needs.
            if !access.require_scopes.is_empty() {
                let e = &mut ctx.downstream_edits.add;
                e.extend_from_slice(
                    b"www-authenticate: Bearer realm=\"sluice\", error=\"insufficient_scope\", scope=\"",
                );
                for (i, s) in access.require_scopes.iter().enumerate() {
                    if i > 0 {
                        e.push(b' ');
                    }
                    e.extend_from_slice(s.as_bytes());
                }
                e.extend_from_slice(b"\"\r\n");
            }
            return refuse(ctx, AuthOutcome::InsufficientScope);
        }
    }
    Outcome::Continue
}
