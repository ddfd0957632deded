//! Upstream groups: endpoint specs compiled once per config (`UpstreamSpec`, Send), and the per-worker
//! runtime state built from them (`Group`: balancer, passive health, circuit breaker, retry budget).
//! Pools live beside the groups, keyed by address, so a reload keeps warm connections.

pub mod balance;
pub mod gate;
pub mod pool;

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
    /// Weight.
    pub weight: u32,
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
}

/// Per-worker state of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointState {
    /// Address.
    pub addr: SocketAddr,
    /// Weight.
    pub weight: u32,
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
}

impl EndpointState {
    /// Eligible for new requests at `now`.
    pub fn available(&self, now: Instant) -> bool {
        !self.active_down && self.ejected_until.is_none_or(|t| now >= t)
    }
}

/// Per-worker runtime state of one upstream group.
#[derive(Debug)]
pub struct Group {
    /// Settings (shared by value from the compiled snapshot).
    pub cfg: Upstream,
    /// Endpoints.
    pub eps: Vec<EndpointState>,
    rr: SmoothWrr,
    ring: Ring,
    rng: u64,
    /// Circuit breaker.
    pub gate: Gate,
    budget: balance::RetryBudget,
}

impl Group {
    /// Builds worker state; `worker`/`workers` stagger round robin and split limits.
    pub fn new(spec: &UpstreamSpec, worker: usize, workers: usize) -> Group {
        let eps: Vec<EndpointState> = spec
            .endpoints
            .iter()
            .map(|e| EndpointState {
                addr: e.addr,
                weight: e.weight,
                key: endpoint_key(&e.addr),
                in_flight: 0,
                failures: 0,
                ejected_until: None,
                active_down: false,
            })
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
        }
    }

    /// Replaces the endpoint set (DNS change), keeping per-endpoint state where the address is unchanged.
    pub fn set_endpoints(&mut self, list: &[EndpointAddr]) {
        let old = std::mem::take(&mut self.eps);
        self.eps = list
            .iter()
            .map(|e| match old.iter().find(|o| o.addr == e.addr) {
                Some(o) => EndpointState {
                    weight: e.weight,
                    ..o.clone()
                },
                None => EndpointState {
                    addr: e.addr,
                    weight: e.weight,
                    key: endpoint_key(&e.addr),
                    in_flight: 0,
                    failures: 0,
                    ejected_until: None,
                    active_down: false,
                },
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
            .position(|e| e.key == key && e.available(now))
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
