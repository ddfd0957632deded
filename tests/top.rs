//! `sluice top --once` against a real two-worker sluice under traffic: one plain-text frame with a
//! row per core (non-zero request rate on at least one) and every route with its counts; and the
//! errors an operator meets first (nothing listening, a missing or wrong token) exit 1 with a
//! message saying which.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

fn gateway(admin_extra: &str) -> (Backend, Sluice) {
    let be = Backend::fixed("order");
    let sl = Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n\n{}\
             [routes.orders_api]\npath = \"/orders/*\"\nupstream = \"app\"\n\n\
             [routes.probe_local]\npath = \"/probe\"\nrespond = {{ status = 200, body = \"ok\" }}\n",
            upstream("app", &[be.addr()], "")
        ),
    ));
    (be, sl)
}

/// `sluice top --admin ADDR --once ARGS...` (bounded by the harness's 10 s).
fn top_once(admin: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = temp_dir();
    let admin = admin.to_string();
    let mut all = vec!["top", "--admin", &admin, "--once"];
    all.extend_from_slice(args);
    run(&all, env, dir.path())
}

/// The whitespace-separated cells of the table row whose first cell is `first`.
fn row<'a>(frame: &'a str, first: &str) -> Option<Vec<&'a str>> {
    frame.lines().find_map(|l| {
        let cells: Vec<&str> = l
            .trim_matches(|c| c == '│' || c == ' ')
            .split_whitespace()
            .collect();
        (cells.first() == Some(&first)).then_some(cells)
    })
}

fn number(cell: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|_| panic!("{cell:?} is not a number"))
}

#[test]
fn once_prints_cores_and_routes_with_live_numbers() {
    let (_be, sl) = gateway("");
    let admin = sl.admin_addr().expect("admin listener");
    let traffic = Traffic::start(
        sl.addr(),
        4,
        &["/orders/1", "/probe", "/orders/2"],
        Duration::from_millis(2),
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            json_num(&http_get(admin, "/status", &[]).body, "requests_total").unwrap_or(0) > 0
        }),
        "no request reached the merged figures"
    );
    let out = top_once(admin, &["--interval", "1s"], &[]);
    assert!(out.status.success(), "top failed: {}", out.all());
    let frame = &out.stdout;
    for want in ["Workers", "Routes", "Upstreams", "io_uring"] {
        assert!(frame.contains(want), "{want:?} missing:\n{frame}");
    }
    // Worker rows: CORE CPU REQ/S ...
    let cores: Vec<Vec<&str>> = ["0", "1"]
        .iter()
        .map(|c| row(frame, c).unwrap_or_else(|| panic!("no row for core {c}:\n{frame}")))
        .collect();
    let rates: Vec<f64> = cores.iter().map(|r| number(r[2])).collect();
    assert!(
        rates.iter().any(|r| *r > 0.0),
        "no core shows a request rate: {rates:?}\n{frame}"
    );
    // Route rows: ROUTE REQ/S REQUESTS 2xx ...
    for name in ["orders_api", "probe_local"] {
        let r = row(frame, name).unwrap_or_else(|| panic!("no row for route {name}:\n{frame}"));
        assert!(number(r[1]) > 0.0, "{name} req/s is 0:\n{frame}");
        assert!(number(r[2]) > 0.0, "{name} requests is 0:\n{frame}");
        assert_eq!(r[2], r[3], "{name}: every response was a 2xx:\n{frame}");
    }
    let app = row(frame, "app").unwrap_or_else(|| panic!("no upstream row:\n{frame}"));
    assert_eq!(app[2], "UP", "{frame}");
    drop(traffic);
}

#[test]
fn once_says_why_it_cannot_read_the_admin_api() {
    let out = top_once(refused_addr(), &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("cannot connect to the admin API"),
        "{}",
        out.all()
    );

    let (_be, sl) = gateway("token = \"s3cret-top\"");
    let admin = sl.admin_addr().expect("admin listener");
    let out = top_once(admin, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.all());
    assert!(out.stderr.contains("bearer token"), "{}", out.all());
    let out = top_once(admin, &["--token", "wrong"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.all());

    let out = top_once(admin, &["--token", "s3cret-top"], &[]);
    assert!(out.status.success(), "{}", out.all());
    assert!(row(&out.stdout, "orders_api").is_some(), "{}", out.stdout);
    // The token may also come from the environment, out of `ps`.
    let out = top_once(admin, &[], &[("SLUICE_ADMIN_TOKEN", "s3cret-top")]);
    assert!(out.status.success(), "{}", out.all());
}
