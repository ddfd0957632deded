//! Operations: SIGHUP reload (good, bad, under load), SIGTERM/SIGINT drain,
//! secrets kept out of logs, `--check`, `--version`, quick mode, and every
//! shipped config file passing `--check`.

mod common;

use common::*;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn respond_config(body: &str) -> String {
    config(&format!(
        "[routes.v]\npath = \"/v\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    ))
}

#[test]
fn sighup_reload_changes_respond_body() {
    let sl = Sluice::start(&respond_config("v1"));
    assert_eq!(http_get(sl.addr(), "/v", &[]).body, b"v1");
    sl.rewrite_config(&respond_config("v2"));
    assert_eq!(sl.reload(), Reload::Applied, "expected `config reloaded`");
    let mut last = String::new();
    let changed = eventually(Duration::from_secs(3), || {
        last = http_get(sl.addr(), "/v", &[]).body_str();
        last == "v2"
    });
    assert!(
        changed,
        "after reload the new body should be served, still got {last:?}"
    );
}

#[test]
fn bad_reload_is_rejected_and_old_config_kept() {
    let mut sl = Sluice::start(&respond_config("v1"));
    let mut keep = Conn::connect(sl.addr());
    assert_eq!(keep.get("/v", &[]).body, b"v1");
    sl.rewrite_config(&format!("bogus_key = 1\n{}", respond_config("v2")));
    assert_eq!(sl.reload(), Reload::Rejected, "expected `reload rejected`");
    assert!(sl.is_running(), "a bad reload must not stop sluice");
    assert_eq!(
        http_get(sl.addr(), "/v", &[]).body,
        b"v1",
        "old config stays"
    );
    assert_eq!(
        keep.get("/v", &[]).body,
        b"v1",
        "existing connection still served"
    );
    let line = sl
        .stderr_log()
        .lines()
        .into_iter()
        .find(|l| l.contains("reload rejected"))
        .unwrap();
    assert!(
        line.contains("bogus_key"),
        "the rejection should name the bad key: {line}"
    );
}

/// One GET on a keep-alive connection, reconnecting once if a reused
/// connection was closed before any response byte (RFC 9112 §9.3.1 allows
/// a client to retry then). Returns Err(description) on a real failure.
fn get_retrying(
    c: &mut Option<Conn>,
    addr: SocketAddr,
    path: &str,
    reconnects: &mut usize,
) -> Result<Response, String> {
    for attempt in 0..2 {
        let fresh = c.is_none();
        let conn = c.get_or_insert_with(|| Conn::connect(addr));
        let before = conn.total_read();
        let sent = conn.try_send(&build_request("GET", path, &[], b""));
        let res = sent.and_then(|_| conn.read_response());
        match res {
            Ok(r) => {
                if r.says_close() {
                    *c = None;
                }
                return Ok(r);
            }
            Err(e) => {
                let untouched = conn.total_read() == before
                    && matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof
                            | ErrorKind::ConnectionReset
                            | ErrorKind::BrokenPipe
                    );
                *c = None;
                if fresh || !untouched || attempt == 1 {
                    return Err(format!("GET {path}: {e} (fresh connection: {fresh})"));
                }
                *reconnects += 1;
            }
        }
    }
    unreachable!()
}

#[test]
fn reload_under_load_loses_no_request() {
    let be = Backend::fixed("ok");
    let cfg = |gen: u32| {
        config(&format!(
            "{}[routes.gen]\npath = \"/gen\"\nrespond = {{ status = 200, body = \"gen{gen}\" }}\n\n{}",
            upstream("app", &[be.addr()], ""),
            catch_all("app")
        ))
    };
    let sl = Sluice::start(&cfg(0));
    let addr = sl.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop2, ok2) = (stop.clone(), ok.clone());
    let client = thread::spawn(move || {
        let mut conn = None;
        let mut failures = Vec::new();
        let mut reconnects = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0u64;
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            let path = if i % 2 == 0 { "/proxied" } else { "/gen" };
            i += 1;
            match get_retrying(&mut conn, addr, path, &mut reconnects) {
                Ok(r) if r.status == 200 => {
                    ok2.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) => {
                    failures.push(format!("GET {path}: status {}: {}", r.status, r.body_str()))
                }
                Err(e) => failures.push(e),
            }
        }
        (failures, reconnects)
    });
    let progress =
        |n: usize| eventually(Duration::from_secs(10), || ok.load(Ordering::SeqCst) >= n);
    assert!(progress(30), "client made no progress before reloading");
    for gen in 1..=3u32 {
        sl.rewrite_config(&cfg(gen));
        assert_eq!(sl.reload(), Reload::Applied, "reload {gen}");
        let now = ok.load(Ordering::SeqCst);
        assert!(progress(now + 30), "client stalled after reload {gen}");
    }
    stop.store(true, Ordering::SeqCst);
    let (failures, reconnects) = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests during reloads (reconnects: {reconnects}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ok.load(Ordering::SeqCst) >= 120);
    assert!(eventually(Duration::from_secs(3), || http_get(
        addr,
        "/gen",
        &[]
    )
    .body
        == b"gen3"));
}

