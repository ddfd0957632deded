//! A worker: one pinned OS thread running one monoio runtime (io_uring, or epoll where io_uring is not
//! allowed). It accepts on its own SO_REUSEPORT listeners, serves its connections to the end, and owns
//! every piece of per-request state (route table copy, upstream groups, pools). Messages from the main
//! and control threads arrive on a crossbeam channel, with a byte on a socketpair to wake the ring.

use crate::access_log::LogSink;
use crate::config::{Driver, SplitTarget};
use crate::conn::h1;
use crate::link::{Inbox, Link};
use crate::metrics::{EndpointGauge, GenStats, RequestRecord, StatsDelta, WorkerGauges};
use crate::msg::{ToControl, ToWorker, WorkerLink};
use crate::snapshot::Snapshot;
use crate::upstream::gate::Gate;
use crate::upstream::pool::{Pools, UpConn};
use crate::upstream::Group;
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running worker thread.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Messaging.
    pub link: WorkerLink,
    /// The thread.
    pub join: JoinHandle<()>,
}

/// What a worker starts with.
pub struct WorkerSpec {
    /// Index.
    pub id: usize,
    /// Total workers.
    pub workers: usize,
    /// CPU to pin to.
    pub cpu: Option<core_affinity::CoreId>,
    /// Driver choice.
    pub driver: Driver,
    /// This worker's listening sockets.
    pub listeners: Vec<std::net::TcpListener>,
    /// The first snapshot.
    pub snapshot: Snapshot,
    /// Where statistics go.
    pub to_control: Link<ToControl>,
    /// This worker's access log buffer, when an access log is configured.
    pub log: Option<LogSink>,
}

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

/// One config generation as a worker runs it: the snapshot plus the upstream state built from it.
/// A request holds its `Rc<Gen>` to the end, so a reload mid-request never mixes generations.
pub struct Gen {
    snap: Snapshot,
    groups: RefCell<Vec<Group>>,
    split_counters: RefCell<Vec<i64>>,
    stats: RefCell<GenStats>,
    route_names: Vec<Arc<str>>,
    upstream_names: Vec<Arc<str>>,
}

impl std::ops::Deref for Gen {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.snap
    }
}

impl Gen {
    fn new(snap: Snapshot, worker: usize, workers: usize) -> Gen {
        let groups = snap
            .upstreams
            .iter()
            .map(|u| Group::new(u, worker, workers))
            .collect();
        let sizes: Vec<usize> = snap.upstreams.iter().map(|u| u.endpoints.len()).collect();
        Gen {
            stats: RefCell::new(GenStats::new(snap.routes.routes.len(), &sizes)),
            route_names: snap
                .routes
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            upstream_names: snap
                .upstreams
                .iter()
                .map(|u| Arc::from(u.cfg.name.as_str()))
                .collect(),
            snap,
            groups: RefCell::new(groups),
            split_counters: RefCell::new(Vec::new()),
        }
    }

    /// Counts a finished request.
    pub fn record(&self, rec: &RequestRecord, endpoint_failed: bool) {
        if self.snap.config.metrics {
            self.stats.borrow_mut().record(rec, endpoint_failed);
        }
    }

    /// Moves this generation's counts into a report.
    fn drain_into(&self, out: &mut StatsDelta) {
        let addrs: Vec<Vec<SocketAddr>> = self
            .groups
            .borrow()
            .iter()
            .map(|g| g.eps.iter().map(|e| e.addr).collect())
            .collect();
        self.stats
            .borrow_mut()
            .drain_into(out, &self.route_names, &self.upstream_names, &addrs);
    }

    fn endpoint_gauges(&self, pools: &Pools, out: &mut Vec<EndpointGauge>) {
        let now = Instant::now();
        for (name, g) in self.upstream_names.iter().zip(self.groups.borrow().iter()) {
            for e in &g.eps {
                out.push(EndpointGauge {
                    upstream: name.clone(),
                    addr: e.addr,
                    in_flight: e.in_flight,
                    ejected: e.ejected_until.is_some_and(|t| now < t),
                    active_down: e.active_down,
                    idle: pools.idle(&e.addr) as u32,
                });
            }
        }
    }

