//! Alert rules (`[alerts.NAME]`): evaluated once a second on the control thread from the merged
//! statistics, with hysteresis (fire above `threshold`, resolve at or below `clear_below`). Each
//! transition is logged and, when the rule has a webhook, queued for delivery (`webhook`). Never on a
//! worker and never waiting on a receiver: evaluation only reads the `Store` and queues JSON.

use super::stats::Store;
use super::status::{AlertStatus, Transition};
use super::webhook::{self, Queue};
use crate::config::monitoring::{Alert, AlertMetric, AlertScope};
use crate::snapshot::Snapshot;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How often rules are evaluated.
pub const EVAL_INTERVAL: Duration = Duration::from_secs(1);

/// The config name of a metric.
pub fn metric_name(m: AlertMetric) -> &'static str {
    match m {
        AlertMetric::ErrorRatio => "error_ratio",
        AlertMetric::P99LatencyMs => "p99_latency_ms",
        AlertMetric::UpstreamUnhealthy => "upstream_unhealthy",
        AlertMetric::RateLimitedPerSecond => "rate_limited_per_second",
        AlertMetric::WorkerUtilization => "worker_utilization",
        AlertMetric::QuotaUsed => "quota_used",
        AlertMetric::AcmeFailures => "acme_failures",
    }
}

/// The config form of a scope: "global", "route:NAME", "upstream:NAME".
pub fn scope_label(s: &AlertScope) -> String {
    match s {
        AlertScope::Global => "global".into(),
        AlertScope::Route(r) => format!("route:{r}"),
        AlertScope::Upstream(u) => format!("upstream:{u}"),
        AlertScope::Consumer(c) => format!("consumer:{c}"),
    }
}

/// The rule's metric now, over its window.
///
/// - `error_ratio`: (5xx + no response) / requests; 0 without requests. For an upstream, the requests
///   of the routes that reach only it (see `stats::ScopeSecond` for upstreams that a route splits to).
/// - `p99_latency_ms`: total latency (global, route) or time to first byte (upstream); 0 without data.
/// - `upstream_unhealthy`: endpoints ejected or down now (the window does not apply).
/// - `rate_limited_per_second`: policy rejections / window seconds.
/// - `worker_utilization`: the busiest worker's utilization averaged over the window.
/// - `acme_failures`: ACME orders failed since the last success, of the name with the most (now).
pub fn measure(a: &Alert, store: &Store) -> f64 {
    let n = Store::window_secs(a.window);
    match (a.metric, &a.scope) {
        (AlertMetric::ErrorRatio, AlertScope::Global) => {
            let win = store.window(n);
            let (req, err) = (win.requests, win.errors_5xx);
            if req == 0 {
                0.0
            } else {
                err as f64 / req as f64
            }
        }
        (AlertMetric::ErrorRatio, AlertScope::Route(r)) => store.route_window(r, n).error_ratio(),
        (AlertMetric::ErrorRatio, AlertScope::Upstream(u)) => {
            store.upstream_window(u, n).error_ratio()
        }
        (AlertMetric::P99LatencyMs, AlertScope::Global) => {
            let h = store.window(n).latency;
            h.as_ref()
                .filter(|h| !h.is_empty())
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0)
        }
        (AlertMetric::P99LatencyMs, AlertScope::Route(r)) => {
            store.route_window(r, n).quantile_ms(0.99)
        }
        (AlertMetric::P99LatencyMs, AlertScope::Upstream(u)) => {
            store.upstream_window(u, n).quantile_ms(0.99)
        }
        (AlertMetric::UpstreamUnhealthy, AlertScope::Upstream(u)) => {
            store.unhealthy_endpoints(Some(u)) as f64
        }
        // Validation allows no route scope here; treat it as global rather than panic.
        (AlertMetric::UpstreamUnhealthy, _) => store.unhealthy_endpoints(None) as f64,
        (AlertMetric::RateLimitedPerSecond, _) => {
            let rejected = store.window(n).policy_rejections;
            rejected as f64 / store.covered(n) as f64
        }
        (AlertMetric::WorkerUtilization, _) => {
            store.utilization_window(n).into_iter().fold(0.0, f64::max)
        }
        // Validation allows a consumer scope for `quota_used` only.
        (AlertMetric::ErrorRatio | AlertMetric::P99LatencyMs, AlertScope::Consumer(_)) => 0.0,
        // The largest share; each consumer's own state is kept per instance (`Rule::consumers`).
        (AlertMetric::QuotaUsed, _) => quota_shares(a, store).fold(0.0, |m, (_, v)| m.max(v)),
        // Now, like `upstream_unhealthy`: the window does not apply.
        (AlertMetric::AcmeFailures, _) => store
            .acme
            .iter()
            .map(|c| c.consecutive_failures)
            .max()
            .unwrap_or(0) as f64,
    }
}

