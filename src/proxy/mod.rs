//! One HTTP/1.1 exchange on the proxy path: route, pick an endpoint, send the request (head + body,
//! streamed with back-pressure), relay the response, return the upstream connection to the pool.
//! Errors before the response head reaches the client become a JSON error response; after it, the
//! connection is closed. Never holds a RefCell borrow across an await; allocates nothing per request
//! beyond what the connection's reusable buffers already hold.

mod exchange;
mod request;
pub mod response;

use crate::config::HashOn;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, Method, RequestHead};
use crate::io::write_vec;
use crate::metrics::{EndReason, RequestRecord};
use crate::respond::{message_for, reason_for, status_for, write_error, ProxyError, UpstreamError};
use crate::router::{choose_target, Action, CompiledRoute, Match, RouteInput};
use crate::sock::SockWr;
use crate::upstream::balance::hash64;
pub use crate::worker::ids::Ids;
use crate::worker::{Gen, Worker};
use bytes::{Buf, BytesMut};
use exchange::{attempt, Attempt, ReqBody};
use monoio::io::OwnedReadHalf;
use monoio::net::TcpStream;
use request::{build_request_head, cookie, parse_hex};
use std::time::Instant;

/// The client side of a connection: socket, read buffer, reusable output buffer.
pub struct Downstream {
    /// Read half of the client socket (split once per connection, so a request body and its response
    /// can flow at the same time).
    pub rd: OwnedReadHalf<TcpStream>,
    /// Write half.
    pub wr: SockWr,
    /// Bytes read from the client and not yet consumed.
    pub buf: BytesMut,
    /// Reusable output buffer.
    pub out: Vec<u8>,
    /// Reusable upstream response head (its header list keeps its capacity).
    pub resp: crate::http1::head::ResponseHead,
    /// Client address as text, formatted once per connection for X-Forwarded-For.
    pub peer_ip: Box<str>,
    /// Cancels the idle read when the connection parks.
    pub cancel: monoio::io::Canceller,
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

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

/// Where a failure happened relative to the response.
pub enum Fail {
    /// Nothing sent to the client yet: answer with an error response.
    Before(ProxyError),
    /// The response had started: close.
    After,
}

impl From<ProxyError> for Fail {
    fn from(e: ProxyError) -> Self {
        Fail::Before(e)
    }
}

/// Serves one parsed request. The head stays valid for the whole call.
pub async fn handle(
    w: &Worker,
    snap: &Gen,
    c: &mut Downstream,
    head: &RequestHead,
    rec: &mut RequestRecord,
    ids: &Ids,
) -> After {
    #[cfg(debug_assertions)]
    crate::panic::debug_failpoint(head.path());
    let id = ids.id();
    let keep = head.keep_alive && !w.is_draining();
    let Some(m) = snap.routes.lookup(head.host(), head.path(), head) else {
        // A body we did not read would be taken for the next request: close instead.
        let close = !keep || head.body() != Framing::None;
        return send_error(c, &ProxyError::NoRoute, id, close, rec).await;
    };
    let route = &snap.routes.routes[m.route as usize];
    rec.route = Some(m.route);
    match &route.action {
        Action::Respond(d) => {
            let close = !keep || head.body() != Framing::None;
            let out = &mut c.out;
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(itoa::Buffer::new().format(d.status).as_bytes());
            out.push(b' ');
            out.extend_from_slice(crate::router::reason(d.status).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&d.headers);
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(d.body.len()).as_bytes());
            out.extend_from_slice(b"\r\nx-request-id: ");
            out.extend_from_slice(id);
            out.extend_from_slice(if close {
                &b"\r\nconnection: close\r\n\r\n"[..]
            } else if head.minor == 0 {
                b"\r\nconnection: keep-alive\r\n\r\n"
            } else {
                b"\r\n\r\n"
            });
            if head.method_kind() != Method::Head && d.status != 204 && d.status != 304 {
                out.extend_from_slice(&d.body);
            }
            rec.status = d.status;
            rec.reason = EndReason::Direct;
            rec.bytes_out = c.out.len() as u64;
            if write_vec(&mut c.wr, &mut c.out).await.is_err() || close {
                return After::Close;
            }
            After::KeepAlive
        }
        Action::Proxy(targets) => {
            let gi = if targets.len() == 1 {
                targets[0].upstream
            } else {
                snap.with_split(m.route as usize, |rr| choose_target(targets, head, rr))
            };
            match proxy(w, snap, c, head, route, &m, gi, ids, keep, rec).await {
                Ok(after) => after,
                Err(Fail::After) => {
                    rec.reason = EndReason::Aborted;
                    After::Close
                }
                Err(Fail::Before(e)) => {
                    let status = status_for(&e);
                    if status >= 500 {
                        tracing::debug!(error = %e, route = %route.name, "upstream failure");
                    }
                    // After a body error the stream position is unknown; after an upstream error the request
                    // body was fully read (or never started), so the connection can continue.
                    let body_unread = matches!(
                        e,
                        ProxyError::BodyTooLarge
                            | ProxyError::Chunk(_)
                            | ProxyError::BodyTimeout
                            | ProxyError::ClientClosed
                    );
                    send_error(c, &e, id, !keep || body_unread, rec).await
                }
            }
        }
    }
}

