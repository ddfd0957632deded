//! Plans and quotas on the real binary with two workers: a quota of N requests admits exactly N
//! whichever workers the requests land on, then refuses with 429 and the period's end; a plan's
//! `allow` list and its limits apply to its consumers.

mod common;

use common::*;

const N: u64 = 30;

fn start() -> Sluice {
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[limits.slow]\nrate = \"5/m\"\nburst = 5\n\n\
             [plans.gold]\nquota = {{ requests = {N}, period = \"day\" }}\nallow = [\"q\"]\n\n\
             [plans.tight]\nlimits = [\"slow\"]\n\n\
             [consumers.alice]\napi_keys = [\"alice-key\"]\nplan = \"gold\"\n\n\
             [consumers.bob]\napi_keys = [\"bob-key-1\"]\nplan = \"gold\"\nquota = {{ requests = 3 }}\n\n\
             [consumers.carol]\napi_keys = [\"carol-key\"]\nplan = \"tight\"\n\n\
             [routes.q]\npath = \"/q\"\nauth = [\"api_key\"]\nrespond = {{ status = 200 }}\n\n\
             [routes.other]\npath = \"/other\"\nauth = [\"api_key\"]\nrespond = {{ status = 200 }}\n"
        ),
    ))
}

#[test]
fn a_quota_admits_exactly_its_count_across_workers() {
    let sl = start();
    let key = [("x-api-key", "alice-key")];
    let mut admitted = 0;
    let mut first_refused = None;
    let mut workers = std::collections::HashSet::new();
    // A new connection per request, so requests spread over both workers.
    for i in 0..N + 10 {
        let r = http_get(sl.addr(), "/q", &key);
        workers.insert(r.header("x-request-id").map(|id| id[..16].to_string()));
        match r.status {
            200 => {
                assert!(
                    first_refused.is_none(),
                    "request {i} admitted after a refusal"
                );
                admitted += 1;
            }
            429 => {
                first_refused.get_or_insert(i);
                assert_json_error(&r, 429);
                assert!(r.body_str().contains("quota exceeded"), "{}", r.body_str());
                let retry: u64 = r
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("retry-after");
                assert!((1..=86_400).contains(&retry), "retry-after {retry}");
                assert_eq!(r.header("ratelimit-reset"), r.header("retry-after"));
                assert_eq!(r.header("ratelimit-remaining"), Some("0"));
            }
            s => panic!("request {i}: status {s}"),
        }
    }
    assert_eq!(admitted, N);
    assert_eq!(
        first_refused,
        Some(N),
        "the (N+1)th request is the first refused"
    );
    assert_eq!(workers.len(), 2, "requests landed on both workers");
}

#[test]
fn a_consumer_override_and_the_plan_allow_list_apply() {
    let sl = start();
    let bob = [("x-api-key", "bob-key-1")];
    let statuses: Vec<u16> = (0..5)
        .map(|_| http_get(sl.addr(), "/q", &bob).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // The gold plan allows route q only.
    let r = http_get(sl.addr(), "/other", &[("x-api-key", "alice-key")]);
    assert_json_error(&r, 403);
}

#[test]
fn a_plans_limits_hold_its_consumers() {
    let sl = start();
    let carol = [("x-api-key", "carol-key")];
    let mut c = Conn::connect(sl.addr());
    // A short pause between requests lets a lease from the pool arrive: a worker holds only its
    // share of the burst (2 of 5 here) and refuses while its ask is in flight.
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            c.get("/other", &carol).status
        })
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 5, "burst of 5 at 5/m: {statuses:?}");
    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");
}

fn ledger_config(state: &std::path::Path) -> String {
    config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[state]\npath = \"{}\"\n\n[usage]\nflush_interval = \"1s\"\n\n\
             [consumers.dave]\napi_keys = [\"dave-key-1\"]\nquota = {{ requests = 8, period = \"day\" }}\n\n\
             [routes.q]\npath = \"/q\"\nauth = [\"api_key\"]\nrespond = {{ status = 200 }}\n",
            state.display()
        ),
    )
}

fn stop(mut s: Sluice) {
    s.signal(libc::SIGTERM);
    assert!(
        s.wait_exit(std::time::Duration::from_secs(10)).is_some(),
        "sluice drains and exits"
    );
}

