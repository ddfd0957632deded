//! The merged view: what every worker reported, added up by name (route, upstream, endpoint), plus a
//! short history of per-second figures for the stats page, alerts and scaling signals. Lives on the
//! control thread only; workers never wait for it.

use crate::limit::shard::ShardCounts;
use crate::metrics::{new_hist_u64, Counters, LimitDelta, StatsDelta, WorkerGauges};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Seconds of per-second history kept.
pub const HISTORY: usize = 300;

/// One worker's latest state.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    /// Latest gauges.
    pub gauges: WorkerGauges,
    /// Cumulative counters.
    pub totals: Counters,
    /// Share of wall time the worker thread was on a CPU over the last interval (0..1).
    pub utilization: f64,
    /// Requests per second over the last interval.
    pub rps: f64,
    /// Accepts per second over the last interval.
    pub accept_rate: f64,
    /// Errors (4xx+5xx+no response) per second over the last interval.
    pub error_rate: f64,
    /// Latency quantiles of the last interval, ms.
    pub p50_ms: f64,
    /// p99 of the last interval, ms.
    pub p99_ms: f64,
    /// Config generation the worker runs.
    pub generation: u64,
    last: Option<(Instant, u64, u64)>,
}

/// Cumulative per-route figures.
#[derive(Debug, Clone)]
pub struct RouteView {
    pub c: Counters,
    /// Latency histogram (µs).
    pub hist: Option<Histogram<u64>>,
    /// Requests in the last interval (all workers).
    pub last_requests: u64,
    /// 5xx in the last interval.
    pub last_5xx: u64,
}

/// Cumulative per-endpoint figures.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub requests: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Responses by class.
    pub status: [u64; 6],
    /// Time to first byte histogram (µs).
    pub ttfb: Option<Histogram<u64>>,
}

/// One limit (or quota period) as every worker counted it: counts since start, kept by name across
/// reloads, and the keys each worker held at its last report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitView {
    pub counts: ShardCounts,
    /// Keys held, by worker.
    pub keys: Vec<u64>,
}

impl LimitView {
    /// Keys held across workers (a key two workers hold counts twice: each holds its own entry).
    pub fn keys_held(&self) -> u64 {
        self.keys.iter().sum()
    }
}

/// One second of the whole instance.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub requests: u64,
    /// 5xx responses (and requests with no response).
    pub errors_5xx: u64,
    /// Requests rejected by policy.
    pub policy_rejections: u64,
    /// Latency histogram of this second (µs).
    pub hist: Option<Histogram<u64>>,
    /// Routes with traffic in this second (latency histogram: total time).
    pub routes: BTreeMap<Arc<str>, ScopeSecond>,
    /// Upstreams with traffic in this second (latency histogram: time to first byte).
    pub upstreams: BTreeMap<Arc<str>, ScopeSecond>,
    /// Requests finished per worker.
    pub worker_requests: Vec<u64>,
    /// Each worker's utilization when the second closed.
    pub worker_utilization: Vec<f64>,
    /// Connections accepted, all workers.
    pub accepts: u64,
}

/// One second of one route or one upstream.
///
/// For an upstream that only single-upstream routes reach (the usual case), `requests` and `errors_5xx`
/// are those routes' own counts: exact, including 503s for want of a healthy endpoint, which reach no
/// endpoint. For an upstream that some route splits traffic to, they are the counts of its endpoints
/// plus the no-healthy-endpoint 503s of its single-upstream routes (a request that failed on an
/// endpoint and then found no other can count twice there).
#[derive(Debug, Clone, Default)]
pub struct ScopeSecond {
    pub requests: u64,
    /// 5xx responses and requests that got no response.
    pub errors_5xx: u64,
    /// Latency (µs) as sparse (value, count) pairs: a full histogram per scope per second would cost
    /// ~20 KiB each over five minutes of history.
    pub latency: Vec<(u64, u64)>,
}