    /// Runs `f` on upstream group `gi`.
    pub fn with_group<R>(&self, gi: usize, f: impl FnOnce(&mut Group) -> R) -> Option<R> {
        self.groups.borrow_mut().get_mut(gi).map(f)
    }

    /// The circuit breaker of upstream `gi`.
    pub fn gate(&self, gi: usize) -> Option<Gate> {
        self.groups.borrow().get(gi).map(|g| g.gate.clone())
    }

    /// Weighted split among targets (smooth weighted round robin, per worker).
    pub fn split_pick(&self, targets: &[SplitTarget]) -> usize {
        let mut cur = self.split_counters.borrow_mut();
        if cur.len() < targets.len() {
            cur.resize(targets.len(), 0);
        }
        let mut total = 0i64;
        let mut best = None;
        for (i, t) in targets.iter().enumerate() {
            if t.weight == 0 {
                continue;
            }
            cur[i] += t.weight as i64;
            total += t.weight as i64;
            if best.is_none_or(|b: usize| cur[i] > cur[b]) {
                best = Some(i);
            }
        }
        match best {
            Some(b) => {
                cur[b] -= total;
                targets[b].upstream
            }
            None => targets[0].upstream,
        }
    }
}

/// Everything worker k owns. Not Send; nothing locked.
pub struct Worker {
    /// Worker index.
    pub id: usize,
    workers: usize,
    current: RefCell<Rc<Gen>>,
    generation: Cell<u64>,
    pools: RefCell<Pools>,
    draining: Cell<bool>,
    in_flight: Cell<usize>,
    connections: Cell<usize>,
    id_seed: u64,
    id_counter: Cell<u64>,
    stop: LocalEvent,
    accepted: Cell<u64>,
    pool_retired: Cell<u64>,
    panics: Cell<u64>,
    driver: Cell<&'static str>,
    log: RefCell<Option<LogSink>>,
    cpu: Cell<i64>,
    retired: RefCell<Vec<Rc<Gen>>>,
    to_control: Link<ToControl>,
    /// Idle deadlines of parked keep-alive connections.
    pub parking: crate::conn::park::Parking,
}

impl Worker {
    fn new(id: usize, workers: usize, snap: Snapshot, to_control: Link<ToControl>) -> Worker {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Worker {
            id,
            workers,
            generation: Cell::new(snap.generation),
            current: RefCell::new(Rc::new(Gen::new(snap, id, workers))),
            pools: RefCell::new(Pools::default()),
            draining: Cell::new(false),
            in_flight: Cell::new(0),
            connections: Cell::new(0),
            id_seed: seed ^ (std::process::id() as u64).rotate_left(32) ^ ((id as u64) << 56),
            id_counter: Cell::new(0),
            stop: LocalEvent::default(),
            accepted: Cell::new(0),
            pool_retired: Cell::new(0),
            panics: Cell::new(0),
            driver: Cell::new(""),
            log: RefCell::new(None),
            cpu: Cell::new(-1),
            retired: RefCell::new(Vec::new()),
            to_control,
            parking: Default::default(),
        }
    }

    /// The current generation (an Rc clone; connections re-fetch only when the generation changed).
    pub fn snapshot(&self) -> Rc<Gen> {
        self.current.borrow().clone()
    }

