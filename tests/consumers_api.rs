//! Runtime consumers through the admin API on the real binary: create, keys, PATCH, rotate with and
//! without grace, revoke, delete, file consumers read-only, 400/409 shapes, keys that survive `kill -9`
//! and a restart on the same state database, and rotate/revoke while a client hammers the route.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const TOKEN: &str = "admin-token-1";
/// How long a committed change may take to reach every worker (the contract: one second), plus slack
/// for a loaded test machine.
const PROPAGATION: Duration = Duration::from_secs(3);

fn config(backend: SocketAddr, state: &Path) -> String {
    config_with(
        "workers = 2",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"{}\"\n\n\
             [consumers.alice]\napi_keys = [\"alice-file-key-1\"]\ngroups = [\"gold\"]\n\n\
             {}\
             [routes.api]\npath = \"/api/*\"\nupstream = \"app\"\nauth = [\"api_key\"]\n\n\
             [routes.gold]\npath = \"/gold/*\"\nupstream = \"app\"\nauth = [\"api_key\"]\nallow = [\"gold\"]\n",
            state.display(),
            upstream("app", &[backend], ""),
        ),
    )
}

fn admin(s: &Sluice, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let len = bytes.len().to_string();
    let mut headers = vec![("authorization", auth.as_str())];
    if !bytes.is_empty() {
        headers.push(("content-type", "application/json"));
        headers.push(("content-length", len.as_str()));
    }
    let r = Conn::connect(s.admin_addr().expect("admin")).request(method, path, &headers, &bytes);
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn admin_raw(s: &Sluice, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let len = body.len().to_string();
    let r = Conn::connect(s.admin_addr().expect("admin")).request(
        method,
        path,
        &[("authorization", &auth), ("content-length", &len)],
        body,
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn with_key(s: &Sluice, path: &str, key: &str) -> u16 {
    http_get(s.addr(), path, &[("x-api-key", key)]).status
}

fn eventually_status(s: &Sluice, path: &str, key: &str, want: u16) -> bool {
    eventually(PROPAGATION, || with_key(s, path, key) == want)
}

fn issue(s: &Sluice, name: &str) -> (String, String) {
    let (st, v) = admin(s, "POST", &format!("/consumers/{name}/keys"), None);
    assert_eq!(st, 201, "{v}");
    (
        v["id"].as_str().expect("id").to_string(),
        v["key"].as_str().expect("key").to_string(),
    )
}

#[test]
fn runtime_consumer_lifecycle() {
    let backend = Backend::fixed("ok");
    let dir = temp_dir();
    let state = dir.path().join("state").join("sluice.db");
    let s = Sluice::start(&config(backend.addr(), &state));

    let (st, v) = admin(
        &s,
        "POST",
        "/consumers",
        Some(json!({"name": "carol", "groups": ["silver"], "metadata": {"tenant": "t-1"}})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["source"], "runtime");
    let (id, key) = issue(&s, "carol");
    assert!(key.starts_with("sk_"), "{key}");

    let started = Instant::now();
    assert!(eventually_status(&s, "/api/x", &key, 200));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.last_request().header("x-consumer-id"),
        Some("carol")
    );
    assert_eq!(with_key(&s, "/gold/x", &key), 403);

    // GET never shows a key or a digest.
    let (st, one) = admin(&s, "GET", "/consumers/carol", None);
    assert_eq!(st, 200);
    let text = one.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&sha256_hex(key.as_bytes())),
        "{text}"
    );
    assert_eq!(one["keys"][0]["id"], id.as_str());
    assert!(one["keys"][0]["created"].is_u64());
    let (_, all) = admin(&s, "GET", "/consumers", None);
    let list = all["consumers"].as_array().unwrap();
    let alice = list
        .iter()
        .find(|c| c["name"] == "alice")
        .expect("file consumer listed");
    assert_eq!(alice["source"], "file");
    assert!(!all.to_string().contains("alice-file-key-1"));

    // Groups change opens the gold route; disabled closes everything.
    let (st, v) = admin(
        &s,
        "PATCH",
        "/consumers/carol",
        Some(json!({"groups": ["gold"]})),
    );
    assert_eq!(st, 200, "{v}");
    assert!(eventually_status(&s, "/gold/x", &key, 200));
    let (st, _) = admin(
        &s,
        "PATCH",
        "/consumers/carol",
        Some(json!({"disabled": true})),
    );
    assert_eq!(st, 200);
    assert!(eventually_status(&s, "/api/x", &key, 401));
    let (st, _) = admin(
        &s,
        "PATCH",
        "/consumers/carol",
        Some(json!({"disabled": false})),
    );
    assert_eq!(st, 200);
    assert!(eventually_status(&s, "/api/x", &key, 200));

    // Rotate with a grace: both work, then only the new one.
    let (st, r) = admin(
        &s,
        "POST",
        &format!("/consumers/carol/keys/{id}/rotate"),
        Some(json!({"grace": "2s"})),
    );
    assert_eq!(st, 201, "{r}");
    let (id2, key2) = (
        r["id"].as_str().unwrap().to_string(),
        r["key"].as_str().unwrap().to_string(),
    );
    assert!(eventually_status(&s, "/api/x", &key2, 200));
    assert_eq!(
        with_key(&s, "/api/x", &key),
        200,
        "old key works during its grace"
    );
    let (_, one) = admin(&s, "GET", "/consumers/carol", None);
    let old = one["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned();
    assert!(old.is_some_and(|k| k["expires"].is_u64()), "{one}");
    assert!(eventually(Duration::from_secs(5), || with_key(
        &s, "/api/x", &key
    ) == 401));
    assert_eq!(with_key(&s, "/api/x", &key2), 200);

    // Rotate with "0": the old key is revoked at once.
    let (st, r) = admin(
        &s,
        "POST",
        &format!("/consumers/carol/keys/{id2}/rotate"),
        Some(json!({"grace": "0"})),
    );
    assert_eq!(st, 201, "{r}");
    let (id3, key3) = (
        r["id"].as_str().unwrap().to_string(),
        r["key"].as_str().unwrap().to_string(),
    );
    assert!(eventually_status(&s, "/api/x", &key2, 401));
    assert_eq!(with_key(&s, "/api/x", &key3), 200);

    // Revoke; unknown key and consumer are 404.
    let (st, _) = admin(&s, "DELETE", &format!("/consumers/carol/keys/{id3}"), None);
    assert_eq!(st, 200);
    assert!(eventually_status(&s, "/api/x", &key3, 401));
    assert_eq!(
        admin(&s, "DELETE", &format!("/consumers/carol/keys/{id3}"), None).0,
        404
    );
    assert_eq!(admin(&s, "POST", "/consumers/nobody/keys", None).0, 404);

    // Delete the consumer.
    let (_, key4) = issue(&s, "carol");
    assert!(eventually_status(&s, "/api/x", &key4, 200));
    assert_eq!(admin(&s, "DELETE", "/consumers/carol", None).0, 200);
    assert!(eventually_status(&s, "/api/x", &key4, 401));
    assert_eq!(admin(&s, "GET", "/consumers/carol", None).0, 404);
}

#[test]
fn conflicts_and_bad_requests() {
    let backend = Backend::fixed("ok");
    let dir = temp_dir();
    let s = Sluice::start(&config(backend.addr(), &dir.path().join("s.db")));

    // File consumers are read-only; names are unique across file and runtime.
    assert_eq!(
        admin(
            &s,
            "PATCH",
            "/consumers/alice",
            Some(json!({"disabled": true}))
        )
        .0,
        409
    );
    assert_eq!(admin(&s, "DELETE", "/consumers/alice", None).0, 409);
    assert_eq!(admin(&s, "POST", "/consumers/alice/keys", None).0, 409);
    assert_eq!(
        admin(&s, "POST", "/consumers", Some(json!({"name": "alice"}))).0,
        409
    );
    assert_eq!(
        admin(&s, "POST", "/consumers", Some(json!({"name": "dave"}))).0,
        201
    );
    assert_eq!(
        admin(&s, "POST", "/consumers", Some(json!({"name": "dave"}))).0,
        409
    );

    let (st, v) = admin_raw(&s, "POST", "/consumers", b"{\"name\": ");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
    let (st, v) = admin(
        &s,
        "POST",
        "/consumers",
        Some(json!({"name": "erin", "colour": "red"})),
    );
    assert_eq!(st, 400);
    assert_eq!(v["field"], "colour", "{v}");
    let (st, v) = admin(&s, "POST", "/consumers", Some(json!({"name": "bad name!"})));
    assert_eq!((st, v["field"].clone()), (400, json!("name")), "{v}");
    let (st, v) = admin(
        &s,
        "POST",
        "/consumers",
        Some(json!({"name": "erin", "groups": [1]})),
    );
    assert_eq!(st, 400);
    assert!(v["field"].as_str().unwrap().starts_with("groups"), "{v}");
    let (st, v) = admin(
        &s,
        "PATCH",
        "/consumers/dave",
        Some(json!({"disabled": "yes"})),
    );
    assert_eq!((st, v["field"].clone()), (400, json!("disabled")), "{v}");
    let (id, _) = issue(&s, "dave");
    let (st, v) = admin(
        &s,
        "POST",
        &format!("/consumers/dave/keys/{id}/rotate"),
        Some(json!({"grace": "10"})),
    );
    assert_eq!((st, v["field"].clone()), (400, json!("grace")), "{v}");
    assert_eq!(
        admin(&s, "PATCH", "/consumers/nobody", Some(json!({}))).0,
        404
    );

    // The token guards these endpoints too.
    let r = http_get(s.admin_addr().unwrap(), "/consumers", &[]);
    assert_eq!(r.status, 401);
}

#[test]
fn survives_kill_9_and_restart() {
    let backend = Backend::fixed("ok");
    let dir = temp_dir();
    let state = dir.path().join("db").join("state.db");
    let cfg = config(backend.addr(), &state);
    let key = {
        let s = Sluice::start(&cfg);
        assert_eq!(
            admin(
                &s,
                "POST",
                "/consumers",
                Some(json!({"name": "frank", "groups": ["gold"]}))
            )
            .0,
            201
        );
        let (_, key) = issue(&s, "frank");
        assert!(eventually_status(&s, "/api/x", &key, 200));
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(s.pid(), libc::SIGKILL) };
        assert_eq!(rc, 0);
        key
    };
    let s = Sluice::start(&cfg);
    // In force before the first request: no wait here.
    assert_eq!(with_key(&s, "/gold/x", &key), 200);
    assert_eq!(
        backend.last_request().header("x-consumer-id"),
        Some("frank")
    );
    let (st, v) = admin(&s, "GET", "/consumers/frank", None);
    assert_eq!(st, 200);
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(1), "{v}");
}

