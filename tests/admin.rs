//! Admin API on the real binary: merged per-worker counts equal what was sent (under load on two
//! workers), `/metrics` is valid Prometheus text (checked by `prometheus-parse` and by a strict
//! line-format checker), the JSON shapes of `/status`, `/workers`, `/routes`, `/upstreams`, runtime
//! endpoint control, the bearer token, and `POST /reload`.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    http_get(admin, path, &[])
}

fn admin_json(admin: SocketAddr, path: &str) -> Value {
    let r = admin_get(admin, path);
    assert_eq!(r.status, 200, "GET {path}: {r}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {r}"))
}

fn admin_post(admin: SocketAddr, path: &str) -> Response {
    Conn::connect(admin).request("POST", path, &[], b"")
}

/// Two routes to a live and a dead upstream; anything else is 404. The dead upstream's only
/// endpoint fails its active health check at once, so every request to it is a 503 (no healthy
/// endpoint) rather than a mix of 502s and 503s.
fn load_config(backend: SocketAddr, dead: SocketAddr) -> String {
    config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             {}{}\
             [routes.ok]\npath = \"/ok/*\"\nupstream = \"app\"\n\n\
             [routes.down]\npath = \"/down/*\"\nupstream = \"dead\"\n\n\
             [alerts.errors]\nmetric = \"error_ratio\"\nthreshold = 0.99\nwindow = \"5s\"\n\n\
             [signals]\ntarget_utilization = 0.5\ncurrent_instances = 2\nwindow = \"5s\"\n",
            upstream("app", &[backend], ""),
            upstream(
                "dead",
                &[dead],
                "health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"200ms\", unhealthy_threshold = 1 }"
            ),
        ),
    )
}

/// One sample of the scrape: (metric, labels) -> value (histograms: their `_count`).
fn samples(text: &str) -> HashMap<(String, BTreeMap<String, String>), f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads /metrics");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let v = match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert((s.metric, labels), v);
    }
    out
}

fn sample(
    all: &HashMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.get(&(name.to_string(), labels)).copied()
}

