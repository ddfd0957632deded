//! The control thread's side: per bucket and key, the pool level and what each worker holds as far
//! as the pool knows. Workers' asks are answered from the level; an ask that finds it empty waits
//! (`pending`) and is answered as the rate refills it, and the workers holding the key's tokens are
//! asked to hand them back (a recall) so none sit unused where the traffic is not.
//!
//! Invariant (what makes the sum across workers exact): level + Σ held ≤ capacity, and the level
//! rises by `rate` per second at most. A worker's real holding is never above what the pool
//! counts for it: it only spends between messages.

use super::{Ask, Bucket, Grant};
use std::time::Instant;

/// The shape of one bucket kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Tokens per second (0 for a quota).
    pub rate: f64,
    /// Level plus holdings never exceed this.
    pub capacity: u64,
    /// What a worker holds of a key it never asked about.
    pub implicit: u64,
    pub workers: usize,
    /// The largest grant.
    pub max_lease: u64,
}

impl Params {
    /// A rate limit's: each worker starts with an equal share of the burst, and no lease is larger
    /// than half a worker's share, so the pool keeps room to refill into.
    pub fn rate(rate: f64, burst: u64, workers: usize) -> Params {
        let workers = workers.max(1);
        let implicit = burst / workers as u64;
        Params {
            rate,
            capacity: burst,
            implicit,
            workers,
            max_lease: (burst / (2 * workers as u64)).max(1),
        }
    }

    /// A quota's: nothing held without asking; grants shrink toward the end.
    pub fn quota(requests: u64, workers: usize) -> Params {
        Params {
            rate: 0.0,
            capacity: requests,
            implicit: 0,
            workers: workers.max(1),
            max_lease: 1000,
        }
    }
}

/// A worker's ask that the level could not answer yet.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    epoch: u32,
    want: u64,
}

/// One key's pool.
#[derive(Debug, Clone)]
pub struct Pool {
    level: f64,
    at: Instant,
    /// What each worker holds as far as the pool knows; `None`: the implicit share.
    held: Vec<Option<u64>>,
    waiting: Vec<Option<Waiting>>,
    recalled: Option<Instant>,
}

/// Recalls for one key go out at most this often.
const RECALL_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// What the pool tells workers after a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replies {
    /// (worker, grant).
    pub grants: Vec<(usize, Grant)>,
    /// (worker, bucket, key) to hand back what they hold.
    pub recalls: Vec<(usize, Bucket, Box<[u8]>)>,
}

impl Pool {
    /// A key no worker has asked about: every worker holds its implicit share, the pool the rest.
    pub fn new(p: &Params, now: Instant) -> Pool {
        Pool {
            level: (p.capacity - p.implicit * p.workers as u64) as f64,
            at: now,
            held: vec![None; p.workers],
            waiting: vec![None; p.workers],
            recalled: None,
        }
    }

    /// What workers hold as far as the pool knows.
    pub fn held_sum(&self, p: &Params) -> u64 {
        self.held_total(p)
    }

    fn held_total(&self, p: &Params) -> u64 {
        self.held.iter().map(|h| h.unwrap_or(p.implicit)).sum()
    }

    fn refill(&mut self, p: &Params, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let room = p.capacity as f64 - self.held_total(p) as f64;
        if self.level < room {
            self.level = (self.level + p.rate * dt).min(room);
        }
    }

    /// Tokens the pool has now.
    pub fn level(&mut self, p: &Params, now: Instant) -> f64 {
        self.refill(p, now);
        self.level
    }

    /// Sets the level outright (a quota restored from the ledger, or a new period).
    pub fn set_level(&mut self, level: f64) {
        self.level = level;
    }

    /// Nothing distinguishes this pool from a fresh one: it can be dropped.
    pub fn idle(&mut self, p: &Params, now: Instant) -> bool {
        self.refill(p, now);
        self.held
            .iter()
            .all(|h| h.unwrap_or(p.implicit) == p.implicit)
            && self.waiting.iter().all(Option::is_none)
            && self.level >= (p.capacity - p.implicit * p.workers as u64) as f64
    }

    /// Takes worker `w`'s message; grants and recalls go into `out`. `exhausted_until` is what a
    /// quota's refusal carries (the period's end).
    pub fn ask(
        &mut self,
        p: &Params,
        w: usize,
        a: &Ask,
        now: Instant,
        exhausted_until: Option<u64>,
        out: &mut Replies,
    ) {
        if w >= self.held.len() {
            return;
        }
        self.refill(p, now);
        self.level += a.given as f64;
        self.held[w] = Some(a.holding);
        if a.want > 0 {
            self.waiting[w] = Some(Waiting {
                epoch: a.epoch,
                want: a.want,
            });
        } else if self.waiting[w].is_some_and(|x| x.epoch != a.epoch) {
            self.waiting[w] = None;
        }
        self.serve(p, a.limit, &a.key, now, exhausted_until, out);
    }

