//! A worker's limit state: one shard per configured rate limit, four for quotas (requests and bytes,
//! per day and per month), the asks waiting to go to the control thread, and the buffer keys are
//! built in. Nothing
//! in it is shared with another thread; no borrow of it outlives a call.

use super::key::{self, KeyInput};
use super::shard::{Check, Shard, ShardCounts};
use super::{Ask, Bucket, Grant, LimitId};
use crate::config::limits::{KeyPart, Limit, Period, Quota};
use crate::metrics::LimitDelta;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Wakes every task waiting for it, each time it is notified.
#[derive(Default)]
pub struct Notify {
    waiters: RefCell<Vec<Waker>>,
    seq: Cell<u64>,
}

impl Notify {
    /// Wakes all current waiters.
    pub fn notify(&self) {
        self.seq.set(self.seq.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves at the next `notify`.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            n: self,
            seq: self.seq.get(),
        }
    }
}

/// Future of `Notify::notified`.
pub struct Notified<'a> {
    n: &'a Notify,
    seq: u64,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.seq.get() != self.seq {
            Poll::Ready(())
        } else {
            self.n.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// How many keys of quotas a worker holds (consumers with a quota that called recently).
const QUOTA_KEYS: usize = 1_000_000;
/// The largest quota lease.
const QUOTA_LEASE: u64 = 1000;
/// The largest and the smallest lease of a bytes quota.
pub const BYTES_LEASE: u64 = 4 << 20;
const BYTES_MIN_LEASE: u64 = 64 << 10;
/// Keys unused for this many ticks (100 ms each) hand back their surplus.
pub const IDLE_TICKS: u32 = 5;

/// What the quota shards are reported as, in `quotas` order.
pub const QUOTA_NAMES: [&str; 4] = [
    "quota:day",
    "quota:month",
    "quota_bytes:day",
    "quota_bytes:month",
];

struct Inner {
    ids: Vec<LimitId>,
    /// The limits' names, like `rates`.
    names: Vec<Arc<str>>,
    rates: Vec<Shard>,
    /// Counts of shards a reload dropped, not reported yet.
    retired: Vec<(Arc<str>, ShardCounts)>,
    quotas: [Shard; 4],
    outbox: Vec<Ask>,
    key: Vec<u8>,
}

/// A worker's limit state.
pub struct Local {
    inner: RefCell<Inner>,
    /// Notified when asks are waiting to be sent.
    pub outbox: Notify,
    /// Notified when grants arrived (a quota check may be waiting for one).
    pub granted: Notify,
    /// What a request of this worker moved on average (bytes in plus out), for reservations.
    bytes_avg: Cell<u64>,
    started: Instant,
}

impl Default for Local {
    fn default() -> Local {
        Local {
            inner: RefCell::new(Inner {
                ids: Vec::new(),
                names: Vec::new(),
                rates: Vec::new(),
                retired: Vec::new(),
                quotas: [
                    Bucket::Quota(Period::Day),
                    Bucket::Quota(Period::Month),
                    Bucket::QuotaBytes(Period::Day),
                    Bucket::QuotaBytes(Period::Month),
                ]
                .map(|b| match b {
                    Bucket::QuotaBytes(_) => {
                        Shard::new(b, QUOTA_KEYS, 0, BYTES_LEASE).with_min_lease(BYTES_MIN_LEASE)
                    }
                    _ => Shard::new(b, QUOTA_KEYS, 0, QUOTA_LEASE),
                }),
                outbox: Vec::new(),
                key: Vec::with_capacity(64),
            }),
            outbox: Notify::default(),
            granted: Notify::default(),
            bytes_avg: Cell::new(0),
            started: Instant::now(),
        }
    }
}

fn quota_shard(p: Period) -> usize {
    match p {
        Period::Day => 0,
        Period::Month => 1,
    }
}

fn bytes_shard(p: Period) -> usize {
    2 + quota_shard(p)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Local {
    /// The coarse clock shards use: tenths of a second since the worker started.
    fn tick(&self) -> u32 {
        (self.started.elapsed().as_millis() / 100) as u32
    }

    /// Takes a config's limits: a limit whose definition is unchanged keeps its shard (and what it
    /// holds); a changed or removed one hands its tokens back.
    pub fn configure(&self, limits: &[Limit], workers: usize) {
        let ids = super::ids(limits);
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let mut old: Vec<Shard> = std::mem::take(&mut inner.rates);
        let mut rates = Vec::with_capacity(limits.len());
        for (l, id) in limits.iter().zip(&ids) {
            let reuse = old
                .iter()
                .position(|s| matches!(s.bucket, Bucket::Rate(o) if o.digest == id.digest));
            let shard = match reuse {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    s.bucket = Bucket::Rate(*id);
                    s
                }
                None => {
                    let p = super::pool::Params::rate(l.per_sec(), l.burst, workers);
                    Shard::new(Bucket::Rate(*id), l.max_keys, p.implicit, p.max_lease)
                }
            };
            rates.push(shard);
        }
        for mut s in old {
            s.drain(&mut inner.outbox);
            // A changed limit keeps its name's counters: what the old shard counted is still
            // reported, under the name it had.
            let name = match s.bucket {
                Bucket::Rate(o) => inner.names.get(o.index as usize).cloned(),
                Bucket::Quota(_) | Bucket::QuotaBytes(_) => None,
            };
            if let Some(name) = name {
                if s.counts != ShardCounts::default() {
                    inner.retired.push((name, s.counts));
                }
            }
        }
        inner.rates = rates;
        inner.ids = ids;
        inner.names = limits.iter().map(|l| Arc::from(l.name.as_str())).collect();
        if !inner.outbox.is_empty() {
            self.outbox.notify();
        }
    }

    /// Spends a token of limit `i` (an index into `Config::limits`) for the request's key.
    pub fn check_rate(&self, i: usize, parts: &[KeyPart], input: &KeyInput<'_>) -> Option<Check> {
        let tick = self.tick();
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        key::build(parts, input, &mut inner.key);
        let before = inner.outbox.len();
        let c = inner
            .rates
            .get_mut(i)?
            .check(&inner.key, 0, tick, 0, &mut inner.outbox);
        if inner.outbox.len() != before {
            self.outbox.notify();
        }
        Some(c)
    }

    /// Spends one request of `consumer`'s quota.
    pub fn check_quota(&self, consumer: &str, q: &Quota, requests: u64) -> Check {
        let tick = self.tick();
        let unix = unix_now();
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let before = inner.outbox.len();
        let c = inner.quotas[quota_shard(q.period)].check(
            consumer.as_bytes(),
            requests,
            tick,
            unix,
            &mut inner.outbox,
        );
        if inner.outbox.len() != before {
            self.outbox.notify();
        }
        c
    }

    /// Reserves `estimate` bytes of `consumer`'s bytes quota (`capacity`) for a request: admitted
    /// while the worker holds any. Returns the check and what was reserved, to be settled with
    /// `settle_bytes` once the request's size is known.
    pub fn reserve_bytes(
        &self,
        consumer: &str,
        period: Period,
        capacity: u64,
        estimate: u64,
    ) -> (Check, u64) {
        let tick = self.tick();
        let unix = unix_now();
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let before = inner.outbox.len();
        let r = inner.quotas[bytes_shard(period)].reserve(
            consumer.as_bytes(),
            capacity,
            estimate,
            tick,
            unix,
            &mut inner.outbox,
        );
        if inner.outbox.len() != before {
            self.outbox.notify();
        }
        r
    }

    /// Settles a bytes reservation with what the request really moved (in plus out).
    pub fn settle_bytes(&self, consumer: &str, period: Period, reserved: u64, used: u64) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let before = inner.outbox.len();
        inner.quotas[bytes_shard(period)].settle(
            consumer.as_bytes(),
            reserved,
            used,
            &mut inner.outbox,
        );
        if inner.outbox.len() != before {
            self.outbox.notify();
        }
        // What a request of this worker moves on average: the next reservations' size.
        let avg = self.bytes_avg.get();
        self.bytes_avg
            .set(if avg == 0 { used } else { (avg * 7 + used) / 8 });
    }

    /// The size the next bytes reservation takes: this worker's recent average request.
    pub fn bytes_estimate(&self) -> u64 {
        self.bytes_avg.get().max(1)
    }

    /// Takes the control thread's grants and recalls.
    pub fn apply(&self, grants: Vec<Grant>, recalls: Vec<(Bucket, Box<[u8]>)>) {
        let tick = self.tick();
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        for g in &grants {
            if let Some(s) = shard(&mut inner.rates, &mut inner.quotas, g.limit) {
                s.grant(g, &mut inner.outbox);
            }
        }
        for (b, k) in &recalls {
            if let Some(s) = shard(&mut inner.rates, &mut inner.quotas, *b) {
                s.recall(k, tick, &mut inner.outbox);
            }
        }
        if !inner.outbox.is_empty() {
            self.outbox.notify();
        }
        if !grants.is_empty() {
            self.granted.notify();
        }
    }

    /// Hands back the surplus of keys gone idle.
    pub fn sweep(&self) {
        let before = self.tick().saturating_sub(IDLE_TICKS);
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        for s in inner.rates.iter_mut() {
            s.sweep(before, &mut inner.outbox);
        }
        if !inner.outbox.is_empty() {
            self.outbox.notify();
        }
    }

    /// Moves what every shard counted since the last call into `out`, with the keys each holds now:
    /// every rate limit by name (even without traffic, so its keys gauge stays current), the quota
    /// shards as `QUOTA_NAMES` once they counted or hold anything. Once a second, off the request
    /// path; the only allocations are here.
    pub fn report(&self, out: &mut Vec<LimitDelta>) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        for (limit, counts) in inner.retired.drain(..) {
            out.push(LimitDelta {
                limit,
                counts,
                keys: 0,
            });
        }
        for (s, name) in inner.rates.iter_mut().zip(&inner.names) {
            out.push(LimitDelta {
                limit: name.clone(),
                counts: std::mem::take(&mut s.counts),
                keys: s.len() as u64,
            });
        }
        for (s, name) in inner.quotas.iter_mut().zip(QUOTA_NAMES) {
            if s.is_empty() && s.counts == ShardCounts::default() {
                continue;
            }
            out.push(LimitDelta {
                limit: Arc::from(name),
                counts: std::mem::take(&mut s.counts),
                keys: s.len() as u64,
            });
        }
    }

    /// The asks to send now.
    pub fn take_outbox(&self) -> Vec<Ask> {
        std::mem::take(&mut self.inner.borrow_mut().outbox)
    }
}