#[test]
fn rotate_and_revoke_under_traffic() {
    let backend = Backend::fixed("ok");
    let dir = temp_dir();
    let s = Sluice::start(&config(backend.addr(), &dir.path().join("t.db")));
    assert_eq!(
        admin(&s, "POST", "/consumers", Some(json!({"name": "gina"}))).0,
        201
    );
    let (id, old) = issue(&s, "gina");
    assert!(eventually_status(&s, "/api/x", &old, 200));

    // Each client logs (key, when the request started, status) and returns its log; new keys reach
    // the clients over a channel once they are in force.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let addr = s.addr();
    let mut key_txs = Vec::new();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::unbounded::<String>();
            key_txs.push(tx);
            let (stop, sent) = (stop.clone(), sent.clone());
            let mut keys = vec![old.clone()];
            thread::spawn(move || {
                let mut log: Vec<(String, Instant, u16)> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    while let Ok(k) = rx.try_recv() {
                        keys.push(k);
                    }
                    let k = keys[i % keys.len()].clone();
                    i += 1;
                    let t = Instant::now();
                    let st = http_get(addr, "/api/x", &[("x-api-key", &k)]).status;
                    sent.fetch_add(1, Ordering::Relaxed);
                    log.push((k, t, st));
                }
                log
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(200));
    let sent_at = Instant::now();
    let (st, r) = admin(
        &s,
        "POST",
        &format!("/consumers/gina/keys/{id}/rotate"),
        Some(json!({"grace": "0"})),
    );
    assert_eq!(st, 201);
    let revoked_at = Instant::now();
    let (id2, new) = (
        r["id"].as_str().unwrap().to_string(),
        r["key"].as_str().unwrap().to_string(),
    );
    // Wait for the new key to be in force before the clients use it: a valid key must never fail.
    assert!(eventually_status(&s, "/api/x", &new, 200));
    for tx in &key_txs {
        let _ = tx.send(new.clone());
    }
    thread::sleep(Duration::from_millis(1500));
    let sent2_at = Instant::now();
    let (st, _) = admin(&s, "DELETE", &format!("/consumers/gina/keys/{id2}"), None);
    assert_eq!(st, 200);
    let revoked2_at = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let log: Vec<(String, Instant, u16)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert!(sent.load(Ordering::Relaxed) > 50, "too little traffic");
    let window = Duration::from_secs(1);
    let mut checked = 0;
    for (k, t, st) in log.iter() {
        let (sent, revoked) = if *k == old {
            (sent_at, revoked_at)
        } else {
            (sent2_at, revoked2_at)
        };
        if *t > revoked + window {
            assert_eq!(
                *st,
                401,
                "a revoked key worked {:?} after the revoke",
                *t - revoked
            );
            checked += 1;
        } else if *t < sent {
            assert_eq!(*st, 200, "a valid key got {st}");
        } else {
            assert!(*st == 200 || *st == 401, "got {st} during propagation");
        }
    }
    assert!(
        checked > 10,
        "too few requests after the revokes: {checked}"
    );
}

