//! Access log and trace context: JSON lines with every field, templates, sampling, reopen on SIGUSR1,
//! a full disk that drops and counts instead of stalling, and W3C traceparent propagation.

mod common;

use common::{
    backend::Backend, catch_all, client::http_get, config, eventually, temp_dir, upstream, Sluice,
};
use std::path::Path;
use std::time::Duration;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect()
}

fn log_config(path: &str, extra: &str, be: &Backend) -> String {
    config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[access_log]\npath = \"{path}\"\n{extra}\n\n\
         [routes.hello]\npath = \"/hello\"\nrespond = {{ status = 200, body = \"hi\" }}\n\n{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    ))
}

#[test]
fn json_lines_carry_every_field() {
    let be = Backend::fixed("ok");
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let s = Sluice::start(&log_config(log.to_str().expect("utf-8"), "", &be));
    assert_eq!(http_get(s.addr(), "/hello", &[]).status, 200);
    let r = http_get(
        s.addr(),
        "/api/x?y=1",
        &[("user-agent", "tester \"1\""), ("x-request-id", "abc-123")],
    );
    assert_eq!(r.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || lines(&log).len() >= 2),
        "log: {:?}",
        std::fs::read_to_string(&log)
    );
    let all = lines(&log);
    let direct = all
        .iter()
        .find(|l| l["path"] == "/hello")
        .expect("hello line");
    assert_eq!(direct["status"], 200);
    assert_eq!(direct["route"], "hello");
    assert_eq!(direct["reason"], "direct_response");
    let proxied = all
        .iter()
        .find(|l| l["path"] == "/api/x")
        .expect("proxied line");
    assert_eq!(proxied["query"], "y=1");
    assert_eq!(proxied["request_id"], "abc-123");
    assert_eq!(proxied["route"], "all");
    assert_eq!(proxied["upstream"], "app");
    assert_eq!(proxied["endpoint"], be.addr().to_string());
    assert_eq!(proxied["user_agent"], "tester \"1\"");
    assert_eq!(proxied["reason"], "completed");
    assert_eq!(proxied["client"], "127.0.0.1");
    for key in [
        "time",
        "trace_id",
        "method",
        "host",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "connect_ms",
        "ttfb_ms",
        "attempts",
        "worker",
        "traceparent",
        "consumer",
    ] {
        assert!(proxied.get(key).is_some(), "missing {key} in {proxied}");
    }
    assert!(proxied["bytes_out"].as_u64().unwrap_or(0) > 0);
    assert!(proxied["ttfb_ms"].as_f64().unwrap_or(-1.0) >= 0.0);
}

#[test]
fn upstream_failures_say_why() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let s = Sluice::start(&config(&format!(
        "[access_log]\npath = \"{}\"\n\n{}{}",
        log.display(),
        upstream("app", &[dead], "retries = 0\n"),
        catch_all("app")
    )));
    assert_eq!(http_get(s.addr(), "/", &[]).status, 502);
    assert!(eventually(Duration::from_secs(5), || !lines(&log).is_empty()));
    let l = &lines(&log)[0];
    assert_eq!(l["status"], 502);
    assert_eq!(l["reason"], "upstream_connect_failure");
}

#[test]
fn template_format_and_sampling() {
    let be = Backend::fixed("ok");
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let s = Sluice::start(&log_config(
        log.to_str().expect("utf-8"),
        "format = \"$client $method $path $status ${reason} rid=$request_id\"\nsample = 0.0",
        &be,
    ));
    for _ in 0..5 {
        assert_eq!(http_get(s.addr(), "/hello", &[]).status, 200);
    }
    // An error is always logged, whatever the sampling.
    let r = http_get(s.addr(), "/hello", &[("content-length", "x")]);
    assert_eq!(r.status, 400);
    assert!(eventually(
        Duration::from_secs(5),
        || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            >= 1
    ));
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got.len(),
        1,
        "only the error is logged at sample = 0: {text}"
    );
    assert!(
        got[0].starts_with("127.0.0.1 - - 400 bad_request rid="),
        "{}",
        got[0]
    );
}

#[test]
fn sigusr1_reopens_the_file() {
    let be = Backend::fixed("ok");
    let dir = temp_dir();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let s = Sluice::start(&log_config(log.to_str().expect("utf-8"), "", &be));
    http_get(s.addr(), "/hello", &[]);
    assert!(eventually(Duration::from_secs(5), || lines(&log).len() == 1));
    std::fs::rename(&log, &rotated).expect("rotate");
    s.signal(libc::SIGUSR1);
    assert!(eventually(Duration::from_secs(5), || s
        .stderr_text()
        .contains("access log reopened")));
    http_get(s.addr(), "/hello?after", &[]);
    assert!(
        eventually(Duration::from_secs(5), || lines(&log).len() == 1),
        "new file gets the new line"
    );
    assert_eq!(
        lines(&rotated).len(),
        1,
        "the rotated file keeps only the old line"
    );
    assert_eq!(lines(&log)[0]["query"], "after");
}

#[test]
fn full_disk_drops_and_counts_without_stalling() {
    let be = Backend::fixed("ok");
    let s = Sluice::start(&log_config("/dev/full", "buffer_bytes = \"1KiB\"", &be));
    let admin = s.admin_addr().expect("admin");
    let started = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(http_get(s.addr(), "/hello", &[]).status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "requests stalled behind a full disk"
    );
    let dropped = || {
        let m = String::from_utf8_lossy(&http_get(admin, "/metrics", &[]).body).to_string();
        m.lines()
            .find_map(|l| l.strip_prefix("sluice_access_log_dropped_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || dropped() >= 300),
        "dropped = {}",
        dropped()
    );
    assert!(s.stderr_text().contains("access log write failed"));
}

#[test]
fn traceparent_is_continued_or_started() {
    let be = Backend::fixed("ok");
    let s = Sluice::start(&config(&format!(
        "{}{}",
        upstream("app", &[be.addr()], ""),
        catch_all("app")
    )));
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(
        http_get(s.addr(), "/a", &[("traceparent", incoming)]).status,
        200
    );
    let seen = be.last_request();
    let tp = seen
        .header("traceparent")
        .expect("traceparent forwarded")
        .to_string();
    assert_eq!(seen.header_all("traceparent").len(), 1);
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{tp}"
    );
    assert!(tp.ends_with("-01"));
    assert_ne!(
        &tp[36..52],
        "b7ad6b7169203331",
        "sluice sends its own span id"
    );

    // No (or an invalid) traceparent: a new trace whose id is the generated request id.
    assert_eq!(
        http_get(s.addr(), "/b", &[("traceparent", "zz-bad")]).status,
        200
    );
    let seen = be.last_request();
    let tp = seen
        .header("traceparent")
        .expect("traceparent started")
        .to_string();
    let rid = seen.header("x-request-id").expect("request id").to_string();
    assert_eq!(tp.len(), 55);
    assert_eq!(&tp[3..35], rid, "trace id = request id");
}
