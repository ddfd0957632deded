//! Upstream behaviour: connection pooling, balancers, stickiness, error
//! statuses (502/503/504), retries, passive and active health, circuit
//! breaker. All with workers = 1 so counts are exact.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// `[upstreams.app]` with explicit endpoint TOML and extra keys, and a catch-all route.
fn app_config(endpoints_toml: &str, extra: &str) -> String {
    config(&format!(
        "{}{}",
        upstream_raw("app", endpoints_toml, extra),
        catch_all("app")
    ))
}

fn eps(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends `n` GETs on one keep-alive connection; returns body -> count.
fn tally(sl: &Sluice, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut c = Conn::connect(sl.addr());
    let mut out = HashMap::new();
    for i in 0..n {
        let r = c.get(&format!("/t{i}"), headers);
        assert_eq!(r.status, 200, "request {i}: {r}");
        *out.entry(r.body_str()).or_insert(0) += 1;
    }
    out
}

#[test]
fn pool_reuses_one_upstream_connection() {
    let be = Backend::fixed("ok");
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    for i in 0..20 {
        assert_eq!(c.get(&format!("/p{i}"), &[]).status, 200);
    }
    assert_eq!(be.request_count(), 20);
    assert_eq!(
        be.connections(),
        1,
        "20 sequential requests on workers = 1 should reuse one pooled upstream connection"
    );
}

#[test]
fn upstream_closing_idle_connections_is_not_an_error() {
    // The backend closes every connection right after its response, without
    // `Connection: close`: a pooled connection is stale by the next request.
    let be = Backend::start(|r| {
        let body = format!("fresh {}", r.path);
        Reply::raw(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    });
    let sl = proxy_to(&be);
    let mut c = Conn::connect(sl.addr());
    for i in 0..10 {
        let r = c.get(&format!("/s{i}"), &[]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, format!("fresh /s{i}")),
            "request {i}: {r}"
        );
    }
    assert_eq!(be.request_count(), 10);
}

#[test]
fn round_robin_follows_weights_1_2() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let sl = Sluice::start(&app_config(
        &format!(
            "{{ address = \"{}\", weight = 1 }}, {{ address = \"{}\", weight = 2 }}",
            a.addr(),
            b.addr()
        ),
        "balancer = \"round_robin\"",
    ));
    let t = tally(&sl, 300, &[]);
    let na = t.get("a").copied().unwrap_or(0);
    let nb = t.get("b").copied().unwrap_or(0);
    assert!(
        (90..=110).contains(&na) && (190..=210).contains(&nb),
        "weights 1:2 over 300 requests gave a={na} b={nb}"
    );
}

#[test]
fn round_robin_plain_alternates() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let sl = Sluice::start(&app_config(
        &eps(&[a.addr(), b.addr()]),
        "balancer = \"round_robin\"",
    ));
    let t = tally(&sl, 100, &[]);
    assert_eq!((t.get("a"), t.get("b")), (Some(&50), Some(&50)), "{t:?}");
}

#[test]
fn least_request_avoids_the_busy_endpoint() {
    let handler = |name: &'static str| {
        move |r: &Request| {
            let d = if r.path == "/slow" {
                Duration::from_millis(1500)
            } else {
                Duration::ZERO
            };
            Reply::ok(name).delay(d)
        }
    };
    let a = Backend::start(handler("a"));
    let b = Backend::start(handler("b"));
    let sl = Sluice::start(&app_config(
        &eps(&[a.addr(), b.addr()]),
        "balancer = \"least_request\"",
    ));
    let addr = sl.addr();
    let slow = thread::spawn(move || http_get(addr, "/slow", &[]));
    assert!(
        eventually(Duration::from_secs(3), || a.in_flight() + b.in_flight()
            == 1),
        "slow request never arrived"
    );
    let (busy, idle) = if a.in_flight() == 1 {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let t = tally(&sl, 10, &[]);
    assert_eq!(
        t.get(idle),
        Some(&10),
        "all fast requests should avoid the busy endpoint {busy}: {t:?}"
    );
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.body_str()), (200, busy.to_owned()));
}

