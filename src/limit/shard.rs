//! One worker's side of one bucket kind (a rate limit, or the quotas): per key, the tokens this
//! worker may spend without asking. Bounded: at `max_keys` a new key evicts the least recently used
//! of a few entries looked at from a rotating position (idle keys go first), and what the evicted
//! entry held goes back to the pool.

use super::{Ask, Bucket, Grant};
use indexmap::IndexMap;

/// How many entries an insertion into a full table looks at to pick the one to evict.
const EVICT_SCAN: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Slot {
    holding: u64,
    /// Tokens the next ask wants.
    want: u32,
    /// Spent since the last ask.
    used: u32,
    epoch: u32,
    /// `now` of the last check, for eviction and idle hand-back.
    last_used: u32,
    /// An ask is out: no second one until its grant arrives.
    pending: bool,
    /// The pool has heard of this entry (else it counts the implicit share as held here).
    talked: bool,
    /// Refused without asking until this Unix second (a quota with nothing left).
    exhausted_until: u64,
    /// What the pool said it had left at the last grant.
    left: u64,
    /// A quota's count, sent with asks.
    capacity: u64,
    /// Spent beyond what was held (a bytes quota's request that was larger than its reservation),
    /// owed to the pool with the next message.
    debt: u64,
}

/// A slot's message to the pool: what it holds, what it owes, what it spent, and `want` more.
fn message(bucket: Bucket, key: &[u8], s: &mut Slot, want: u64) -> Ask {
    s.talked = true;
    Ask {
        limit: bucket,
        key: key.into(),
        epoch: s.epoch,
        holding: s.holding,
        given: -owed(&mut s.debt),
        want,
        used: u64::from(std::mem::take(&mut s.used)),
        capacity: s.capacity,
    }
}

/// Takes a slot's debt, as a message's (negative) `given`.
fn owed(debt: &mut u64) -> i64 {
    i64::try_from(std::mem::take(debt)).unwrap_or(i64::MAX)
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub admitted: bool,
    /// Tokens left for the key as this worker knows it: its holding plus what the pool had left
    /// at the last grant.
    pub remaining: u64,
    /// Set when the key is refused until then (Unix seconds).
    pub exhausted_until: u64,
    /// Nothing held, nothing known to be exhausted, and an ask is out: a quota waits for its grant.
    pub waiting: bool,
}

/// Counts since the last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounts {
    pub admitted: u64,
    pub rejected: u64,
    pub evicted: u64,
    pub asks: u64,
    pub grants: u64,
    pub granted_tokens: u64,
}

impl ShardCounts {
    /// Adds another shard's counts.
    pub fn add(&mut self, o: &ShardCounts) {
        self.admitted += o.admitted;
        self.rejected += o.rejected;
        self.evicted += o.evicted;
        self.asks += o.asks;
        self.grants += o.grants;
        self.granted_tokens += o.granted_tokens;
    }
}

/// One worker's entries for one bucket kind.
#[derive(Debug)]
pub struct Shard {
    map: IndexMap<Box<[u8]>, Slot, ahash::RandomState>,
    max_keys: usize,
    /// A key's share held without asking (the capacity over the workers, rounded down).
    implicit: u64,
    /// The largest ask.
    max_lease: u64,
    /// The smallest ask (a bytes quota asks for at least a few requests' worth).
    min_lease: u64,
    hand: usize,
    epoch: u32,
    /// What this shard's messages are about.
    pub bucket: Bucket,
    pub counts: ShardCounts,
}

