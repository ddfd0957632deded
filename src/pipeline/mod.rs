//! One parsed request, from head to record, whatever protocol it came in on: pre-route policies, route
//! lookup, route policies, then the route's action (a direct response, or forwarding), all through the
//! connection driver's `Downstream`. The pipeline never sees a socket.
//!
//! ```text
//! conn driver -> pipeline::serve(ctx)
//!                  canonical path -> policy::PRE_ROUTE -> router -> policy::ROUTE
//!                  -> action: respond | forward
//!              -> pipeline::record::finish (counters, access log)
//! ```

pub mod client;
pub mod ctx;
mod deferred;
pub mod downstream;
pub mod record;

use crate::forward;
use crate::http1::encode::{Reply, ReplyBody};
use crate::http1::head::RequestHead;
use crate::http1::path::{self, PathError};
use crate::metrics::EndReason;
use crate::metrics::RequestRecord;
use crate::policy::cors::Preflight;
use crate::policy::{self, Outcome, Stage};
use crate::respond::{classify, error_reply, ProxyError};
use crate::router::{Action, RouteInput};
use crate::worker::{Gen, Worker};
pub use client::Client;
pub use ctx::{After, Buffers, Ctx};
use downstream::{Downstream, ResponseSink};
use std::pin::pin;

impl RouteInput for RequestHead {
    fn method(&self) -> &[u8] {
        RequestHead::method(self)
    }
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]> {
        self.get(lower_name)
    }
    fn query(&self) -> Option<&[u8]> {
        RequestHead::query(self)
    }
}

/// Serves one parsed request to its end and records it, whatever happens: a bug while serving it
/// (a panic, see `crate::panic`) is contained here, so it costs this request and its connection only.
pub async fn handle<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    ctx: &mut Ctx,
    bufs: &mut Buffers,
) -> After {
    let peer = d.peer();
    // A listener index from before a reload that removed listeners names none: no proxies trusted.
    let trusted = ctx.gen.config.listeners.get(usize::from(peer.listener));
    let no_proxies = crate::cidr::IpList::default();
    let trusted = trusted.map_or(&no_proxies, |l| &l.trusted_proxies);
    ctx.client = Client::resolve(peer, d.peer_ip(), trusted, head);
    ctx.peer_identity = d.peer_identity();
    ctx.downstream_edits.add = std::mem::take(&mut bufs.edits);
    // In flight until it is counted: a drain waits for in-flight requests before the worker's last
    // report, so a request must not look finished while its record (or a panic's 500) is still to come.
    let _req = w.begin_request();
    let served = {
        let request = pin!(serve(w, d, head, ctx, bufs));
        crate::panic::catch(request).await
    };
    let after = match served {
        Ok(after) => after,
        Err(p) => contained(w, d, ctx, &p).await,
    };
    bufs.edits = std::mem::take(&mut ctx.downstream_edits.add);
    bufs.edits.clear();
    crate::policy::quota::settle(w, ctx);
    ctx.rec.known_consumer = matches!(
        ctx.identity,
        Some(crate::pipeline::ctx::Identity::File(_) | crate::pipeline::ctx::Identity::Runtime(..))
    );
    let ids = &ctx.ids;
    record::finish(
        w,
        &ctx.gen,
        head,
        &ctx.rec,
        ids.id(),
        ids.traceparent(),
        ctx.client.as_bytes(),
        ctx.identity
            .as_ref()
            .and_then(|i| i.names(&ctx.gen))
            .map(|n| n.0),
    );
    after
}

/// After a panic while serving a request: counted, logged with the request id, and answered with a 500
/// when nothing of a response had been sent (else the connection just closes, as for any failure
/// after the response started). The connection always closes: its state is whatever the panic left.
async fn contained<D: Downstream>(
    w: &Worker,
    d: &mut D,
    ctx: &mut Ctx,
    p: &crate::panic::Panicked,
) -> After {
    w.count_panic();
    tracing::error!(
        worker = w.id,
        request_id = %String::from_utf8_lossy(ctx.ids.id()),
        panic = %p,
        "panic while serving a request; connection closed"
    );
    let e = ProxyError::Internal;
    ctx.rec.reason = classify(&e).reason;
    if ctx.rec.bytes_out == 0 {
        let reply = error_reply(&e, ctx.ids.id(), b"", ctx.head_request);
        ctx.rec.status = reply.status;
        let (_, mut sink) = d.split();
        let _ = sink.send_reply(&reply, true, &mut ctx.rec.bytes_out).await;
    }
    After::Close
}

