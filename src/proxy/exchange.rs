//! One attempt at an upstream exchange: take a pooled connection (or connect), send the request, relay the
//! response. When the request body streams, the body pump (client -> upstream) and the response relay
//! (upstream -> client) run concurrently, so an upstream that answers while still reading (echo, early
//! 413) cannot deadlock against full socket buffers.

use super::{response, After, Downstream, Fail};
use crate::config::{Sticky, Upstream};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{
    Framing, HeadError, Method, RequestHead, ResponseHead, MAX_RESPONSE_HEAD,
};
use crate::io::{read_more_timeout, write_front, write_vec, Timed, READ_CHUNK};
use crate::metrics::RequestRecord;
use crate::respond::{ProxyError, UpstreamError};
use crate::sock::SockWr;
use crate::upstream::pool::UpConn;
use crate::worker::Worker;
use bytes::{Buf, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
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
    fn upstream(e: UpstreamError, retryable: bool, endpoint_fault: bool) -> Self {
        AttemptErr {
            fail: Fail::Before(ProxyError::Upstream(e)),
            retryable,
            stale: false,
            endpoint_fault,
        }
    }
    fn stale(addr: SocketAddr) -> Self {
        AttemptErr {
            stale: true,
            ..AttemptErr::upstream(UpstreamError::Reset(addr), true, false)
        }
    }
    fn client(e: ProxyError) -> Self {
        AttemptErr {
            fail: Fail::Before(e),
            retryable: false,
            stale: false,
            endpoint_fault: false,
        }
    }
    fn after() -> Self {
        AttemptErr {
            fail: Fail::After,
            retryable: false,
            stale: false,
            endpoint_fault: false,
        }
    }
}

/// Everything an attempt needs to know about the request.
pub struct Attempt<'a> {
    /// The parsed request.
    pub head: &'a RequestHead,
    /// Upstream settings.
    pub ucfg: &'a Upstream,
    /// Endpoint.
    pub addr: SocketAddr,
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
    /// Request id.
    pub id: &'a [u8],
}

fn remaining(deadline: Option<Instant>, d: Duration) -> Duration {
    match deadline {
        Some(t) => d.min(t.saturating_duration_since(Instant::now())),
        None => d,
    }
}

async fn connect(w: &Worker, addr: SocketAddr, timeout: Duration) -> Result<UpConn, AttemptErr> {
    let now = Instant::now();
    while let Some(conn) = w.pool_take(addr, now) {
        // RFC 9112 §9.3: anything that arrived on an idle connection (an unsolicited response, junk, a
        // close) means the exchange is out of step or over; reusing it would hand this request that
        // answer. Checked on every reuse, however short the idle time: bytes can land within
        // microseconds of the connection going back to the pool.
        if crate::sys::peer_closed(conn.wr.fd()) {
            w.pool_retire(conn.buf);
            continue;
        }
        return Ok(conn);
    }
    match monoio::time::timeout(timeout, monoio::net::TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(UpConn::new(s, addr, w.pool_buffer()))
        }
        Ok(Err(e)) => Err(AttemptErr::upstream(
            UpstreamError::Connect { addr, source: e },
            true,
            true,
        )),
        Err(_) => Err(AttemptErr::upstream(
            UpstreamError::ConnectTimeout(addr),
            true,
            true,
        )),
    }
}

/// What the response relay reports.
struct Relayed {
    after: After,
    /// The upstream message was read to its end and the upstream keeps the connection.
    reusable: bool,
}

