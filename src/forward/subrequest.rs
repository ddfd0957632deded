//! A small request of sluice's own to an upstream group (the external auth check): an endpoint picked
//! by the group's balancer among its healthy ones, a pooled connection, the request written, the whole
//! response read (bounded), passive health updated, all within one deadline. It shares the group's
//! pools, balancer and health with the traffic it guards, like nginx's `auth_request` location.

use crate::conn::wire::WireRead;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, ResponseHead};
use crate::io::{Timed, READ_CHUNK};
use crate::upstream::client::{self, HeadDeadline, HeadFail};
use crate::upstream::wire::{SendRequest, UpIo};
use crate::worker::{Gen, Worker};
use bytes::{Buf, BytesMut};
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
    let left = deadline.saturating_duration_since(Instant::now());
    let mut up = client::connect(
        w,
        addr,
        spec.tls.as_ref(),
        entry,
        ucfg.connect_timeout.min(left),
    )
    .await
    .map_err(|e| match e {
        crate::respond::UpstreamError::ConnectTimeout(_) => SubError::Timeout,
        _ => SubError::Connection,
    })?;
    let res = match &mut up.io {
        UpIo::Plain(rd, wr) => talk(rd, wr, &mut up.buf, req, ucfg, deadline).await,
        UpIo::Tls(t) => {
            let (rd, wr) = (&mut t.rd, &mut t.wr);
            talk(rd, wr, &mut up.buf, req, ucfg, deadline).await
        }
    };
    match res {
        Ok((resp, true)) if up.is_drained() => {
            w.pool_put(up, ucfg.pool_max_idle, ucfg.pool_idle_timeout);
            Ok(resp)
        }
        Ok((resp, _)) => {
            w.pool_recycle(std::mem::take(&mut up.buf));
            Ok(resp)
        }
        Err(e) => {
            w.pool_recycle(std::mem::take(&mut up.buf));
            Err(e)
        }
    }
}

/// Sends `req` on a connection's halves and reads the whole response into `buf`; with whether the
/// connection can carry another exchange (read to its end, kept alive).
async fn talk<R: WireRead, W: SendRequest>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut BytesMut,
    req: Vec<u8>,
    ucfg: &crate::config::Upstream,
    deadline: Instant,
) -> Result<(SubResponse, bool), SubError> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let (res, _) = wr.send_request(req).await;
    if res.is_err() {
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
    if let Err(e) = client::read_head(rd, buf, &mut head, false, &done, &d).await {
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
                return Err(SubError::BadResponse);
            }
            while buf.len() < n {
                more(rd, buf, left()).await?;
            }
            body.extend_from_slice(&buf[..n]);
            buf.advance(n);
            true
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let p = dec
                    .feed(buf, |data| body.extend_from_slice(data))
                    .map_err(|_| SubError::BadResponse)?;
                buf.advance(p.consumed);
                if body.len() > MAX_BODY {
                    return Err(SubError::BadResponse);
                }
                if p.done {
                    break;
                }
                more(rd, buf, left()).await?;
            }
            true
        }
        Framing::Close => {
            loop {
                match rd.read_more_timeout(buf, READ_CHUNK, left()).await {
                    Timed::Done(Ok(0)) => break,
                    Timed::Done(Ok(_)) if buf.len() <= MAX_BODY => {}
                    Timed::Done(Ok(_)) => return Err(SubError::BadResponse),
                    Timed::Done(Err(_)) => return Err(SubError::Connection),
                    Timed::Elapsed => return Err(SubError::Timeout),
                }
            }
            body.extend_from_slice(buf);
            buf.clear();
            false
        }
    };
    let resp = SubResponse {
        status,
        headers,
        body,
    };
    Ok((resp, complete && keep))
}

async fn more<R: WireRead>(rd: &mut R, buf: &mut BytesMut, wait: Duration) -> Result<(), SubError> {
    match rd.read_more_timeout(buf, READ_CHUNK, wait).await {
        Timed::Done(Ok(0)) | Timed::Done(Err(_)) => Err(SubError::Connection),
        Timed::Done(Ok(_)) => Ok(()),
        Timed::Elapsed => Err(SubError::Timeout),
    }
}
