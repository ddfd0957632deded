//! The stats page in a real browser: Debian's headless Chromium loads the admin root of a
//! two-worker sluice under live traffic, and the dumped DOM must show per-core charts with real
//! (non-zero) request rates and latencies, the routes and the upstream endpoints; a screenshot
//! must be a real picture. Three consumers with API keys send known traffic (429s from a route's
//! small rate limit, 503s from a `respond` route, one of them steadily) and the consumers view must
//! show each with those exact counts, ranked by rate. Chromium runs in its own process group with a deadline and is killed
//! whole if it hangs. Without /usr/bin/chromium the test prints "SKIPPED: chromium not installed".

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
/// One headless run (start-up included) must finish within this.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(90);

const ALICE: &str = "alice-key-0001";
const BOB: &str = "bob-key-00002";
const CAROL: &str = "carol-key-003";
/// Requests `metered` admits per consumer (an hour's rate of 1 never refills during the test).
const BURST: usize = 3;

fn gateway(be: &Backend) -> Sluice {
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\
             [limits.tiny]\nrate = \"1/h\"\nburst = {BURST}\n\n\
             [consumers.alice]\napi_keys = [\"{ALICE}\"]\n\n\
             [consumers.bob]\napi_keys = [\"{BOB}\"]\n\n\
             [consumers.carol]\napi_keys = [\"{CAROL}\"]\n\n\
             [routes.orders_api]\npath = \"/orders/*\"\nupstream = \"app\"\n\n\
             [routes.probe_local]\npath = \"/probe\"\nrespond = {{ status = 200, body = \"ok\" }}\n\n\
             [routes.metered]\npath = \"/metered\"\nauth = [\"api_key\"]\nrate_limit = [\"tiny\"]\n\
             respond = {{ status = 200 }}\n\n\
             [routes.broken]\npath = \"/broken\"\nauth = [\"api_key\"]\nrespond = {{ status = 503 }}\n\n\
             [routes.keyed]\npath = \"/keyed/*\"\nauth = [\"api_key\"]\nupstream = \"app\"\n",
            upstream("app", &[be.addr()], "")
        ),
    ))
}

/// Sends `n` GETs of `path` with API key `key`; returns the statuses.
fn send(addr: std::net::SocketAddr, key: &str, path: &str, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| http_get(addr, path, &[("x-api-key", key)]).status)
        .collect()
}