async fn send_error(
    c: &mut Downstream,
    e: &ProxyError,
    id: &[u8],
    close: bool,
    rec: &mut RequestRecord,
) -> After {
    c.out.clear();
    rec.status = status_for(e);
    rec.reason = reason_for(e);
    write_error(&mut c.out, rec.status, message_for(e), id, close);
    rec.bytes_out += c.out.len() as u64;
    if write_vec(&mut c.wr, &mut c.out).await.is_err() || close {
        After::Close
    } else {
        After::KeepAlive
    }
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    w: &Worker,
    snap: &Gen,
    c: &mut Downstream,
    head: &RequestHead,
    route: &CompiledRoute,
    m: &Match,
    gi: usize,
    ids: &Ids,
    keep: bool,
    rec: &mut RequestRecord,
) -> Result<After, Fail> {
    let spec = &snap.upstreams[gi];
    let ucfg = &spec.cfg;
    let framing = head.body();
    if let Framing::Length(n) = framing {
        if n > route.max_body_bytes {
            return Err(ProxyError::BodyTooLarge.into());
        }
    }
    // The request (head, and the body when it is already here) is built once and kept for retries.
    c.out.clear();
    build_request_head(
        &mut c.out,
        head,
        route,
        m,
        &c.peer_ip,
        ids,
        framing,
        spec.endpoints.first().map(|e| e.addr),
    );
    let body = match framing {
        Framing::None | Framing::Close => ReqBody::Buffered,
        Framing::Length(n) => {
            if c.buf.len() as u64 >= n {
                c.out.extend_from_slice(&c.buf[..n as usize]);
                c.buf.advance(n as usize);
                rec.bytes_in += n;
                ReqBody::Buffered
            } else {
                ReqBody::Stream(framing)
            }
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let p = dec.feed(&c.buf, |_| ()).map_err(ProxyError::Chunk)?;
            if dec.data_bytes() > route.max_body_bytes {
                return Err(ProxyError::BodyTooLarge.into());
            }
            if p.done {
                c.out.extend_from_slice(&c.buf[..p.consumed]);
                c.buf.advance(p.consumed);
                rec.bytes_in += p.consumed as u64;
                ReqBody::Buffered
            } else {
                ReqBody::Stream(framing)
            }
        }
    };

    // Circuit breaker: a slot for this upstream on this worker, waiting a bounded time.
    let Some(gate) = snap.gate(gi) else {
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
            HashOn::ClientIp => Some(hash64(c.peer_ip.as_bytes())),
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
    snap.with_group(gi, |g| g.note_request(start));

    let mut attempts = 0u32;
    let mut avoid = None;
    loop {
        let now = Instant::now();
        let picked = snap.with_group(gi, |g| {
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
                (i, g.eps[i].addr, g.eps[i].key)
            })
        });
        let Some(Some((ep, addr, key))) = picked else {
            return Err(ProxyError::Upstream(UpstreamError::NoHealthy(gi)).into());
        };
        rec.endpoint = Some((gi as u32, ep as u32));
        rec.attempts = rec.attempts.saturating_add(1);
        let set_cookie = match (&ucfg.sticky, sticky_key) {
            (Some(s), k) if k != Some(key) => Some((s, key)),
            _ => None,
        };
        let plan = Attempt {
            head,
            ucfg,
            addr,
            body: &body,
            deadline,
            keep,
            max_body: route.max_body_bytes,
            body_timeout: snap.http.body_timeout,
            set_cookie,
            id: ids.id(),
        };
        let res = attempt(w, c, &plan, rec).await;
        snap.with_group(gi, |g| {
            if let Some(e) = g.eps.get_mut(ep) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        });
        match res {
            Ok(after) => {
                snap.with_group(gi, |g| g.success(ep));
                return Ok(after);
            }
            Err(e) => {
                if e.endpoint_fault {
                    let now = Instant::now();
                    if snap.with_group(gi, |g| g.failure(ep, now)) == Some(true) {
                        tracing::warn!(upstream = %ucfg.name, endpoint = %addr, worker = w.id, "endpoint ejected after consecutive failures");
                    }
                }
                let may_retry = e.retryable
                    && attempts < ucfg.retries
                    && deadline.is_none_or(|d| Instant::now() < d)
                    && (e.stale
                        || snap.with_group(gi, |g| g.try_retry(Instant::now())) == Some(true));
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
