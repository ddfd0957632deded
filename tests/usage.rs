//! The usage ledger on the real binary (two workers, a state database in a temp dir): a graceful
//! drain loses no request and `kill -9` loses at most the last flush interval, counted against what
//! the clients saw; `/usage` as JSON, CSV and JSON lines adds up to what
//! the clients sent; `/usage/top` ranks consumers; the billing push of a closed day is retried through
//! a failing webhook, signed and keyed, acknowledged once and never sent again, even after a restart;
//! bad admin calls get clear 4xx answers.

mod common;

use common::webhook::WebhookReceiver;
use common::*;
use rusqlite::{params, Connection, OpenFlags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "usage-admin-token";
const SECRET: &str = "billing-secret-1";
const ALICE: &str = "alice-key-0001";
const BOB: &str = "bob-key-00001";
const CAROL: &str = "carol-key-0001";

// ------------------------------------------------------------------------------------- setup

/// The origin: `/api/missing` 404, `/api/boom` 500, `/api/slow` 200 after 1 s, anything else 200.
fn app() -> Backend {
    Backend::start(|r| {
        if r.path.starts_with("/api/missing") {
            Reply::new(404, "no such thing")
        } else if r.path.starts_with("/api/boom") {
            Reply::new(500, "boom")
        } else if r.path.starts_with("/api/slow") {
            Reply::ok("slow ok").delay(Duration::from_secs(1))
        } else {
            Reply::ok("ok")
        }
    })
}

/// Two workers, three consumers with API keys, route `api` (proxied) and `web` (answered by sluice),
/// the admin API with a token, the state database at `db`, and `usage` (a `[usage]` table or "").
fn config(backend: SocketAddr, db: &Path, usage: &str) -> String {
    config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"5s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"{}\"\n\n\
             {usage}\n\n\
             [consumers.alice]\napi_keys = [\"{ALICE}\"]\n\n\
             [consumers.bob]\napi_keys = [\"{BOB}\"]\n\n\
             [consumers.carol]\napi_keys = [\"{CAROL}\"]\n\n\
             {}\
             [routes.api]\npath = \"/api/*\"\nupstream = \"app\"\nauth = [\"api_key\"]\n\n\
             [routes.web]\npath = \"/web/*\"\nauth = [\"api_key\"]\n\
             respond = {{ status = 200, body = \"hello from sluice\\n\" }}\n",
            db.display(),
            upstream("app", &[backend], ""),
        ),
    )
}

fn usage_toml(flush: &str) -> String {
    format!("[usage]\nflush_interval = \"{flush}\"\n")
}

// ------------------------------------------------------------------------------------- dates

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// (year, month, day) of a day number (days since 1970-01-01), by Howard Hinnant's
/// `civil_from_days`; checked against a known date below.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-12-03` of a Unix time.
fn date(unix: u64) -> String {
    let (y, m, d) = civil((unix / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn the_test_calendar_is_right() {
    // `date -u -d @1796292000`: Thu Dec  3 10:00:00 UTC 2026.
    assert_eq!(date(1_796_292_000), "2026-12-03");
    assert_eq!(date(0), "1970-01-01");
    assert_eq!(date(951_782_400), "2000-02-29");
}

/// `from=<yesterday>&to=<today>`: whole UTC days, so a test that runs across midnight still sees all
/// of its requests.
fn days_range() -> String {
    let now = unix_now();
    format!("from={}&to={}", date(now - 86_400), date(now))
}

// ------------------------------------------------------------------------------------- traffic

/// What the clients saw per (consumer, route, status class): requests answered, bytes they wrote,
/// bytes they read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
}

type Tally = BTreeMap<(String, String, String), Seen>;

fn class(status: u16) -> String {
    format!("{}xx", status / 100)
}

fn add(t: &mut Tally, consumer: &str, route: &str, status: u16, sent: u64, got: u64) {
    let e = t
        .entry((consumer.into(), route.into(), class(status)))
        .or_default();
    e.requests += 1;
    e.bytes_in += sent;
    e.bytes_out += got;
}

/// Sums of a tally by consumer.
fn by_consumer(t: &Tally) -> BTreeMap<String, Seen> {
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    for ((c, _, _), s) in t {
        let e = out.entry(c.clone()).or_default();
        e.requests += s.requests;
        e.bytes_in += s.bytes_in;
        e.bytes_out += s.bytes_out;
    }
    out
}

/// One request on a fresh connection (so requests spread over both workers): (status, bytes
/// written, bytes read).
fn one(
    addr: SocketAddr,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, u64, u64) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
    let req = build_request(method, path, &headers, body);
    let mut c = Conn::connect(addr);
    c.send(&req);
    let r = c
        .read_response_to(method)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, req.len() as u64, c.total_read())
}