impl ScopeSecond {
    fn add_hist(&mut self, h: &Histogram<u32>) {
        for v in h.iter_recorded() {
            let (value, n) = (v.value_iterated_to(), v.count_at_value() as u64);
            match self.latency.binary_search_by_key(&value, |&(x, _)| x) {
                Ok(i) => self.latency[i].1 += n,
                Err(i) => self.latency.insert(i, (value, n)),
            }
        }
    }
}

/// A route's or an upstream's figures summed over a window.
#[derive(Debug, Clone, Default)]
pub struct ScopeWindow {
    pub requests: u64,
    /// 5xx and no response.
    pub errors_5xx: u64,
    /// Merged latency histogram (µs), None when nothing was recorded.
    pub hist: Option<Histogram<u64>>,
}

impl ScopeWindow {
    /// 5xx / requests, 0 without requests.
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors_5xx as f64 / self.requests as f64
        }
    }

    /// A latency quantile in ms, 0 without data.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.hist, q)
    }
}

/// Everything the control thread knows.
pub struct Store {
    started: Instant,
    /// Per worker.
    pub workers: Vec<WorkerView>,
    /// Cumulative totals.
    pub global: Counters,
    /// Cumulative latency (µs).
    pub latency: Option<Histogram<u64>>,
    /// Cumulative upstream time to first byte (µs).
    pub ttfb: Option<Histogram<u64>>,
    /// By route name.
    pub routes: BTreeMap<Arc<str>, RouteView>,
    /// By (upstream, endpoint).
    pub endpoints: BTreeMap<(Arc<str>, SocketAddr), EndpointView>,
    /// Per-second history, newest last.
    pub seconds: VecDeque<Second>,
    current: Second,
    current_started: Instant,
    /// The only upstream of each single-upstream proxying route: its counts are the upstream's.
    route_upstream: BTreeMap<Arc<str>, Arc<str>>,
    /// Upstreams that some route splits traffic to: their counts come from their endpoints.
    split_upstreams: std::collections::BTreeSet<Arc<str>>,
    /// Alert rules as last evaluated (written by `alerts`).
    pub alerts: Vec<super::status::AlertStatus>,
    /// Scaling signals as last computed (written by `signals`).
    pub signals: Option<super::status::SignalsReport>,
    /// Authentication outcomes by (route, method, outcome), cumulative.
    pub auth: BTreeMap<(Arc<str>, Arc<str>, &'static str), u64>,
    /// Calls to introspection endpoints, by verifier name.
    pub introspection: BTreeMap<Arc<str>, super::status::IntrospectionStatus>,
    /// Per-consumer figures since start.
    pub consumers: super::usage::live::LiveUsage,
    /// Share of its quota each consumer used, filled by the quota code (empty until quotas exist);
    /// the consumers view shows it.
    pub quota_used: std::collections::HashMap<Arc<str>, f64>,
    /// Rate limits and quota periods by name ("quota:day", "quota:month"), from the workers' shards.
    pub limits: BTreeMap<Arc<str>, LimitView>,
    /// Certificates the ACME thread keeps, as it last reported them.
    pub acme: Vec<crate::msg::AcmeStatus>,
}

fn add_hist(into: &mut Option<Histogram<u64>>, h: &Histogram<u32>) {
    if into.is_none() {
        *into = new_hist_u64();
    }
    if let Some(a) = into.as_mut() {
        for v in h.iter_recorded() {
            let _ = a.record_n(v.value_iterated_to(), v.count_at_value() as u64);
        }
    }
}

fn quantile_ms(h: &Option<Histogram<u64>>, q: f64) -> f64 {
    h.as_ref()
        .filter(|h| !h.is_empty())
        .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
}

/// What the last seconds of a `Store` add up to.
#[derive(Debug, Default)]
pub struct Window {
    pub requests: u64,
    /// Responses with a 5xx status.
    pub errors_5xx: u64,
    /// Requests a policy refused.
    pub policy_rejections: u64,
    /// Request durations, merged over the window (None when nothing was recorded).
    pub latency: Option<Histogram<u64>>,
}

/// One endpoint as all workers together see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointState {
    /// Requests in flight to it.
    pub in_flight: u64,
    /// Idle pooled connections to it.
    pub idle: u64,
    /// Passes active checks and no worker ejected it.
    pub healthy: bool,
    /// Some worker's passive health ejected it.
    pub ejected: bool,
    /// Active health checks mark it down.
    pub down: bool,
}

