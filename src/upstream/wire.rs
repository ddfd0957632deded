//! The byte stream under an upstream connection: the halves of a plain TCP socket, or of a TLS client
//! session over one (`tls::stream`). Static dispatch by an enum: the plain arms are the calls the
//! upstream client made before TLS existed, behind one well-predicted branch, with no allocation and
//! no vtable. The forwarder and the sub-request client read and write only through here.

use crate::conn::wire::{WireRead, WireWrite};
use crate::io::{ParkRead, Timed};
use crate::sock::SockWr;
use crate::tls::stream::{TlsRd, TlsWr};
use bytes::BytesMut;
use monoio::io::{AsyncWriteRentExt, Canceller, OwnedReadHalf};
use monoio::net::TcpStream;
use rustls::ClientConnection;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// The read half of an upstream connection.
pub enum UpRd {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsRd<ClientConnection>),
}

/// The write half of an upstream connection.
pub enum UpWr {
    Plain(SockWr),
    Tls(TlsWr<ClientConnection>),
}

impl UpRd {
    /// Nothing is buffered below the HTTP layer (always so for plain TCP): see `TlsRd::is_drained`.
    pub fn is_drained(&self) -> bool {
        match self {
            UpRd::Plain(_) => true,
            UpRd::Tls(t) => t.is_drained(),
        }
    }
}

impl UpWr {
    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        match self {
            UpWr::Plain(w) => w.fd(),
            UpWr::Tls(t) => t.fd(),
        }
    }

    /// Sends all of `req` and gives it back as it was (kept for a retry).
    pub async fn send_kept(&mut self, req: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            UpWr::Plain(w) => {
                let (r, req) = w.write_all(req).await;
                (r.map(|_| ()), req)
            }
            UpWr::Tls(t) => {
                let r = t.write_slice(&req).await;
                (r, req)
            }
        }
    }
}

impl WireRead for UpRd {
    // rustls may hold decrypted bytes that the socket's readability would not announce.
    const PARKS: bool = false;

    async fn read_more(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        match self {
            UpRd::Plain(r) => crate::io::read_more(r, buf, chunk).await,
            UpRd::Tls(t) => t.read_more(buf, chunk).await,
        }
    }

    async fn read_more_timeout(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        d: Duration,
    ) -> Timed<io::Result<usize>> {
        match self {
            UpRd::Plain(r) => crate::io::read_more_timeout(r, buf, chunk, d).await,
            UpRd::Tls(t) => t.read_more_timeout(buf, chunk, d).await,
        }
    }

    async fn read_or_park(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        cancel: &mut Canceller,
        after: Duration,
    ) -> ParkRead {
        match self {
            UpRd::Plain(r) => crate::io::read_or_park(r, buf, chunk, cancel, after).await,
            UpRd::Tls(t) => t.read_or_park(buf, chunk, cancel, after).await,
        }
    }
}

impl WireWrite for UpWr {
    async fn write_vec(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            UpWr::Plain(w) => crate::io::write_vec(w, out).await,
            UpWr::Tls(t) => t.write_vec(out).await,
        }
    }

    async fn write_front(&mut self, buf: &mut BytesMut, n: usize) -> io::Result<()> {
        match self {
            UpWr::Plain(w) => crate::io::write_front(w, buf, n).await,
            UpWr::Tls(t) => t.write_front(buf, n).await,
        }
    }

    async fn write_two(&mut self, a: &mut Vec<u8>, buf: &mut BytesMut, n: usize) -> io::Result<()> {
        match self {
            UpWr::Plain(w) => w.write_two(a, buf, n).await,
            UpWr::Tls(t) => t.write_two(a, buf, n).await,
        }
    }

    fn closing(&mut self) {
        match self {
            UpWr::Plain(w) => w.closing(),
            UpWr::Tls(t) => t.closing(),
        }
    }
}
