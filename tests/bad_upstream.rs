//! Upstreams that misbehave (#15, #16), on the real binary against a scripted raw TCP origin:
//! status lines without a reason, with obs-text, or with a code outside 100-599; a response
//! written unsolicited on an idle pooled connection, which must never become the answer to a later
//! request; and timeouts that are deadlines: `response_timeout`, the upstream `idle_timeout`, and
//! `[http]` `header_timeout` / `body_timeout` fire within 10% of the configured second.
//!
//! Every bad case is followed by requests on the same and on a new client connection, which must
//! get exactly their own answers from a sluice that is still running.

mod common;

use common::*;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The raw upstream's keys: no retry, and never ejected, so each case sees exactly one attempt.
const RAW_UP: &str = "retries = 0\npassive_health = { max_failures = 0 }";

/// The bytes shown escaped, so obs-text and control bytes are visible in a failure.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The status line of `r` as received, through its CRLF.
fn status_line(r: &Response) -> &[u8] {
    let end = r
        .raw_head
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(r.raw_head.len(), |i| i + 2);
    &r.raw_head[..end]
}

/// A backend whose body names the request's path.
fn path_backend() -> Backend {
    Backend::start(|r| Reply::ok(format!("app {}", r.path)))
}

/// `/raw/*` to the raw origin, anything else to `app`.
fn two_routes(raw: &RawBackend, app: &Backend) -> String {
    config(&format!(
        "{}{}[routes.raw]\npath = \"/raw/*\"\nupstream = \"raw\"\n\n{}",
        upstream("raw", &[raw.addr()], RAW_UP),
        upstream("app", &[app.addr()], ""),
        catch_all("app")
    ))
}

/// `GET /raw/x` answered by the raw origin with exactly `wire`; `check` judges that answer. Then a
/// request on the same client connection and one on a new connection must get their own answers
/// from `app`, and sluice must still be running.
fn through_raw(wire: &[u8], check: impl FnOnce(&Response, &RawBackend)) {
    let raw = RawBackend::reply_once(wire);
    let app = path_backend();
    let mut sl = Sluice::start(&two_routes(&raw, &app));
    let mut c = Conn::connect(sl.addr());
    let r = c.get("/raw/x", &[]);
    check(&r, &raw);
    let same = c.get("/after-same", &[]);
    assert_eq!(
        (same.status, same.body_str().as_str()),
        (200, "app /after-same"),
        "the same client connection after the upstream sent {}:\n{same}",
        show(wire)
    );
    let fresh = http_get(sl.addr(), "/after-new", &[]);
    assert_eq!(
        (fresh.status, fresh.body_str().as_str()),
        (200, "app /after-new"),
        "a new client connection after the upstream sent {}:\n{fresh}",
        show(wire)
    );
    assert!(
        sl.is_running(),
        "sluice exited after the upstream sent {}",
        show(wire)
    );
}

/// `wire` reaches the client as a response with status line exactly `line` and body `ok`.
fn relayed(wire: &[u8], line: &[u8]) {
    through_raw(wire, |r, _| {
        assert_eq!(
            show(status_line(r)),
            show(line),
            "status line relayed for {}; response:\n{r}",
            show(wire)
        );
        assert_eq!(r.body, b"ok", "body relayed for {}:\n{r}", show(wire));
    });
}

/// `wire` is a bad response: the client gets a JSON 502 and sluice closes the upstream connection.
fn rejected(wire: &[u8]) {
    through_raw(wire, |r, raw| {
        assert_json_error(r, 502);
        assert!(
            eventually(Duration::from_secs(2), || raw.peer_closed(0).is_some()),
            "sluice should close the upstream connection that sent {}",
            show(wire)
        );
    });
}

// ------------------------------------------------------------ status lines

#[test]
fn status_line_without_space_or_reason_is_relayed_with_an_empty_reason() {
    relayed(
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 \r\n",
    );
}

#[test]
fn status_line_with_space_and_empty_reason_is_relayed_with_an_empty_reason() {
    relayed(
        b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 \r\n",
    );
}

#[test]
fn obs_text_reason_is_relayed_as_received() {
    relayed(
        b"HTTP/1.1 200 \x80\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 \x80\r\n",
    );
}

#[test]
fn latin1_reason_is_relayed_as_received() {
    relayed(
        b"HTTP/1.1 200 Caf\xe9\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 Caf\xe9\r\n",
    );
}

#[test]
fn interim_response_without_reason_is_absorbed() {
    relayed(
        b"HTTP/1.1 103\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n",
    );
}

#[test]
fn status_599_is_relayed() {
    relayed(
        b"HTTP/1.1 599 Odd\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 599 Odd\r\n",
    );
}