fn statuses(s: &Sluice, n: usize) -> Vec<u16> {
    let key = [("x-api-key", "dave-key-1")];
    (0..n)
        .map(|_| http_get(s.addr(), "/q", &key).status)
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The ledger's (requests, admitted) of `consumer` on UTC day `day`.
fn ledger_day(state: &std::path::Path, consumer: &str, day: u64) -> (i64, i64) {
    let db = rusqlite::Connection::open(state).unwrap();
    db.query_row(
        "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(admitted), 0) FROM usage_day
         WHERE bucket = ?1 AND consumer = ?2",
        rusqlite::params![day as i64, consumer],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn a_quota_holds_across_restarts_and_resets_with_its_period() {
    let dir = temp_dir();
    let state = dir.path().join("state.db");
    let cfg = ledger_config(&state);
    let today = unix_now() / 86_400;
    let s = Sluice::start(&cfg);
    assert_eq!(statuses(&s, 5), [200; 5]);
    stop(s);
    assert_eq!(
        ledger_day(&state, "dave", today),
        (5, 5),
        "a drain writes all"
    );

    // Yesterday's use, far over the quota: another period, so it must not count today.
    let db = rusqlite::Connection::open(&state).unwrap();
    db.execute(
        "INSERT INTO usage_day (bucket, consumer, route, class, requests, admitted, limited, bytes_in, bytes_out, latency_us)
         VALUES (?1, 'dave', 'q', 2, 100, 100, 0, 0, 0, 0)",
        [(today - 1) as i64],
    )
    .unwrap();
    drop(db);

    let s = Sluice::start(&cfg);
    assert_eq!(
        statuses(&s, 5),
        [200, 200, 200, 429, 429],
        "5 used before the restart, 3 of 8 left; yesterday's 100 do not count"
    );
    stop(s);
    if unix_now() / 86_400 != today {
        return; // The test ran across midnight UTC: the period reset under it.
    }
    assert_eq!(
        ledger_day(&state, "dave", today),
        (10, 8),
        "refused requests are counted but not charged"
    );

    let s = Sluice::start(&cfg);
    let r = http_get(s.addr(), "/q", &[("x-api-key", "dave-key-1")]);
    assert_eq!(r.status, 429, "still exhausted after a second restart");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    let to_midnight = (today + 1) * 86_400 - unix_now();
    assert!(
        retry.abs_diff(to_midnight) <= 2,
        "retry-after {retry} is the time to 00:00 UTC ({to_midnight})"
    );
    stop(s);
}

#[test]
fn a_bytes_quota_refuses_once_used_and_marks_raise_alert_events() {
    use std::time::{Duration, Instant};
    let mut rx = common::webhook::WebhookReceiver::start(0);
    let body = "x".repeat(4000);
    let sl = Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [alerts.quota80]\nmetric = \"quota_used\"\nthreshold = 0.8\nwebhook = \"{hook}\"\n\n\
             [alerts.quota_done]\nmetric = \"quota_used\"\nscope = \"consumer:erin\"\nthreshold = 1.0\nwebhook = \"{hook}\"\n\n\
             [consumers.frank]\napi_keys = [\"frank-key-1\"]\nquota = {{ bytes = \"600KB\", period = \"day\" }}\n\n\
             [consumers.gina]\napi_keys = [\"gina-key-1\"]\nquota = {{ bytes = \"300KB\", period = \"day\" }}\n\n\
             [consumers.erin]\napi_keys = [\"erin-key-1\"]\nquota = {{ requests = 10, period = \"day\" }}\n\n\
             [routes.big]\npath = \"/big\"\nauth = [\"api_key\"]\nrespond = {{ status = 200, body = \"{body}\" }}\n",
            hook = rx.url("/alerts"),
        ),
    ));
    // A bytes quota: each request reserves an estimate, settled with its real size at its end.
    let frank = [("x-api-key", "frank-key-1")];
    let started = Instant::now();
    let mut ok_bytes = 0usize;
    let mut refused = None;
    let mut c = Conn::connect(sl.addr());
    while started.elapsed() < Duration::from_secs(10) {
        let r = c.get("/big", &frank);
        match r.status {
            // What the quota counts: the request as sent, the response as received.
            200 => {
                ok_bytes += build_request("GET", "/big", &frank, b"").len()
                    + r.raw_head.len()
                    + r.body.len()
            }
            429 => {
                refused = Some(r);
                break;
            }
            s => panic!("status {s}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = refused.expect("the bytes quota refuses within 10 s");
    assert!(r.body_str().contains("quota exceeded"), "{}", r.body_str());
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap();
    let to_midnight = (unix_now() / 86_400 + 1) * 86_400 - unix_now();
    assert!(retry.abs_diff(to_midnight) <= 2, "{retry} vs {to_midnight}");
    // 40 kB at about 4 kB a request every 20 ms: past the quota by at most about two seconds of
    // traffic (a report interval, and the watch's tick).
    eprintln!(
        "bytes quota 600 kB: {ok_bytes} B in and out admitted, refused after {:?}",
        started.elapsed()
    );
    assert!(
        ok_bytes >= 600_000,
        "refused before the quota was used: {ok_bytes}"
    );
    // Leased like requests, settled with each request's real size: the quota is passed by at most
    // the last request admitted (about 4.1 kB in and out here).
    assert!(ok_bytes < 600_000 + 4_200, "{ok_bytes}");
    assert_eq!(
        http_get(sl.addr(), "/big", &frank).status,
        429,
        "on every worker"
    );

    // Four clients at once, a new connection per request (both workers): the sum admitted passes
    // the quota by at most the requests in flight when it ran out.
    let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = sl.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let total = total.clone();
            std::thread::spawn(move || {
                let gina = [("x-api-key", "gina-key-1")];
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(20) {
                    let r = http_get(addr, "/big", &gina);
                    match r.status {
                        200 => {
                            let n = build_request("GET", "/big", &gina, b"").len()
                                + r.raw_head.len()
                                + r.body.len();
                            total.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                        }
                        429 => return,
                        s => panic!("status {s}"),
                    }
                }
                panic!("gina was never refused");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let total = total.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("bytes quota 300 kB, 4 clients on 2 workers: {total} B admitted");
    assert!((300_000..300_000 + 4 * 4_200).contains(&total), "{total}");

    // Request quota marks: 80% fires the global rule for erin, 100% erin's own rule.
    let erin = [("x-api-key", "erin-key-1")];
    for _ in 0..8 {
        assert_eq!(http_get(sl.addr(), "/big", &erin).status, 200);
    }
    assert!(
        eventually(Duration::from_secs(5), || rx.events().iter().any(|e| e
            ["alert"]
            == "quota80"
            && e["consumer"] == "erin"
            && e["state"] == "firing")),
        "80% of erin's quota raised an event: {:?}",
        rx.events()
    );
    assert!(!rx.has("quota_done", "firing"), "not yet 100%");
    for _ in 0..2 {
        assert_eq!(http_get(sl.addr(), "/big", &erin).status, 200);
    }
    assert_eq!(http_get(sl.addr(), "/big", &erin).status, 429);
    assert!(eventually(Duration::from_secs(5), || rx.has("quota_done", "firing")));
    let ev = rx
        .events()
        .iter()
        .find(|e| e["alert"] == "quota_done")
        .cloned()
        .unwrap();
    assert_eq!(ev["consumer"], "erin");
    assert_eq!(ev["metric"], "quota_used");
    assert!(ev["value"].as_f64().unwrap() >= 1.0, "{ev}");
    // frank's bytes quota crossed 80% too; each consumer fires on its own.
    assert!(rx
        .events()
        .iter()
        .any(|e| e["alert"] == "quota80" && e["consumer"] == "frank"));
    let log = sl.stderr_text();
    assert!(log.contains("quota mark crossed"), "the marks are logged");
    // The consumers view (`/status`, the stats page, `sluice top`) shows each one's share used.
    let admin = sl.admin_addr().expect("admin");
    let mut shares = serde_json::Value::Null;
    let shown = eventually(Duration::from_secs(5), || {
        let r = http_get(admin, "/status", &[]);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let top = v["consumers"]["top"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let share = |n: &str| {
            top.iter()
                .find(|c| c["name"] == n)
                .and_then(|c| c["quota_used"].as_f64())
        };
        let ok = share("erin") == Some(1.0) && share("frank").is_some_and(|f| f >= 1.0);
        shares = v["consumers"].clone();
        ok
    });
    assert!(shown, "quota_used in /status: {shares}");
}

#[test]
fn concurrent_clients_on_both_workers_get_exactly_the_quota_and_no_503() {
    let sl = Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"",
        "[consumers.hank]\napi_keys = [\"hank-key-1\"]\nquota = { requests = 60, period = \"day\" }\n\n\
         [routes.q]\npath = \"/q\"\nauth = [\"api_key\"]\nrespond = { status = 200 }\n",
    ));
    let addr = sl.addr();
    let counts: Vec<(u32, u32)> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let hank = [("x-api-key", "hank-key-1")];
                let (mut ok, mut refused) = (0, 0);
                while refused < 3 {
                    match http_get(addr, "/q", &hank).status {
                        200 => ok += 1,
                        429 => refused += 1,
                        s => panic!("status {s}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let admitted: u32 = counts.iter().map(|c| c.0).sum();
    assert_eq!(admitted, 60, "six clients at once: {counts:?}");
}
