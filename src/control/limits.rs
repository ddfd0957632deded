//! The limit pools on the control thread: workers' asks come in (`ToControl::Limits`), grants and
//! recalls go out (`ToWorker::Limits`), batched per worker. Asks the level cannot answer wait here
//! and are answered as the rate refills it, a few milliseconds apart; workers never wait for that,
//! they refuse from what they hold meanwhile (a quota check waits, see `limit`).

use super::Broadcast;
use crate::config::limits::Period;
use crate::limit::local::Notify;
use crate::limit::pool::{Params, Pool, Replies};
use crate::limit::{period, Ask, Bucket, LimitId};
use crate::msg::ToWorker;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a pool is kept per: the limit (by definition digest) or the quota period, and the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    kind: Kind,
    key: Box<[u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rate(u64),
    Quota(Period),
    QuotaBytes(Period),
}

impl Kind {
    /// A quota's period (requests or bytes).
    fn period(self) -> Option<Period> {
        match self {
            Kind::Rate(_) => None,
            Kind::Quota(p) | Kind::QuotaBytes(p) => Some(p),
        }
    }
}

struct Entry {
    pool: Pool,
    params: Params,
    bucket: Bucket,
    /// A quota's period start (Unix seconds).
    period_start: u64,
}

/// Lease traffic since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaseCounts {
    /// Messages from workers about a key (asks, hand-backs, reports).
    pub asks: u64,
    pub grants: u64,
    pub granted_tokens: u64,
    pub recalls: u64,
    /// Asks about a limit the config no longer has.
    pub stale: u64,
}

/// How much of a consumer's quota the ledger says was used in the period starting at the given
/// second (admitted requests, or bytes when the flag is set), read when its pool is made (so a quota
/// holds across restarts).
pub type QuotaUsed = Box<dyn Fn(&str, Period, u64, bool) -> u64>;

/// Every pool of this instance.
pub struct Pools {
    workers: usize,
    rates: HashMap<u64, (LimitId, Params)>,
    pools: HashMap<PoolKey, Entry, ahash::RandomState>,
    waiting: HashSet<PoolKey, ahash::RandomState>,
    pub counts: LeaseCounts,
    used: Option<QuotaUsed>,
}

