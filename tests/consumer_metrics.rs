//! Per-consumer figures with more consumers than get their own series: 60 API-key consumers send
//! known traffic (200s, 500s, 429s from a small limit) to a two-worker sluice. `/metrics` must keep
//! `sluice_consumer_{requests,limited,errors}_total` to 20 named series plus `consumer="(other)"`,
//! each family summing to what the clients saw; `/status` must list the top 50 by rate, in order,
//! with the other 10 summed.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const CONSUMERS: usize = 60;
/// `METRIC_CONSUMERS` in `src/control/usage/live.rs`.
const NAMED_SERIES: usize = 20;
/// `VIEW_CONSUMERS` there.
const LISTED: usize = 50;

fn key(i: usize) -> String {
    format!("key-for-consumer-{i:02}")
}

fn start() -> Sluice {
    let mut consumers = String::new();
    for i in 0..CONSUMERS {
        consumers.push_str(&format!(
            "[consumers.c{i:02}]\napi_keys = [\"{}\"]\n\n",
            key(i)
        ));
    }
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [limits.one]\nrate = \"1/h\"\nburst = 1\n\n{consumers}\
             [routes.ok]\npath = \"/ok\"\nauth = [\"api_key\"]\nrespond = {{ status = 200 }}\n\n\
             [routes.fail]\npath = \"/fail\"\nauth = [\"api_key\"]\nrespond = {{ status = 500 }}\n\n\
             [routes.limited]\npath = \"/limited\"\nauth = [\"api_key\"]\nrate_limit = [\"one\"]\n\
             respond = {{ status = 200 }}\n"
        ),
    ))
}

/// (consumer label, value) of every sample of `family`.
fn series(text: &str, family: &str) -> Vec<(String, f64)> {
    let prefix = format!("{family}{{consumer=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once("\"} ")?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sum(s: &[(String, f64)]) -> f64 {
    s.iter().map(|(_, v)| v).sum()
}

/// Sends consumer `i`'s share: 1–3 to `/ok`, one to `/fail` for every 10th, two to `/limited` for
/// every 7th. Returns (requests, 429s, 5xx) as the client saw them.
fn traffic(addr: SocketAddr, i: usize) -> (u64, u64, u64) {
    let k = key(i);
    let h = [("x-api-key", k.as_str())];
    let mut paths = vec!["/ok"; i % 3 + 1];
    if i % 10 == 0 {
        paths.push("/fail");
    }
    if i % 7 == 0 {
        paths.extend(["/limited", "/limited"]);
    }
    let mut seen = (0, 0, 0);
    for p in paths {
        let status = http_get(addr, p, &h).status;
        assert!([200, 429, 500].contains(&status), "{p}: {status}");
        seen.0 += 1;
        seen.1 += (status == 429) as u64;
        seen.2 += (status >= 500) as u64;
    }
    seen
}

#[test]
fn consumer_series_stay_bounded_and_add_up() {
    let sl = start();
    let admin = sl.admin_addr().expect("admin listener");
    let (mut requests, mut limited, mut errors) = (0, 0, 0);
    for i in 0..CONSUMERS {
        let (r, l, e) = traffic(sl.addr(), i);
        requests += r;
        limited += l;
        errors += e;
    }
    assert!(
        limited >= 9,
        "each 7th consumer's second /limited is refused"
    );
    assert_eq!(errors, 6);

    let mut text = String::new();
    let arrived = eventually(Duration::from_secs(10), || {
        text = scrape(admin);
        sum(&series(&text, "sluice_consumer_requests_total")) == requests as f64
    });
    assert!(
        arrived,
        "requests by consumer never summed to {requests}:\n{text}"
    );
    for (family, want) in [
        ("sluice_consumer_requests_total", requests),
        ("sluice_consumer_limited_total", limited),
        ("sluice_consumer_errors_total", errors),
    ] {
        let s = series(&text, family);
        assert_eq!(
            s.len(),
            NAMED_SERIES + 1,
            "{family}: 20 named + other:\n{text}"
        );
        assert_eq!(
            s.iter().filter(|(c, _)| c == "(other)").count(),
            1,
            "{family}"
        );
        assert_eq!(sum(&s), want as f64, "{family} sums to what clients saw");
        assert!(
            text.contains(&format!("# TYPE {family} counter\n")),
            "{family} TYPE line"
        );
    }
    // A named consumer keeps its series: scrape again after more traffic from everyone.
    let named: Vec<String> = series(&text, "sluice_consumer_requests_total")
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    for i in 0..CONSUMERS {
        requests += traffic(sl.addr(), i).0;
    }
    assert!(eventually(Duration::from_secs(10), || {
        text = scrape(admin);
        sum(&series(&text, "sluice_consumer_requests_total")) == requests as f64
    }));
    let again: Vec<String> = series(&text, "sluice_consumer_requests_total")
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(named, again, "the same 20 named series, then other");

    // `/status`: the top 50 by rate, the other 10 summed.
    let r = http_get(admin, "/status", &[]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
    let c = &v["consumers"];
    let top = c["top"].as_array().expect("consumers.top");
    assert_eq!(top.len(), LISTED, "{c}");
    assert_eq!(c["other"]["consumers"], CONSUMERS - LISTED, "{c}");
    let rates: Vec<f64> = top
        .iter()
        .map(|t| t["requests_per_second"].as_f64().expect("rate"))
        .collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "by rate: {rates:?}");
    let listed: u64 = top
        .iter()
        .map(|t| t["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        listed + c["other"]["requests"].as_u64().unwrap_or(0),
        requests,
        "{c}"
    );
    assert!(top.iter().all(|t| t["quota_used"].is_null()), "{c}");
    assert_eq!(c["rate_window_seconds"], 10);
}