    /// Answers the asks waiting, as far as the level goes; recalls tokens when it does not.
    pub fn serve(
        &mut self,
        p: &Params,
        bucket: Bucket,
        key: &[u8],
        now: Instant,
        exhausted_until: Option<u64>,
        out: &mut Replies,
    ) {
        self.refill(p, now);
        let mut starved = false;
        for w in 0..self.waiting.len() {
            let Some(x) = self.waiting[w] else { continue };
            // Near a quota's end, grants shrink so no worker sits on the last requests.
            let share = if p.rate == 0.0 {
                ((self.level / (4 * p.workers) as f64).floor() as u64).max(1)
            } else {
                p.max_lease
            };
            let n = x
                .want
                .min(share)
                .min(p.max_lease)
                .min(self.level.max(0.0) as u64);
            if n >= 1 {
                self.level -= n as f64;
                let held = self.held[w].unwrap_or(p.implicit) + n;
                self.held[w] = Some(held);
                self.waiting[w] = None;
                let left = self.level.max(0.0) as u64;
                out.grants
                    .push((w, grant(bucket, key, x.epoch, n, None, left)));
                continue;
            }
            let others_hold = self
                .held
                .iter()
                .enumerate()
                .any(|(o, h)| o != w && h.unwrap_or(p.implicit) > 0);
            if p.rate == 0.0 && !others_hold {
                // A quota with nothing left anywhere: refused until the period ends.
                self.waiting[w] = None;
                out.grants
                    .push((w, grant(bucket, key, x.epoch, 0, exhausted_until, 0)));
            } else if others_hold {
                starved = true;
            }
        }
        if starved
            && self
                .recalled
                .is_none_or(|t| now.duration_since(t) >= RECALL_EVERY)
        {
            self.recalled = Some(now);
            for (o, h) in self.held.iter().enumerate() {
                let waiting = self.waiting[o].is_some();
                if !waiting && h.unwrap_or(p.implicit) > 0 {
                    out.recalls.push((o, bucket, key.into()));
                }
            }
        }
    }

    /// Some worker's ask waits for the level.
    pub fn has_waiting(&self) -> bool {
        self.waiting.iter().any(Option::is_some)
    }
}

fn grant(
    limit: Bucket,
    key: &[u8],
    epoch: u32,
    tokens: u64,
    exhausted_until: Option<u64>,
    left: u64,
) -> Grant {
    Grant {
        limit,
        key: key.into(),
        epoch,
        tokens,
        exhausted_until,
        left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::LimitId;
    use std::time::Duration;

    const B: Bucket = Bucket::Rate(LimitId {
        index: 0,
        digest: 0,
    });

    fn ask(epoch: u32, holding: u64, given: i64, want: u64) -> Ask {
        Ask {
            limit: B,
            key: b"k"[..].into(),
            epoch,
            holding,
            given,
            want,
            used: 0,
            capacity: 0,
        }
    }

    /// Simulates two workers spending a key's tokens as fast as they are granted, and checks the
    /// sum admitted against rate × time + burst.
    #[test]
    fn the_sum_granted_never_exceeds_rate_times_time_plus_burst() {
        let p = Params::rate(100.0, 20, 2);
        let t0 = Instant::now();
        let mut pool = Pool::new(&p, t0);
        // Both workers spend their implicit shares at once.
        let mut admitted = 2 * p.implicit;
        let mut holding = [0u64; 2];
        let mut out = Replies::default();
        for ms in 0..5000u64 {
            let now = t0 + Duration::from_millis(ms);
            for (w, h) in holding.iter_mut().enumerate() {
                admitted += *h;
                *h = 0;
                pool.ask(&p, w, &ask(1, 0, 0, p.max_lease), now, None, &mut out);
            }
            for (w, g) in out.grants.drain(..) {
                holding[w] += g.tokens;
            }
            out.recalls.clear();
            let limit = 100.0 * (ms as f64 / 1000.0) + 20.0;
            assert!(
                admitted as f64 <= limit + 1e-6,
                "at {ms} ms: {admitted} > {limit}"
            );
        }
        // And nearly all of it was used: within 2% of the rate over the 5 s.
        assert!(admitted as f64 >= 0.98 * 500.0, "{admitted}");
    }

    #[test]
    fn a_starved_ask_recalls_the_other_workers_share() {
        let p = Params::rate(1.0, 10, 2);
        let t0 = Instant::now();
        let mut pool = Pool::new(&p, t0);
        let mut out = Replies::default();
        // Worker 0 spent its share and asks; the level is empty, worker 1 holds its share.
        pool.ask(&p, 0, &ask(1, 0, 0, 2), t0, None, &mut out);
        assert!(out.grants.is_empty());
        assert_eq!(out.recalls.len(), 1);
        assert_eq!(out.recalls[0].0, 1);
        // Worker 1 hands its 5 back: worker 0's ask is answered.
        pool.ask(&p, 1, &ask(7, 0, 5, 0), t0, None, &mut out);
        assert_eq!(out.grants.len(), 1);
        assert_eq!(out.grants[0].1.tokens, 2);
    }

    #[test]
    fn a_quota_grants_exactly_its_count_then_refuses() {
        let p = Params::quota(10, 2);
        let t0 = Instant::now();
        let mut pool = Pool::new(&p, t0);
        let mut got = 0;
        let mut out = Replies::default();
        for round in 0..20 {
            let w = round % 2;
            pool.ask(&p, w, &ask(1, 0, 0, 1000), t0, Some(99), &mut out);
            for (_, g) in out.grants.drain(..) {
                got += g.tokens;
                if g.tokens == 0 {
                    assert_eq!(g.exhausted_until, Some(99));
                }
            }
            out.recalls.clear();
        }
        assert_eq!(got, 10);
    }
}
