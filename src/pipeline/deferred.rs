//! Checks a policy cannot make on the worker's thread of control without waiting: the pipeline awaits
//! them here (the worker's event loop serves other requests meanwhile) and hands the verdict back to
//! the policy, which runs again and decides. A password hash goes to the hashing pool; an external
//! auth check is a sub-request to the service's upstream group, and its decision is cached; a token
//! introspection call goes to the introspection threads, and its answer is cached.

use crate::config::ext_auth::ExtAuth;
use crate::config::AuthKind;
use crate::forward::subrequest;
use crate::http1::head::RequestHead;
use crate::msg::IntrospectionCall;
use crate::pipeline::ctx::Ctx;
use crate::policy::ext_auth::{decide, Decision};
use crate::policy::introspection::client::{self, Reply};
use crate::policy::introspection::{cache_until, Answer};
use crate::policy::{hasher, Deferred, Verdict};
use crate::worker::Worker;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

/// Runs one deferred check. `path` is the canonical path, `client` the client's address.
pub async fn run(
    w: &Worker,
    head: &RequestHead,
    path: &[u8],
    client: &str,
    ctx: &Ctx,
    d: Deferred,
) -> Verdict {
    match d {
        Deferred::Hash { cred, job } => Verdict::Hash(cred, hasher::verify(job).await),
        Deferred::ExtAuth { auth, key } => {
            let decision = match ctx.gen.config.auth.get(auth as usize).map(|a| &a.kind) {
                Some(AuthKind::ExtAuth(cfg)) => ext_auth(w, head, path, client, ctx, cfg).await,
                _ => None,
            };
            if let (Some(k), Some(d), Some(AuthKind::ExtAuth(cfg))) = (
                key,
                &decision,
                ctx.gen.config.auth.get(auth as usize).map(|a| &a.kind),
            ) {
                if let Some((_, ttl)) = &cfg.cache {
                    w.auth
                        .ext
                        .borrow_mut()
                        .put(k, Instant::now() + *ttl, d.clone());
                }
            }
            Verdict::ExtAuth { auth, decision }
        }
        Deferred::Introspect { auth, key, token } => Verdict::Introspect {
            key,
            answer: introspect(w, ctx, auth, key, token).await,
        },
        Deferred::Quota {
            consumer,
            period,
            requests,
            bytes,
        } => quota_lease(w, &consumer, period, requests, bytes).await,
    }
}

/// How long a quota check waits for the pool (the control thread answers an ask as soon as it reads
/// it; this bounds a stalled one).
const QUOTA_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits for the worker's quota shards to have something for `consumer` and takes the request's part
/// as soon as they do: several requests waiting on one worker each take theirs in turn, and one that
/// finds the grant spent by another waits on for the next (until `QUOTA_WAIT`).
async fn quota_lease(
    w: &Worker,
    consumer: &str,
    period: crate::config::limits::Period,
    requests: Option<u64>,
    bytes: Option<u64>,
) -> Verdict {
    use crate::policy::deferral::Waited;
    let deadline = Instant::now() + QUOTA_WAIT;
    let q = crate::config::limits::Quota {
        requests,
        bytes,
        period,
    };
    let mut r = if requests.is_some() {
        None
    } else {
        Some(Waited::No)
    };
    let mut b = if bytes.is_some() {
        None
    } else {
        Some(Waited::No)
    };
    loop {
        let granted = w.limits.granted.notified();
        if let (None, Some(cap)) = (b, bytes) {
            let (c, reserved) =
                w.limits
                    .reserve_bytes(consumer, period, cap, w.limits.bytes_estimate());
            if c.admitted {
                b = Some(Waited::Taken(reserved));
            } else if c.exhausted_until > 0 {
                b = Some(Waited::Exhausted(c.exhausted_until));
            }
        }
        if matches!(b, Some(Waited::Exhausted(_))) {
            // Refused for its bytes: the requests quota is not touched.
            return Verdict::Quota {
                requests: r.unwrap_or(Waited::No),
                bytes: b.unwrap_or(Waited::No),
            };
        }
        // The requests part once the bytes part is taken (see `policy::quota`).
        if let (None, Some(cap), Some(_)) = (r, requests, b) {
            let c = w.limits.check_quota(consumer, &q, cap);
            if c.admitted {
                r = Some(Waited::Taken(c.remaining.min(cap)));
            } else if c.exhausted_until > 0 {
                r = Some(Waited::Exhausted(c.exhausted_until));
            }
        }
        if let (Some(requests), Some(bytes)) = (r, b) {
            return Verdict::Quota { requests, bytes };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Verdict::Quota {
                requests: r.unwrap_or(Waited::TimedOut),
                bytes: b.unwrap_or(Waited::TimedOut),
            };
        }
        monoio::select! {
            _ = granted => {}
            _ = monoio::time::sleep(left) => {}
        }
    }
}