#[test]
fn consistent_hash_on_header_is_stable() {
    let bes: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::fixed(n)).collect();
    let addrs: Vec<SocketAddr> = bes.iter().map(|b| b.addr()).collect();
    let sl = Sluice::start(&app_config(
        &eps(&addrs),
        "balancer = \"consistent_hash\"\nhash_on = \"header:x-user\"",
    ));
    let mut c = Conn::connect(sl.addr());
    let mut used = HashSet::new();
    for k in 0..20 {
        let key = format!("user-{k}");
        let first = c.get("/", &[("X-User", &key)]).body_str();
        for _ in 0..4 {
            assert_eq!(
                c.get("/", &[("X-User", &key)]).body_str(),
                first,
                "key {key} moved between endpoints"
            );
        }
        // Same key on a fresh connection too.
        assert_eq!(
            http_get(sl.addr(), "/", &[("X-User", &key)]).body_str(),
            first
        );
        used.insert(first);
    }
    assert!(
        used.len() >= 2,
        "20 keys all hashed to one endpoint: {used:?}"
    );
}

fn affinity_cookie(r: &Response) -> Option<String> {
    r.header_all("set-cookie").iter().find_map(|v| {
        let pair = v.split(';').next()?.trim();
        pair.starts_with("sluice_affinity=")
            .then(|| pair.to_owned())
    })
}

#[test]
fn sticky_cookie_is_issued_and_honoured() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let sl = Sluice::start(&app_config(
        &eps(&[a.addr(), b.addr()]),
        "balancer = \"round_robin\"\nsticky = { cookie = \"sluice_affinity\", ttl = \"1h\" }",
    ));
    let mut c = Conn::connect(sl.addr());
    let mut seen = HashMap::new();
    // Cookie-less requests round-robin; collect one cookie per endpoint.
    for _ in 0..6 {
        let r = c.get("/", &[]);
        assert_eq!(r.status, 200);
        let cookie =
            affinity_cookie(&r).unwrap_or_else(|| panic!("no sluice_affinity Set-Cookie:\n{r}"));
        seen.entry(r.body_str()).or_insert(cookie);
    }
    assert_eq!(
        seen.len(),
        2,
        "cookie-less requests should reach both endpoints: {seen:?}"
    );
    for (name, cookie) in &seen {
        for i in 0..10 {
            let other = format!("theme=dark; {cookie}; lang=en");
            let hdr = if i % 2 == 0 {
                cookie.as_str()
            } else {
                other.as_str()
            };
            let r = c.get("/", &[("Cookie", hdr)]);
            assert_eq!(&r.body_str(), name, "cookie {cookie} must pin to {name}");
        }
    }
}

#[test]
fn refused_connection_is_json_502() {
    let sl = Sluice::start(&app_config(&eps(&[refused_addr()]), "retries = 0"));
    let r = http_get(sl.addr(), "/", &[]);
    assert_json_error(&r, 502);
}

#[test]
fn reset_before_response_head_is_json_502() {
    let be = Backend::start(|_| Reply::reset_before_head());
    let sl = Sluice::start(&app_config(&eps(&[be.addr()]), "retries = 0"));
    let r = http_get(sl.addr(), "/", &[]);
    assert_json_error(&r, 502);
    assert_eq!(be.request_count(), 1);
}