#[test]
fn a_damaged_state_database_stops_the_start_and_check() {
    let backend = Backend::fixed("ok");
    let dir = temp_dir();
    let state = dir.path().join("bad.db");
    std::fs::write(&state, vec![0x55u8; 8192]).expect("write");
    let cfg = dir.write("sluice.toml", &config(backend.addr(), &state));
    let cfg = cfg.to_str().expect("utf-8");
    for args in [&["--check", "-c", cfg][..], &["-c", cfg][..]] {
        let out = run(args, &[], dir.path());
        assert!(!out.status.success(), "{args:?} succeeded: {}", out.all());
        assert!(
            out.all().contains("state database") && out.all().contains("bad.db"),
            "{args:?}: {}",
            out.all()
        );
    }
}

fn plan_config(backend: SocketAddr, state: &Path, plans: &str) -> String {
    config_with(
        "workers = 2",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
             [state]\npath = \"{}\"\n\n{plans}\n\
             {}\
             [routes.api]\npath = \"/api/*\"\nupstream = \"app\"\nauth = [\"api_key\"]\n\n\
             [routes.other]\npath = \"/other/*\"\nupstream = \"app\"\nauth = [\"api_key\"]\n",
            state.display(),
            upstream("app", &[backend], ""),
        ),
    )
}

