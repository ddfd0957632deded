//! In-flight requests finish on the config generation they started with (DESIGN: "connections in
//! flight finish on the snapshot they started with"): every timeout a request uses comes from the
//! generation it started on, even when a reload (SIGHUP after `rewrite_config`) lands while it is in
//! flight. Covered: `[http] body_timeout`, and the upstream's `response_timeout` and `idle_timeout`,
//! each made shorter and longer by the reload.
//!
//! Every case runs a fresh sluice (`workers = 1`) and origin. Generation N also answers `/gen` with
//! `genN` itself, so a case waits until the worker serves generation 2 (it takes the new snapshot
//! from a message, after the main thread logged `config reloaded`) before the in-flight request reads
//! again. That request is then made to read once more (a body byte from the client, a response byte
//! from the origin), so a sluice that looked a timeout up again on each read fails here as surely as
//! one that moved the whole request over. A new request after the reload must get the new value:
//! without that, a reload that ignored the key would let the in-flight check pass for nothing.
//!
//! The `queued_*` cases hold the request in the circuit breaker's queue (one request at a time)
//! while the reload lands: it has started, on generation 1, but reads nothing of its body and sends
//! nothing upstream until after the reload, so a sluice that took a timeout from the worker's
//! current generation when the body or the attempt starts fails there.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The upstream keys every case sets besides the timeout it varies: no retry and never ejected, so
/// each request is one attempt and a 504 leaves the endpoint in use for the next request.
const ONE_ATTEMPT: &str = "retries = 0\npassive_health = { max_failures = 0 }";
/// How long a script waits for a request head, or for the test to say the reload landed.
const CUE_WAIT: Duration = Duration::from_secs(5);

/// Generation `gen` of a case's config: `[http]` keys `http`, upstream `app` at `addr` with keys
/// `up`, a `/gen` route sluice answers itself with `genN`, and everything else to `app`.
fn generation(gen: u32, http: &str, addr: SocketAddr, up: &str) -> String {
    generation_with(gen, http, addr, up, "")
}

/// Like `generation`, with further tables `more` (e.g. `[admin]`).
fn generation_with(gen: u32, http: &str, addr: SocketAddr, up: &str, more: &str) -> String {
    config(&format!(
        "{more}\n\n[http]\n{http}\n\n{}[routes.gen]\npath = \"/gen\"\nrespond = {{ status = 200, body = \"gen{gen}\" }}\n\n{}",
        upstream("app", &[addr], &format!("{ONE_ATTEMPT}\n{up}")),
        catch_all("app")
    ))
}

/// Upstream keys that let one request at a time through to `app`; the next waits (≤5 s) in the queue.
const ONE_AT_A_TIME: &str =
    "circuit_breaker = { max_connections = 1, max_pending = 10, queue_timeout = \"5s\" }";
/// An admin listener, for `sluice_worker_in_flight`.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"";

/// Waits (≤3 s; workers report about once a second) until the worker counts `n` requests in flight:
/// a request waiting in the circuit breaker's queue has started (its generation is chosen) though
/// nothing of it has reached the upstream yet.
fn wait_worker_in_flight(sl: &Sluice, n: f64) {
    let admin = sl.admin_addr().expect("an admin listener");
    let mut last = None;
    let seen = eventually(Duration::from_secs(3), || {
        last = metric_sum(&scrape(admin), "sluice_worker_in_flight");
        last == Some(n)
    });
    assert!(
        seen,
        "sluice_worker_in_flight never became {n}, last {last:?}"
    );
}

