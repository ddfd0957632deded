//! The Prometheus text exposition (version 0.0.4) of everything the control thread knows: request and
//! upstream counters, histograms, worker families, alert and scaling-signal lines. All exposition text
//! lives here, so the modules that compute those figures never import one another for it.

use super::limits::LeaseCounts;
use super::stats::{LimitView, Store, WorkerView};
use super::status::{AlertStatus, SignalsReport};
use super::usage::live::{ConsumerFigures, LiveUsage};
use crate::metrics::{ERROR_KINDS, ERROR_KIND_NAMES};
use crate::usage::OTHER;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The JWT verifiers' key refresh counters and key counts.
pub fn render_auth(list: &[crate::msg::VerifierStatus], o: &mut String) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(o, "# HELP sluice_auth_key_refreshes_total Successful key loads per JWT verifier.\n# TYPE sluice_auth_key_refreshes_total counter");
    for v in list {
        let _ = writeln!(
            o,
            "sluice_auth_key_refreshes_total{{auth=\"{}\"}} {}",
            esc(&v.name),
            v.refreshes
        );
    }
    let _ = writeln!(o, "# HELP sluice_auth_key_refresh_failures_total Failed key fetches per JWT verifier (the last good keys stay in use).\n# TYPE sluice_auth_key_refresh_failures_total counter");
    for v in list {
        let _ = writeln!(
            o,
            "sluice_auth_key_refresh_failures_total{{auth=\"{}\"}} {}",
            esc(&v.name),
            v.failures
        );
    }
    let _ = writeln!(
        o,
        "# HELP sluice_auth_keys Keys loaded per JWT verifier.\n# TYPE sluice_auth_keys gauge"
    );
    for v in list {
        let _ = writeln!(
            o,
            "sluice_auth_keys{{auth=\"{}\"}} {}",
            esc(&v.name),
            v.keys
        );
    }
}

