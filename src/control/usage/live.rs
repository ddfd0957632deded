//! Per-consumer figures since start, for the stats page's consumers view, `sluice top`, `/usage/top`
//! of the running period and the per-consumer Prometheus series: cumulative counts plus a short
//! per-second history for rates. Fed from every worker report, whether or not a ledger is configured.
//! Bounded: at most `MAX_LIVE` consumers are held by name, the rest are summed as `usage::OTHER`; and
//! at most `METRIC_CONSUMERS` of them get their own Prometheus series (the first ones to reach a
//! free slot, largest first, kept for the life of the process so the `other` series never goes
//! down).

use crate::usage::{is_error_class, UsageRow, OTHER};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Consumers held by name on the control thread.
pub const MAX_LIVE: usize = 10_000;
/// Consumers with their own series in `/metrics`; the rest are `consumer="other"`.
pub const METRIC_CONSUMERS: usize = 20;
/// Seconds of history a rate is averaged over.
pub const RATE_SECS: u64 = 10;
/// Consumers the status JSON (stats page, `sluice top`) lists by name; the rest are summed.
pub const VIEW_CONSUMERS: usize = 50;

/// One consumer's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerFigures {
    pub requests: u64,
    /// Answered 429.
    pub limited: u64,
    /// 5xx or no response.
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests by second (unix second, count), the last `RATE_SECS`.
    recent: Vec<(u64, u64)>,
}

impl ConsumerFigures {
    /// Adds `o`'s counts (not its history).
    fn add(&mut self, o: &ConsumerFigures) {
        self.requests += o.requests;
        self.limited += o.limited;
        self.errors += o.errors;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }

    /// Requests per second over the last `RATE_SECS` seconds before `now_unix`.
    pub fn rate(&self, now_unix: u64) -> f64 {
        let since = now_unix.saturating_sub(RATE_SECS);
        let n: u64 = self
            .recent
            .iter()
            .filter(|(s, _)| *s > since)
            .map(|(_, n)| n)
            .sum();
        n as f64 / RATE_SECS as f64
    }
}

/// One consumer as the consumers view lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked<'a> {
    pub name: &'a Arc<str>,
    /// Requests per second over the last `RATE_SECS`.
    pub rate: f64,
    pub figures: &'a ConsumerFigures,
}

/// The consumers past the ones listed, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RankedRest {
    /// How many named consumers are in it (consumers past `MAX_LIVE`, held as `OTHER`, not counted).
    pub consumers: usize,
    pub rate: f64,
    pub figures: ConsumerFigures,
}

/// Every consumer's figures.
#[derive(Debug, Default)]
pub struct LiveUsage {
    pub consumers: BTreeMap<Arc<str>, ConsumerFigures>,
    /// Consumers with their own Prometheus series.
    named: BTreeSet<Arc<str>>,
}

impl LiveUsage {
    /// Adds a worker's rows, received at `now_unix`.
    pub fn apply(&mut self, rows: &[UsageRow], now_unix: u64) {
        for r in rows {
            let f = match self.consumers.get_mut(&*r.consumer) {
                Some(f) => f,
                None => {
                    let key = if self.consumers.len() < MAX_LIVE {
                        r.consumer.clone()
                    } else {
                        Arc::from(OTHER)
                    };
                    self.consumers.entry(key).or_default()
                }
            };
            let c = &r.counts;
            f.requests += c.requests;
            f.limited += c.limited;
            f.errors += if is_error_class(r.class) {
                c.requests
            } else {
                0
            };
            f.bytes_in += c.bytes_in;
            f.bytes_out += c.bytes_out;
            match f.recent.last_mut() {
                Some((s, n)) if *s == now_unix => *n += c.requests,
                _ => f.recent.push((now_unix, c.requests)),
            }
            let since = now_unix.saturating_sub(RATE_SECS);
            f.recent.retain(|(s, _)| *s > since);
        }
    }

    /// The consumers view at `now_unix`: the top `limit` consumers by rate (then by requests, then
    /// name), and the rest summed with the `OTHER` overflow.
    pub fn ranked(&self, limit: usize, now_unix: u64) -> (Vec<Ranked<'_>>, RankedRest) {
        let mut all: Vec<Ranked<'_>> = self
            .consumers
            .iter()
            .filter(|(k, _)| &***k != OTHER)
            .map(|(name, figures)| Ranked {
                name,
                rate: figures.rate(now_unix),
                figures,
            })
            .collect();
        all.sort_by(|a, b| {
            b.rate
                .total_cmp(&a.rate)
                .then_with(|| b.figures.requests.cmp(&a.figures.requests))
                .then_with(|| a.name.cmp(b.name))
        });
        let mut rest = RankedRest::default();
        for r in all.iter().skip(limit) {
            rest.consumers += 1;
            rest.rate += r.rate;
            rest.figures.add(r.figures);
        }
        if let Some(f) = self.consumers.get(OTHER) {
            rest.rate += f.rate(now_unix);
            rest.figures.add(f);
        }
        all.truncate(limit);
        (all, rest)
    }