impl Store {
    /// An empty store for `workers` workers.
    pub fn new(workers: usize) -> Store {
        Store {
            started: Instant::now(),
            workers: vec![WorkerView::default(); workers],
            global: Counters::default(),
            latency: None,
            ttfb: None,
            routes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            seconds: VecDeque::new(),
            current: Second::default(),
            current_started: Instant::now(),
            route_upstream: BTreeMap::new(),
            split_upstreams: Default::default(),
            alerts: Vec::new(),
            signals: None,
            auth: BTreeMap::new(),
            introspection: BTreeMap::new(),
            consumers: Default::default(),
            quota_used: Default::default(),
            limits: BTreeMap::new(),
            acme: Vec::new(),
        }
    }

    /// Learns which upstream each route proxies to (at start and after each reload).
    pub fn set_routes(&mut self, config: &crate::config::Config) {
        self.route_upstream.clear();
        self.split_upstreams.clear();
        let name = |i: usize| config.upstreams.get(i).map(|u| Arc::from(u.name.as_str()));
        for r in &config.routes {
            let crate::config::RouteAction::Proxy(targets) = &r.action else {
                continue;
            };
            let first = targets.first().map(|t| t.upstream);
            if targets.iter().all(|t| Some(t.upstream) == first) {
                if let Some(u) = first.and_then(name) {
                    self.route_upstream.insert(Arc::from(r.name.as_str()), u);
                }
            } else {
                self.split_upstreams
                    .extend(targets.iter().filter_map(|t| name(t.upstream)));
            }
        }
    }