#[test]
fn sigterm_drains_in_flight_then_exits_0() {
    let be = Backend::start(|r| {
        if r.path == "/slow" {
            Reply::ok("slow done").delay(Duration::from_millis(1500))
        } else {
            Reply::ok("fast")
        }
    });
    let mut sl = Sluice::start(&config_with(
        "workers = 1\nlog_level = \"info\"\nshutdown_timeout = \"10s\"",
        &format!(
            "{}{}",
            upstream("app", &[be.addr()], "response_timeout = \"5s\""),
            catch_all("app")
        ),
    ));
    let addr = sl.addr();
    let mut idle = Conn::connect(addr);
    assert_eq!(idle.get("/warm", &[]).status, 200);
    let slow = thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.get("/slow", &[])
    });
    assert!(
        eventually(Duration::from_secs(3), || be.in_flight() == 1),
        "slow request never reached the backend"
    );
    let t = Instant::now();
    sl.signal(libc::SIGTERM);
    let refused = eventually(Duration::from_millis(1000), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });
    assert!(refused, "new connections should be refused while draining");
    assert!(
        be.in_flight() == 1,
        "(the slow request should still be in flight here)"
    );
    let r = slow.join().unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "slow done".to_owned()),
        "in-flight request must complete: {r}"
    );
    assert!(
        idle.closed_within(Duration::from_secs(3)),
        "idle keep-alive connections are closed on drain"
    );
    let status = sl.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    let status = status.unwrap_or_else(|| panic!("sluice still running {took:?} after SIGTERM"));
    assert!(status.success(), "drain should exit 0, got {status:?}");
    assert!(took < Duration::from_secs(6), "drain took {took:?}");
}

#[test]
fn sigterm_gives_up_on_stuck_requests_after_shutdown_timeout() {
    let be = Backend::never_answer();
    let mut sl = Sluice::start(&config_with(
        "workers = 1\nlog_level = \"info\"\nshutdown_timeout = \"1s\"",
        &format!(
            "{}{}",
            upstream("app", &[be.addr()], "response_timeout = \"30s\""),
            catch_all("app")
        ),
    ));
    let addr = sl.addr();
    let stuck = thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.send(&build_request("GET", "/stuck", &[], b""));
        c.read_response()
    });
    assert!(be.wait_requests(1, Duration::from_secs(3)));
    let t = Instant::now();
    sl.signal(libc::SIGTERM);
    let status = sl.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "sluice must exit once shutdown_timeout (1s) has passed"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "exited before the grace period: {:?}",
        t.elapsed()
    );
    let _ = stuck.join().unwrap();
}