/// The limit series: per limit (and quota period) what the workers' shards counted and the keys
/// they hold, then the lease traffic the control thread's pools saw and how many pools it holds.
pub fn render_limits(
    limits: &BTreeMap<Arc<str>, LimitView>,
    lease: &LeaseCounts,
    pools: usize,
    o: &mut String,
) {
    let families: [(&str, &str, &str, fn(&LimitView) -> u64); 7] = [
        (
            "sluice_limit_admitted_total",
            "Checks a limit admitted (a token spent), by limit; quotas as limit=\"quota:day\" and \"quota:month\".",
            "counter",
            |v| v.counts.admitted,
        ),
        (
            "sluice_limit_rejected_total",
            "Checks a limit refused, by limit (a quota: refused as exhausted).",
            "counter",
            |v| v.counts.rejected,
        ),
        (
            "sluice_limit_keys",
            "Keys held, summed over workers (a key two workers hold counts twice).",
            "gauge",
            |v| v.keys_held(),
        ),
        (
            "sluice_limit_evicted_total",
            "Keys a worker dropped to stay within max_keys, by limit.",
            "counter",
            |v| v.counts.evicted,
        ),
        (
            "sluice_limit_lease_asks_total",
            "Lease asks workers sent to the control thread, by limit.",
            "counter",
            |v| v.counts.asks,
        ),
        (
            "sluice_limit_lease_grants_total",
            "Lease grants workers received, by limit.",
            "counter",
            |v| v.counts.grants,
        ),
        (
            "sluice_limit_lease_tokens_total",
            "Tokens those grants carried, by limit.",
            "counter",
            |v| v.counts.granted_tokens,
        ),
    ];
    for (name, help, kind, value) in families {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (limit, v) in limits {
            let _ = writeln!(o, "{name}{{limit=\"{}\"}} {}", esc(limit), value(v));
        }
    }
    let _ = writeln!(o, "# HELP sluice_limit_pool_messages_total Limit messages on the control thread: asks (every worker message about a key), grants and recalls sent, stale (asks about a limit no longer configured).\n# TYPE sluice_limit_pool_messages_total counter");
    for (kind, n) in [
        ("asks", lease.asks),
        ("grants", lease.grants),
        ("recalls", lease.recalls),
        ("stale", lease.stale),
    ] {
        let _ = writeln!(o, "sluice_limit_pool_messages_total{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(o, "# HELP sluice_limit_pools Limit pools the control thread holds (rate limit keys with recent traffic, quota consumers).\n# TYPE sluice_limit_pools gauge\nsluice_limit_pools {pools}");
}

/// Per-consumer request, 429 and error counters: the consumers `LiveUsage` names (at most
/// `METRIC_CONSUMERS`, kept once given a series) and the sum of the rest as `usage::OTHER`, so a
/// flood of distinct consumers cannot grow the exposition. Naming happens here, at scrape time.
pub fn render_consumers(live: &mut LiveUsage, o: &mut String) {
    let (named, rest) = live.metric_series();
    let families: [(&str, &str, fn(&ConsumerFigures) -> u64); 3] = [
        (
            "sluice_consumer_requests_total",
            "Requests by consumer (the largest get their own series, the rest are consumer=\"(other)\").",
            |f| f.requests,
        ),
        (
            "sluice_consumer_limited_total",
            "Requests answered 429 (rate limits and quotas), by consumer.",
            |f| f.limited,
        ),
        (
            "sluice_consumer_errors_total",
            "Requests answered 5xx or not at all, by consumer.",
            |f| f.errors,
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (c, f) in &named {
            let _ = writeln!(o, "{name}{{consumer=\"{}\"}} {}", esc(c), value(f));
        }
        let _ = writeln!(o, "{name}{{consumer=\"{OTHER}\"}} {}", value(&rest));
    }
}

/// Prometheus text exposition (version 0.0.4).
pub fn render(store: &Store, generation: u64) -> String {
    let mut o = String::with_capacity(8192);
    let _ = writeln!(o, "# HELP sluice_build_info Build information.\n# TYPE sluice_build_info gauge\nsluice_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(o, "# HELP sluice_uptime_seconds Seconds since start.\n# TYPE sluice_uptime_seconds gauge\nsluice_uptime_seconds {}", store.uptime_secs());
    let _ = writeln!(o, "# HELP sluice_config_generation Config generation in use (1 = as started; +1 per reload).\n# TYPE sluice_config_generation gauge\nsluice_config_generation {generation}");

    let _ = writeln!(o, "# HELP sluice_requests_total Requests finished, by route.\n# TYPE sluice_requests_total counter");
    for (name, r) in &store.routes {
        let _ = writeln!(
            o,
            "sluice_requests_total{{route=\"{}\"}} {}",
            esc(name),
            r.c.requests
        );
    }
    let _ = writeln!(o, "# HELP sluice_responses_total Responses by route and status class (\"none\" = closed without a response).\n# TYPE sluice_responses_total counter");
    for (name, r) in &store.routes {
        for (i, class) in ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .enumerate()
        {
            if r.c.status[i] > 0 {
                let _ = writeln!(
                    o,
                    "sluice_responses_total{{route=\"{}\",class=\"{class}\"}} {}",
                    esc(name),
                    r.c.status[i]
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP sluice_errors_total Failed requests by kind.\n# TYPE sluice_errors_total counter"
    );
    for (i, kind) in ERROR_KIND_NAMES.iter().enumerate().take(ERROR_KINDS) {
        let _ = writeln!(
            o,
            "sluice_errors_total{{kind=\"{kind}\"}} {}",
            store.global.errors[i]
        );
    }
    let _ = writeln!(o, "# HELP sluice_auth_total Authentication outcomes by route, method and outcome.\n# TYPE sluice_auth_total counter");
    for ((route, method, outcome), n) in &store.auth {
        let _ = writeln!(
            o,
            "sluice_auth_total{{route=\"{}\",method=\"{}\",outcome=\"{outcome}\"}} {n}",
            esc(route),
            esc(method)
        );
    }
    if !store.introspection.is_empty() {
        let _ = writeln!(o, "# HELP sluice_auth_introspection_calls_total Calls to token introspection endpoints by verifier and result (active, inactive, failed); cache hits make none.\n# TYPE sluice_auth_introspection_calls_total counter");
        for (name, st) in &store.introspection {
            for (result, n) in [
                ("active", st.active),
                ("inactive", st.inactive),
                ("failed", st.failures),
            ] {
                let _ = writeln!(
                    o,
                    "sluice_auth_introspection_calls_total{{auth=\"{}\",result=\"{result}\"}} {n}",
                    esc(name)
                );
            }
        }
    }
    let _ = writeln!(o, "# HELP sluice_route_errors_total Failed requests by route and kind (kinds with none omitted).\n# TYPE sluice_route_errors_total counter");
    for (name, r) in &store.routes {
        for (i, kind) in ERROR_KIND_NAMES.iter().enumerate().take(ERROR_KINDS) {
            if r.c.errors[i] > 0 {
                let _ = writeln!(
                    o,
                    "sluice_route_errors_total{{route=\"{}\",kind=\"{kind}\"}} {}",
                    esc(name),
                    r.c.errors[i]
                );
            }
        }
    }
    let _ = writeln!(o, "# HELP sluice_received_bytes_total Bytes received from clients, by route.\n# TYPE sluice_received_bytes_total counter");
    for (name, r) in &store.routes {
        let _ = writeln!(
            o,
            "sluice_received_bytes_total{{route=\"{}\"}} {}",
            esc(name),
            r.c.bytes_in
        );
    }
    let _ = writeln!(o, "# HELP sluice_sent_bytes_total Bytes sent to clients, by route.\n# TYPE sluice_sent_bytes_total counter");
    for (name, r) in &store.routes {
        let _ = writeln!(
            o,
            "sluice_sent_bytes_total{{route=\"{}\"}} {}",
            esc(name),
            r.c.bytes_out
        );
    }
    let _ = writeln!(o, "# HELP sluice_request_duration_seconds Time from complete request head to the end of the response, by route.\n# TYPE sluice_request_duration_seconds histogram");
    for (name, r) in &store.routes {
        histogram(
            &mut o,
            "sluice_request_duration_seconds",
            &format!("route=\"{}\"", esc(name)),
            r.hist.as_ref(),
            r.c.latency_sum_us,
            r.c.requests,
        );
    }

    let _ = writeln!(o, "# HELP sluice_upstream_requests_total Requests sent to an upstream endpoint (each attempt).\n# TYPE sluice_upstream_requests_total counter");
    for ((u, a), e) in &store.endpoints {
        let _ = writeln!(
            o,
            "sluice_upstream_requests_total{{upstream=\"{}\",endpoint=\"{a}\"}} {}",
            esc(u),
            e.requests
        );
    }
    let _ = writeln!(o, "# HELP sluice_upstream_failures_total Failed attempts (connect, reset, timeout, bad response).\n# TYPE sluice_upstream_failures_total counter");
    for ((u, a), e) in &store.endpoints {
        let _ = writeln!(
            o,
            "sluice_upstream_failures_total{{upstream=\"{}\",endpoint=\"{a}\"}} {}",
            esc(u),
            e.failures
        );
    }
    let _ = writeln!(o, "# HELP sluice_upstream_responses_total Responses relayed or generated per endpoint, by status class.\n# TYPE sluice_upstream_responses_total counter");
    for ((u, a), e) in &store.endpoints {
        for (i, class) in ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .enumerate()
        {
            if e.status[i] > 0 {
                let _ = writeln!(o, "sluice_upstream_responses_total{{upstream=\"{}\",endpoint=\"{a}\",class=\"{class}\"}} {}", esc(u), e.status[i]);
            }
        }
    }
    let _ = writeln!(o, "# HELP sluice_upstream_ttfb_seconds Upstream time to first byte of the response head.\n# TYPE sluice_upstream_ttfb_seconds histogram");
    for ((u, a), e) in &store.endpoints {
        let sum_us = e
            .ttfb
            .as_ref()
            .map_or(0, |h| (h.mean() * h.len() as f64) as u64);
        let count = e.ttfb.as_ref().map_or(0, |h| h.len());
        histogram(
            &mut o,
            "sluice_upstream_ttfb_seconds",
            &format!("upstream=\"{}\",endpoint=\"{a}\"", esc(u)),
            e.ttfb.as_ref(),
            sum_us,
            count,
        );
    }
    let eps = store.configured_endpoints();
    let _ = writeln!(o, "# HELP sluice_upstream_healthy 1 when the endpoint passes active checks and no worker has ejected it.\n# TYPE sluice_upstream_healthy gauge");
    for (u, a) in &eps {
        let healthy = store.endpoint_state(u, *a).healthy;
        let _ = writeln!(
            o,
            "sluice_upstream_healthy{{upstream=\"{}\",endpoint=\"{a}\"}} {}",
            esc(u),
            healthy as u8
        );
    }
    let _ = writeln!(o, "# HELP sluice_upstream_in_flight Requests in flight to the endpoint, all workers.\n# TYPE sluice_upstream_in_flight gauge");
    for (u, a) in &eps {
        let inf = store.endpoint_state(u, *a).in_flight;
        let _ = writeln!(
            o,
            "sluice_upstream_in_flight{{upstream=\"{}\",endpoint=\"{a}\"}} {inf}",
            esc(u)
        );
    }
    let _ = writeln!(o, "# HELP sluice_upstream_idle_connections Idle pooled connections to the endpoint, all workers.\n# TYPE sluice_upstream_idle_connections gauge");
    for (u, a) in &eps {
        let idle = store.endpoint_state(u, *a).idle;
        let _ = writeln!(
            o,
            "sluice_upstream_idle_connections{{upstream=\"{}\",endpoint=\"{a}\"}} {idle}",
            esc(u)
        );
    }

    worker_family(
        store,
        &mut o,
        "sluice_worker_utilization",
        "Share of the last interval the worker thread spent on a CPU (0..1).",
        "gauge",
        |w| format!("{:.4}", w.utilization),
    );
    let families: [(&str, &str, &str, fn(&WorkerView) -> u64); 7] = [
        (
            "sluice_worker_requests_total",
            "Requests finished by the worker.",
            "counter",
            |w| w.totals.requests,
        ),
        (
            "sluice_worker_connections",
            "Open client connections.",
            "gauge",
            |w| w.gauges.connections,
        ),
        (
            "sluice_worker_parked_connections",
            "Idle keep-alive connections parked without a session.",
            "gauge",
            |w| w.gauges.parked,
        ),
        (
            "sluice_worker_in_flight",
            "Requests in flight on the worker.",
            "gauge",
            |w| w.gauges.in_flight,
        ),
        (
            "sluice_connections_accepted_total",
            "Client connections accepted.",
            "counter",
            |w| w.gauges.accepted,
        ),
        (
            "sluice_upstream_pool_retired_total",
            "Idle pooled upstream connections closed instead of reused: bytes or a close arrived while idle.",
            "counter",
            |w| w.gauges.pool_retired,
        ),
        (
            "sluice_panics_total",
            "Panics caught: each closed one connection (500 if nothing was sent yet); the worker kept serving.",
            "counter",
            |w| w.gauges.panics,
        ),
    ];
    for (name, help, kind, value) in families {
        worker_family(store, &mut o, name, help, kind, |w| value(w).to_string());
    }
    tls_lines(store, &mut o);
    alert_lines(&mut o, &store.alerts);
    if let Some(s) = &store.signals {
        signal_lines(&mut o, s);
    }
    o
}

/// One metric family with a sample per worker, labelled `worker`.
fn worker_family(
    store: &Store,
    o: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    value: impl Fn(&WorkerView) -> String,
) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (i, w) in store.workers.iter().enumerate() {
        let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", value(w));
    }
}

/// `sluice_alert_firing` and `sluice_alert_value` lines.
pub fn alert_lines(o: &mut String, alerts: &[AlertStatus]) {
    let _ = writeln!(o, "# HELP sluice_alert_firing 1 while the alert rule fires, else 0.\n# TYPE sluice_alert_firing gauge");
    for a in alerts {
        let _ = writeln!(
            o,
            "sluice_alert_firing{{alert=\"{}\"}} {}",
            esc(&a.rule.name),
            a.firing as u8
        );
    }
    let _ = writeln!(o, "# HELP sluice_alert_value The alert rule's metric at its last evaluation.\n# TYPE sluice_alert_value gauge");
    for a in alerts {
        let _ = writeln!(
            o,
            "sluice_alert_value{{alert=\"{}\"}} {}",
            esc(&a.rule.name),
            a.value
        );
    }
}

/// Scaling signal lines.
pub fn signal_lines(o: &mut String, s: &SignalsReport) {
    let _ = writeln!(o, "# HELP sluice_instance_utilization Mean worker utilization over the signals window (0..1).\n# TYPE sluice_instance_utilization gauge\nsluice_instance_utilization {:.4}", s.utilization);
    let _ = writeln!(o, "# HELP sluice_recommended_instances Instances the HPA rule recommends: ceil(current_instances * utilization / target_utilization).\n# TYPE sluice_recommended_instances gauge\nsluice_recommended_instances {}", s.recommended_instances);
    let _ = writeln!(o, "# HELP sluice_core_imbalance_ratio Busiest worker's request rate over the mean, over the signals window (1 = even).\n# TYPE sluice_core_imbalance_ratio gauge\nsluice_core_imbalance_ratio {:.4}", s.imbalance_ratio);
    let _ = writeln!(o, "# HELP sluice_upstream_5xx_per_second 5xx per second per upstream over the signals window (endpoint 5xx plus no-healthy-endpoint 503s).\n# TYPE sluice_upstream_5xx_per_second gauge");
    for u in &s.upstreams {
        let _ = writeln!(
            o,
            "sluice_upstream_5xx_per_second{{upstream=\"{}\"}} {:.4}",
            esc(&u.name),
            u.errors_5xx_per_second
        );
    }
}

/// Escapes a label value (backslash, quote, newline).
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(
    o: &mut String,
    name: &str,
    labels: &str,
    h: Option<&Histogram<u64>>,
    sum_us: u64,
    count: u64,
) {
    for le in BUCKETS {
        let n = h.map_or(0, |h| h.count_between(0, (le * 1e6) as u64));
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(o, "{name}_count{{{labels}}} {count}");
}

/// TLS handshakes and failures by listener, summed over workers. Families appear once a TLS listener
/// has seen a connection.
fn tls_lines(store: &Store, o: &mut String) {
    let mut by: Vec<crate::metrics::TlsCounts> = Vec::new();
    for w in &store.workers {
        for c in &w.gauges.tls {
            match by.iter_mut().find(|b| b.listener == c.listener) {
                Some(b) => {
                    for v in 0..2 {
                        for r in 0..2 {
                            b.handshakes[v][r] += c.handshakes[v][r];
                        }
                    }
                    for (f, n) in b.failures.iter_mut().zip(c.failures) {
                        *f += n;
                    }
                }
                None => by.push(c.clone()),
            }
        }
    }
    if by.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "# HELP sluice_tls_handshakes_total TLS handshakes completed on client listeners.\n# TYPE sluice_tls_handshakes_total counter"
    );
    for b in &by {
        for (v, version) in ["1.2", "1.3"].iter().enumerate() {
            for (r, resumed) in ["false", "true"].iter().enumerate() {
                let _ = writeln!(
                    o,
                    "sluice_tls_handshakes_total{{listener=\"{}\",version=\"{version}\",resumed=\"{resumed}\"}} {}",
                    esc(&b.listener),
                    b.handshakes[v][r]
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP sluice_tls_handshake_failures_total TLS handshakes that failed, by reason.\n# TYPE sluice_tls_handshake_failures_total counter"
    );
    for b in &by {
        for (f, n) in crate::tls::Failure::ALL.iter().zip(b.failures) {
            let _ = writeln!(
                o,
                "sluice_tls_handshake_failures_total{{listener=\"{}\",reason=\"{}\"}} {n}",
                esc(&b.listener),
                f.label()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::usage::live::METRIC_CONSUMERS;
    use crate::usage::{UsageCounts, UsageRow};

    fn row(consumer: &str, class: u8, requests: u64, limited: u64) -> UsageRow {
        UsageRow {
            consumer: Arc::from(consumer),
            route: Arc::from("api"),
            class,
            counts: UsageCounts {
                requests,
                limited,
                ..UsageCounts::default()
            },
        }
    }

    #[test]
    fn consumer_series_are_bounded_escaped_and_add_up() {
        let mut live = LiveUsage::default();
        // An anonymous JWT identity may carry a quote or a backslash.
        live.apply(&[row("a\"b\\c", 2, 100, 0), row("a\"b\\c", 5, 3, 0)], 10);
        let mut total = 103;
        for i in 0..METRIC_CONSUMERS + 10 {
            live.apply(&[row(&format!("c{i}"), 4, i as u64 + 1, 1)], 10);
            total += i as u64 + 1;
        }
        let mut o = String::new();
        render_consumers(&mut live, &mut o);
        assert!(
            o.contains("sluice_consumer_requests_total{consumer=\"a\\\"b\\\\c\"} 103\n"),
            "{o}"
        );
        assert!(o.contains("sluice_consumer_errors_total{consumer=\"a\\\"b\\\\c\"} 3\n"));
        let samples = |family: &str| -> Vec<(String, u64)> {
            o.lines()
                .filter_map(|l| l.strip_prefix(family)?.strip_prefix("{consumer=\""))
                .filter_map(|l| {
                    let (name, n) = l.rsplit_once("\"} ")?;
                    Some((name.to_string(), n.parse().ok()?))
                })
                .collect()
        };
        let requests = samples("sluice_consumer_requests_total");
        assert_eq!(requests.len(), METRIC_CONSUMERS + 1, "{o}");
        assert_eq!(requests.last().map(|r| r.0.as_str()), Some(OTHER));
        assert_eq!(requests.iter().map(|r| r.1).sum::<u64>(), total);
        let limited = samples("sluice_consumer_limited_total");
        assert_eq!(limited.len(), METRIC_CONSUMERS + 1);
        assert_eq!(
            limited.iter().map(|r| r.1).sum::<u64>(),
            METRIC_CONSUMERS as u64 + 10
        );
        assert_eq!(
            samples("sluice_consumer_errors_total")
                .iter()
                .map(|r| r.1)
                .sum::<u64>(),
            3
        );
    }

    #[test]
    fn limit_series_are_escaped_and_typed() {
        let mut limits = BTreeMap::new();
        limits.insert(
            Arc::from("route:a\"b"),
            LimitView {
                counts: crate::limit::shard::ShardCounts {
                    admitted: 7,
                    rejected: 3,
                    evicted: 2,
                    asks: 4,
                    grants: 1,
                    granted_tokens: 9,
                },
                keys: vec![2, 3],
            },
        );
        let lease = LeaseCounts {
            asks: 5,
            grants: 1,
            granted_tokens: 9,
            recalls: 2,
            stale: 0,
        };
        let mut o = String::new();
        render_limits(&limits, &lease, 6, &mut o);
        for line in [
            "sluice_limit_admitted_total{limit=\"route:a\\\"b\"} 7",
            "sluice_limit_rejected_total{limit=\"route:a\\\"b\"} 3",
            "sluice_limit_keys{limit=\"route:a\\\"b\"} 5",
            "sluice_limit_evicted_total{limit=\"route:a\\\"b\"} 2",
            "sluice_limit_lease_asks_total{limit=\"route:a\\\"b\"} 4",
            "sluice_limit_lease_grants_total{limit=\"route:a\\\"b\"} 1",
            "sluice_limit_lease_tokens_total{limit=\"route:a\\\"b\"} 9",
            "# TYPE sluice_limit_keys gauge",
            "sluice_limit_pool_messages_total{kind=\"asks\"} 5",
            "sluice_limit_pool_messages_total{kind=\"recalls\"} 2",
            "sluice_limit_pools 6",
        ] {
            assert!(o.lines().any(|l| l == line), "{line} in\n{o}");
        }
        let parsed =
            prometheus_parse::Scrape::parse(o.lines().map(|l| Ok(l.to_string()))).expect("parses");
        assert_eq!(parsed.samples.len(), 7 + 4 + 1);
    }
}
