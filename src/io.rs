//! Owned-buffer I/O helpers over monoio: read appends after existing bytes, writes hand buffers back.
//! A timed-out operation drops its future and with it the buffer, so callers close the connection then.

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut, SliceMut};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// Read size for upstream response heads and small bodies.
pub const READ_CHUNK: usize = 16 * 1024;

/// Read size for client request heads. An idle keep-alive connection holds its read buffer in the
/// kernel's hands, so this is most of what an idle connection costs; larger heads grow it on demand.
pub const HEAD_CHUNK: usize = 2 * 1024;

/// A client read buffer grown past this by a large body is replaced by a fresh small one when the
/// connection goes idle, so a past upload does not pin 64 KiB for the life of the connection.
pub const SHRINK_ABOVE: usize = 32 * 1024;

/// Outcome of a timed operation.
pub enum Timed<T> {
    /// Finished in time.
    Done(T),
    /// The timer fired first.
    Elapsed,
}

/// Takes `buf` out as its unfilled tail, grown first when less than a quarter of `chunk` is free, for a
/// read to append to; `slice.into_inner()` gives the buffer back.
fn free_tail(buf: &mut BytesMut, chunk: usize) -> SliceMut<BytesMut> {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
    let b = std::mem::take(buf);
    let (len, cap) = (b.len(), b.capacity());
    b.slice_mut(len..cap)
}

/// Reads more bytes onto the end of `buf`; 0 = EOF.
pub async fn read_more<S: AsyncReadRent>(
    s: &mut S,
    buf: &mut BytesMut,
    chunk: usize,
) -> io::Result<usize> {
    let (res, slice) = s.read(free_tail(buf, chunk)).await;
    *buf = slice.into_inner();
    res
}

/// `read_more` bounded by `d`.
pub async fn read_more_timeout<S: AsyncReadRent>(
    s: &mut S,
    buf: &mut BytesMut,
    chunk: usize,
    d: Duration,
) -> Timed<io::Result<usize>> {
    match monoio::time::timeout(d, read_more(s, buf, chunk)).await {
        Ok(r) => Timed::Done(r),
        Err(_) => Timed::Elapsed,
    }
}

/// Outcome of `read_or_park`.
pub enum ParkRead {
    /// The read finished (0 = EOF).
    Read(io::Result<usize>),
    /// Nothing arrived within the wait; the read was cancelled and no byte was lost.
    Park,
}

/// `read_more` that gives up after `after` by cancelling the read in the kernel and waiting for that to
/// settle: a read that completed in the meantime still returns its bytes, so giving up never drops data.
/// `cancel` is the connection's canceller; it is replaced after use.
pub async fn read_or_park<S: CancelableAsyncReadRent>(
    s: &mut S,
    buf: &mut BytesMut,
    chunk: usize,
    cancel: &mut Canceller,
    after: Duration,
) -> ParkRead {
    let mut read = pin!(s.cancelable_read(free_tail(buf, chunk), cancel.handle()));
    let mut timer = pin!(monoio::time::sleep(after));
    let mut cancelled = false;
    let (res, slice) = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if !cancelled && timer.as_mut().poll(cx).is_ready() {
            cancelled = true;
            *cancel = std::mem::take(cancel).cancel();
            // The cancellation completes the read (with its bytes, or ECANCELED): wait for that.
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await;
    *buf = slice.into_inner();
    match res {
        Err(e) if cancelled && e.raw_os_error() == Some(libc::ECANCELED) => ParkRead::Park,
        r => ParkRead::Read(r),
    }
}

/// Writes all of `out` and gives it back cleared.
pub async fn write_vec<S: AsyncWriteRentExt>(s: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    let v = std::mem::take(out);
    let (res, mut v) = s.write_all(v).await;
    v.clear();
    *out = v;
    res.map(|_| ())
}

/// Writes `buf[..n]` and removes it from `buf`, keeping the allocation.
pub async fn write_front<S: AsyncWriteRentExt>(
    s: &mut S,
    buf: &mut BytesMut,
    n: usize,
) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let b = std::mem::take(buf);
    let (res, slice) = s.write_all(b.slice(0..n)).await;
    let mut b = slice.into_inner();
    if res.is_ok() {
        bytes::Buf::advance(&mut b, n);
        if b.is_empty() {
            // Keep the allocation and start again at its front.
            b.clear();
        }
    }
    *buf = b;
    res.map(|_| ())
}
