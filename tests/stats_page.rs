//! The stats page in a real browser: Debian's headless Chromium loads the admin root of a
//! two-worker sluice under live traffic, and the dumped DOM must show per-core charts with real
//! (non-zero) request rates and latencies, the routes and the upstream endpoints; a screenshot
//! must be a real picture. Chromium runs in its own process group with a deadline and is killed
//! whole if it hangs. Without /usr/bin/chromium the test prints "SKIPPED: chromium not installed".

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
/// One headless run (start-up included) must finish within this.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(90);

fn gateway(be: &Backend) -> Sluice {
    Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\
             [routes.orders_api]\npath = \"/orders/*\"\nupstream = \"app\"\n\n\
             [routes.probe_local]\npath = \"/probe\"\nrespond = {{ status = 200, body = \"ok\" }}\n",
            upstream("app", &[be.addr()], "")
        ),
    ))
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
    assert!(
        eventually(Duration::from_secs(10), || admin_rps(admin) > 0.0),
        "the workers never reported a request rate; sent {}",
        traffic.sent()
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
        [0.0],
        "rate-limit rejections (none configured) should read 0:\n{policy}"
    );

    let routes = section(&dom, "routes");
    assert_eq!(
        attrs(routes, "data-route"),
        ["orders_api", "probe_local"],
        "routes table:\n{routes}"
    );
    assert!(
        numbers(routes, "data-requests").iter().all(|n| *n > 0.0),
        "each route served requests:\n{routes}"
    );
    let workers = section(&dom, "workers");
    assert_eq!(attrs(workers, "data-worker"), ["0", "1"]);
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
    drop(traffic);
}
