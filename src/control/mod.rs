//! The control thread: a small runtime off the hot path. It runs active health checks and DNS
//! re-resolution for the current snapshot and broadcasts verdicts to workers. Nothing here is on a
//! request path; it may block briefly (DNS) without slowing any worker.

pub mod acme;
pub mod admin;
pub mod alerts;
pub mod consumers;
mod dns;
mod health;
pub mod jwks;
pub mod limits;
pub mod prometheus;
pub mod quota_watch;
pub mod signals;
pub mod stats;
pub mod status;
pub mod usage;
pub mod webhook;

use crate::link::{Inbox, Link};
use crate::msg::{ToControl, ToWorker, WorkerLink};
use crate::snapshot::Snapshot;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Handle to the control thread.
pub struct ControlHandle {
    pub link: Link<ToControl>,
    pub join: JoinHandle<()>,
}

/// Fans a message out to every worker.
pub struct Broadcast(Vec<WorkerLink>);

impl Broadcast {
    /// Sends worker `w` a message.
    pub fn to(&self, w: usize, msg: ToWorker) {
        if let Some(l) = self.0.get(w) {
            l.send(msg);
        }
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without workers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sends one message per worker, built by `make`.
    pub fn send(&self, make: impl Fn() -> ToWorker) {
        for l in &self.0 {
            l.send(make());
        }
    }
}

/// The admin listener and what it reports.
pub struct AdminSetup {
    /// Bound socket.
    pub listener: std::net::TcpListener,
    pub token: Option<crate::config::secret::Secret>,
    /// Access log counters, when an access log is on.
    pub log_counters: Option<Arc<crate::access_log::LogCounters>>,
}

/// Starts the control thread.
pub fn spawn(
    link: Link<ToControl>,
    inbox: Inbox<ToControl>,
    workers: Vec<WorkerLink>,
    first: Arc<Snapshot>,
    admin: Option<AdminSetup>,
    store: Option<consumers::ConsumerStore>,
    ledger: Option<usage::Ledger>,
) -> io::Result<ControlHandle> {
    let dns_thread = dns::spawn(
        Broadcast(
            workers
                .iter()
                .map(|l| l.try_clone())
                .collect::<io::Result<_>>()?,
        ),
        first.clone(),
    )?;
    let jwks_thread = jwks::spawn(
        Broadcast(
            workers
                .iter()
                .map(|l| l.try_clone())
                .collect::<io::Result<_>>()?,
        ),
        link.try_clone()?,
        first.clone(),
    )?;
    let acme_thread = acme::spawn(link.try_clone()?, first.clone())?;
    let join = std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn(move || {
            let res = crate::runtime::block_on(crate::config::Driver::Epoll, |_| {
                control_main(
                    Broadcast(workers),
                    first,
                    inbox,
                    dns_thread,
                    jwks_thread,
                    acme_thread,
                    admin,
                    store,
                    ledger,
                )
            });
            if let Err(e) = res {
                tracing::error!(error = %e, "control thread failed to start");
            }
        })?;
    Ok(ControlHandle { link, join })
}

async fn control_main(
    workers: Broadcast,
    first: Arc<Snapshot>,
    inbox: Inbox<ToControl>,
    dns: dns::DnsHandle,
    jwks: jwks::JwksHandle,
    acme: acme::AcmeHandle,
    admin: Option<AdminSetup>,
    store: Option<consumers::ConsumerStore>,
    ledger: Option<usage::Ledger>,
) {
    let store_db = store.map(|s| Rc::new(RefCell::new(s)));
    let ledger = ledger.map(|l| Rc::new(RefCell::new(l)));
    // Alerts, scaling signals and the ledger read the snapshot in force; they take new settings on
    // their next tick.
    let snapshot = Rc::new(RefCell::new(first.clone()));
    let billing = ledger
        .as_ref()
        .map(|l| usage::billing::Billing::new(l.clone(), snapshot.clone()));
    let auth = Rc::new(RefCell::new(Vec::new()));
    let current = Rc::new(Cell::new(first.generation));
    let store = Rc::new(RefCell::new(stats::Store::new(workers.0.len())));
    let workers = Rc::new(workers);
    // The ledger flush's `ReportUsage` number and how many workers answered it.
    let usage_answers = Rc::new(Cell::new((0u64, 0u64)));
    let pools = Rc::new(RefCell::new(limits::Pools::new(workers.len())));
    pools.borrow_mut().configure(&first.config.limits);
    if let Some(a) = admin {
        let state = admin::AdminState {
            started: std::time::Instant::now(),
            workers: workers.0.len(),
            generation: current.clone(),
            config: first.config.source.label(),
            token: a.token,
            store: store.clone(),
            snapshot: RefCell::new(first.clone()),
            links: workers.clone(),
            log_counters: a.log_counters,
            overrides: RefCell::new(Vec::new()),
            auth: auth.clone(),
            consumers: store_db.clone(),
            ledger: ledger.clone(),
            billing: billing.clone(),
            pools: pools.clone(),
        };
        let state = Rc::new(state);
        ADMIN.with(|s| *s.borrow_mut() = Some(state.clone()));
        monoio::spawn(admin::serve(a.listener, state));
    }
    monoio::spawn(ticker(store.clone()));
    if let Some(db) = &store_db {
        monoio::spawn(purge_keys(db.clone(), workers.clone()));
    }
    store.borrow_mut().set_routes(&first.config);
    if let Some(l) = &ledger {
        monoio::spawn(usage::flusher(
            l.clone(),
            snapshot.clone(),
            workers.clone(),
            usage_answers.clone(),
        ));
    }
    if let Some(b) = &billing {
        monoio::spawn(usage::billing::run(b.clone()));
    }
    monoio::spawn(alerts::run(store.clone(), snapshot.clone()));
    monoio::spawn(signals::run(store.clone(), snapshot.clone()));
    if let Some(l) = &ledger {
        // A quota's pool starts from what the ledger counted of its period, so it holds across
        // restarts (less what a kill -9 lost: at most one flush interval).
        let l = l.clone();
        pools
            .borrow_mut()
            .set_quota_used(Box::new(move |name, period, start, bytes| {
                let t = l.borrow().running_totals(name, start);
                let u = match period {
                    crate::config::limits::Period::Day => t.day,
                    crate::config::limits::Period::Month => t.month,
                };
                if bytes {
                    u.bytes
                } else {
                    u.requests
                }
            }));
    }
    let pools_wake = Rc::new(crate::limit::local::Notify::default());
    monoio::spawn(limits::run(
        pools.clone(),
        workers.clone(),
        pools_wake.clone(),
    ));
    let watch = Rc::new(RefCell::new(quota_watch::QuotaWatch::default()));
    monoio::spawn(watch_quotas(
        watch.clone(),
        store.clone(),
        snapshot.clone(),
        store_db.clone(),
        ledger.clone(),
    ));
    let mut state = health::HealthState::default();
    health::start(&first, &workers, &current, &mut state);
    let Ok(mut inbox) = inbox.into_async() else {
        tracing::error!("control thread cannot watch its inbox");
        return;
    };
    while let Some(msg) = inbox.recv().await {
        match msg {
            ToControl::Stats(d) => {
                // `apply` feeds the consumer figures with `d.usage` too.
                store.borrow_mut().apply(&d);
                take_usage(ledger.as_ref(), &watch, &d.usage);
            }
            ToControl::Usage(seq, rows) => {
                store
                    .borrow_mut()
                    .consumers
                    .apply(&rows, webhook::unix_now());
                take_usage(ledger.as_ref(), &watch, &rows);
                let (want, n) = usage_answers.get();
                if seq == want {
                    usage_answers.set((want, n + 1));
                }
            }
            ToControl::Limits { worker, asks } => {
                let mut p = pools.borrow_mut();
                let mut out = crate::limit::pool::Replies::default();
                p.ask(worker, asks, std::time::Instant::now(), &mut out);
                limits::send(&workers, &mut out, &mut p.counts);
                if p.has_waiting() {
                    pools_wake.notify();
                }
            }
            ToControl::JwtUnknownKid { verifier } => jwks.unknown_kid(verifier),
            ToControl::AuthStatus(list) => *auth.borrow_mut() = list,
            ToControl::Acme(list) => store.borrow_mut().acme = list,
            ToControl::Introspected { verifier, call } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut st = store.borrow_mut();
                let entry = st.introspection.entry(verifier.clone()).or_default();
                entry.record(&verifier, call, now);
            }
            ToControl::Snapshot(s) => {
                current.set(s.generation);
                store.borrow_mut().set_routes(&s.config);
                pools.borrow_mut().configure(&s.config.limits);
                *snapshot.borrow_mut() = s.clone();
                ADMIN.with(|a| {
                    if let Some(a) = a.borrow().as_ref() {
                        *a.snapshot.borrow_mut() = s.clone();
                        a.replay_overrides();
                    }
                });
                dns.update(s.clone());
                jwks.update(s.clone());
                acme.update(s.clone());
                health::start(&s, &workers, &current, &mut state);
            }
            ToControl::Stop => break,
        }
    }
    // Every worker's last report arrived before Stop (the main thread joins workers first): write it.
    if let Some(l) = &ledger {
        let n = usage::flush(l, "usage flush at drain failed; the last interval is lost");
        tracing::info!(rows = n, "usage ledger flushed");
    }
    dns.stop();
    jwks.stop();
    acme.stop();
}