/// A fixed mix: three consumers on both routes with 2xx, 4xx and 5xx answers, uploads of different
/// sizes, and two requests without a key (401, counted as `(anonymous)`).
fn run_script(addr: SocketAddr, t: &mut Tally) {
    let small = pattern_bytes(1000, 1);
    let big = pattern_bytes(20_000, 2);
    let plan: Vec<(&str, Option<&str>, &str, &str, &[u8], usize)> = vec![
        ("alice", Some(ALICE), "GET", "/api/ok", b"", 6),
        ("alice", Some(ALICE), "GET", "/api/missing", b"", 2),
        ("alice", Some(ALICE), "GET", "/api/boom", b"", 1),
        ("alice", Some(ALICE), "GET", "/web/hi", b"", 3),
        ("alice", Some(ALICE), "POST", "/api/upload", &small, 2),
        ("bob", Some(BOB), "GET", "/api/ok", b"", 3),
        ("bob", Some(BOB), "GET", "/api/boom", b"", 4),
        ("bob", Some(BOB), "GET", "/web/hi", b"", 1),
        ("carol", Some(CAROL), "POST", "/api/upload", &big, 2),
        ("carol", Some(CAROL), "GET", "/api/missing", b"", 1),
        ("(anonymous)", None, "GET", "/api/ok", b"", 2),
    ];
    for (consumer, key, method, path, body, n) in plan {
        let route = if path.starts_with("/web") {
            "web"
        } else {
            "api"
        };
        for _ in 0..n {
            let (status, sent, got) = one(addr, key, method, path, body);
            add(t, consumer, route, status, sent, got);
        }
    }
}

// ------------------------------------------------------------------------------------- admin

fn admin(s: &Sluice, method: &str, path: &str) -> Response {
    let auth = format!("Bearer {TOKEN}");
    Conn::connect(s.admin_addr().expect("admin listener")).request(
        method,
        path,
        &[("authorization", &auth)],
        b"",
    )
}

fn admin_json(s: &Sluice, method: &str, path: &str) -> (u16, Value) {
    let r = admin(s, method, path);
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}):\n{r}"));
    (r.status, v)
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Waits until `/usage?{range}` (all consumers) counts `want` requests; returns the last count seen.
/// The workers report once a second; each admin read flushes first.
fn wait_for_requests(s: &Sluice, range: &str, want: u64) -> u64 {
    let mut last = 0;
    eventually(Duration::from_secs(10), || {
        let (st, v) = admin_json(s, "GET", &format!("/usage?{range}"));
        assert_eq!(st, 200, "{v}");
        last = num(&v["total"]["requests"]);
        last >= want
    });
    last
}

// ------------------------------------------------------------------------------------- the file

fn label(class: i64) -> String {
    match class {
        1..=5 => format!("{class}xx"),
        _ => "none".into(),
    }
}

fn open_ro(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()))
}

/// The per-day table of the ledger, summed by (consumer, route, class), read from the file itself.
fn ledger_file(db: &Path) -> Tally {
    let conn = open_ro(db);
    let mut q = conn
        .prepare(
            "SELECT consumer, route, class, SUM(requests), SUM(bytes_in), SUM(bytes_out)
             FROM usage_day GROUP BY consumer, route, class",
        )
        .expect("prepare");
    let rows = q
        .query_map([], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    label(r.get(2)?),
                ),
                Seen {
                    requests: r.get::<_, i64>(3)? as u64,
                    bytes_in: r.get::<_, i64>(4)? as u64,
                    bytes_out: r.get::<_, i64>(5)? as u64,
                },
            ))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

/// Writes one usage row for Unix time `at` into the ledger's minute, day and month tables, as the
/// ledger's flush would. The one place these tests know the tables' columns: adapt it when they
/// change.
#[allow(clippy::too_many_arguments)]
fn insert_usage(
    db: &Path,
    at: u64,
    consumer: &str,
    route: &str,
    class: u8,
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
) {
    let conn = Connection::open(db).expect("open the ledger");
    let day = (at / 86_400) as i64;
    let (y, m, _) = civil(day);
    for (table, bucket) in [
        ("usage_minute", (at / 60) as i64),
        ("usage_day", day),
        ("usage_month", y * 12 + m - 1),
    ] {
        conn.execute(
            &format!(
                "INSERT INTO {table} (bucket, consumer, route, class, requests, admitted, limited, \
                 bytes_in, bytes_out, latency_us) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, ?6, ?7, 0)"
            ),
            params![
                bucket,
                consumer,
                route,
                class,
                requests as i64,
                bytes_in as i64,
                bytes_out as i64
            ],
        )
        .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
    }
}