impl Shard {
    /// A shard holding `implicit` tokens of every key it has not asked about, asking for at most
    /// `max_lease` at a time.
    pub fn new(bucket: Bucket, max_keys: usize, implicit: u64, max_lease: u64) -> Shard {
        Shard {
            map: IndexMap::with_hasher(ahash::RandomState::new()),
            max_keys: max_keys.max(1),
            implicit,
            max_lease: max_lease.max(1),
            min_lease: 1,
            hand: 0,
            epoch: 0,
            bucket,
            counts: ShardCounts::default(),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Asks for at least `n` tokens at a time.
    pub fn with_min_lease(mut self, n: u64) -> Shard {
        self.min_lease = n.clamp(1, self.max_lease);
        self
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Spends one token of `key` if this worker holds one; asks for more (into `out`) when it runs
    /// low. `now` is a coarse clock (seconds) for eviction; `unix` the wall clock (exhaustion).
    /// `capacity` is a quota's count (0 for a rate limit).
    pub fn check(
        &mut self,
        key: &[u8],
        capacity: u64,
        now: u32,
        unix: u64,
        out: &mut Vec<Ask>,
    ) -> Check {
        self.reserve(key, capacity, 1, now, unix, out).0
    }

    /// Like `check`, for `n` tokens at once: admitted while the key holds any, taking what it holds
    /// up to `n` (a bytes quota's estimate of the request, settled once its size is known). Returns
    /// the tokens taken.
    pub fn reserve(
        &mut self,
        key: &[u8],
        capacity: u64,
        n: u64,
        now: u32,
        unix: u64,
        out: &mut Vec<Ask>,
    ) -> (Check, u64) {
        let i = match self.map.get_index_of(key) {
            Some(i) => i,
            None => self.insert(key, now, out),
        };
        let bucket = self.bucket;
        let (k, s) = match self.map.get_index_mut(i) {
            Some(e) => e,
            None => {
                let c = Check {
                    admitted: false,
                    remaining: 0,
                    exhausted_until: 0,
                    waiting: false,
                };
                return (c, 0);
            }
        };
        s.last_used = now;
        if s.capacity != capacity {
            // The consumer's quota changed (a plan or override): what the pool said about the old
            // count no longer holds, so the next ask carries the new one.
            s.capacity = capacity;
            s.exhausted_until = 0;
        }
        // The pool's "nothing left" can answer an ask sent while this worker still held a few (it
        // asks at half its lease): those are spent first, or a request would be refused here while
        // the quota still had them, and they would go to another worker later.
        let exhausted = s.exhausted_until > unix;
        if exhausted && s.holding == 0 {
            self.counts.rejected += 1;
            let c = Check {
                admitted: false,
                remaining: 0,
                exhausted_until: s.exhausted_until,
                waiting: false,
            };
            return (c, 0);
        }
        let admitted = s.holding > 0;
        let mut taken = 0;
        if admitted {
            taken = s.holding.min(n.max(1));
            s.holding -= taken;
            s.used = s
                .used
                .saturating_add(u32::try_from(taken).unwrap_or(u32::MAX));
            self.counts.admitted += 1;
        } else if matches!(bucket, Bucket::Rate(_)) {
            // A rate limit refuses from what it holds; a quota without tokens waits for the pool's
            // answer instead (and counts as rejected only once the pool says it is exhausted).
            self.counts.rejected += 1;
        }
        if !exhausted && !s.pending && s.holding <= u64::from(s.want / 2) {
            let want = (u64::from(s.used) * 2).clamp(self.min_lease, self.max_lease);
            s.want = want as u32;
            s.pending = true;
            out.push(message(bucket, k, s, want));
            self.counts.asks += 1;
        }
        let c = Check {
            admitted,
            remaining: s.holding + s.left,
            exhausted_until: 0,
            waiting: !admitted && s.pending,
        };
        (c, taken)
    }

    /// Settles a reservation of `reserved` tokens for `key` once the request used `used`: the
    /// difference goes back into the holding, or is taken from it, and what the holding cannot cover
    /// is reported to the pool as spent (its level drops by it, so the sum stays exact). Asks for
    /// more when the holding ran low.
    pub fn settle(&mut self, key: &[u8], reserved: u64, used: u64, out: &mut Vec<Ask>) {
        let bucket = self.bucket;
        let Some((k, s)) = self.map.get_key_value_mut(key) else {
            // Evicted meanwhile: it handed back what it held; the difference is the pool's.
            let given = reserved as i64 - used as i64;
            if given != 0 {
                out.push(Ask {
                    limit: bucket,
                    key: key.into(),
                    epoch: 0,
                    holding: self.implicit,
                    given,
                    want: 0,
                    used: 0,
                    capacity: 0,
                });
            }
            return;
        };
        if used >= reserved {
            let more = used - reserved;
            let take = s.holding.min(more);
            s.holding -= take;
            s.debt += more - take;
            s.used = s
                .used
                .saturating_add(u32::try_from(more).unwrap_or(u32::MAX));
        } else {
            let back = reserved - used;
            s.holding += back;
            s.used = s
                .used
                .saturating_sub(u32::try_from(back).unwrap_or(u32::MAX));
        }
        // Never while an ask is out: the pool's count of this worker's holding would pass a grant
        // on its way. The debt waits for the next message.
        if s.pending {
            return;
        }
        let ask = s.holding <= u64::from(s.want / 2);
        if s.debt == 0 && !ask {
            return;
        }
        let want = if ask {
            let w = (u64::from(s.used) * 2).clamp(self.min_lease, self.max_lease);
            s.want = u32::try_from(w).unwrap_or(u32::MAX);
            s.pending = true;
            w
        } else {
            0
        };
        out.push(message(bucket, k, s, want));
        self.counts.asks += 1;
    }

    fn insert(&mut self, key: &[u8], now: u32, out: &mut Vec<Ask>) -> usize {
        if self.map.len() >= self.max_keys {
            self.evict(out);
        }
        self.epoch = self.epoch.wrapping_add(1);
        let want = (self.implicit / 2).clamp(1, self.max_lease) as u32;
        let (i, _) = self.map.insert_full(
            key.into(),
            Slot {
                holding: self.implicit,
                want,
                used: 0,
                epoch: self.epoch,
                last_used: now,
                pending: false,
                talked: false,
                exhausted_until: 0,
                left: 0,
                capacity: 0,
                debt: 0,
            },
        );
        i
    }

    /// Drops the least recently used of a few entries, handing its tokens back.
    fn evict(&mut self, out: &mut Vec<Ask>) {
        let n = self.map.len();
        if n == 0 {
            return;
        }
        let mut victim = self.hand % n;
        let mut oldest = u32::MAX;
        for step in 0..EVICT_SCAN.min(n) {
            let i = (self.hand + step) % n;
            if let Some((_, s)) = self.map.get_index(i) {
                if s.last_used < oldest {
                    oldest = s.last_used;
                    victim = i;
                }
            }
        }
        self.hand = victim + 1;
        if let Some((k, s)) = self.map.swap_remove_index(victim) {
            self.counts.evicted += 1;
            self.forget(k, s, out);
        }
    }

    /// Reports a dropped entry: the worker goes back to holding the implicit share, so the pool gets
    /// what it held beyond it (or is owed what it spent of it).
    fn forget(&mut self, key: Box<[u8]>, s: Slot, out: &mut Vec<Ask>) {
        if !s.talked && s.holding == self.implicit && s.debt == 0 {
            return;
        }
        out.push(Ask {
            limit: self.bucket,
            key,
            epoch: s.epoch,
            holding: self.implicit,
            given: s.holding as i64
                - self.implicit as i64
                - i64::try_from(s.debt).unwrap_or(i64::MAX),
            want: 0,
            used: u64::from(s.used),
            capacity: s.capacity,
        });
    }

    /// Adds a grant to its entry; one for an entry that is gone (evicted, or evicted and made anew,
    /// so another epoch) goes straight back.
    pub fn grant(&mut self, g: &Grant, out: &mut Vec<Ask>) {
        self.counts.grants += 1;
        self.counts.granted_tokens += g.tokens;
        match self.map.get_mut(&g.key[..]) {
            Some(s) if s.epoch == g.epoch => {
                // A debt run up while the ask was out is paid from the grant first: the pool sized
                // it without knowing of the debt.
                let paid = (s.holding + g.tokens).min(s.debt);
                s.holding = s.holding + g.tokens - paid;
                s.debt -= paid;
                s.pending = false;
                s.exhausted_until = g.exhausted_until.unwrap_or(0);
                s.left = g.left;
            }
            Some(_) | None if g.tokens > 0 => {
                let holding = match self.map.get(&g.key[..]) {
                    Some(s) if s.talked => s.holding,
                    _ => self.implicit,
                };
                out.push(Ask {
                    limit: self.bucket,
                    key: g.key.clone(),
                    epoch: g.epoch,
                    holding,
                    given: g.tokens as i64,
                    want: 0,
                    used: 0,
                    capacity: 0,
                });
            }
            _ => {}
        }
    }

    /// The pool needs tokens back: everything held for `key` goes back, the implicit share included.
    pub fn recall(&mut self, key: &[u8], now: u32, out: &mut Vec<Ask>) {
        let i = match self.map.get_index_of(key) {
            Some(i) => i,
            None if self.implicit == 0 => return,
            None => self.insert(key, now, out),
        };
        let bucket = self.bucket;
        if let Some((k, s)) = self.map.get_index_mut(i) {
            // Answered even when it holds nothing: the pool recalls because it counts tokens here
            // that were spent since this worker last wrote (an exhausted key spends what it holds
            // without asking), and until it hears so, other workers' asks wait.
            // With an ask out, the pool may have granted it already: an answer sent now would tell
            // it this worker holds nothing while the grant is on its way here, and the pool would
            // count the grant as free. The pool waits for the ask's answer and recalls again.
            if s.pending {
                return;
            }
            s.talked = true;
            let debt = owed(&mut s.debt);
            out.push(Ask {
                limit: bucket,
                key: k.clone(),
                epoch: s.epoch,
                holding: 0,
                given: s.holding as i64 - debt,
                want: 0,
                used: u64::from(std::mem::take(&mut s.used)),
                capacity: s.capacity,
            });
            s.holding = 0;
        }
    }

    /// Hands back what keys unused since `before` hold beyond their implicit share, so traffic that
    /// moved to another worker finds the tokens in the pool.
    pub fn sweep(&mut self, before: u32, out: &mut Vec<Ask>) {
        let implicit = self.implicit;
        let bucket = self.bucket;
        for (k, s) in self.map.iter_mut() {
            if s.last_used < before && !s.pending && (s.holding > implicit || s.debt > 0) {
                let back = s.holding.saturating_sub(implicit);
                out.push(Ask {
                    limit: bucket,
                    key: k.clone(),
                    epoch: s.epoch,
                    holding: s.holding - back,
                    given: back as i64 - owed(&mut s.debt),
                    want: 0,
                    used: u64::from(std::mem::take(&mut s.used)),
                    capacity: s.capacity,
                });
                s.holding -= back;
            }
        }
    }

    /// Forgets every key (a reload replaced the limit): what they hold goes back.
    pub fn drain(&mut self, out: &mut Vec<Ask>) {
        for (k, s) in std::mem::take(&mut self.map) {
            self.forget(k, s, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::LimitId;

    fn shard(max_keys: usize, implicit: u64) -> Shard {
        Shard::new(
            Bucket::Rate(LimitId {
                index: 0,
                digest: 1,
            }),
            max_keys,
            implicit,
            50,
        )
    }

    #[test]
    fn bytes_reserve_settle_and_owe_what_the_holding_cannot_cover() {
        let b = Bucket::QuotaBytes(crate::config::limits::Period::Day);
        let mut s = Shard::new(b, 10, 0, 1 << 20).with_min_lease(1000);
        let mut out = Vec::new();
        // Nothing held: not admitted, one ask of at least the smallest lease.
        let (c, got) = s.reserve(b"c", 5000, 300, 1, 0, &mut out);
        assert!(!c.admitted && c.waiting && got == 0);
        let ask = out.pop().unwrap();
        assert_eq!(ask.want, 1000);
        let grant = |tokens, epoch| Grant {
            limit: b,
            key: b"c"[..].into(),
            epoch,
            tokens,
            exhausted_until: None,
            left: 0,
        };
        s.grant(&grant(1000, ask.epoch), &mut out);
        let (c, got) = s.reserve(b"c", 5000, 300, 1, 0, &mut out);
        assert!(c.admitted);
        assert_eq!(got, 300);
        // The request moved 250: 50 back; 750 held, above half the want, so no message.
        s.settle(b"c", 300, 250, &mut out);
        assert!(out.is_empty());
        // Moving 2,000 on a reservation of 100: the holding covers 650, 1,250 is owed at once (no
        // ask was out), with an ask for more.
        let (_, got) = s.reserve(b"c", 5000, 100, 1, 0, &mut out);
        assert_eq!(got, 100);
        assert!(out.is_empty());
        s.settle(b"c", 100, 2000, &mut out);
        let owe = out.pop().unwrap();
        assert_eq!((owe.given, owe.holding), (-1250, 0), "{owe:?}");
        assert!(owe.want >= 1000);
        // While that ask is out a new debt waits, and the grant pays it first.
        let (c, _) = s.reserve(b"c", 5000, 300, 1, 0, &mut out);
        assert!(!c.admitted);
        s.settle(b"c", 0, 400, &mut out);
        assert!(out.is_empty(), "nothing is sent while an ask is out");
        s.grant(&grant(1000, owe.epoch), &mut out);
        let (c, got) = s.reserve(b"c", 5000, 1000, 1, 0, &mut out);
        assert!(c.admitted);
        assert_eq!(got, 600, "1,000 granted, 400 of it paid the debt");
    }

    #[test]
    fn spends_the_implicit_share_then_asks_once() {
        let mut s = shard(10, 100);
        let mut out = Vec::new();
        for i in 0..100 {
            let c = s.check(b"k", 0, 1, 0, &mut out);
            assert!(c.admitted, "request {i}");
        }
        // One ask only, when the holding fell to half the first want.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].holding, 25);
        let c = s.check(b"k", 0, 1, 0, &mut out);
        assert!(!c.admitted && c.waiting);
        assert_eq!(out.len(), 1);
        let epoch = out[0].epoch;
        s.grant(
            &Grant {
                limit: s.bucket,
                key: b"k"[..].into(),
                epoch,
                tokens: 7,
                exhausted_until: None,
                left: 0,
            },
            &mut out,
        );
        assert!(s.check(b"k", 0, 1, 0, &mut out).admitted);
        assert_eq!(s.check(b"k", 0, 1, 0, &mut out).remaining, 5);
    }

    #[test]
    fn a_grant_for_a_forgotten_entry_goes_back() {
        let mut s = shard(1, 2);
        let mut out = Vec::new();
        s.check(b"a", 0, 1, 0, &mut out);
        s.check(b"a", 0, 1, 0, &mut out);
        let ask = out.pop().expect("ask");
        // "b" evicts "a", which spent both tokens of its share: it owes them.
        s.check(b"b", 0, 2, 0, &mut out);
        let owed = out.iter().find(|a| &*a.key == b"a").expect("report");
        assert_eq!((owed.given, owed.holding), (-2, 2));
        out.clear();
        s.grant(
            &Grant {
                limit: s.bucket,
                key: ask.key.clone(),
                epoch: ask.epoch,
                tokens: 3,
                exhausted_until: None,
                left: 0,
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].given, 3);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_table_stays_bounded_and_evicts_idle_keys_first() {
        let mut s = shard(100, 1);
        let mut out = Vec::new();
        s.check(b"hot", 0, 0, 0, &mut out);
        for i in 0..10_000u32 {
            s.check(&i.to_be_bytes(), 0, i + 1, 0, &mut out);
            // The hot key is used all along, so it is never the oldest looked at.
            s.check(b"hot", 0, i + 1, 0, &mut out);
            assert!(s.len() <= 100);
        }
        assert!(s.map.contains_key(&b"hot"[..]));
        assert!(s.counts.evicted >= 9_900);
    }

    #[test]
    fn idle_surplus_and_recalls_go_back() {
        let mut s = shard(10, 4);
        let mut out = Vec::new();
        for _ in 0..3 {
            s.check(b"k", 0, 1, 0, &mut out);
        }
        let ask = out.pop().expect("ask");
        s.grant(
            &Grant {
                limit: s.bucket,
                key: ask.key,
                epoch: ask.epoch,
                tokens: 10,
                exhausted_until: None,
                left: 0,
            },
            &mut out,
        );
        s.sweep(5, &mut out);
        let back = out.pop().expect("hand-back");
        assert_eq!((back.given, back.holding), (7, 4));
        s.recall(b"k", 6, &mut out);
        let back = out.pop().expect("recall");
        assert_eq!((back.given, back.holding), (4, 0));
        // A key never seen gives up its implicit share on a recall.
        s.recall(b"new", 6, &mut out);
        assert_eq!(out.pop().map(|a| a.given), Some(4));
        // A key with an ask out keeps what it holds: the grant may be on its way.
        let mut p = shard(10, 4);
        for _ in 0..3 {
            p.check(b"k", 0, 1, 0, &mut out);
        }
        out.clear();
        p.recall(b"k", 6, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // One that holds nothing says so.
        s.recall(b"k", 7, &mut out);
        let back = out.pop().expect("an answer holding nothing");
        assert_eq!((back.given, back.holding), (0, 0));
    }

    #[test]
    fn an_exhausted_key_is_refused_until_its_reset() {
        let mut s = shard(10, 0);
        let mut out = Vec::new();
        let c = s.check(b"q", 0, 1, 100, &mut out);
        assert!(!c.admitted && c.waiting);
        let ask = out.pop().expect("ask");
        s.grant(
            &Grant {
                limit: s.bucket,
                key: ask.key,
                epoch: ask.epoch,
                tokens: 0,
                exhausted_until: Some(200),
                left: 0,
            },
            &mut out,
        );
        let c = s.check(b"q", 0, 1, 150, &mut out);
        assert_eq!((c.admitted, c.exhausted_until), (false, 200));
        assert!(out.is_empty());
        // After the reset it asks again.
        let c = s.check(b"q", 0, 1, 201, &mut out);
        assert!(c.waiting);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn what_a_worker_holds_is_spent_before_an_exhaustion_refuses() {
        let mut s = Shard::new(
            Bucket::Quota(crate::config::limits::Period::Day),
            10,
            0,
            1000,
        );
        let mut out = Vec::new();
        let grant = |s: &mut Shard, out: &mut Vec<Ask>, tokens, exhausted_until| {
            let ask = out.pop().expect("an ask");
            assert!(out.is_empty());
            s.grant(
                &Grant {
                    limit: s.bucket,
                    key: ask.key,
                    epoch: ask.epoch,
                    tokens,
                    exhausted_until,
                    left: 0,
                },
                out,
            );
            ask.holding
        };
        assert!(s.check(b"q", 100, 1, 100, &mut out).waiting);
        grant(&mut s, &mut out, 4, None);
        for _ in 0..4 {
            assert!(s.check(b"q", 100, 1, 100, &mut out).admitted);
        }
        grant(&mut s, &mut out, 8, None);
        for _ in 0..4 {
            assert!(s.check(b"q", 100, 1, 100, &mut out).admitted);
        }
        // It asked at half its lease, still holding four, and the pool has nothing left.
        assert_eq!(grant(&mut s, &mut out, 0, Some(200)), 4);
        for _ in 0..4 {
            assert!(s.check(b"q", 100, 1, 150, &mut out).admitted);
        }
        let c = s.check(b"q", 100, 1, 150, &mut out);
        assert_eq!((c.admitted, c.exhausted_until), (false, 200));
        assert!(out.is_empty(), "no ask while exhausted: {out:?}");
    }
}