/// The consumers a `quota_used` rule looks at, with the share of its quota each used.
fn quota_shares<'a>(a: &'a Alert, store: &'a Store) -> impl Iterator<Item = (&'a Arc<str>, f64)> {
    store
        .quota_used
        .iter()
        .filter(move |(c, _)| match &a.scope {
            AlertScope::Consumer(name) => ***c == **name,
            _ => true,
        })
        .map(|(c, v)| (c, *v))
}

/// The next state under hysteresis.
pub fn next_firing(firing: bool, value: f64, threshold: f64, clear_below: f64) -> bool {
    if firing {
        value > clear_below
    } else {
        value > threshold
    }
}

struct Rule {
    cfg: Alert,
    /// `quota_used`: the consumers firing now (the rule fires while any does).
    consumers: std::collections::BTreeSet<Arc<str>>,
    firing: bool,
    value: f64,
    since: u64,
    last: Option<Transition>,
    queue: Option<Rc<Queue>>,
}

/// The rule set and its state; owned by the evaluation task.
pub struct Alerts {
    rules: Vec<Rule>,
}

impl Alerts {
    /// Rules from config, all ok as of `now`.
    pub fn new(cfg: &[Alert], now: u64) -> Alerts {
        let mut a = Alerts { rules: Vec::new() };
        a.reload(cfg, now);
        a
    }

    /// Takes a reloaded rule set; a rule keeping its name keeps its state and its webhook queue.
    pub fn reload(&mut self, cfg: &[Alert], now: u64) {
        let mut old = std::mem::take(&mut self.rules);
        for c in cfg {
            let rule = match old.iter().position(|r| r.cfg.name == c.name) {
                Some(i) => {
                    let mut r = old.swap_remove(i);
                    r.queue = match (&c.webhook, r.queue.take()) {
                        (Some(h), Some(q)) => {
                            q.set_hook(h);
                            Some(q)
                        }
                        (Some(h), None) => Some(Queue::new(h.clone())),
                        (None, _) => None,
                    };
                    r.cfg = c.clone();
                    r
                }
                None => Rule {
                    cfg: c.clone(),
                    consumers: Default::default(),
                    firing: false,
                    value: 0.0,
                    since: now,
                    last: None,
                    queue: c.webhook.clone().map(Queue::new),
                },
            };
            self.rules.push(rule);
        }
    }

    /// Evaluates every rule; returns the rules that changed state, with their transition (and the
    /// consumer, for `quota_used`).
    pub fn evaluate(
        &mut self,
        store: &Store,
        now: u64,
    ) -> Vec<(usize, Transition, Option<Arc<str>>)> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter_mut().enumerate() {
            if r.cfg.metric == AlertMetric::QuotaUsed {
                evaluate_quota(i, r, store, now, &mut out);
                continue;
            }
            let v = measure(&r.cfg, store);
            r.value = if v.is_finite() { v } else { 0.0 };
            let next = next_firing(r.firing, r.value, r.cfg.threshold, r.cfg.clear_below);
            if next != r.firing {
                r.firing = next;
                r.since = now;
                let t = Transition {
                    firing: next,
                    value: r.value,
                    at: now,
                };
                r.last = Some(t);
                out.push((i, t, None));
            }
        }
        out
    }

    /// The webhook body of a transition of rule `i` (of `consumer`, for `quota_used`).
    pub fn event_body(
        &self,
        i: usize,
        t: &Transition,
        consumer: Option<&str>,
        instance: &str,
    ) -> Option<String> {
        let r = self.rules.get(i)?;
        let mut v = json!({
                "alert": r.cfg.name,
                "state": t.state(),
                "metric": metric_name(r.cfg.metric),
                "scope": scope_label(&r.cfg.scope),
                "value": t.value,
                "threshold": r.cfg.threshold,
                "window_seconds": Store::window_secs(r.cfg.window),
                "instance": instance,
                "at": t.at,
        });
        if let (Some(c), Some(o)) = (consumer, v.as_object_mut()) {
            o.insert("consumer".into(), json!(c));
        }
        Some(v.to_string())
    }

    /// Every rule's state.
    pub fn statuses(&self) -> Vec<AlertStatus> {
        self.rules
            .iter()
            .map(|r| AlertStatus {
                rule: r.cfg.clone(),
                firing: r.firing,
                value: r.value,
                since: r.since,
                last_transition: r.last,
                webhook: r.queue.as_ref().map(|q| (q.url(), q.status())),
            })
            .collect()
    }

    /// Logs transition `t` of rule `i` and queues its webhook.
    fn announce(&self, i: usize, t: &Transition, consumer: Option<&str>, instance: &str) {
        let Some(r) = self.rules.get(i) else { return };
        let scope = scope_label(&r.cfg.scope);
        let metric = metric_name(r.cfg.metric);
        let who = consumer.unwrap_or("-");
        if t.firing {
            tracing::warn!(alert = %r.cfg.name, metric, scope = %scope, consumer = who, value = t.value, threshold = r.cfg.threshold, "alert firing");
        } else {
            tracing::info!(alert = %r.cfg.name, metric, scope = %scope, consumer = who, value = t.value, clear_below = r.cfg.clear_below, "alert resolved");
        }
        if let (Some(q), Some(body)) = (&r.queue, self.event_body(i, t, consumer, instance)) {
            q.push(body);
        }
    }
}