/// A request whose head did not parse (`bytes_in` of it were read): its error response, after which the
/// connection closes. It is counted and logged with an empty request line, never with half-parsed spans.
pub async fn refuse_unparsed<D: Downstream>(
    w: &Worker,
    gen: &Gen,
    d: &mut D,
    e: &ProxyError,
    bytes_in: u64,
) {
    // In flight until counted, as in `run`: a drain waits for it.
    let _req = w.begin_request();
    let mut rec = RequestRecord::new(bytes_in);
    let mut id = [0u8; 32];
    w.ids.next_request_id(&mut id);
    // The head did not parse, so whether it was a HEAD is unknown; the connection closes after this
    // reply, so a body the client did not expect cannot be read as a next response.
    let reply = error_reply(e, &id, b"", false);
    rec.status = reply.status;
    rec.reason = classify(e).reason;
    let _ = d
        .split()
        .1
        .send_reply(&reply, true, &mut rec.bytes_out)
        .await;
    let empty = RequestHead::default();
    record::finish(
        w,
        gen,
        &empty,
        &rec,
        &id,
        b"-",
        d.peer_ip().as_bytes(),
        None,
    );
}

/// Serves one parsed request. The head stays valid for the whole call; `ctx` holds what happened.
///
/// Routing and every policy see the canonical path (`http1::path`), never the spelling received:
/// an access rule on `/admin/*` holds for `/%61dmin/x`, `/x/../admin/x` and `//admin/x` alike.
async fn serve<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    ctx: &mut Ctx,
    bufs: &mut Buffers,
) -> After {
    #[cfg(debug_assertions)]
    crate::panic::debug_failpoint(head.path());
    // The connection's path buffer is lent to this request (taking it costs no allocation; a panic
    // loses only its capacity). It is written only when the received path is not canonical.
    let mut scratch = std::mem::take(&mut bufs.path);
    let after = match path::normalise(head.path(), ctx.gen.http.merge_slashes, &mut scratch) {
        Ok(c) => {
            let canonical = c.path(head.path(), &scratch);
            dispatch(w, d, head, canonical, c.encoded_slash(), ctx, bufs).await
        }
        Err(e) => {
            let close = ctx.close_after_unread_body(head);
            reject(d, ctx, &ProxyError::Path(e), close).await
        }
    };
    bufs.path = scratch;
    after
}

/// Policies, route lookup and the route's action, on the canonical `path`.
async fn dispatch<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    path: &[u8],
    encoded_slash: bool,
    ctx: &mut Ctx,
    bufs: &mut Buffers,
) -> After {
    let gen = ctx.gen.clone();
    // Policies run here, outside `apply`: most requests pass them all, and entering the
    // deferral loop would cost them its future.
    if let Some(first) = policy::run(Stage::PreRoute, head, path, ctx, None, w).decided() {
        if let Some(after) = apply(w, d, head, path, ctx, Stage::PreRoute, None, first).await {
            return after;
        }
    }
    // A CORS preflight goes to the route its announced method would reach, when that route has CORS
    // rules; otherwise it is an OPTIONS request like any other (see `policy::cors`).
    let preflight = Preflight::of(head).and_then(|p| {
        let m = gen.routes.lookup(head.host(), path, &p)?;
        gen.routes.routes[m.route as usize]
            .cors
            .is_some()
            .then_some(m)
    });
    let Some(m) = preflight.or_else(|| gen.routes.lookup(head.host(), path, head)) else {
        let close = ctx.close_after_unread_body(head);
        let allow = &mut ctx.downstream_edits.add;
        let e = if gen.routes.allow_header(head.host(), path, head, allow) {
            ProxyError::MethodNotAllowed
        } else {
            ProxyError::NoRoute
        };
        return reject(d, ctx, &e, close).await;
    };
    let route = &gen.routes.routes[m.route as usize];
    ctx.rec.route = Some(m.route);
    // Only now is it known whether `%2F` may pass: normalising kept it as one opaque segment byte,
    // so it could not have steered the match to this route.
    if encoded_slash && !route.allow_encoded_slash {
        let close = ctx.close_after_unread_body(head);
        return reject(d, ctx, &ProxyError::Path(PathError::EncodedSlash), close).await;
    }
    let at = Some((m.route as usize, route));
    if let Some(first) = policy::run(Stage::Route, head, path, ctx, at, w).decided() {
        if let Some(after) = apply(w, d, head, path, ctx, Stage::Route, at, first).await {
            return after;
        }
    }
    ctx.rec.admitted = true;
    match &route.action {
        Action::Respond(r) => {
            let close = ctx.close_after_unread_body(head);
            // Policies' response headers (CORS) join the route's own; copied only when there are some.
            let headers: &[u8] = if ctx.downstream_edits.add.is_empty() {
                &r.headers
            } else {
                ctx.downstream_edits.add.extend_from_slice(&r.headers);
                &ctx.downstream_edits.add
            };
            let reply = Reply {
                status: r.status,
                headers,
                body: ReplyBody::Bytes(&r.body),
                request_id: ctx.ids.id(),
                head_only: ctx.head_request || r.status == 204 || r.status == 304,
            };
            send(d, &mut ctx.rec, &reply, EndReason::Direct, close).await
        }
        Action::Proxy(targets) => {
            match forward::forward(w, d, head, path, ctx, bufs, route, &m, targets).await {
                Ok(after) => after,
                // After an upstream error the request body was fully read (or never started), so the
                // connection can go on; after a body error its position in the stream is unknown.
                Err(e) => {
                    let close = !ctx.keep || classify(&e).body_unread;
                    reject(d, ctx, &e, close).await
                }
            }
        }
    }
}