thread_local! {
    /// The admin state of this control thread, so snapshot changes reach it.
    static ADMIN: RefCell<Option<Rc<admin::AdminState>>> = const { RefCell::new(None) };
}

/// Sends every worker its own copy of the runtime consumer table.
/// A worker's usage rows into the ledger (when there is one) and the quota watch.
fn take_usage(
    ledger: Option<&usage::SharedLedger>,
    watch: &RefCell<quota_watch::QuotaWatch>,
    rows: &[crate::usage::UsageRow],
) {
    let now = webhook::unix_now();
    if let Some(l) = ledger {
        l.borrow_mut().record(rows, now);
    }
    watch.borrow_mut().record(rows, now);
}

/// Once a second: the quota watch's shares go to the statistics (consumers view, alert rules).
async fn watch_quotas(
    watch: Rc<RefCell<quota_watch::QuotaWatch>>,
    stats: Rc<RefCell<stats::Store>>,
    snapshot: Rc<RefCell<Arc<Snapshot>>>,
    db: Option<Rc<RefCell<consumers::ConsumerStore>>>,
    ledger: Option<usage::SharedLedger>,
) {
    let seed = |name: &str, period: crate::config::limits::Period, start: u64| {
        let l = ledger.as_ref()?;
        let t = l.borrow().running_totals(name, start);
        let u = match period {
            crate::config::limits::Period::Day => t.day,
            crate::config::limits::Period::Month => t.month,
        };
        Some((u.requests, u.bytes))
    };
    loop {
        let snap = snapshot.borrow().clone();
        let db = db.as_ref().map(|d| d.borrow());
        let runtime = db
            .iter()
            .flat_map(|d| d.rows())
            .map(|r| (r.name.as_str(), r.plan.as_deref(), r.quota.as_ref()));
        let tick = watch
            .borrow_mut()
            .tick(&snap.config, runtime, &seed, webhook::unix_now());
        drop(db);
        stats.borrow_mut().quota_used = tick.shares;
        monoio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub fn publish_consumers(links: &Broadcast, db: &consumers::ConsumerStore) {
    links.send(|| ToWorker::Consumers(Box::new(db.table())));
}

/// Deletes key rows whose rotation grace is over. Workers already refuse such keys by their expiry;
/// this only keeps the database and the tables from growing.
async fn purge_keys(db: Rc<RefCell<consumers::ConsumerStore>>, links: Rc<Broadcast>) {
    loop {
        monoio::time::sleep(std::time::Duration::from_secs(30)).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut db = db.borrow_mut();
        match db.purge_expired(now) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(keys = n, "expired rotated keys purged");
                publish_consumers(&links, &db);
            }
            Err(e) => tracing::warn!(error = %e, "could not purge expired keys"),
        }
    }
}

/// Closes per-second history buckets.
async fn ticker(store: Rc<RefCell<stats::Store>>) {
    loop {
        monoio::time::sleep(std::time::Duration::from_millis(200)).await;
        store.borrow_mut().tick();
    }
}