/// A `quota_used` rule: each consumer fires once its share reaches the threshold (a quota mark is
/// crossed at, not above, it) and resolves when it falls below `clear_below` (a new period), or when
/// it no longer has a quota.
fn evaluate_quota(
    i: usize,
    r: &mut Rule,
    store: &Store,
    now: u64,
    out: &mut Vec<(usize, Transition, Option<Arc<str>>)>,
) {
    let mut max = 0.0f64;
    let mut seen = std::collections::BTreeSet::new();
    for (c, v) in quota_shares(&r.cfg, store) {
        let v = if v.is_finite() { v } else { 0.0 };
        max = max.max(v);
        seen.insert(c.clone());
        let firing = r.consumers.contains(c);
        let next = if firing {
            v >= r.cfg.clear_below
        } else {
            v >= r.cfg.threshold
        };
        if next != firing {
            if next {
                r.consumers.insert(c.clone());
            } else {
                r.consumers.remove(c);
            }
            let t = Transition {
                firing: next,
                value: v,
                at: now,
            };
            r.last = Some(t);
            out.push((i, t, Some(c.clone())));
        }
    }
    let gone: Vec<Arc<str>> = r.consumers.difference(&seen).cloned().collect();
    for c in gone {
        r.consumers.remove(&c);
        let t = Transition {
            firing: false,
            value: 0.0,
            at: now,
        };
        r.last = Some(t);
        out.push((i, t, Some(c)));
    }
    r.value = max;
    let any = !r.consumers.is_empty();
    if any != r.firing {
        r.firing = any;
        r.since = now;
    }
}

