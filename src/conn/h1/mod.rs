//! The downstream HTTP/1.1 connection: read a head (with header and idle timeouts), hand it to the proxy,
//! repeat while keep-alive holds. Pipelined requests wait in the read buffer and are answered in order,
//! because each is served to completion before the next head is parsed. A connection idle between
//! requests for longer than `PARK_AFTER` parks: its session state is freed and it waits for readability.

pub mod client;
pub mod response;

use crate::conn::park;
use crate::conn::wire::{WireRead, WireWrite};
use crate::http1::head::RequestHead;
use crate::io::{ParkRead, Timed, HEAD_CHUNK, SHRINK_ABOVE};
use crate::pipeline;
use crate::pipeline::client::Peer;
use crate::pipeline::ctx::{After, Buffers, Ctx};
use crate::respond::ProxyError;
use crate::sock::SockWr;
use crate::worker::{Gen, Worker};
use bytes::BytesMut;
use client::H1Client;
use monoio::io::Splitable;
use monoio::net::TcpStream;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A keep-alive connection that has waited this long for its next request gives back its buffers and its
/// session state and waits for readability alone: an idle connection then costs a few hundred bytes.
/// Long enough that a connection under load never parks between requests.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// Serves one client connection until it closes or parks.
/// `listener` is the index of the listener that accepted it (in `Config::listeners`).
pub fn serve(
    w: Rc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: u16,
) -> impl Future<Output = ()> {
    serve_from(w, stream, peer, listener, true)
}

/// Serves a parked connection that became readable (`conn::park`), as a new task.
pub async fn resume(w: Rc<Worker>, entry: park::Entry) {
    let std = std::net::TcpStream::from(entry.fd);
    match TcpStream::from_std(std) {
        Ok(stream) => serve_from(w, stream, entry.peer, entry.listener, false).await,
        Err(e) => tracing::debug!(worker = w.id, error = %e, "cannot resume a parked connection"),
    }
}

// An async block rather than an async fn: an async fn keeps its arguments twice in its state.
#[allow(clippy::manual_async_fn)]
fn serve_from(
    w: Rc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: u16,
    first: bool,
) -> impl Future<Output = ()> {
    async move {
        let _conn = w.begin_connection();
        // Readable may mean the peer's EOF, and a draining worker takes no new requests.
        if !first && (w.is_draining() || crate::sys::at_eof(stream.as_raw_fd())) {
            return;
        }
        // Boxed: the session (buffers, parsed heads, the proxy's state) is most of what a connection
        // costs while it is served. A bug anywhere in it ends this connection alone (`crate::panic`).
        let served =
            crate::panic::catch(Box::pin(session(&w, stream, peer, listener, first))).await;
        match served {
            Ok(Some(Parked { fd, idle_left })) => {
                let entry = park::Entry {
                    fd,
                    peer,
                    listener,
                    session: None,
                };
                // Refused only where the kernel refuses the registration: the connection closes.
                let _ = w.parking.park(entry, Instant::now() + idle_left);
            }
            Ok(None) => {}
            Err(p) => {
                w.count_panic();
                tracing::error!(worker = w.id, client = %peer, panic = %p, "panic on a connection; closed it");
            }
        }
    }
}

/// What `read_head` found.
enum Next {
    /// A complete head is parsed.
    Head,
    /// The client closed or idled out between requests.
    Closed,
    /// Nothing arrived within `PARK_AFTER`; this much of the idle timeout is left.
    Park(Duration),
}

/// A connection between sessions: the socket alone, and how long it may stay idle.
struct Parked {
    fd: std::os::fd::OwnedFd,
    idle_left: Duration,
}

/// Serves requests until the connection closes (None) or parks.
async fn session(
    w: &Rc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: u16,
    first: bool,
) -> Option<Parked> {
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_split();
    let mut c = H1Client::new(
        rd,
        SockWr::new(wr, fd),
        BytesMut::with_capacity(HEAD_CHUNK),
        peer.ip().to_string().into_boxed_str(),
        Peer {
            ip: peer.ip(),
            listener,
            tls: false,
        },
    );
    let mut bufs = Buffers::new();
    let parked = serve_requests(w, &mut c, &mut bufs, first).await;
    // Reunited rather than dropped as halves: monoio shuts the write side down when a write half is
    // dropped, a syscall per connection that the close, which sends the FIN anyway, makes unnecessary.
    let stream = c.rd.reunite(c.wr.into_inner()).ok()?;
    let idle_left = parked?;
    // Inside the session, so that monoio's check that no operation still holds the socket is caught
    // like any other bug of a session (none can: the last read finished before parking).
    let fd = crate::sys::into_owned_fd(stream);
    Some(Parked { fd, idle_left })
}

/// A TLS connection's halves between requests, and how long it may stay idle.
pub type TlsParked<C> = (
    crate::tls::stream::TlsRd<C>,
    crate::tls::stream::TlsWr<C>,
    Duration,
);