/// SIGTERM, then waits for a clean exit.
fn drain(mut s: Sluice) -> String {
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|st| st.success()),
        "sluice did not drain cleanly ({status:?}):\n{}",
        s.stderr_text()
    );
    s.stderr_text()
}

// ------------------------------------------------------------------------------------- a

#[test]
fn a_graceful_drain_loses_nothing() {
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    // An hour between flushes: nothing is written before the drain, so everything the file holds
    // afterwards was written by the drain's flush, after the workers' final reports.
    let cfg = config(backend.addr(), &db, &usage_toml("1h"));
    let s = Sluice::start(&cfg);
    let mut seen = Tally::new();
    run_script(s.addr(), &mut seen);
    // A request still in flight when the drain starts: finished, and counted.
    let addr = s.addr();
    let slow = thread::spawn(move || one(addr, Some(ALICE), "GET", "/api/slow", b""));
    assert!(eventually(Duration::from_secs(5), || backend.in_flight() >= 1));
    s.signal(libc::SIGTERM);
    let (status, sent, got) = slow.join().expect("slow client");
    assert_eq!(status, 200, "a request in flight at the drain is finished");
    add(&mut seen, "alice", "api", status, sent, got);
    let log = drain(s);
    assert!(log.contains("usage ledger flushed"), "{log}");

    let file = ledger_file(&db);
    let total: u64 = seen.values().map(|s| s.requests).sum();
    assert_eq!(total, 28, "the script's requests plus the slow one");
    assert_eq!(
        file.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>(),
        "the same (consumer, route, status class) keys"
    );
    for (k, s) in &seen {
        assert_eq!(file[k].requests, s.requests, "{k:?}: requests");
        assert_eq!(
            file[k].bytes_in, s.bytes_in,
            "{k:?}: bytes in = bytes the client wrote"
        );
        assert_eq!(
            file[k].bytes_out, s.bytes_out,
            "{k:?}: bytes out = bytes the client read"
        );
    }

    // Restarted on the same file: the admin API reads the same totals.
    let s = Sluice::start(&cfg);
    for (consumer, want) in by_consumer(&seen) {
        let (st, v) = admin_json(
            &s,
            "GET",
            &format!("/usage?consumer={consumer}&{}", days_range()),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["consumer"], consumer.as_str(), "{v}");
        assert_eq!(
            num(&v["total"]["requests"]),
            want.requests,
            "{consumer}: {v}"
        );
        assert_eq!(
            num(&v["total"]["bytes_in"]),
            want.bytes_in,
            "{consumer}: {v}"
        );
        assert_eq!(
            num(&v["total"]["bytes_out"]),
            want.bytes_out,
            "{consumer}: {v}"
        );
    }
}

// ------------------------------------------------------------------------------------- b

