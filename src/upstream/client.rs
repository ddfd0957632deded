//! The upstream HTTP/1.1 client: a connection from the worker's pool (checked for anything that arrived
//! while it sat idle) or a new one (plain TCP, or TLS with the group's `tls::client::Connector`, the
//! handshake within the connect timeout), the request written, and the response head read (interim 1xx
//! absorbed) within its deadline. What a failure means for the request (retry, passive health) is the
//! forwarder's decision; this module only says what happened.

use super::pool::UpConn;
use super::wire::{UpRd, UpWr};
use crate::conn::wire::WireRead;
use crate::http1::head::{HeadError, ResponseHead, MAX_RESPONSE_HEAD};
use crate::io::{Timed, READ_CHUNK};
use crate::respond::UpstreamError;
use crate::tls::client::Connector;
use crate::tls::stream::{self, HandshakeError};
use crate::tls::Failure;
use crate::worker::Worker;
use bytes::BytesMut;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Upstream handshake failures logged per worker per second at most (with the listeners' own).
const TLS_LOGS_PER_SECOND: u32 = 5;

/// A pooled connection to `addr`, an address of `endpoints` entry `entry`, or a new one within
/// `timeout`: the TCP connect and, with `tls`, the handshake both within it.
pub async fn connect(
    w: &Worker,
    addr: SocketAddr,
    tls: Option<&Connector>,
    entry: u32,
    timeout: Duration,
) -> Result<UpConn, UpstreamError> {
    let now = Instant::now();
    let key = (addr, tls.map_or(0, |t| t.pool_key(entry)));
    while let Some(conn) = w.pool_take(key, now) {
        // RFC 9112 §9.3: anything that arrived on an idle connection (an unsolicited response, junk, a
        // close) means the exchange is out of step or over; reusing it would hand this request that
        // answer. Checked on every reuse, however short the idle time: bytes can land within
        // microseconds of the connection going back to the pool. Over TLS a close_notify (or any
        // record) shows the same way and retires the session.
        if crate::sys::peer_closed(conn.wr.fd()) {
            w.pool_retire(conn.buf);
            continue;
        }
        return Ok(conn);
    }
    let s = dial(addr, timeout).await?;
    let Some(t) = tls else {
        return Ok(UpConn::new(s, addr, w.pool_buffer()));
    };
    match handshake(s, t, entry, now + timeout).await {
        Ok((rd, wr)) => Ok(UpConn::tls(rd, wr, addr, key.1, w.pool_buffer())),
        Err(e) => {
            let reason = Failure::of(&e);
            if w.tls_log_allowed(TLS_LOGS_PER_SECOND) {
                tracing::warn!(worker = w.id, upstream = %t.upstream, endpoint = %addr, reason = reason.label(), error = %e, "upstream TLS handshake failed");
            }
            Err(match e {
                HandshakeError::Timeout => UpstreamError::ConnectTimeout(addr),
                _ => UpstreamError::TlsHandshake { addr, reason },
            })
        }
    }
}

/// A new TCP connection to `addr` within `timeout`, Nagle off.
pub async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(UpstreamError::Connect { addr, source: e }),
        Err(_) => Err(UpstreamError::ConnectTimeout(addr)),
    }
}

/// The TLS handshake on a fresh connection to an endpoint of `entry`, until `deadline`; the session's
/// halves once it verified.
pub async fn handshake(
    mut s: TcpStream,
    tls: &Connector,
    entry: u32,
    deadline: Instant,
) -> Result<(UpRd, UpWr), HandshakeError> {
    let mut session = tls.session(entry)?;
    let mut inbuf = BytesMut::new();
    stream::handshake(&mut s, &mut session, &mut inbuf, deadline).await?;
    let (rd, wr) = stream::split(s, session, inbuf);
    Ok((UpRd::Tls(rd), UpWr::Tls(wr)))
}

/// Why no response head arrived.
pub enum HeadFail {
    /// The upstream closed or reset the connection; `nothing` when not one byte of a response came.
    Closed {
        /// Not a byte of a response was received.
        nothing: bool,
    },
    /// The head's deadline passed (`total` when it was the exchange's total deadline).
    Elapsed {
        /// The total timeout, not the response timeout, ran out.
        total: bool,
    },
    /// What arrived is not a valid response head (or a 101, which a proxy that did not ask for an
    /// upgrade cannot pass on).
    Bad(HeadError),
}

/// When the head must have arrived.
pub struct HeadDeadline {
    /// When the request (its head, and the body when it was buffered) was sent.
    pub sent_at: Instant,
    /// `response_timeout`.
    pub response_timeout: Duration,
    /// `[http] body_timeout` of the request's generation: while the body still uploads, the response
    /// clock has not started, so the upload's time is allowed too.
    pub body_timeout: Duration,
    /// The exchange's `total_timeout` deadline.
    pub total: Option<Instant>,
}

/// `d` capped by what is left of `deadline`.
pub fn remaining(deadline: Option<Instant>, d: Duration) -> Duration {
    match deadline {
        Some(t) => d.min(t.saturating_duration_since(Instant::now())),
        None => d,
    }
}

/// Reads the final response head into `resp`, skipping interim 1xx responses (RFC 9110 §15.2).
/// `response_timeout` is a deadline for the whole head, not a timer per read: a head dripped a byte at
/// a time still ends at it; once the body is sent (`body_done`) the clock runs from then.
pub async fn read_head<R: WireRead>(
    up: &mut R,
    ubuf: &mut BytesMut,
    resp: &mut ResponseHead,
    head_request: bool,
    body_done: &Cell<bool>,
    d: &HeadDeadline,
) -> Result<(), HeadFail> {
    let rt = d.response_timeout;
    let mut head_by = body_done.get().then(|| d.sent_at + rt);
    let upload_by = d.sent_at + rt + d.body_timeout;
    loop {
        match resp.parse(ubuf, head_request, MAX_RESPONSE_HEAD) {
            Ok(Some(())) if resp.status == 101 => return Err(HeadFail::Bad(HeadError::Syntax)),
            Ok(Some(())) if (100..200).contains(&resp.status) => continue,
            Ok(Some(())) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(HeadFail::Bad(e)),
        }
        let now = Instant::now();
        if head_by.is_none() && body_done.get() {
            head_by = Some(now + rt);
        }
        let until = head_by.unwrap_or(upload_by);
        let wait = remaining(d.total, until.saturating_duration_since(now));
        match up.read_more_timeout(ubuf, READ_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                return Err(HeadFail::Closed {
                    nothing: ubuf.is_empty(),
                })
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => {
                return Err(HeadFail::Elapsed {
                    total: d.total.is_some_and(|t| Instant::now() >= t),
                })
            }
        }
    }
}
