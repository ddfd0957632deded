//! The few socket calls monoio does not expose. This module alone opts into `unsafe`, for plain libc calls
//! on file descriptors that the caller owns for the duration of the call.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// What a non-blocking one-byte peek found on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peek {
    /// Nothing to read yet.
    Empty,
    /// Bytes are waiting.
    Data,
    /// The peer's EOF, or an error.
    Gone,
}

fn peek(fd: RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of this call; the buffer is one
    // valid byte on our stack; MSG_DONTWAIT keeps the call from blocking on io_uring-mode (blocking) sockets.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Gone,
        n if n > 0 => Peek::Data,
        _ if would_block(&std::io::Error::last_os_error()) => Peek::Empty,
        _ => Peek::Gone,
    }
}

/// True when anything arrived on an idle connection: the peer's EOF, an error, or bytes. On an idle
/// upstream connection unsolicited bytes mean the exchange is out of step, so it must not be reused.
/// One syscall, made on every reuse of a pooled connection.
pub fn peer_closed(fd: RawFd) -> bool {
    peek(fd) != Peek::Empty
}

/// CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec on our stack; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Flags of an inline send: never block, never raise SIGPIPE, and with `more` hold a tail shorter than a
/// segment back for what follows (here: the FIN of the close that comes next).
fn send_flags(more: bool) -> libc::c_int {
    let base = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if more {
        base | libc::MSG_MORE
    } else {
        base
    }
}

/// A send's return value as a result: bytes sent, or the OS error.
fn sent(n: isize) -> std::io::Result<usize> {
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One non-blocking `send` of `buf`'s initialised bytes (see `send_flags` for `more`).
pub fn send_nowait<T: monoio::buf::IoBuf>(
    fd: RawFd,
    buf: &T,
    more: bool,
) -> std::io::Result<usize> {
    // SAFETY: `IoBuf` guarantees `read_ptr()` is valid for `bytes_init()` bytes while `buf` is borrowed;
    // `fd` is a socket the caller owns for the duration of the call; MSG_DONTWAIT keeps it from blocking.
    let n = unsafe {
        libc::send(
            fd,
            buf.read_ptr().cast(),
            buf.bytes_init(),
            send_flags(more),
        )
    };
    sent(n)
}

/// One non-blocking `sendmsg` of `a` then `b` (a head and a body: one syscall, not two); see `send_flags`
/// for `more`.
pub fn send2_nowait(fd: RawFd, a: &[u8], b: &[u8], more: bool) -> std::io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no name, no control data); the iovecs point into `a` and `b`,
    // which outlive the call, and sendmsg only reads through them.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` is initialised above; `fd` is a socket the caller owns for the duration of the call.
    sent(unsafe { libc::sendmsg(fd, &msg, send_flags(more)) })
}

/// True for the errors that mean "try again later" on a non-blocking socket.
pub fn would_block(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

/// True when a non-blocking peek finds the peer's EOF or an error: a readable idle connection that has
/// nothing to say but goodbye, so it can be closed without setting up a session for it.
pub fn at_eof(fd: RawFd) -> bool {
    peek(fd) == Peek::Gone
}

/// A new epoll set (close-on-exec): the readiness source of a worker's parked connections.
pub fn epoll_new() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain syscall with a constant flag; the fd it returns is ours alone.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned open by epoll_create1 and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Watches `fd` in `ep` for one report of readability, a hang-up or an error, tagged with `token`.
pub fn epoll_watch(ep: RawFd, fd: RawFd, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
        u64: token,
    };
    // SAFETY: both fds are open and owned by the caller for the call; `ev` is a valid event on our stack.
    let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Stops watching `fd` in `ep` (before the fd is used elsewhere; a close removes it anyway).
pub fn epoll_unwatch(ep: RawFd, fd: RawFd) {
    // SAFETY: both fds are open and owned by the caller for the call; DEL ignores the event pointer.
    unsafe {
        libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
    }
}

/// The tokens of what is ready in `ep` now, without waiting: appended to `out`, at most `max`.
pub fn epoll_ready(ep: RawFd, out: &mut Vec<u64>, max: usize) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let want = max.min(events.len()) as i32;
    // SAFETY: `ep` is an open epoll fd owned by the caller; `events` is valid for `want` entries.
    let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), want, 0) };
    for ev in events.iter().take(n.max(0) as usize) {
        let token = ev.u64;
        out.push(token);
    }
}

/// The descriptor of `stream`, owned: what a parked connection keeps of its socket. monoio panics
/// here if an operation still holds the socket, so callers make sure none does.
pub fn into_owned_fd(stream: monoio::net::TcpStream) -> std::os::fd::OwnedFd {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of this open descriptor, so it is ours alone.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Gives memory that the allocator holds free back to the kernel (glibc keeps freed memory below the
/// top of its heaps resident). Takes time in proportion to the heap, so it is called rarely.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own state, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