/// A response cut off after it started keeps its cause: the access log says what cut it off (not just
/// that it was cut), and an upstream that broke off mid-body counts toward its passive health.
#[test]
fn reset_mid_body_is_logged_as_such_and_ejects_the_endpoint() {
    let be = Backend::start(|_| Reply::reset_mid_body(100_000, 1_000));
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let sl = Sluice::start(&config(&format!(
        "[access_log]\npath = \"{}\"\n\n{}{}",
        log.display(),
        upstream(
            "app",
            &[be.addr()],
            "retries = 0\npassive_health = { max_failures = 1, cooldown = \"30s\" }\n"
        ),
        catch_all("app")
    )));
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    assert_cut_off(c.read_response(), 502, "a reset mid-body");
    let logged = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || !logged().is_empty()),
        "no access log line"
    );
    let l = &logged()[0];
    assert_eq!(
        (l["status"].as_u64(), l["reason"].as_str()),
        (Some(200), Some("upstream_reset")),
        "{l}"
    );
    // max_failures = 1: that one failure ejected the only endpoint.
    let r = http_get(sl.addr(), "/", &[]);
    assert_json_error(&r, 503);
    assert_eq!(
        be.request_count(),
        1,
        "the ejected endpoint got no second request"
    );
}

#[test]
fn reset_mid_body_does_not_look_complete() {
    let be = Backend::start(|_| Reply::reset_mid_body(100_000, 1_000));
    let sl = Sluice::start(&app_config(&eps(&[be.addr()]), "retries = 0"));
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    assert_cut_off(c.read_response(), 502, "a reset mid-body");
}

#[test]
fn response_timeout_is_json_504() {
    let be = Backend::never_answer();
    let sl = Sluice::start(&app_config(
        &eps(&[be.addr()]),
        "retries = 0\nresponse_timeout = \"300ms\"",
    ));
    let t = Instant::now();
    let r = http_get(sl.addr(), "/", &[]);
    let took = t.elapsed();
    assert_json_error(&r, 504);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "504 after {took:?}"
    );
}

#[test]
fn all_endpoints_ejected_is_json_503() {
    let sl = Sluice::start(&app_config(
        &eps(&[refused_addr()]),
        "retries = 0\npassive_health = { max_failures = 1, cooldown = \"30s\" }",
    ));
    let first = http_get(sl.addr(), "/", &[]);
    assert_json_error(&first, 502);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http_get(sl.addr(), "/", &[]);
        statuses.push(r.status);
        if r.status == 503 {
            assert_json_error(&r, 503);
            return;
        }
    }
    panic!("after max_failures = 1 the only endpoint should be ejected (503); got {statuses:?}");
}

#[test]
fn connect_failures_are_retried_on_the_healthy_endpoint() {
    let be = Backend::start(|r| Reply::ok(format!("{} {}", r.method, r.body.len())));
    let sl = Sluice::start(&app_config(
        &eps(&[refused_addr(), be.addr()]),
        "retries = 2\npassive_health = { max_failures = 1000, cooldown = \"1s\" }",
    ));
    let mut c = Conn::connect(sl.addr());
    for i in 0..10 {
        let r = c.get("/", &[]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, "GET 0".to_owned()),
            "GET {i}: {r}"
        );
    }
    for i in 0..6 {
        let r = c.request("POST", "/", &[], b"payload");
        assert_eq!(
            (r.status, r.body_str()),
            (200, "POST 7".to_owned()),
            "POST {i} (connect failures retry any method): {r}"
        );
    }
    assert_eq!(be.request_count(), 16);
}

#[test]
fn resets_retry_idempotent_methods_only() {
    let bad = Backend::start(|_| Reply::reset_before_head());
    let good = Backend::start(|r| Reply::ok(r.method.clone()));
    let sl = Sluice::start(&app_config(
        &eps(&[bad.addr(), good.addr()]),
        "balancer = \"round_robin\"\nretries = 2\npassive_health = { max_failures = 1000, cooldown = \"1s\" }",
    ));
    for i in 0..10 {
        let r = http_get(sl.addr(), "/", &[]);
        assert_eq!(
            r.status, 200,
            "GET {i} should be retried past the reset: {r}"
        );
    }
    let mut failed = 0;
    for _ in 0..10 {
        let mut c = Conn::connect(sl.addr());
        let r = c.request("POST", "/", &[], b"once");
        if r.status == 502 {
            failed += 1;
        } else {
            assert_eq!(r.status, 200, "{r}");
        }
    }
    let posts_bad = bad.requests().iter().filter(|r| r.method == "POST").count();
    let posts_good = good
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert!(
        posts_bad > 0,
        "round robin should have sent some POSTs to the resetting endpoint"
    );
    assert_eq!(
        failed, posts_bad,
        "a POST reset before the head must fail with 502, not be retried"
    );
    assert_eq!(
        posts_bad + posts_good,
        10,
        "each POST reached an upstream exactly once"
    );
}

