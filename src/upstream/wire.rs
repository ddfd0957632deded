//! The byte stream under an upstream connection: the halves of a plain TCP socket, or of a TLS client
//! session over one (`tls::stream`). A user dispatches once per exchange, on `UpIo`, into code
//! generic over the halves (`conn::wire` traits and `SendRequest`): the plain instance is the code
//! the upstream client ran before TLS existed, with no branch per read or write, and a TLS session
//! lives behind one box so the connection (and every future holding one) stays as small as before.

use crate::sock::SockWr;
use crate::tls::stream::{TlsRd, TlsWr};
use monoio::io::{AsyncWriteRentExt, OwnedReadHalf};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ClientConnection;
use std::future::Future;
use std::os::fd::RawFd;

/// A TLS session's halves.
pub struct TlsHalves {
    pub rd: TlsRd<ClientConnection>,
    pub wr: TlsWr<ClientConnection>,
}

/// The halves of an upstream connection (split once, so request and response can flow at the same
/// time).
pub enum UpIo {
    Plain(OwnedReadHalf<TcpStream>, SockWr),
    Tls(Box<TlsHalves>),
}

impl UpIo {
    /// The socket's descriptor (for the idle peek of a pooled connection).
    pub fn fd(&self) -> RawFd {
        match self {
            UpIo::Plain(_, wr) => wr.fd(),
            UpIo::Tls(t) => t.wr.fd(),
        }
    }

    /// Nothing is buffered below HTTP (always so for plain TCP): see `TlsRd::is_drained`.
    #[inline]
    pub fn is_drained(&self) -> bool {
        match self {
            UpIo::Plain(..) => true,
            UpIo::Tls(t) => t.rd.is_drained(),
        }
    }
}

/// Sends a whole request that the caller keeps (for a retry).
pub trait SendRequest {
    /// Sends all of `req`; gives it back unchanged with the outcome.
    fn send_request(&mut self, req: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
}

impl SendRequest for SockWr {
    fn send_request(&mut self, req: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
        self.write_all(req)
    }
}

impl SendRequest for TlsWr<ClientConnection> {
    async fn send_request(&mut self, req: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        let r = self.write_slice(&req).await.map(|_| req.len());
        (r, req)
    }
}