    /// The Prometheus view: up to `METRIC_CONSUMERS` named consumers and the sum of the rest
    /// (`other`). Free slots go to the largest unnamed consumers; a named consumer keeps its slot.
    pub fn metric_series(&mut self) -> (Vec<(Arc<str>, ConsumerFigures)>, ConsumerFigures) {
        if self.named.len() < METRIC_CONSUMERS {
            let mut candidates: Vec<(&Arc<str>, u64)> = self
                .consumers
                .iter()
                .filter(|(k, _)| !self.named.contains(*k) && &***k != OTHER)
                .map(|(k, f)| (k, f.requests))
                .collect();
            candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let free = METRIC_CONSUMERS - self.named.len();
            let add: Vec<Arc<str>> = candidates.iter().take(free).map(|c| c.0.clone()).collect();
            self.named.extend(add);
        }
        let mut named = Vec::new();
        let mut other = ConsumerFigures::default();
        for (k, f) in &self.consumers {
            if self.named.contains(k) {
                named.push((k.clone(), f.clone()));
            } else {
                other.add(f);
            }
        }
        (named, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageCounts;

    fn row(c: &str, class: u8, n: u64) -> UsageRow {
        UsageRow {
            consumer: Arc::from(c),
            route: Arc::from("api"),
            class,
            counts: UsageCounts {
                requests: n,
                admitted: 0,
                limited: 0,
                bytes_in: n,
                bytes_out: n,
                latency_us: 0,
            },
        }
    }

    #[test]
    fn rates_errors_and_bounded_series() {
        let mut l = LiveUsage::default();
        l.apply(&[row("alice", 2, 30), row("alice", 5, 2)], 100);
        l.apply(&[row("alice", 2, 10)], 105);
        let a = &l.consumers["alice"];
        assert_eq!(a.requests, 42);
        assert_eq!(a.errors, 2);
        assert_eq!(a.rate(105), 4.2);
        assert_eq!(a.rate(111), 1.0);
        for i in 0..METRIC_CONSUMERS + 5 {
            l.apply(&[row(&format!("c{i:02}"), 2, 1)], 106);
        }
        let (named, other) = l.metric_series();
        assert_eq!(named.len(), METRIC_CONSUMERS);
        assert!(named.iter().any(|(k, _)| &**k == "alice"), "largest first");
        assert_eq!(other.requests, 6);
        // A newcomer larger than everyone does not take a held slot: `other` only grows.
        l.apply(&[row("zed", 2, 1000)], 107);
        let (named2, other2) = l.metric_series();
        assert_eq!(named2.len(), METRIC_CONSUMERS);
        assert_eq!(other2.requests, 1006);
    }

    #[test]
    fn the_view_ranks_by_rate_and_sums_the_rest() {
        let mut l = LiveUsage::default();
        // Old traffic: a big total but no rate at 200.
        l.apply(&[row("old", 2, 500)], 100);
        l.apply(&[row("busy", 2, 50), row("busy", 5, 10)], 199);
        l.apply(&[row("calm", 2, 20)], 199);
        l.apply(&[row("tie-b", 2, 20)], 199);
        l.apply(&[row(OTHER, 2, 7)], 199);
        let (top, rest) = l.ranked(3, 200);
        let names: Vec<&str> = top.iter().map(|r| &**r.name).collect();
        assert_eq!(names, ["busy", "calm", "tie-b"], "rate, then name");
        assert_eq!(top[0].rate, 6.0);
        assert_eq!(top[0].figures.errors, 10);
        assert_eq!(rest.consumers, 1, "old; the overflow bucket is no consumer");
        assert_eq!(rest.figures.requests, 507);
        assert_eq!(rest.rate, 0.7);
        let (all, rest) = l.ranked(10, 200);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].figures.requests, 500, "no rate: last");
        let sum: u64 = all.iter().map(|r| r.figures.requests).sum::<u64>() + rest.figures.requests;
        assert_eq!(sum, 607);
    }
}