#[test]
fn sigint_exits_0() {
    let mut sl = Sluice::start(&respond_config("v1"));
    assert_eq!(http_get(sl.addr(), "/v", &[]).status, 200);
    sl.signal(libc::SIGINT);
    let status = sl
        .wait_exit(Duration::from_secs(3))
        .expect("exit after SIGINT");
    assert!(status.success(), "{status:?}");
}

#[test]
fn admin_listener_announces_itself() {
    let sl = Sluice::start(&config(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[routes.v]\npath = \"/v\"\nrespond = { status = 200, body = \"v\" }\n",
    ));
    let admin = sl.admin_addr().expect("admin address");
    assert_ne!(admin, sl.addr());
    assert!(
        TcpStream::connect_timeout(&admin, Duration::from_secs(2)).is_ok(),
        "admin listener accepts"
    );
    assert_eq!(http_get(sl.addr(), "/v", &[]).body, b"v");
}

const ENV_SECRET: &str = "tok-ENV-5f3a9c71d2";
const FILE_SECRET: &str = "tok-FILE-8b2e1d44aa";

fn secret_config(token: &str) -> String {
    config_with(
        "workers = 1\nlog_level = \"debug\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {token}\n\n\
             [routes.v]\npath = \"/v\"\nrespond = {{ status = 200, body = \"v\" }}\n"
        ),
    )
}

fn exercise_and_check_secret(sl: &Sluice, secret: &str) {
    assert_eq!(http_get(sl.addr(), "/v", &[]).status, 200);
    let admin = sl.admin_addr().expect("admin listener");
    let _ = http_get(
        admin,
        "/",
        &[("Authorization", &format!("Bearer {secret}"))],
    );
    let _ = http_get(admin, "/", &[("Authorization", "Bearer wrong")]);
    assert_eq!(sl.reload(), Reload::Applied);
    let log = sl.stderr_text();
    assert!(
        !log.contains(secret),
        "the admin token leaked into stderr:\n{log}"
    );
}

/// `--check` on `cfg` (with `env`) succeeds and does not print `secret`.
fn check_hides_secret(cfg: &str, env: &[(&str, &str)], secret: &str) {
    let dir = temp_dir();
    let path = dir.write("secret.toml", cfg);
    let out = run(&["--check", "-c", path.to_str().unwrap()], env, dir.path());
    assert!(out.status.success(), "--check failed:\n{}", out.all());
    assert!(
        !out.all().contains(secret),
        "--check output leaks the token:\n{}",
        out.all()
    );
}

#[test]
fn env_secret_never_logged() {
    let cfg = secret_config("{ env = \"SLUICE_TEST_ADMIN_TOKEN\" }");
    let env = [("SLUICE_TEST_ADMIN_TOKEN", ENV_SECRET)];
    check_hides_secret(&cfg, &env, ENV_SECRET);
    let sl = Sluice::start_env(&cfg, &env);
    exercise_and_check_secret(&sl, ENV_SECRET);
}

#[test]
fn file_secret_never_logged() {
    let dir = temp_dir();
    let token_file = dir.write("admin.token", &format!("{FILE_SECRET}\n"));
    let cfg = secret_config(&format!("{{ file = \"{}\" }}", token_file.display()));
    check_hides_secret(&cfg, &[], FILE_SECRET);
    let sl = Sluice::start(&cfg);
    exercise_and_check_secret(&sl, FILE_SECRET);
}

#[test]
fn check_missing_secret_env_names_key() {
    let (out, _) = check(&secret_config("{ env = \"SLUICE_TEST_SURELY_UNSET_VAR\" }"));
    assert_eq!(out.status.code(), Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("admin.token"),
        "error must name the key:\n{}",
        out.stderr
    );
}

fn check(toml: &str) -> (Output, String) {
    let dir = temp_dir();
    let path = dir.write("under-test.toml", toml);
    let out = run(&["--check", "-c", path.to_str().unwrap()], &[], dir.path());
    (out, path.display().to_string())
}

