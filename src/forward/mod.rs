//! Forwarding a request to an upstream group: the route's target, the circuit-breaker gate, the
//! endpoint pick (balancer, sticky sessions), retries within the retry budget, and passive health.
//! One attempt (`attempt`) talks to one endpoint. A failure before the response started becomes an
//! error response; after it, the connection closes and the record keeps the cause. Never holds a
//! RefCell borrow across an await; allocates nothing per request beyond the connection's buffers.

mod attempt;
pub mod subrequest;

use crate::config::{HashOn, SplitTarget};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, RequestHead};
use crate::metrics::RequestRecord;
use crate::pipeline::ctx::{After, Buffers, Ctx};
use crate::pipeline::downstream::{Downstream, RequestBody};
use crate::policy::headers::Vars;
use crate::respond::{classify, ProxyError, UpstreamError};
use crate::router::{choose_target, CompiledRoute, Match};
use crate::upstream::balance::hash64;
use crate::upstream::request::{build_request_head, cookie, parse_hex};
use crate::worker::Worker;
use attempt::{attempt, Attempt, ReqBody};
use bytes::Buf;
use std::time::Instant;

/// Where a failure happened relative to the response.
pub enum Fail {
    /// Nothing sent to the client yet: answer with an error response.
    Before(ProxyError),
    /// The response had started: the connection closes; the cause is recorded.
    After(ProxyError),
}

impl From<ProxyError> for Fail {
    fn from(e: ProxyError) -> Self {
        Fail::Before(e)
    }
}