/// Asks introspection endpoint `auth` about `token` (on the introspection threads), caches what it
/// said under `key`, and tells the control thread how the call ended.
async fn introspect(w: &Worker, ctx: &Ctx, auth: u16, key: [u8; 32], token: String) -> Answer {
    let Some(a) = ctx.gen.config.auth.get(auth as usize) else {
        return Answer::Unavailable;
    };
    let AuthKind::Introspection(cfg) = &a.kind else {
        return Answer::Unavailable;
    };
    let job = client::Job {
        config: ctx.gen.config.clone(),
        auth: auth as usize,
        token,
        deadline: Instant::now() + cfg.timeout,
    };
    let (answer, call) = match client::introspect(job, cfg.timeout).await {
        Ok(Reply::Active(c)) => (Answer::Active(Rc::new(c)), IntrospectionCall::Active),
        Ok(Reply::Inactive) => (Answer::Inactive, IntrospectionCall::Inactive),
        Err(e) => {
            tracing::debug!(verifier = %a.name, error = %e, "token introspection failed");
            (
                Answer::Unavailable,
                IntrospectionCall::Failed(e.to_string()),
            )
        }
    };
    w.report_introspection(a.name.as_str().into(), call);
    let until = cache_until(
        &answer,
        cfg.cache_ttl,
        cfg.negative_cache_ttl,
        Instant::now(),
        SystemTime::now(),
    );
    if let Some(until) = until {
        w.auth.introspection.borrow_mut().put(key, until, &answer);
    }
    answer
}

/// Asks the service: `GET <path>` with the request's method, URI, host and client in
/// `X-Forwarded-*`, its request id, and the configured request headers.
async fn ext_auth(
    w: &Worker,
    head: &RequestHead,
    path: &[u8],
    client: &str,
    ctx: &Ctx,
    cfg: &ExtAuth,
) -> Option<Rc<Decision>> {
    let mut req = Vec::with_capacity(512);
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(cfg.path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    match head.host() {
        Some(h) => req.extend_from_slice(h),
        None => req.extend_from_slice(b"localhost"),
    }
    req.extend_from_slice(b"\r\nx-forwarded-method: ");
    req.extend_from_slice(head.method());
    req.extend_from_slice(b"\r\nx-forwarded-uri: ");
    req.extend_from_slice(path);
    if let Some(q) = head.query() {
        req.push(b'?');
        req.extend_from_slice(q);
    }
    req.extend_from_slice(if ctx.client.tls {
        b"\r\nx-forwarded-proto: https\r\nx-forwarded-for: "
    } else {
        b"\r\nx-forwarded-proto: http\r\nx-forwarded-for: "
    });
    req.extend_from_slice(client.as_bytes());
    if let Some(h) = head.host() {
        req.extend_from_slice(b"\r\nx-forwarded-host: ");
        req.extend_from_slice(h);
    }
    req.extend_from_slice(b"\r\nx-request-id: ");
    req.extend_from_slice(ctx.ids.id());
    req.extend_from_slice(b"\r\n");
    for h in &head.headers {
        let (n, v) = head.header(h);
        if cfg
            .forward_headers
            .iter()
            .any(|f| f.as_bytes().eq_ignore_ascii_case(n))
        {
            req.extend_from_slice(n);
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
    }
    req.extend_from_slice(b"\r\n");
    match subrequest::send(w, &ctx.gen, cfg.upstream, req, cfg.timeout).await {
        Ok(r) => {
            let status = r.status;
            let d = decide(
                cfg,
                status,
                |n| r.header(n).map(<[u8]>::to_vec),
                r.body.clone(),
            );
            if d.is_none() {
                tracing::debug!(status, "external auth answered neither 2xx nor 401/403");
            }
            d.map(Rc::new)
        }
        Err(e) => {
            tracing::debug!(error = %e, "external auth check failed");
            None
        }
    }
}