/// What users read spells balancers, hash keys and drivers as the config does, not as Rust debug output.
#[test]
fn check_summary_and_admin_spell_settings_as_configured() {
    let ep: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let rest = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}{}",
        upstream(
            "app",
            &[ep],
            "balancer = \"consistent_hash\"\nhash_on = \"header:X-User-Id\"\n"
        ),
        upstream("rr", &[ep], ""),
        catch_all("app")
    );
    let cfg = config_with(&format!("{DEFAULT_TOP}\ndriver = \"epoll\""), &rest);
    let (out, _) = check(&cfg);
    let text = out.all();
    assert!(out.status.success(), "--check:\n{text}");
    for want in [
        "driver: epoll",
        "consistent_hash (hash_on = header:x-user-id)",
        "round_robin",
    ] {
        assert!(text.contains(want), "--check should say {want:?}:\n{text}");
    }
    for debug in ["Epoll", "ConsistentHash", "Header(", "RoundRobin"] {
        assert!(
            !text.contains(debug),
            "--check prints Rust debug output {debug:?}:\n{text}"
        );
    }
    let sl = Sluice::start(&cfg);
    let r = http_get(sl.admin_addr().expect("admin"), "/upstreams", &[]);
    let body = r.body_str();
    assert!(
        body.contains("\"consistent_hash (hash_on = header:x-user-id)\"")
            && body.contains("\"round_robin\""),
        "/upstreams should spell balancers as configured:\n{body}"
    );
}

#[test]
fn check_accepts_good_config() {
    let (out, _) = check(&format!(
        "{}{}",
        respond_config("x"),
        upstream("app", &["127.0.0.1:9".parse().unwrap()], "")
    ));
    assert!(
        out.status.success(),
        "--check on a good config:\n{}",
        out.all()
    );
    let all = out.all().to_ascii_lowercase();
    for word in ["listener", "route", "upstream"] {
        assert!(
            all.contains(word),
            "--check summary should mention {word}s:\n{}",
            out.all()
        );
    }
}

#[test]
fn check_rejects_bad_endpoint_naming_file_and_key() {
    let (out, path) = check(&config("[upstreams.app]\nendpoints = [\"nope\"]\n"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check on a bad config must exit 1:\n{}",
        out.all()
    );
    assert!(
        out.stderr.contains("upstreams.app.endpoints[0]"),
        "error must name the key:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&path) || out.stderr.contains("under-test.toml"),
        "error must name the file:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nope"),
        "error should quote the bad value:\n{}",
        out.stderr
    );
}

#[test]
fn check_rejects_unknown_key() {
    let (out, _) = check(&config("[http]\nmax_header_byts = \"8KiB\"\n"));
    assert_eq!(out.status.code(), Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("max_header_byts"),
        "error must name the unknown key:\n{}",
        out.stderr
    );
}

#[test]
fn check_rejects_unitless_duration() {
    let (out, _) = check(&config(&format!(
        "[upstreams.app]\nendpoints = [\"127.0.0.1:9\"]\nresponse_timeout = \"5\"\n\n{}",
        catch_all("app")
    )));
    assert_eq!(out.status.code(), Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("upstreams.app.response_timeout"),
        "error must name the key:\n{}",
        out.stderr
    );
}

#[test]
fn check_rejects_unknown_upstream_in_route() {
    let (out, _) = check(&config("[routes.r]\npath = \"/\"\nupstream = \"ghost\"\n"));
    assert_eq!(out.status.code(), Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("routes.r.upstream"),
        "error must name the key:\n{}",
        out.stderr
    );
}

#[test]
fn version_prints_crate_version() {
    let out = run(&["--version"], &[], Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(out.status.success(), "{}", out.all());
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version output: {}",
        out.all()
    );
}

