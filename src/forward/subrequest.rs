//! A small request of sluice's own to an upstream group (the external auth check): an endpoint picked
//! by the group's balancer among its healthy ones, a pooled connection, the request written, the whole
//! response read (bounded), passive health updated, all within one deadline. It shares the group's
//! pools, balancer and health with the traffic it guards, like nginx's `auth_request` location.

use crate::conn::wire::WireRead;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, ResponseHead};
use crate::io::{Timed, READ_CHUNK};
use crate::upstream::client::{self, HeadDeadline, HeadFail};
use crate::worker::{Gen, Worker};
use bytes::Buf;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The largest response body kept (an auth service's 401/403 page is small).
pub const MAX_BODY: usize = 16 * 1024;

/// Why the sub-request got no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubError {
    /// No healthy endpoint in the group.
    #[error("no healthy endpoint")]
    NoEndpoint,
    /// Connect failed or the connection broke.
    #[error("connection failed")]
    Connection,
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The response was not valid HTTP/1.1, or its body too large.
    #[error("invalid response")]
    BadResponse,
}

/// A whole response.
pub struct SubResponse {
    pub status: u16,
    /// Header names lowercased, values as sent.
    pub headers: Vec<(Box<[u8]>, Box<[u8]>)>,
    pub body: Vec<u8>,
}

impl SubResponse {
    /// The first value of header `lower`.
    pub fn header(&self, lower: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| &**n == lower)
            .map(|(_, v)| &**v)
    }
}

/// Sends `req` (a complete HTTP/1.1 request) to upstream group `gi` and reads the answer, within
/// `timeout` in all.
pub async fn send(
    w: &Worker,
    gen: &Gen,
    gi: usize,
    req: Vec<u8>,
    timeout: Duration,
) -> Result<SubResponse, SubError> {
    let start = Instant::now();
    let picked = gen.with_group(gi, |g| {
        g.note_request(start);
        g.pick(None, None, start).map(|i| {
            g.eps[i].in_flight += 1;
            (i, g.eps[i].addr, g.eps[i].entry)
        })
    });
    let Some(Some((ep, addr, entry))) = picked else {
        return Err(SubError::NoEndpoint);
    };
    let Some(spec) = gen.upstreams.get(gi) else {
        return Err(SubError::NoEndpoint);
    };
    let ucfg = &spec.cfg;
    let res = match monoio::time::timeout(
        timeout,
        exchange(w, addr, entry, spec, req, start + timeout),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SubError::Timeout),
    };
    gen.with_group(gi, |g| {
        if let Some(e) = g.eps.get_mut(ep) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        match &res {
            Ok(_) => g.success(ep),
            Err(SubError::NoEndpoint) => {}
            Err(_) => {
                if g.failure(ep, Instant::now()) {
                    tracing::warn!(upstream = %ucfg.name, endpoint = %addr, worker = w.id, "endpoint ejected after consecutive failures");
                }
            }
        }
    });
    res
}

async fn exchange(
    w: &Worker,
    addr: std::net::SocketAddr,
    entry: u32,
    spec: &crate::upstream::UpstreamSpec,
    req: Vec<u8>,
    deadline: Instant,
) -> Result<SubResponse, SubError> {
    let ucfg = &spec.cfg;
    let left = || deadline.saturating_duration_since(Instant::now());
    let connect = ucfg.connect_timeout.min(left());
    let mut up = client::connect(w, addr, spec.tls.as_ref(), entry, connect)
        .await
        .map_err(|e| match e {
            crate::respond::UpstreamError::ConnectTimeout(_) => SubError::Timeout,
            _ => SubError::Connection,
        })?;
    let (res, _) = up.wr.send_kept(req).await;
    if res.is_err() {
        w.pool_recycle(std::mem::take(&mut up.buf));
        return Err(SubError::Connection);
    }
    let mut head = ResponseHead::default();
    let d = HeadDeadline {
        sent_at: Instant::now(),
        response_timeout: ucfg.response_timeout.min(left()),
        body_timeout: Duration::ZERO,
        total: Some(deadline),
    };
    let done = Cell::new(true);
    if let Err(e) = client::read_head(&mut up.rd, &mut up.buf, &mut head, false, &done, &d).await {
        w.pool_recycle(std::mem::take(&mut up.buf));
        return Err(match e {
            HeadFail::Elapsed { .. } => SubError::Timeout,
            HeadFail::Closed { .. } => SubError::Connection,
            HeadFail::Bad(_) => SubError::BadResponse,
        });
    }
    let status = head.status;
    let framing = head.body();
    let keep = head.keep_alive;
    let mut headers = Vec::with_capacity(head.headers.len());
    for h in &head.headers {
        let (n, v) = head.header(h);
        headers.push((n.to_ascii_lowercase().into_boxed_slice(), v.into()));
    }
    head.release();
    let mut body = Vec::new();
    let complete = match framing {
        Framing::None => true,
        Framing::Length(n) => {
            let n = usize::try_from(n).map_err(|_| SubError::BadResponse)?;
            if n > MAX_BODY {
                w.pool_recycle(std::mem::take(&mut up.buf));
                return Err(SubError::BadResponse);
            }
            while up.buf.len() < n {
                more(&mut up, left()).await?;
            }
            body.extend_from_slice(&up.buf[..n]);
            up.buf.advance(n);
            true
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let p = dec
                    .feed(&up.buf, |data| body.extend_from_slice(data))
                    .map_err(|_| SubError::BadResponse)?;
                up.buf.advance(p.consumed);
                if body.len() > MAX_BODY {
                    w.pool_recycle(std::mem::take(&mut up.buf));
                    return Err(SubError::BadResponse);
                }
                if p.done {
                    break;
                }
                more(&mut up, left()).await?;
            }
            true
        }
        Framing::Close => {
            loop {
                match up
                    .rd
                    .read_more_timeout(&mut up.buf, READ_CHUNK, left())
                    .await
                {
                    Timed::Done(Ok(0)) => break,
                    Timed::Done(Ok(_)) if up.buf.len() <= MAX_BODY => {}
                    Timed::Done(Ok(_)) => return Err(SubError::BadResponse),
                    Timed::Done(Err(_)) => return Err(SubError::Connection),
                    Timed::Elapsed => return Err(SubError::Timeout),
                }
            }
            body.extend_from_slice(&up.buf);
            up.buf.clear();
            false
        }
    };
    if complete && keep && up.is_drained() {
        w.pool_put(up, ucfg.pool_max_idle, ucfg.pool_idle_timeout);
    } else {
        w.pool_recycle(std::mem::take(&mut up.buf));
    }
    Ok(SubResponse {
        status,
        headers,
        body,
    })
}

async fn more(up: &mut crate::upstream::pool::UpConn, wait: Duration) -> Result<(), SubError> {
    match up.rd.read_more_timeout(&mut up.buf, READ_CHUNK, wait).await {
        Timed::Done(Ok(0)) | Timed::Done(Err(_)) => Err(SubError::Connection),
        Timed::Done(Ok(_)) => Ok(()),
        Timed::Elapsed => Err(SubError::Timeout),
    }
}
