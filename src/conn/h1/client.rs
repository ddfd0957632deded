//! The HTTP/1.1 client connection as the pipeline's `Downstream`: its socket halves, read buffer and
//! output buffer. Response heads are rewritten into HTTP/1.1 here (`response`), bodies re-framed for
//! the client (de-chunked for HTTP/1.0), and head and first body bytes leave in one `sendmsg`.

use super::response::{write_head, Rewrite};
use crate::conn::wire::{WireRead, WireWrite};
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::encode::{self, Persist, Reply};
use crate::http1::head::{Framing, ResponseHead};
use crate::io::Timed;
use crate::pipeline::client::Peer;
use crate::pipeline::downstream::{
    Downstream, PeerIdentity, RequestBody, ResponseEdits, ResponseSink,
};
use bytes::{Buf, BytesMut};
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// Request bodies are read in pieces of this size.
const BODY_CHUNK: usize = 64 * 1024;

/// One client connection's state while it has a session (a parked connection keeps none of it), over
/// the read and write halves of its stream (TCP, or TLS): split once per connection, so a request
/// body and its response can flow at the same time.
pub struct H1Client<R, W> {
    pub rd: R,
    pub wr: W,
    /// Bytes read from the client and not yet consumed.
    pub buf: BytesMut,
    /// Reusable output buffer.
    pub out: Vec<u8>,
    /// Client address as text, formatted once per connection for X-Forwarded-For.
    pub peer_ip: Box<str>,
    /// Client address and the listener that accepted it.
    pub peer: Peer,
    /// Cancels the idle read when the connection parks.
    pub cancel: monoio::io::Canceller,
    /// HTTP minor version of the request being answered.
    pub minor: u8,
    /// De-chunks an upstream's chunked body for an HTTP/1.0 client.
    dechunk: Option<ChunkedDecoder>,
    /// The verified client certificate's identity (TLS with client certificates).
    pub identity: Option<Rc<PeerIdentity>>,
}

impl<R: WireRead, W: WireWrite> H1Client<R, W> {
    /// A session on the two halves of a client stream.
    pub fn new(rd: R, wr: W, buf: BytesMut, peer_ip: Box<str>, peer: Peer) -> H1Client<R, W> {
        H1Client {
            identity: None,
            rd,
            wr,
            buf,
            out: Vec::with_capacity(512),
            peer_ip,
            peer,
            cancel: monoio::io::Canceller::new(),
            minor: 1,
            dechunk: None,
        }
    }
}

/// The body half of an `H1Client`.
pub struct H1Body<'a, R> {
    rd: &'a mut R,
    buf: &'a mut BytesMut,
}

/// The response half of an `H1Client`.
pub struct H1Sink<'a, W> {
    wr: &'a mut W,
    out: &'a mut Vec<u8>,
    minor: u8,
    dechunk: &'a mut Option<ChunkedDecoder>,
}

impl<R: WireRead, W: WireWrite> Downstream for H1Client<R, W> {
    type Body<'a>
        = H1Body<'a, R>
    where
        Self: 'a;
    type Sink<'a>
        = H1Sink<'a, W>
    where
        Self: 'a;

    fn split(&mut self) -> (H1Body<'_, R>, H1Sink<'_, W>) {
        (
            H1Body {
                rd: &mut self.rd,
                buf: &mut self.buf,
            },
            H1Sink {
                wr: &mut self.wr,
                out: &mut self.out,
                minor: self.minor,
                dechunk: &mut self.dechunk,
            },
        )
    }

    fn peer_ip(&self) -> &str {
        &self.peer_ip
    }

    fn peer(&self) -> Peer {
        self.peer
    }

    fn peer_identity(&self) -> Option<Rc<PeerIdentity>> {
        self.identity.clone()
    }

    fn closing(&mut self) {
        self.wr.closing();
    }
}

impl<R: WireRead> RequestBody for H1Body<'_, R> {
    fn buf(&mut self) -> &mut BytesMut {
        self.buf
    }

    async fn read_more(&mut self, wait: Duration) -> Timed<io::Result<usize>> {
        self.rd.read_more_timeout(self.buf, BODY_CHUNK, wait).await
    }
}

impl<W: WireWrite> ResponseSink for H1Sink<'_, W> {
    async fn interim_continue(&mut self) -> io::Result<()> {
        if self.minor == 0 {
            return Ok(());
        }
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.wr.write_vec(self.out).await
    }

    fn encode_head(&mut self, head: &ResponseHead, rw: &ResponseEdits<'_>) {
        let dechunk = rw.framing == Framing::Chunked && self.minor == 0;
        *self.dechunk = dechunk.then(ChunkedDecoder::new);
        let rewrite = Rewrite {
            id: rw.id,
            set_cookie: rw.set_cookie,
            extra: rw.extra,
            rules: rw.rules,
            hide_backend: rw.hide_backend,
            client_minor: self.minor,
            chunked: rw.framing == Framing::Chunked && !dechunk,
            client_keep: rw.keep && self.can_keep(rw.framing),
        };
        self.out.clear();
        write_head(self.out, head, &rewrite);
    }

    async fn send_head(&mut self, body: &mut BytesMut, n: usize, sent: &mut u64) -> io::Result<()> {
        if self.dechunk.is_some() {
            *sent += self.out.len() as u64;
            self.wr.write_vec(self.out).await?;
            return self.send_body(body, n, sent).await;
        }
        // Head and as much of the body as is here leave in one syscall, the body sent from the read
        // buffer rather than copied behind the head.
        *sent += (self.out.len() + n) as u64;
        self.wr.write_two(self.out, body, n).await
    }

    async fn send_body(&mut self, body: &mut BytesMut, n: usize, sent: &mut u64) -> io::Result<()> {
        let Some(dec) = self.dechunk.as_mut() else {
            *sent += n as u64;
            return self.wr.write_front(body, n).await;
        };
        // The forwarder validated this framing already; decoding it again cannot fail.
        self.out.clear();
        let out = &mut *self.out;
        dec.feed(&body[..n], |d| out.extend_from_slice(d))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        body.advance(n);
        *sent += self.out.len() as u64;
        self.wr.write_vec(self.out).await
    }

    async fn send_reply(
        &mut self,
        reply: &Reply<'_>,
        close: bool,
        sent: &mut u64,
    ) -> io::Result<()> {
        let persist = if close {
            Persist::Close
        } else if self.minor == 0 {
            Persist::KeepAlive10
        } else {
            Persist::Keep
        };
        self.out.clear();
        encode::reply(self.out, reply, persist);
        *sent += self.out.len() as u64;
        self.wr.write_vec(self.out).await
    }

    fn can_keep(&self, f: Framing) -> bool {
        f != Framing::Close && !(f == Framing::Chunked && self.minor == 0)
    }
}
