//! One attempt at an upstream exchange: a connection (pooled or new), the request sent, the response
//! relayed to the downstream. When the request body streams, the body pump (client -> upstream) and
//! the response relay (upstream -> client) run concurrently, so an upstream that answers while still
//! reading (echo, early 413) cannot deadlock against full socket buffers.

use super::Fail;
use crate::config::{Sticky, Upstream};
use crate::conn::wire::{WireRead, WireWrite};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, Method, RequestHead, ResponseHead};
use crate::io::Timed;
use crate::metrics::RequestRecord;
use crate::pipeline::ctx::{After, Buffers};
use crate::pipeline::downstream::{Downstream, RequestBody, ResponseEdits, ResponseSink};
use crate::policy::headers::{HeaderRules, Vars};
use crate::respond::{classify, Fault, ProxyError, UpstreamError};
use crate::upstream::client::{self, remaining, HeadDeadline, HeadFail};
use crate::worker::Worker;
use bytes::{Buf, BytesMut};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Body chunk for large transfers: fewer, larger sends.
const BODY_CHUNK: usize = 64 * 1024;
/// Content-Length bodies up to this size are read whole and sent with their head in one write. No larger
/// than `BODY_CHUNK`, so gathering one never grows the buffer past what streaming would.
const ONE_WRITE_MAX: usize = BODY_CHUNK;

/// State of the request body relative to what has been sent.
pub enum ReqBody {
    /// Entirely in the request buffer (replayable on retry).
    Buffered,
    /// Must be streamed from the client after the head.
    Stream(Framing),
}

/// How one attempt failed.
pub struct AttemptErr {
    /// What to tell the client.
    pub fail: Fail,
    /// Safe to try another endpoint.
    pub retryable: bool,
    /// A stale pooled connection: retry without spending budget.
    pub stale: bool,
    /// Counts toward passive health.
    pub endpoint_fault: bool,
}

impl AttemptErr {
    /// A failure before the response started; whether it counts against the endpoint is
    /// `respond::classify`'s answer, not the caller's.
    fn before(e: ProxyError, retryable: bool) -> Self {
        AttemptErr {
            endpoint_fault: classify(&e).fault == Fault::Upstream,
            fail: Fail::Before(e),
            retryable,
            stale: false,
        }
    }
    /// An upstream failure before the response started; `reached` is how far the exchange got.
    fn upstream(e: UpstreamError, reached: Reached, a: &Attempt<'_>) -> Self {
        let retry = retryable(&e, reached, a);
        AttemptErr::before(ProxyError::Upstream(e), retry)
    }
    /// A pooled connection the peer had closed: nothing was processed, so the request goes again at
    /// once, and the endpoint is not to blame.
    fn stale(addr: SocketAddr) -> Self {
        AttemptErr {
            stale: true,
            endpoint_fault: false,
            ..AttemptErr::before(ProxyError::Upstream(UpstreamError::Reset(addr)), true)
        }
    }
    fn client(e: ProxyError) -> Self {
        AttemptErr::before(e, false)
    }
    /// The response had started: the connection closes, and the cause is kept for the record (an
    /// upstream that broke off mid-body counts toward its passive health; a client that left does not).
    fn after(cause: ProxyError) -> Self {
        AttemptErr {
            endpoint_fault: classify(&cause).fault == Fault::Upstream,
            fail: Fail::After(cause),
            retryable: false,
            stale: false,
        }
    }
}

/// How far an exchange got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// No connection: the endpoint never saw the request.
    NotConnected,
    /// The request went out and not one byte of an answer came back.
    SentNoAnswer,
    /// Some of a response arrived (or the head deadline passed while waiting for it).
    Answered,
}

/// The one retry rule. Another endpoint may be tried only when the failed one cannot have acted on the
/// request: it never connected, or it closed without a byte of answer and the request is idempotent and
/// wholly buffered, so it can be sent again as it was (RFC 9110 §9.2.2). A timeout or an invalid answer
/// is never retried: the endpoint may have acted.
fn retryable(e: &UpstreamError, reached: Reached, a: &Attempt<'_>) -> bool {
    match (e, reached) {
        (
            UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout(_)
            | UpstreamError::TlsHandshake { .. },
            Reached::NotConnected,
        ) => true,
        (UpstreamError::Reset(_), Reached::SentNoAnswer) => {
            matches!(a.body, ReqBody::Buffered) && a.head.method_kind().is_idempotent()
        }
        _ => false,
    }
}