/// Evaluates the rules of the current snapshot once a second until the control thread stops; takes
/// the new rule set when the snapshot's generation changes.
pub async fn run(store: Rc<RefCell<Store>>, snapshot: Rc<RefCell<Arc<Snapshot>>>) {
    let instance = webhook::instance();
    let mut generation = snapshot.borrow().generation;
    let mut alerts = Alerts::new(&snapshot.borrow().config.alerts, webhook::unix_now());
    loop {
        monoio::time::sleep(EVAL_INTERVAL).await;
        let now = webhook::unix_now();
        let snap = snapshot.borrow().clone();
        if snap.generation != generation {
            generation = snap.generation;
            alerts.reload(&snap.config.alerts, now);
        }
        let changed = alerts.evaluate(&store.borrow(), now);
        for (i, t, consumer) in &changed {
            alerts.announce(*i, t, consumer.as_deref(), &instance);
        }
        store.borrow_mut().alerts = alerts.statuses();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counters, RouteDelta, StatsDelta};

    fn rule(
        name: &str,
        metric: AlertMetric,
        scope: AlertScope,
        threshold: f64,
        clear: f64,
    ) -> Alert {
        Alert {
            name: name.into(),
            metric,
            scope,
            threshold,
            clear_below: clear,
            window: Duration::from_secs(2),
            webhook: None,
        }
    }

    fn second(store: &mut Store, route: &str, ok: u64, failed: u64) {
        let mut c = Counters {
            requests: ok + failed,
            ..Default::default()
        };
        c.status[2] = ok;
        c.status[5] = failed;
        store.apply(&StatsDelta {
            worker: 0,
            global: c.clone(),
            routes: vec![RouteDelta {
                route: Arc::from(route),
                c,
                total: None,
            }],
            ..Default::default()
        });
        store.close_second();
    }

    #[test]
    fn hysteresis() {
        assert!(next_firing(false, 0.6, 0.5, 0.1));
        assert!(!next_firing(false, 0.5, 0.5, 0.1));
        assert!(next_firing(true, 0.3, 0.5, 0.1));
        assert!(!next_firing(true, 0.1, 0.5, 0.1));
    }

    #[test]
    fn windows_round_up_to_whole_seconds() {
        assert_eq!(Store::window_secs(Duration::from_millis(1500)), 2);
        assert_eq!(Store::window_secs(Duration::from_millis(200)), 1);
        assert_eq!(Store::window_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn error_ratio_fires_and_resolves_per_route() {
        let mut store = Store::new(1);
        let cfg = vec![
            rule(
                "r",
                AlertMetric::ErrorRatio,
                AlertScope::Route("bad".into()),
                0.5,
                0.1,
            ),
            rule("g", AlertMetric::ErrorRatio, AlertScope::Global, 0.9, 0.9),
        ];
        let mut a = Alerts::new(&cfg, 0);
        assert!(a.evaluate(&store, 1).is_empty(), "no traffic: ratio 0");
        second(&mut store, "bad", 1, 9);
        second(&mut store, "good", 100, 0);
        let t = a.evaluate(&store, 2);
        assert_eq!(t.len(), 1, "only the route rule fires: {t:?}");
        assert_eq!(t[0].0, 0);
        assert!(t[0].1.firing);
        assert!((t[0].1.value - 0.9).abs() < 1e-9);
        // Between clear_below and threshold: still firing.
        second(&mut store, "bad", 8, 2);
        second(&mut store, "bad", 8, 2);
        assert!(a.evaluate(&store, 3).is_empty());
        assert!(a.statuses()[0].firing);
        second(&mut store, "bad", 10, 0);
        second(&mut store, "bad", 10, 0);
        let t = a.evaluate(&store, 4);
        assert_eq!(t.len(), 1);
        assert!(!t[0].1.firing);
        let body = a.event_body(0, &t[0].1, None, "host").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["state"], "resolved");
        assert_eq!(v["scope"], "route:bad");
        assert_eq!(v["metric"], "error_ratio");
        assert_eq!(v["window_seconds"], 2);
        assert_eq!(v["at"], 4);
    }

    #[test]
    fn quota_used_fires_per_consumer_at_its_mark() {
        let mut store = Store::new(1);
        let cfg = vec![
            rule("q80", AlertMetric::QuotaUsed, AlertScope::Global, 0.8, 0.8),
            rule(
                "bob",
                AlertMetric::QuotaUsed,
                AlertScope::Consumer("bob".into()),
                1.0,
                1.0,
            ),
        ];
        let mut a = Alerts::new(&cfg, 0);
        store.quota_used.insert(Arc::from("alice"), 0.8);
        store.quota_used.insert(Arc::from("bob"), 0.5);
        let t = a.evaluate(&store, 1);
        assert_eq!(t.len(), 1, "alice at exactly 80%: {t:?}");
        assert_eq!((t[0].0, t[0].2.as_deref()), (0, Some("alice")));
        store.quota_used.insert(Arc::from("bob"), 1.0);
        let t = a.evaluate(&store, 2);
        let who: Vec<_> = t.iter().map(|x| (x.0, x.2.as_deref())).collect();
        assert_eq!(
            who,
            [(0, Some("bob")), (1, Some("bob"))],
            "bob crossed both; alice fired already"
        );
        let body = a.event_body(1, &t[1].1, Some("bob"), "host").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["consumer"].as_str(), v["metric"].as_str()),
            (Some("bob"), Some("quota_used"))
        );
        // A new period: both resolve.
        store.quota_used.insert(Arc::from("alice"), 0.0);
        store.quota_used.remove("bob");
        let t = a.evaluate(&store, 3);
        assert_eq!(t.len(), 3, "{t:?}");
        assert!(t.iter().all(|x| !x.1.firing));
        assert!(!a.statuses()[0].firing);
    }

    #[test]
    fn reload_keeps_state_by_name() {
        let mut store = Store::new(1);
        let cfg = vec![rule(
            "r",
            AlertMetric::ErrorRatio,
            AlertScope::Global,
            0.5,
            0.1,
        )];
        let mut a = Alerts::new(&cfg, 0);
        second(&mut store, "x", 0, 10);
        assert_eq!(a.evaluate(&store, 1).len(), 1);
        let mut changed = cfg.clone();
        changed[0].threshold = 0.7;
        changed.push(rule(
            "new",
            AlertMetric::RateLimitedPerSecond,
            AlertScope::Global,
            1.0,
            1.0,
        ));
        a.reload(&changed, 5);
        let s = a.statuses();
        assert_eq!(s.len(), 2);
        assert!(s[0].firing && s[0].since == 1 && s[0].rule.threshold == 0.7);
        assert!(!s[1].firing && s[1].since == 5);
        a.reload(&[], 6);
        assert!(a.statuses().is_empty());
    }

    #[test]
    fn prometheus_lines() {
        let mut o = String::new();
        let a = Alerts::new(
            &[rule(
                "a\"b",
                AlertMetric::WorkerUtilization,
                AlertScope::Global,
                0.9,
                0.8,
            )],
            0,
        );
        crate::control::prometheus::alert_lines(&mut o, &a.statuses());
        assert!(
            o.contains("sluice_alert_firing{alert=\"a\\\"b\"} 0\n"),
            "{o}"
        );
    }
}
