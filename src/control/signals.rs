//! Scaling signals (`[signals]`): once a second, from the merged statistics, the instance's load
//! (per-core utilization, in flight, accept rate), a recommended instance count by the Kubernetes HPA
//! rule, a per-core imbalance ratio, and per upstream the figures that show which backend needs more
//! instances. Published into the `Store` for `/signals` and `/metrics`; an optional webhook hears of a
//! changed recommendation, at most once per `cooldown`. Control thread only.

use super::stats::Store;
use super::status::{CoreSignal, SignalsReport, UpstreamSignal};
use super::webhook::{self, Queue};
use crate::config::monitoring::Signals;
use crate::snapshot::Snapshot;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often signals are computed.
pub const EVAL_INTERVAL: Duration = Duration::from_secs(1);

/// The HPA rule: `desired = ceil(current × utilization / target)`, at least 1.
/// (Kubernetes also skips changes within a 10% tolerance; sluice shows the plain rule and leaves
/// tolerance and stabilisation to the autoscaler.)
pub fn recommend(current: u32, utilization: f64, target: f64) -> u32 {
    if target.is_nan() || target <= 0.0 || !utilization.is_finite() {
        return current.max(1);
    }
    let raw = current as f64 * utilization.max(0.0) / target;
    // A hair above an integer is float noise: 2 × 0.5 / 0.5 must stay 2.
    (raw - 1e-9).ceil().max(1.0).min(u32::MAX as f64) as u32
}

/// The busiest core's request count over the mean; 1.0 when idle or with one core.
pub fn imbalance(per_core: &[u64]) -> f64 {
    let total: u64 = per_core.iter().sum();
    if total == 0 || per_core.is_empty() {
        return 1.0;
    }
    let mean = total as f64 / per_core.len() as f64;
    per_core.iter().copied().max().unwrap_or(0) as f64 / mean
}

/// Computes the report from the store.
pub fn compute(store: &Store, cfg: &Signals, upstreams: &[&str]) -> SignalsReport {
    let n = Store::window_secs(cfg.window);
    let secs = store.covered(n) as f64;
    let util = store.utilization_window(n);
    let reqs = store.worker_requests_window(n);
    let cores: Vec<CoreSignal> = store
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| CoreSignal {
            worker: i,
            cpu: w.gauges.cpu,
            utilization: util.get(i).copied().unwrap_or(0.0),
            utilization_now: w.utilization,
            requests_per_second: reqs.get(i).copied().unwrap_or(0) as f64 / secs,
            in_flight: w.gauges.in_flight,
        })
        .collect();
    let utilization = if cores.is_empty() {
        0.0
    } else {
        cores.iter().map(|c| c.utilization).sum::<f64>() / cores.len() as f64
    };
    let recommended = recommend(cfg.current_instances, utilization, cfg.target_utilization);
    let ups = upstreams
        .iter()
        .map(|&name| {
            let w = store.upstream_window(name, n);
            UpstreamSignal {
                name: name.to_string(),
                in_flight: store.upstream_in_flight(name),
                requests_per_second: w.requests as f64 / secs,
                ttfb_p99_ms: w.quantile_ms(0.99),
                errors_5xx_per_second: w.errors_5xx as f64 / secs,
            }
        })
        .collect();
    SignalsReport {
        window_secs: n as u64,
        covered_secs: secs as u64,
        utilization,
        in_flight: cores.iter().map(|c| c.in_flight).sum(),
        accepts_per_second: store.accepts_window(n) as f64 / secs,
        requests_per_second: reqs.iter().sum::<u64>() as f64 / secs,
        imbalance_ratio: imbalance(&reqs),
        cores,
        current_instances: cfg.current_instances,
        target_utilization: cfg.target_utilization,
        recommended_instances: recommended,
        upstreams: ups,
        webhook: None,
    }
}

/// Decides when a changed recommendation is announced: not at start (the first figure is the
/// baseline), and at most once per cooldown; a change that happens during the cooldown is announced
/// when it ends if it still holds.
#[derive(Debug, Default)]
pub struct Announcer {
    announced: Option<u32>,
    last_sent: Option<Instant>,
}

impl Announcer {
    /// Whether `recommended` should be announced now; remembers it if so.
    pub fn should_announce(&mut self, recommended: u32, cooldown: Duration, now: Instant) -> bool {
        let Some(prev) = self.announced else {
            self.announced = Some(recommended);
            return false;
        };
        let cooled = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= cooldown);
        if recommended != prev && cooled {
            self.announced = Some(recommended);
            self.last_sent = Some(now);
            return true;
        }
        false
    }

    /// The last figure announced (or the baseline).
    pub fn announced(&self) -> Option<u32> {
        self.announced
    }
}

