//! A worker: one pinned OS thread running one monoio runtime (io_uring, or epoll where io_uring is not
//! allowed). It accepts on its own SO_REUSEPORT listeners, serves its connections to the end, and owns
//! every piece of per-request state (`state`, `gen`). Messages from the main and control threads arrive
//! on a crossbeam channel, with a byte on a socketpair to wake the ring.

mod event;
mod gen;
pub mod ids;
mod state;

pub use event::LocalEvent;
pub use gen::Gen;
pub use state::{ConnGuard, InFlight, Worker};

use crate::access_log::LogSink;
use crate::config::Driver;
use crate::link::{Inbox, Link};
use crate::msg::{ToControl, ToWorker, WorkerLink};
use crate::snapshot::Snapshot;
use std::io;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running worker thread.
#[derive(Debug)]
pub struct WorkerHandle {
    pub link: WorkerLink,
    pub join: JoinHandle<()>,
}

/// What a worker starts with.
pub struct WorkerSpec {
    pub id: usize,
    pub workers: usize,
    /// CPU to pin to.
    pub cpu: Option<core_affinity::CoreId>,
    pub driver: Driver,
    /// This worker's listening sockets.
    pub listeners: Vec<std::net::TcpListener>,
    /// The first snapshot.
    pub snapshot: Snapshot,
    /// Where statistics go.
    pub to_control: Link<ToControl>,
    /// This worker's access log buffer, when an access log is configured.
    pub log: Option<LogSink>,
    /// The runtime consumers read from the state database at start, in force before the first accept.
    pub consumers: Option<crate::policy::consumers::ConsumerSet>,
}

/// Starts serving a worker's listeners on its runtime: the connection drivers' entry point
/// (`conn::start`), passed in so the worker need not know its connection drivers.
pub type Serve = fn(&Rc<Worker>, Vec<std::net::TcpListener>);

/// Starts a worker thread.
pub fn spawn(spec: WorkerSpec, serve: Serve) -> io::Result<WorkerHandle> {
    let (link, inbox) = crate::link::pair()?;
    let join = std::thread::Builder::new()
        .name(format!("sluice-w{}", spec.id))
        .spawn(move || run(spec, serve, inbox))?;
    Ok(WorkerHandle { link, join })
}

fn run(spec: WorkerSpec, serve: Serve, inbox: Inbox<ToWorker>) {
    if let Some(cpu) = spec.cpu {
        if !core_affinity::set_for_current(cpu) {
            tracing::warn!(
                worker = spec.id,
                cpu = cpu.id,
                "could not pin worker to cpu"
            );
        }
    }
    let cpu = spec.cpu.map(|c| c.id as i64).unwrap_or(-1);
    let id = spec.id;
    let result = crate::runtime::block_on(spec.driver, |driver| {
        tracing::info!(worker = id, cpu, driver, "worker started");
        worker_main(spec, serve, inbox, driver, cpu)
    });
    if let Err(e) = result {
        tracing::error!(worker = id, error = %e, "worker failed to start its runtime");
    }
}

async fn worker_main(
    spec: WorkerSpec,
    serve: Serve,
    inbox: Inbox<ToWorker>,
    driver: &'static str,
    cpu: i64,
) {
    let w = Rc::new(Worker::new(
        spec.id,
        spec.workers,
        spec.snapshot,
        spec.to_control,
    ));
    w.driver.set(driver);
    *w.log.borrow_mut() = spec.log;
    w.cpu.set(cpu);
    if let Some(set) = spec.consumers {
        w.auth.set_runtime(set);
    }
    serve(&w, spec.listeners);
    monoio::spawn(sweeper(w.clone()));
    monoio::spawn(sweep_parked(w.clone()));
    monoio::spawn(reporter(w.clone()));
    monoio::spawn(limit_sender(w.clone()));
    monoio::spawn(limit_sweeper(w.clone()));
    if w.log.borrow().is_some() {
        monoio::spawn(log_flusher(w.clone()));
    }
    let grace = control_loop(&w, inbox).await;
    w.draining.set(true);
    w.stop.fire();
    let deadline = Instant::now() + grace;
    while w.in_flight.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(l) = w.log.borrow_mut().as_mut() {
        l.flush();
    }
    // The last counts of this worker, so totals stay exact across a drain.
    w.to_control.send(ToControl::Stats(Box::new(w.report())));
    if w.in_flight.get() > 0 {
        tracing::warn!(
            worker = w.id,
            in_flight = w.in_flight.get(),
            "grace period over; closing requests still in flight"
        );
    }
    tracing::debug!(
        worker = w.id,
        connections = w.connections.get(),
        "worker stopped"
    );
}

/// Applies messages until a drain is requested; returns the grace period.
async fn control_loop(w: &Rc<Worker>, inbox: Inbox<ToWorker>) -> Duration {
    let mut inbox = match inbox.into_async() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(worker = w.id, error = %e, "cannot watch the control socket");
            return Duration::ZERO;
        }
    };
    loop {
        match inbox.recv().await {
            Some(msg) => {
                if let Some(grace) = w.apply(msg) {
                    return grace;
                }
            }
            // The main thread is gone: drain with a short grace.
            None => return Duration::from_secs(1),
        }
    }
}

/// Interval between statistics reports to the control thread.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

async fn reporter(w: Rc<Worker>) {
    loop {
        monoio::time::sleep(REPORT_INTERVAL).await;
        w.to_control.send(ToControl::Stats(Box::new(w.report())));
    }
}

/// Sends the limit shards' asks to the control thread, all that gathered since the last send in
/// one message: a burst of asks costs one wake-up of the control thread, not one each.
async fn limit_sender(w: Rc<Worker>) {
    loop {
        // Made before the outbox is taken, so an ask added meanwhile is not missed.
        let next = w.limits.outbox.notified();
        let asks = w.limits.take_outbox();
        if !asks.is_empty() {
            w.to_control.send(ToControl::Limits { worker: w.id, asks });
        }
        next.await;
    }
}

/// Hands back what idle keys hold beyond their share, so traffic that moved to another worker finds
/// the tokens in the pool.
async fn limit_sweeper(w: Rc<Worker>) {
    loop {
        monoio::time::sleep(Duration::from_millis(200)).await;
        w.limits.sweep();
    }
}

/// Ships access log lines at least this often, so a quiet worker's lines still appear promptly.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

async fn log_flusher(w: Rc<Worker>) {
    loop {
        monoio::time::sleep(LOG_FLUSH_INTERVAL).await;
        if let Some(l) = w.log.borrow_mut().as_mut() {
            l.flush();
        }
    }
}

async fn sweeper(w: Rc<Worker>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        w.pools.borrow_mut().sweep(Instant::now());
    }
}

/// Closes parked connections whose idle time ran out (see `conn::park`).
async fn sweep_parked(w: Rc<Worker>) {
    loop {
        monoio::time::sleep(crate::conn::park::SWEEP_EVERY).await;
        w.parking.expire(Instant::now());
    }
}
