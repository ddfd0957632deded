//! More than one worker: requests spread over many connections and a
//! simultaneous burst all succeed.

mod common;

use common::*;
use std::sync::{Arc, Barrier};
use std::thread;

fn two_workers(be: &Backend) -> Sluice {
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "{}{}[routes.local]\npath = \"/local\"\nrespond = {{ status = 200, body = \"local\" }}\n",
            upstream("app", &[be.addr()], ""),
            catch_all("app")
        ),
    ))
}

#[test]
fn two_workers_serve_many_connections() {
    let be = Backend::start(|r| Reply::ok(r.path.clone()));
    let sl = two_workers(&be);
    for c in 0..50 {
        let mut conn = Conn::connect(sl.addr());
        for i in 0..4 {
            let path = format!("/c{c}/r{i}");
            let r = conn.get(&path, &[]);
            assert_eq!((r.status, r.body_str()), (200, path.clone()), "{r}");
        }
        assert_eq!(conn.get("/local", &[]).body, b"local");
    }
    assert_eq!(be.request_count(), 200);
}

#[test]
fn burst_of_64_connections_all_succeed() {
    let be = Backend::start(|r| Reply::ok(r.path.clone()));
    let sl = two_workers(&be);
    let addr = sl.addr();
    let gate = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let gate = gate.clone();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                gate.wait();
                let path = format!("/burst/{i}");
                let a = c.get(&path, &[]);
                let b = c.get("/local", &[]);
                (i, a.status, a.body_str() == path, b.status)
            })
        })
        .collect();
    let mut bad = Vec::new();
    for t in threads {
        let (i, s, body_ok, s2) = t.join().expect("client thread panicked");
        if s != 200 || !body_ok || s2 != 200 {
            bad.push((i, s, body_ok, s2));
        }
    }
    assert!(
        bad.is_empty(),
        "failed burst clients (id, status, body ok, local status): {bad:?}"
    );
    assert_eq!(be.request_count(), 64);
}

#[test]
fn pool_holds_one_upstream_connection_per_worker() {
    let be = Backend::start(|r| Reply::ok(r.path.clone()));
    let sl = two_workers(&be);
    // Sequential requests, each on a fresh client connection: whichever
    // worker accepts it, it finds its own pooled upstream connection idle.
    for i in 0..40 {
        let r = http_get(sl.addr(), &format!("/seq{i}"), &[]);
        assert_eq!(r.status, 200, "{r}");
    }
    assert_eq!(be.request_count(), 40);
    assert!(
        be.connections() <= 2,
        "40 sequential requests on 2 workers opened {} upstream connections (want ≤ 1 per worker)",
        be.connections()
    );
}

fn driver_serves(driver: &str) {
    let be = Backend::echo();
    let sl = Sluice::start(&config_with(
        &format!(
            "workers = 2\ndriver = \"{driver}\"\nlog_level = \"info\"\nshutdown_timeout = \"2s\""
        ),
        &format!("{}{}", upstream("app", &[be.addr()], ""), catch_all("app")),
    ));
    let body = pattern_bytes(1_000_000, 21);
    for _ in 0..3 {
        let mut c = Conn::connect(sl.addr());
        let w = c.send_in_background(build_request("POST", "/echo", &[], &body));
        let r = c.read_response().expect("echo response");
        w.join().unwrap().expect("upload");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(sha256_hex(&r.body), sha256_hex(&body));
        assert_eq!(c.get("/small", &[]).status, 200);
    }
}

#[test]
fn epoll_driver_serves() {
    driver_serves("epoll");
}

#[test]
fn io_uring_driver_serves() {
    driver_serves("io_uring");
}

#[test]
fn workers_auto_serves() {
    let be = Backend::fixed("auto");
    let sl = Sluice::start(&config_with(
        "workers = \"auto\"\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!("{}{}", upstream("app", &[be.addr()], ""), catch_all("app")),
    ));
    for _ in 0..10 {
        assert_eq!(http_get(sl.addr(), "/", &[]).body, b"auto");
    }
}
