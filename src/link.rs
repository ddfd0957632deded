//! Messages between threads: a crossbeam channel plus one byte on a socketpair, so that a thread parked
//! in its io_uring or epoll loop wakes without polling. Receivers read the socket, then drain the channel.

use crossbeam_channel::{Receiver, Sender};
use monoio::io::AsyncReadRent;
use std::io::{self, Write};
use std::os::unix::net::UnixStream as StdUnixStream;

/// The sending side.
#[derive(Debug)]
pub struct Link<T> {
    tx: Sender<T>,
    wake: StdUnixStream,
}

/// The receiving side, used inside a monoio runtime.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: Receiver<T>,
    wake: StdUnixStream,
}

/// A connected pair.
pub fn pair<T>() -> io::Result<(Link<T>, Inbox<T>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (a, b) = StdUnixStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((Link { tx, wake: a }, Inbox { rx, wake: b }))
}

impl<T> Link<T> {
    /// Sends a message and wakes the receiver's event loop.
    pub fn send(&self, msg: T) {
        if self.tx.send(msg).is_ok() {
            // A full socket buffer means a wake-up is already pending.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// A second sender for another thread.
    pub fn try_clone(&self) -> io::Result<Link<T>> {
        Ok(Link {
            tx: self.tx.clone(),
            wake: self.wake.try_clone()?,
        })
    }
}

impl<T> Inbox<T> {
    /// The next message if one is waiting, without blocking (for a thread outside a runtime, and tests).
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Turns the inbox into an async receiver; call inside the runtime that will read it.
    pub fn into_async(self) -> io::Result<AsyncInbox<T>> {
        Ok(AsyncInbox {
            rx: self.rx,
            wake: monoio::net::UnixStream::from_std(self.wake)?,
            buf: Some(vec![0u8; 64]),
        })
    }
}

/// An inbox inside a runtime.
pub struct AsyncInbox<T> {
    rx: Receiver<T>,
    wake: monoio::net::UnixStream,
    buf: Option<Vec<u8>>,
}

impl<T> AsyncInbox<T> {
    /// Waits for the next message; None when every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Ok(m) = self.rx.try_recv() {
                return Some(m);
            }
            let buf = self.buf.take().unwrap_or_else(|| vec![0u8; 64]);
            let (res, buf) = self.wake.read(buf).await;
            self.buf = Some(buf);
            if !matches!(res, Ok(n) if n > 0) {
                return self.rx.try_recv().ok();
            }
        }
    }
}