#[test]
fn b_kill_9_loses_at_most_one_flush_interval() {
    const FLUSH: Duration = Duration::from_secs(1);
    // What the bound is: a request is counted when its response is written; each flush first asks
    // the workers for what they counted and waits for their answers, then writes. So a request the
    // client saw answered more than FLUSH before the kill is in the file. SLACK is for the timers'
    // drift, the answer wait (at most 100 ms) and scheduling on a loaded 2-core machine, not part of
    // the bound.
    const SLACK: Duration = Duration::from_millis(400);
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let cfg = config(backend.addr(), &db, &usage_toml("1s"));
    let mut s = Sluice::start(&cfg);
    let addr = s.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<thread::JoinHandle<Vec<Instant>>> = [ALICE, BOB, CAROL]
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let (stop, attempts, answered) = (stop.clone(), attempts.clone(), answered.clone());
            thread::spawn(move || {
                let mut done = Vec::new();
                let path = if i == 1 { "/web/x" } else { "/api/x" };
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = Conn::try_connect(addr) else {
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    // A new connection every 50 requests spreads them over both workers.
                    for _ in 0..50 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let req = build_request("GET", path, &[("x-api-key", key)], b"");
                        attempts.fetch_add(1, Ordering::SeqCst);
                        if c.try_send(&req).is_err() {
                            break;
                        }
                        match c.read_response() {
                            Ok(r) if r.status == 200 => {
                                done.push(Instant::now());
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => break,
                        }
                        // Leaves the 2-core machine some room for the tests running beside this one.
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                done
            })
        })
        .collect();
    let started = Instant::now();
    // At least four flushes' worth of traffic.
    assert!(eventually(Duration::from_secs(20), || {
        started.elapsed() >= Duration::from_secs(4) && answered.load(Ordering::Relaxed) >= 200
    }));
    let killed = Instant::now();
    s.signal(libc::SIGKILL);
    assert!(s.wait_exit(Duration::from_secs(5)).is_some(), "killed");
    stop.store(true, Ordering::Relaxed);
    let done: Vec<Instant> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let attempts = attempts.load(Ordering::SeqCst);
    drop(s);

    let file: u64 = ledger_file(&db).values().map(|s| s.requests).sum();
    let cutoff = killed - (FLUSH + SLACK);
    let before_cutoff = done.iter().filter(|t| **t <= cutoff).count() as u64;
    let mut sorted = done.clone();
    sorted.sort();
    // What was lost, as time: the file holds about everything answered until this long before the
    // kill (requests are not written in the order they were answered, so this is an estimate).
    let lost_window = sorted
        .get((file as usize).min(sorted.len()).saturating_sub(1))
        .map(|t| killed.saturating_duration_since(*t));
    eprintln!(
        "kill -9: clients saw {} answered ({attempts} sent); the file holds {file}, about everything \
         answered until {lost_window:?} before the kill; {before_cutoff} were answered more than \
         {:?} before it",
        done.len(),
        FLUSH + SLACK
    );
    assert!(
        before_cutoff > 0,
        "traffic ran long enough to test the bound"
    );
    assert!(
        file >= before_cutoff,
        "lost more than one flush interval: file {file} < {before_cutoff}"
    );
    assert!(
        file <= attempts,
        "the file counts more ({file}) than was sent ({attempts})"
    );

    // Restarted on the same file: the totals are read back from it, nothing more, nothing less.
    let s = Sluice::start(&cfg);
    let (st, v) = admin_json(&s, "GET", &format!("/usage?{}", days_range()));
    assert_eq!(st, 200, "{v}");
    assert_eq!(num(&v["total"]["requests"]), file, "{v}");
}