#[test]
fn merged_counts_equal_what_was_sent_on_two_workers() {
    let be = Backend::fixed("ok");
    let dead = refused_addr();
    let sl = Sluice::start(&load_config(be.addr(), dead));
    let admin = sl.admin_addr().expect("admin listener");
    // Wait until the dead upstream is marked down, so its requests are all 503.
    assert!(
        eventually(Duration::from_secs(5), || {
            admin_json(admin, "/upstreams")["upstreams"]
                .as_array()
                .and_then(|u| u.iter().find(|u| u["name"] == "dead"))
                .is_some_and(|u| u["endpoints"][0]["healthy"] == false)
        }),
        "the dead endpoint never failed its health check"
    );

    // 4 threads × 40 connections × (ok, down, miss) on keep-alive, a fresh connection each time.
    const THREADS: usize = 4;
    const CONNS: usize = 40;
    let addr = sl.addr();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut got = [0usize; 3];
                for c in 0..CONNS {
                    let mut conn = Conn::connect(addr);
                    for (k, (path, want)) in [("/ok/x", 200), ("/down/y", 503), ("/nowhere", 404)]
                        .into_iter()
                        .enumerate()
                    {
                        let r = conn.get(&format!("{path}?t={t}&c={c}"), &[]);
                        assert_eq!(r.status, want, "{path}: {r}");
                        got[k] += 1;
                        if r.says_close() {
                            conn = Conn::connect(addr);
                        }
                    }
                }
                got
            })
        })
        .collect();
    let mut sent = [0usize; 3];
    for h in handles {
        let got = h.join().expect("client thread");
        for k in 0..3 {
            sent[k] += got[k];
        }
    }
    let [n_ok, n_down, n_miss] = sent.map(|n| n as f64);
    let total = n_ok + n_down + n_miss;
    assert_eq!(total as usize, THREADS * CONNS * 3);

    // Workers report once a second; wait for the merged view to catch up with everything.
    let mut text = String::new();
    let settled = eventually(Duration::from_secs(6), || {
        text = admin_get(admin, "/metrics").body_str();
        let s = samples(&text);
        sample(&s, "sluice_requests_total", &[("route", "ok")]) == Some(n_ok)
            && sample(&s, "sluice_requests_total", &[("route", "down")]) == Some(n_down)
            && sample(&s, "sluice_requests_total", &[("route", "(none)")]) == Some(n_miss)
    });
    assert!(
        settled,
        "merged request counts never matched {sent:?}:\n{text}"
    );
    let s = samples(&text);
    let class = |route: &str, class: &str| {
        sample(
            &s,
            "sluice_responses_total",
            &[("route", route), ("class", class)],
        )
    };
    assert_eq!(class("ok", "2xx"), Some(n_ok));
    assert_eq!(class("down", "5xx"), Some(n_down));
    assert_eq!(class("(none)", "4xx"), Some(n_miss));
    for c in ["none", "1xx", "3xx", "4xx", "5xx"] {
        assert_eq!(class("ok", c), None, "no {c} on route ok");
    }
    let kind = |k: &str| sample(&s, "sluice_errors_total", &[("kind", k)]);
    assert_eq!(kind("unavailable"), Some(n_down));
    assert_eq!(kind("client"), Some(n_miss));
    for k in [
        "client_timeout",
        "upstream_connect",
        "upstream_timeout",
        "upstream_reset",
        "policy",
    ] {
        assert_eq!(kind(k), Some(0.0), "errors of kind {k}");
    }
    assert_eq!(
        sample(
            &s,
            "sluice_request_duration_seconds_count",
            &[("route", "ok")]
        ),
        Some(n_ok)
    );
    let be_requests = be.request_count() as f64;
    assert_eq!(be_requests, n_ok, "the backend saw every /ok request once");
    assert_eq!(
        sample(
            &s,
            "sluice_upstream_requests_total",
            &[("upstream", "app"), ("endpoint", &be.addr().to_string())]
        ),
        Some(n_ok)
    );

    // Both workers served, and their per-worker counts add up to the total.
    let per_worker: Vec<f64> = (0..2)
        .map(|i| {
            sample(
                &s,
                "sluice_worker_requests_total",
                &[("worker", &i.to_string())],
            )
            .unwrap_or(0.0)
        })
        .collect();
    assert_eq!(per_worker.iter().sum::<f64>(), total, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|&n| n > 0.0),
        "both workers should have served some of {} connections: {per_worker:?}",
        THREADS * CONNS
    );

    // /routes agrees.
    let routes = admin_json(admin, "/routes");
    let route = |name: &str| {
        routes["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("route {name} in /routes: {routes}"))
    };
    assert_eq!(route("ok")["requests"], n_ok as u64);
    assert_eq!(route("ok")["responses"]["2xx"], n_ok as u64);
    assert_eq!(route("down")["requests"], n_down as u64);
    assert_eq!(route("down")["responses"]["5xx"], n_down as u64);
    assert_eq!(route("down")["action"]["upstreams"][0]["upstream"], "dead");
    // /workers and /status agree.
    let workers = admin_json(admin, "/workers");
    let sum: u64 = workers["workers"]
        .as_array()
        .expect("workers list")
        .iter()
        .map(|w| w["requests_total"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, total as u64);
    assert_eq!(admin_json(admin, "/status")["requests_total"], total as u64);

    check_exposition(&text).unwrap_or_else(|e| panic!("/metrics is not valid: {e}\n{text}"));
}

#[test]
fn metrics_is_valid_prometheus_text_and_shapes_are_stable() {
    let be = Backend::fixed("ok");
    let dead = refused_addr();
    let sl = Sluice::start(&load_config(be.addr(), dead));
    let admin = sl.admin_addr().expect("admin listener");
    for _ in 0..20 {
        assert_eq!(http_get(sl.addr(), "/ok/a", &[]).status, 200);
        let _ = http_get(sl.addr(), "/down/a", &[]);
        assert_eq!(http_get(sl.addr(), "/x", &[]).status, 404);
    }
    // Wait for a report with traffic and for the first evaluation of alerts and signals.
    let mut text = String::new();
    assert!(
        eventually(Duration::from_secs(6), || {
            text = admin_get(admin, "/metrics").body_str();
            text.contains("sluice_requests_total{route=\"ok\"} 20")
                && text.contains("sluice_recommended_instances ")
                && text.contains("sluice_alert_firing{alert=\"errors\"}")
        }),
        "metrics never showed the traffic, alerts and signals:\n{text}"
    );
    let r = admin_get(admin, "/metrics");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{r}"
    );
    check_exposition(&text).unwrap_or_else(|e| panic!("/metrics is not valid: {e}\n{text}"));
    let s = samples(&text);
    for name in [
        "sluice_build_info",
        "sluice_uptime_seconds",
        "sluice_config_generation",
        "sluice_instance_utilization",
        "sluice_recommended_instances",
        "sluice_core_imbalance_ratio",
    ] {
        assert!(
            s.keys().any(|(n, _)| n == name),
            "{name} missing from /metrics"
        );
    }
    assert!(sample(
        &s,
        "sluice_upstream_5xx_per_second",
        &[("upstream", "dead")]
    )
    .is_some());
    assert_eq!(
        sample(
            &s,
            "sluice_upstream_healthy",
            &[("upstream", "app"), ("endpoint", &be.addr().to_string())]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "sluice_upstream_healthy",
            &[("upstream", "dead"), ("endpoint", &dead.to_string())]
        ),
        Some(0.0)
    );

    let status = admin_json(admin, "/status");
    assert_eq!(status["workers"], 2);
    assert_eq!(status["config_generation"], 1);
    assert!(status["uptime_seconds"].is_u64(), "{status}");
    assert!(status["pid"].is_u64(), "{status}");
    assert!(
        status["config"]
            .as_str()
            .is_some_and(|c| c.ends_with("sluice.toml")),
        "{status}"
    );
    assert!(
        ["io_uring", "epoll"].contains(&status["io_driver"].as_str().unwrap_or("")),
        "{status}"
    );

    let workers = admin_json(admin, "/workers");
    let list = workers["workers"].as_array().expect("workers list");
    assert_eq!(list.len(), 2, "{workers}");
    for (i, w) in list.iter().enumerate() {
        assert_eq!(w["worker"], i);
        assert!(
            ["io_uring", "epoll"].contains(&w["io_driver"].as_str().unwrap_or("")),
            "{w}"
        );
        for k in [
            "utilization",
            "requests_per_second",
            "p50_ms",
            "p99_ms",
            "connections",
            "in_flight",
            "requests_total",
        ] {
            assert!(w[k].is_number(), "worker {i} lacks {k}: {w}");
        }
    }

    let ups = admin_json(admin, "/upstreams");
    let list = ups["upstreams"].as_array().expect("upstreams list");
    assert_eq!(list.len(), 2, "{ups}");
    let app = list.iter().find(|u| u["name"] == "app").expect("app");
    let ep = &app["endpoints"][0];
    assert_eq!(ep["address"], be.addr().to_string());
    assert_eq!(ep["healthy"], true);
    assert_eq!(ep["admin_state"], "enabled");
    assert_eq!(ep["weight"], 1);
    assert_eq!(ep["requests"], 20);
    for k in ["in_flight", "idle_connections", "failures", "ttfb_p99_ms"] {
        assert!(ep[k].is_number(), "endpoint lacks {k}: {ep}");
    }
    let dead_up = list.iter().find(|u| u["name"] == "dead").expect("dead");
    assert_eq!(dead_up["endpoints"][0]["healthy"], false);
    assert_eq!(dead_up["endpoints"][0]["health_check_down"], true);
    assert_eq!(dead_up["health_check"]["path"], "/healthz");

    // Unknown paths and wrong methods.
    assert_eq!(admin_get(admin, "/nope").status, 404);
    assert_eq!(admin_post(admin, "/metrics").status, 405);
    assert_eq!(admin_post(admin, "/alerts").status, 405);
}

