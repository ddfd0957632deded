//! A TLS session over a monoio TCP socket, on rustls's buffered API: the handshake, then a read half
//! and a write half (`conn::wire`) that share the session. Neither half holds the session across an
//! await, so a request body can be read while its response is written. The halves never write for
//! each other: what the read side makes rustls want to send (a KeyUpdate answer) leaves with the next
//! write.
//!
//! Generic over the rustls side, so upstream connections (client sessions) use the same code.

use crate::conn::wire::{WireRead, WireWrite};
use crate::io::ParkRead;
use crate::sock::SockWr;
use bytes::{Buf, BytesMut};
use monoio::io::{AsyncWriteRentExt, Canceller, OwnedReadHalf};
use monoio::net::TcpStream;
use rustls::{ConnectionCommon, SideData};
use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::ops::DerefMut;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Ciphertext read size: a whole record and its overhead.
pub const RECORD_CHUNK: usize = 16 * 1024 + 512;

/// Plaintext of one TLS record.
const ONE_RECORD: usize = 16 * 1024;

/// How long an alert or close_notify may wait for room in the socket.
const ALERT_WAIT: Duration = Duration::from_secs(1);

/// Plaintext handed to rustls per encryption step: bounded so its send buffer stays small.
const WRITE_STEP: usize = 64 * 1024;

/// Why a handshake ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake timed out")]
    Timeout,
    #[error("peer closed during the handshake")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    /// The ClientHello asked for a version below TLS 1.2 (its legacy_version, without the
    /// supported_versions extension of 1.3), which is never offered.
    #[error("client offered only TLS below 1.2 ({0})")]
    OldVersion(rustls::Error),
}

/// Runs the handshake on `stream` until `deadline`. `inbuf` keeps ciphertext read past the handshake
/// (a client's first request often arrives with its Finished) for the read half.
pub async fn handshake<C, SD>(
    stream: &mut TcpStream,
    conn: &mut C,
    inbuf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), HandshakeError>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    let mut out = Vec::with_capacity(4096);
    // The ClientHello's legacy_version (record header 5 bytes, handshake header 4): below 0x0303 the
    // client speaks TLS 1.1 or older, whatever rustls's own complaint about it says.
    let mut legacy = None;
    loop {
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        if !out.is_empty() {
            // Bounded like the reads: a client that stops reading must not hold the task.
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = monoio::time::timeout(left, stream.write_all(std::mem::take(&mut out)));
            let Ok((r, v)) = sent.await else {
                return Err(HandshakeError::Timeout);
            };
            out = v;
            out.clear();
            r?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::Timeout);
        }
        let n = match crate::io::read_more_timeout(stream, inbuf, RECORD_CHUNK, left).await {
            crate::io::Timed::Done(r) => r?,
            crate::io::Timed::Elapsed => return Err(HandshakeError::Timeout),
        };
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        if legacy.is_none() && inbuf.len() >= 11 && inbuf[0] == 0x16 {
            legacy = Some(u16::from_be_bytes([inbuf[9], inbuf[10]]));
        }
        if let Err(mut e) = feed(&mut **conn, inbuf) {
            if let (HandshakeError::Tls(t), Some(v)) = (&e, legacy) {
                if v < 0x0303 {
                    e = HandshakeError::OldVersion(t.clone());
                }
            }
            // rustls queued an alert that says why: send it before giving up (best effort).
            let _ = conn.write_tls(&mut out);
            if !out.is_empty() {
                let _ = monoio::time::timeout(ALERT_WAIT, stream.write_all(out)).await;
            }
            return Err(e);
        }
    }
}