// ------------------------------------------------------------------------------------- c

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[test]
fn c_billing_push_is_retried_signed_acknowledged_once_and_never_sent_again() {
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let now = unix_now();
    let yesterday = date(now - 86_400);
    let today = date(now);
    // A first run creates the ledger's tables; then yesterday's usage is written into them (a day
    // cannot be waited for), and sluice starts again with the billing webhook.
    drain(Sluice::start(&config(
        backend.addr(),
        &db,
        &usage_toml("1s"),
    )));
    let noon = (now / 86_400 - 1) * 86_400 + 12 * 3600;
    insert_usage(&db, noon, "alice", "api", 2, 40, 4000, 8000);
    insert_usage(&db, noon, "alice", "api", 5, 2, 200, 300);
    insert_usage(&db, noon + 60, "bob", "web", 2, 7, 700, 1400);

    let mut hook = WebhookReceiver::start_script(vec![Some(500), Some(503)]);
    let usage = format!(
        "{}billing_webhook = {{ url = \"{}\", period = \"day\", secret = \"{SECRET}\" }}\n",
        usage_toml("1s"),
        hook.url("/billing")
    );
    let cfg = config(backend.addr(), &db, &usage);
    let s = Sluice::start(&cfg);
    assert!(
        eventually(Duration::from_secs(15), || !hook.acknowledged().is_empty()),
        "the closed day is pushed; tries: {:?}",
        hook.tries_seen()
    );
    let tries = hook.tries_seen();
    assert_eq!(tries.len(), 3, "500, 503, then 200: {tries:?}");
    let (head, body) = &tries[2];
    for (h, b) in &tries {
        assert_eq!(b, body, "a retry sends the same bytes");
        assert_eq!(
            head_value(h, "idempotency-key"),
            head_value(head, "idempotency-key")
        );
    }
    let v: Value = serde_json::from_str(body).expect("JSON body");
    let batch_id = v["batch_id"].as_str().expect("batch_id");
    assert_eq!(head_value(head, "idempotency-key"), Some(batch_id));
    assert_eq!(
        head_value(head, "x-sluice-signature"),
        Some(format!("sha256={}", hmac_hex(SECRET.as_bytes(), body.as_bytes())).as_str()),
        "HMAC-SHA256 of the body with the secret"
    );
    assert_eq!(v["period"], yesterday.as_str(), "{v}");
    assert_eq!(v["period_type"], "day", "{v}");
    assert_eq!(v["final"], true, "{v}");
    assert_eq!(v["from"], format!("{yesterday}T00:00:00Z").as_str(), "{v}");
    assert_eq!(v["to"], format!("{today}T00:00:00Z").as_str(), "{v}");
    assert_eq!(
        (v["batch"].as_u64(), v["batches"].as_u64()),
        (Some(0), Some(1))
    );
    let mut rows: Vec<(String, String, String, u64, u64, u64)> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["consumer"].as_str().unwrap_or("").to_string(),
                r["route"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
                num(&r["requests"]),
                num(&r["bytes_in"]),
                num(&r["bytes_out"]),
            )
        })
        .collect();
    rows.sort();
    let want =
        |c: &str, r: &str, s: &str, n, i, o| (c.to_string(), r.to_string(), s.to_string(), n, i, o);
    assert_eq!(
        rows,
        vec![
            want("alice", "api", "2xx", 40, 4000, 8000),
            want("alice", "api", "5xx", 2, 200, 300),
            want("bob", "web", "2xx", 7, 700, 1400),
        ]
    );
    assert!(eventually(Duration::from_secs(5), || {
        admin_json(&s, "GET", "/billing").1["acked_total"] == 1
    }));
    let (st, b) = admin_json(&s, "GET", "/billing");
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["failed_tries_total"], 2, "{b}");
    assert_eq!(b["last_acked"]["batch_id"], batch_id, "{b}");
    assert_eq!(b["period"], "day", "{b}");
    assert!(b["sending"].is_null(), "{b}");
    // Asked again: refused, and nothing is sent.
    let (st, e) = admin_json(&s, "POST", &format!("/billing/push?period={yesterday}"));
    assert_eq!(st, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("already acknowledged"),
        "{e}"
    );
    drain(s);
    let acked: i64 = open_ro(&db)
        .query_row(
            "SELECT COUNT(*) FROM billing_periods WHERE period = ?1",
            [&yesterday],
            |r| r.get(0),
        )
        .expect("billing_periods");
    assert_eq!(acked, 1, "the acknowledgement is in the file");

    // Restarted on the same file: the acknowledged day is not pushed again, nor on request.
    let s = Sluice::start(&cfg);
    assert!(
        !eventually(Duration::from_secs(2), || hook.tries_seen().len() > 3),
        "an acknowledged period is never sent again: {:?}",
        hook.tries_seen()
    );
    let (st, e) = admin_json(&s, "POST", &format!("/billing/push?period={yesterday}"));
    assert_eq!(st, 409, "{e}");
    // The open day can be pushed on request, marked not final, and is not recorded as acknowledged.
    for _ in 0..2 {
        assert_eq!(one(s.addr(), Some(ALICE), "GET", "/api/ok", b"").0, 200);
    }
    assert_eq!(
        wait_for_requests(&s, &format!("from={today}&to={today}"), 2),
        2
    );
    for round in 1..=2 {
        let (st, q) = admin_json(&s, "POST", &format!("/billing/push?period={today}"));
        assert_eq!(st, 202, "{q}");
        assert_eq!(q["period"], today.as_str(), "{q}");
        assert_eq!(q["final"], false, "{q}");
        assert!(eventually(Duration::from_secs(10), || {
            hook.acknowledged().len() > round
        }));
        let (_, open) = hook.acknowledged().pop().expect("the open day's push");
        assert_eq!(open["period"], today.as_str(), "{open}");
        assert_eq!(open["final"], false, "{open}");
        assert_ne!(open["batch_id"], batch_id, "{open}");
        let requests: u64 = open["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| num(&r["requests"]))
            .sum();
        assert_eq!(requests, 2, "{open}");
    }
    assert_eq!(
        hook.tries_seen().len(),
        5,
        "3 for yesterday, 1 per open-day push"
    );
    let (st, e) = admin_json(
        &s,
        "POST",
        &format!("/billing/push?period={}", date(now + 2 * 86_400)),
    );
    assert_eq!(st, 400, "a day not started: {e}");
}

// ------------------------------------------------------------------------------------- d

/// Parses CSV without quoted fields (the names here have none); returns the header and the rows.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header = lines
        .next()
        .expect("a header line")
        .split(',')
        .map(str::to_string)
        .collect::<Vec<_>>();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect::<Vec<_>>();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{r:?} vs {header:?}");
    }
    (header, rows)
}

fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

