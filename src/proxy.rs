//! One HTTP/1.1 exchange on the proxy path: route, pick an endpoint, send the request (head + body,
//! streamed with back-pressure), relay the response, return the upstream connection to the pool.
//! Errors before the response head reaches the client become a JSON error response; after it, the
//! connection is closed. Never holds a RefCell borrow across an await; allocates nothing per request
//! beyond what the connection's reusable buffers already hold.

use crate::config::HashOn;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, HeaderKind, Method, RequestHead, ResponseHead};
use crate::http1::io::{read_more_timeout, write_front, write_vec, Timed, READ_CHUNK};
use crate::respond::{message_for, status_for, write_error, ProxyError, UpstreamError};
use crate::router::{upstream_path, Action, CompiledRoute, Match, RouteInput};
use crate::snapshot::Snapshot;
use crate::upstream::balance::hash64;
use crate::upstream::pool::UpConn;
use crate::worker::Worker;
use bytes::{Buf, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Body chunk for large transfers: fewer, larger sends.
const BODY_CHUNK: usize = 64 * 1024;
/// Response bodies up to this size are appended to the head and sent in one write.
const COALESCE_MAX: usize = 16 * 1024;
/// A response head larger than this from an upstream is a bad response.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Idle pooled connections older than this are checked for a peer close before reuse.
const STALE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// The client side of a connection: socket, read buffer, reusable output buffer.
pub struct Downstream {
    /// Client socket.
    pub stream: TcpStream,
    /// Bytes read from the client and not yet consumed.
    pub buf: BytesMut,
    /// Reusable output buffer.
    pub out: Vec<u8>,
    /// Client address as text, formatted once per connection for X-Forwarded-For.
    pub peer_ip: Box<str>,
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
enum Fail {
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

/// Request id: the client's when it is sane, else a fresh one written into `buf`.
fn request_id<'a>(w: &Worker, head: &'a RequestHead, buf: &'a mut [u8; 32]) -> &'a [u8] {
    if let Some(h) = head
        .headers
        .iter()
        .find(|h| h.kind == HeaderKind::RequestId)
    {
        let v = head.header(h).1;
        if !v.is_empty()
            && v.len() <= 128
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
        {
            return v;
        }
    }
    w.next_request_id(buf);
    &buf[..]
}

/// Serves one parsed request. The head stays valid for the whole call.
pub async fn handle(w: &Worker, snap: &Snapshot, c: &mut Downstream, head: &RequestHead) -> After {
    let mut id_buf = [0u8; 32];
    let id = request_id(w, head, &mut id_buf);
    let keep = head.keep_alive && !w.is_draining();
    let Some(m) = snap.routes.lookup(head.host(), head.path(), head) else {
        w.count_status(404);
        // A body we did not read would be taken for the next request: close instead.
        let close = !keep || head.body() != Framing::None;
        return send_error(c, &ProxyError::NoRoute, id, close).await;
    };
    let route = &snap.routes.routes[m.route as usize];
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
            w.count_status(d.status);
            if write_vec(&mut c.stream, &mut c.out).await.is_err() || close {
                return After::Close;
            }
            After::KeepAlive
        }
        Action::Proxy(targets) => {
            let gi = choose_target(w, targets, head);
            match proxy(w, snap, c, head, route, &m, gi, id, keep).await {
                Ok(after) => after,
                Err(Fail::After) => After::Close,
                Err(Fail::Before(e)) => {
                    let status = status_for(&e);
                    w.count_status(status);
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
                    send_error(c, &e, id, !keep || body_unread).await
                }
            }
        }
    }
}

async fn send_error(c: &mut Downstream, e: &ProxyError, id: &[u8], close: bool) -> After {
    c.out.clear();
    write_error(&mut c.out, status_for(e), message_for(e), id, close);
    if write_vec(&mut c.stream, &mut c.out).await.is_err() || close {
        After::Close
    } else {
        After::KeepAlive
    }
}

/// Picks the upstream group for a route: header rules first, then weights.
fn choose_target(w: &Worker, targets: &[crate::config::SplitTarget], head: &RequestHead) -> usize {
    if targets.len() == 1 {
        return targets[0].upstream;
    }
    for t in targets {
        if let Some(rule) = &t.when {
            if let Some(v) = head.get(rule.name.as_bytes()) {
                if rule
                    .value
                    .as_ref()
                    .is_none_or(|want| crate::http1::head::trim(v) == want.as_bytes())
                {
                    return t.upstream;
                }
            }
        }
    }
    w.split_pick(targets)
}

fn cookie<'a>(head: &'a RequestHead, name: &[u8]) -> Option<&'a [u8]> {
    for h in &head.headers {
        let (n, v) = head.header(h);
        if !n.eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for pair in v.split(|&b| b == b';') {
            let pair = crate::http1::head::trim(pair);
            if let Some(eq) = memchr::memchr(b'=', pair) {
                if &pair[..eq] == name {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

fn parse_hex(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 16 {
        return None;
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

/// Writes the request head sent upstream.
fn build_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    route: &CompiledRoute,
    m: &Match,
    peer_ip: &str,
    id: &[u8],
    body: Framing,
    fallback_host: &str,
) {
    out.extend_from_slice(head.method());
    out.push(b' ');
    if head.path() == b"*" {
        out.push(b'*');
    } else {
        upstream_path(route, m, head.path(), out);
    }
    if let Some(q) = head.query() {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    let orig_host = head.host();
    match (&route.host_rewrite, orig_host) {
        (Some(h), _) => out.extend_from_slice(h),
        (None, Some(h)) => out.extend_from_slice(h),
        (None, None) => out.extend_from_slice(fallback_host.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let mut xff_started = false;
    for h in &head.headers {
        let (name, value) = head.header(h);
        match h.kind {
            HeaderKind::Other => {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            HeaderKind::XForwardedFor => {
                out.extend_from_slice(if xff_started {
                    &b", "[..]
                } else {
                    b"x-forwarded-for: "
                });
                out.extend_from_slice(crate::http1::head::trim(value));
                xff_started = true;
            }
            HeaderKind::HopByHop
            | HeaderKind::Host
            | HeaderKind::ContentLength
            | HeaderKind::XForwardedOther
            | HeaderKind::RequestId
            | HeaderKind::Expect => {}
        }
    }
    out.extend_from_slice(if xff_started {
        &b", "[..]
    } else {
        b"x-forwarded-for: "
    });
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(h) = orig_host {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id);
    out.extend_from_slice(b"\r\n");
    match body {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {
            // RFC 9110 §8.6: a user agent should send Content-Length: 0 for POST/PUT without a body.
            if matches!(head.method_kind(), Method::Post | Method::Put) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// State of the request body relative to what has been sent.
enum ReqBody {
    /// Entirely in the request buffer (replayable on retry).
    Buffered,
    /// Must be streamed from the client after the head.
    Stream(Framing),
}

/// How one attempt failed.
struct AttemptErr {
    fail: Fail,
    /// Safe to try another endpoint.
    retryable: bool,
    /// A stale pooled connection: retry without spending budget.
    stale: bool,
    /// Counts toward passive health.
    endpoint_fault: bool,
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

#[allow(clippy::too_many_arguments)]
async fn proxy(
    w: &Worker,
    snap: &Snapshot,
    c: &mut Downstream,
    head: &RequestHead,
    route: &CompiledRoute,
    m: &Match,
    gi: usize,
    id: &[u8],
    keep: bool,
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
    let fallback_host = spec
        .endpoints
        .first()
        .map(|e| e.addr.to_string())
        .unwrap_or_default();
    build_request_head(
        &mut c.out,
        head,
        route,
        m,
        &c.peer_ip,
        id,
        framing,
        &fallback_host,
    );
    let body = match framing {
        Framing::None | Framing::Close => ReqBody::Buffered,
        Framing::Length(n) => {
            if c.buf.len() as u64 >= n {
                c.out.extend_from_slice(&c.buf[..n as usize]);
                c.buf.advance(n as usize);
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
                ReqBody::Buffered
            } else {
                ReqBody::Stream(framing)
            }
        }
    };

    // Circuit breaker: a slot for this upstream on this worker, waiting a bounded time.
    let gate = w.gate(gi);
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
    let generation = snap.generation;
    let start = Instant::now();
    let deadline = ucfg.total_timeout.map(|t| start + t);
    w.with_group(generation, gi, |g| g.note_request(start));

    let mut attempts = 0u32;
    let mut avoid = None;
    loop {
        let now = Instant::now();
        let picked = w.with_group(generation, gi, |g| {
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
        let set_cookie = match (&ucfg.sticky, sticky_key) {
            (Some(s), k) if k != Some(key) => Some((s, key)),
            _ => None,
        };
        let res = attempt(
            w, c, head, ucfg, addr, &body, deadline, keep, route, set_cookie, id,
        )
        .await;
        w.with_group(generation, gi, |g| {
            if let Some(e) = g.eps.get_mut(ep) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        });
        match res {
            Ok(after) => {
                w.with_group(generation, gi, |g| g.success(ep));
                return Ok(after);
            }
            Err(e) => {
                if e.endpoint_fault {
                    let now = Instant::now();
                    if w.with_group(generation, gi, |g| g.failure(ep, now)) == Some(true) {
                        tracing::warn!(upstream = %ucfg.name, endpoint = %addr, worker = w.id, "endpoint ejected after consecutive failures");
                    }
                }
                let may_retry = e.retryable
                    && attempts < ucfg.retries
                    && deadline.is_none_or(|d| Instant::now() < d)
                    && (e.stale
                        || w.with_group(generation, gi, |g| g.try_retry(Instant::now()))
                            == Some(true));
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

fn remaining(deadline: Option<Instant>, d: Duration) -> Duration {
    match deadline {
        Some(t) => d.min(t.saturating_duration_since(Instant::now())),
        None => d,
    }
}

async fn connect(
    w: &Worker,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<UpConn, AttemptErr> {
    let now = Instant::now();
    loop {
        let Some(conn) = w.pool_take(addr, now) else {
            break;
        };
        if conn.idle_for(now) >= STALE_CHECK_AFTER
            && crate::sys::peer_closed(conn.stream.as_raw_fd())
        {
            w.pool_recycle(conn.buf);
            continue;
        }
        return Ok(conn);
    }
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
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

#[allow(clippy::too_many_arguments)]
async fn attempt(
    w: &Worker,
    c: &mut Downstream,
    head: &RequestHead,
    ucfg: &crate::config::Upstream,
    addr: std::net::SocketAddr,
    body: &ReqBody,
    deadline: Option<Instant>,
    keep: bool,
    route: &CompiledRoute,
    set_cookie: Option<(&crate::config::Sticky, u64)>,
    id: &[u8],
) -> Result<After, AttemptErr> {
    let mut up = connect(w, addr, remaining(deadline, ucfg.connect_timeout)).await?;
    let reused = up.reused;
    let replayable = matches!(body, ReqBody::Buffered);
    let idempotent = head.method_kind().is_idempotent();

    // Send the request (kept in c.out for a retry).
    let req = std::mem::take(&mut c.out);
    let (res, req) = up.stream.write_all(req).await;
    c.out = req;
    if res.is_err() {
        // A write to a pooled connection fails when the peer closed it while idle: nothing was processed.
        return Err(if reused && replayable {
            AttemptErr {
                stale: true,
                ..AttemptErr::upstream(UpstreamError::Reset(addr), true, false)
            }
        } else {
            AttemptErr::upstream(UpstreamError::Reset(addr), replayable && idempotent, true)
        });
    }

    if let ReqBody::Stream(framing) = body {
        if head.expect_continue && head.minor == 1 {
            c.out.clear();
            c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if write_vec(&mut c.stream, &mut c.out).await.is_err() {
                return Err(AttemptErr::client(ProxyError::ClientClosed));
            }
        }
        stream_request_body(w, c, &mut up, *framing, route.max_body_bytes).await?;
    }

    // Read the response head, skipping interim 1xx responses (RFC 9110 §15.2).
    let mut resp = ResponseHead::default();
    let head_req = head.method_kind() == Method::Head;
    loop {
        match resp.parse(&mut up.buf, head_req, MAX_RESPONSE_HEAD) {
            Ok(Some(())) => {
                if (100..200).contains(&resp.status) {
                    if resp.status == 101 {
                        return Err(AttemptErr::upstream(
                            UpstreamError::BadResponse(crate::http1::head::HeadError::Syntax),
                            false,
                            true,
                        ));
                    }
                    continue;
                }
                break;
            }
            Ok(None) => {}
            Err(e) => {
                return Err(AttemptErr::upstream(
                    UpstreamError::BadResponse(e),
                    false,
                    true,
                ))
            }
        }
        let wait = remaining(deadline, ucfg.response_timeout);
        match read_more_timeout(&mut up.stream, &mut up.buf, READ_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                let nothing = up.buf.is_empty();
                if reused && nothing && replayable {
                    return Err(AttemptErr {
                        stale: true,
                        ..AttemptErr::upstream(UpstreamError::Reset(addr), true, false)
                    });
                }
                return Err(AttemptErr::upstream(
                    UpstreamError::Reset(addr),
                    nothing && replayable && idempotent,
                    true,
                ));
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => {
                let e = if deadline.is_some_and(|d| Instant::now() >= d) {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::HeadTimeout(ucfg.response_timeout)
                };
                return Err(AttemptErr::upstream(e, false, true));
            }
        }
    }

    // Relay the response head, rewritten.
    let framing = resp.body();
    let dechunk = framing == Framing::Chunked && head.minor == 0;
    let client_keep = keep && framing != Framing::Close && !dechunk;
    let out = &mut c.out;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason());
    out.extend_from_slice(b"\r\n");
    let mut has_id = false;
    let mut cl_written = false;
    for h in &resp.headers {
        let (name, value) = resp.header(h);
        match h.kind {
            HeaderKind::HopByHop => continue,
            HeaderKind::ContentLength => {
                if cl_written {
                    continue;
                }
                cl_written = true;
            }
            HeaderKind::RequestId => has_id = true,
            _ => {}
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_id {
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((s, key)) = set_cookie {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(s.cookie.as_bytes());
        out.push(b'=');
        out.extend_from_slice(format_hex(key, &mut [0u8; 16]));
        out.extend_from_slice(b"; Path=/; HttpOnly");
        if let Some(ttl) = s.ttl {
            out.extend_from_slice(b"; Max-Age=");
            out.extend_from_slice(itoa::Buffer::new().format(ttl.as_secs()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked && !dechunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !client_keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if head.minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    w.count_status(resp.status);

    let complete = relay_response_body(c, &mut up, framing, dechunk, ucfg, deadline).await?;
    if complete && resp.keep_alive && up.buf.is_empty() {
        w.pool_put(up, ucfg.pool_max_idle, ucfg.pool_idle_timeout);
    } else {
        w.pool_recycle(std::mem::take(&mut up.buf));
    }
    Ok(if client_keep {
        After::KeepAlive
    } else {
        After::Close
    })
}

fn format_hex(v: u64, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    &buf[..]
}

/// Streams the rest of the request body from the client to the upstream, enforcing size and time limits.
async fn stream_request_body(
    w: &Worker,
    c: &mut Downstream,
    up: &mut UpConn,
    framing: Framing,
    max: u64,
) -> Result<(), AttemptErr> {
    let deadline = Instant::now() + w.body_timeout();
    let mut dec = ChunkedDecoder::new();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        if !c.buf.is_empty() {
            let n = match framing {
                Framing::Chunked => {
                    let p = dec
                        .feed(&c.buf, |_| ())
                        .map_err(|e| AttemptErr::client(ProxyError::Chunk(e)))?;
                    if dec.data_bytes() > max {
                        return Err(AttemptErr::client(ProxyError::BodyTooLarge));
                    }
                    p.consumed
                }
                _ => (c.buf.len() as u64).min(left) as usize,
            };
            if write_front(&mut up.stream, &mut c.buf, n).await.is_err() {
                return Err(AttemptErr::upstream(
                    UpstreamError::Reset(up.addr),
                    false,
                    true,
                ));
            }
            left -= if framing == Framing::Chunked {
                0
            } else {
                n as u64
            };
            if (framing == Framing::Chunked && dec.is_done()) || left == 0 {
                return Ok(());
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match read_more_timeout(&mut c.stream, &mut c.buf, BODY_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                return Err(AttemptErr::client(ProxyError::ClientClosed))
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => return Err(AttemptErr::client(ProxyError::BodyTimeout)),
        }
    }
}

/// Sends the response head (in `c.out`) and body to the client. Returns whether the upstream message was
/// read completely (so the connection may be pooled).
async fn relay_response_body(
    c: &mut Downstream,
    up: &mut UpConn,
    framing: Framing,
    dechunk: bool,
    ucfg: &crate::config::Upstream,
    deadline: Option<Instant>,
) -> Result<bool, AttemptErr> {
    let client_err = |_: io::Error| AttemptErr::after();
    let idle = |dl| remaining(dl, ucfg.idle_timeout);
    match framing {
        Framing::None => {
            write_vec(&mut c.stream, &mut c.out)
                .await
                .map_err(client_err)?;
            Ok(true)
        }
        Framing::Length(total) => {
            let mut left = total;
            // Small bodies ride along with the head: one write.
            let first = (up.buf.len() as u64).min(left) as usize;
            if first <= COALESCE_MAX {
                c.out.extend_from_slice(&up.buf[..first]);
                up.buf.advance(first);
                left -= first as u64;
                write_vec(&mut c.stream, &mut c.out)
                    .await
                    .map_err(client_err)?;
            } else {
                write_vec(&mut c.stream, &mut c.out)
                    .await
                    .map_err(client_err)?;
            }
            while left > 0 {
                if up.buf.is_empty() {
                    match read_more_timeout(&mut up.stream, &mut up.buf, BODY_CHUNK, idle(deadline))
                        .await
                    {
                        Timed::Done(Ok(0)) | Timed::Done(Err(_)) | Timed::Elapsed => {
                            return Err(AttemptErr::after())
                        }
                        Timed::Done(Ok(_)) => {}
                    }
                }
                let n = (up.buf.len() as u64).min(left) as usize;
                write_front(&mut c.stream, &mut up.buf, n)
                    .await
                    .map_err(client_err)?;
                left -= n as u64;
            }
            Ok(true)
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            write_vec(&mut c.stream, &mut c.out)
                .await
                .map_err(client_err)?;
            loop {
                if !up.buf.is_empty() {
                    if dechunk {
                        let out = &mut c.out;
                        let p = dec
                            .feed(&up.buf, |d| out.extend_from_slice(d))
                            .map_err(|_| AttemptErr::after())?;
                        up.buf.advance(p.consumed);
                        write_vec(&mut c.stream, &mut c.out)
                            .await
                            .map_err(client_err)?;
                    } else {
                        let p = dec.feed(&up.buf, |_| ()).map_err(|_| AttemptErr::after())?;
                        write_front(&mut c.stream, &mut up.buf, p.consumed)
                            .await
                            .map_err(client_err)?;
                    }
                    if dec.is_done() {
                        return Ok(true);
                    }
                }
                match read_more_timeout(&mut up.stream, &mut up.buf, BODY_CHUNK, idle(deadline))
                    .await
                {
                    Timed::Done(Ok(0)) | Timed::Done(Err(_)) | Timed::Elapsed => {
                        return Err(AttemptErr::after())
                    }
                    Timed::Done(Ok(_)) => {}
                }
            }
        }
        Framing::Close => {
            let n = up.buf.len();
            c.out.extend_from_slice(&up.buf[..n]);
            up.buf.clear();
            write_vec(&mut c.stream, &mut c.out)
                .await
                .map_err(client_err)?;
            loop {
                match read_more_timeout(&mut up.stream, &mut up.buf, BODY_CHUNK, idle(deadline))
                    .await
                {
                    Timed::Done(Ok(0)) => return Ok(false),
                    Timed::Done(Err(_)) | Timed::Elapsed => return Err(AttemptErr::after()),
                    Timed::Done(Ok(_)) => {
                        let n = up.buf.len();
                        write_front(&mut c.stream, &mut up.buf, n)
                            .await
                            .map_err(client_err)?;
                    }
                }
            }
        }
    }
}