/// Hands buffered ciphertext to rustls and processes it, as far as its plaintext buffer takes; what
/// it does not take stays in `inbuf` for later.
fn feed<SD: SideData>(
    conn: &mut ConnectionCommon<SD>,
    inbuf: &mut BytesMut,
) -> Result<(), HandshakeError> {
    while !inbuf.is_empty() {
        let mut rd: &[u8] = &inbuf[..];
        let n = match conn.read_tls(&mut rd) {
            Ok(n) => n,
            // The plaintext buffer is full: the reader drains it first.
            Err(e) if e.kind() == io::ErrorKind::Other && inbuf.len() < RECORD_CHUNK * 8 => 0,
            Err(e) => return Err(e.into()),
        };
        inbuf.advance(n);
        conn.process_new_packets()?;
        if n == 0 {
            break;
        }
    }
    if inbuf.is_empty() {
        inbuf.clear();
    }
    Ok(())
}

/// The read half of a TLS session.
pub struct TlsRd<C> {
    rd: OwnedReadHalf<TcpStream>,
    conn: Rc<RefCell<C>>,
    inbuf: BytesMut,
    eof: bool,
}

/// The write half of a TLS session.
pub struct TlsWr<C> {
    wr: SockWr,
    conn: Rc<RefCell<C>>,
    out: Vec<u8>,
}

/// Splits a session whose handshake is done.
pub fn split<C>(stream: TcpStream, conn: C, inbuf: BytesMut) -> (TlsRd<C>, TlsWr<C>) {
    use monoio::io::Splitable;
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_split();
    let conn = Rc::new(RefCell::new(conn));
    (
        TlsRd {
            rd,
            conn: conn.clone(),
            inbuf,
            eof: false,
        },
        TlsWr {
            wr: SockWr::new(wr, fd),
            conn,
            out: Vec::new(),
        },
    )
}

impl<C> TlsRd<C> {
    /// The session (for what the handshake decided: SNI, ALPN, the peer's certificate).
    pub fn session(&self) -> std::cell::Ref<'_, C> {
        self.conn.borrow()
    }
}

