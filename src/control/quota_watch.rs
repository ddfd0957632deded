//! Quota use as the control thread sees it, once a second: per consumer with a quota, the requests
//! admitted and the bytes moved in the current UTC day or month (from every worker's usage rows,
//! started from the ledger's count so it holds across restarts). From it come the share of each quota
//! used (the consumers view, the `quota_used` alert metric) and a log line as a consumer crosses 80%
//! and 100%. Quotas are enforced by the limit pools (`control::limits`), exactly; this only watches.

use crate::config::limits::{Period, Quota, QuotaSpec};
use crate::config::Config;
use crate::limit::period;
use crate::usage::UsageRow;
use std::collections::HashMap;
use std::sync::Arc;

/// A consumer's count in its quota's current period.
#[derive(Debug, Clone, Copy)]
struct Used {
    period: Period,
    /// Unix second the period started.
    start: u64,
    requests: u64,
    bytes: u64,
    /// Marks already logged this period: 80% and 100% of requests, then of bytes.
    marks: u8,
}

/// Where the watch starts a consumer's count: (admitted requests, bytes) the ledger holds for the
/// period starting at the given second (everything received so far, flushed or not); None without a
/// ledger, when the watch counts from what it saw since its last tick.
pub type Seed<'a> = &'a dyn Fn(&str, Period, u64) -> Option<(u64, u64)>;

/// Consumers the watch holds counts for between two ticks without knowing their quota yet.
const MAX_FRESH: usize = 100_000;

/// What one tick found.
#[derive(Debug, Default, PartialEq)]
pub struct Tick {
    /// The share of its quota each consumer used (the larger of requests and bytes).
    pub shares: HashMap<Arc<str>, f64>,
}

/// The watch's state.
#[derive(Debug, Default)]
pub struct QuotaWatch {
    quotas: HashMap<Arc<str>, Quota>,
    used: HashMap<Arc<str>, Used>,
    /// Since the last tick, of consumers not in `used` (a runtime consumer just created): (admitted
    /// requests, bytes).
    fresh: HashMap<Arc<str>, (u64, u64)>,
}

const MARKS: [(f64, &str); 2] = [(0.8, "80%"), (1.0, "100%")];

impl QuotaWatch {
    /// Adds a worker's usage rows, for consumers with a quota.
    pub fn record(&mut self, rows: &[UsageRow], now_unix: u64) {
        for r in rows {
            let bytes = r.counts.bytes_in + r.counts.bytes_out;
            let Some(u) = self.used.get_mut(&*r.consumer) else {
                if self.fresh.len() < MAX_FRESH || self.fresh.contains_key(&*r.consumer) {
                    let f = self.fresh.entry(r.consumer.clone()).or_default();
                    f.0 += r.counts.admitted;
                    f.1 += bytes;
                }
                continue;
            };
            roll(u, now_unix);
            u.requests += r.counts.admitted;
            u.bytes += bytes;
        }
    }

    /// Takes the quotas in force (file consumers over runtime ones of the same name, as workers look
    /// them up), brings each count to the current period, and works out shares and blocks.
    pub fn tick<'a>(
        &mut self,
        config: &'a Config,
        runtime: impl Iterator<Item = (&'a str, Option<&'a str>, Option<&'a QuotaSpec>)>,
        seed: Seed<'_>,
        now_unix: u64,
    ) -> Tick {
        let plan_quota = |name: Option<&str>| {
            let name = name?;
            config
                .plans
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.quota.as_ref())
        };
        self.quotas.clear();
        let file = config
            .consumers
            .iter()
            .map(|c| (c.name.as_str(), c.plan.as_deref(), c.quota.as_ref()));
        for (name, plan, own) in file.chain(runtime) {
            if self.quotas.contains_key(name) {
                continue;
            }
            if let Some(q) = QuotaSpec::effective(own, plan_quota(plan)) {
                self.quotas.insert(Arc::from(name), q);
            }
        }
        let quotas = &self.quotas;
        self.used.retain(|name, _| quotas.contains_key(name));
        let mut out = Tick::default();
        for (name, q) in &self.quotas {
            let start = period::bounds(q.period, now_unix).0;
            let u = match self.used.get_mut(name) {
                Some(u) if u.period == q.period => u,
                _ => {
                    let fresh = self.fresh.get(name).copied().unwrap_or_default();
                    let (requests, bytes) = seed(name, q.period, start).unwrap_or(fresh);
                    self.used.insert(
                        name.clone(),
                        Used {
                            period: q.period,
                            start,
                            requests,
                            bytes,
                            marks: 0,
                        },
                    );
                    match self.used.get_mut(name) {
                        Some(u) => u,
                        None => continue,
                    }
                }
            };
            roll(u, now_unix);
            let share = |used: u64, of: Option<u64>| of.map(|n| used as f64 / n.max(1) as f64);
            let req = share(u.requests, q.requests);
            let bytes = share(u.bytes, q.bytes);
            for (kind, s, bit) in [("requests", req, 0), ("bytes", bytes, 2)] {
                let Some(s) = s else { continue };
                for (j, (mark, label)) in MARKS.iter().enumerate() {
                    let flag = 1u8 << (bit + j);
                    if s >= *mark && u.marks & flag == 0 {
                        u.marks |= flag;
                        tracing::warn!(consumer = %name, quota = kind, used = %label, period = q.period.as_str(), "quota mark crossed");
                    }
                }
            }
            let s = req.unwrap_or(0.0).max(bytes.unwrap_or(0.0));
            out.shares.insert(name.clone(), s);
        }
        self.fresh.clear();
        out
    }
}