/// Carol's steady traffic: one keep-alive client until dropped.
struct Steady {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Steady {
    fn start(addr: std::net::SocketAddr, key: &'static str) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let req = build_request("GET", "/keyed/1", &[("x-api-key", key)], b"");
            while !s.load(Ordering::Relaxed) {
                let Ok(mut c) = Conn::try_connect(addr) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                while !s.load(Ordering::Relaxed)
                    && c.try_send(&req).is_ok()
                    && c.read_response().is_ok()
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Steady {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Steady {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `/status` `consumers.top` entry of consumer `name`.
fn consumer_json(admin: std::net::SocketAddr, name: &str) -> Option<serde_json::Value> {
    let r = http_get(admin, "/status", &[]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["consumers"]["top"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// Sum of the workers' requests_per_second in `/workers`.
fn admin_rps(admin: std::net::SocketAddr) -> f64 {
    let r = http_get(admin, "/workers", &[]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["workers"].as_array().map_or(0.0, |ws| {
        ws.iter()
            .filter_map(|w| w["requests_per_second"].as_f64())
            .sum()
    })
}

/// Runs chromium headless with `args` then `url`; returns its stdout. Panics if it does not exit
/// within the deadline (after killing its whole process group) or exits non-zero.
fn chromium(profile: &Path, out: &Path, args: &[&str], url: &str) -> String {
    let stdout = std::fs::File::create(out.join("stdout")).expect("stdout file");
    let stderr = std::fs::File::create(out.join("stderr")).expect("stderr file");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .env("HOME", profile)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {CHROMIUM}: {e}"));
    let group = child.id() as i32;
    let mut status = None;
    let exited = eventually(CHROMIUM_DEADLINE, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    // Renderer and helper processes share the group: none may outlive the test.
    kill_group(group);
    let _ = child.wait();
    let err = std::fs::read_to_string(out.join("stderr")).unwrap_or_default();
    assert!(
        exited,
        "chromium {args:?} did not finish within {CHROMIUM_DEADLINE:?}; killed. stderr:\n{err}"
    );
    let status = status.expect("status when exited");
    assert!(
        status.success(),
        "chromium {args:?} failed: {status}; stderr:\n{err}"
    );
    std::fs::read_to_string(out.join("stdout")).unwrap_or_default()
}

/// `kill -KILL -- -PGID`: the whole group of the chromium we started (the utility, not libc,
/// keeps the test free of `unsafe`). A group already gone is fine.
fn kill_group(pgid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The part of `dom` from the element with `id` to the next card (or the end).
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element id={id:?} in the DOM:\n{dom}"));
    let rest = &dom[at..];
    let end = rest[1..].find("class=\"card").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

/// Every value of attribute `name` in `s`, in order.
fn attrs<'a>(s: &'a str, name: &str) -> Vec<&'a str> {
    let pat = format!(" {name}=\"");
    s.match_indices(&pat)
        .filter_map(|(i, _)| {
            let v = &s[i + pat.len()..];
            v.find('"').map(|e| &v[..e])
        })
        .collect()
}

fn numbers(s: &str, name: &str) -> Vec<f64> {
    attrs(s, name)
        .iter()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .collect()
}

#[test]
fn stats_page_renders_live_numbers_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() {
        println!("SKIPPED: chromium not installed ({CHROMIUM} is absent)");
        return;
    }
    let be = Backend::fixed("order");
    let sl = gateway(&be);
    let admin = sl.admin_addr().expect("admin listener");
    let traffic = Traffic::start(
        sl.addr(),
        4,
        &["/orders/1", "/probe", "/orders/2"],
        Duration::from_millis(2),
    );
    let carol = Steady::start(sl.addr(), CAROL);
    // alice: at most BURST of BURST + 2 admitted, the rest refused by the limit, then 2 503s; bob:
    // 4 503s and 1 on the limited route. (Which of alice's are refused depends on the worker each
    // lands on and its share of the pool, so the figures are what the clients saw.)
    let mut alice = send(sl.addr(), ALICE, "/metered", BURST + 2);
    alice.extend(send(sl.addr(), ALICE, "/broken", 2));
    let mut bob = send(sl.addr(), BOB, "/broken", 4);
    bob.extend(send(sl.addr(), BOB, "/metered", 1));
    let seen = |statuses: &[u16]| {
        assert!(
            statuses.iter().all(|s| [200, 429, 503].contains(s)),
            "{statuses:?}"
        );
        let count = |want: u16| statuses.iter().filter(|s| **s == want).count() as u64;
        (statuses.len() as u64, count(429), count(503))
    };
    let (alice, bob) = (seen(&alice), seen(&bob));
    assert!(alice.1 >= 2, "the limit refused alice: {alice:?}");
    assert_eq!(alice.2, 2);
    assert_eq!(bob.2, 4);
    assert!(
        eventually(Duration::from_secs(10), || admin_rps(admin) > 0.0),
        "the workers never reported a request rate; sent {}",
        traffic.sent()
    );
    let reported = |name: &str, want: u64| {
        eventually(Duration::from_secs(10), || {
            consumer_json(admin, name).is_some_and(|c| c["requests"] == want)
        })
    };
    assert!(
        reported("alice", alice.0) && reported("bob", bob.0),
        "/status consumers never showed alice's and bob's requests: {:?} {:?}",
        consumer_json(admin, "alice"),
        consumer_json(admin, "bob")
    );

    let dir = temp_dir();
    let url = format!("http://{admin}/");

    // 1. The DOM after ~5 s of (virtual) page time: several polls, every chart drawn.
    let dom = chromium(
        &dir.path().join("profile-dom"),
        dir.path(),
        &["--virtual-time-budget=5000", "--dump-dom"],
        &url,
    );
    assert!(
        dom.contains("id=\"conn\" class=\"live\""),
        "page never reached the admin API:\n{dom}"
    );
    let rps = section(&dom, "chart-rps");
    assert_eq!(
        attrs(rps, "data-key"),
        ["w0", "w1"],
        "one series per core:\n{rps}"
    );
    let rates = numbers(rps, "data-value");
    assert!(
        rates.iter().any(|r| *r > 0.0),
        "no worker shows a non-zero request rate: {rates:?}\n{rps}"
    );
    let samples: u32 = attrs(rps, "data-samples")[0].parse().expect("data-samples");
    assert!(
        samples >= 2,
        "the chart should hold several polls, has {samples}"
    );
    let p99 = numbers(section(&dom, "chart-p99"), "data-value");
    assert!(
        p99.iter().any(|v| *v > 0.0),
        "p99 latency all zero: {p99:?}"
    );
    for chart in ["chart-p50", "chart-errors", "chart-util"] {
        assert_eq!(
            attrs(section(&dom, chart), "data-key"),
            ["w0", "w1"],
            "{chart} should have a series per core"
        );
    }
    let policy = section(&dom, "tile-policy");
    assert_eq!(
        numbers(policy, "data-value"),
        [(alice.1 + bob.1) as f64],
        "rate-limit rejections should read the 429s:\n{policy}"
    );

    let routes = section(&dom, "routes");
    assert_eq!(
        attrs(routes, "data-route"),
        ["orders_api", "probe_local", "metered", "broken", "keyed"],
        "routes table:\n{routes}"
    );
    assert!(
        numbers(routes, "data-requests").iter().all(|n| *n > 0.0),
        "each route served requests:\n{routes}"
    );
    let workers = section(&dom, "workers");
    assert_eq!(attrs(workers, "data-worker"), ["0", "1"]);
    check_consumers(section(&dom, "consumers"), alice, bob);
    let ups = section(&dom, "upstreams");
    assert_eq!(attrs(ups, "data-upstream"), ["app"]);
    assert_eq!(attrs(ups, "data-endpoint"), [be.addr().to_string()]);
    assert_eq!(attrs(ups, "data-healthy"), ["true"]);
    assert!(
        ups.contains("class=\"up\""),
        "healthy endpoint is green:\n{ups}"
    );

    // 2. A screenshot: a real picture of a 1280x900 page, not a blank one.
    let png = dir.path().join("stats.png");
    chromium(
        &dir.path().join("profile-shot"),
        dir.path(),
        &[
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
            &format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1280, 900), "screenshot size");
    // A blank 1280x900 page compresses to a few KB; charts, tables and text take far more.
    assert!(
        bytes.len() > 30_000,
        "screenshot is only {} bytes: the page did not render",
        bytes.len()
    );
    drop(carol);
    drop(traffic);
}

/// The consumers view: every consumer with its exact (requests, 429s, errors), ranked by rate.
fn check_consumers(view: &str, alice: (u64, u64, u64), bob: (u64, u64, u64)) {
    let names = attrs(view, "data-consumer");
    for want in ["alice", "bob", "carol", "(anonymous)"] {
        assert!(names.contains(&want), "{want} missing:\n{view}");
    }
    // One row's attribute by consumer.
    let cell = |name: &str, attr: &str| -> String {
        let i = names.iter().position(|n| *n == name).expect("row present");
        attrs(view, attr)[i].to_string()
    };
    for (name, (requests, limited, errors)) in [("alice", alice), ("bob", bob)] {
        assert_eq!(
            [
                cell(name, "data-requests"),
                cell(name, "data-limited"),
                cell(name, "data-errors")
            ],
            [
                requests.to_string(),
                limited.to_string(),
                errors.to_string()
            ],
            "{name}: requests, 429s, errors:\n{view}"
        );
        // No quota figures yet: shown as "-".
        assert_eq!(cell(name, "data-quota"), "", "{view}");
    }
    assert!(
        cell("carol", "data-rps").parse::<f64>().expect("rps") > 0.0,
        "carol sends steadily:\n{view}"
    );
    assert_eq!(cell("carol", "data-errors"), "0", "{view}");
    assert_eq!(cell("carol", "data-limited"), "0", "{view}");
    let rps = numbers(view, "data-rps");
    assert!(
        rps.windows(2).all(|w| w[0] >= w[1]),
        "ranked by rate: {rps:?}\n{view}"
    );
    assert!(
        view.contains("<td>-</td></tr>"),
        "quota used shows -:\n{view}"
    );
}