#[test]
fn passive_health_ejects_then_recovers_after_cooldown() {
    let failing = Arc::new(AtomicBool::new(true));
    let f2 = failing.clone();
    let a = Backend::start(move |_| {
        if f2.load(Ordering::SeqCst) {
            Reply::reset_before_head()
        } else {
            Reply::ok("a")
        }
    });
    let b = Backend::fixed("b");
    let sl = Sluice::start(&app_config(
        &eps(&[a.addr(), b.addr()]),
        "balancer = \"round_robin\"\nretries = 0\npassive_health = { max_failures = 3, cooldown = \"1s\" }",
    ));
    let mut n = 0;
    while a.request_count() < 3 && n < 50 {
        http_get(sl.addr(), "/", &[]);
        n += 1;
    }
    assert_eq!(a.request_count(), 3, "a should have failed 3 times");
    let t = tally(&sl, 10, &[]);
    assert_eq!(
        t.get("b"),
        Some(&10),
        "a is ejected after 3 failures: {t:?}"
    );
    assert_eq!(a.request_count(), 3);
    failing.store(false, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(5), || {
        http_get(sl.addr(), "/", &[]).body == b"a"
    });
    assert!(back, "a should get traffic again after the 1s cooldown");
}

#[test]
fn active_health_check_marks_down_then_up() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let sl = Sluice::start(&app_config(
        &eps(&[a.addr(), b.addr()]),
        "balancer = \"round_robin\"\n\
         health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"200ms\", healthy_threshold = 1, unhealthy_threshold = 1 }",
    ));
    assert!(
        eventually(Duration::from_secs(3), || a.health_checks() > 0
            && b.health_checks() > 0),
        "no health checks seen"
    );
    a.set_healthy(false);
    let down = eventually(Duration::from_secs(3), || {
        let t = tally(&sl, 6, &[]);
        t.get("b") == Some(&6)
    });
    assert!(down, "a failing /healthz should be taken out of rotation");
    a.set_healthy(true);
    let up = eventually(Duration::from_secs(3), || {
        http_get(sl.addr(), "/", &[]).body == b"a"
    });
    assert!(up, "a passing /healthz again should come back");
    a.set_healthy(false);
    b.set_healthy(false);
    let mut last = None;
    let none = eventually(Duration::from_secs(3), || {
        let r = http_get(sl.addr(), "/", &[]);
        let is = r.status == 503;
        last = Some(r);
        is
    });
    assert!(
        none,
        "with every endpoint down the answer is 503; last:\n{}",
        last.unwrap()
    );
    assert_json_error(last.as_ref().unwrap(), 503);
}

#[test]
fn circuit_breaker_sheds_excess_after_queue_timeout() {
    let be = Backend::slow(Duration::from_millis(1500), "slow");
    let sl = Sluice::start(&app_config(
        &eps(&[be.addr()]),
        "retries = 0\ncircuit_breaker = { max_connections = 1, max_pending = 10, queue_timeout = \"200ms\" }",
    ));
    let addr = sl.addr();
    let first = thread::spawn(move || http_get(addr, "/first", &[]));
    assert!(
        eventually(Duration::from_secs(3), || be.in_flight() == 1),
        "first request never arrived"
    );
    let t = Instant::now();
    let r = http_get(sl.addr(), "/second", &[]);
    let took = t.elapsed();
    assert_json_error(&r, 503);
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1200),
        "503 should come after queue_timeout (200ms), took {took:?}"
    );
    assert_eq!(
        be.max_in_flight(),
        1,
        "the breaker must not open a second upstream connection"
    );
    let f = first.join().unwrap();
    assert_eq!(f.status, 200, "{f}");
}

