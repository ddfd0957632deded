//! Circuit breaker for one upstream on one worker: at most `max_active` requests in flight and
//! `max_pending` waiting; a waiter gives up after the queue timeout (the caller's timer) -> 503.
//! Single-threaded by construction (Rc/Cell), so no atomics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Why a slot was refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

#[derive(Debug)]
struct Inner {
    active: Cell<u32>,
    max_active: u32,
    max_pending: u32,
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_id: Cell<u64>,
}

/// The breaker; cheap to clone (Rc).
#[derive(Debug, Clone)]
pub struct Gate(Rc<Inner>);

/// A held slot; released on drop.
#[derive(Debug)]
pub struct Permit(Rc<Inner>);

impl Gate {
    /// A gate with these limits.
    pub fn new(max_active: u32, max_pending: u32) -> Gate {
        Gate(Rc::new(Inner {
            active: Cell::new(0),
            max_active,
            max_pending,
            waiters: RefCell::new(VecDeque::new()),
            next_id: Cell::new(0),
        }))
    }

    /// Requests in flight.
    pub fn active(&self) -> u32 {
        self.0.active.get()
    }

    /// Requests waiting.
    pub fn pending(&self) -> usize {
        self.0.waiters.borrow().len()
    }

    /// Takes a slot now if one is free.
    pub fn try_acquire(&self) -> Option<Permit> {
        let i = &self.0;
        if i.active.get() < i.max_active && i.waiters.borrow().is_empty() {
            i.active.set(i.active.get() + 1);
            Some(Permit(self.0.clone()))
        } else {
            None
        }
    }

    /// Waits for a slot; errs at once when the queue is full. Wrap in a timeout.
    pub fn acquire(&self) -> Result<Acquire, QueueFull> {
        if self.0.waiters.borrow().len() as u32 >= self.0.max_pending {
            return Err(QueueFull);
        }
        let id = self.0.next_id.get();
        self.0.next_id.set(id + 1);
        Ok(Acquire {
            inner: self.0.clone(),
            id,
            queued: false,
            done: false,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        if let Some((_, w)) = self.0.waiters.borrow().front() {
            w.wake_by_ref();
        }
    }
}

/// Future of `Gate::acquire`.
#[derive(Debug)]
pub struct Acquire {
    inner: Rc<Inner>,
    id: u64,
    queued: bool,
    done: bool,
}

impl Future for Acquire {
    type Output = Permit;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let inner = self.inner.clone();
        let mut w = inner.waiters.borrow_mut();
        let at_front = !self.queued || w.front().is_some_and(|(id, _)| *id == self.id);
        if at_front && inner.active.get() < inner.max_active && (self.queued || w.is_empty()) {
            if self.queued {
                w.pop_front();
            }
            inner.active.set(inner.active.get() + 1);
            self.done = true;
            // Let the next waiter check too: several slots may have freed at once.
            if let Some((_, next)) = w.front() {
                next.wake_by_ref();
            }
            return Poll::Ready(Permit(inner.clone()));
        }
        if self.queued {
            if let Some(slot) = w.iter_mut().find(|(id, _)| *id == self.id) {
                slot.1 = cx.waker().clone();
            }
        } else {
            w.push_back((self.id, cx.waker().clone()));
            self.queued = true;
        }
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if self.queued && !self.done {
            let mut w = self.inner.waiters.borrow_mut();
            let was_front = w.front().is_some_and(|(id, _)| *id == self.id);
            w.retain(|(id, _)| *id != self.id);
            if was_front {
                if let Some((_, next)) = w.front() {
                    next.wake_by_ref();
                }
            }
        }
    }
}