#[test]
fn endpoint_control_disable_enable_drain_weight() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let sl = Sluice::start(&config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}",
        upstream("app", &[a.addr(), b.addr()], "balancer = \"round_robin\""),
        catch_all("app")
    )));
    let admin = sl.admin_addr().expect("admin listener");
    let split = |n: usize| {
        let mut out = (0, 0);
        for _ in 0..n {
            match http_get(sl.addr(), "/", &[]).body_str().as_str() {
                "a" => out.0 += 1,
                "b" => out.1 += 1,
                other => panic!("unexpected body {other:?}"),
            }
        }
        out
    };
    let (na, nb) = split(20);
    assert!(na > 0 && nb > 0, "both endpoints serve at first: {na}/{nb}");

    let path = |action: &str| format!("/upstreams/app/endpoints/{}/{action}", a.addr());
    let r = admin_post(admin, &path("disable"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["state"],
        "disabled"
    );
    // The workers apply it asynchronously: wait until a run of requests avoids `a`.
    assert!(
        eventually(Duration::from_secs(3), || split(10).0 == 0),
        "disable never stopped traffic to a"
    );
    assert_eq!(split(20), (0, 20), "a disabled endpoint gets nothing");
    let ups = admin_json(admin, "/upstreams");
    let ep_a = ups["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == a.addr().to_string())
        .cloned()
        .unwrap();
    assert_eq!(ep_a["admin_state"], "disabled", "{ups}");

    assert_eq!(admin_post(admin, &path("enable")).status, 200);
    assert!(
        eventually(Duration::from_secs(3), || split(10).0 > 0),
        "enable never restored traffic to a"
    );

    assert_eq!(admin_post(admin, &path("drain")).status, 200);
    assert!(
        eventually(Duration::from_secs(3), || split(10).0 == 0),
        "drain never stopped new requests to a"
    );
    assert_eq!(admin_post(admin, &path("enable")).status, 200);

    let r = admin_post(
        admin,
        &format!("/upstreams/app/endpoints/{}/weight/3", b.addr()),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["weight"],
        3
    );
    // Weighted round robin: 3 of every 4 requests to b once the change is in force.
    assert!(
        eventually(Duration::from_secs(3), || {
            let (na, nb) = split(40);
            na > 0 && nb >= 2 * na
        }),
        "weight 3 never shifted the split towards b"
    );
    let (na, nb) = split(40);
    assert!(na >= 6 && nb >= 24, "about 10/30 expected, got {na}/{nb}");

    // Errors.
    assert_eq!(
        admin_post(
            admin,
            &format!("/upstreams/nope/endpoints/{}/disable", a.addr())
        )
        .status,
        404
    );
    assert_eq!(
        admin_post(admin, "/upstreams/app/endpoints/127.0.0.1:1/disable").status,
        404,
        "unknown endpoint"
    );
    for bad in ["weight/0", "weight/1001", "weight/x", "explode"] {
        let r = admin_post(admin, &path(bad));
        assert_eq!(r.status, 400, "{bad}: {r}");
    }
    assert_eq!(
        admin_post(admin, "/upstreams/app/endpoints/not-an-addr/disable").status,
        400
    );
}

#[test]
fn bearer_token_guards_every_endpoint() {
    let sl = Sluice::start(&config(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret-token\"\n\n\
         [routes.v]\npath = \"/v\"\nrespond = { status = 200, body = \"v\" }\n",
    ));
    let admin = sl.admin_addr().expect("admin listener");
    for path in ["/status", "/metrics", "/alerts", "/signals", "/workers"] {
        assert_eq!(
            http_get(admin, path, &[]).status,
            401,
            "{path} without a token"
        );
        assert_eq!(
            http_get(admin, path, &[("Authorization", "Bearer wrong")]).status,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            http_get(admin, path, &[("Authorization", "Bearer s3cret-token")]).status,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(
        Conn::connect(admin)
            .request("POST", "/reload", &[], b"")
            .status,
        401
    );
}

#[test]
fn post_reload_bumps_the_config_generation() {
    let sl = Sluice::start(&config(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [routes.v]\npath = \"/v\"\nrespond = { status = 200, body = \"v\" }\n",
    ));
    let admin = sl.admin_addr().expect("admin listener");
    assert_eq!(admin_json(admin, "/status")["config_generation"], 1);
    let r = admin_post(admin, "/reload");
    assert_eq!(r.status, 202, "{r}");
    assert!(
        eventually(Duration::from_secs(5), || admin_json(admin, "/status")
            ["config_generation"]
            == 2),
        "config_generation never became 2"
    );
    assert!(eventually(Duration::from_secs(3), || {
        admin_get(admin, "/metrics")
            .body_str()
            .contains("\nsluice_config_generation 2\n")
    }));
}

// ---------------------------------------------------------------- strict exposition checker

/// Checks the Prometheus text format (version 0.0.4) strictly: every line is a comment, HELP, TYPE or
/// `name{labels} value`; names and labels are well formed; each family has HELP and TYPE before its
/// samples and its lines form one group; no series repeats; counters are >= 0; histogram buckets are
/// cumulative, end with `+Inf`, and `+Inf` equals `_count`, with a `_sum`.
fn check_exposition(text: &str) -> Result<(), String> {
    let mut help: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    // (family, labels without le) -> buckets in order, sum, count
    type Hist = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut hists: BTreeMap<(String, String), Hist> = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        let family_of_line;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            check_name(name).map_err(at)?;
            if !help.insert(name.to_string()) {
                return Err(at("second HELP".into()));
            }
            family_of_line = name.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap_or("");
            let ty = it.next().unwrap_or("");
            check_name(name).map_err(at)?;
            if it.next().is_some()
                || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty)
            {
                return Err(at("bad TYPE".into()));
            }
            if types.insert(name.to_string(), ty.to_string()).is_some() {
                return Err(at("second TYPE".into()));
            }
            if series.iter().any(|s| family(s, &types) == name) {
                return Err(at("TYPE after samples".into()));
            }
            family_of_line = name.to_string();
        } else if line.starts_with('#') {
            continue;
        } else {
            let (name, labels, value) = parse_sample(line).map_err(at)?;
            let fam = family(&name, &types);
            let ty = types
                .get(&fam)
                .ok_or_else(|| at(format!("no TYPE for {fam}")))?;
            if !help.contains(&fam) {
                return Err(at(format!("no HELP for {fam}")));
            }
            let key = format!("{name}{{{}}}", canonical(&labels));
            if !series.insert(key) {
                return Err(at("duplicate series".into()));
            }
            if ty == "counter" && (value.is_nan() || value < 0.0) {
                return Err(at("negative counter".into()));
            }
            if ty == "histogram" {
                let mut rest = labels.clone();
                let le = rest.remove("le");
                let h = hists.entry((fam.clone(), canonical(&rest))).or_default();
                if name.ends_with("_bucket") {
                    let le = le.ok_or_else(|| at("bucket without le".into()))?;
                    let le = parse_value(&le).map_err(at)?;
                    h.0.push((le, value));
                } else if name.ends_with("_sum") {
                    h.1 = Some(value);
                } else if name.ends_with("_count") {
                    h.2 = Some(value);
                } else {
                    return Err(at("histogram sample that is not _bucket/_sum/_count".into()));
                }
            } else if name != fam {
                return Err(at(format!("sample name differs from family {fam}")));
            }
            family_of_line = fam;
        }
        // One group per family.
        if current.as_deref() != Some(family_of_line.as_str()) {
            if closed.contains(&family_of_line) {
                return Err(at(format!(
                    "family {family_of_line} is split in two groups"
                )));
            }
            if let Some(c) = current.take() {
                closed.insert(c);
            }
            current = Some(family_of_line);
        }
    }
    for ((fam, labels), (buckets, sum, count)) in &hists {
        let what = format!("histogram {fam}{{{labels}}}");
        let last = buckets
            .last()
            .ok_or_else(|| format!("{what}: no buckets"))?;
        if last.0 != f64::INFINITY {
            return Err(format!("{what}: last bucket is not +Inf"));
        }
        for w in buckets.windows(2) {
            if w[0].0.is_nan() || w[0].0 >= w[1].0 {
                return Err(format!("{what}: le not increasing"));
            }
            if w[0].1 > w[1].1 {
                return Err(format!("{what}: buckets not cumulative ({w:?})"));
            }
        }
        if *count != Some(last.1) {
            return Err(format!("{what}: +Inf {} != _count {count:?}", last.1));
        }
        if sum.is_none() {
            return Err(format!("{what}: no _sum"));
        }
    }
    Ok(())
}

