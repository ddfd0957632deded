//! A one-shot event that the tasks of one worker can wait on (the drain's stop signal).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A one-shot local event several tasks can wait on.
#[derive(Default)]
pub struct LocalEvent {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    /// Fires the event, waking all waiters.
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
    /// Resolves once fired.
    pub fn wait(&self) -> EventWait<'_> {
        EventWait(self)
    }
}

/// Future of `LocalEvent::wait`.
pub struct EventWait<'a>(&'a LocalEvent);

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.fired.get() {
            Poll::Ready(())
        } else {
            self.0.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    }
}