/// Forwards the request to one of `targets` and relays the answer. An error is one to answer the
/// client with: nothing of a response was sent yet. `path` is the canonical path `m` was matched
/// on (its captures are offsets into it).
#[allow(clippy::too_many_arguments)]
pub async fn forward<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    path: &[u8],
    ctx: &mut Ctx,
    bufs: &mut Buffers,
    route: &CompiledRoute,
    m: &Match,
    targets: &[SplitTarget],
) -> Result<After, ProxyError> {
    let gen = ctx.gen.clone();
    let gi = if targets.len() == 1 {
        targets[0].upstream
    } else {
        gen.with_split(m.route as usize, |rr| choose_target(targets, head, rr))
    };
    match proxy(w, d, head, path, ctx, bufs, route, m, gi).await {
        Ok(after) => Ok(after),
        Err(Fail::After(e)) => {
            ctx.rec.reason = classify(&e).reason;
            Ok(After::Close)
        }
        Err(Fail::Before(e)) => {
            if classify(&e).status >= 500 {
                tracing::debug!(error = %e, route = %route.name, "upstream failure");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn proxy<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    path: &[u8],
    ctx: &mut Ctx,
    bufs: &mut Buffers,
    route: &CompiledRoute,
    m: &Match,
    gi: usize,
) -> Result<After, Fail> {
    let gen = ctx.gen.clone();
    let spec = &gen.upstreams[gi];
    let ucfg = &spec.cfg;
    let framing = head.body();
    // What header rules' templates may name, gathered only for a route that has rules.
    let vars = route.has_header_rules().then(|| {
        let names = ctx.identity.as_ref().and_then(|i| i.names(&gen));
        Vars {
            consumer: names.map_or(&b""[..], |n| n.0.as_bytes()),
            consumer_groups: names.map_or(&b""[..], |n| n.1.as_bytes()),
            route: route.name.as_bytes(),
            client: ctx.client.text().as_bytes(),
            request_id: ctx.ids.id(),
            host: head.host().unwrap_or_default(),
            method: head.method(),
            path,
        }
    });
    // The request (head, and the body when it is already here) is built once and kept for retries.
    let req = &mut bufs.upstream_req;
    req.clear();
    build_request_head(
        req,
        head,
        path,
        route,
        m,
        ctx,
        framing,
        spec.endpoints.first().map(|e| e.addr),
        vars.as_ref(),
    );
    let body = take_buffered_body(
        req,
        d.split().0.buf(),
        framing,
        route.max_body_bytes,
        &mut ctx.rec,
    )?;

    // Circuit breaker: a slot for this upstream on this worker, waiting a bounded time.
    let Some(gate) = gen.gate(gi) else {
        return Err(ProxyError::Upstream(UpstreamError::NoHealthy(gi)).into());
    };
    let _permit = match gate.try_acquire() {
        Some(p) => p,
        None => match gate.acquire() {
            Err(_) => return Err(ProxyError::Upstream(UpstreamError::CircuitOpen(gi)).into()),
            Ok(wait) => match monoio::time::timeout(ucfg.queue_timeout, wait).await {
                Ok(p) => p,
                Err(_) => return Err(ProxyError::Upstream(UpstreamError::CircuitOpen(gi)).into()),
            },
        },
    };

    let hash = match &ucfg.balancer {
        crate::config::Balancer::ConsistentHash(on) => match on {
            HashOn::ClientIp => Some(hash64(ctx.client.as_bytes())),
            HashOn::Header(n) => head.get(n.as_bytes()).map(hash64),
            HashOn::Cookie(n) => cookie(head, n.as_bytes()).map(hash64),
        },
        _ => None,
    };
    let sticky_key = ucfg
        .sticky
        .as_ref()
        .and_then(|s| cookie(head, s.cookie.as_bytes()))
        .and_then(parse_hex);
    let start = Instant::now();
    let deadline = ucfg.total_timeout.map(|t| start + t);
    gen.with_group(gi, |g| g.note_request(start));

    let mut attempts = 0u32;
    let mut avoid = None;
    loop {
        let now = Instant::now();
        let picked = gen.with_group(gi, |g| {
            let ep = match sticky_key.and_then(|k| {
                if avoid.is_none() {
                    g.by_key(k, now)
                } else {
                    None
                }
            }) {
                Some(i) => Some(i),
                None => g.pick(hash, avoid, now),
            };
            ep.map(|i| {
                g.eps[i].in_flight += 1;
                (i, g.eps[i].addr, g.eps[i].key, g.eps[i].entry)
            })
        });
        let Some(Some((ep, addr, key, entry))) = picked else {
            return Err(ProxyError::Upstream(UpstreamError::NoHealthy(gi)).into());
        };
        ctx.rec.endpoint = Some((gi as u32, ep as u32));
        ctx.rec.attempts = ctx.rec.attempts.saturating_add(1);
        let set_cookie = match (&ucfg.sticky, sticky_key) {
            (Some(s), k) if k != Some(key) => Some((s, key)),
            _ => None,
        };
        let plan = Attempt {
            head,
            ucfg,
            tls: spec.tls.as_ref(),
            addr,
            entry,
            body: &body,
            deadline,
            keep: ctx.keep,
            max_body: route.max_body_bytes,
            body_timeout: gen.http.body_timeout,
            set_cookie,
            id: ctx.ids.id(),
            extra: &ctx.downstream_edits.add,
            rules: vars
                .as_ref()
                .filter(|_| !route.response_headers.is_empty())
                .map(|v| (&route.response_headers, v)),
            hide_backend: route.hide_backend,
            intercept_errors: route.intercept_errors,
        };
        let res = attempt(w, d, bufs, &plan, &mut ctx.rec).await;
        gen.with_group(gi, |g| {
            if let Some(e) = g.eps.get_mut(ep) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        });
        match res {
            Ok(after) => {
                gen.with_group(gi, |g| g.success(ep));
                return Ok(after);
            }
            Err(e) => {
                if e.endpoint_fault {
                    let now = Instant::now();
                    if gen.with_group(gi, |g| g.failure(ep, now)) == Some(true) {
                        tracing::warn!(upstream = %ucfg.name, endpoint = %addr, worker = w.id, "endpoint ejected after consecutive failures");
                    }
                }
                let may_retry = e.retryable
                    && attempts < ucfg.retries
                    && deadline.is_none_or(|d| Instant::now() < d)
                    && (e.stale
                        || gen.with_group(gi, |g| g.try_retry(Instant::now())) == Some(true));
                if may_retry {
                    attempts += 1;
                    if !e.stale {
                        avoid = Some(ep);
                    }
                    continue;
                }
                return Err(e.fail);
            }
        }
    }
}

/// Moves a request body that is already wholly in the client's buffer behind the upstream request, so
/// it goes in the same write and can be replayed on a retry; otherwise the body will stream.
fn take_buffered_body(
    req: &mut Vec<u8>,
    cbuf: &mut bytes::BytesMut,
    framing: Framing,
    max_body: u64,
    rec: &mut RequestRecord,
) -> Result<ReqBody, ProxyError> {
    Ok(match framing {
        Framing::None | Framing::Close => ReqBody::Buffered,
        Framing::Length(n) => {
            if cbuf.len() as u64 >= n {
                req.extend_from_slice(&cbuf[..n as usize]);
                cbuf.advance(n as usize);
                rec.bytes_in += n;
                ReqBody::Buffered
            } else {
                ReqBody::Stream(framing)
            }
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let p = dec.feed(cbuf, |_| ()).map_err(ProxyError::Chunk)?;
            if dec.data_bytes() > max_body {
                return Err(ProxyError::BodyTooLarge);
            }
            if p.done {
                req.extend_from_slice(&cbuf[..p.consumed]);
                cbuf.advance(p.consumed);
                rec.bytes_in += p.consumed as u64;
                ReqBody::Buffered
            } else {
                ReqBody::Stream(framing)
            }
        }
    })
}
