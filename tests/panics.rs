//! A panic while handling a request (#15): in debug builds `SLUICE_DEBUG_PANIC=/path` makes a request
//! to exactly that path panic before anything is sent. That client gets a JSON 500 naming its request
//! id and a closed connection; the panic is logged at error level with the id and counted in
//! `sluice_panics_total`; the worker goes on serving its other connections and new ones.

mod common;

use common::*;
use std::time::Duration;

const PANIC_PATH: &str = "/boom";

#[test]
fn a_panic_in_one_request_costs_only_that_request() {
    let be = Backend::start(|r| Reply::ok(format!("app {}", r.path)));
    let mut sl = Sluice::start_env(
        &config(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{}",
            upstream("app", &[be.addr()], ""),
            catch_all("app")
        )),
        &[("SLUICE_DEBUG_PANIC", PANIC_PATH)],
    );
    let admin = sl.admin_addr().expect("admin address");

    // A keep-alive connection opened before the panic, on the same (only) worker.
    let mut other = Conn::connect(sl.addr());
    let r = other.get("/before", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "app /before"),
        "{r}"
    );

    let mut c = Conn::connect(sl.addr());
    let r = c.get(PANIC_PATH, &[]);
    assert_json_error(&r, 500);
    let id = r
        .header("x-request-id")
        .unwrap_or_else(|| panic!("the 500 should carry X-Request-Id:\n{r}"))
        .to_owned();
    assert!(
        c.closed_within(Duration::from_secs(2)),
        "the connection whose request panicked should be closed"
    );

    let logged =
        |l: &String| l.contains("ERROR") && l.to_lowercase().contains("panic") && l.contains(&id);
    assert!(
        eventually(Duration::from_secs(5), || sl
            .stderr_log()
            .lines()
            .iter()
            .any(logged)),
        "stderr should have an error-level line about the panic naming request id {id}:\n{}",
        sl.stderr_text()
    );
    let mut panics = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            panics = metric_value(&scrape(admin), "sluice_panics_total", "worker=\"0\"");
            panics == Some(1.0)
        }),
        "sluice_panics_total{{worker=\"0\"}} should be 1, got {panics:?}"
    );

    assert!(sl.is_running(), "sluice exited after the panic");
    let r = other.get("/after", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "app /after"),
        "the keep-alive connection opened before the panic: {r}"
    );
    let r = http_get(sl.addr(), "/boomer", &[]);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "app /boomer"),
        "only exactly {PANIC_PATH} panics; a new connection: {r}"
    );
    assert_eq!(
        metric_value(&scrape(admin), "sluice_panics_total", "worker=\"0\""),
        Some(1.0),
        "one panic in all"
    );
}