    /// Generation of the current snapshot.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// True once a drain started.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Marks a request as started; the guard ends it.
    pub fn begin_request(&self) -> InFlight<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self)
    }

    /// Counts an open connection; the guard ends it.
    pub fn begin_connection(&self) -> ConnGuard<'_> {
        self.connections.set(self.connections.get() + 1);
        ConnGuard(self)
    }

    /// Writes a fresh 32-hex-digit request id.
    pub fn next_request_id(&self, buf: &mut [u8; 32]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        // Mix the counter so ids do not look sequential, but stay unique (an odd multiplier is a bijection).
        let lo = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for (i, b) in buf[..16].iter_mut().enumerate() {
            *b = HEX[((self.id_seed >> ((15 - i) * 4)) & 0xf) as usize];
        }
        for (i, b) in buf[16..].iter_mut().enumerate() {
            *b = HEX[((lo >> ((15 - i) * 4)) & 0xf) as usize];
        }
    }

    /// A fresh span id for trace context (unique per worker; mixed so it does not look sequential).
    pub fn next_span_id(&self) -> u64 {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        let x = (n ^ self.id_seed).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        (x ^ (x >> 32)) | 1
    }

    /// Writes an access log line for a finished request if an access log is on and the record is sampled.
    pub fn log_request(
        &self,
        gen: &Gen,
        rec: &RequestRecord,
        f: impl FnOnce(&mut Vec<u8>, Option<&str>),
    ) {
        let Some(cfg) = gen.config.access_log.as_ref() else {
            return;
        };
        let mut log = self.log.borrow_mut();
        let Some(sink) = log.as_mut() else { return };
        if sink.sampled(rec, cfg.sample) {
            sink.line(|out| f(out, cfg.template.as_deref()));
        }
    }

    /// Name of route `i` and of upstream `u` in generation `gen`.
    pub fn names<'a>(
        &self,
        gen: &'a Gen,
        rec: &RequestRecord,
    ) -> (Option<&'a str>, Option<&'a str>, Option<SocketAddr>) {
        let route = rec
            .route
            .and_then(|i| gen.route_names.get(i as usize))
            .map(|s| &**s);
        let (up, ep) = match rec.endpoint {
            Some((u, e)) => {
                let name = gen.upstream_names.get(u as usize).map(|s| &**s);
                let addr = gen
                    .groups
                    .borrow()
                    .get(u as usize)
                    .and_then(|g| g.eps.get(e as usize))
                    .map(|e| e.addr);
                (name, addr)
            }
            None => (None, None),
        };
        (route, up, ep)
    }

    /// Counts an accepted connection.
    pub fn count_accept(&self) {
        self.accepted.set(self.accepted.get() + 1);
    }

    /// Builds this interval's report: every live generation's counts plus the worker's gauges.
    fn report(&self) -> StatsDelta {
        let cur = self.snapshot();
        let mut d = StatsDelta {
            worker: self.id,
            generation: cur.generation,
            ..Default::default()
        };
        // Requests that started on an older generation record there; collect those too, then let go of
        // generations nobody else holds.
        let mut retired = self.retired.borrow_mut();
        for g in retired.iter() {
            g.drain_into(&mut d);
        }
        retired.retain(|g| Rc::strong_count(g) > 1);
        cur.drain_into(&mut d);
        let pools = self.pools.borrow();
        let mut endpoints = Vec::new();
        cur.endpoint_gauges(&pools, &mut endpoints);
        d.gauges = WorkerGauges {
            driver: self.driver.get(),
            cpu: self.cpu.get(),
            connections: self.connections.get() as u64,
            parked: self.parking.parked() as u64,
            in_flight: self.in_flight.get() as u64,
            accepted: self.accepted.get(),
            pool_retired: self.pool_retired.get(),
            panics: self.panics.get(),
            cpu_ns: crate::metrics::thread_cpu_ns(),
            pooled: pools.total_idle() as u64,
            endpoints,
        };
        d
    }

    /// Takes an idle pooled connection.
    pub fn pool_take(&self, addr: SocketAddr, now: Instant) -> Option<UpConn> {
        self.pools.borrow_mut().take(addr, now)
    }

    /// Returns a connection to the pool.
    pub fn pool_put(&self, conn: UpConn, max_idle: usize, idle_timeout: Duration) {
        self.pools
            .borrow_mut()
            .put(conn, max_idle, idle_timeout, Instant::now());
    }

    /// A read buffer for a new upstream connection.
    pub fn pool_buffer(&self) -> BytesMut {
        self.pools.borrow_mut().buffer(crate::io::READ_CHUNK)
    }

    /// Closes a pooled connection that something arrived on while idle, counting it, and keeps its buffer.
    pub fn pool_retire(&self, buf: BytesMut) {
        self.pool_retired.set(self.pool_retired.get() + 1);
        self.pool_recycle(buf);
    }

    /// Counts a panic caught on this worker (a connection or a request that hit a bug).
    pub fn count_panic(&self) {
        self.panics.set(self.panics.get() + 1);
    }

    /// Keeps a buffer for reuse.
    pub fn pool_recycle(&self, buf: BytesMut) {
        self.pools.borrow_mut().recycle(buf);
    }

    /// Idle pooled connections to `addr`.
    pub fn pool_idle(&self, addr: &SocketAddr) -> usize {
        self.pools.borrow().idle(addr)
    }

    fn apply(&self, msg: ToWorker) -> Option<Duration> {
        match msg {
            ToWorker::Snapshot(s) => {
                self.generation.set(s.generation);
                let old = std::mem::replace(
                    &mut *self.current.borrow_mut(),
                    Rc::new(Gen::new(*s, self.id, self.workers)),
                );
                self.retired.borrow_mut().push(old);
                tracing::debug!(
                    worker = self.id,
                    generation = self.generation.get(),
                    "snapshot applied"
                );
            }
            ToWorker::Health {
                generation,
                upstream,
                addr,
                healthy,
            } => {
                let cur = self.snapshot();
                if cur.generation == generation {
                    cur.with_group(upstream, |g| g.set_active(addr, healthy));
                }
            }
            ToWorker::Endpoints {
                generation,
                upstream,
                list,
            } => {
                let cur = self.snapshot();
                if cur.generation == generation {
                    cur.with_group(upstream, |g| g.set_endpoints(&list));
                    cur.stats.borrow_mut().resize_upstream(upstream, list.len());
                }
            }
            ToWorker::EndpointAdmin {
                upstream,
                addr,
                mode,
                weight,
            } => {
                let cur = self.snapshot();
                if let Some(gi) = cur.upstream_names.iter().position(|n| *n == upstream) {
                    cur.with_group(gi, |g| g.set_admin(addr, mode, weight));
                }
            }
            ToWorker::Drain(grace) => return Some(grace),
        }
        None
    }
}