/// Computes signals once a second until the control thread stops.
pub async fn run(store: Rc<RefCell<Store>>, snapshot: Rc<RefCell<Arc<Snapshot>>>) {
    let instance = webhook::instance();
    let mut announcer = Announcer::default();
    let mut queue: Option<Rc<Queue>> = None;
    let mut last_sent: Option<(u32, u64)> = None;
    loop {
        monoio::time::sleep(EVAL_INTERVAL).await;
        let snap = snapshot.borrow().clone();
        let cfg = &snap.config.signals;
        queue = match (&cfg.webhook, queue.take()) {
            (Some(h), Some(q)) => {
                q.set_hook(h);
                Some(q)
            }
            (Some(h), None) => Some(Queue::new(h.clone())),
            (None, _) => None,
        };
        let names: Vec<&str> = snap
            .config
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        let mut report = compute(&store.borrow(), cfg, &names);
        let previous = announcer.announced();
        if announcer.should_announce(report.recommended_instances, cfg.cooldown, Instant::now()) {
            let at = webhook::unix_now();
            tracing::info!(
                recommended_instances = report.recommended_instances,
                previous = previous.unwrap_or(0),
                current_instances = report.current_instances,
                utilization = report.utilization,
                target_utilization = report.target_utilization,
                "scaling recommendation changed"
            );
            if let Some(q) = &queue {
                q.push(
                    json!({
                        "event": "recommendation_changed",
                        "recommended_instances": report.recommended_instances,
                        "previous_recommendation": previous,
                        "current_instances": report.current_instances,
                        "utilization": report.utilization,
                        "target_utilization": report.target_utilization,
                        "formula": report.formula(),
                        "instance": instance,
                        "at": at,
                    })
                    .to_string(),
                );
                last_sent = Some((report.recommended_instances, at));
            }
        }
        report.webhook = queue.as_ref().map(|q| (q.url(), q.status(), last_sent));
        store.borrow_mut().signals = Some(report);
    }
}

/// The scaling figures for scrapers (KEDA, an HPA on external metrics).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counters, StatsDelta, WorkerGauges};

    #[test]
    fn hpa_rule() {
        assert_eq!(recommend(2, 0.5, 0.5), 2);
        assert_eq!(recommend(2, 0.51, 0.5), 3);
        assert_eq!(recommend(2, 0.01, 0.5), 1);
        assert_eq!(recommend(4, 0.0, 0.6), 1);
        assert_eq!(recommend(3, 0.9, 0.6), 5);
        assert_eq!(recommend(1, f64::NAN, 0.6), 1);
    }

    #[test]
    fn imbalance_ratio() {
        assert_eq!(imbalance(&[]), 1.0);
        assert_eq!(imbalance(&[0, 0]), 1.0);
        assert_eq!(imbalance(&[10, 10]), 1.0);
        assert_eq!(imbalance(&[30, 10]), 1.5);
        assert_eq!(imbalance(&[40, 0]), 2.0);
    }

    #[test]
    fn announcements_respect_the_cooldown() {
        let t0 = Instant::now();
        let cd = Duration::from_secs(10);
        let mut a = Announcer::default();
        assert!(
            !a.should_announce(1, cd, t0),
            "the first figure is the baseline"
        );
        assert!(!a.should_announce(1, cd, t0));
        assert!(a.should_announce(3, cd, t0 + Duration::from_secs(1)));
        assert!(!a.should_announce(1, cd, t0 + Duration::from_secs(2)));
        assert!(a.should_announce(1, cd, t0 + Duration::from_secs(11)));
        assert_eq!(a.announced(), Some(1));
    }

    #[test]
    fn report_from_store() {
        let mut store = Store::new(2);
        let delta = |worker, cpu_ns, requests| StatsDelta {
            worker,
            global: Counters {
                requests,
                ..Default::default()
            },
            gauges: WorkerGauges {
                cpu_ns,
                ..Default::default()
            },
            ..Default::default()
        };
        store.apply(&delta(0, 0, 0));
        store.apply(&delta(1, 0, 0));
        store.close_second();
        let cfg = Signals {
            target_utilization: 0.5,
            current_instances: 2,
            window: Duration::from_secs(5),
            ..Default::default()
        };
        let idle = compute(&store, &cfg, &["app"]);
        assert_eq!(idle.recommended_instances, 1);
        assert_eq!(idle.imbalance_ratio, 1.0);
        assert_eq!(idle.upstreams[0].name, "app");
        // Both workers busy the whole interval (CPU time = wall time, clamped to 1).
        store.apply(&delta(0, 10_000_000_000, 300));
        store.apply(&delta(1, 10_000_000_000, 100));
        store.close_second();
        let busy = compute(&store, &cfg, &["app"]);
        assert!(busy.utilization > 0.4, "{busy:?}");
        assert!(busy.recommended_instances >= 2, "{busy:?}");
        assert_eq!(busy.imbalance_ratio, 1.5);
        assert!(busy.formula().starts_with("ceil(2 × "));
        let mut o = String::new();
        crate::control::prometheus::signal_lines(&mut o, &busy);
        assert!(o.contains("sluice_upstream_5xx_per_second{upstream=\"app\"} 0.0000\n"));
    }
}