impl<C, SD> TlsRd<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Nothing is left over: no ciphertext waiting, no plaintext unread, no close_notify or EOF seen.
    /// Only such a session can wait in a pool for its next exchange.
    pub fn is_drained(&self) -> bool {
        if self.eof || !self.inbuf.is_empty() {
            return false;
        }
        let mut conn = self.conn.borrow_mut();
        let mut reader = conn.reader();
        matches!(reader.fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl<C, SD> WireRead for TlsRd<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    // Parks only when drained (`read_or_park`): rustls may hold decrypted bytes that the socket's
    // readability would not announce.
    const PARKS: bool = true;

    async fn read_more(&mut self, buf: &mut BytesMut, _chunk: usize) -> io::Result<usize> {
        loop {
            {
                let mut conn = self.conn.borrow_mut();
                let mut reader = conn.reader();
                match reader.fill_buf() {
                    Ok([]) => return Ok(0), // close_notify
                    Ok(plain) => {
                        let n = plain.len();
                        buf.extend_from_slice(plain);
                        reader.consume(n);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if !self.inbuf.is_empty() {
                    let before = self.inbuf.len();
                    feed(&mut **conn, &mut self.inbuf).map_err(to_io)?;
                    if self.inbuf.len() != before {
                        continue;
                    }
                }
            }
            if self.eof {
                // The peer closed without close_notify: a truncation as far as TLS knows, an end of
                // stream as far as HTTP framing can tell.
                return Ok(0);
            }
            let n = crate::io::read_more(&mut self.rd, &mut self.inbuf, RECORD_CHUNK).await?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            let mut conn = self.conn.borrow_mut();
            feed(&mut **conn, &mut self.inbuf).map_err(to_io)?;
        }
    }

    async fn read_or_park(
        &mut self,
        buf: &mut BytesMut,
        chunk: usize,
        cancel: &mut Canceller,
        after: Duration,
    ) -> ParkRead {
        if !self.is_drained() {
            return ParkRead::Read(self.read_more(buf, chunk).await);
        }
        match crate::io::read_or_park(&mut self.rd, &mut self.inbuf, RECORD_CHUNK, cancel, after)
            .await
        {
            ParkRead::Park => {
                // What an idle session keeps is its keys and state, not a record's worth of buffer.
                self.inbuf = BytesMut::new();
                ParkRead::Park
            }
            ParkRead::Read(Ok(0)) => {
                self.eof = true;
                ParkRead::Read(self.read_more(buf, chunk).await)
            }
            ParkRead::Read(Ok(_)) => {
                if let Err(e) = feed(&mut **self.conn.borrow_mut(), &mut self.inbuf) {
                    return ParkRead::Read(Err(to_io(e)));
                }
                ParkRead::Read(self.read_more(buf, chunk).await)
            }
            ParkRead::Read(Err(e)) => ParkRead::Read(Err(e)),
        }
    }
}

/// The socket and the session of a split TLS connection, back together (to park them). None if a
/// half is still shared, which the drivers never do.
pub fn unsplit<C>(rd: TlsRd<C>, wr: TlsWr<C>) -> Option<(TcpStream, C)> {
    let TlsRd { rd, conn, .. } = rd;
    let TlsWr {
        wr, conn: other, ..
    } = wr;
    drop(other);
    let stream = rd.reunite(wr.into_inner()).ok()?;
    let conn = Rc::try_unwrap(conn).ok()?.into_inner();
    Some((stream, conn))
}

fn to_io(e: HandshakeError) -> io::Error {
    match e {
        HandshakeError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

impl<C, SD> TlsWr<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Encrypts `plain` (all of it) into the output buffer.
    fn seal(&mut self, mut plain: &[u8]) -> io::Result<()> {
        let mut conn = self.conn.borrow_mut();
        while !plain.is_empty() {
            let step = plain.len().min(WRITE_STEP);
            let n = conn.writer().write(&plain[..step])?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            plain = &plain[n..];
            while conn.wants_write() {
                conn.write_tls(&mut self.out)?;
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut self.out)?;
        }
        Ok(())
    }

    /// Sends the output buffer.
    async fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let v = std::mem::take(&mut self.out);
        let (r, mut v) = self.wr.write_all(v).await;
        v.clear();
        // Room for a full step of records is kept: a large body reuses it write after write.
        if v.capacity() > 2 * WRITE_STEP {
            v = Vec::new();
        }
        self.out = v;
        r.map(|_| ())
    }

    /// The socket's descriptor (for the idle peek of a pooled connection).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.wr.fd()
    }

    /// Encrypts and sends all of `plain`, which the caller keeps (a request kept for a retry).
    pub async fn write_slice(&mut self, plain: &[u8]) -> io::Result<()> {
        self.seal(plain)?;
        self.flush_out().await
    }

    /// Sends close_notify (a clean end the client can tell from a truncation), waiting at most
    /// `ALERT_WAIT` for a client that no longer reads.
    pub async fn close_notify(&mut self) {
        self.conn.borrow_mut().send_close_notify();
        if self.seal(&[]).is_ok() {
            let _ = monoio::time::timeout(ALERT_WAIT, self.flush_out()).await;
        }
    }
}

impl<C, SD> WireWrite for TlsWr<C>
where
    C: DerefMut<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    async fn write_vec(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let r = self.seal(out);
        out.clear();
        r?;
        self.flush_out().await
    }

    async fn write_front(&mut self, buf: &mut BytesMut, n: usize) -> io::Result<()> {
        let n = n.min(buf.len());
        self.seal(&buf[..n])?;
        buf.advance(n);
        if buf.is_empty() {
            buf.clear();
        }
        self.flush_out().await
    }

    async fn write_two(&mut self, a: &mut Vec<u8>, buf: &mut BytesMut, n: usize) -> io::Result<()> {
        let n = n.min(buf.len());
        if a.len() + n <= ONE_RECORD {
            // A head and a small body in one record: one seal, and one record for the client to
            // open, instead of two.
            a.extend_from_slice(&buf[..n]);
            let r = self.seal(a);
            a.clear();
            r?;
            buf.advance(n);
            if buf.is_empty() {
                buf.clear();
            }
            return self.flush_out().await;
        }
        let r = self.seal(a);
        a.clear();
        r?;
        self.write_front(buf, n).await
    }

    fn closing(&mut self) {
        self.wr.closing();
    }
}