/// Ends a request on drop.
pub struct InFlight<'a>(&'a Worker);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// Ends a connection on drop.
pub struct ConnGuard<'a>(&'a Worker);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

/// Starts a worker thread.
pub fn spawn(spec: WorkerSpec) -> io::Result<WorkerHandle> {
    let (link, inbox) = crate::link::pair()?;
    let join = std::thread::Builder::new()
        .name(format!("sluice-w{}", spec.id))
        .spawn(move || run(spec, inbox))?;
    Ok(WorkerHandle { link, join })
}

fn run(spec: WorkerSpec, inbox: Inbox<ToWorker>) {
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
        worker_main(spec, inbox, driver, cpu)
    });
    if let Err(e) = result {
        tracing::error!(worker = id, error = %e, "worker failed to start its runtime");
    }
}

async fn worker_main(spec: WorkerSpec, inbox: Inbox<ToWorker>, driver: &'static str, cpu: i64) {
    let w = Rc::new(Worker::new(
        spec.id,
        spec.workers,
        spec.snapshot,
        spec.to_control,
    ));
    w.driver.set(driver);
    *w.log.borrow_mut() = spec.log;
    w.cpu.set(cpu);
    for l in spec.listeners {
        match monoio::net::TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(w.clone(), l));
            }
            Err(e) => tracing::error!(worker = w.id, error = %e, "cannot use listener"),
        }
    }
    monoio::spawn(sweeper(w.clone()));
    monoio::spawn(crate::conn::park::sweeper(w.clone()));
    monoio::spawn(reporter(w.clone()));
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

async fn accept_loop(w: Rc<Worker>, listener: monoio::net::TcpListener) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = w.stop.wait() => None,
        };
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                // Inherited from the listener on Linux (see `listener`); elsewhere set it here.
                #[cfg(not(target_os = "linux"))]
                let _ = stream.set_nodelay(true);
                w.count_accept();
                monoio::spawn(h1::serve(w.clone(), stream, peer));
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = w.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
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
