//! `sluice top --once` against a real two-worker sluice under traffic: one plain-text frame with a
//! row per core (non-zero request rate on at least one), every route with its counts, and a row per
//! API-key consumer with its requests, 429s (a small rate limit) and errors (a 503 route); and the
//! errors an operator meets first (nothing listening, a missing or wrong token) exit 1 with a
//! message saying which.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const ALICE: &str = "alice-top-key";
const BOB: &str = "bob-top-key-2";

fn gateway(admin_extra: &str) -> (Backend, Sluice) {
    let be = Backend::fixed("order");
    let sl = Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n\n{}\
             [limits.tiny]\nrate = \"1/h\"\nburst = 2\n\n\
             [consumers.alice]\napi_keys = [\"{ALICE}\"]\n\n\
             [consumers.bob]\napi_keys = [\"{BOB}\"]\n\n\
             [routes.orders_api]\npath = \"/orders/*\"\nupstream = \"app\"\n\n\
             [routes.probe_local]\npath = \"/probe\"\nrespond = {{ status = 200, body = \"ok\" }}\n\n\
             [routes.metered]\npath = \"/metered\"\nauth = [\"api_key\"]\nrate_limit = [\"tiny\"]\n\
             respond = {{ status = 200 }}\n\n\
             [routes.broken]\npath = \"/broken\"\nauth = [\"api_key\"]\nrespond = {{ status = 503 }}\n",
            upstream("app", &[be.addr()], "")
        ),
    ));
    (be, sl)
}

/// Sends `n` GETs of `path` with API key `key`; returns (requests, 429s, 503s) as seen.
fn send(addr: SocketAddr, key: &str, path: &str, n: usize) -> (u64, u64, u64) {
    let mut seen = (0, 0, 0);
    for _ in 0..n {
        let status = http_get(addr, path, &[("x-api-key", key)]).status;
        assert!([200, 429, 503].contains(&status), "{path}: {status}");
        seen.0 += 1;
        seen.1 += (status == 429) as u64;
        seen.2 += (status == 503) as u64;
    }
    seen
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
    // alice: 6 on a route limited to a burst of 2 (at least 4 refused), 3 503s; bob: 1 503.
    let a = send(sl.addr(), ALICE, "/metered", 6);
    let a_err = send(sl.addr(), ALICE, "/broken", 3);
    let alice = (a.0 + a_err.0, a.1, a_err.2);
    let bob = send(sl.addr(), BOB, "/broken", 1);
    assert!(alice.1 >= 4, "{alice:?}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let body = http_get(admin, "/status", &[]).body;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let listed = v["consumers"]["top"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let requests = |n: &str| {
                listed
                    .iter()
                    .find(|c| c["name"] == n)
                    .map(|c| c["requests"].clone())
            };
            json_num(&body, "requests_total").unwrap_or(0) > 0
                && requests("alice") == Some(alice.0.into())
                && requests("bob") == Some(bob.0.into())
        }),
        "the consumers' requests never reached the merged figures"
    );
    let out = top_once(admin, &["--interval", "1s"], &[]);
    assert!(out.status.success(), "top failed: {}", out.all());
    let frame = &out.stdout;
    for want in ["Workers", "Routes", "Consumers", "Upstreams", "io_uring"] {
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
    // Consumer rows: CONSUMER REQ/S REQUESTS 429s ERRORS IN OUT QUOTA
    for (name, (requests, limited, errors)) in [("alice", alice), ("bob", bob)] {
        let r = row(frame, name).unwrap_or_else(|| panic!("no row for consumer {name}:\n{frame}"));
        assert_eq!(
            [r[2], r[3], r[4], r[7]],
            [
                requests.to_string().as_str(),
                &limited.to_string(),
                &errors.to_string(),
                "-"
            ],
            "{name}: requests, 429s, errors, quota:\n{frame}"
        );
    }
    // The keyless traffic is a consumer too, and the busiest.
    let anonymous =
        row(frame, "(anonymous)").unwrap_or_else(|| panic!("no anonymous row:\n{frame}"));
    assert!(number(anonymous[1]) > 0.0, "{frame}");
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
