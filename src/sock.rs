//! The write half of a proxied TCP socket. A write is first tried inline with a non-blocking `send`:
//! on a socket with room (nearly always, for responses and request heads) that is one syscall and no
//! trip through the ring, where an io_uring write costs a ring submission, a completion and another
//! turn of the event loop. Only when the kernel buffer is full does the write go through the driver.

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedWriteHalf};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::os::fd::RawFd;

/// Write half of a TCP connection with the inline-send fast path.
pub struct SockWr {
    inner: OwnedWriteHalf<TcpStream>,
    fd: RawFd,
    /// The connection closes after these writes: see `closing`.
    last: bool,
}

impl SockWr {
    /// Wraps the write half of the socket whose descriptor is `fd`.
    pub fn new(inner: OwnedWriteHalf<TcpStream>, fd: RawFd) -> SockWr {
        SockWr {
            inner,
            fd,
            last: false,
        }
    }

    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Marks what is written from now on as the last bytes before the connection closes. Inline sends then
    /// carry MSG_MORE, so the kernel holds back their last partial segment and sends it with the FIN of
    /// the close: the reply and the FIN travel as one segment, and the peer's ACKs of both as one, which on
    /// a new connection per request is two segments fewer out of about ten. Only for a close that
    /// follows at once: held data waits for it.
    pub fn closing(&mut self) {
        self.last = true;
    }

    /// Sends all of `a` then `buf[..n]`, with one syscall when the socket has room; `a` comes back
    /// cleared and `buf` advanced past `n`, both keeping their allocations.
    pub async fn write_two(
        &mut self,
        a: &mut Vec<u8>,
        buf: &mut BytesMut,
        n: usize,
    ) -> std::io::Result<()> {
        let sent = match crate::sys::send2_nowait(self.fd, a, &buf[..n], self.last) {
            Ok(k) => k,
            Err(e) if crate::sys::would_block(&e) => 0,
            Err(e) => return Err(e),
        };
        // What did not fit goes through the driver, which waits for room.
        let from_a = sent.min(a.len());
        if from_a < a.len() {
            let (res, v) = self.write_all(std::mem::take(a).slice(from_a..)).await;
            *a = v.into_inner();
            res?;
        }
        a.clear();
        let from_b = sent - from_a;
        bytes::Buf::advance(buf, from_b);
        crate::io::write_front(self, buf, n - from_b).await
    }

    /// The plain write half, to reunite it with its read half.
    pub fn into_inner(self) -> OwnedWriteHalf<TcpStream> {
        self.inner
    }
}

impl AsyncWriteRent for SockWr {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match crate::sys::send_nowait(self.fd, &buf, self.last) {
            Ok(n) if n > 0 || buf.bytes_init() == 0 => (Ok(n), buf),
            Err(e) if !crate::sys::would_block(&e) => (Err(e), buf),
            // No room (or a zero-length send): wait for it through the driver.
            _ => self.inner.write(buf).await,
        }
    }

    fn writev<T: IoVecBuf>(
        &mut self,
        buf_vec: T,
    ) -> impl std::future::Future<Output = BufResult<usize, T>> {
        self.inner.writev(buf_vec)
    }

    fn flush(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> {
        self.inner.flush()
    }

    fn shutdown(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> {
        self.inner.shutdown()
    }
}