/// Rate pools are dropped when idle (back to a fresh key's state). Past this many, the sweep also
/// drops rate pools in no particular order: a dropped pool's debt is forgotten, so its key may pass
/// up to one burst more. Quota pools are never dropped.
const MAX_POOLS: usize = 4_000_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pools {
    pub fn new(workers: usize) -> Pools {
        Pools {
            workers: workers.max(1),
            rates: HashMap::new(),
            pools: HashMap::default(),
            waiting: HashSet::default(),
            counts: LeaseCounts::default(),
            used: None,
        }
    }

    /// Where a new quota pool reads how much of its period was used.
    pub fn set_quota_used(&mut self, f: QuotaUsed) {
        self.used = Some(f);
    }

    /// Takes a config's limits; pools of limits it no longer has (or changed) are dropped.
    pub fn configure(&mut self, limits: &[crate::config::limits::Limit]) {
        let ids = crate::limit::ids(limits);
        self.rates = limits
            .iter()
            .zip(ids)
            .map(|(l, id)| {
                (
                    id.digest,
                    (id, Params::rate(l.per_sec(), l.burst, self.workers)),
                )
            })
            .collect();
        let rates = &self.rates;
        self.pools.retain(|k, _| match k.kind {
            Kind::Rate(d) => rates.contains_key(&d),
            Kind::Quota(_) | Kind::QuotaBytes(_) => true,
        });
        self.waiting.retain(|k| match k.kind {
            Kind::Rate(d) => rates.contains_key(&d),
            Kind::Quota(_) | Kind::QuotaBytes(_) => true,
        });
    }

    /// Takes one worker's asks.
    pub fn ask(&mut self, worker: usize, asks: Vec<Ask>, now: Instant, out: &mut Replies) {
        let unix = unix_now();
        for a in asks {
            self.counts.asks += 1;
            let kind = match a.limit {
                Bucket::Rate(id) => Kind::Rate(id.digest),
                Bucket::Quota(p) => Kind::Quota(p),
                Bucket::QuotaBytes(p) => Kind::QuotaBytes(p),
            };
            let pk = PoolKey {
                kind,
                key: a.key.clone(),
            };
            let Some(entry) = self.entry(&pk, &a, now, unix) else {
                self.counts.stale += 1;
                continue;
            };
            let until = pk.kind.period().map(|p| period::bounds(p, unix).1);
            entry.pool.ask(&entry.params, worker, &a, now, until, out);
            if entry.pool.has_waiting() {
                self.waiting.insert(pk);
            }
        }
    }

    fn entry(&mut self, pk: &PoolKey, a: &Ask, now: Instant, unix: u64) -> Option<&mut Entry> {
        let workers = self.workers;
        if !self.pools.contains_key(pk) {
            let (params, bucket, start, used) = match pk.kind {
                Kind::Rate(d) => {
                    let (id, p) = self.rates.get(&d)?;
                    (*p, Bucket::Rate(*id), 0, 0)
                }
                Kind::Quota(per) | Kind::QuotaBytes(per) => {
                    if a.capacity == 0 {
                        return None;
                    }
                    let bytes = matches!(pk.kind, Kind::QuotaBytes(_));
                    let start = period::bounds(per, unix).0;
                    let name = String::from_utf8_lossy(&a.key);
                    let used = self
                        .used
                        .as_ref()
                        .map_or(0, |f| f(&name, per, start, bytes));
                    (
                        quota_params(pk.kind, a.capacity, workers),
                        a.limit,
                        start,
                        used,
                    )
                }
            };
            let mut pool = Pool::new(&params, now);
            if used > 0 {
                pool.set_level(params.capacity.saturating_sub(used) as f64);
            }
            self.pools.insert(
                pk.clone(),
                Entry {
                    pool,
                    params,
                    bucket,
                    period_start: start,
                },
            );
        }
        let e = self.pools.get_mut(pk)?;
        if let Some(per) = pk.kind.period() {
            let start = period::bounds(per, unix).0;
            let level = e.pool.level(&e.params, now);
            if start != e.period_start {
                // A new period: the whole count again, less what workers still hold (they spend it
                // in this period).
                e.period_start = start;
                let fresh = a.capacity.max(e.params.capacity).max(1);
                e.params = quota_params(pk.kind, fresh, workers);
                let held = e.pool.held_sum(&e.params);
                e.pool.set_level(fresh.saturating_sub(held) as f64);
            } else if a.capacity > 0 && a.capacity != e.params.capacity {
                // The consumer's quota changed (a reload, a plan change): the difference applies.
                let diff = a.capacity as f64 - e.params.capacity as f64;
                e.params = quota_params(pk.kind, a.capacity, workers);
                e.pool.set_level(level + diff);
            }
        }
        Some(e)
    }

    /// Answers waiting asks from what the rate refilled.
    pub fn serve_waiting(&mut self, now: Instant, out: &mut Replies) {
        let unix = unix_now();
        let pools = &mut self.pools;
        self.waiting.retain(|pk| {
            let Some(e) = pools.get_mut(pk) else {
                return false;
            };
            let until = pk.kind.period().map(|p| period::bounds(p, unix).1);
            e.pool.serve(&e.params, e.bucket, &pk.key, now, until, out);
            e.pool.has_waiting()
        });
    }

    /// Pools held now (rate pools of keys with traffic lately, quota pools of consumers).
    pub fn held(&self) -> usize {
        self.pools.len()
    }

    /// Some ask waits.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Drops rate pools that are back to a fresh key's state.
    pub fn sweep(&mut self, now: Instant) {
        self.pools.retain(|k, e| match k.kind {
            Kind::Rate(_) => !e.pool.idle(&e.params, now),
            Kind::Quota(_) | Kind::QuotaBytes(_) => true,
        });
        if self.pools.len() > MAX_POOLS {
            tracing::warn!(
                pools = self.pools.len(),
                "more limit pools than the bound; dropping rate pools"
            );
            let mut over = self.pools.len() - MAX_POOLS;
            self.pools.retain(|k, _| {
                if over > 0 && matches!(k.kind, Kind::Rate(_)) {
                    over -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

/// A quota pool's shape: a bytes quota leases in larger pieces than a requests quota.
fn quota_params(kind: Kind, capacity: u64, workers: usize) -> Params {
    let mut p = Params::quota(capacity, workers);
    if matches!(kind, Kind::QuotaBytes(_)) {
        p.max_lease = crate::limit::local::BYTES_LEASE;
    }
    p
}

/// Sends what the pools answered, one message per worker.
pub fn send(links: &Broadcast, out: &mut Replies, counts: &mut LeaseCounts) {
    if out.grants.is_empty() && out.recalls.is_empty() {
        return;
    }
    let mut per: Vec<(Vec<crate::limit::Grant>, Vec<(Bucket, Box<[u8]>)>)> =
        (0..links.len()).map(|_| Default::default()).collect();
    for (w, g) in out.grants.drain(..) {
        counts.grants += 1;
        counts.granted_tokens += g.tokens;
        if let Some(p) = per.get_mut(w) {
            p.0.push(g);
        }
    }
    for (w, b, k) in out.recalls.drain(..) {
        counts.recalls += 1;
        if let Some(p) = per.get_mut(w) {
            p.1.push((b, k));
        }
    }
    for (w, (grants, recalls)) in per.into_iter().enumerate() {
        if !grants.is_empty() || !recalls.is_empty() {
            links.to(w, ToWorker::Limits { grants, recalls });
        }
    }
}

/// How often waiting asks are looked at again.
const SERVE_EVERY: Duration = Duration::from_millis(2);

/// Answers waiting asks as the rate refills the pools, and drops idle pools. `wake` is notified
/// when an ask starts waiting; with none waiting, the loop sleeps.
pub async fn run(pools: Rc<RefCell<Pools>>, links: Rc<Broadcast>, wake: Rc<Notify>) {
    let mut last_sweep = Instant::now();
    loop {
        let waiting = pools.borrow().has_waiting();
        if waiting {
            monoio::time::sleep(SERVE_EVERY).await;
        } else {
            let woken = wake.notified();
            monoio::select! {
                _ = woken => {}
                _ = monoio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let now = Instant::now();
        let mut p = pools.borrow_mut();
        if p.has_waiting() {
            let mut out = Replies::default();
            p.serve_waiting(now, &mut out);
            send(&links, &mut out, &mut p.counts);
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            last_sweep = now;
            p.sweep(now);
        }
    }
}