#[test]
fn total_timeout_is_json_504() {
    let be = Backend::slow(Duration::from_millis(1500), "late");
    let sl = Sluice::start(&app_config(
        &eps(&[be.addr()]),
        "retries = 0\nresponse_timeout = \"5s\"\ntotal_timeout = \"300ms\"",
    ));
    let t = Instant::now();
    let r = http_get(sl.addr(), "/", &[]);
    let took = t.elapsed();
    assert_json_error(&r, 504);
    assert!(
        took < Duration::from_millis(1300),
        "total_timeout (300ms) should fire first, took {took:?}"
    );
}

#[test]
fn upstream_idle_timeout_cuts_a_stalled_body() {
    let be = Backend::start(|_| Reply::stall_mid_body(100_000, 1_000));
    let sl = Sluice::start(&app_config(
        &eps(&[be.addr()]),
        "retries = 0\nidle_timeout = \"300ms\"",
    ));
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    let t = Instant::now();
    assert_cut_off(
        c.read_response(),
        504,
        "a stalled upstream body (upstream idle_timeout 300ms)",
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn pool_idle_timeout_closes_idle_upstream_connections() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&app_config(
        &eps(&[be.addr()]),
        "pool = { max_idle = 8, idle_timeout = \"200ms\" }",
    ));
    assert_eq!(http_get(sl.addr(), "/", &[]).status, 200);
    assert!(
        eventually(Duration::from_secs(3), || be.closed_by_peer() == 1),
        "the idle pooled connection should be closed after pool.idle_timeout (200ms)"
    );
    assert_eq!(http_get(sl.addr(), "/", &[]).status, 200);
    assert_eq!(be.connections(), 2);
}

#[test]
fn consistent_hash_on_client_ip_is_stable() {
    let bes: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::fixed(n)).collect();
    let addrs: Vec<SocketAddr> = bes.iter().map(|b| b.addr()).collect();
    let sl = Sluice::start(&app_config(
        &eps(&addrs),
        "balancer = \"consistent_hash\"\nhash_on = \"client_ip\"",
    ));
    let first = http_get(sl.addr(), "/", &[]).body_str();
    for i in 0..20 {
        assert_eq!(
            http_get(sl.addr(), &format!("/{i}"), &[]).body_str(),
            first,
            "same client IP, same endpoint"
        );
    }
}

#[test]
fn sticky_falls_back_when_pinned_endpoint_is_down() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let sl = Sluice::start(&app_config(
        &eps(&[a.addr(), b.addr()]),
        "balancer = \"round_robin\"\nsticky = { cookie = \"sluice_affinity\", ttl = \"1h\" }\n\
         health_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"200ms\", healthy_threshold = 1, unhealthy_threshold = 1 }",
    ));
    let mut cookie_a = None;
    for _ in 0..4 {
        let r = http_get(sl.addr(), "/", &[]);
        if r.body == b"a" {
            cookie_a = affinity_cookie(&r);
        }
    }
    let cookie_a = cookie_a.expect("a sticky cookie for endpoint a");
    assert_eq!(
        http_get(sl.addr(), "/", &[("Cookie", &cookie_a)]).body,
        b"a"
    );
    a.set_healthy(false);
    let moved = eventually(Duration::from_secs(3), || {
        let r = http_get(sl.addr(), "/", &[("Cookie", &cookie_a)]);
        r.status == 200 && r.body == b"b"
    });
    assert!(
        moved,
        "a request pinned to a down endpoint should be served by a healthy one"
    );
}
