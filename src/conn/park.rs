//! Parked keep-alive connections of one worker. A parked connection has no task, no buffer and no
//! timer of its own: it is a slot in this table (its socket, peer and deadline; for TLS, the boxed
//! session without its buffers) and a registration in the worker's epoll set. One task per worker
//! (`conn::accept`) waits for that set to become readable, through the worker's ring, and hands each
//! ready connection back to its driver as a new task. One sweep every `SWEEP_EVERY` closes those whose
//! idle time ran out. This is nginx's shape for an idle connection (an fd, a small struct, an epoll
//! registration); a task per parked connection cost about twice nginx's memory.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

/// How often deadlines are checked: the precision of the idle timeout of a parked connection.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// A wave of this many newly parked connections, once it has settled, hands the memory their
/// sessions used back to the kernel: otherwise the allocator keeps it resident, and idle
/// connections would cost the memory of the busiest moment (measured: 0.87 KiB per parked
/// connection without, about 0.2 KiB with).
const TRIM_AFTER: usize = 1024;

/// A connection between requests: what its driver needs to serve it again. The socket is held as a
/// bare descriptor: a monoio stream would add its own allocation and a copy of both addresses to
/// every parked connection.
pub struct Entry {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    /// Index of the listener that accepted it.
    pub listener: u16,
    /// The TLS session of a TLS connection (keys and state), as `conn::tls` boxed it: the table does
    /// not know the session's type, so it can hold any driver's without importing it.
    pub session: Option<Box<dyn Any>>,
}

struct Slot {
    entry: Entry,
    deadline: Instant,
    /// Tells a report for this slot's connection from one for an earlier occupant of the slot.
    tag: u32,
}

/// The parked connections of one worker. Slots are reused, so parking allocates nothing once the
/// table has grown to the largest number parked at once.
pub struct Parking {
    /// None where no epoll set could be made: connections then close instead of parking.
    epoll: Option<OwnedFd>,
    /// The epoll set as the ring sees it (a second descriptor of it), made on the first wait, inside
    /// the worker's runtime.
    watcher: RefCell<Option<TcpStream>>,
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<u32>>,
    tags: Cell<u32>,
    /// Parked at the last trim (lowered as connections leave), and at the last sweep.
    trimmed_at: Cell<usize>,
    last_sweep: Cell<usize>,
    /// Reused by `take_ready`.
    tokens: RefCell<Vec<u64>>,
}

impl Default for Parking {
    fn default() -> Self {
        let epoll = match crate::sys::epoll_new() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "no epoll set: idle connections close instead of parking");
                None
            }
        };
        Parking {
            epoll,
            watcher: RefCell::new(None),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            tags: Cell::new(0),
            trimmed_at: Cell::new(0),
            last_sweep: Cell::new(0),
            tokens: RefCell::new(Vec::new()),
        }
    }
}

fn token(index: u32, tag: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(index)
}

impl Parking {
    /// Parks `entry` until its socket is readable or `deadline` passes. Gives it back when it cannot
    /// be parked (no epoll set, or the kernel refused the registration); the caller closes it then.
    pub fn park(&self, entry: Entry, deadline: Instant) -> Result<(), Entry> {
        let Some(ep) = self.epoll.as_ref() else {
            return Err(entry);
        };
        let tag = self.tags.get().wrapping_add(1);
        self.tags.set(tag);
        let mut slots = self.slots.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let Ok(i) = u32::try_from(slots.len()) else {
                    return Err(entry);
                };
                slots.push(None);
                i
            }
        };
        let fd = entry.fd.as_raw_fd();
        if let Err(e) = crate::sys::epoll_watch(ep.as_raw_fd(), fd, token(index, tag)) {
            tracing::debug!(error = %e, "cannot park a connection; closing it");
            self.free.borrow_mut().push(index);
            return Err(entry);
        }
        slots[index as usize] = Some(Slot {
            entry,
            deadline,
            tag,
        });
        Ok(())
    }

    /// Waits until at least one parked connection may be ready (its socket readable, hung up or in
    /// error), then moves every ready one into `out`. Returns false where nothing can ever be ready
    /// (no epoll set, or the ring cannot watch it).
    pub async fn take_ready(&self, out: &mut Vec<Entry>) -> bool {
        let Some(ep) = self.epoll.as_ref() else {
            return false;
        };
        if self.watcher.borrow().is_none() {
            let watcher = ep
                .try_clone()
                .and_then(|fd| TcpStream::from_std(std::net::TcpStream::from(fd)));
            match watcher {
                Ok(w) => *self.watcher.borrow_mut() = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the epoll set of parked connections");
                    return false;
                }
            }
        }
        // Taken out while waiting, so no borrow is held across the await.
        let Some(watcher) = self.watcher.borrow_mut().take() else {
            return false;
        };
        let waited = watcher.readable(false).await;
        *self.watcher.borrow_mut() = Some(watcher);
        if waited.is_err() {
            return false;
        }
        let mut tokens = self.tokens.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        loop {
            tokens.clear();
            crate::sys::epoll_ready(ep.as_raw_fd(), &mut tokens, 64);
            for &t in tokens.iter() {
                let (index, tag) = (t as u32, (t >> 32) as u32);
                let Some(cell) = slots.get_mut(index as usize) else {
                    continue;
                };
                if cell.as_ref().is_some_and(|s| s.tag == tag) {
                    if let Some(slot) = cell.take() {
                        crate::sys::epoll_unwatch(ep.as_raw_fd(), slot.entry.fd.as_raw_fd());
                        self.free.borrow_mut().push(index);
                        out.push(slot.entry);
                    }
                }
            }
            if tokens.len() < 64 {
                return true;
            }
        }
    }

    /// Closes every parked connection whose deadline passed; after a settled wave of parking, gives
    /// freed memory back (`TRIM_AFTER`).
    pub fn expire(&self, now: Instant) {
        self.close_where(|s| s.deadline <= now);
        let n = self.parked();
        if n < self.trimmed_at.get() {
            self.trimmed_at.set(n);
        }
        if n >= self.trimmed_at.get() + TRIM_AFTER && n == self.last_sweep.get() {
            crate::sys::release_free_memory();
            self.trimmed_at.set(n);
        }
        self.last_sweep.set(n);
    }

    /// Closes every parked connection (the worker drains).
    pub fn close_all(&self) {
        self.close_where(|_| true);
    }

    fn close_where(&self, mut doomed: impl FnMut(&Slot) -> bool) {
        let mut slots = self.slots.borrow_mut();
        let mut free = self.free.borrow_mut();
        for (i, cell) in slots.iter_mut().enumerate() {
            if cell.as_ref().is_some_and(&mut doomed) {
                // Dropping the descriptor closes the socket, which also takes it out of the epoll set.
                *cell = None;
                free.push(i as u32);
            }
        }
    }

    /// Number of connections parked now.
    pub fn parked(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }
}