    /// Seconds since the store was created.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Adds one worker report.
    pub fn apply(&mut self, d: &StatsDelta) {
        let now = Instant::now();
        if d.worker >= self.workers.len() {
            self.workers.resize(d.worker + 1, WorkerView::default());
        }
        let mut interval_hist = None;
        if let Some(h) = &d.latency {
            add_hist(&mut self.latency, h);
            add_hist(&mut interval_hist, h);
            add_hist(&mut self.current.hist, h);
        }
        if let Some(h) = &d.ttfb {
            add_hist(&mut self.ttfb, h);
        }
        self.global.merge(&d.global);
        self.apply_limits(d.worker, &d.limits);
        self.consumers
            .apply(&d.usage, crate::control::webhook::unix_now());
        for a in &d.auth {
            *self
                .auth
                .entry((a.route.clone(), a.method.clone(), a.outcome))
                .or_insert(0) += a.count;
        }
        self.current.requests += d.global.requests;
        self.current.errors_5xx += d.global.status[5] + d.global.status[0];
        self.current.policy_rejections +=
            d.global.errors[crate::metrics::ErrorKind::Policy as usize];

        if self.current.worker_requests.len() <= d.worker {
            self.current.worker_requests.resize(d.worker + 1, 0);
        }
        self.current.worker_requests[d.worker] += d.global.requests;
        for r in &d.routes {
            let s = self.current.routes.entry(r.route.clone()).or_default();
            s.requests += r.c.requests;
            s.errors_5xx += r.c.status[5] + r.c.status[0];
            if let Some(h) = &r.total {
                s.add_hist(h);
            }
            let Some(u) = self.route_upstream.get(&r.route) else {
                continue;
            };
            let s = self.current.upstreams.entry(u.clone()).or_default();
            if self.split_upstreams.contains(u) {
                let refused = r.c.errors[crate::metrics::ErrorKind::Unavailable as usize];
                s.requests += refused;
                s.errors_5xx += refused;
            } else {
                s.requests += r.c.requests;
                s.errors_5xx += r.c.status[5] + r.c.status[0];
            }
        }
        for e in &d.endpoints {
            let s = self
                .current
                .upstreams
                .entry(e.upstream.clone())
                .or_default();
            if self.split_upstreams.contains(&e.upstream) {
                s.requests += e.requests;
                s.errors_5xx += e.status[5] + e.status[0];
            }
            if let Some(h) = &e.ttfb {
                s.add_hist(h);
            }
        }

        let w = &mut self.workers[d.worker];
        w.totals.merge(&d.global);
        w.generation = d.generation;
        let accepted_before = w.last.map_or(0, |(_, _, a)| a);
        self.current.accepts += d.gauges.accepted.saturating_sub(accepted_before);
        if let Some((t, cpu, accepted)) = w.last {
            let secs = now.saturating_duration_since(t).as_secs_f64().max(1e-3);
            w.utilization =
                ((d.gauges.cpu_ns.saturating_sub(cpu)) as f64 / 1e9 / secs).clamp(0.0, 1.0);
            w.rps = d.global.requests as f64 / secs;
            w.accept_rate = d.gauges.accepted.saturating_sub(accepted) as f64 / secs;
            w.error_rate =
                (d.global.status[0] + d.global.status[4] + d.global.status[5]) as f64 / secs;
        }
        w.last = Some((now, d.gauges.cpu_ns, d.gauges.accepted));
        w.p50_ms = quantile_ms(&interval_hist, 0.5);
        w.p99_ms = quantile_ms(&interval_hist, 0.99);
        w.gauges = d.gauges.clone();

        for r in &d.routes {
            let v = self
                .routes
                .entry(r.route.clone())
                .or_insert_with(|| RouteView {
                    c: Counters::default(),
                    hist: None,
                    last_requests: 0,
                    last_5xx: 0,
                });
            v.c.merge(&r.c);
            if let Some(h) = &r.total {
                add_hist(&mut v.hist, h);
            }
        }
        for e in &d.endpoints {
            let v = self
                .endpoints
                .entry((e.upstream.clone(), e.addr))
                .or_insert_with(|| EndpointView {
                    requests: 0,
                    failures: 0,
                    status: [0; 6],
                    ttfb: None,
                });
            v.requests += e.requests;
            v.failures += e.failures;
            for i in 0..6 {
                v.status[i] += e.status[i];
            }
            if let Some(h) = &e.ttfb {
                add_hist(&mut v.ttfb, h);
            }
        }
    }

    /// Adds worker `worker`'s limit shards: counts add up, its keys are replaced by what it holds
    /// now (a limit it no longer reports, removed by a reload, holds none there).
    pub fn apply_limits(&mut self, worker: usize, limits: &[LimitDelta]) {
        for v in self.limits.values_mut() {
            if let Some(k) = v.keys.get_mut(worker) {
                *k = 0;
            }
        }
        for l in limits {
            let v = self.limits.entry(l.limit.clone()).or_default();
            v.counts.add(&l.counts);
            if v.keys.len() <= worker {
                v.keys.resize(worker + 1, 0);
            }
            v.keys[worker] += l.keys;
        }
    }

    /// Closes the current second once a second has passed; call on every tick.
    pub fn tick(&mut self) {
        if self.current_started.elapsed().as_millis() < 1000 {
            return;
        }
        self.close_second();
    }

    /// Closes the current second now (the ticker's step; tests call it directly).
    pub fn close_second(&mut self) {
        self.current_started = Instant::now();
        let mut s = std::mem::take(&mut self.current);
        s.worker_utilization = self.workers.iter().map(|w| w.utilization).collect();
        self.seconds.push_back(s);
        while self.seconds.len() > HISTORY {
            self.seconds.pop_front();
        }
    }