#[test]
fn status_000_is_a_bad_response() {
    rejected(b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok");
}

#[test]
fn status_099_is_a_bad_response() {
    rejected(b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok");
}

#[test]
fn status_600_is_a_bad_response() {
    rejected(b"HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok");
}

#[test]
fn status_999_is_a_bad_response() {
    rejected(b"HTTP/1.1 999 X\r\nContent-Length: 2\r\n\r\nok");
}

// ------------------------------------------- unsolicited bytes on a pooled connection

const SMUGGLED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Smuggled: 1\r\n\r\nSMUGGLED!";
/// How long after its first response the origin writes the unsolicited bytes.
const JUNK_AFTER: Duration = Duration::from_millis(300);

/// An origin answering every request with a body naming its path. On its first connection only,
/// `JUNK_AFTER` past that connection's first response, it writes `junk` once, unsolicited. Only the
/// first: on a later connection the bytes could cross a request sluice is already sending, which no
/// proxy can tell from its answer. The flag is set once the junk was written.
fn unsolicited_origin(junk: &'static [u8]) -> (RawBackend, Arc<AtomicBool>) {
    let junk_sent = Arc::new(AtomicBool::new(false));
    let sent = junk_sent.clone();
    let raw = RawBackend::start(move |c| {
        let mut first: Option<Instant> = None;
        let mut junk_due = c.id == 0;
        while !c.stopping() {
            let wait = match first {
                Some(t) if junk_due => (t + JUNK_AFTER).saturating_duration_since(Instant::now()),
                _ => Duration::from_secs(1),
            };
            match c.read_head(wait) {
                HeadRead::Head(head) => {
                    let body = format!("path {}", request_path(&head));
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if !c.write(reply.as_bytes()) {
                        return;
                    }
                    first.get_or_insert_with(Instant::now);
                }
                HeadRead::Eof => return,
                HeadRead::Idle => {
                    if junk_due && first.is_some_and(|t| t.elapsed() >= JUNK_AFTER) {
                        junk_due = false;
                        if !c.write(junk) {
                            return;
                        }
                        sent.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    (raw, junk_sent)
}

/// `GET path` must get exactly its own answer, never the unsolicited one.
fn expect_own(c: &mut Conn, path: &str) {
    let r = c.get(path, &[]);
    assert!(
        !r.has_header("x-smuggled") && !r.body.windows(9).any(|w| w == b"SMUGGLED!"),
        "GET {path} got the bytes the origin wrote unsolicited:\n{r}"
    );
    assert_eq!(
        (r.status, r.body_str()),
        (200, format!("path {path}")),
        "GET {path} must get its own answer:\n{r}"
    );
}

fn unsolicited_bytes_never_answer_a_later_request(junk: &'static [u8]) {
    let (raw, junk_sent) = unsolicited_origin(junk);
    let mut sl = Sluice::start(&config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}",
        upstream("app", &[raw.addr()], ""),
        catch_all("app")
    )));
    let admin = sl.admin_addr().expect("admin address");
    let mut a = Conn::connect(sl.addr());
    expect_own(&mut a, "/one");
    assert!(
        eventually(Duration::from_secs(3), || junk_sent.load(Ordering::SeqCst)),
        "the origin never wrote its unsolicited bytes"
    );
    // Deliberate: the bytes have landed on sluice's idle pooled connection; give it a moment with them.
    thread::sleep(Duration::from_millis(100));
    expect_own(&mut a, "/two");
    let mut b = Conn::connect(sl.addr());
    expect_own(&mut b, "/three");
    for i in 0..5 {
        expect_own(&mut a, &format!("/a{i}"));
        expect_own(&mut b, &format!("/b{i}"));
    }
    let mut retired = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            retired = metric_sum(&scrape(admin), "sluice_upstream_pool_retired_total");
            retired.is_some_and(|n| n >= 1.0)
        }),
        "sluice_upstream_pool_retired_total should count the retired connection, got {retired:?}"
    );
    assert!(sl.is_running(), "sluice exited");
}

#[test]
fn an_unsolicited_response_on_an_idle_pooled_connection_never_answers_a_later_request() {
    unsolicited_bytes_never_answer_a_later_request(SMUGGLED);
}

#[test]
fn an_unsolicited_junk_line_on_an_idle_pooled_connection_never_answers_a_later_request() {
    unsolicited_bytes_never_answer_a_later_request(b"garbage\r\n");
}

// ------------------------------------------------------------ deadlines

/// A 1 s timeout must fire after 0.95..=1.1 s.
fn on_time(took: Duration, what: &str) {
    assert!(
        took >= Duration::from_millis(950) && took <= Duration::from_millis(1100),
        "{what} (1s) should fire within 10% of 1s, fired after {took:?}"
    );
}

/// sluice to `raw` only, with the upstream's extra keys `extra`.
fn raw_only(raw: &RawBackend, extra: &str) -> Sluice {
    Sluice::start(&simple_config(
        &[raw.addr()],
        &format!("{RAW_UP}\n{extra}"),
        "",
    ))
}

#[test]
fn response_timeout_is_a_deadline_for_a_dripped_head() {
    // 54 bytes a tenth of a second apart: the head would take over 5 s.
    let raw = RawBackend::start(|c| {
        if let HeadRead::Head(_) = c.read_head(Duration::from_secs(10)) {
            let head = b"HTTP/1.1 200 OK\r\nX-Drip: abcdef\r\nContent-Length: 0\r\n\r\n";
            if c.drip(head, Duration::from_millis(100)) {
                c.hold();
            }
        }
    });
    let sl = raw_only(&raw, "response_timeout = \"1s\"");
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    let t = Instant::now();
    let r = c.read_response().expect("a 504 at response_timeout");
    let took = t.elapsed();
    assert_json_error(&r, 504);
    on_time(took, "response_timeout");
    assert!(
        eventually(Duration::from_secs(2), || raw.peer_closed(0).is_some()),
        "sluice should close the upstream connection whose head timed out"
    );
}

#[test]
fn upstream_idle_timeout_cuts_a_streamed_body_one_second_after_its_last_byte() {
    let raw = RawBackend::start(|c| {
        if let HeadRead::Head(_) = c.read_head(Duration::from_secs(10)) {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec();
            out.extend_from_slice(&pattern_bytes(100_000, 7));
            if c.write(&out) {
                c.hold();
            }
        }
    });
    let sl = raw_only(&raw, "idle_timeout = \"1s\"");
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    let head = c.read_head().expect("the response head");
    assert_eq!(head.status, 200, "{head}");
    assert_eq!(head.header("content-length"), Some("200000"), "{head}");
    let mut got = c.leftover().len();
    let mut last = Instant::now();
    let mut tmp = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        assert!(
            Instant::now() < deadline,
            "no close within 5 s ({got} body bytes)"
        );
        match c.stream.read(&mut tmp) {
            Ok(0) => break Instant::now(),
            Ok(n) => {
                got += n;
                last = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("client left hanging after {got} body bytes: {e}")
            }
            // A reset is a close too.
            Err(_) => break Instant::now(),
        }
    };
    assert_eq!(
        got, 100_000,
        "every byte the origin sent, and not one more, should arrive before the close"
    );
    on_time(end - last, "upstream idle_timeout on a streamed body");
}

#[test]
fn upstream_idle_timeout_makes_a_stalled_gathered_body_a_504() {
    let raw = RawBackend::start(|c| {
        if let HeadRead::Head(_) = c.read_head(Duration::from_secs(10)) {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
            out.extend_from_slice(&[b'x'; 500]);
            if c.write(&out) {
                c.hold();
            }
        }
    });
    let sl = raw_only(&raw, "idle_timeout = \"1s\"");
    let mut c = Conn::connect(sl.addr());
    c.send(&build_request("GET", "/", &[], b""));
    let t = Instant::now();
    let r = c.read_response().expect("a 504, not a response cut short");
    let took = t.elapsed();
    assert_json_error(&r, 504);
    on_time(took, "upstream idle_timeout on a gathered body");
    assert!(
        eventually(Duration::from_secs(2), || raw.peer_closed(0).is_some()),
        "sluice should close the upstream connection whose body stalled"
    );
}

/// Writes `bytes` to `c`'s socket one at a time, 100 ms apart, from another thread, until they are
/// all sent, a write fails, or `stop` is set.
fn drip_from_client(
    c: &Conn,
    bytes: &'static [u8],
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let mut w = c.stream.try_clone().expect("clone client socket");
    thread::spawn(move || {
        use std::io::Write;
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 {
                thread::sleep(Duration::from_millis(100)); // the drip's pacing
            }
            if stop.load(Ordering::SeqCst) || w.write_all(&[*b]).is_err() {
                return;
            }
        }
    })
}