#[test]
fn d_usage_csv_jsonl_and_json_add_up_to_what_the_clients_sent() {
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let s = Sluice::start(&config(backend.addr(), &db, &usage_toml("1s")));
    let mut seen = Tally::new();
    run_script(s.addr(), &mut seen);
    let total: u64 = seen.values().map(|s| s.requests).sum();
    assert_eq!(wait_for_requests(&s, &days_range(), total), total);
    let range = days_range();
    let today = date(unix_now());

    for (consumer, want) in by_consumer(&seen) {
        // CSV, default grouping (day, route, status).
        let r = admin(
            &s,
            "GET",
            &format!("/usage?consumer={consumer}&{range}&format=csv"),
        );
        assert_eq!(r.status, 200, "{r}");
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("text/csv"),
            "{r}"
        );
        let (header, rows) = parse_csv(&r.body_str());
        assert_eq!(
            header,
            [
                "day",
                "route",
                "status",
                "requests",
                "limited",
                "bytes_in",
                "bytes_out"
            ]
        );
        let sum = |name: &str| -> u64 {
            let i = col(&header, name);
            rows.iter()
                .map(|r| r[i].parse::<u64>().expect("a count"))
                .sum()
        };
        assert_eq!(
            sum("requests"),
            want.requests,
            "{consumer} CSV:\n{}",
            r.body_str()
        );
        assert_eq!(
            sum("bytes_in"),
            want.bytes_in,
            "{consumer}: bytes in = bytes the client wrote"
        );
        assert_eq!(
            sum("bytes_out"),
            want.bytes_out,
            "{consumer}: bytes out = bytes the client read"
        );
        // Each (route, status) row matches the client's tally.
        let (ri, si, ni) = (
            col(&header, "route"),
            col(&header, "status"),
            col(&header, "requests"),
        );
        let mut csv_keys: BTreeMap<(String, String), u64> = BTreeMap::new();
        for row in &rows {
            *csv_keys
                .entry((row[ri].clone(), row[si].clone()))
                .or_default() += row[ni].parse::<u64>().expect("a count");
        }
        let want_keys: BTreeMap<(String, String), u64> = seen
            .iter()
            .filter(|((c, _, _), _)| *c == consumer)
            .map(|((_, r, st), s)| ((r.clone(), st.clone()), s.requests))
            .collect();
        assert_eq!(csv_keys, want_keys, "{consumer}");

        // JSON lines: the same rows, one object a line.
        let r = admin(
            &s,
            "GET",
            &format!("/usage?consumer={consumer}&{range}&format=jsonl"),
        );
        assert_eq!(r.status, 200, "{r}");
        let lines: Vec<Value> = r
            .body_str()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), rows.len());
        assert_eq!(
            lines.iter().map(|l| num(&l["requests"])).sum::<u64>(),
            want.requests
        );
        assert_eq!(
            lines.iter().map(|l| num(&l["bytes_in"])).sum::<u64>(),
            want.bytes_in
        );
        assert!(lines
            .iter()
            .all(|l| l["day"].is_string() && l["route"].is_string()));

        // JSON, by route, by status and by day.
        for group in ["route", "status", "day"] {
            let (st, v) = admin_json(
                &s,
                "GET",
                &format!("/usage?consumer={consumer}&{range}&group_by={group}"),
            );
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["consumer"], consumer.as_str());
            assert_eq!(num(&v["total"]["requests"]), want.requests, "{v}");
            assert_eq!(num(&v["total"]["bytes_in"]), want.bytes_in, "{v}");
            assert_eq!(num(&v["total"]["bytes_out"]), want.bytes_out, "{v}");
            assert!(
                v["from"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("T00:00:00Z")),
                "{v}"
            );
            let mut got: BTreeMap<String, u64> = BTreeMap::new();
            for row in v["rows"].as_array().expect("rows") {
                let obj = row.as_object().expect("a row object");
                assert!(obj.contains_key(group), "{row}");
                for other in ["route", "status", "day"].iter().filter(|g| **g != group) {
                    assert!(!obj.contains_key(*other), "grouped by {group} only: {row}");
                }
                *got.entry(row[group].as_str().expect("name").to_string())
                    .or_default() += num(&row["requests"]);
            }
            let mut expect: BTreeMap<String, u64> = BTreeMap::new();
            for ((c, route, st), s) in &seen {
                if *c != consumer {
                    continue;
                }
                let key = match group {
                    "route" => route.clone(),
                    "status" => st.clone(),
                    _ => today.clone(),
                };
                *expect.entry(key).or_default() += s.requests;
            }
            if group == "day" && got.len() == 2 {
                // Run across UTC midnight: the rows are split over two days.
                assert_eq!(got.values().sum::<u64>(), want.requests);
            } else {
                assert_eq!(got, expect, "{consumer} by {group}: {v}");
            }
        }
    }

    // Every consumer at once (grouped by consumer when none is named).
    let (st, v) = admin_json(&s, "GET", &format!("/usage?{range}"));
    assert_eq!(st, 200, "{v}");
    assert!(v["consumer"].is_null(), "{v}");
    assert_eq!(num(&v["total"]["requests"]), total);
    let consumers: std::collections::BTreeSet<&str> = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["consumer"].as_str().expect("consumer"))
        .collect();
    assert_eq!(
        consumers.into_iter().collect::<Vec<_>>(),
        ["(anonymous)", "alice", "bob", "carol"]
    );
    // A time range inside today reads the per-minute table: the same counts.
    let now = unix_now();
    let r = admin(
        &s,
        "GET",
        &format!(
            "/usage?consumer=bob&from={}T00:00:00Z&to={}T23:59:59Z&format=csv",
            date(now),
            date(now)
        ),
    );
    assert_eq!(r.status, 200, "{r}");
    let (header, rows) = parse_csv(&r.body_str());
    let n = col(&header, "requests");
    let bob: u64 = rows
        .iter()
        .map(|r| r[n].parse::<u64>().expect("count"))
        .sum();
    if date(now - 30) == date(now) && date(now + 30) == date(now) {
        assert_eq!(bob, by_consumer(&seen)["bob"].requests, "{}", r.body_str());
    }
}