    /// Summed figures of the last `n` seconds.
    pub fn window(&self, n: usize) -> Window {
        let mut req = 0;
        let mut err = 0;
        let mut pol = 0;
        let mut hist: Option<Histogram<u64>> = None;
        for s in self.seconds.iter().rev().take(n) {
            req += s.requests;
            err += s.errors_5xx;
            pol += s.policy_rejections;
            if let Some(h) = &s.hist {
                match hist.as_mut() {
                    Some(a) => {
                        let _ = a.add(h);
                    }
                    None => hist = Some(h.clone()),
                }
            }
        }
        Window {
            requests: req,
            errors_5xx: err,
            policy_rejections: pol,
            latency: hist,
        }
    }

    /// A configured window in whole seconds, rounded up, at least 1 ("1.5s" covers 2 seconds).
    pub fn window_secs(d: std::time::Duration) -> usize {
        (d.as_millis().div_ceil(1000) as usize).max(1)
    }

    /// How many closed seconds a window of `n` seconds covers now (at least 1, to divide by).
    pub fn covered(&self, n: usize) -> usize {
        n.min(self.seconds.len()).max(1)
    }

    /// A route's figures over the last `n` seconds.
    pub fn route_window(&self, route: &str, n: usize) -> ScopeWindow {
        self.scope_window(n, |s| s.routes.get(route))
    }

    /// An upstream's figures over the last `n` seconds (latency: time to first byte).
    pub fn upstream_window(&self, upstream: &str, n: usize) -> ScopeWindow {
        self.scope_window(n, |s| s.upstreams.get(upstream))
    }

    fn scope_window<'a>(
        &'a self,
        n: usize,
        pick: impl Fn(&'a Second) -> Option<&'a ScopeSecond>,
    ) -> ScopeWindow {
        let mut out = ScopeWindow::default();
        for s in self.seconds.iter().rev().take(n).filter_map(pick) {
            out.requests += s.requests;
            out.errors_5xx += s.errors_5xx;
            if s.latency.is_empty() {
                continue;
            }
            if out.hist.is_none() {
                out.hist = new_hist_u64();
            }
            if let Some(h) = out.hist.as_mut() {
                for &(v, c) in &s.latency {
                    let _ = h.record_n(v, c);
                }
            }
        }
        out
    }

    /// Each worker's utilization averaged over the last `n` seconds (its latest figure before the
    /// first second closes).
    pub fn utilization_window(&self, n: usize) -> Vec<f64> {
        let mut sum = vec![0.0; self.workers.len()];
        let mut count = vec![0usize; self.workers.len()];
        for s in self.seconds.iter().rev().take(n) {
            for (i, u) in s.worker_utilization.iter().enumerate().take(sum.len()) {
                sum[i] += u;
                count[i] += 1;
            }
        }
        sum.iter()
            .zip(&count)
            .zip(&self.workers)
            .map(|((s, &c), w)| if c == 0 { w.utilization } else { s / c as f64 })
            .collect()
    }

    /// Requests each worker finished over the last `n` seconds.
    pub fn worker_requests_window(&self, n: usize) -> Vec<u64> {
        let mut out = vec![0; self.workers.len()];
        for s in self.seconds.iter().rev().take(n) {
            for (i, r) in s.worker_requests.iter().enumerate().take(out.len()) {
                out[i] += r;
            }
        }
        out
    }

    /// Connections accepted over the last `n` seconds, all workers.
    pub fn accepts_window(&self, n: usize) -> u64 {
        self.seconds.iter().rev().take(n).map(|s| s.accepts).sum()
    }

