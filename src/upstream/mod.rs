//! Upstream groups: endpoint specs compiled once per config (`UpstreamSpec`, Send), and the per-worker
//! runtime state built from them (`Group`: balancer, passive health, circuit breaker, retry budget).
//! Pools live beside the groups, keyed by address, so a reload keeps warm connections.

pub mod balance;
pub mod client;
pub mod gate;
pub mod pool;
pub mod request;
pub mod wire;

use crate::config::{Balancer, Upstream};
use balance::{Ring, SmoothWrr};
use gate::Gate;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An endpoint address with its weight, after DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddr {
    /// Resolved address.
    pub addr: SocketAddr,
    pub weight: u32,
    /// Index of the `endpoints` entry it came from (whose host name TLS verifies, without
    /// `server_name`).
    pub entry: u32,
}

/// Stable id of an endpoint for affinity cookies and hashing: the same on every worker and across reloads.
pub fn endpoint_key(addr: &SocketAddr) -> u64 {
    balance::hash64(addr.to_string().as_bytes())
}

/// An upstream group as compiled for workers.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// Validated settings.
    pub cfg: Upstream,
    /// Resolved endpoints.
    pub endpoints: Vec<EndpointAddr>,
    /// TLS to the endpoints (None: plain TCP). A worker's snapshot holds its own copy
    /// (`Connector::for_worker`).
    pub tls: Option<crate::tls::client::Connector>,
}

impl UpstreamSpec {
    /// The pool key of connections to `addr`, an address of `endpoints` entry `entry`.
    pub fn pool_key(&self, addr: SocketAddr, entry: u32) -> pool::PoolKey {
        (addr, self.tls.as_ref().map_or(0, |t| t.pool_key(entry)))
    }
}

/// Per-worker state of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointState {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The `endpoints` entry it came from (`EndpointAddr::entry`).
    pub entry: u32,
    /// Affinity/hash key.
    pub key: u64,
    /// Requests in flight from this worker.
    pub in_flight: u32,
    /// Consecutive failures seen by this worker.
    pub failures: u32,
    /// Passive ejection end.
    pub ejected_until: Option<Instant>,
    /// Active health check says down (broadcast by the control thread).
    pub active_down: bool,
    /// Operator's runtime state (admin API).
    pub admin: AdminMode,
}

/// Runtime state an operator sets through the admin API, like HAProxy's `set server state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminMode {
    /// Normal.
    #[default]
    Enabled,
    /// No new requests, except those bound to it by an affinity cookie; requests in flight finish.
    Draining,
    /// No requests at all.
    Disabled,
}

impl AdminMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminMode::Enabled => "enabled",
            AdminMode::Draining => "draining",
            AdminMode::Disabled => "disabled",
        }
    }
}

impl EndpointState {
    /// A fresh endpoint: healthy, idle, enabled.
    pub fn new(addr: SocketAddr, weight: u32) -> EndpointState {
        EndpointState {
            addr,
            weight,
            entry: 0,
            key: endpoint_key(&addr),
            in_flight: 0,
            failures: 0,
            ejected_until: None,
            active_down: false,
            admin: AdminMode::Enabled,
        }
    }

    /// A fresh endpoint for `e`.
    pub fn of(e: &EndpointAddr) -> EndpointState {
        EndpointState {
            entry: e.entry,
            ..EndpointState::new(e.addr, e.weight)
        }
    }

    /// Healthy: passes active checks and is not ejected at `now`.
    pub fn healthy(&self, now: Instant) -> bool {
        !self.active_down && self.ejected_until.is_none_or(|t| now >= t)
    }

    /// Eligible for new requests chosen by the balancer at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.admin == AdminMode::Enabled && self.healthy(now)
    }
}