// ------------------------------------------------------------------------------------- e

fn top_names(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {v}"))
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn e_usage_top_ranks_consumers() {
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let s = Sluice::start(&config(backend.addr(), &db, &usage_toml("1s")));
    let mut seen = Tally::new();
    run_script(s.addr(), &mut seen);
    let total: u64 = seen.values().map(|s| s.requests).sum();
    assert_eq!(wait_for_requests(&s, &days_range(), total), total);
    let per = by_consumer(&seen);

    // alice 14, bob 8, carol 3, anonymous 2.
    let (st, v) = admin_json(&s, "GET", "/usage/top?by=requests&period=day");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["by"], "requests");
    assert_eq!(v["period"], date(unix_now()).as_str(), "{v}");
    assert_eq!(
        top_names(&v, "consumers"),
        ["alice", "bob", "carol", "(anonymous)"],
        "{v}"
    );
    assert_eq!(
        num(&v["consumers"][0]["requests"]),
        per["alice"].requests,
        "{v}"
    );
    assert_eq!(top_names(&v, "routes")[0], "api", "{v}");
    // carol uploaded 40 kB.
    let (_, v) = admin_json(&s, "GET", "/usage/top?by=bytes&period=day");
    assert_eq!(top_names(&v, "consumers")[0], "carol", "{v}");
    let carol = &v["consumers"][0];
    assert_eq!(
        num(&carol["bytes"]),
        per["carol"].bytes_in + per["carol"].bytes_out,
        "{v}"
    );
    // bob had four 500s, alice one; the others none.
    let (_, v) = admin_json(&s, "GET", "/usage/top?by=errors&period=day&limit=2");
    assert_eq!(top_names(&v, "consumers"), ["bob", "alice"], "{v}");
    assert_eq!(num(&v["consumers"][0]["errors"]), 4, "{v}");
    assert_eq!(num(&v["consumers"][1]["errors"]), 1, "{v}");
    // The month holds the day (a run on the 1st just after midnight aside, it is the same).
    let (st, v) = admin_json(&s, "GET", "/usage/top?by=requests&period=month&limit=1");
    assert_eq!(st, 200, "{v}");
    assert_eq!(top_names(&v, "consumers"), ["alice"], "{v}");
}

// ------------------------------------------------------------------------------------- f

fn assert_error(s: &Sluice, method: &str, path: &str, status: u16, mentions: &str) {
    let (st, v) = admin_json(s, method, path);
    assert_eq!(st, status, "{method} {path}: {v}");
    assert_eq!(v["status"], status, "{method} {path}: {v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains(mentions),
        "{method} {path}: the error should mention {mentions:?}: {v}"
    );
}

