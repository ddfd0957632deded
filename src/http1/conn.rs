//! The downstream HTTP/1.1 connection: read a head (with header and idle timeouts), hand it to the proxy,
//! repeat while keep-alive holds. Pipelined requests wait in the read buffer and are answered in order,
//! because each is served to completion before the next head is parsed.

use crate::access_log::{format_json, format_template, LogFields};
use crate::http1::head::RequestHead;
use crate::http1::io::{read_more_timeout, write_vec, Timed, HEAD_CHUNK, SHRINK_ABOVE};
use crate::metrics::{ErrorKind, RequestRecord};
use crate::proxy::{handle, After, Downstream, Ids};
use crate::respond::{message_for, reason_for, status_for, write_error, ProxyError};
use crate::sock::SockWr;
use crate::worker::Gen;
use crate::worker::Worker;
use bytes::BytesMut;
use monoio::io::Splitable;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

/// Serves one client connection until it closes.
pub async fn serve(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let _conn = w.begin_connection();
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_split();
    let mut c = Downstream {
        rd,
        wr: SockWr::new(wr, fd),
        buf: BytesMut::with_capacity(HEAD_CHUNK),
        out: Vec::with_capacity(512),
        resp: Default::default(),
        peer_ip: peer.ip().to_string().into_boxed_str(),
    };
    let mut head = RequestHead::default();
    let mut snap = w.snapshot();
    let mut first = true;
    loop {
        if snap.generation != w.generation() {
            snap = w.snapshot();
        }
        match read_head(&w, &snap, &mut c, &mut head, first).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let status = status_for(&e);
                let mut rec = RequestRecord::new(c.buf.len() as u64);
                rec.status = status;
                rec.reason = reason_for(&e);
                let mut id = [0u8; 32];
                w.next_request_id(&mut id);
                c.out.clear();
                write_error(&mut c.out, status, message_for(&e), &id, true);
                rec.bytes_out = c.out.len() as u64;
                let _ = write_vec(&mut c.wr, &mut c.out).await;
                snap.record(&rec, false);
                // The head did not parse: log it with an empty request line, never with half-parsed spans.
                let empty = RequestHead::default();
                log(&w, &snap, &c, &empty, &rec, &id, b"-");
                return;
            }
        }
        first = false;
        // A reload may have landed while this connection waited for the head.
        if snap.generation != w.generation() {
            snap = w.snapshot();
        }
        let mut rec = RequestRecord::new(head.bytes().len() as u64);
        let ids = Ids::new(&w, &head);
        let after = {
            let _req = w.begin_request();
            handle(&w, &snap, &mut c, &head, &mut rec, &ids).await
        };
        let upstream_fault = matches!(
            rec.reason.error_kind(),
            Some(
                ErrorKind::UpstreamConnect | ErrorKind::UpstreamTimeout | ErrorKind::UpstreamReset
            )
        );
        snap.record(&rec, upstream_fault);
        log(&w, &snap, &c, &head, &rec, ids.id(), ids.traceparent());
        // Let go of the head's bytes before reading again, so the read buffer is reused, not replaced.
        head.release();
        if c.buf.is_empty() && c.buf.capacity() > SHRINK_ABOVE {
            c.buf = BytesMut::with_capacity(HEAD_CHUNK);
        }
        if c.out.capacity() > SHRINK_ABOVE {
            c.out = Vec::with_capacity(512);
        }
        if after == After::Close || w.is_draining() {
            return;
        }
    }
}

fn log(
    w: &Worker,
    snap: &Gen,
    c: &Downstream,
    head: &RequestHead,
    rec: &RequestRecord,
    request_id: &[u8],
    traceparent: &[u8],
) {
    if snap.config.access_log.is_none() {
        return;
    }
    let (route, upstream, endpoint) = w.names(snap, rec);
    let fields = LogFields {
        head,
        rec,
        request_id,
        traceparent,
        client: &c.peer_ip,
        route,
        upstream,
        endpoint,
        worker: w.id,
    };
    w.log_request(snap, rec, |out, template| match template {
        Some(t) => format_template(out, t, &fields),
        None => format_json(out, &fields),
    });
}

/// Reads until a complete head is parsed. Ok(false) = the client closed or idled out between requests.
async fn read_head(
    w: &Worker,
    snap: &crate::snapshot::Snapshot,
    c: &mut Downstream,
    head: &mut RequestHead,
    first: bool,
) -> Result<bool, ProxyError> {
    let mut started: Option<Instant> = None;
    loop {
        if !c.buf.is_empty() {
            if head.parse(&mut c.buf, &snap.limits)?.is_some() {
                return Ok(true);
            }
            started.get_or_insert_with(Instant::now);
        } else if w.is_draining() && !first {
            return Ok(false);
        }
        let wait = match started {
            Some(t) => snap.http.header_timeout.saturating_sub(t.elapsed()),
            None if first => snap.http.header_timeout,
            None => snap.http.idle_timeout,
        };
        match read_more_timeout(&mut c.rd, &mut c.buf, HEAD_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                return Ok(false);
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => {
                return if started.is_some() {
                    Err(ProxyError::HeadTimeout)
                } else {
                    Ok(false)
                };
            }
        }
    }
}