/// The endpoints worker `worker` of `workers` balances over when each worker may use at most
/// `size` of them (`subset_size`); every endpoint when `size` is None or not below the count.
///
/// Why: per-worker pools multiply upstream connections by the worker count; with subsets a group
/// holds at most `size` x `workers` of them. How: the endpoints are ordered by their fixed hash
/// (`endpoint_key`), so the result depends neither on file nor DNS answer order and neighbouring
/// addresses (one rack) spread over workers; worker k takes `size` consecutive ones starting at
/// `k * n / workers`, wrapping. Starts are at most `ceil(n / workers)` apart, so whenever
/// `size * workers >= n` every endpoint is in some worker's subset. Same inputs, same subset,
/// on every worker and every run.
pub fn subset(
    list: &[EndpointAddr],
    size: Option<usize>,
    worker: usize,
    workers: usize,
) -> Vec<EndpointAddr> {
    let n = list.len();
    let size = match size {
        Some(s) if s < n => s,
        _ => return list.to_vec(),
    };
    let workers = workers.max(1);
    let mut order: Vec<(u64, &EndpointAddr)> =
        list.iter().map(|e| (endpoint_key(&e.addr), e)).collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.addr.cmp(&b.1.addr)));
    let start = (worker % workers) * n / workers;
    (0..size)
        .map(|i| order[(start + i) % n].1.clone())
        .collect()
}

/// Per-worker runtime state of one upstream group.
#[derive(Debug)]
pub struct Group {
    /// Settings (shared by value from the compiled snapshot).
    pub cfg: Upstream,
    pub eps: Vec<EndpointState>,
    rr: SmoothWrr,
    ring: Ring,
    rng: u64,
    pub gate: Gate,
    budget: balance::RetryBudget,
    worker: usize,
    workers: usize,
}

impl Group {
    /// Builds worker state; `worker`/`workers` stagger round robin and split limits.
    pub fn new(spec: &UpstreamSpec, worker: usize, workers: usize) -> Group {
        let eps: Vec<EndpointState> =
            subset(&spec.endpoints, spec.cfg.subset_size, worker, workers)
                .iter()
                .map(EndpointState::of)
                .collect();
        let per = |v: u32| v.div_ceil(workers.max(1) as u32).max(1);
        let ring = Ring::new(&eps);
        let mut rr = SmoothWrr::new(eps.len());
        // Stagger workers so they do not all start on endpoint 0.
        for _ in 0..worker % eps.len().max(1) {
            rr.next(&eps, Instant::now());
        }
        Group {
            gate: Gate::new(
                per(spec.cfg.max_connections),
                spec.cfg.max_pending.div_ceil(workers.max(1) as u32),
            ),
            budget: balance::RetryBudget::new(
                spec.cfg.retry_ratio,
                spec.cfg.retry_min_per_second as f64 / workers.max(1) as f64,
            ),
            cfg: spec.cfg.clone(),
            eps,
            rr,
            ring,
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((worker as u64 + 1) << 32),
            worker,
            workers,
        }
    }

    /// Replaces the endpoint set (DNS change), keeping per-endpoint state where the address is unchanged.
    /// With `subset_size`, this worker's subset is taken again from the new list.
    pub fn set_endpoints(&mut self, list: &[EndpointAddr]) {
        let old = std::mem::take(&mut self.eps);
        self.eps = subset(list, self.cfg.subset_size, self.worker, self.workers)
            .iter()
            .map(|e| match old.iter().find(|o| o.addr == e.addr) {
                Some(o) => EndpointState {
                    weight: e.weight,
                    entry: e.entry,
                    ..o.clone()
                },
                None => EndpointState::of(e),
            })
            .collect();
        self.rr = SmoothWrr::new(self.eps.len());
        self.ring = Ring::new(&self.eps);
    }

    /// Picks an endpoint index; `hash` is the consistent-hash key when the balancer uses one,
    /// `avoid` an endpoint that just failed (retries go elsewhere when possible).
    pub fn pick(&mut self, hash: Option<u64>, avoid: Option<usize>, now: Instant) -> Option<usize> {
        let first = match &self.cfg.balancer {
            Balancer::RoundRobin => self.rr.next_avoiding(&self.eps, now, avoid),
            Balancer::LeastRequest => balance::p2c(&self.eps, now, &mut self.rng, avoid),
            Balancer::ConsistentHash(_) => match hash {
                Some(h) => self.ring.pick(h, &self.eps, now, avoid),
                None => self.rr.next_avoiding(&self.eps, now, avoid),
            },
        };
        first.or_else(|| {
            if avoid.is_some() {
                self.pick(hash, None, now)
            } else {
                None
            }
        })
    }