/// Everything an attempt needs to know about the request.
pub struct Attempt<'a> {
    /// The parsed request.
    pub head: &'a RequestHead,
    pub ucfg: &'a Upstream,
    /// The group's TLS (None: plain TCP).
    pub tls: Option<&'a crate::tls::client::Connector>,
    pub addr: SocketAddr,
    /// The `endpoints` entry `addr` came from.
    pub entry: u32,
    /// Body state.
    pub body: &'a ReqBody,
    /// Total deadline.
    pub deadline: Option<Instant>,
    /// The client wants keep-alive (and we are not draining).
    pub keep: bool,
    /// Route body limit.
    pub max_body: u64,
    /// `[http] body_timeout` of the generation the request started on (not the worker's current one).
    pub body_timeout: Duration,
    /// Affinity cookie to set.
    pub set_cookie: Option<(&'a Sticky, u64)>,
    pub id: &'a [u8],
    /// Header lines policies add to the response (`ctx.downstream_edits`: CORS, ...).
    pub extra: &'a [u8],
    /// The route's response header rules with the request's template values (None: none).
    pub rules: Option<(&'a HeaderRules, &'a Vars<'a>)>,
    /// The route hides the backend's software headers.
    pub hide_backend: bool,
    /// The route answers an upstream 5xx with sluice's own error (`intercept_errors`).
    pub intercept_errors: bool,
}

/// What the response relay reports.
struct Relayed {
    after: After,
    /// The upstream message was read to its end and the upstream keeps the connection.
    reusable: bool,
}

/// Runs one attempt against `a.addr`.
pub async fn attempt<D: Downstream>(
    w: &Worker,
    d: &mut D,
    bufs: &mut Buffers,
    a: &Attempt<'_>,
    rec: &mut RequestRecord,
) -> Result<After, AttemptErr> {
    let t0 = Instant::now();
    let connect = remaining(a.deadline, a.ucfg.connect_timeout);
    let mut up = match client::connect(w, a.addr, a.tls, a.entry, connect).await {
        Ok(up) => up,
        // Nothing was sent: any method may go to another endpoint.
        Err(e) => return Err(AttemptErr::upstream(e, Reached::NotConnected, a)),
    };
    let reused = up.reused;
    rec.connect_us = if reused {
        0
    } else {
        t0.elapsed().as_micros().min(u32::MAX as u128) as u32
    };
    let replayable = matches!(a.body, ReqBody::Buffered);
    // The client asked to close after this request, which it sent whole, and nothing more of it is
    // buffered: the reply ends the connection and can leave with the FIN. Not when unread bytes may remain
    // (a close with unread data resets the connection, and a reply still held back would be lost with it).
    if !a.head.keep_alive && replayable && d.split().0.buf().is_empty() {
        d.closing();
    }

    // Send the request (kept in `bufs.upstream_req` for a retry).
    let req = std::mem::take(&mut bufs.upstream_req);
    let (res, req) = up.wr.send_kept(req).await;
    bufs.upstream_req = req;
    if res.is_err() {
        // A write to a pooled connection fails when the peer closed it while idle: nothing was processed.
        return Err(if reused && replayable {
            AttemptErr::stale(a.addr)
        } else {
            AttemptErr::upstream(UpstreamError::Reset(a.addr), Reached::SentNoAnswer, a)
        });
    }

    let body_done = Cell::new(replayable);
    let started = Cell::new(false);
    let pumped = Cell::new(0u64);
    let sent_at = Instant::now();
    let (mut client_body, mut sink) = d.split();
    if let ReqBody::Stream(_) = a.body {
        if a.head.expect_continue && sink.interim_continue().await.is_err() {
            return Err(AttemptErr::client(ProxyError::ClientClosed));
        }
    }
    let deadline = HeadDeadline {
        sent_at,
        response_timeout: a.ucfg.response_timeout,
        body_timeout: a.body_timeout,
        total: a.deadline,
    };
    let relay = relay(
        &mut up.rd,
        &mut up.buf,
        &mut sink,
        &mut bufs.resp,
        a,
        reused,
        &body_done,
        &started,
        &deadline,
        rec,
    );
    let relayed = match a.body {
        ReqBody::Buffered => relay.await?,
        ReqBody::Stream(framing) => {
            let pump = pump_body(
                &mut client_body,
                &mut up.wr,
                *framing,
                a.max_body,
                a.body_timeout,
                &body_done,
                &pumped,
            );
            // Boxed: the two futures together are the largest state of a connection, and only a streamed
            // body needs them; inline they would make every idle keep-alive connection that much bigger.
            let r = Box::pin(duplex(pump, relay, &started)).await;
            rec.bytes_in += pumped.get();
            r?
        }
    };
    // The response head was forwarded: free its bytes so the pooled connection's buffer is reused.
    bufs.resp.release();
    if relayed.reusable && up.is_drained() {
        w.pool_put(up, a.ucfg.pool_max_idle, a.ucfg.pool_idle_timeout);
    } else {
        w.pool_recycle(std::mem::take(&mut up.buf));
    }
    Ok(relayed.after)
}

/// Why the body pump stopped early.
enum PumpErr {
    /// The client failed: the request cannot complete.
    Client(ProxyError),
    /// The upstream stopped reading (it may still answer, e.g. 413 then close).
    Upstream,
}

/// Drives the body pump and the relay together. A client-side pump failure ends the exchange; an
/// upstream-side one leaves the relay to report what the upstream said. A response that completes before
/// the body was fully sent closes both connections, as the rest of the body is unread.
async fn duplex(
    pump: impl Future<Output = Result<(), PumpErr>>,
    relay: impl Future<Output = Result<Relayed, AttemptErr>>,
    started: &Cell<bool>,
) -> Result<Relayed, AttemptErr> {
    let mut pump = pin!(pump);
    let mut relay = pin!(relay);
    let mut pumped: Option<bool> = None;
    std::future::poll_fn(|cx| {
        if pumped.is_none() {
            match pump.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => pumped = Some(true),
                Poll::Ready(Err(PumpErr::Upstream)) => pumped = Some(false),
                Poll::Ready(Err(PumpErr::Client(e))) => {
                    return Poll::Ready(Err(if started.get() {
                        AttemptErr::after(e)
                    } else {
                        AttemptErr::client(e)
                    }));
                }
                Poll::Pending => {}
            }
        }
        match relay.as_mut().poll(cx) {
            Poll::Ready(Ok(mut r)) => {
                if pumped != Some(true) {
                    r.after = After::Close;
                    r.reusable = false;
                }
                Poll::Ready(Ok(r))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Streams the rest of the request body from the client to the upstream, enforcing size and time limits.
async fn pump_body<B: RequestBody, W: WireWrite>(
    body: &mut B,
    up: &mut W,
    framing: Framing,
    max: u64,
    timeout: Duration,
    done: &Cell<bool>,
    pumped: &Cell<u64>,
) -> Result<(), PumpErr> {
    let deadline = Instant::now() + timeout;
    let mut dec = ChunkedDecoder::new();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let buf = body.buf();
        if !buf.is_empty() {
            let n = match framing {
                Framing::Chunked => {
                    let p = dec
                        .feed(buf, |_| ())
                        .map_err(|e| PumpErr::Client(ProxyError::Chunk(e)))?;
                    if dec.data_bytes() > max {
                        return Err(PumpErr::Client(ProxyError::BodyTooLarge));
                    }
                    p.consumed
                }
                _ => (buf.len() as u64).min(left) as usize,
            };
            up.write_front(buf, n)
                .await
                .map_err(|_| PumpErr::Upstream)?;
            pumped.set(pumped.get() + n as u64);
            if framing != Framing::Chunked {
                left -= n as u64;
            }
            if (framing == Framing::Chunked && dec.is_done()) || left == 0 {
                done.set(true);
                return Ok(());
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match body.read_more(wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                return Err(PumpErr::Client(ProxyError::ClientClosed))
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => return Err(PumpErr::Client(ProxyError::BodyTimeout)),
        }
    }
}

/// Reads the response head, sends the client's head, and relays the body.
#[allow(clippy::too_many_arguments)]
async fn relay<R: WireRead, S: ResponseSink>(
    up: &mut R,
    ubuf: &mut BytesMut,
    sink: &mut S,
    resp: &mut ResponseHead,
    a: &Attempt<'_>,
    reused: bool,
    body_done: &Cell<bool>,
    started: &Cell<bool>,
    deadline: &HeadDeadline,
    rec: &mut RequestRecord,
) -> Result<Relayed, AttemptErr> {
    let head_req = a.head.method_kind() == Method::Head;
    let replayable = matches!(a.body, ReqBody::Buffered);
    if let Err(f) = client::read_head(up, ubuf, resp, head_req, body_done, deadline).await {
        return Err(match f {
            HeadFail::Closed { nothing } if reused && nothing && replayable => {
                AttemptErr::stale(a.addr)
            }
            HeadFail::Closed { nothing } => {
                let reached = if nothing {
                    Reached::SentNoAnswer
                } else {
                    Reached::Answered
                };
                AttemptErr::upstream(UpstreamError::Reset(a.addr), reached, a)
            }
            HeadFail::Elapsed { total: true } => {
                AttemptErr::upstream(UpstreamError::Timeout, Reached::Answered, a)
            }
            HeadFail::Elapsed { total: false } => AttemptErr::upstream(
                UpstreamError::HeadTimeout(a.ucfg.response_timeout),
                Reached::Answered,
                a,
            ),
            HeadFail::Bad(e) => {
                AttemptErr::upstream(UpstreamError::BadResponse(e), Reached::Answered, a)
            }
        });
    }

    if a.intercept_errors && (500..=599).contains(&resp.status) {
        return intercept(up, ubuf, sink, resp, a, started, deadline, rec).await;
    }
    let framing = resp.body();
    let client_keep = a.keep && sink.can_keep(framing);
    let edits = ResponseEdits {
        id: a.id,
        set_cookie: a.set_cookie,
        framing,
        keep: a.keep,
        extra: a.extra,
        rules: a.rules,
        hide_backend: a.hide_backend,
    };
    sink.encode_head(resp, &edits);
    rec.status = resp.status;
    let upstream_keep = resp.keep_alive;
    // The head is in the sink's buffer now. Its bytes share `ubuf`'s allocation, so holding them while
    // the body is read would make every body read that needs room allocate a new buffer.
    resp.release();
    rec.ttfb_us = deadline.sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
    if let Some(total) = gathered(framing) {
        // Nothing has reached the client yet, so a body cut short is still an upstream error the client can
        // be told about, not a connection closed mid-response.
        while ubuf.len() < total {
            let missing = total - ubuf.len();
            ubuf.reserve(missing);
            let idle = remaining(a.deadline, a.ucfg.idle_timeout);
            let e = match up.read_more_timeout(ubuf, missing, idle).await {
                Timed::Done(Ok(n)) if n > 0 => continue,
                Timed::Done(_) => UpstreamError::Reset(a.addr),
                Timed::Elapsed => UpstreamError::Timeout,
            };
            return Err(AttemptErr::upstream(e, Reached::Answered, a));
        }
    }
    started.set(true);
    let complete = relay_body(
        sink,
        &edits,
        up,
        ubuf,
        a.ucfg,
        a.addr,
        a.deadline,
        &mut rec.bytes_out,
    )
    .await?;
    Ok(Relayed {
        after: if client_keep {
            After::KeepAlive
        } else {
            After::Close
        },
        reusable: complete && upstream_keep,
    })
}

/// Most of an intercepted 5xx body that is read to keep its connection; a longer one closes it.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// Longest wait for an intercepted 5xx body: the client's answer waits for it.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Answers an upstream 5xx with sluice's own JSON error of the same status (`intercept_errors`, like
/// nginx's `proxy_intercept_errors`): none of the upstream's headers or body reach the client, so a
/// stack trace or a product banner in an error page cannot leak. The body is read and thrown away
/// first, so the connection can go back to the pool; when it is longer than `DRAIN_MAX_BYTES`,
/// close-delimited, malformed or not all there within `DRAIN_WAIT`, the upstream connection is closed
/// instead (where the next response would start is unknown), and the client is answered all the same.
#[allow(clippy::too_many_arguments)]
async fn intercept<R: WireRead, S: ResponseSink>(
    up: &mut R,
    ubuf: &mut BytesMut,
    sink: &mut S,
    resp: &mut ResponseHead,
    a: &Attempt<'_>,
    started: &Cell<bool>,
    deadline: &HeadDeadline,
    rec: &mut RequestRecord,
) -> Result<Relayed, AttemptErr> {
    let status = resp.status;
    let framing = resp.body();
    let upstream_keep = resp.keep_alive;
    resp.release();
    rec.status = status;
    rec.ttfb_us = deadline.sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let drained = drain(up, ubuf, framing, a.deadline).await;
    started.set(true);
    let head_only = a.head.method_kind() == Method::Head;
    let reply = crate::respond::intercepted_reply(status, a.id, a.extra, head_only);
    sink.send_reply(&reply, !a.keep, &mut rec.bytes_out)
        .await
        .map_err(|_| AttemptErr::after(ProxyError::ClientClosed))?;
    Ok(Relayed {
        after: if a.keep {
            After::KeepAlive
        } else {
            After::Close
        },
        reusable: drained && upstream_keep,
    })
}

/// Reads and discards a response body of `framing`; whether it was read to its end exactly, within
/// `DRAIN_MAX_BYTES` and `DRAIN_WAIT` (and the total deadline).
async fn drain<R: WireRead>(
    up: &mut R,
    ubuf: &mut BytesMut,
    framing: Framing,
    total: Option<Instant>,
) -> bool {
    let until = Instant::now() + DRAIN_WAIT;
    let until = total.map_or(until, |t| t.min(until));
    let wait = || until.saturating_duration_since(Instant::now());
    match framing {
        Framing::None => true,
        Framing::Close => false,
        Framing::Length(n) if n > DRAIN_MAX_BYTES => false,
        Framing::Length(n) => {
            let n = n as usize;
            while ubuf.len() < n {
                match up.read_more_timeout(ubuf, n - ubuf.len(), wait()).await {
                    Timed::Done(Ok(got)) if got > 0 => {}
                    _ => return false,
                }
            }
            ubuf.advance(n);
            true
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut seen = 0u64;
            loop {
                if !ubuf.is_empty() {
                    let Ok(p) = dec.feed(ubuf, |_| ()) else {
                        return false;
                    };
                    ubuf.advance(p.consumed);
                    seen += p.consumed as u64;
                    if p.done {
                        return true;
                    }
                    if seen > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
                match up.read_more_timeout(ubuf, BODY_CHUNK, wait()).await {
                    Timed::Done(Ok(got)) if got > 0 => {}
                    _ => return false,
                }
            }
        }
    }
}

/// The body length when a response is small enough to be gathered whole behind its head and sent with it in
/// one syscall: fewer sends, and fewer wake-ups of the client, than relaying it piece by piece.
fn gathered(framing: Framing) -> Option<usize> {
    match framing {
        Framing::Length(n) if n <= ONE_WRITE_MAX as u64 => Some(n as usize),
        _ => None,
    }
}

/// Sends the response head and body to the client. Returns whether the upstream message was read to
/// its end. The head's bytes are let go as soon as it is sent, so body reads reuse `ubuf`.
#[allow(clippy::too_many_arguments)]
async fn relay_body<R: WireRead, S: ResponseSink>(
    sink: &mut S,
    edits: &ResponseEdits<'_>,
    up: &mut R,
    ubuf: &mut BytesMut,
    ucfg: &Upstream,
    addr: SocketAddr,
    deadline: Option<Instant>,
    sent: &mut u64,
) -> Result<bool, AttemptErr> {
    let idle = || remaining(deadline, ucfg.idle_timeout);
    let client_err = |_| AttemptErr::after(ProxyError::ClientClosed);
    let cut_short = |t: Timed<std::io::Result<usize>>| {
        AttemptErr::after(ProxyError::Upstream(match t {
            Timed::Elapsed => UpstreamError::Timeout,
            Timed::Done(_) => UpstreamError::Reset(addr),
        }))
    };
    // The head and as much of the body as is here (all of it when `relay` gathered it) leave together.
    let first = match edits.framing {
        Framing::None | Framing::Chunked => 0,
        Framing::Length(total) => (ubuf.len() as u64).min(total) as usize,
        Framing::Close => ubuf.len(),
    };
    sink.send_head(ubuf, first, sent)
        .await
        .map_err(client_err)?;
    match edits.framing {
        Framing::None => Ok(true),
        Framing::Length(total) => {
            let mut left = total - first as u64;
            while left > 0 {
                if ubuf.is_empty() {
                    match up.read_more_timeout(ubuf, BODY_CHUNK, idle()).await {
                        Timed::Done(Ok(n)) if n > 0 => {}
                        t => return Err(cut_short(t)),
                    }
                }
                let n = (ubuf.len() as u64).min(left) as usize;
                sink.send_body(ubuf, n, sent).await.map_err(client_err)?;
                left -= n as u64;
            }
            Ok(true)
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                if !ubuf.is_empty() {
                    let p = dec.feed(ubuf, |_| ()).map_err(|e| {
                        AttemptErr::after(ProxyError::Upstream(UpstreamError::BadChunk(e)))
                    })?;
                    sink.send_body(ubuf, p.consumed, sent)
                        .await
                        .map_err(client_err)?;
                    if dec.is_done() {
                        return Ok(true);
                    }
                }
                match up.read_more_timeout(ubuf, BODY_CHUNK, idle()).await {
                    Timed::Done(Ok(n)) if n > 0 => {}
                    t => return Err(cut_short(t)),
                }
            }
        }
        Framing::Close => loop {
            match up.read_more_timeout(ubuf, BODY_CHUNK, idle()).await {
                Timed::Done(Ok(0)) => return Ok(false),
                Timed::Done(Ok(_)) => {
                    let n = ubuf.len();
                    sink.send_body(ubuf, n, sent).await.map_err(client_err)?;
                }
                t => return Err(cut_short(t)),
            }
        },
    }
}
