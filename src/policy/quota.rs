//! Quotas: requests and bytes per day or month (UTC) per consumer, from its plan and its own override,
//! counted exactly across workers. A worker spends what the pool leased it; one that holds nothing
//! asks and the request waits for the answer (`Outcome::Defer`), since only the pool knows whether
//! anything is left, and leases shrink near the end so no worker sits on the last of it. A bytes
//! quota admits while the worker holds any of it, reserving an estimate that is settled with the
//! request's real size at its end. Past the quota: 429 with the period's end in `Retry-After` and
//! `RateLimit-Reset`.

use super::deferral::Waited;
use super::rate_limit::{plan, write};
use super::{Deferred, Input, Outcome};
use crate::config::limits::QuotaSpec;
use crate::limit::period;
use crate::pipeline::ctx::Ctx;
use crate::respond::{PolicyError, ProxyError};

/// The quota policy.
pub fn check(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    let Some(q) = quota_of(ctx) else {
        return Outcome::Continue;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (start, end) = period::bounds(q.period, now);
    let waited = ctx.verdicts.quota();
    // After a wait for the pool: what the wait took for each part (it took it already).
    if let Some((r, b)) = waited {
        if let (Some(cap), Waited::Exhausted(until)) = (q.bytes, b) {
            return refuse(ctx, (cap, end - start, None), until, now);
        }
        if let Waited::Taken(reserved) = b {
            if ctx.charged.bytes.is_none() {
                ctx.charged.bytes = Some((q.period, reserved));
            }
        }
        match (q.requests, r) {
            (Some(cap), Waited::Exhausted(until)) => {
                release_bytes(input, ctx);
                return refuse(ctx, (cap, end - start, None), until, now);
            }
            (Some(cap), Waited::Taken(left)) if !ctx.charged.quota => {
                ctx.charged.quota = true;
                admitted_fields(ctx, cap, left, end - start, end - now);
            }
            _ => {}
        }
        if r == Waited::TimedOut || b == Waited::TimedOut {
            release_bytes(input, ctx);
            return Outcome::Reject(ProxyError::Policy(PolicyError::QuotaUnavailable));
        }
    }
    // Run again after a deferral, a part already charged is not charged twice.
    let requests = q.requests.filter(|_| !ctx.charged.quota);
    let bytes = q.bytes.filter(|_| ctx.charged.bytes.is_none());
    if requests.is_none() && bytes.is_none() {
        return Outcome::Continue;
    }
    let Some(entry) = ctx.identity.as_ref().and_then(|i| i.entry(&ctx.gen)) else {
        return Outcome::Continue;
    };
    let limits = &input.worker.limits;
    let mut wait_bytes = None;
    if let Some(cap) = bytes {
        // A request's size is known only once it is over: it reserves what this worker's requests
        // move on average, and the difference is settled at its end (`settle`).
        let (c, reserved) =
            limits.reserve_bytes(&entry.name, q.period, cap, limits.bytes_estimate());
        if c.admitted {
            ctx.charged.bytes = Some((q.period, reserved));
        } else if c.exhausted_until > 0 {
            return refuse(ctx, (cap, end - start, None), c.exhausted_until, now);
        } else {
            wait_bytes = Some(cap);
        }
    }
    let mut wait_requests = None;
    if let (Some(cap), Some(_)) = (requests, wait_bytes) {
        // Taken only once the bytes are: a request the bytes quota then refuses must not have
        // spent one of the requests quota.
        wait_requests = Some(cap);
    } else if let Some(cap) = requests {
        let c = limits.check_quota(&entry.name, &q, cap);
        if c.admitted {
            ctx.charged.quota = true;
            admitted_fields(ctx, cap, c.remaining, end - start, end - now);
        } else if c.exhausted_until > 0 {
            release_bytes(input, ctx);
            return refuse(ctx, (cap, end - start, None), c.exhausted_until, now);
        } else {
            wait_requests = Some(cap);
        }
    }
    if wait_bytes.is_none() && wait_requests.is_none() {
        return Outcome::Continue;
    }
    if waited.is_some() {
        // Only a part decided before the wait can be here; waiting twice is not allowed.
        release_bytes(input, ctx);
        return Outcome::Reject(ProxyError::Policy(PolicyError::QuotaUnavailable));
    }
    let Some(entry) = ctx.identity.as_ref().and_then(|i| i.entry(&ctx.gen)) else {
        return Outcome::Continue;
    };
    Outcome::Defer(Deferred::Quota {
        consumer: entry.name.clone(),
        period: q.period,
        requests: wait_requests,
        bytes: wait_bytes,
    })
}

/// The quota in force for the request's consumer: its own fields over its plan's.
fn quota_of(ctx: &Ctx) -> Option<crate::config::limits::Quota> {
    let entry = ctx.identity.as_ref()?.entry(&ctx.gen)?;
    let plan = plan(&ctx.gen, ctx.identity.as_ref());
    QuotaSpec::effective(entry.quota.as_ref(), plan.and_then(|p| p.quota.as_ref()))
}

/// The `RateLimit-*` fields of a request its requests quota admitted (unless a rate limit wrote
/// them already).
fn admitted_fields(ctx: &mut Ctx, cap: u64, remaining: u64, window: u64, reset: u64) {
    if !ctx.charged.headers {
        write(
            &mut ctx.downstream_edits.add,
            cap,
            remaining.min(cap),
            reset,
            (cap, window, None),
            None,
        );
        ctx.charged.headers = true;
    }
}

/// Gives back a bytes reservation of a request refused after all.
fn release_bytes(input: &Input<'_>, ctx: &mut Ctx) {
    let Some((period, reserved)) = ctx.charged.bytes.take() else {
        return;
    };
    if let Some(entry) = ctx.identity.as_ref().and_then(|i| i.entry(&ctx.gen)) {
        input
            .worker
            .limits
            .settle_bytes(&entry.name, period, reserved, 0);
    }
}

/// Settles a request's bytes reservation with what it moved, once it is over.
pub fn settle(w: &crate::worker::Worker, ctx: &Ctx) {
    let Some((period, reserved)) = ctx.charged.bytes else {
        return;
    };
    if let Some(entry) = ctx.identity.as_ref().and_then(|i| i.entry(&ctx.gen)) {
        let used = ctx.rec.bytes_in + ctx.rec.bytes_out;
        w.limits.settle_bytes(&entry.name, period, reserved, used);
    }
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
