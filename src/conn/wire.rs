//! The byte stream under an HTTP/1.1 connection, plain TCP or TLS: what the connection driver reads
//! requests from and writes responses to. Static dispatch: the plain path compiles to the calls it
//! made before TLS existed.

use crate::io::{ParkRead, Timed};
use crate::sock::SockWr;
use bytes::BytesMut;
use monoio::io::{Canceller, OwnedReadHalf};
use monoio::net::TcpStream;
use std::io;
use std::time::Duration;

/// The read side.
#[allow(async_fn_in_trait)] // one thread per core: no future here needs to be Send
pub trait WireRead {
    /// An idle connection can give back its buffers and wait for readability alone (`conn::park`).
    const PARKS: bool;
    /// Reads more bytes onto the end of `buf`; 0 = EOF.
    async fn read_more(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize>;
    /// `read_more` bounded by `d`.
    async fn read_more_timeout(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        d: Duration,
    ) -> Timed<io::Result<usize>> {
        match monoio::time::timeout(d, self.read_more(buf, chunk)).await {
            Ok(r) => Timed::Done(r),
            Err(_) => Timed::Elapsed,
        }
    }
    /// `crate::io::read_or_park` where `PARKS`; elsewhere never called.
    async fn read_or_park(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        cancel: &mut Canceller,
        after: Duration,
    ) -> ParkRead;
}

/// The write side.
#[allow(async_fn_in_trait)]
pub trait WireWrite {
    /// Writes all of `out` and gives it back cleared.
    async fn write_vec(&mut self, out: &mut Vec<u8>) -> io::Result<()>;
    /// Writes `buf[..n]` and removes it from `buf`.
    async fn write_front(&mut self, buf: &mut BytesMut, n: usize) -> io::Result<()>;
    /// All of `a`, then `buf[..n]`, in as few sends as the stream allows.
    async fn write_two(&mut self, a: &mut Vec<u8>, buf: &mut BytesMut, n: usize) -> io::Result<()>;
    /// What is written from now on is the last before the connection closes.
    fn closing(&mut self);
}

impl WireRead for OwnedReadHalf<TcpStream> {
    const PARKS: bool = true;
    async fn read_more(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        crate::io::read_more(self, buf, chunk).await
    }
    async fn read_more_timeout(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        d: Duration,
    ) -> Timed<io::Result<usize>> {
        crate::io::read_more_timeout(self, buf, chunk, d).await
    }
    async fn read_or_park(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        cancel: &mut Canceller,
        after: Duration,
    ) -> ParkRead {
        crate::io::read_or_park(self, buf, chunk, cancel, after).await
    }
}

impl WireWrite for SockWr {
    async fn write_vec(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        crate::io::write_vec(self, out).await
    }
    async fn write_front(&mut self, buf: &mut BytesMut, n: usize) -> io::Result<()> {
        crate::io::write_front(self, buf, n).await
    }
    async fn write_two(&mut self, a: &mut Vec<u8>, buf: &mut BytesMut, n: usize) -> io::Result<()> {
        SockWr::write_two(self, a, buf, n).await
    }
    fn closing(&mut self) {
        SockWr::closing(self)
    }
}
