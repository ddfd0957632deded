//! `sluice top` unit tests: rates, number formatting, and a whole frame drawn from canned admin JSON.

use super::admin::{RoutesBody, Status, UpstreamsBody, WorkersBody};
use super::*;

#[test]
fn rates_span_the_window_and_survive_restarts() {
    let mut r = Rates::default();
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    assert_eq!(r.update("a", t0, 100), 0.0);
    assert_eq!(r.update("a", t0 + s, 150), 50.0);
    // Server merges land unevenly: 0 then 100 in one-second polls still reads 50/s overall.
    assert_eq!(r.update("a", t0 + 2 * s, 150), 25.0);
    assert_eq!(r.update("a", t0 + 3 * s, 250), 50.0);
    for i in 4..=10 {
        r.update("a", t0 + i * s, 250 + 50 * (i as u64 - 3));
    }
    assert_eq!(r.update("a", t0 + 11 * s, 650), 50.0);
    assert_eq!(r.update("a", t0 + 12 * s, 10), 0.0, "a restart starts over");
}

#[test]
fn numbers_get_the_decimals_they_deserve() {
    assert_eq!(num(4638.4), "4638");
    assert_eq!(num(45.12), "45.1");
    assert_eq!(num(0.114), "0.11");
    assert_eq!(num(0.0), "0");
    assert_eq!(uptime(3725), "1h 2m");
    assert_eq!(uptime(65), "1m 5s");
}

#[test]
fn a_frame_renders_every_worker_route_and_endpoint() {
    let workers: WorkersBody = serde_json::from_str(
        r#"{"workers":[{"worker":0,"cpu":0,"utilization":0.25,"requests_per_second":1200.5,
        "p99_ms":3.5,"requests_total":9000},{"worker":1,"cpu":-1,"requests_per_second":0}]}"#,
    )
    .unwrap();
    let routes: RoutesBody = serde_json::from_str(
        r#"{"routes":[{"name":"api","path":"/api/*","requests":42,"action":{"upstreams":[{"upstream":"app"}]},
        "responses":{"2xx":40,"5xx":2}},{"name":"ping","path":"/ping","action":{"respond":200}}]}"#,
    )
    .unwrap();
    let ups: UpstreamsBody = serde_json::from_str(
        r#"{"upstreams":[{"name":"app","endpoints":[{"address":"10.0.0.1:80","healthy":true},
        {"address":"10.0.0.2:80","healthy":false},{"address":"10.0.0.3:80","healthy":true,"admin_state":"draining"}]}]}"#,
    )
    .unwrap();
    let opts = Options {
        admin: "127.0.0.1:9901".into(),
        token: None,
        interval: Duration::from_secs(1),
        once: true,
    };
    let mut v = View::new(&opts);
    v.apply(Ok(Poll {
        at: Instant::now(),
        status: Status {
            version: "0.1.0".into(),
            workers: 2,
            consumers: serde_json::from_str(
                r#"{"rate_window_seconds":10,"top":[{"name":"alice","requests_per_second":12.5,
                "requests":300,"limited":7,"errors":2,"bytes_in":2048,"bytes_out":512,"quota_used":0.42},
                {"name":"bob","requests":5}],"other":{"consumers":3,"requests":9,"errors":1}}"#,
            )
            .unwrap(),
            ..Status::default()
        },
        workers: workers.workers,
        routes: routes.routes,
        upstreams: ups.upstreams,
    }));
    let text = render_text(&v, 140);
    for want in [
        "sluice 0.1.0",
        "Workers",
        "1200",
        "25.0%",
        "api",
        "ping",
        "-> app",
        "respond 200",
        "10.0.0.2:80",
        "DOWN",
        "UP",
        "DRAINING",
        "Consumers (top 2 by req/s over 10s; 3 more as (other))",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start_matches('│').trim_start().starts_with("api "))
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    let cells = |first: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.trim_matches(|c| c == '│' || c == ' '))
            .find(|l| l.split_whitespace().next() == Some(first))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        cells("alice"),
        ["alice", "12.5", "300", "7", "2", "2.0KiB", "512B", "42%"],
        "{text}"
    );
    assert_eq!(cells("bob"), ["bob", "0", "5", "0", "0", "0B", "0B", "-"]);
    assert_eq!(cells("(other)")[..5], ["(other)", "0", "9", "0", "1"]);
}
