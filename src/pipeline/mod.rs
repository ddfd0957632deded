//! One parsed request, from head to record, whatever protocol it came in on: pre-route policies, route
//! lookup, route policies, then the route's action (a direct response, or forwarding), all through the
//! connection driver's `Downstream`. The pipeline never sees a socket.
//!
//! ```text
//! conn driver -> pipeline::serve(ctx)
//!                  policy::PRE_ROUTE -> router -> policy::ROUTE -> action: respond | forward
//!              -> pipeline::record::finish (counters, access log)
//! ```

pub mod ctx;
pub mod downstream;
pub mod record;

use crate::forward;
use crate::http1::encode::{Reply, ReplyBody};
use crate::http1::head::{Method, RequestHead};
use crate::metrics::EndReason;
use crate::policy::{self, Outcome, Stage};
use crate::respond::{classify, error_reply, ProxyError};
use crate::router::{Action, RouteInput};
use crate::worker::Worker;
pub use ctx::{After, Buffers, Ctx};
use downstream::{Downstream, ResponseSink};

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

/// Serves one parsed request. The head stays valid for the whole call; `ctx` holds what happened.
pub async fn serve<D: Downstream>(
    w: &Worker,
    d: &mut D,
    head: &RequestHead,
    ctx: &mut Ctx,
    bufs: &mut Buffers,
) -> After {
    #[cfg(debug_assertions)]
    crate::panic::debug_failpoint(head.path());
    let gen = ctx.gen.clone();
    if let Some(after) = apply(d, head, ctx, Stage::PreRoute, None).await {
        return after;
    }
    let Some(m) = gen.routes.lookup(head.host(), head.path(), head) else {
        let close = ctx.close_after_unread_body(head);
        return reject(d, ctx, &ProxyError::NoRoute, close).await;
    };
    let route = &gen.routes.routes[m.route as usize];
    ctx.rec.route = Some(m.route);
    if let Some(after) = apply(d, head, ctx, Stage::Route, Some(route)).await {
        return after;
    }
    match &route.action {
        Action::Respond(r) => {
            let close = ctx.close_after_unread_body(head);
            let reply = Reply {
                status: r.status,
                headers: &r.headers,
                body: ReplyBody::Bytes(&r.body),
                request_id: ctx.ids.id(),
                head_only: head.method_kind() == Method::Head || r.status == 204 || r.status == 304,
            };
            ctx.rec.status = r.status;
            ctx.rec.reason = EndReason::Direct;
            let (_, mut sink) = d.split();
            match sink.send_reply(&reply, close).await {
                Ok(n) => ctx.rec.bytes_out = n,
                Err(_) => return After::Close,
            }
            if close {
                After::Close
            } else {
                After::KeepAlive
            }
        }
        Action::Proxy(targets) => {
            match forward::forward(w, d, head, ctx, bufs, route, &m, targets).await {
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

/// Runs one stage of the policy chain; `Some` when a policy answered and the request is over.
async fn apply<D: Downstream>(
    d: &mut D,
    head: &RequestHead,
    ctx: &mut Ctx,
    stage: Stage,
    route: Option<&crate::router::CompiledRoute>,
) -> Option<After> {
    match policy::run(stage, head, ctx, route) {
        Outcome::Continue => None,
        Outcome::Reject(e) => {
            let close = ctx.close_after_unread_body(head);
            Some(reject(d, ctx, &e, close).await)
        }
    }
}

/// Answers the request with the error response for `e`, with the headers policies put in
/// `ctx.downstream_edits`.
pub async fn reject<D: Downstream>(d: &mut D, ctx: &mut Ctx, e: &ProxyError, close: bool) -> After {
    let reply = error_reply(e, ctx.ids.id(), &ctx.downstream_edits.add);
    ctx.rec.status = reply.status;
    ctx.rec.reason = classify(e).reason;
    let (_, mut sink) = d.split();
    match sink.send_reply(&reply, close).await {
        Ok(n) => ctx.rec.bytes_out += n,
        Err(_) => return After::Close,
    }
    if close {
        After::Close
    } else {
        After::KeepAlive
    }
}
