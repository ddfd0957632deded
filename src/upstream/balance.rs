//! Load-balancing algorithms. Pure functions over endpoint state; inputs (time, rng) are passed in,
//! so tests never sleep. Nothing here allocates per pick.

use super::EndpointState;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

/// A hash that is the same on every worker and every run (fixed seeds).
pub fn hash64(data: &[u8]) -> u64 {
    let mut h = ahash::RandomState::with_seeds(0x5155_4943, 0x4520_5348, 0x4152_4420, 0x4b45_5920)
        .build_hasher();
    h.write(data);
    h.finish()
}

/// Smooth weighted round robin (as nginx does it): spreads heavy endpoints between light ones.
#[derive(Debug, Clone)]
pub struct SmoothWrr {
    current: Vec<i64>,
}

impl SmoothWrr {
    /// State for `n` endpoints.
    pub fn new(n: usize) -> Self {
        SmoothWrr {
            current: vec![0; n],
        }
    }

    /// Next available endpoint.
    pub fn next(&mut self, eps: &[EndpointState], now: Instant) -> Option<usize> {
        self.next_avoiding(eps, now, None)
    }

    /// Next available endpoint other than `avoid`.
    pub fn next_avoiding(
        &mut self,
        eps: &[EndpointState],
        now: Instant,
        avoid: Option<usize>,
    ) -> Option<usize> {
        self.next_weighted(eps.len(), |i| {
            let e = &eps[i];
            (e.available(now) && Some(i) != avoid).then_some(e.weight)
        })
    }

    /// The next of `n` choices, where `weight(i)` is choice i's weight, or None while it may not be
    /// chosen. Endpoints and the traffic split of a route both go through here.
    pub fn next_weighted(
        &mut self,
        n: usize,
        weight: impl Fn(usize) -> Option<u32>,
    ) -> Option<usize> {
        if self.current.len() != n {
            self.current = vec![0; n];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..n {
            let Some(w) = weight(i) else {
                continue;
            };
            self.current[i] += w as i64;
            total += w as i64;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            self.current[b] -= total;
        }
        best
    }
}

/// xorshift64*: a per-worker generator, no locks, good enough to pick two endpoints.
pub fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Least request by power of two choices, weighted: compares in_flight / weight.
pub fn p2c(
    eps: &[EndpointState],
    now: Instant,
    rng: &mut u64,
    avoid: Option<usize>,
) -> Option<usize> {
    let n = eps.len();
    if n == 0 {
        return None;
    }
    let ok = |i: usize| eps[i].available(now) && Some(i) != avoid;
    // Two distinct candidates: comparing an endpoint with itself would ignore load a quarter of the time.
    let mut pick = |skip: Option<usize>| {
        let start = (next_rand(rng) % n as u64) as usize;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| ok(i) && Some(i) != skip)
    };
    let a = pick(None)?;
    let b = pick(Some(a)).unwrap_or(a);
    let load = |i: usize| (eps[i].in_flight as u64 + 1) * 1000 / eps[i].weight.max(1) as u64;
    Some(if load(b) < load(a) { b } else { a })
}

/// A hash ring with virtual nodes proportional to weight.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

const VNODES_PER_WEIGHT: u32 = 100;

impl Ring {
    /// Builds the ring for these endpoints.
    pub fn new(eps: &[EndpointState]) -> Ring {
        let mut points = Vec::new();
        for (i, e) in eps.iter().enumerate() {
            for v in 0..VNODES_PER_WEIGHT * e.weight.min(100) {
                let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
                h.write_u64(e.key);
                h.write_u32(v);
                points.push((h.finish(), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first available endpoint clockwise from `hash`.
    pub fn pick(
        &self,
        hash: u64,
        eps: &[EndpointState],
        now: Instant,
        avoid: Option<usize>,
    ) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|p| p.0 < hash);
        let n = self.points.len();
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|&i| i < eps.len() && eps[i].available(now) && Some(i) != avoid)
    }
}

/// A retry budget as a token bucket: each request deposits `ratio` tokens, a retry takes one, and
/// `min_per_second` tokens trickle in regardless, capped at ten seconds' worth.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RetryBudget {
    /// A full budget.
    pub fn new(ratio: f64, min_per_second: f64) -> Self {
        RetryBudget {
            ratio,
            min_per_second,
            tokens: min_per_second.max(1.0),
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens += dt * self.min_per_second;
        }
        self.last = Some(now);
        let cap = (self.min_per_second * 10.0).max(10.0);
        if self.tokens > cap {
            self.tokens = cap;
        }
    }

    /// A request was sent.
    pub fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens += self.ratio;
    }

    /// Takes one retry if available.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn eps(weights: &[u32]) -> Vec<EndpointState> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                EndpointState::new(addr, w)
            })
            .collect()
    }

    #[test]
    fn wrr_follows_weights() {
        let e = eps(&[1, 2, 3]);
        let mut rr = SmoothWrr::new(3);
        let now = Instant::now();
        let mut counts = [0; 3];
        for _ in 0..600 {
            counts[rr.next(&e, now).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 300]);
    }

    #[test]
    fn wrr_skips_ejected() {
        let mut e = eps(&[1, 1]);
        let now = Instant::now();
        e[0].ejected_until = Some(now + Duration::from_secs(1));
        let mut rr = SmoothWrr::new(2);
        assert!((0..10).all(|_| rr.next(&e, now) == Some(1)));
        assert!(rr.next(&e, now + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn p2c_prefers_idle() {
        let mut e = eps(&[1, 1]);
        e[0].in_flight = 10;
        let mut rng = 7;
        let now = Instant::now();
        let ones = (0..1000)
            .filter(|_| p2c(&e, now, &mut rng, None) == Some(1))
            .count();
        assert!(ones > 700, "{ones}");
    }

    #[test]
    fn ring_is_stable_and_spreads() {
        let e = eps(&[1, 1, 1, 1]);
        let r = Ring::new(&e);
        let now = Instant::now();
        let mut counts = [0; 4];
        for k in 0..4000u32 {
            let h = hash64(&k.to_le_bytes());
            let a = r.pick(h, &e, now, None).unwrap();
            assert_eq!(Some(a), r.pick(h, &e, now, None));
            counts[a] += 1;
        }
        assert!(counts.iter().all(|&c| c > 600), "{counts:?}");
    }

    #[test]
    fn budget_limits_retries() {
        let now = Instant::now();
        let mut b = RetryBudget::new(0.2, 0.0);
        let allowed = (0..100)
            .filter(|_| {
                b.deposit(now);
                b.withdraw(now)
            })
            .count();
        assert!(allowed <= 21, "{allowed}");
    }
}
