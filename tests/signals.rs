//! Scaling signals on the real binary: idle, the HPA recommendation sits at its floor; under load from
//! many keep-alive clients it rises (with its inputs shown in `/signals` and the same figure in
//! `/metrics`, and a webhook hears of the change); when the load stops it falls back within the
//! window. Asserts directions, not exact figures: utilization on a small shared machine is noisy.

mod common;

use common::webhook::WebhookReceiver;

use common::*;
use serde_json::Value;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn signals(admin: SocketAddr) -> Value {
    let r = http_get(admin, "/signals", &[]);
    assert_eq!(r.status, 200, "{r}");
    serde_json::from_slice(&r.body).expect("signals JSON")
}

/// Keep-alive clients hammering `addr` until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<usize>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut n = 0;
                    let mut conn = Conn::connect(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let r = conn.get("/work", &[]);
                        assert_eq!(r.status, 200, "{r}");
                        n += 1;
                        if r.says_close() {
                            conn = Conn::connect(addr);
                        }
                    }
                    n
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("load thread"))
            .sum()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn recommendation_follows_load_up_and_down() {
    let mut rx = WebhookReceiver::start(0);
    let be = Backend::fixed("ok");
    // A low target so that any real load lifts the recommendation above the floor of 1, while idle
    // workers (well under 1% busy) stay at it: ceil(2 × u / 0.2) > 1 as soon as u > 0.1.
    let sl = Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [signals]\ntarget_utilization = 0.2\ncurrent_instances = 2\nwindow = \"2s\"\n\
             cooldown = \"1s\"\nwebhook = \"http://{}/scale\"\n\n{}{}",
            rx.addr,
            upstream("app", &[be.addr()], ""),
            catch_all("app")
        ),
    ));
    let admin = sl.admin_addr().expect("admin listener");

    // Idle: a full window of history at the floor.
    let mut s = Value::Null;
    assert!(
        eventually(Duration::from_secs(6), || {
            s = signals(admin);
            s["covered_seconds"].as_u64().unwrap_or(0) >= 2
        }),
        "signals never covered a window: {s}"
    );
    let idle = s["recommended_instances"]
        .as_u64()
        .expect("recommended_instances");
    assert_eq!(idle, 1, "idle workers should recommend the floor: {s}");
    assert_eq!(s["imbalance_ratio"], 1.0, "idle imbalance is 1.0: {s}");
    let inputs = &s["recommendation"];
    assert_eq!(inputs["current_instances"], 2, "{s}");
    assert_eq!(inputs["target_utilization"], 0.2, "{s}");
    assert!(inputs["utilization"].is_number(), "{s}");
    assert!(
        inputs["formula"]
            .as_str()
            .is_some_and(|f| f.starts_with("ceil(2 × ")),
        "{s}"
    );
    assert_eq!(
        s["per_core_utilization"].as_array().map(Vec::len),
        Some(2),
        "{s}"
    );
    assert_eq!(s["cores"].as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(s["upstreams"][0]["name"], "app", "{s}");
    assert_eq!(s["window_seconds"], 2);

    // Load up.
    let load = Load::start(sl.addr(), 8);
    let rose = eventually(Duration::from_secs(10), || {
        s = signals(admin);
        s["recommended_instances"].as_u64().unwrap_or(0) > idle
    });
    assert!(rose, "the recommendation never rose under load: {s}");
    assert!(s["utilization"].as_f64().is_some_and(|u| u > 0.1), "{s}");
    assert!(
        s["requests_per_second"].as_f64().is_some_and(|r| r > 0.0),
        "{s}"
    );
    assert!(s["accepts_per_second"].is_number(), "{s}");
    assert!(s["in_flight"].is_u64(), "{s}");
    assert!(
        s["imbalance_ratio"].as_f64().is_some_and(|r| r >= 1.0),
        "{s}"
    );
    let app = &s["upstreams"][0];
    assert!(
        app["requests_per_second"].as_f64().is_some_and(|r| r > 0.0),
        "{s}"
    );
    assert_eq!(app["errors_5xx_per_second"], 0.0, "{s}");
    assert!(app["ttfb_p99_ms"].as_f64().is_some_and(|t| t > 0.0), "{s}");
    let rec = s["recommendation"]["recommended_instances"]
        .as_u64()
        .unwrap();
    assert!(
        s["recommendation"]["formula"]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("= {rec}"))),
        "{s}"
    );
    let metrics = http_get(admin, "/metrics", &[]).body_str();
    let scraped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_recommended_instances "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(scraped.is_some_and(|n| n > idle), "{metrics}");
    assert!(metrics.contains("sluice_upstream_5xx_per_second{upstream=\"app\"} "));
    // The webhook hears of the rise.
    assert!(
        eventually(Duration::from_secs(5), || rx.events().iter().any(|e| {
            e["event"] == "recommendation_changed"
                && e["recommended_instances"].as_u64().unwrap_or(0) > idle
        })),
        "no webhook for the rise: {:?}",
        rx.events()
    );
    let ev = rx.events()[0].clone();
    assert_eq!(ev["previous_recommendation"], idle, "{ev}");
    assert_eq!(ev["current_instances"], 2, "{ev}");
    assert_eq!(ev["target_utilization"], 0.2, "{ev}");
    assert!(
        ev["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{ev}"
    );
    let served = load.stop();
    assert!(served > 0);

    // Load down: back to the floor once the window holds only idle seconds.
    let fell = eventually(Duration::from_secs(8), || {
        s = signals(admin);
        s["recommended_instances"].as_u64() == Some(idle)
    });
    assert!(fell, "the recommendation never fell back to {idle}: {s}");
    assert!(
        eventually(Duration::from_secs(5), || rx
            .events()
            .last()
            .is_some_and(|e| e["recommended_instances"].as_u64() == Some(idle))),
        "no webhook for the fall: {:?}",
        rx.events()
    );
}
