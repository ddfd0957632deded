//! Containment of bugs: a panic while a connection or a request is being served ends that connection
//! alone (with a 500 when nothing was sent yet), is logged with the request id and counted; the worker
//! and every other connection keep serving. The release build unwinds (`panic = "unwind"`) so this can
//! work; a panic anywhere else (the control thread, a worker's own loops) still aborts the process, as
//! nothing could repair the state it leaves behind.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::DerefMut;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many `Guarded` polls are on this thread's stack: a panic inside one is caught there.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    /// What the hook saw of the last caught panic, for the catch site to log with its request id.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the process-wide hook: a panic inside a guarded future is described for the catch site and
/// not printed; any other panic is logged and aborts the process.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(|s| s.as_str()))
            .unwrap_or("(no message)");
        let text = match info.location() {
            Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
            None => msg.to_string(),
        };
        if GUARDED.with(Cell::get) > 0 {
            LAST.with(|l| *l.borrow_mut() = Some(text));
        } else {
            let thread = std::thread::current();
            tracing::error!(thread = thread.name().unwrap_or("?"), panic = %text, "panic outside a connection; aborting");
            std::process::abort();
        }
    }));
}

/// A caught panic: what it said and where.
#[derive(Debug)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Polls a pinned future so that a panic in any poll becomes `Err(Panicked)` instead of unwinding
/// further. Takes the future already pinned (`pin!` on the caller's stack, or a `Pin<Box<_>>` the
/// caller boxed anyway), so guarding a request allocates nothing and a connection's state does not
/// grow by a second copy of the future. After a panic the future is not polled again; the caller
/// drops it, which drops whatever it had left.
pub struct Caught<P>(Option<Pin<P>>);

/// Guards `f`; see `Caught`.
pub fn catch<P>(f: Pin<P>) -> Caught<P>
where
    P: DerefMut,
    P::Target: Future,
{
    Caught(Some(f))
}

impl<P> Future for Caught<P>
where
    P: DerefMut + Unpin,
    P::Target: Future,
{
    type Output = Result<<P::Target as Future>::Output, Panicked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(inner) = this.0.as_mut() else {
            return Poll::Ready(Err(Panicked("polled after a panic".into())));
        };
        GUARDED.with(|g| g.set(g.get() + 1));
        let r = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        GUARDED.with(|g| g.set(g.get() - 1));
        match r {
            Ok(p) => p.map(Ok),
            Err(payload) => {
                this.0 = None;
                let text = LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into())
                });
                Poll::Ready(Err(Panicked(text)))
            }
        }
    }
}

/// Debug builds only: a request whose path equals `SLUICE_DEBUG_PANIC` panics before anything is sent,
/// so the containment can be tested on the real binary. Release builds have no such path.
#[cfg(debug_assertions)]
pub fn debug_failpoint(path: &[u8]) {
    static TARGET: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    let target = TARGET
        .get_or_init(|| std::env::var_os("SLUICE_DEBUG_PANIC").map(|v| v.into_encoded_bytes()));
    if target.as_deref() == Some(path) {
        panic!("SLUICE_DEBUG_PANIC failpoint reached");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    // The hook is process-wide and aborts on unguarded panics, so these tests do not install it: the
    // message then comes from the payload.
    #[test]
    fn a_panicking_future_becomes_an_error_and_the_thread_goes_on() {
        let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
        else {
            return;
        };
        let r = rt.block_on(async {
            let f = pin!(async {
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                7
            });
            catch(f).await
        });
        assert_eq!(r.expect_err("the panic is caught").0, "boom");
        assert_eq!(GUARDED.with(Cell::get), 0);
        let ok = rt.block_on(async { catch(Box::pin(async { 7 })).await });
        assert_eq!(ok.ok(), Some(7));
    }
}
