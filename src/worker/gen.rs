//! One config generation as a worker runs it: the snapshot plus the upstream state (balancers,
//! in-flight counts, circuit breakers) and the counters built from it. A request keeps the `Rc<Gen>`
//! it started on to its end, so a reload never mixes two generations in one request.

use crate::metrics::{EndpointGauge, GenStats, RequestRecord, StatsDelta};
use crate::snapshot::Snapshot;
use crate::upstream::balance::SmoothWrr;
use crate::upstream::gate::Gate;
use crate::upstream::pool::Pools;
use crate::upstream::Group;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One config generation as a worker runs it: the snapshot plus the upstream state built from it.
/// A request holds its `Rc<Gen>` to the end, so a reload mid-request never mixes generations.
pub struct Gen {
    snap: Snapshot,
    pub(super) groups: RefCell<Vec<Group>>,
    /// Traffic-split state by route index, grown on first use.
    splits: RefCell<Vec<SmoothWrr>>,
    pub(super) stats: RefCell<GenStats>,
    pub(super) route_names: Vec<Arc<str>>,
    pub(super) upstream_names: Vec<Arc<str>>,
    /// Authentication method names by `AuthMark::method`.
    auth_methods: Vec<Arc<str>>,
    /// Requests are counted: for metrics, or because usage must be (the ledger, the quota figures).
    counting: bool,
    /// This worker's rustls config per listener (None: plain), with the worker's session caches.
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

impl std::ops::Deref for Gen {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.snap
    }
}

/// What a request record's indexes name.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordNames<'a> {
    pub route: Option<&'a str>,
    /// The upstream group.
    pub upstream: Option<&'a str>,
    /// The endpoint's address.
    pub endpoint: Option<SocketAddr>,
}

impl Gen {
    /// The names a record's indexes stand for in this generation (for the access log).
    pub fn names(&self, rec: &RequestRecord) -> RecordNames<'_> {
        let route = rec
            .route
            .and_then(|i| self.route_names.get(i as usize))
            .map(|s| &**s);
        let (upstream, endpoint) = match rec.endpoint {
            Some((u, e)) => {
                let name = self.upstream_names.get(u as usize).map(|s| &**s);
                let addr = self
                    .groups
                    .borrow()
                    .get(u as usize)
                    .and_then(|g| g.eps.get(e as usize))
                    .map(|e| e.addr);
                (name, addr)
            }
            None => (None, None),
        };
        RecordNames {
            route,
            upstream,
            endpoint,
        }
    }

    pub(super) fn new(snap: Snapshot, worker: usize, workers: usize) -> Gen {
        let groups = snap
            .upstreams
            .iter()
            .map(|u| Group::new(u, worker, workers))
            .collect();
        let sizes: Vec<usize> = snap.upstreams.iter().map(|u| u.endpoints.len()).collect();
        let c = &snap.config;
        // The quota watch (shares, marks) reads the usage rows; runtime consumers' quotas need `[state]`.
        let counting = c.metrics
            || c.usage.is_some()
            || c.state.is_some()
            || c.plans.iter().any(|p| p.quota.is_some())
            || c.consumers.iter().any(|c| c.quota.is_some());
        let tls = snap
            .tls
            .iter()
            .zip(&snap.config.listeners)
            .map(|(c, l)| {
                let entries = l.tls.as_ref().map_or(0, |t| t.session_cache);
                c.as_ref()
                    .map(|c| crate::tls::server::for_worker(c, &session_cache(&l.name, entries)))
            })
            .collect();
        Gen {
            tls,
            counting,
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
            auth_methods: crate::config::consumer::method_names(&snap.config),
            snap,
            groups: RefCell::new(groups),
            splits: RefCell::new(Vec::new()),
        }
    }

    /// This worker's rustls config of listener `i`, if it terminates TLS.
    pub fn tls(&self, i: usize) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.get(i).and_then(Option::as_ref)
    }

    /// The name of authentication method `i` (see `config::consumer::method_names`).
    pub fn auth_method(&self, i: u8) -> &str {
        self.auth_methods.get(i as usize).map_or("-", |s| &**s)
    }

    /// Counts a finished request of `consumer`. With `metrics = false` counting still runs when a
    /// usage ledger or a quota needs it: billing and quotas cannot be switched off for a benchmark.
    pub fn record(&self, rec: &RequestRecord, endpoint_failed: bool, consumer: Option<&str>) {
        if self.counting {
            self.stats
                .borrow_mut()
                .record(rec, endpoint_failed, consumer);
        }
    }

    /// Moves this generation's counts into a report.
    pub(super) fn drain_into(&self, out: &mut StatsDelta) {
        let addrs: Vec<Vec<SocketAddr>> = self
            .groups
            .borrow()
            .iter()
            .map(|g| g.eps.iter().map(|e| e.addr).collect())
            .collect();
        self.stats.borrow_mut().drain_into(
            out,
            &self.route_names,
            &self.upstream_names,
            &addrs,
            &self.auth_methods,
        );
    }

    /// Moves this generation's usage rows (only) into `out`: what the ledger's flush asks for.
    pub(super) fn drain_usage(&self, out: &mut Vec<crate::usage::UsageRow>) {
        self.stats.borrow_mut().drain_usage(&self.route_names, out);
    }

    pub(super) fn endpoint_gauges(&self, pools: &Pools, out: &mut Vec<EndpointGauge>) {
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

    /// Runs `f` on the traffic-split state of route `route` (one per route, per worker).
    pub fn with_split<R>(&self, route: usize, f: impl FnOnce(&mut SmoothWrr) -> R) -> R {
        let mut splits = self.splits.borrow_mut();
        if splits.len() <= route {
            splits.resize_with(route + 1, || SmoothWrr::new(0));
        }
        f(&mut splits[route])
    }
}

thread_local! {
    /// Each listener's session-id cache on this worker, by listener name, kept across reloads so a
    /// reload does not cost every client a full handshake.
    static SESSION_CACHES: RefCell<Vec<(String, usize, Arc<dyn rustls::server::StoresServerSessions>)>> =
        const { RefCell::new(Vec::new()) };
}

/// The calling worker's session cache of listener `name` holding `entries`.
fn session_cache(name: &str, entries: usize) -> Arc<dyn rustls::server::StoresServerSessions> {
    SESSION_CACHES.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, _, cache)) = c.iter().find(|(n, e, _)| n == name && *e == entries) {
            return cache.clone();
        }
        c.retain(|(n, _, _)| n != name);
        let cache = crate::tls::server::worker_cache(entries);
        c.push((name.to_string(), entries, cache.clone()));
        cache
    })
}
