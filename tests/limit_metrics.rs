//! The limit series on the real binary with two workers: `sluice_limit_admitted_total` and
//! `_rejected_total` add up exactly to the 200s and 429s the client saw, `sluice_limit_keys` is the
//! number of distinct keys sent, one worker that spends its share of a key asks the control thread
//! for a lease and gets one (worker-side lease counters and `sluice_limit_pool_messages_total`), and a
//! flood of keys past `max_keys` evicts and stays bounded. `/status` `limits` shows the same figures.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Five keys on one keep-alive connection (so one worker). Each key's burst of 10 is split 5 and 5
/// between the workers: three requests a key leave this worker more than a lease's worth of its
/// share (no message at all); seventeen more run it out, so it asks, and the pool recalls the other
/// worker's share to grant it.
/// The rate (1/h) refills nothing meanwhile.
const KEYS: usize = 5;
const WITHIN_SHARE: usize = 3;
const PER_KEY: usize = 20;

fn start() -> Sluice {
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [limits.k]\nrate = \"1/h\"\nburst = 10\nkey = \"header:x-k\"\n\n\
         [limits.small]\nrate = \"1/h\"\nburst = 10\nkey = \"header:x-k\"\nmax_keys = 10\n\n\
         [routes.r]\npath = \"/r\"\nrespond = { status = 200, body = \"ok\" }\nrate_limit = [\"k\"]\n\n\
         [routes.s]\npath = \"/s\"\nrespond = { status = 200, body = \"ok\" }\nrate_limit = [\"small\"]\n",
    ))
}

/// Sends `per_key` requests for each of `keys` keys to `path` on one connection; returns (200s, 429s).
fn send(addr: SocketAddr, path: &str, keys: usize, per_key: usize) -> (u64, u64) {
    let mut c = Conn::connect(addr);
    let (mut ok, mut limited) = (0, 0);
    for k in 0..keys {
        let v = format!("key-{k}");
        for _ in 0..per_key {
            match c.get(path, &[("x-k", v.as_str())]).status {
                200 => ok += 1,
                429 => limited += 1,
                s => panic!("{path}: unexpected status {s}"),
            }
        }
    }
    (ok, limited)
}

fn value(text: &str, name: &str, labels: &str) -> u64 {
    metric_value(text, name, labels).unwrap_or(-1.0) as u64
}

#[test]
fn limit_counts_keys_and_leases_add_up() {
    let sl = start();
    let admin = sl.admin_addr().expect("admin listener");
    let l = "limit=\"k\"";
    let (ok, limited) = send(sl.addr(), "/r", KEYS, WITHIN_SHARE);
    assert_eq!((ok, limited), ((KEYS * WITHIN_SHARE) as u64, 0));
    let mut text = String::new();
    let arrived = eventually(Duration::from_secs(10), || {
        text = scrape(admin);
        value(&text, "sluice_limit_admitted_total", l) == ok
    });
    assert!(arrived, "admitted {ok} never showed:\n{text}");
    assert_eq!(value(&text, "sluice_limit_keys", l), KEYS as u64, "{text}");
    assert_eq!(value(&text, "sluice_limit_rejected_total", l), 0);
    assert_eq!(
        value(&text, "sluice_limit_lease_asks_total", l),
        0,
        "{text}"
    );

    let (more_ok, more_limited) = send(sl.addr(), "/r", KEYS, PER_KEY - WITHIN_SHARE);
    let (ok, limited) = (ok + more_ok, limited + more_limited);
    assert!(limited > 0, "a burst of 10 per key cannot admit 20");
    assert!(
        ok >= (KEYS * 5) as u64,
        "at least this worker's share of each key"
    );
    let arrived = eventually(Duration::from_secs(10), || {
        text = scrape(admin);
        value(&text, "sluice_limit_admitted_total", l) == ok
            && value(&text, "sluice_limit_rejected_total", l) == limited
            && value(&text, "sluice_limit_lease_grants_total", l) > 0
    });
    assert!(
        arrived,
        "admitted {ok} and rejected {limited} (and a grant) never showed:\n{text}"
    );
    // The recall made the other worker hold an entry for the keys too: each worker's entry counts.
    let keys = value(&text, "sluice_limit_keys", l);
    assert!(
        (KEYS as u64..=2 * KEYS as u64).contains(&keys),
        "{keys} keys"
    );
    assert!(value(&text, "sluice_limit_lease_asks_total", l) > 0);
    assert!(value(&text, "sluice_limit_lease_tokens_total", l) > 0);
    assert_eq!(value(&text, "sluice_limit_evicted_total", l), 0);
    assert!(value(&text, "sluice_limit_pool_messages_total", "kind=\"asks\"") > 0);
    assert!(value(&text, "sluice_limit_pool_messages_total", "kind=\"grants\"") > 0);
    assert!(
        value(
            &text,
            "sluice_limit_pool_messages_total",
            "kind=\"recalls\""
        ) > 0,
        "the other worker's share was recalled:\n{text}"
    );
    assert!(metric_value(&text, "sluice_limit_pools", "").is_some_and(|v| v >= 1.0));
    // The other limit had no traffic: its series are there, at zero.
    assert_eq!(
        value(&text, "sluice_limit_admitted_total", "limit=\"small\""),
        0
    );
    // No quota configured, no quota series.
    assert!(!text.contains("{limit=\"quota:"), "{text}");

    let status: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/status", &[]).body_str()).expect("json");
    let k = status["limits"]["limits"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == "k"))
        .expect("limit k in /status");
    assert_eq!(k["admitted"], ok);
    assert_eq!(k["rejected"], limited);
    assert_eq!(k["keys"], keys);
    assert!(status["limits"]["pool_messages"]["grants"].as_u64() > Some(0));
}

#[test]
fn keys_past_max_keys_are_evicted_and_stay_bounded() {
    let sl = start();
    let admin = sl.admin_addr().expect("admin listener");
    // 50 distinct keys, over two connections (which may land on either worker).
    let (a_ok, a_limited) = send(sl.addr(), "/s", 25, 1);
    let mut c = Conn::connect(sl.addr());
    let (mut ok, mut limited) = (a_ok, a_limited);
    for k in 25..50 {
        match c.get("/s", &[("x-k", &format!("key-{k}"))]).status {
            200 => ok += 1,
            429 => limited += 1,
            s => panic!("/s: unexpected status {s}"),
        }
    }
    let l = "limit=\"small\"";
    let mut text = String::new();
    let arrived = eventually(Duration::from_secs(10), || {
        text = scrape(admin);
        value(&text, "sluice_limit_admitted_total", l)
            + value(&text, "sluice_limit_rejected_total", l)
            == ok + limited
    });
    assert!(arrived, "{} checks never showed:\n{text}", ok + limited);
    assert!(value(&text, "sluice_limit_evicted_total", l) > 0, "{text}");
    let keys = value(&text, "sluice_limit_keys", l);
    assert!(
        (1..=10 * 2).contains(&keys),
        "at most max_keys per worker, got {keys}"
    );
}
