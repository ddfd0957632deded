//! Parked keep-alive connections: a connection idle past the park delay (50 ms) gives back its session and
//! waits for readability alone. Requests must cross that boundary without loss, the idle timeout must still
//! close a parked connection, and a drain must not wait for parked ones.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

fn start(be: &Backend, idle: &str) -> Sluice {
    Sluice::start(&config(&format!(
        "[http]\nidle_timeout = \"{idle}\"\n\n{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )))
}

#[test]
fn a_parked_connection_serves_its_next_request() {
    let be = Backend::fixed("ok");
    let sl = start(&be, "10s");
    let mut c = Conn::connect(sl.addr());
    for pause in [0u64, 120, 300, 60, 1000] {
        thread::sleep(Duration::from_millis(pause));
        let r = c.get("/", &[]);
        assert_eq!(r.status, 200, "after a {pause} ms pause");
        assert_eq!(r.body_str(), "ok");
    }
    assert_eq!(be.request_count(), 5);
}

#[test]
fn requests_sent_around_the_park_moment_are_never_lost() {
    // Pauses straddling the 50 ms park delay, on several connections at once, so that some requests arrive
    // while the idle read is being cancelled: each must still be answered, once.
    let be = Backend::fixed("ok");
    let sl = start(&be, "10s");
    let addr = sl.addr();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.set_read_timeout(Duration::from_secs(5));
                for i in 0..30u64 {
                    // 44..=56 ms, shifted per thread
                    thread::sleep(Duration::from_micros(
                        44_000 + ((i * 7 + t * 3) % 13) * 1000,
                    ));
                    let r = c.get(&format!("/t{t}/{i}"), &[]);
                    assert_eq!(r.status, 200, "thread {t} request {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    assert_eq!(be.request_count(), 8 * 30);
}

#[test]
fn pipelined_requests_after_a_park_are_answered_in_order() {
    let be = Backend::fixed("ok");
    let sl = start(&be, "10s");
    let mut c = Conn::connect(sl.addr());
    assert_eq!(c.get("/", &[]).status, 200);
    thread::sleep(Duration::from_millis(150));
    let mut both = build_request("GET", "/a", &[], b"");
    both.extend_from_slice(&build_request("GET", "/b", &[], b""));
    c.send(&both);
    for _ in 0..2 {
        let r = c.read_response().expect("pipelined response");
        assert_eq!(r.status, 200);
    }
    assert_eq!(be.request_count(), 3);
}

#[test]
fn the_idle_timeout_closes_a_parked_connection() {
    let be = Backend::fixed("ok");
    let sl = start(&be, "400ms");
    let mut c = Conn::connect(sl.addr());
    assert_eq!(c.get("/", &[]).status, 200);
    let t = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)), "not closed");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "closed after {took:?}, before the 400 ms idle timeout"
    );
}

#[test]
fn a_drain_does_not_wait_for_parked_connections() {
    let be = Backend::fixed("ok");
    let mut sl = start(&be, "60s");
    let mut conns: Vec<Conn> = (0..20).map(|_| Conn::connect(sl.addr())).collect();
    for c in &mut conns {
        assert_eq!(c.get("/", &[]).status, 200);
    }
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    sl.signal(libc::SIGTERM);
    assert!(
        sl.wait_exit(Duration::from_secs(5)).is_some(),
        "sluice did not exit with parked connections open"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "drain took {:?}",
        t.elapsed()
    );
    for c in &mut conns {
        assert!(
            c.closed_within(Duration::from_secs(2)),
            "connection left open after exit"
        );
    }
}

fn parked_gauge(admin: std::net::SocketAddr) -> Option<u64> {
    let text = http_get(admin, "/metrics", &[]).body_str();
    text.lines()
        .filter(|l| l.starts_with("sluice_worker_parked_connections{"))
        .map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn parked_connections_are_counted_in_metrics() {
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[http]\nidle_timeout = \"60s\"\n\n{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )));
    let admin = sl.admin_addr().expect("admin address");
    let mut conns: Vec<Conn> = (0..6).map(|_| Conn::connect(sl.addr())).collect();
    for c in &mut conns {
        assert_eq!(c.get("/", &[]).status, 200);
    }
    // Workers report once a second.
    assert!(
        eventually(Duration::from_secs(5), || parked_gauge(admin) == Some(6)),
        "expected 6 parked connections, metrics say {:?}",
        parked_gauge(admin)
    );
    conns.truncate(2);
    assert!(
        eventually(Duration::from_secs(5), || parked_gauge(admin) == Some(2)),
        "closed connections should leave the parked count, metrics say {:?}",
        parked_gauge(admin)
    );
}