    /// Index of the endpoint with this affinity key, if it is available.
    pub fn by_key(&self, key: u64, now: Instant) -> Option<usize> {
        self.eps
            .iter()
            .position(|e| e.key == key && e.admin != AdminMode::Disabled && e.healthy(now))
    }

    /// Records a successful exchange with endpoint `i`.
    pub fn success(&mut self, i: usize) {
        if let Some(e) = self.eps.get_mut(i) {
            e.failures = 0;
            e.ejected_until = None;
        }
    }

    /// Records a failure; returns true when this failure ejected the endpoint.
    pub fn failure(&mut self, i: usize, now: Instant) -> bool {
        let max = self.cfg.max_failures;
        let cooldown = self.cfg.cooldown;
        let Some(e) = self.eps.get_mut(i) else {
            return false;
        };
        e.failures = e.failures.saturating_add(1);
        if max > 0 && e.failures >= max && e.ejected_until.is_none_or(|t| now >= t) {
            e.ejected_until = Some(now + cooldown);
            // One more failure after the cool-down ejects again at once.
            e.failures = max - 1;
            return true;
        }
        false
    }

    /// Counts a request toward the retry budget.
    pub fn note_request(&mut self, now: Instant) {
        self.budget.deposit(now);
    }

    /// Takes a retry token if the budget allows.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.budget.withdraw(now)
    }

    /// Applies an operator's change to endpoint `addr`; false if it is not in this group.
    pub fn set_admin(
        &mut self,
        addr: SocketAddr,
        mode: Option<AdminMode>,
        weight: Option<u32>,
    ) -> bool {
        let mut found = false;
        for e in self.eps.iter_mut().filter(|e| e.addr == addr) {
            found = true;
            if let Some(m) = mode {
                e.admin = m;
            }
            if let Some(w) = weight {
                e.weight = w;
            }
        }
        if found && weight.is_some() {
            self.rr = SmoothWrr::new(self.eps.len());
            self.ring = Ring::new(&self.eps);
        }
        found
    }

    /// Applies an active health verdict for `addr`.
    pub fn set_active(&mut self, addr: SocketAddr, healthy: bool) {
        for e in self.eps.iter_mut().filter(|e| e.addr == addr) {
            e.active_down = !healthy;
            if healthy {
                e.failures = 0;
                e.ejected_until = None;
            }
        }
    }

    /// Cool-down to advertise when nothing is healthy.
    pub fn cooldown(&self) -> Duration {
        self.cfg.cooldown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn list(n: usize) -> Vec<EndpointAddr> {
        (0..n)
            .map(|i| EndpointAddr {
                addr: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8000)),
                weight: 1,
                entry: 0,
            })
            .collect()
    }

    fn addrs(v: &[EndpointAddr]) -> Vec<SocketAddr> {
        v.iter().map(|e| e.addr).collect()
    }

    #[test]
    fn no_subset_keeps_every_endpoint_in_order() {
        let l = list(10);
        assert_eq!(subset(&l, None, 1, 4), l);
        assert_eq!(subset(&l, Some(10), 3, 4), l);
        assert_eq!(subset(&l, Some(99), 0, 1), l);
    }

    #[test]
    fn subsets_cover_every_endpoint_when_size_times_workers_suffices() {
        for n in [1usize, 2, 7, 16, 63, 64, 65, 100, 257] {
            for workers in 1..=12usize {
                for size in (1..=n.min(12)).chain([n / 3, n - 1]).filter(|&s| s >= 1) {
                    let mut seen = HashSet::new();
                    for k in 0..workers {
                        let s = subset(&list(n), Some(size), k, workers);
                        assert_eq!(s.len(), size.min(n), "n={n} w={workers} size={size}");
                        let distinct: HashSet<_> = s.iter().map(|e| e.addr).collect();
                        assert_eq!(distinct.len(), s.len(), "duplicates in a subset");
                        seen.extend(distinct);
                    }
                    if size * workers >= n {
                        assert_eq!(seen.len(), n, "n={n} w={workers} size={size}: not covered");
                    }
                }
            }
        }
    }

    #[test]
    fn subsets_spread_load_evenly() {
        // 64 endpoints, 6 workers, 16 each: every endpoint in one or two subsets.
        let mut uses = std::collections::HashMap::new();
        for k in 0..6 {
            for e in subset(&list(64), Some(16), k, 6) {
                *uses.entry(e.addr).or_insert(0) += 1;
            }
        }
        assert_eq!(uses.len(), 64);
        assert!(uses.values().all(|&c| (1..=2).contains(&c)), "{uses:?}");
    }

    #[test]
    fn subset_is_deterministic_and_independent_of_list_order() {
        let l = list(64);
        let mut rev = l.clone();
        rev.reverse();
        for k in 0..4 {
            let a = addrs(&subset(&l, Some(8), k, 4));
            assert_eq!(a, addrs(&subset(&l, Some(8), k, 4)));
            assert_eq!(a, addrs(&subset(&rev, Some(8), k, 4)));
        }
        // Different workers get different subsets.
        assert_ne!(
            addrs(&subset(&l, Some(8), 0, 4)),
            addrs(&subset(&l, Some(8), 1, 4))
        );
    }

    #[test]
    fn one_new_endpoint_keeps_most_of_a_subset() {
        let l = list(64);
        let mut more = l.clone();
        more.extend(list(65).pop());
        for k in 0..4 {
            let a: HashSet<_> = addrs(&subset(&l, Some(16), k, 4)).into_iter().collect();
            let b: HashSet<_> = addrs(&subset(&more, Some(16), k, 4)).into_iter().collect();
            assert!(
                a.intersection(&b).count() >= 13,
                "worker {k}: {a:?} vs {b:?}"
            );
        }
    }

    fn spec(n: usize, size: Option<usize>) -> UpstreamSpec {
        let toml = format!(
            "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n{}",
            size.map(|s| format!("subset_size = {s}\n")).unwrap_or_default()
        );
        let cfg = crate::config::parse(&toml, crate::config::Source::Embedded).unwrap();
        UpstreamSpec {
            cfg: cfg.upstreams[0].clone(),
            endpoints: list(n),
            tls: None,
        }
    }

    #[test]
    fn group_balances_over_its_subset_only() {
        let s = spec(64, Some(8));
        let now = Instant::now();
        for k in 0..2 {
            let mut g = Group::new(&s, k, 2);
            let want: HashSet<_> = addrs(&subset(&s.endpoints, Some(8), k, 2))
                .into_iter()
                .collect();
            let got: HashSet<_> = (0..100)
                .map(|_| {
                    let i = g.pick(None, None, now).unwrap();
                    g.eps[i].addr
                })
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(Group::new(&spec(64, None), 0, 2).eps.len(), 64);
    }

    #[test]
    fn set_endpoints_resubsets_and_keeps_state() {
        let s = spec(64, Some(8));
        let mut g = Group::new(&s, 1, 2);
        let now = Instant::now();
        let kept = g.eps[0].addr;
        g.failure(0, now);
        // Same set in another order (a DNS answer): same subset, state kept.
        let mut rev = s.endpoints.clone();
        rev.reverse();
        g.set_endpoints(&rev);
        let now_addrs: Vec<SocketAddr> = g.eps.iter().map(|e| e.addr).collect();
        assert_eq!(now_addrs, addrs(&subset(&s.endpoints, Some(8), 1, 2)));
        let e = g.eps.iter().find(|e| e.addr == kept).unwrap();
        assert_eq!(e.failures, 1);
        // Shrinks below the subset size: every endpoint.
        g.set_endpoints(&list(5));
        assert_eq!(g.eps.len(), 5);
    }
}