#[test]
fn quick_mode_proxies() {
    let be = Backend::start(|r| Reply::ok(format!("quick {}", r.path)));
    let to = be.addr().to_string();
    let sl = Sluice::start_args(&["proxy", "--listen", "127.0.0.1:0", "--to", &to]);
    let r = http_get(sl.addr(), "/any/path?x=1", &[]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "quick /any/path?x=1".to_owned()),
        "{r}"
    );
    let sl2 = Sluice::start_args(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &to,
        "--workers",
        "2",
    ]);
    for _ in 0..4 {
        assert_eq!(http_get(sl2.addr(), "/w", &[]).status, 200);
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|p| p.ends_with("default.toml")),
        "config/default.toml (the embedded default) is missing: {files:?}"
    );
    // config/tls.toml names certificates under certs/: checked from a directory that has them.
    let pki = temp_dir();
    let made = std::process::Command::new(root.join("scripts/make-test-pki"))
        .arg(pki.path().join("certs"))
        .output()
        .expect("run scripts/make-test-pki");
    assert!(made.status.success(), "make-test-pki: {made:?}");
    let mut failures = Vec::new();
    for f in &files {
        let cwd = if f.ends_with("tls.toml") {
            pki.path()
        } else {
            root
        };
        let out = run(
            &["--check", "-c", f.to_str().unwrap()],
            &[
                ("SLUICE_ADMIN_TOKEN", "dummy-token-for-check"),
                ("INTROSPECT_SECRET", "dummy-secret-for-check"),
                ("BILLING_SECRET", "dummy-billing-secret"),
            ],
            cwd,
        );
        if !out.status.success() {
            failures.push(format!("{}: {:?}\n{}", f.display(), out.status, out.all()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config files fail --check:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn reload_moves_traffic_to_new_endpoints() {
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let cfg = |be: &Backend| {
        config(&format!(
            "{}{}",
            upstream("app", &[be.addr()], ""),
            catch_all("app")
        ))
    };
    let sl = Sluice::start(&cfg(&a));
    assert_eq!(http_get(sl.addr(), "/", &[]).body, b"a");
    sl.rewrite_config(&cfg(&b));
    assert_eq!(sl.reload(), Reload::Applied);
    let mut last = Vec::new();
    let moved = eventually(Duration::from_secs(3), || {
        last = http_get(sl.addr(), "/", &[]).body;
        last == b"b"
    });
    assert!(
        moved,
        "after reload traffic should go to the new endpoint; last body {:?}",
        String::from_utf8_lossy(&last)
    );
    let n = a.request_count();
    for _ in 0..5 {
        assert_eq!(http_get(sl.addr(), "/", &[]).body, b"b");
    }
    assert_eq!(
        a.request_count(),
        n,
        "the old endpoint gets nothing after the reload"
    );
}

#[test]
fn multiple_listeners_all_serve() {
    let sl = Sluice::start(&format!(
        "{DEFAULT_TOP}\n\n[listeners.one]\nlisten = \"127.0.0.1:0\"\n\n[listeners.two]\nlisten = \"127.0.0.1:0\"\n\n\
         [routes.v]\npath = \"/v\"\nrespond = {{ status = 200, body = \"v\" }}\n"
    ));
    assert_eq!(sl.addrs().len(), 2);
    assert_ne!(sl.addrs()[0], sl.addrs()[1]);
    for a in sl.addrs() {
        assert_eq!(http_get(*a, "/v", &[]).body, b"v", "listener {a}");
    }
}

#[test]
fn no_arguments_runs_the_embedded_default_on_8080() {
    let sl = Sluice::start_args(&[]);
    assert_eq!(
        sl.addr(),
        "127.0.0.1:8080".parse().unwrap(),
        "the embedded default listens on 127.0.0.1:8080"
    );
    let r = http_get(sl.addr(), "/", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert!(!r.body.is_empty(), "GET / answers a short text page");
}