/// Runs one attempt against `a.addr`.
pub async fn attempt(
    w: &Worker,
    c: &mut Downstream,
    a: &Attempt<'_>,
    rec: &mut RequestRecord,
) -> Result<After, AttemptErr> {
    let t0 = Instant::now();
    let mut up = connect(w, a.addr, remaining(a.deadline, a.ucfg.connect_timeout)).await?;
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
    if !a.head.keep_alive && replayable && c.buf.is_empty() {
        c.wr.closing();
    }

    // Send the request (kept in c.out for a retry).
    let req = std::mem::take(&mut c.out);
    let (res, req) = up.wr.write_all(req).await;
    c.out = req;
    if res.is_err() {
        // A write to a pooled connection fails when the peer closed it while idle: nothing was processed.
        return Err(if reused && replayable {
            AttemptErr::stale(a.addr)
        } else {
            AttemptErr::upstream(
                UpstreamError::Reset(a.addr),
                replayable && a.head.method_kind().is_idempotent(),
                true,
            )
        });
    }

    let body_done = Cell::new(matches!(a.body, ReqBody::Buffered));
    let started = Cell::new(false);
    let pumped = Cell::new(0u64);
    let sent_at = Instant::now();
    if let ReqBody::Stream(_) = a.body {
        if a.head.expect_continue && a.head.minor == 1 {
            c.out.clear();
            c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if write_vec(&mut c.wr, &mut c.out).await.is_err() {
                return Err(AttemptErr::client(ProxyError::ClientClosed));
            }
        }
    }
    let relay = relay(
        &mut up.rd,
        &mut up.buf,
        &mut c.wr,
        &mut c.out,
        &mut c.resp,
        a,
        reused,
        &body_done,
        &started,
        (rec, sent_at),
    );
    let relayed = match a.body {
        ReqBody::Buffered => relay.await?,
        ReqBody::Stream(framing) => {
            let pump = pump_body(
                &mut c.rd,
                &mut c.buf,
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
    c.resp.release();
    if relayed.reusable && up.buf.is_empty() {
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
                        AttemptErr::after()
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
async fn pump_body<R: AsyncReadRent, W: AsyncWriteRent>(
    rd: &mut R,
    buf: &mut BytesMut,
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
            write_front(up, buf, n)
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
        match read_more_timeout(rd, buf, BODY_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                return Err(PumpErr::Client(ProxyError::ClientClosed))
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => return Err(PumpErr::Client(ProxyError::BodyTimeout)),
        }
    }
}

/// Reads the response head (skipping 1xx), rewrites it for the client, and relays the body.
#[allow(clippy::too_many_arguments)]
async fn relay<R: AsyncReadRent>(
    up: &mut R,
    ubuf: &mut BytesMut,
    client: &mut SockWr,
    out: &mut Vec<u8>,
    resp: &mut ResponseHead,
    a: &Attempt<'_>,
    reused: bool,
    body_done: &Cell<bool>,
    started: &Cell<bool>,
    (rec, sent_at): (&mut RequestRecord, Instant),
) -> Result<Relayed, AttemptErr> {
    let head_req = a.head.method_kind() == Method::Head;
    let replayable = matches!(a.body, ReqBody::Buffered);
    let idempotent = a.head.method_kind().is_idempotent();
    let rt = a.ucfg.response_timeout;
    // `response_timeout` is a deadline for the whole head, not a timer per read: a head dripped a byte
    // at a time still ends at it. While the body still uploads the response clock has not started, so
    // the upload's time is allowed too; once the body is sent the clock runs from then.
    let mut head_by = body_done.get().then(|| sent_at + rt);
    let upload_by = sent_at + rt + a.body_timeout;
    loop {
        match resp.parse(ubuf, head_req, MAX_RESPONSE_HEAD) {
            Ok(Some(())) if resp.status == 101 => {
                return Err(AttemptErr::upstream(
                    UpstreamError::BadResponse(HeadError::Syntax),
                    false,
                    true,
                ));
            }
            // RFC 9110 §15.2: interim responses are absorbed; the final one follows.
            Ok(Some(())) if (100..200).contains(&resp.status) => continue,
            Ok(Some(())) => break,
            Ok(None) => {}
            Err(e) => {
                return Err(AttemptErr::upstream(
                    UpstreamError::BadResponse(e),
                    false,
                    true,
                ))
            }
        }
        let now = Instant::now();
        if head_by.is_none() && body_done.get() {
            head_by = Some(now + rt);
        }
        let until = head_by.unwrap_or(upload_by);
        let wait = remaining(a.deadline, until.saturating_duration_since(now));
        match read_more_timeout(up, ubuf, READ_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                let nothing = ubuf.is_empty();
                if reused && nothing && replayable {
                    return Err(AttemptErr::stale(a.addr));
                }
                return Err(AttemptErr::upstream(
                    UpstreamError::Reset(a.addr),
                    nothing && replayable && idempotent,
                    true,
                ));
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => {
                let e = if a.deadline.is_some_and(|d| Instant::now() >= d) {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::HeadTimeout(rt)
                };
                return Err(AttemptErr::upstream(e, false, true));
            }
        }
    }

    let framing = resp.body();
    let dechunk = framing == Framing::Chunked && a.head.minor == 0;
    let client_keep = a.keep && framing != Framing::Close && !dechunk;
    let rewrite = response::Rewrite {
        id: a.id,
        set_cookie: a.set_cookie,
        client_minor: a.head.minor,
        chunked: framing == Framing::Chunked && !dechunk,
        client_keep,
    };
    response::write_head(out, resp, &rewrite);
    rec.status = resp.status;
    let upstream_keep = resp.keep_alive;
    // The head is in `out` now. Its bytes share `ubuf`'s allocation, so holding them while the body is
    // read would make every body read that needs room allocate a new buffer instead of reusing this one.
    resp.release();
    rec.ttfb_us = sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
    if let Some(total) = gathered(framing) {
        // Nothing has reached the client yet, so a body cut short is still an upstream error the client can
        // be told about, not a connection closed mid-response. Not retried: `out`, which kept the request
        // for a retry, holds the rewritten response head by now.
        while ubuf.len() < total {
            let missing = total - ubuf.len();
            ubuf.reserve(missing);
            let idle = remaining(a.deadline, a.ucfg.idle_timeout);
            let e = match read_more_timeout(up, ubuf, missing, idle).await {
                Timed::Done(Ok(n)) if n > 0 => continue,
                Timed::Done(_) => UpstreamError::Reset(a.addr),
                Timed::Elapsed => UpstreamError::Timeout,
            };
            return Err(AttemptErr::upstream(e, false, true));
        }
    }
    started.set(true);
    let complete = relay_body(
        client,
        out,
        up,
        ubuf,
        framing,
        dechunk,
        a.ucfg,
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

/// The body length when a response is small enough to be gathered whole behind its head and sent with it in
/// one syscall: fewer sends, and fewer wake-ups of the client, than relaying it piece by piece.
fn gathered(framing: Framing) -> Option<usize> {
    match framing {
        Framing::Length(n) if n <= ONE_WRITE_MAX as u64 => Some(n as usize),
        _ => None,
    }
}

/// Sends the response head (in `out`) and body to the client. Returns whether the upstream message was
/// read to its end.
#[allow(clippy::too_many_arguments)]
async fn relay_body<R: AsyncReadRent>(
    client: &mut SockWr,
    out: &mut Vec<u8>,
    up: &mut R,
    ubuf: &mut BytesMut,
    framing: Framing,
    dechunk: bool,
    ucfg: &Upstream,
    deadline: Option<Instant>,
    sent: &mut u64,
) -> Result<bool, AttemptErr> {
    let idle = || remaining(deadline, ucfg.idle_timeout);
    let client_err = |_| AttemptErr::after();
    match framing {
        Framing::None => {
            counted_vec(client, out, sent).await.map_err(client_err)?;
            Ok(true)
        }
        Framing::Length(total) => {
            // The head and as much of the body as is here (all of it when `relay` gathered it) leave in one
            // syscall, the body sent from the read buffer rather than copied behind the head.
            let first = (ubuf.len() as u64).min(total) as usize;
            *sent += (out.len() + first) as u64;
            client
                .write_two(out, ubuf, first)
                .await
                .map_err(client_err)?;
            let mut left = total - first as u64;
            while left > 0 {
                if ubuf.is_empty() {
                    match read_more_timeout(up, ubuf, BODY_CHUNK, idle()).await {
                        Timed::Done(Ok(n)) if n > 0 => {}
                        _ => return Err(AttemptErr::after()),
                    }
                }
                let n = (ubuf.len() as u64).min(left) as usize;
                counted_front(client, ubuf, n, sent)
                    .await
                    .map_err(client_err)?;
                left -= n as u64;
            }
            Ok(true)
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            counted_vec(client, out, sent).await.map_err(client_err)?;
            loop {
                if !ubuf.is_empty() {
                    if dechunk {
                        let p = dec
                            .feed(ubuf, |d| out.extend_from_slice(d))
                            .map_err(|_| AttemptErr::after())?;
                        ubuf.advance(p.consumed);
                        counted_vec(client, out, sent).await.map_err(client_err)?;
                    } else {
                        let p = dec.feed(ubuf, |_| ()).map_err(|_| AttemptErr::after())?;
                        counted_front(client, ubuf, p.consumed, sent)
                            .await
                            .map_err(client_err)?;
                    }
                    if dec.is_done() {
                        return Ok(true);
                    }
                }
                match read_more_timeout(up, ubuf, BODY_CHUNK, idle()).await {
                    Timed::Done(Ok(n)) if n > 0 => {}
                    _ => return Err(AttemptErr::after()),
                }
            }
        }
        Framing::Close => {
            out.extend_from_slice(ubuf);
            ubuf.clear();
            counted_vec(client, out, sent).await.map_err(client_err)?;
            loop {
                match read_more_timeout(up, ubuf, BODY_CHUNK, idle()).await {
                    Timed::Done(Ok(0)) => return Ok(false),
                    Timed::Done(Ok(_)) => {
                        let n = ubuf.len();
                        counted_front(client, ubuf, n, sent)
                            .await
                            .map_err(client_err)?;
                    }
                    _ => return Err(AttemptErr::after()),
                }
            }
        }
    }
}

async fn counted_vec<W: AsyncWriteRent>(
    client: &mut W,
    out: &mut Vec<u8>,
    sent: &mut u64,
) -> std::io::Result<()> {
    *sent += out.len() as u64;
    write_vec(client, out).await
}

async fn counted_front<W: AsyncWriteRent>(
    client: &mut W,
    buf: &mut BytesMut,
    n: usize,
    sent: &mut u64,
) -> std::io::Result<()> {
    *sent += n as u64;
    write_front(client, buf, n).await
}