/// The shard a message is for; a grant for a limit this worker no longer runs finds none (the
/// control thread dropped that pool with the reload).
fn shard<'a>(
    rates: &'a mut [Shard],
    quotas: &'a mut [Shard; 4],
    b: Bucket,
) -> Option<&'a mut Shard> {
    match b {
        Bucket::Rate(id) => rates
            .iter_mut()
            .find(|s| matches!(s.bucket, Bucket::Rate(o) if o == id)),
        Bucket::Quota(p) => Some(&mut quotas[quota_shard(p)]),
        Bucket::QuotaBytes(p) => Some(&mut quotas[bytes_shard(p)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::RequestHead;

    fn limits(burst: u64) -> Vec<Limit> {
        let toml = format!(
            "[listeners.a]\nlisten = \"127.0.0.1:0\"\n\
             [limits.a]\nrate = \"1/h\"\nburst = {burst}\nkey = \"consumer\"\n"
        );
        crate::config::parse(&toml, crate::config::Source::Embedded)
            .expect("config")
            .limits
    }

    fn check(l: &Local, parts: &[KeyPart], consumer: &str) -> bool {
        let head = RequestHead::default();
        let input = KeyInput {
            head: &head,
            consumer: Some(consumer),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            route: "r",
        };
        l.check_rate(0, parts, &input).expect("limit 0").admitted
    }

    fn report(l: &Local) -> Vec<(String, ShardCounts, u64)> {
        let mut out = Vec::new();
        l.report(&mut out);
        out.into_iter()
            .map(|d| (d.limit.to_string(), d.counts, d.keys))
            .collect()
    }

    #[test]
    fn reports_are_deltas_by_name_and_survive_a_reload() {
        let l = Local::default();
        let cfg = limits(2);
        l.configure(&cfg, 1);
        let parts = cfg[0].key.clone();
        let seen: Vec<bool> = (0..3).map(|_| check(&l, &parts, "x")).collect();
        assert_eq!(
            seen,
            [true, true, false],
            "one worker holds the whole burst"
        );
        assert!(check(&l, &parts, "y"));

        let r = report(&l);
        assert_eq!(
            r.len(),
            1,
            "quota shards without traffic are left out: {r:?}"
        );
        let (name, c, keys) = &r[0];
        assert_eq!(
            (name.as_str(), c.admitted, c.rejected, *keys),
            ("a", 3, 1, 2)
        );
        assert!(c.asks > 0, "running low asks for a lease");

        let r = report(&l);
        assert_eq!(
            (r[0].1, r[0].2),
            (ShardCounts::default(), 2),
            "deltas, keys a gauge"
        );

        // A changed definition under the same name: the old shard's last counts are still reported.
        assert!(!check(&l, &parts, "x"));
        l.configure(&limits(3), 1);
        let r = report(&l);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].0.as_str(), r[0].1.rejected, r[0].2), ("a", 1, 0));
        assert_eq!(
            (r[1].0.as_str(), r[1].1, r[1].2),
            ("a", ShardCounts::default(), 0)
        );
        assert!(report(&l).iter().all(|d| d.1 == ShardCounts::default()));
    }
}