/// Starts a new period's count at zero once the clock has left the old one.
fn roll(u: &mut Used, now_unix: u64) {
    let start = period::bounds(u.period, now_unix).0;
    if start != u.start {
        *u = Used {
            period: u.period,
            start,
            requests: 0,
            bytes: 0,
            marks: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageCounts;

    fn config() -> Config {
        crate::config::parse(
            "[listeners.l]\nlisten = \"127.0.0.1:0\"\n\n[plans.p]\nquota = { requests = 10, bytes = 1000, period = \"day\" }\n\n\
             [consumers.a]\napi_keys = [\"a-key-123\"]\nplan = \"p\"\n\n\
             [consumers.b]\napi_keys = [\"b-key-123\"]\n\n\
             [routes.r]\npath = \"/\"\nrespond = { status = 200 }\n",
            crate::config::Source::Embedded,
        )
        .unwrap()
    }

    fn row(consumer: &str, admitted: u64, bytes: u64) -> UsageRow {
        UsageRow {
            consumer: Arc::from(consumer),
            route: Arc::from("r"),
            class: 2,
            counts: UsageCounts {
                requests: admitted,
                admitted,
                bytes_in: bytes,
                ..Default::default()
            },
        }
    }

    const NOW: u64 = 1_796_389_200; // 2026-12-04T13:00:00Z

    #[test]
    fn shares_follow_the_rows_and_reset_with_the_period() {
        let cfg = config();
        let mut w = QuotaWatch::default();
        let seed = |n: &str, _: Period, _: u64| Some(if n == "a" { (5, 100) } else { (0, 0) });
        let t = w.tick(&cfg, std::iter::empty(), &seed, NOW);
        assert_eq!(t.shares.len(), 1, "b has no quota");
        assert_eq!(t.shares["a"], 0.5, "seeded from the ledger");
        w.record(&[row("a", 3, 100), row("b", 50, 50)], NOW);
        let t = w.tick(&cfg, std::iter::empty(), &seed, NOW + 1);
        assert_eq!(t.shares["a"], 0.8);
        w.record(&[row("a", 0, 800)], NOW + 1);
        let t = w.tick(&cfg, std::iter::empty(), &seed, NOW + 2);
        assert_eq!(t.shares["a"], 1.0, "the bytes are used up");
        // The next day: a fresh count.
        let end = period::bounds(Period::Day, NOW).1;
        let t = w.tick(&cfg, std::iter::empty(), &seed, end + 1);
        assert_eq!(t.shares["a"], 0.0);
    }

    #[test]
    fn runtime_consumers_count_and_file_ones_win() {
        let cfg = config();
        let mut w = QuotaWatch::default();
        let own = QuotaSpec {
            requests: Some(4),
            bytes: None,
            period: None,
        };
        let runtime = vec![("rt", None, Some(&own)), ("a", None, None)];
        let seed = |_: &str, _: Period, _: u64| None;
        w.record(&[row("rt", 1, 0)], NOW);
        let t = w.tick(&cfg, runtime.into_iter(), &seed, NOW);
        assert_eq!(t.shares["rt"], 0.25);
        assert_eq!(t.shares["a"], 0.0, "the file's a, on plan p, no traffic");
        assert_eq!(t.shares.len(), 2);
    }
}
