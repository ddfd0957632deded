//! Rate limits: the route's `rate_limit` and the consumer's plan's `limits`, each a token bucket
//! whose tokens this worker holds a share of (`limit`). Every limit that applies must admit the
//! request; the tightest one names the `RateLimit-*` fields of the response, and a refusal is 429
//! with `Retry-After`. Nothing here waits: a worker with no token refuses from what it holds.

use super::{Input, Outcome};
use crate::config::limits::{Limit, Plan};
use crate::limit::key::KeyInput;
use crate::pipeline::ctx::{Ctx, Identity};
use crate::respond::{PolicyError, ProxyError};
use crate::worker::Gen;

/// The plan of the request's consumer, if it has one in generation `gen` (the request's).
pub fn plan<'a>(gen: &'a Gen, identity: Option<&'a Identity>) -> Option<&'a Plan> {
    let name = identity?.entry(gen)?.plan.as_deref()?;
    gen.config.plans.iter().find(|p| p.name == name)
}

/// The rate limit policy.
pub fn check(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    let Some(route) = input.route else {
        return Outcome::Continue;
    };
    if ctx.charged.rate {
        return Outcome::Continue;
    }
    let gen = &ctx.gen;
    let plan_limits: &[usize] = plan(gen, ctx.identity.as_ref()).map_or(&[], |p| &p.limits);
    if route.rate_limit.is_empty() && plan_limits.is_empty() {
        return Outcome::Continue;
    }
    let consumer = ctx
        .identity
        .as_ref()
        .and_then(|i| i.names(gen))
        .map(|n| n.0);
    let key = KeyInput {
        head: input.head,
        consumer,
        client: ctx.client.ip,
        route: &route.name,
    };
    // The limit with the fewest requests left, and what it left.
    let mut tightest: Option<(&Limit, u64)> = None;
    for &i in route.rate_limit.iter().chain(plan_limits) {
        let Some(l) = gen.config.limits.get(i) else {
            continue;
        };
        let Some(c) = input.worker.limits.check_rate(i, &l.key, &key) else {
            continue;
        };
        if !c.admitted {
            let retry = (1.0 / l.per_sec()).ceil().max(1.0) as u64;
            fields(&mut ctx.downstream_edits.add, l, 0, Some(retry));
            ctx.charged.headers = true;
            return Outcome::Reject(ProxyError::Policy(PolicyError::TooManyRequests));
        }
        if tightest.is_none_or(|(_, r)| c.remaining < r) {
            tightest = Some((l, c.remaining));
        }
    }
    ctx.charged.rate = true;
    if let Some((l, remaining)) = tightest {
        fields(&mut ctx.downstream_edits.add, l, remaining, None);
        ctx.charged.headers = true;
    }
    Outcome::Continue
}

/// Writes `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy` for `l` (and `Retry-After` on a
/// refusal). Reset: seconds until the bucket is full again at the limit's rate.
pub fn fields(out: &mut Vec<u8>, l: &Limit, remaining: u64, retry_after: Option<u64>) {
    let remaining = remaining.min(l.burst);
    let reset = ((l.burst - remaining) as f64 / l.per_sec()).ceil() as u64;
    let reset = retry_after.map_or(reset, |r| reset.max(r));
    write(
        out,
        l.count,
        remaining,
        reset,
        (l.count, l.window_secs, Some(l.burst)),
        retry_after,
    );
}

/// Writes the fields from their values; `policy` is (count, window seconds, burst).
pub fn write(
    out: &mut Vec<u8>,
    limit: u64,
    remaining: u64,
    reset: u64,
    policy: (u64, u64, Option<u64>),
    retry_after: Option<u64>,
) {
    let mut n = itoa::Buffer::new();
    let mut line = |name: &[u8], v: u64| {
        out.extend_from_slice(name);
        out.extend_from_slice(n.format(v).as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    line(b"ratelimit-limit: ", limit);
    line(b"ratelimit-remaining: ", remaining);
    line(b"ratelimit-reset: ", reset);
    if let Some(r) = retry_after {
        line(b"retry-after: ", r);
    }
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"ratelimit-policy: ");
    out.extend_from_slice(n.format(policy.0).as_bytes());
    out.extend_from_slice(b";w=");
    out.extend_from_slice(n.format(policy.1).as_bytes());
    if let Some(b) = policy.2 {
        out.extend_from_slice(b";burst=");
        out.extend_from_slice(n.format(b).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_integers_and_a_refusal_says_when_to_retry() {
        let l = Limit {
            name: "l".into(),
            count: 10,
            window_secs: 1,
            burst: 20,
            key: vec![],
            max_keys: 1,
        };
        let mut out = Vec::new();
        fields(&mut out, &l, 15, None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "ratelimit-limit: 10\r\nratelimit-remaining: 15\r\nratelimit-reset: 1\r\n\
             ratelimit-policy: 10;w=1;burst=20\r\n"
        );
        out.clear();
        fields(&mut out, &l, 0, Some(1));
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("ratelimit-remaining: 0\r\n"));
        assert!(s.contains("ratelimit-reset: 2\r\n"));
        assert!(s.contains("retry-after: 1\r\n"));
    }
}