/// Acts on what one stage of the policy chain decided (`first`, not `Continue`); `Some` when a
/// policy answered and the request is over. A deferred check is awaited here (the worker's loop runs
/// on meanwhile) and the stage runs again with its verdict added to the ones before. Only
/// authentication methods defer, each at most once per request (run again, it finds its verdict),
/// so a route with N methods needs at most N + 1 runs, `first` among them.
#[allow(clippy::too_many_arguments)]
async fn apply<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    path: &[u8],
    ctx: &mut Ctx,
    stage: Stage,
    route: Option<(usize, &crate::router::CompiledRoute)>,
    first: Outcome,
) -> Option<After> {
    // One more for a quota check that waited for its pool.
    let runs = 2 + route.map_or(0, |(_, r)| r.access.auth.len());
    let mut outcome = first;
    for _ in 0..runs {
        match outcome {
            Outcome::Continue => return None,
            Outcome::Reject(e) => {
                let close = ctx.close_after_unread_body(head);
                return Some(reject(d, ctx, &e, close).await);
            }
            Outcome::Respond(r) => {
                let close = ctx.close_after_unread_body(head);
                return Some(respond(d, ctx, &r, close).await);
            }
            Outcome::Defer(job) => {
                let client = ctx.client.text().to_string();
                let verdict = deferred::run(w, head, path, &client, ctx, job).await;
                ctx.verdicts.push(verdict);
                outcome = policy::run(stage, head, path, ctx, route, w);
            }
            Outcome::Answer(status) => {
                let close = ctx.close_after_unread_body(head);
                let reply = Reply {
                    status,
                    headers: &ctx.downstream_edits.add,
                    body: ReplyBody::Bytes(b""),
                    request_id: ctx.ids.id(),
                    head_only: true,
                };
                return Some(send(d, &mut ctx.rec, &reply, EndReason::Direct, close).await);
            }
        }
    }
    // Unreachable with the policies there are: a policy that kept deferring must not loop forever.
    let close = ctx.close_after_unread_body(head);
    Some(reject(d, ctx, &ProxyError::Internal, close).await)
}

/// Answers the request with a policy's response (an auth service's refusal, passed on).
async fn respond<D: Downstream>(
    d: &mut D,
    ctx: &mut Ctx,
    r: &policy::ext_auth::Response,
    close: bool,
) -> After {
    let reply = Reply {
        status: r.status,
        headers: &r.headers,
        body: ReplyBody::Bytes(&r.body),
        request_id: ctx.ids.id(),
        head_only: ctx.head_request,
    };
    send(d, &mut ctx.rec, &reply, EndReason::Policy, close).await
}

/// Answers the request with the error response for `e`, with the headers policies put in
/// `ctx.downstream_edits`.
pub async fn reject<D: Downstream>(d: &mut D, ctx: &mut Ctx, e: &ProxyError, close: bool) -> After {
    let reply = error_reply(e, ctx.ids.id(), &ctx.downstream_edits.add, ctx.head_request);
    send(d, &mut ctx.rec, &reply, classify(e).reason, close).await
}

/// Sends a reply sluice wrote itself and records it; the connection goes on unless `close` or the
/// write failed.
async fn send<D: Downstream>(
    d: &mut D,
    rec: &mut RequestRecord,
    reply: &Reply<'_>,
    reason: EndReason,
    close: bool,
) -> After {
    rec.status = reply.status;
    rec.reason = reason;
    let (_, mut sink) = d.split();
    let sent = sink.send_reply(reply, close, &mut rec.bytes_out).await;
    if sent.is_err() || close {
        After::Close
    } else {
        After::KeepAlive
    }
}