/// Serves one TLS connection whose handshake is done (`first`) or that was parked: requests until it
/// closes (then close_notify) or parks (its halves come back, for `conn::tls` to park the session).
pub async fn serve_tls<C, SD>(
    w: &Rc<Worker>,
    rd: crate::tls::stream::TlsRd<C>,
    wr: crate::tls::stream::TlsWr<C>,
    peer: SocketAddr,
    listener: u16,
    identity: Option<Rc<crate::pipeline::downstream::PeerIdentity>>,
    first: bool,
) -> Option<TlsParked<C>>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<SD>>,
    SD: rustls::SideData,
{
    let mut c = H1Client::new(
        rd,
        wr,
        BytesMut::new(),
        peer.ip().to_string().into_boxed_str(),
        Peer {
            ip: peer.ip(),
            listener,
            tls: true,
        },
    );
    c.identity = identity;
    let mut bufs = Buffers::new();
    let served = crate::panic::catch(Box::pin(serve_requests(w, &mut c, &mut bufs, first))).await;
    match served {
        Ok(Some(idle_left)) => return Some((c.rd, c.wr, idle_left)),
        Ok(None) => c.wr.close_notify().await,
        Err(p) => {
            w.count_panic();
            tracing::error!(worker = w.id, client = %peer, panic = %p, "panic on a connection; closed it");
        }
    }
    None
}

/// Serves requests on `c` until the connection should close (None) or park (the idle time left).
async fn serve_requests<R: WireRead, W: WireWrite>(
    w: &Rc<Worker>,
    c: &mut H1Client<R, W>,
    bufs: &mut Buffers,
    mut first: bool,
) -> Option<Duration> {
    let mut head = RequestHead::default();
    let mut gen = w.snapshot();
    loop {
        if gen.generation != w.generation() {
            gen = w.snapshot();
        }
        match read_head(w, &gen, c, &mut head, first).await {
            Ok(Next::Head) => {}
            Ok(Next::Closed) => return None,
            Ok(Next::Park(left)) => return Some(left),
            Err(e) => {
                pipeline::refuse_unparsed(w, &gen, c, &e, c.buf.len() as u64).await;
                return None;
            }
        }
        first = false;
        // A reload may have landed while this connection waited for the head.
        if gen.generation != w.generation() {
            gen = w.snapshot();
        }
        c.minor = head.minor;
        let mut ctx = Ctx::new(w, gen.clone(), &head);
        let after = pipeline::handle(w, c, &head, &mut ctx, bufs).await;
        // Let go of the head's bytes before reading again, so the read buffer is reused, not replaced.
        head.release();
        if c.buf.is_empty() && c.buf.capacity() > SHRINK_ABOVE {
            c.buf = BytesMut::with_capacity(HEAD_CHUNK);
        }
        if c.out.capacity() > SHRINK_ABOVE {
            c.out = Vec::with_capacity(512);
        }
        bufs.shrink(SHRINK_ABOVE);
        if after == After::Close || w.is_draining() {
            return None;
        }
    }
}

/// Reads until a complete head is parsed, the client goes away, or the connection should park.
async fn read_head<R: WireRead, W: WireWrite>(
    w: &Worker,
    gen: &Gen,
    c: &mut H1Client<R, W>,
    head: &mut RequestHead,
    first: bool,
) -> Result<Next, ProxyError> {
    let mut started: Option<Instant> = None;
    loop {
        if !c.buf.is_empty() {
            if head.parse(&mut c.buf, &gen.limits)?.is_some() {
                return Ok(Next::Head);
            }
            started.get_or_insert_with(Instant::now);
        } else if w.is_draining() && !first {
            return Ok(Next::Closed);
        }
        let idle = gen.http.idle_timeout;
        if R::PARKS && started.is_none() && !first && idle > PARK_AFTER {
            // Between requests: wait briefly with the buffer posted, then park without it.
            match c
                .rd
                .read_or_park(&mut c.buf, HEAD_CHUNK, &mut c.cancel, PARK_AFTER)
                .await
            {
                ParkRead::Read(Ok(0)) | ParkRead::Read(Err(_)) => return Ok(Next::Closed),
                ParkRead::Read(Ok(_)) => continue,
                ParkRead::Park => return Ok(Next::Park(idle - PARK_AFTER)),
            }
        }
        let wait = match started {
            Some(t) => gen.http.header_timeout.saturating_sub(t.elapsed()),
            None if first => gen.http.header_timeout,
            None => idle,
        };
        match c.rd.read_more_timeout(&mut c.buf, HEAD_CHUNK, wait).await {
            Timed::Done(Ok(0)) | Timed::Done(Err(_)) => {
                return Ok(Next::Closed);
            }
            Timed::Done(Ok(_)) => {}
            Timed::Elapsed => {
                return if started.is_some() {
                    Err(ProxyError::HeadTimeout)
                } else {
                    Ok(Next::Closed)
                };
            }
        }
    }
}