/// Rewrites the config to `toml`, reloads, and waits (≤3 s) until a new connection is served by
/// generation `gen`: with one worker, that worker runs it from then on. Returns when that was seen.
fn reload_to(sl: &Sluice, toml: &str, gen: u32) -> Instant {
    sl.rewrite_config(toml);
    assert_eq!(sl.reload(), Reload::Applied, "expected `config reloaded`");
    let want = format!("gen{gen}");
    let mut last = String::new();
    let landed = eventually(Duration::from_secs(3), || {
        last = http_get(sl.addr(), "/gen", &[]).body_str();
        last == want
    });
    assert!(
        landed,
        "the worker never served {want}; /gen still says {last:?}"
    );
    Instant::now()
}

/// Asserts the reload landed `landed - t0` after the in-flight request started, before `by`: later,
/// the request might be over (or past its next read) before generation 2 exists, proving nothing.
fn assert_landed_in_flight(t0: Instant, landed: Instant, by: Duration) {
    let took = landed - t0;
    eprintln!("reload seen by the worker {took:?} into the request");
    assert!(
        took < by,
        "the reload took {took:?} to reach the worker; it must land within {by:?} to be mid-request"
    );
}

/// Sleeps until `at`: the pacing of a slow client, not a wait for something to happen.
fn pace_until(at: Instant) {
    thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// Asserts `lo <= took <= hi`.
fn assert_between(took: Duration, lo: Duration, hi: Duration, what: &str) {
    eprintln!("{what}: {took:?}");
    assert!(
        took >= lo && took <= hi,
        "{what}: took {took:?}, expected {lo:?}..={hi:?}"
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A POST head announcing a `len`-byte body, followed by `body` (its first bytes).
fn post_start(len: usize, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

/// A backend answering 200 with the request body it received.
fn echo_body() -> Backend {
    Backend::start(|r| Reply::ok(r.body.clone()))
}

/// What a scripted origin and its test tell each other.
#[derive(Default)]
struct Cue {
    /// Origin: a request head arrived (the request has started, on generation 1).
    head_in: AtomicBool,
    /// Test: the worker serves generation 2.
    reloaded: AtomicBool,
    /// Origin: when it wrote its last byte before going silent.
    last_byte: OnceLock<Instant>,
}

impl Cue {
    /// Script side: notes the head (waiting ≤5 s for it); false if none came.
    fn take_head(&self, c: &mut RawConn) -> bool {
        let HeadRead::Head(_) = c.read_head(CUE_WAIT) else {
            return false;
        };
        self.head_in.store(true, Ordering::SeqCst);
        true
    }

    /// Script side: waits (≤5 s) for the test to say the reload landed; false if it never did or
    /// the backend is stopping.
    fn wait_reloaded(&self, c: &RawConn) -> bool {
        let until = Instant::now() + CUE_WAIT;
        while !self.reloaded.load(Ordering::SeqCst) {
            if Instant::now() >= until || !c.pause(ms(5)) {
                return false;
            }
        }
        true
    }

    /// Test side: waits (≤3 s) until the origin has the request head.
    fn wait_head(&self) {
        assert!(
            eventually(Duration::from_secs(3), || self
                .head_in
                .load(Ordering::SeqCst)),
            "the request never reached the origin"
        );
    }

    fn say_reloaded(&self) {
        self.reloaded.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- [http] body_timeout

#[test]
fn in_flight_body_keeps_its_longer_body_timeout_after_a_reload_shortens_it() {
    let be = echo_body();
    let gen = |g, t: &str| generation(g, &format!("body_timeout = \"{t}\""), be.addr(), "");
    let sl = Sluice::start(&gen(1, "3s"));
    let mut a = Conn::connect(sl.addr());
    let t0 = Instant::now();
    a.send(&post_start(10, b"01234"));
    assert!(
        eventually(Duration::from_secs(3), || be.in_flight() == 1),
        "the request never reached the backend"
    );
    let landed = reload_to(&sl, &gen(2, "300ms"), 2);
    assert_landed_in_flight(t0, landed, ms(1000));
    // Two more reads after the reload, the last 1.2 s after it: 300 ms would have ended the body
    // long before, generation 1's 3 s total does not.
    pace_until(landed + ms(500));
    a.send(b"56");
    pace_until(landed + ms(1200));
    a.send(b"789");
    let r = a.read_response().expect("the in-flight request's response");
    eprintln!(
        "in-flight body done and answered {:?} after its head",
        t0.elapsed()
    );
    assert_eq!(
        r.status, 200,
        "generation 1's 3 s body_timeout applies:\n{r}"
    );
    assert_eq!(r.body, b"0123456789", "the whole body reaches the backend");
    assert_eq!(be.last_request().body, b"0123456789");

    // A request started after the reload runs on generation 2's 300 ms.
    let mut b = Conn::connect(sl.addr());
    let t1 = Instant::now();
    b.send(&post_start(10, b"01234"));
    let r = b.read_response().expect("a 408 at generation 2's 300 ms");
    assert_json_error(&r, 408);
    assert_between(
        t1.elapsed(),
        ms(250),
        ms(1000),
        "new request's 408 (300 ms)",
    );
}

#[test]
fn in_flight_body_keeps_its_shorter_body_timeout_after_a_reload_lengthens_it() {
    let be = echo_body();
    let gen = |g, t: &str| generation(g, &format!("body_timeout = \"{t}\""), be.addr(), "");
    let sl = Sluice::start(&gen(1, "700ms"));
    let mut a = Conn::connect(sl.addr());
    a.set_read_timeout(Duration::from_secs(3));
    let t0 = Instant::now();
    a.send(&post_start(10, b"01234"));
    assert!(
        eventually(Duration::from_secs(3), || be.in_flight() == 1),
        "the request never reached the backend"
    );
    let landed = reload_to(&sl, &gen(2, "10s"), 2);
    assert_landed_in_flight(t0, landed, ms(600));
    // One more read after the reload; then the body stalls. `body_timeout` is a total from the start
    // of the body, so generation 1's deadline stays 700 ms after the head.
    a.send(b"5");
    let r = a
        .read_response()
        .expect("a 408 at generation 1's 700 ms, not a wait for 10 s");
    assert_json_error(&r, 408);
    assert_between(
        t0.elapsed(),
        ms(600),
        ms(1500),
        "in-flight 408 after the body started (700 ms)",
    );
    assert_eq!(
        be.request_count(),
        0,
        "the backend never gets a whole request"
    );

    // A request started after the reload runs on generation 2's 10 s: a body done in 1 s is fine.
    let mut b = Conn::connect(sl.addr());
    b.send(&post_start(10, b"01234"));
    pace_until(Instant::now() + ms(1000));
    b.send(b"56789");
    let r = b.read_response().expect("the new request's response");
    assert_eq!(
        r.status, 200,
        "generation 2's 10 s body_timeout applies:\n{r}"
    );
    assert_eq!(r.body, b"0123456789");
}

/// The request waits in the circuit breaker's queue (started, on generation 1, but not yet reading its
/// body) while the reload lands; its body is read only after that, and still gets generation 1's
/// 700 ms. A sluice that took `body_timeout` from the worker's current generation when the body
/// starts (as before #15/#16) would give it 10 s.
#[test]
fn queued_request_keeps_its_generations_body_timeout_when_its_body_starts_after_a_reload() {
    let release = Arc::new(AtomicBool::new(false));
    let be = {
        let release = release.clone();
        Backend::start(move |r| {
            if r.path == "/hold" {
                eventually(CUE_WAIT, || release.load(Ordering::SeqCst));
                Reply::ok("held")
            } else {
                Reply::ok(r.body.clone())
            }
        })
    };
    let gen = |g, t: &str| {
        generation_with(
            g,
            &format!("body_timeout = \"{t}\""),
            be.addr(),
            // The holder waits for the reload, which waits for a worker report (about 1 s).
            &format!("{ONE_AT_A_TIME}\nresponse_timeout = \"10s\""),
            ADMIN,
        )
    };
    let sl = Sluice::start(&gen(1, "700ms"));
    let addr = sl.addr();
    let holder = thread::spawn(move || Conn::connect(addr).get("/hold", &[]));
    assert!(
        eventually(Duration::from_secs(3), || be.in_flight() == 1),
        "the holding request never reached the backend"
    );
    let mut a = Conn::connect(sl.addr());
    a.set_read_timeout(Duration::from_secs(3));
    a.send(&post_start(10, b"01234"));
    wait_worker_in_flight(&sl, 2.0);
    assert_eq!(
        be.in_flight(),
        1,
        "the second request must wait in the queue"
    );
    reload_to(&sl, &gen(2, "10s"), 2);
    let t0 = Instant::now();
    release.store(true, Ordering::SeqCst);
    let r = a
        .read_response()
        .expect("a 408 at generation 1's 700 ms, not a wait for 10 s");
    assert_json_error(&r, 408);
    assert_between(
        t0.elapsed(),
        ms(600),
        ms(1500),
        "queued request's 408 after its turn came (700 ms)",
    );
    let held = holder.join().expect("holding client");
    assert_eq!(held.status, 200, "the holding request is answered:\n{held}");
}

// ---------------------------------------------------------------- upstream response_timeout

#[test]
fn in_flight_request_keeps_its_longer_response_timeout_after_a_reload_shortens_it() {
    let cue = Arc::new(Cue::default());
    let raw = {
        let cue = cue.clone();
        // The status line once generation 2 is in force (sluice reads again), the rest of the head
        // 1.5 s after the request: past 300 ms, within 3 s.
        RawBackend::start(move |c| {
            if !cue.take_head(c) {
                return;
            }
            let at = Instant::now();
            if cue.wait_reloaded(c)
                && c.write(b"HTTP/1.1 200 OK\r\n")
                && c.pause((at + ms(1500)).saturating_duration_since(Instant::now()))
                && c.write(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
            {
                c.hold();
            }
        })
    };
    let gen = |g, t: &str| generation(g, "", raw.addr(), &format!("response_timeout = \"{t}\""));
    let sl = Sluice::start(&gen(1, "3s"));
    let mut a = Conn::connect(sl.addr());
    let t0 = Instant::now();
    a.send(&build_request("GET", "/slow", &[], b""));
    cue.wait_head();
    let landed = reload_to(&sl, &gen(2, "300ms"), 2);
    assert_landed_in_flight(t0, landed, ms(1000));
    cue.say_reloaded();
    let r = a.read_response().expect("the in-flight request's response");
    eprintln!("in-flight response after {:?}", t0.elapsed());
    assert_eq!(
        (r.status, r.body_str()),
        (200, "ok".to_owned()),
        "generation 1's 3 s response_timeout applies:\n{r}"
    );

    // A request started after the reload runs on generation 2's 300 ms.
    let mut b = Conn::connect(sl.addr());
    let t1 = Instant::now();
    b.send(&build_request("GET", "/slow", &[], b""));
    let r = b.read_response().expect("a 504 at generation 2's 300 ms");
    assert_json_error(&r, 504);
    assert_between(
        t1.elapsed(),
        ms(250),
        ms(1000),
        "new request's 504 (300 ms)",
    );
}

#[test]
fn in_flight_request_keeps_its_shorter_response_timeout_after_a_reload_lengthens_it() {
    let cue = Arc::new(Cue::default());
    let raw = {
        let cue = cue.clone();
        RawBackend::start(move |c| {
            if !cue.take_head(c) {
                return;
            }
            if c.id == 0 {
                // The in-flight request: the status line once generation 2 is in force, then silence.
                if cue.wait_reloaded(c) && c.write(b"HTTP/1.1 200 OK\r\n") {
                    c.hold();
                }
            } else if c.pause(ms(1000))
                && c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            {
                c.hold();
            }
        })
    };
    let gen = |g, t: &str| generation(g, "", raw.addr(), &format!("response_timeout = \"{t}\""));
    let sl = Sluice::start(&gen(1, "600ms"));
    let mut a = Conn::connect(sl.addr());
    a.set_read_timeout(Duration::from_secs(3));
    let t0 = Instant::now();
    a.send(&build_request("GET", "/slow", &[], b""));
    cue.wait_head();
    let landed = reload_to(&sl, &gen(2, "10s"), 2);
    assert_landed_in_flight(t0, landed, ms(500));
    cue.say_reloaded();
    let r = a
        .read_response()
        .expect("a 504 at generation 1's 600 ms, not a wait for 10 s");
    assert_json_error(&r, 504);
    assert_between(t0.elapsed(), ms(500), ms(1200), "in-flight 504 (600 ms)");

    // A request started after the reload runs on generation 2's 10 s: an answer after 1 s is fine.
    let mut b = Conn::connect(sl.addr());
    let r = b.get("/slow", &[]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "ok".to_owned()),
        "generation 2's 10 s response_timeout applies:\n{r}"
    );
}

/// The request waits in the circuit breaker's queue while the reload lands; its attempt starts after
/// that, and still gets generation 1's 600 ms `response_timeout`. A sluice that took the upstream's
/// settings from the worker's current generation when the attempt starts would give it 10 s.
#[test]
fn queued_request_keeps_its_generations_response_timeout_when_its_attempt_starts_after_a_reload() {
    let cue = Arc::new(Cue::default());
    let raw = {
        let cue = cue.clone();
        RawBackend::start(move |c| {
            let HeadRead::Head(head) = c.read_head(CUE_WAIT) else {
                return;
            };
            if request_path(&head) == "/hold" {
                // The holder: its head at once (so its own 600 ms cannot end it), its body, and with
                // it the slot, once the reload has landed.
                cue.head_in.store(true, Ordering::SeqCst);
                if c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
                    && cue.wait_reloaded(c)
                    && c.write(b"held")
                {
                    c.hold();
                }
            } else {
                // The queued request: its head arrived; no answer ever comes.
                let _ = cue.last_byte.set(Instant::now());
                c.hold();
            }
        })
    };
    let gen = |g, t: &str| {
        generation_with(
            g,
            "",
            raw.addr(),
            &format!("{ONE_AT_A_TIME}\nresponse_timeout = \"{t}\""),
            ADMIN,
        )
    };
    let sl = Sluice::start(&gen(1, "600ms"));
    let addr = sl.addr();
    let holder = thread::spawn(move || Conn::connect(addr).get("/hold", &[]));
    cue.wait_head();
    let mut a = Conn::connect(sl.addr());
    a.set_read_timeout(Duration::from_secs(3));
    a.send(&build_request("GET", "/queued", &[], b""));
    wait_worker_in_flight(&sl, 2.0);
    assert_eq!(
        raw.connections(),
        1,
        "the second request must wait in the queue"
    );
    reload_to(&sl, &gen(2, "10s"), 2);
    cue.say_reloaded();
    let r = a
        .read_response()
        .expect("a 504 at generation 1's 600 ms, not a wait for 10 s");
    let done = Instant::now();
    assert_json_error(&r, 504);
    let sent = *cue
        .last_byte
        .get()
        .expect("the queued request reached the origin");
    assert_between(
        done.saturating_duration_since(sent),
        ms(500),
        ms(1200),
        "queued request's 504 after it reached the origin (600 ms)",
    );
    let held = holder.join().expect("holding client");
    assert_eq!(held.status, 200, "the holding request is answered:\n{held}");
}

// ---------------------------------------------------------------- upstream idle_timeout

#[test]
fn in_flight_response_keeps_its_longer_idle_timeout_after_a_reload_shortens_it() {
    let cue = Arc::new(Cue::default());
    let raw = {
        let cue = cue.clone();
        // The head at once; once generation 2 is in force, the body in three pieces 600 ms apart:
        // gaps past 300 ms, within 3 s. (A 6-byte body is gathered whole before it is sent.)
        RawBackend::start(move |c| {
            if cue.take_head(c)
                && c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
                && cue.wait_reloaded(c)
                && c.write(b"ab")
                && c.pause(ms(600))
                && c.write(b"cd")
                && c.pause(ms(600))
                && c.write(b"ef")
            {
                c.hold();
            }
        })
    };
    let gen = |g, t: &str| generation(g, "", raw.addr(), &format!("idle_timeout = \"{t}\""));
    let sl = Sluice::start(&gen(1, "3s"));
    let mut a = Conn::connect(sl.addr());
    let t0 = Instant::now();
    a.send(&build_request("GET", "/trickle", &[], b""));
    cue.wait_head();
    let landed = reload_to(&sl, &gen(2, "300ms"), 2);
    assert_landed_in_flight(t0, landed, ms(1000));
    cue.say_reloaded();
    let r = a.read_response().expect("the in-flight request's response");
    eprintln!("in-flight trickled response after {:?}", t0.elapsed());
    assert_eq!(
        (r.status, r.body_str()),
        (200, "abcdef".to_owned()),
        "generation 1's 3 s idle_timeout applies:\n{r}"
    );

    // A request started after the reload runs on generation 2's 300 ms: the first 600 ms gap ends it.
    let mut b = Conn::connect(sl.addr());
    let t1 = Instant::now();
    b.send(&build_request("GET", "/trickle", &[], b""));
    let r = b.read_response().expect("a 504 at generation 2's 300 ms");
    assert_json_error(&r, 504);
    assert_between(
        t1.elapsed(),
        ms(250),
        ms(1000),
        "new request's 504 (300 ms)",
    );
}

#[test]
fn in_flight_response_keeps_its_shorter_idle_timeout_after_a_reload_lengthens_it() {
    let cue = Arc::new(Cue::default());
    let raw = {
        let cue = cue.clone();
        RawBackend::start(move |c| {
            if !cue.take_head(c) {
                return;
            }
            if c.id == 0 {
                // The in-flight request: half the body, one more byte once generation 2 is in force
                // (sluice reads again), then silence.
                let ok = c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde")
                    && cue.wait_reloaded(c)
                    && c.write(b"f");
                let _ = cue.last_byte.set(Instant::now());
                if ok {
                    c.hold();
                }
            } else if c
                .write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nab")
                && c.pause(ms(1000))
                && c.write(b"cdef")
            {
                c.hold();
            }
        })
    };
    let gen = |g, t: &str| generation(g, "", raw.addr(), &format!("idle_timeout = \"{t}\""));
    let sl = Sluice::start(&gen(1, "600ms"));
    let mut a = Conn::connect(sl.addr());
    a.set_read_timeout(Duration::from_secs(3));
    let t0 = Instant::now();
    a.send(&build_request("GET", "/stall", &[], b""));
    cue.wait_head();
    let landed = reload_to(&sl, &gen(2, "10s"), 2);
    assert_landed_in_flight(t0, landed, ms(500));
    cue.say_reloaded();
    let r = a
        .read_response()
        .expect("a 504 at generation 1's 600 ms, not a wait for 10 s");
    let done = Instant::now();
    assert_json_error(&r, 504);
    let last = *cue.last_byte.get().expect("the origin wrote its last byte");
    assert_between(
        done.saturating_duration_since(last),
        ms(500),
        ms(1200),
        "in-flight 504 after the origin's last byte (600 ms)",
    );

    // A request started after the reload runs on generation 2's 10 s: a 1 s gap is fine.
    let mut b = Conn::connect(sl.addr());
    let r = b.get("/stall", &[]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "abcdef".to_owned()),
        "generation 2's 10 s idle_timeout applies:\n{r}"
    );
}