#[test]
fn header_timeout_is_a_deadline_for_a_dripped_head() {
    let app = Backend::fixed("ok");
    let sl = Sluice::start(&simple_config(
        &[app.addr()],
        "",
        "[http]\nheader_timeout = \"1s\"",
    ));
    let mut c = Conn::connect(sl.addr());
    let stop = Arc::new(AtomicBool::new(false));
    // 52 bytes a tenth of a second apart: the head would take over 5 s.
    let t = Instant::now();
    let writer = drip_from_client(
        &c,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Drip: 0123456789abcdef\r\n\r\n",
        stop.clone(),
    );
    let r = c.read_response();
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("drip thread");
    let r = r.expect("a 408 at header_timeout");
    assert_json_error(&r, 408);
    on_time(took, "header_timeout");
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "the connection should close after the 408"
    );
    assert_eq!(app.bytes_received(), 0, "nothing may reach the backend");
}

#[test]
fn body_timeout_is_a_deadline_for_a_dripped_body() {
    let app = Backend::fixed("ok");
    let sl = Sluice::start(&simple_config(
        &[app.addr()],
        "",
        "[http]\nbody_timeout = \"1s\"",
    ));
    let mut c = Conn::connect(sl.addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n");
    let t = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // 100 bytes a tenth of a second apart: the body would take 10 s.
    let writer = drip_from_client(&c, &[b'b'; 100], stop.clone());
    let r = c.read_response();
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("drip thread");
    let r = r.expect("a 408 at body_timeout");
    assert_json_error(&r, 408);
    on_time(took, "body_timeout");
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "the connection should close after the 408"
    );
    assert_eq!(
        app.request_count(),
        0,
        "the backend must not see a whole request"
    );
}