#[test]
fn f_bad_admin_calls_get_clear_errors() {
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let s = Sluice::start(&config(backend.addr(), &db, &usage_toml("1s")));
    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/usage?from=2026-13-01", 400, "from"),
        ("GET", "/usage?from=yesterday", 400, "from"),
        ("GET", "/usage?to=2026-02-30", 400, "to"),
        ("GET", "/usage?from=2026-12-03T10:00:00", 400, "from"),
        // A multi-byte character where the seconds end.
        ("GET", "/usage?from=2026-12-03T10:00:0%C3%A9Z", 400, "from"),
        ("GET", "/usage?from=2026-12-04&to=2026-12-03", 400, "after"),
        ("GET", "/usage?group_by=colour", 400, "group_by"),
        ("GET", "/usage?format=xml", 400, "format"),
        ("GET", "/usage/top?by=latency", 400, "by"),
        ("GET", "/usage/top?limit=0", 400, "limit"),
        ("GET", "/usage/top?limit=lots", 400, "limit"),
        ("GET", "/usage/top?period=week", 400, "period"),
        ("POST", "/usage", 405, "method"),
        ("GET", "/billing/push?period=2026-12-03", 405, "method"),
        (
            "POST",
            "/billing/push?period=2026-12-03",
            404,
            "billing_webhook",
        ),
    ];
    for (method, path, status, mentions) in cases {
        assert_error(&s, method, path, *status, mentions);
    }
    // Still answering after all that.
    assert_eq!(admin_json(&s, "GET", "/usage").0, 200);
    // Without a webhook the push state is there, empty (a reload may add one).
    let (st, v) = admin_json(&s, "GET", "/billing");
    assert_eq!(st, 200, "{v}");
    assert!(v["url"].is_null() && v["acked_total"] == 0, "{v}");
    // The token guards these endpoints like every admin endpoint.
    let admin_addr = s.admin_addr().expect("admin");
    for path in ["/usage", "/usage/top", "/billing"] {
        let r = http_get(admin_addr, path, &[]);
        assert_eq!(r.status, 401, "{path} without a token: {r}");
        let r = http_get(admin_addr, path, &[("authorization", "Bearer wrong-token")]);
        assert_eq!(r.status, 401, "{path} with a wrong token: {r}");
    }
    drop(s);

    // With a webhook: a push needs a period, of the webhook's kind, not in the future.
    let hook = WebhookReceiver::start(0);
    let usage = format!(
        "{}billing_webhook = {{ url = \"{}\", period = \"month\", secret = \"{SECRET}\" }}\n",
        usage_toml("1s"),
        hook.url("/b")
    );
    let s = Sluice::start(&config(backend.addr(), &db, &usage));
    assert_error(&s, "POST", "/billing/push", 400, "period");
    assert_error(&s, "POST", "/billing/push?period=2026-12-03", 400, "month");
    assert_error(
        &s,
        "POST",
        "/billing/push?period=9999-12",
        400,
        "not started",
    );
    drop(s);

    // Without [usage]: the endpoints say what to configure.
    let s = Sluice::start(&config(backend.addr(), &db, ""));
    assert_error(&s, "GET", "/usage", 404, "[usage]");
}

// ------------------------------------------------------------------------------------- g

#[test]
fn g_retention_trims_old_rows_and_keeps_recent_ones() {
    let backend = app();
    let dir = temp_dir();
    let db = dir.path().join("state.db");
    let retained =
        "[usage]\nflush_interval = \"1s\"\nretention = \"40d\"\nminute_retention = \"2d\"\n";
    let cfg = config(backend.addr(), &db, retained);
    drain(Sluice::start(&cfg)); // creates the tables
    let now = unix_now();
    let day = 86_400;
    insert_usage(&db, now - 500 * day, "alice", "api", 2, 7, 1, 1); // past every retention
    insert_usage(&db, now - 10 * day, "alice", "api", 2, 5, 1, 1); // minute row past 2d only
    let count = |table: &str, bucket_below: i64| -> i64 {
        open_ro(&db)
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE bucket < ?1"),
                [bucket_below],
                |r| r.get(0),
            )
            .expect("count")
    };
    let today = (now / day) as i64;
    assert_eq!(count("usage_day", today), 2);
    let s = Sluice::start(&cfg);
    // The first flush trims (then at most once a minute).
    assert!(eventually(Duration::from_secs(10), || count(
        "usage_day",
        today - 40
    ) == 0));
    drain(s);
    assert_eq!(count("usage_day", today), 1, "the day 10 days ago is kept");
    assert_eq!(
        count("usage_minute", ((now - 2 * day) / 60) as i64),
        0,
        "minute rows past minute_retention are gone"
    );
    let (y, m, _) = civil(today - 10);
    let month_10_days_ago = y * 12 + m - 1;
    assert!(
        count("usage_month", month_10_days_ago + 1) >= 1,
        "the month holding a kept day is kept"
    );
}
