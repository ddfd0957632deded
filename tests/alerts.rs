//! Alert rules on the real binary with a real webhook receiver: failing traffic fires the rules
//! (route, upstream and global scope), `/alerts` and `/metrics` show it, good traffic resolves them
//! (hysteresis), each transition reaches the receiver as JSON in order, and a receiver that drops the
//! first tries still gets the event through retries.

mod common;

use common::webhook::WebhookReceiver;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn alerts_json(admin: SocketAddr) -> Value {
    let r = http_get(admin, "/alerts", &[]);
    assert_eq!(r.status, 200, "{r}");
    serde_json::from_slice(&r.body).expect("alerts JSON")
}

fn alert(all: &Value, name: &str) -> Value {
    all["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("alert {name} in {all}"))
}

fn rule(name: &str, scope: &str, hook: &str) -> String {
    format!(
        "[alerts.{name}]\nmetric = \"error_ratio\"\nscope = \"{scope}\"\nthreshold = 0.5\n\
         clear_below = 0.1\nwindow = \"2s\"\nwebhook = \"{hook}\"\n\n"
    )
}

fn alert_config(good: SocketAddr, dead: SocketAddr, rules: &str) -> String {
    config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}\
         [routes.bad]\npath = \"/bad/*\"\nupstream = \"dead\"\n\n\
         [routes.good]\npath = \"/good/*\"\nupstream = \"app\"\n\n{rules}",
        upstream("app", &[good], ""),
        upstream("dead", &[dead], ""),
    ))
}

const NAMES: [&str; 3] = ["route_errors", "upstream_errors", "global_errors"];

#[test]
fn failing_traffic_fires_and_good_traffic_resolves() {
    let mut rx = WebhookReceiver::start(0);
    let be = Backend::fixed("ok");
    let hook = rx.url("/hooks/sluice?src=test");
    let rules = format!(
        "{}{}{}",
        rule(NAMES[0], "route:bad", &hook),
        rule(NAMES[1], "upstream:dead", &hook),
        rule(NAMES[2], "global", &hook)
    );
    let sl = Sluice::start(&alert_config(be.addr(), refused_addr(), &rules));
    let admin = sl.admin_addr().expect("admin listener");

    assert!(
        eventually(Duration::from_secs(3), || alerts_json(admin)["alerts"]
            .as_array()
            .is_some_and(|a| a.len() == 3)),
        "three rules in /alerts"
    );
    for n in NAMES {
        let a = alert(&alerts_json(admin), n);
        assert_eq!(a["state"], "ok", "{a}");
        assert_eq!(a["threshold"], 0.5);
        assert_eq!(a["clear_below"], 0.1);
        assert_eq!(a["window_seconds"], 2);
        assert_eq!(a["metric"], "error_ratio");
        assert_eq!(a["webhook"]["url"], hook);
    }

    // Only failing requests: the route, the upstream and the whole instance are at 100% errors.
    let fired = eventually(Duration::from_secs(10), || {
        let r = http_get(sl.addr(), "/bad/x", &[]);
        assert!(r.status >= 500, "{r}");
        NAMES.iter().all(|n| rx.has(n, "firing"))
    });
    assert!(fired, "not every rule fired: {:?}", rx.events());
    let all = alerts_json(admin);
    assert_eq!(all["firing"], 3, "{all}");
    let a = alert(&all, "route_errors");
    assert_eq!(a["state"], "firing", "{a}");
    assert_eq!(a["scope"], "route:bad");
    assert!(a["value"].as_f64().is_some_and(|v| v > 0.5), "{a}");
    assert_eq!(a["last_transition"]["state"], "firing");
    assert!(
        a["since"].as_u64().is_some_and(|s| s > 1_600_000_000),
        "{a}"
    );
    assert!(
        eventually(Duration::from_secs(3), || alert(
            &alerts_json(admin),
            "route_errors"
        )["webhook"]["state"]
            == "delivered"),
        "delivery status never showed delivered"
    );
    let metrics = http_get(admin, "/metrics", &[]).body_str();
    assert!(
        metrics.contains("sluice_alert_firing{alert=\"route_errors\"} 1\n"),
        "{metrics}"
    );
    assert!(sl.stderr_log().contains("alert firing"));

    // The firing event's body.
    let ev = rx
        .events()
        .iter()
        .find(|e| e["alert"] == "upstream_errors")
        .cloned()
        .unwrap();
    assert_eq!(ev["state"], "firing");
    assert_eq!(ev["metric"], "error_ratio");
    assert_eq!(ev["scope"], "upstream:dead");
    assert_eq!(ev["threshold"], 0.5);
    assert_eq!(ev["window_seconds"], 2);
    assert!(ev["value"].as_f64().is_some_and(|v| v > 0.5), "{ev}");
    assert!(
        ev["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{ev}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        ev["at"]
            .as_u64()
            .is_some_and(|t| t + 60 > now && t <= now + 1),
        "{ev}"
    );

    // Only good traffic: every rule falls to 0 once the window has passed, and resolves.
    let resolved = eventually(Duration::from_secs(10), || {
        assert_eq!(http_get(sl.addr(), "/good/x", &[]).status, 200);
        NAMES.iter().all(|n| rx.has(n, "resolved"))
    });
    assert!(resolved, "not every rule resolved: {:?}", rx.events());
    for n in NAMES {
        let states: Vec<String> = rx
            .events()
            .iter()
            .filter(|e| e["alert"] == n)
            .map(|e| e["state"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(states, ["firing", "resolved"], "events of {n}");
    }
    let all = alerts_json(admin);
    assert_eq!(all["firing"], 0, "{all}");
    let a = alert(&all, "global_errors");
    assert_eq!(a["state"], "ok");
    assert_eq!(a["last_transition"]["state"], "resolved");
    assert!(sl.stderr_log().contains("alert resolved"));
    assert!(eventually(Duration::from_secs(3), || http_get(
        admin,
        "/metrics",
        &[]
    )
    .body_str()
    .contains("sluice_alert_firing{alert=\"route_errors\"} 0\n")));
}

#[test]
fn a_receiver_that_drops_the_first_tries_gets_the_event_by_retry() {
    let mut rx = WebhookReceiver::start(2);
    let be = Backend::fixed("ok");
    let sl = Sluice::start(&alert_config(
        be.addr(),
        refused_addr(),
        &rule("errors", "global", &rx.url("/hook")),
    ));
    let admin = sl.admin_addr().expect("admin listener");
    let fired = eventually(Duration::from_secs(15), || {
        let _ = http_get(sl.addr(), "/bad/x", &[]);
        rx.has("errors", "firing")
    });
    // Read at once: a "resolved" event can only follow once the window has passed without traffic.
    let tries = rx.tries.load(Ordering::SeqCst);
    assert!(fired, "the event never got through; tries: {tries}");
    assert_eq!(tries, 3, "two dropped tries, then one delivered");
    let firing = rx
        .events()
        .iter()
        .filter(|e| e["state"] == "firing")
        .count();
    assert_eq!(firing, 1);
    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(3), || {
            last = alert(&alerts_json(admin), "errors");
            last["webhook"]["state"] == "delivered"
        }),
        "{last}"
    );
    assert_eq!(last["webhook"]["attempts"], 3, "{last}");
    assert_eq!(last["webhook"]["delivered_total"], 1, "{last}");
}
