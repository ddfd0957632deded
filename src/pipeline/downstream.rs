//! The client side of one request, as the pipeline and the forwarder see it: whatever the protocol
//! (an HTTP/1.1 connection today, an HTTP/2 stream later), a request's body is read and its response
//! sent through these traits. Static dispatch only: the forwarder is generic over them, so the
//! HTTP/1.1 path compiles to what it was before there was an interface.

use crate::http1::encode::Reply;
use crate::http1::head::{Framing, ResponseHead};
use crate::io::Timed;
use crate::policy::headers::{HeaderRules, Vars};
use bytes::BytesMut;
use std::io;
use std::time::Duration;

/// What the forwarder needs to turn an upstream response head into the client's.
pub struct ResponseEdits<'a> {
    /// Added as `x-request-id` when the upstream sent none.
    pub id: &'a [u8],
    /// A sticky-session cookie to set: the policy and the endpoint's key.
    pub set_cookie: Option<(&'a crate::config::Sticky, u64)>,
    /// The upstream's body framing (the downstream re-frames it as its protocol needs).
    pub framing: Framing,
    /// The connection (or stream) may carry another request after this one.
    pub keep: bool,
    /// Header lines policies add (`name: value\r\n` each; CORS, ...).
    pub extra: &'a [u8],
    /// The route's `response_headers` with the request's template values; None when it has none.
    pub rules: Option<(&'a HeaderRules, &'a Vars<'a>)>,
    /// Remove the upstream's headers that name its software (`policy::headers::fingerprint`).
    pub hide_backend: bool,
}

pub use crate::tls::identity::PeerIdentity;

/// Reading the rest of a request body.
#[allow(async_fn_in_trait)] // one thread per core: no future here needs to be Send
pub trait RequestBody {
    /// Bytes of the body read from the client and not yet consumed.
    fn buf(&mut self) -> &mut BytesMut;
    /// Reads more onto the end of `buf`, waiting at most `wait`; 0 = the client closed.
    async fn read_more(&mut self, wait: Duration) -> Timed<io::Result<usize>>;
}

/// Sending a response. Every method adds the bytes it sends to `sent` (the record's `bytes_out`)
/// before it writes them, so a write cut short still counts: `bytes_out > 0` means the client may
/// have seen part of a response, and a contained panic then closes instead of answering 500.
#[allow(async_fn_in_trait)]
pub trait ResponseSink {
    /// `100 Continue` (RFC 9110 §10.1.1), before the body of an `Expect: 100-continue` request is read.
    /// Not counted: an interim response leaves the final one still to be sent.
    async fn interim_continue(&mut self) -> io::Result<()>;
    /// Turns the upstream's response head into the client's, in the sink's own buffer, so the
    /// upstream head's bytes can be let go (and its read buffer reused) before the body is read.
    fn encode_head(&mut self, head: &ResponseHead, rw: &ResponseEdits<'_>);
    /// Sends the encoded head, then the first `n` bytes of `body` (upstream wire bytes in the
    /// framing given to `encode_head`), removed from it.
    async fn send_head(&mut self, body: &mut BytesMut, n: usize, sent: &mut u64) -> io::Result<()>;
    /// The next `n` bytes of the upstream's body from the front of `body`, removed from it.
    async fn send_body(&mut self, body: &mut BytesMut, n: usize, sent: &mut u64) -> io::Result<()>;
    /// A whole response of sluice's own; `close` ends the connection after it.
    async fn send_reply(
        &mut self,
        reply: &Reply<'_>,
        close: bool,
        sent: &mut u64,
    ) -> io::Result<()>;
    /// Whether the response would keep the connection for the upstream framing `f` (HTTP/1.0 clients
    /// cannot be sent a chunked or close-delimited body on a kept connection).
    fn can_keep(&self, f: Framing) -> bool;
}

/// One request's client side: its body and its response, usable at the same time (a body still
/// uploading while the response already streams back).
pub trait Downstream {
    /// The body half.
    type Body<'a>: RequestBody
    where
        Self: 'a;
    /// The response half.
    type Sink<'a>: ResponseSink
    where
        Self: 'a;
    /// Both halves, borrowed together.
    fn split(&mut self) -> (Self::Body<'_>, Self::Sink<'_>);
    /// The peer's address as text, formatted once per connection.
    fn peer_ip(&self) -> &str;
    /// The peer's address and the listener it came in on. What the pipeline uses is the resolved
    /// `Ctx::client` (see `pipeline::client`), which starts from this.
    fn peer(&self) -> crate::pipeline::client::Peer;
    /// The verified identity of the client's TLS certificate (mTLS), when the connection has one:
    /// what `auth = ["mtls"]` reads. Shared with the connection (an `Rc` clone, no copy).
    fn peer_identity(&self) -> Option<std::rc::Rc<PeerIdentity>> {
        None
    }
    /// Marks what is sent from now on as the last bytes before the connection closes, so the reply
    /// can leave with the close (see `SockWr::closing`). A no-op where that means nothing.
    fn closing(&mut self);
}
