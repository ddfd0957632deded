//! Per-worker upstream subsets (`subset_size`): a 64-endpoint group on two
//! workers opens at most subset_size x workers upstream connections, and with
//! subset_size x workers >= endpoints every endpoint still gets traffic.
//!
//! Workers cannot be told apart from outside, so the tests reason from the
//! backends: many separate client connections (SO_REUSEPORT spreads them over
//! both workers), requests one at a time (so each worker needs at most one
//! pooled connection per endpoint of its subset), round robin.

mod common;

use common::*;
use std::time::{Duration, Instant};

const ENDPOINTS: usize = 64;

fn backends() -> Vec<Backend> {
    (0..ENDPOINTS).map(|_| Backend::fixed("ok")).collect()
}

fn two_workers(bes: &[Backend], subset_size: usize) -> Sluice {
    let addrs: Vec<_> = bes.iter().map(|b| b.addr()).collect();
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "{}{}",
            upstream(
                "app",
                &addrs,
                &format!(
                    "subset_size = {subset_size}\npool = {{ max_idle = 64, idle_timeout = \"60s\" }}"
                )
            ),
            catch_all("app")
        ),
    ))
}

fn with_traffic(bes: &[Backend]) -> usize {
    bes.iter().filter(|b| b.request_count() > 0).count()
}

/// One round of traffic: a fresh connection with one request, then a
/// keep-alive connection with `keep_alive` requests.
fn round(sl: &Sluice, i: usize, keep_alive: usize) -> usize {
    let r = http_get(sl.addr(), &format!("/fresh/{i}"), &[]);
    assert_eq!(r.status, 200, "{r}");
    let mut c = Conn::connect(sl.addr());
    for j in 0..keep_alive {
        let r = c.get(&format!("/ka/{i}/{j}"), &[]);
        assert_eq!(r.status, 200, "{r}");
    }
    1 + keep_alive
}

#[test]
fn subset_bounds_upstream_connections_and_uses_both_subsets() {
    let bes = backends();
    let sl = two_workers(&bes, 8);
    // Enough rounds that each worker has cycled through its whole subset
    // many times; stop early once both subsets are visibly in use and
    // every worker has had time to round-robin over all 8 endpoints.
    let mut sent = 0;
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rounds < 60 || (with_traffic(&bes) < 9 && Instant::now() < deadline) {
        sent += round(&sl, rounds, 4);
        rounds += 1;
    }
    let total: usize = bes.iter().map(|b| b.request_count()).sum();
    assert_eq!(total, sent, "every request reached a backend once");
    let distinct = with_traffic(&bes);
    let conns: usize = bes.iter().map(|b| b.connections()).sum();
    assert!(
        distinct <= 16,
        "{distinct} distinct backends got traffic; 2 workers x subset 8 allows 16"
    );
    assert!(
        distinct >= 9,
        "{distinct} distinct backends got traffic over {rounds} rounds: \
         only one worker's subset was used (or subsets overlap)"
    );
    assert!(
        conns <= 16,
        "{conns} upstream connections for {sent} sequential requests; want ≤ 8 x 2"
    );
}

#[test]
fn subsets_together_cover_every_endpoint() {
    let bes = backends();
    let sl = two_workers(&bes, 32);
    // Round robin over 32 endpoints per worker: each worker needs ≥ 32
    // requests; keep going (bounded) until all 64 have been used.
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while with_traffic(&bes) < ENDPOINTS && Instant::now() < deadline {
        round(&sl, rounds, 8);
        rounds += 1;
    }
    let idle: Vec<_> = bes
        .iter()
        .filter(|b| b.request_count() == 0)
        .map(|b| b.addr())
        .collect();
    assert!(
        idle.is_empty(),
        "after {rounds} rounds these endpoints never got a request: {idle:?}"
    );
    let conns: usize = bes.iter().map(|b| b.connections()).sum();
    assert!(
        conns <= 64,
        "{conns} upstream connections; want ≤ 32 x 2 for sequential requests"
    );
}