fn family(name: &str, types: &HashMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn canonical(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
            v.parse().map_err(|_| format!("bad value {v:?}"))
        }
        _ => Err(format!("bad value {v:?}")),
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let b = line.as_bytes();
    let mut i = b
        .iter()
        .position(|&c| c == b'{' || c == b' ')
        .ok_or("no value")?;
    let name = &line[..i];
    check_name(name)?;
    let mut labels = BTreeMap::new();
    if b[i] == b'{' {
        i += 1;
        loop {
            match b.get(i) {
                None => return Err("unclosed {".into()),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                Some(_) => {}
            }
            let k0 = i;
            while i < b.len() && b[i] != b'=' {
                i += 1;
            }
            let key = &line[k0..i];
            if key.is_empty()
                || key.starts_with(|c: char| c.is_ascii_digit())
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!("bad label name {key:?}"));
            }
            if b.get(i + 1) != Some(&b'"') {
                return Err(format!("label {key} value not quoted"));
            }
            i += 2;
            let mut val = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some(b'\\') => {
                        match b.get(i + 1) {
                            Some(b'\\') => val.push(b'\\'),
                            Some(b'"') => val.push(b'"'),
                            Some(b'n') => val.push(b'\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        }
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') => return Err("newline in label value".into()),
                    Some(&c) => {
                        val.push(c);
                        i += 1;
                    }
                }
            }
            let val = String::from_utf8(val).map_err(|_| "label value not UTF-8")?;
            if labels.insert(key.to_string(), val).is_some() {
                return Err(format!("label {key} repeated"));
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
    }
    let rest = line[i..]
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().unwrap_or(""))?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels, value))
}

#[test]
fn the_checker_rejects_broken_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    check_exposition(good).unwrap();
    for bad in [
        "a 1\n",                                                           // no TYPE
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",                         // unquoted
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"}  1\n",                    // two spaces
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",                         // duplicate
        "# HELP a A.\n# TYPE a counter\na -1\n",                           // negative counter
        "# HELP a A.\n# TYPE a gauge\na one\n",                            // value
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n", // split group
    ] {
        assert!(check_exposition(bad).is_err(), "accepted:\n{bad}");
    }
}
