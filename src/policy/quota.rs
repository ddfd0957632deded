//! Quotas: requests per day or month (UTC) per consumer, from its plan and its own override, counted
//! exactly across workers. A worker spends what the pool leased it; one that holds nothing asks and
//! the request waits for the answer (`Outcome::Defer`), since only the pool knows whether requests
//! are left, and leases shrink near the end so no worker sits on the last ones. Past the quota:
//! 429 with the period's end in `Retry-After` and `RateLimit-Reset`.

use super::rate_limit::{plan, write};
use super::{Deferred, Input, Outcome};
use crate::config::limits::QuotaSpec;
use crate::limit::period;
use crate::pipeline::ctx::Ctx;
use crate::respond::{PolicyError, ProxyError};

/// The quota policy.
pub fn check(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    if ctx.charged.quota {
        return Outcome::Continue;
    }
    let gen = &ctx.gen;
    let Some(entry) = ctx.identity.as_ref().and_then(|i| i.entry(gen)) else {
        return Outcome::Continue;
    };
    let plan = plan(gen, ctx.identity.as_ref());
    let Some(q) = QuotaSpec::effective(entry.quota.as_ref(), plan.and_then(|p| p.quota.as_ref()))
    else {
        return Outcome::Continue;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (start, end) = period::bounds(q.period, now);
    if let Some(bytes) = q.bytes {
        // Bytes are counted once requests are over, on the control thread, which names the
        // consumers whose bytes quota is used up (see `control::quota_watch`).
        if let Some(until) = input.worker.limits.blocked_until(&entry.name, now) {
            return refuse(ctx, (bytes, end - start, None), until, now);
        }
    }
    let Some(requests) = q.requests else {
        return Outcome::Continue;
    };
    let c = input.worker.limits.check_quota(&entry.name, &q, requests);
    let policy = (requests, end - start, None);
    if c.admitted {
        ctx.charged.quota = true;
        if !ctx.charged.headers {
            write(
                &mut ctx.downstream_edits.add,
                requests,
                c.remaining.min(requests),
                end - now,
                policy,
                None,
            );
            ctx.charged.headers = true;
        }
        return Outcome::Continue;
    }
    if c.exhausted_until > 0 {
        return refuse(ctx, policy, c.exhausted_until, now);
    }
    if ctx.verdicts.quota_waited() {
        return Outcome::Reject(ProxyError::Policy(PolicyError::QuotaUnavailable));
    }
    Outcome::Defer(Deferred::Quota {
        consumer: entry.name.clone(),
        period: q.period,
    })
}

/// 429 `quota exceeded` until `until` (Unix seconds), with the fields of `policy` (limit, window).
fn refuse(ctx: &mut Ctx, policy: (u64, u64, Option<u64>), until: u64, now: u64) -> Outcome {
    let wait = until.saturating_sub(now).max(1);
    if ctx.charged.headers {
        // The rate limit's fields were written for an admission; the refusal is the quota's.
        ctx.downstream_edits.add.clear();
    }
    write(
        &mut ctx.downstream_edits.add,
        policy.0,
        0,
        wait,
        policy,
        Some(wait),
    );
    Outcome::Reject(ProxyError::Policy(PolicyError::QuotaExceeded))
}
