//! Parked keep-alive connections of one worker. A parked connection waits for readability with no buffer
//! and no timer of its own: monoio's timer entry is 640 bytes (cache-padded for threads it never meets),
//! more than the rest of a parked connection together. Instead each one holds a slot here with its
//! deadline, and one sweep every `SWEEP_EVERY` closes those whose idle time ran out.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

/// How often deadlines are checked: the precision of the idle timeout of a parked connection.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    expired: bool,
}

/// The deadlines of one worker's parked connections. Slots are reused, so parking allocates nothing
/// once the table has grown to the largest number parked at once.
#[derive(Default)]
pub struct Parking {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    /// Reused by `expire`, so a sweep allocates nothing once it has grown.
    woken: RefCell<Vec<Waker>>,
}

impl Parking {
    fn take(&self, deadline: Instant) -> usize {
        let slot = Some(Slot {
            deadline,
            waker: None,
            expired: false,
        });
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = slot;
                i
            }
            None => {
                slots.push(slot);
                slots.len() - 1
            }
        }
    }

    fn release(&self, i: usize) {
        if let Some(s) = self.slots.borrow_mut().get_mut(i) {
            *s = None;
            self.free.borrow_mut().push(i);
        }
    }

    /// True once slot `i`'s deadline passed; otherwise remembers who to wake.
    fn poll_expired(&self, i: usize, cx: &Context<'_>) -> bool {
        let mut slots = self.slots.borrow_mut();
        let Some(Some(s)) = slots.get_mut(i) else {
            return true;
        };
        if s.expired {
            return true;
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        false
    }

    /// Marks every slot past its deadline expired and wakes its connection.
    pub fn expire(&self, now: Instant) {
        let mut woken = self.woken.borrow_mut();
        for s in self.slots.borrow_mut().iter_mut().flatten() {
            if !s.expired && s.deadline <= now {
                s.expired = true;
                woken.extend(s.waker.take());
            }
        }
        // Woken outside the slots' borrow: a waker may run code that parks or releases.
        for w in woken.drain(..) {
            w.wake();
        }
    }

    /// Number of connections parked now.
    pub fn parked(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }
}

/// Releases its slot however the wait ends.
struct Ticket<'a> {
    parking: &'a Parking,
    slot: usize,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.parking.release(self.slot);
    }
}

/// Waits until `stream` is readable (true) or `deadline` passed (false).
pub async fn wait_readable(parking: &Parking, stream: &TcpStream, deadline: Instant) -> bool {
    let ticket = Ticket {
        parking,
        slot: parking.take(deadline),
    };
    let mut readable = pin!(stream.readable(false));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = readable.as_mut().poll(cx) {
            return Poll::Ready(r.is_ok());
        }
        if ticket.parking.poll_expired(ticket.slot, cx) {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}