#[test]
fn runtime_consumers_take_plans_and_quota_overrides() {
    let backend = Backend::fixed("ok");
    let dir = temp_dir();
    let state = dir.path().join("state.db");
    let gold = "[plans.gold]\nquota = { requests = 4, period = \"day\" }\nallow = [\"api\"]\n";
    let s = Sluice::start(&plan_config(backend.addr(), &state, gold));

    let (st, v) = admin(
        &s,
        "POST",
        "/consumers",
        Some(json!({"name": "rt", "plan": "platinum"})),
    );
    assert_eq!((st, v["field"].as_str()), (400, Some("plan")), "{v}");
    let (st, v) = admin(
        &s,
        "POST",
        "/consumers",
        Some(json!({"name": "rt", "plan": "gold", "quota": {"period": "week"}})),
    );
    assert_eq!(
        (st, v["field"].as_str()),
        (400, Some("quota.period")),
        "{v}"
    );
    let (st, v) = admin(
        &s,
        "POST",
        "/consumers",
        Some(json!({"name": "rt", "plan": "gold"})),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["plan"], "gold");
    let (_, key) = issue(&s, "rt");
    // The plan's allow list applies once the table reached the workers (costs no quota).
    assert!(eventually_status(&s, "/other/x", &key, 403));
    let got: Vec<u16> = (0..5).map(|_| with_key(&s, "/api/x", &key)).collect();
    assert_eq!(got, [200, 200, 200, 200, 429], "the plan's quota of 4");

    // An override of the count: two more, then refused again.
    let (st, v) = admin(
        &s,
        "PATCH",
        "/consumers/rt",
        Some(json!({"quota": {"requests": 6}})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["quota"]["requests"], 6);
    assert!(
        eventually_status(&s, "/api/x", &key, 200),
        "the raised quota reaches the workers"
    );
    let more: Vec<u16> = (0..3).map(|_| with_key(&s, "/api/x", &key)).collect();
    assert_eq!(more, [200, 429, 429], "6 in all: {more:?}");

    // Off the plan: its allow list no longer applies, nor its quota (the override alone counts).
    let (st, v) = admin(
        &s,
        "PATCH",
        "/consumers/rt",
        Some(json!({"plan": null, "quota": null})),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["plan"].is_null(), "{v}");
    assert!(eventually_status(&s, "/other/x", &key, 200));
    assert_eq!(with_key(&s, "/api/x", &key), 200);

    // Back on the plan, then a reload that takes the plan away: refused, not let through unlimited.
    let (st, _) = admin(&s, "PATCH", "/consumers/rt", Some(json!({"plan": "gold"})));
    assert_eq!(st, 200);
    assert!(eventually_status(&s, "/other/x", &key, 403));
    s.rewrite_config(&plan_config(backend.addr(), &state, ""));
    assert_eq!(s.reload(), Reload::Applied);
    assert!(eventually_status(&s, "/api/x", &key, 403));
    let (st, v) = admin(&s, "GET", "/consumers/rt", None);
    assert_eq!((st, v["plan"].as_str()), (200, Some("gold")), "{v}");

    // A reload adds a file consumer of the same name: the file's wins, the runtime keys stop working.
    let file_rt = "[consumers.rt]\napi_keys = [\"rt-file-key-1\"]\n";
    s.rewrite_config(&plan_config(backend.addr(), &state, file_rt));
    assert_eq!(s.reload(), Reload::Applied);
    assert!(eventually_status(&s, "/api/x", &key, 401));
    assert_eq!(with_key(&s, "/api/x", "rt-file-key-1"), 200);
}