    /// Endpoints that are not healthy (ejected by a worker or down by active checks), of one upstream
    /// or of all.
    pub fn unhealthy_endpoints(&self, upstream: Option<&str>) -> u64 {
        self.configured_endpoints()
            .iter()
            .filter(|(u, _)| upstream.is_none_or(|n| &**u == n))
            .filter(|(u, a)| !self.endpoint_state(u, *a).healthy)
            .count() as u64
    }

    /// Requests in flight to an upstream's endpoints, all workers.
    pub fn upstream_in_flight(&self, upstream: &str) -> u64 {
        self.workers
            .iter()
            .flat_map(|w| &w.gauges.endpoints)
            .filter(|g| &*g.upstream == upstream)
            .map(|g| g.in_flight as u64)
            .sum()
    }

    /// Endpoint health as the workers see it.
    pub fn endpoint_state(&self, upstream: &str, addr: SocketAddr) -> EndpointState {
        let mut in_flight = 0;
        let mut idle = 0;
        let mut ejected = false;
        let mut down = false;
        for w in &self.workers {
            for g in w
                .gauges
                .endpoints
                .iter()
                .filter(|g| &*g.upstream == upstream && g.addr == addr)
            {
                in_flight += g.in_flight as u64;
                idle += g.idle as u64;
                ejected |= g.ejected;
                down |= g.active_down;
            }
        }
        EndpointState {
            in_flight,
            idle,
            healthy: !ejected && !down,
            ejected,
            down,
        }
    }

    /// All (upstream, endpoint) pairs currently configured on any worker.
    pub fn configured_endpoints(&self) -> Vec<(Arc<str>, SocketAddr)> {
        let mut out: Vec<(Arc<str>, SocketAddr)> = Vec::new();
        for w in &self.workers {
            for g in &w.gauges.endpoints {
                if !out.iter().any(|(u, a)| *u == g.upstream && *a == g.addr) {
                    out.push((g.upstream.clone(), g.addr));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(limit: &str, admitted: u64, rejected: u64, keys: u64) -> LimitDelta {
        LimitDelta {
            limit: Arc::from(limit),
            counts: ShardCounts {
                admitted,
                rejected,
                evicted: 1,
                asks: 2,
                grants: 1,
                granted_tokens: 5,
            },
            keys,
        }
    }

    #[test]
    fn limit_counts_add_up_and_keys_are_the_latest_per_worker() {
        let mut s = Store::new(2);
        s.apply_limits(0, &[delta("a", 10, 2, 3), delta("quota:day", 1, 0, 1)]);
        s.apply_limits(1, &[delta("a", 5, 1, 4)]);
        s.apply_limits(0, &[delta("a", 1, 0, 2)]);
        let a = &s.limits["a"];
        assert_eq!((a.counts.admitted, a.counts.rejected), (16, 3));
        assert_eq!((a.counts.evicted, a.counts.asks), (3, 6));
        assert_eq!((a.counts.grants, a.counts.granted_tokens), (3, 15));
        assert_eq!(a.keys_held(), 2 + 4, "worker 0's latest plus worker 1's");
        // Worker 0 stopped reporting the quota shard: it holds none of it now, its counts stay.
        let q = &s.limits["quota:day"];
        assert_eq!((q.counts.admitted, q.keys_held()), (1, 0));
    }

    #[test]
    fn a_reloaded_limit_keeps_its_counters_by_name() {
        let mut s = Store::new(1);
        s.apply_limits(0, &[delta("a", 10, 0, 3)]);
        // The reload changed "a": the old shard's last counts come beside the new shard's.
        s.apply_limits(0, &[delta("a", 4, 1, 0), delta("a", 2, 0, 1)]);
        let a = &s.limits["a"];
        assert_eq!((a.counts.admitted, a.counts.rejected), (16, 1));
        assert_eq!(a.keys_held(), 1);
        // Removed: the counters stay, the keys go.
        s.apply_limits(0, &[]);
        assert_eq!(s.limits["a"].counts.admitted, 16);
        assert_eq!(s.limits["a"].keys_held(), 0);
    }
}
