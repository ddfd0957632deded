//! A small pool of blocking threads for work a worker must not do on its event loop (a password hash,
//! an HTTP call to an introspection endpoint): a bounded queue in front of a few named threads, and a
//! one-shot link (a wake-up byte on a socketpair, `crate::link`) per job, so the worker awaits the
//! answer while its loop serves other connections. A full queue is an immediate refusal, never an
//! unbounded backlog: a flood of bad credentials must not grow memory.

use crate::link::{self, Link};
use crossbeam_channel::{Sender, TrySendError};

/// Why a job got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue is full.
    #[error("queue full")]
    Full,
    /// No thread runs (none could be started, or they are gone), or the link failed.
    #[error("no thread to run it")]
    Gone,
}

/// The sending side of a pool of threads running `J -> R`.
pub struct Pool<J, R> {
    tx: Sender<(J, Link<R>)>,
}

impl<J: Send + 'static, R: Send + 'static> Pool<J, R> {
    /// Starts `threads` threads named `{name}{i}`, each running `work` on jobs from a queue of
    /// `queue`; None when no thread could be started (logged).
    pub fn start(
        name: &str,
        threads: usize,
        queue: usize,
        work: impl Fn(J) -> R + Send + Clone + 'static,
    ) -> Option<Pool<J, R>> {
        let (tx, rx) = crossbeam_channel::bounded::<(J, Link<R>)>(queue);
        let mut started = 0;
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let work = work.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}{i}"))
                .spawn(move || {
                    while let Ok((job, reply)) = rx.recv() {
                        reply.send(work(job));
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, pool = name, "cannot start a pool thread"),
            }
        }
        (started > 0).then_some(Pool { tx })
    }

    /// Runs `job` on the pool and waits for its answer without blocking the worker's loop.
    pub async fn run(&self, job: J) -> Result<R, Refused> {
        let (reply, inbox) = link::pair::<R>().map_err(|_| Refused::Gone)?;
        let mut inbox = inbox.into_async().map_err(|_| Refused::Gone)?;
        match self.tx.try_send((job, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => return Err(Refused::Gone),
        }
        inbox.recv().await.ok_or(Refused::Gone)
    }
}
