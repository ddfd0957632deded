//! The admin API on the control thread: JSON status, routes, upstreams and per-worker figures,
//! Prometheus `/metrics`, the live stats page at `/`, and `POST /reload`, behind an optional bearer
//! token. One request per connection; never on a worker.

use super::stats::Store;
use crate::config::secret::Secret;
use crate::http1::head::{Limits, RequestHead};
use crate::io::{read_more_timeout, write_vec, Timed};
use crate::msg::ToWorker;
use crate::router::Action;
use crate::snapshot::Snapshot;
use crate::upstream::AdminMode;
use bytes::BytesMut;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The embedded stats page (no external assets).
const STATS_PAGE: &str = include_str!("stats_page.html");

/// What the admin API reports; shared inside the control thread only.
pub struct AdminState {
    /// Start time.
    pub started: Instant,
    pub workers: usize,
    /// Current config generation.
    pub generation: Rc<Cell<u64>>,
    /// Config source label.
    pub config: String,
    pub token: Option<Secret>,
    /// Merged statistics.
    pub store: Rc<RefCell<Store>>,
    /// The snapshot in use.
    pub snapshot: RefCell<Arc<Snapshot>>,
    /// Access log counters.
    pub log_counters: Option<Arc<crate::access_log::LogCounters>>,
    /// Worker links, for runtime endpoint changes.
    pub links: Rc<super::Broadcast>,
    /// Runtime endpoint changes in force, re-applied after a reload.
    pub overrides: RefCell<Vec<EndpointOverride>>,
    /// JWT verifiers as the key-fetch thread last reported them.
    pub auth: Rc<RefCell<Vec<crate::msg::VerifierStatus>>>,
    /// The runtime consumer database, when `[state] path` is set.
    pub consumers: Option<Rc<RefCell<super::consumers::ConsumerStore>>>,
    /// The usage ledger, when `[usage]` is set.
    pub ledger: Option<super::usage::SharedLedger>,
    /// The billing push, when `[usage]` is set.
    pub billing: Option<Rc<super::usage::billing::Billing>>,
    /// The limit pools, for their lease counts and how many there are.
    pub pools: Rc<RefCell<super::limits::Pools>>,
}

/// An operator's runtime change to one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointOverride {
    pub upstream: Arc<str>,
    pub addr: std::net::SocketAddr,
    /// Mode, if set.
    pub mode: Option<AdminMode>,
    /// Weight, if set.
    pub weight: Option<u32>,
}

impl AdminState {
    /// Sends every override in force to the workers (after a reload built fresh upstream state).
    pub fn replay_overrides(&self) {
        for o in self.overrides.borrow().iter() {
            let o = o.clone();
            self.links.send(|| ToWorker::EndpointAdmin {
                upstream: o.upstream.clone(),
                addr: o.addr,
                mode: o.mode,
                weight: o.weight,
            });
        }
    }
}

/// Serves the admin listener until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, state: Rc<AdminState>) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                monoio::spawn(handle(s, state.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn token_ok(head: &RequestHead, token: &Option<Secret>) -> bool {
    let Some(t) = token else { return true };
    let Some(v) = head.get(b"authorization") else {
        return false;
    };
    let Some(given) = v.strip_prefix(b"Bearer ") else {
        return false;
    };
    // Constant-time compare: the token is a secret.
    let want = t.expose().as_bytes();
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

/// A response: status, content type, body.
type Reply = (u16, &'static str, String);

fn json_reply(status: u16, v: Value) -> Reply {
    (status, "application/json", v.to_string())
}

fn error(status: u16, msg: &str) -> Reply {
    json_reply(status, json!({ "error": msg, "status": status }))
}

async fn handle(mut s: monoio::net::TcpStream, st: Rc<AdminState>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut head = RequestHead::default();
    let limits = Limits {
        max_header_bytes: 16384,
        max_headers: 64,
        max_uri_bytes: 4096,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match head.parse(&mut buf, &limits) {
            Ok(Some(())) => break,
            Ok(None) => {}
            Err(_) => return send(&mut s, error(400, "bad request")).await,
        }
        match read_more_timeout(
            &mut s,
            &mut buf,
            4096,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Timed::Done(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
    let reply = if !token_ok(&head, &st.token) {
        error(401, "missing or wrong bearer token")
    } else {
        match read_body(&mut s, &head, &mut buf, deadline).await {
            Ok(body) => route(
                &st,
                head.method(),
                head.path(),
                head.query().unwrap_or_default(),
                &body,
            ),
            Err(r) => r,
        }
    };
    send(&mut s, reply).await
}

/// The most body an admin request may carry (consumer JSON is small).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a `Content-Length` body after the head (chunked bodies are refused: no endpoint needs one).
async fn read_body(
    s: &mut monoio::net::TcpStream,
    head: &RequestHead,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<BytesMut, Reply> {
    if head.get(b"transfer-encoding").is_some() {
        return Err(error(411, "send the body with content-length"));
    }
    let len = match head.get(b"content-length") {
        None => 0,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Err(error(400, "bad content-length")),
        },
    };
    if len > MAX_BODY_BYTES {
        return Err(error(413, "body too large"));
    }
    while buf.len() < len {
        match read_more_timeout(
            s,
            buf,
            4096,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Timed::Done(Ok(n)) if n > 0 => {}
            _ => return Err(error(400, "body shorter than content-length")),
        }
    }
    Ok(buf.split_to(len))
}

/// `/consumers...`: runtime consumers (and the file's, read-only). A committed change is sent to
/// every worker before the answer goes out.
fn consumers(st: &AdminState, method: &[u8], path: &[u8], body: &[u8]) -> Reply {
    let Ok(path) = std::str::from_utf8(path) else {
        return error(400, "bad path");
    };
    let snap = st.snapshot.borrow().clone();
    let file = &snap.config.consumers;
    let a = match &st.consumers {
        Some(db) => {
            let mut db = db.borrow_mut();
            let a = super::consumers::api::handle(
                &mut db,
                file,
                &snap.config.plans,
                method,
                path,
                body,
            );
            if let Some(a) = a.as_ref().filter(|a| a.changed) {
                debug_assert!(a.status < 300);
                super::publish_consumers(&st.links, &db);
            }
            a
        }
        None => super::consumers::api::without_store(file, method, path),
    };
    match a {
        Some(a) => json_reply(a.status, a.body),
        None => error(404, "not found"),
    }
}

/// `query` is the target's query without `?` (the head keeps it apart from the path).
fn route(st: &AdminState, method: &[u8], path: &[u8], query: &[u8], body: &[u8]) -> Reply {
    if let Some(r) = super::usage::api::handle(
        st.ledger.as_ref(),
        st.billing.as_deref(),
        method,
        path,
        query,
    ) {
        return r;
    }
    match (method, path) {
        (_, p)
            if p == b"/consumers"
                || p.starts_with(b"/consumers/")
                || p.starts_with(b"/consumers?") =>
        {
            consumers(st, method, p, body)
        }
        (b"GET", b"/") | (b"GET", b"/stats") => {
            (200, "text/html; charset=utf-8", STATS_PAGE.to_string())
        }
        (b"GET", b"/metrics") => metrics(st),
        (b"GET", b"/status") => json_reply(200, status(st)),
        (b"GET", b"/workers") => json_reply(200, workers(st)),
        (b"GET", b"/routes") => json_reply(200, routes(st)),
        (b"GET", b"/upstreams") => json_reply(200, upstreams(st)),
        (b"GET", b"/alerts") => json_reply(200, alerts(st)),
        (b"GET", b"/signals") => json_reply(200, signals(st)),
        (b"GET", b"/auth") => json_reply(200, auth(st)),
        (b"GET", b"/tls") => json_reply(200, tls(st)),
        (b"POST", b"/reload") => {
            // The main thread owns reloads; a SIGHUP to ourselves takes the same path as an operator's.
            match signal_hook::low_level::raise(signal_hook::consts::SIGHUP) {
                Ok(()) => json_reply(
                    202,
                    json!({ "reload": "requested", "config_generation": st.generation.get() }),
                ),
                Err(_) => error(500, "could not signal reload"),
            }
        }
        (b"POST", p) if p.starts_with(b"/upstreams/") => endpoint_admin(st, p),
        (
            _,
            b"/" | b"/stats" | b"/metrics" | b"/status" | b"/workers" | b"/routes" | b"/upstreams"
            | b"/reload" | b"/alerts" | b"/signals" | b"/auth" | b"/tls",
        ) => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// `POST /upstreams/{name}/endpoints/{addr}/{enable|disable|drain}` or `.../weight/{n}`.
fn endpoint_admin(st: &AdminState, path: &[u8]) -> Reply {
    let Ok(path) = std::str::from_utf8(path) else {
        return error(400, "bad path");
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (name, addr, action, arg) = match parts.as_slice() {
        ["upstreams", name, "endpoints", addr, action] => (*name, *addr, *action, None),
        ["upstreams", name, "endpoints", addr, action, arg] => (*name, *addr, *action, Some(*arg)),
        _ => return error(404, "not found"),
    };
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return error(400, "endpoint must be ip:port");
    };
    let snap = st.snapshot.borrow().clone();
    let Some(u) = snap.upstreams.iter().find(|u| u.cfg.name == name) else {
        return error(404, "unknown upstream");
    };
    let known = u.endpoints.iter().any(|e| e.addr == addr)
        || st
            .store
            .borrow()
            .configured_endpoints()
            .iter()
            .any(|(n, a)| &**n == name && *a == addr);
    if !known {
        return error(404, "unknown endpoint");
    }
    let (mode, weight) = match (action, arg) {
        ("enable", None) => (Some(AdminMode::Enabled), None),
        ("disable", None) => (Some(AdminMode::Disabled), None),
        ("drain", None) => (Some(AdminMode::Draining), None),
        ("weight", Some(w)) => match w.parse::<u32>() {
            Ok(w) if (1..=1000).contains(&w) => (None, Some(w)),
            _ => return error(400, "weight must be 1..=1000"),
        },
        _ => return error(400, "action must be enable, disable, drain or weight/N"),
    };
    let upstream: Arc<str> = Arc::from(name);
    {
        let mut ov = st.overrides.borrow_mut();
        match ov
            .iter_mut()
            .find(|o| o.upstream == upstream && o.addr == addr)
        {
            Some(o) => {
                o.mode = mode.or(o.mode);
                o.weight = weight.or(o.weight);
            }
            None => ov.push(EndpointOverride {
                upstream: upstream.clone(),
                addr,
                mode,
                weight,
            }),
        }
    }
    st.links.send(|| ToWorker::EndpointAdmin {
        upstream: upstream.clone(),
        addr,
        mode,
        weight,
    });
    tracing::info!(upstream = name, endpoint = %addr, action, "endpoint changed through the admin API");
    let o = st
        .overrides
        .borrow()
        .iter()
        .find(|o| o.upstream == upstream && o.addr == addr)
        .cloned();
    json_reply(
        200,
        json!({
            "upstream": name,
            "endpoint": addr.to_string(),
            "state": o.as_ref().and_then(|o| o.mode).unwrap_or(AdminMode::Enabled).as_str(),
            "weight": o.as_ref().and_then(|o| o.weight),
        }),
    )
}

fn metrics(st: &AdminState) -> Reply {
    let mut text = super::prometheus::render(&st.store.borrow(), st.generation.get());
    super::prometheus::render_consumers(&mut st.store.borrow_mut().consumers, &mut text);
    super::prometheus::render_auth(&st.auth.borrow(), &mut text);
    {
        let p = st.pools.borrow();
        super::prometheus::render_limits(&st.store.borrow().limits, &p.counts, p.held(), &mut text);
    }
    if let Some(c) = &st.log_counters {
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str(&format!(
            "# HELP sluice_access_log_written_total Access log lines written.\n# TYPE sluice_access_log_written_total counter\nsluice_access_log_written_total {}\n\
             # HELP sluice_access_log_dropped_total Access log lines dropped (queue full or write failed).\n# TYPE sluice_access_log_dropped_total counter\nsluice_access_log_dropped_total {}\n",
            c.written.load(Relaxed),
            c.dropped.load(Relaxed)
        ));
    }
    (200, "text/plain; version=0.0.4; charset=utf-8", text)
}

fn status(st: &AdminState) -> Value {
    let store = st.store.borrow();
    let drivers: Vec<&str> = store
        .workers
        .iter()
        .map(|w| w.gauges.driver)
        .filter(|d| !d.is_empty())
        .collect();
    let driver = drivers.first().copied().unwrap_or("starting");
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": st.started.elapsed().as_secs(),
        "workers": st.workers,
        "io_driver": driver,
        "config": st.config,
        "config_generation": st.generation.get(),
        "requests_total": store.global.requests,
        "connections": store.workers.iter().map(|w| w.gauges.connections).sum::<u64>(),
        "in_flight": store.workers.iter().map(|w| w.gauges.in_flight).sum::<u64>(),
        "consumers": consumers_view(&store),
        "limits": limits_view(&store, &st.pools.borrow()),
    })
}

/// `/status` `limits`: per limit (and quota period) what the workers counted since start and the
/// keys they hold now; the control thread's lease traffic and pools.
fn limits_view(store: &Store, pools: &super::limits::Pools) -> Value {
    let list: Vec<Value> = store
        .limits
        .iter()
        .map(|(name, v)| {
            json!({
                "name": &**name,
                "admitted": v.counts.admitted,
                "rejected": v.counts.rejected,
                "keys": v.keys_held(),
                "evicted": v.counts.evicted,
                "lease_asks": v.counts.asks,
                "lease_grants": v.counts.grants,
                "lease_tokens": v.counts.granted_tokens,
            })
        })
        .collect();
    let c = &pools.counts;
    json!({
        "limits": list,
        "pools": pools.held(),
        "pool_messages": {
            "asks": c.asks,
            "grants": c.grants,
            "granted_tokens": c.granted_tokens,
            "recalls": c.recalls,
            "stale": c.stale,
        },
    })
}

/// `/status` `consumers`: the top consumers by rate since start, the rest summed as `other`.
fn consumers_view(store: &Store) -> Value {
    use super::usage::live::{RATE_SECS, VIEW_CONSUMERS};
    let (top, rest) = store
        .consumers
        .ranked(VIEW_CONSUMERS, super::webhook::unix_now());
    let row = |f: &super::usage::live::ConsumerFigures, rate: f64| {
        json!({
            "requests_per_second": round(rate),
            "requests": f.requests,
            "limited": f.limited,
            "errors": f.errors,
            "bytes_in": f.bytes_in,
            "bytes_out": f.bytes_out,
        })
    };
    let list: Vec<Value> = top
        .iter()
        .map(|r| {
            let mut v = row(r.figures, r.rate);
            v["name"] = json!(&**r.name);
            v["quota_used"] = json!(store.quota_used.get(r.name).map(|q| round(*q)));
            v
        })
        .collect();
    let mut other = row(&rest.figures, rest.rate);
    other["consumers"] = json!(rest.consumers);
    json!({
        "rate_window_seconds": RATE_SECS,
        "top": list,
        "other": other,
    })
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn workers(st: &AdminState) -> Value {
    let store = st.store.borrow();
    let list: Vec<Value> = store
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "worker": i,
                "cpu": w.gauges.cpu,
                "io_driver": w.gauges.driver,
                "utilization": round(w.utilization),
                "requests_per_second": round(w.rps),
                "errors_per_second": round(w.error_rate),
                "accepts_per_second": round(w.accept_rate),
                "p50_ms": round(w.p50_ms),
                "p99_ms": round(w.p99_ms),
                "connections": w.gauges.connections,
                "parked_connections": w.gauges.parked,
                "in_flight": w.gauges.in_flight,
                "requests_total": w.totals.requests,
                "pooled_connections": w.gauges.pooled,
                "config_generation": w.generation,
            })
        })
        .collect();
    json!({ "workers": list })
}

fn quantile(h: &Option<hdrhistogram::Histogram<u64>>, q: f64) -> f64 {
    h.as_ref()
        .filter(|h| !h.is_empty())
        .map_or(0.0, |h| round(h.value_at_quantile(q) as f64 / 1000.0))
}

/// `GET /tls`: the certificates each TLS listener serves in this generation, and its settings.
fn tls(st: &AdminState) -> Value {
    let snap = st.snapshot.borrow().clone();
    let listeners: Vec<Value> = snap
        .config
        .listeners
        .iter()
        .filter_map(|l| {
            let t = l.tls.as_ref()?;
            let certs: Vec<Value> = t
                .certificates
                .iter()
                .map(|c| {
                    json!({
                        "names": c.names,
                        "default": c.default,
                        "not_after": crate::control::usage::calendar::time_label(c.not_after.max(0) as u64),
                        "serial": c.serial,
                        "source": c.source,
                        "file": c.cert_path,
                    })
                })
                .collect();
            Some(json!({
                "listener": l.name,
                "min_version": if t.tls13_only { "1.3" } else { "1.2" },
                "alpn": t.alpn.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
                "client_auth": t.client_ca.as_ref().map(|(_, m)| match m {
                    crate::config::tls::ClientAuth::Required => "required",
                    crate::config::tls::ClientAuth::Optional => "optional",
                }),
                "certificates": certs,
            }))
        })
        .collect();
    json!({ "config_generation": snap.generation, "listeners": listeners })
}

fn routes(st: &AdminState) -> Value {
    let snap = st.snapshot.borrow().clone();
    let store = st.store.borrow();
    let list: Vec<Value> = snap
        .config
        .routes
        .iter()
        .zip(&snap.routes.routes)
        .map(|(r, c)| {
            let v = store.routes.get(r.name.as_str());
            let action = match &c.action {
                Action::Respond(d) => json!({ "respond": d.status }),
                Action::Proxy(t) => json!({ "upstreams": t.iter().map(|t| json!({"upstream": snap.config.upstreams[t.upstream].name, "weight": t.weight, "header": t.when.as_ref().map(|m| &m.name)})).collect::<Vec<_>>() }),
            };
            let host = match &r.host {
                crate::config::HostPattern::Any => None,
                crate::config::HostPattern::Exact(h) => Some(h.clone()),
                crate::config::HostPattern::Suffix(h) => Some(format!("*{h}")),
            };
            json!({
                "name": r.name,
                "host": host,
                "path": r.path,
                "methods": r.methods,
                "action": action,
                "requests": v.map_or(0, |v| v.c.requests),
                "responses": v.map_or(json!({}), |v| json!({"2xx": v.c.status[2], "3xx": v.c.status[3], "4xx": v.c.status[4], "5xx": v.c.status[5], "none": v.c.status[0]})),
                "bytes_in": v.map_or(0, |v| v.c.bytes_in),
                "bytes_out": v.map_or(0, |v| v.c.bytes_out),
                "p50_ms": v.map_or(0.0, |v| quantile(&v.hist, 0.5)),
                "p99_ms": v.map_or(0.0, |v| quantile(&v.hist, 0.99)),
            })
        })
        .collect();
    json!({ "config_generation": snap.generation, "routes": list })
}

fn upstreams(st: &AdminState) -> Value {
    let snap = st.snapshot.borrow().clone();
    let store = st.store.borrow();
    let configured = store.configured_endpoints();
    let list: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let mut addrs: Vec<(std::net::SocketAddr, u32)> = u.endpoints.iter().map(|e| (e.addr, e.weight)).collect();
            // DNS may have changed the set since the snapshot: show what the workers use.
            for (name, a) in configured.iter().filter(|(n, _)| &**n == u.cfg.name.as_str()) {
                let _ = name;
                if !addrs.iter().any(|(x, _)| x == a) {
                    addrs.push((*a, 1));
                }
            }
            let eps: Vec<Value> = addrs
                .iter()
                .map(|(a, weight)| {
                    let es = store.endpoint_state(&u.cfg.name, *a);
                    let v = store.endpoints.get(&(Arc::from(u.cfg.name.as_str()), *a));
                    let ov = st.overrides.borrow().iter().find(|o| &*o.upstream == u.cfg.name.as_str() && o.addr == *a).cloned();
                    let weight = ov.as_ref().and_then(|o| o.weight).unwrap_or(*weight);
                    let admin_state = ov.and_then(|o| o.mode).unwrap_or(AdminMode::Enabled).as_str();
                    json!({
                        "address": a.to_string(),
                        "weight": weight,
                        "admin_state": admin_state,
                        "healthy": es.healthy,
                        "ejected": es.ejected,
                        "health_check_down": es.down,
                        "in_flight": es.in_flight,
                        "idle_connections": es.idle,
                        "requests": v.map_or(0, |v| v.requests),
                        "failures": v.map_or(0, |v| v.failures),
                        "ttfb_p99_ms": v.map_or(0.0, |v| quantile(&v.ttfb, 0.99)),
                    })
                })
                .collect();
            json!({
                "name": u.cfg.name,
                "balancer": u.cfg.balancer.to_string(),
                "health_check": u.cfg.health_check.as_ref().map(|h| json!({"path": h.path, "interval_ms": h.interval.as_millis() as u64})),
                "endpoints": eps,
            })
        })
        .collect();
    json!({ "upstreams": list })
}

/// `GET /auth`: every JWT verifier with its key source, the keys loaded and the refresh record, then
/// every introspection verifier with its endpoint and how its calls went.
fn auth(st: &AdminState) -> Value {
    let mut list: Vec<Value> = st
        .auth
        .borrow()
        .iter()
        .map(|v| {
            json!({
                "name": &*v.name,
                "type": v.kind,
                "source": v.source,
                "location": v.location,
                "jwks_uri": v.jwks_uri,
                "keys": v.keys,
                "kids": v.kids,
                "last_refresh": v.last_refresh,
                "last_error": v.last_error,
                "last_error_at": v.last_error_at,
                "failures": v.failures,
                "refreshes": v.refreshes,
            })
        })
        .collect();
    let snap = st.snapshot.borrow();
    let store = st.store.borrow();
    for a in &snap.config.auth {
        let crate::config::AuthKind::Introspection(cfg) = &a.kind else {
            continue;
        };
        let calls = store
            .introspection
            .get(a.name.as_str())
            .cloned()
            .unwrap_or_default();
        list.push(json!({
            "name": a.name,
            "type": a.kind.type_name(),
            "endpoint": cfg.endpoint,
            "client_id": cfg.client_id,
            "auth_method": cfg.auth_method.as_str(),
            "cache_ttl_ms": cfg.cache_ttl.as_millis() as u64,
            "negative_cache_ttl_ms": cfg.negative_cache_ttl.map(|d| d.as_millis() as u64),
            "timeout_ms": cfg.timeout.as_millis() as u64,
            "consumer_claim": cfg.consumer_claim,
            "calls": {
                "active": calls.active,
                "inactive": calls.inactive,
                "failed": calls.failures,
            },
            "failing": calls.failing,
            "last_call": calls.last_call,
            "last_error": calls.last_error,
            "last_error_at": calls.last_error_at,
        }));
    }
    json!({ "verifiers": list })
}

fn delivery(url: &str, d: &super::webhook::Delivery) -> Value {
    json!({
        "url": url,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "last_error": d.last_error,
        "at": (d.at > 0).then_some(d.at),
        "delivered_total": d.delivered,
        "failed_total": d.failed,
    })
}

/// `GET /alerts`: every rule with its state, value and webhook delivery.
fn alerts(st: &AdminState) -> Value {
    use super::alerts::{metric_name, scope_label};
    let store = st.store.borrow();
    let list: Vec<Value> = store
        .alerts
        .iter()
        .map(|a| {
            json!({
                "name": a.rule.name,
                "state": if a.firing { "firing" } else { "ok" },
                "metric": metric_name(a.rule.metric),
                "scope": scope_label(&a.rule.scope),
                "value": round(a.value),
                "threshold": a.rule.threshold,
                "clear_below": a.rule.clear_below,
                "window_seconds": Store::window_secs(a.rule.window),
                "since": a.since,
                "last_transition": a.last_transition.map(|t| json!({
                    "state": t.state(),
                    "value": round(t.value),
                    "at": t.at,
                })),
                "webhook": a.webhook.as_ref().map(|(url, d)| delivery(url, d)),
            })
        })
        .collect();
    json!({
        "firing": store.alerts.iter().filter(|a| a.firing).count(),
        "alerts": list,
    })
}

/// `GET /signals`: load, the HPA recommendation with its inputs, imbalance, per-upstream figures.
fn signals(st: &AdminState) -> Value {
    let store = st.store.borrow();
    let Some(s) = &store.signals else {
        return json!({ "ready": false });
    };
    json!({
        "ready": true,
        "window_seconds": s.window_secs,
        "covered_seconds": s.covered_secs,
        "utilization": round(s.utilization),
        "per_core_utilization": s.cores.iter().map(|c| round(c.utilization)).collect::<Vec<_>>(),
        "cores": s.cores.iter().map(|c| json!({
            "worker": c.worker,
            "cpu": c.cpu,
            "utilization": round(c.utilization),
            "utilization_now": round(c.utilization_now),
            "requests_per_second": round(c.requests_per_second),
            "in_flight": c.in_flight,
        })).collect::<Vec<_>>(),
        "in_flight": s.in_flight,
        "accepts_per_second": round(s.accepts_per_second),
        "requests_per_second": round(s.requests_per_second),
        "imbalance_ratio": round(s.imbalance_ratio),
        "recommended_instances": s.recommended_instances,
        "recommendation": {
            "recommended_instances": s.recommended_instances,
            "current_instances": s.current_instances,
            "utilization": round(s.utilization),
            "target_utilization": s.target_utilization,
            "formula": s.formula(),
        },
        "upstreams": s.upstreams.iter().map(|u| json!({
            "name": u.name,
            "in_flight": u.in_flight,
            "requests_per_second": round(u.requests_per_second),
            "ttfb_p99_ms": round(u.ttfb_p99_ms),
            "errors_5xx_per_second": round(u.errors_5xx_per_second),
        })).collect::<Vec<_>>(),
        "webhook": s.webhook.as_ref().map(|(url, d, sent)| {
            let mut v = delivery(url, d);
            v["last_sent"] = sent.map_or(Value::Null, |(n, at)| json!({ "recommended_instances": n, "at": at }));
            v
        }),
    })
}

async fn send(s: &mut monoio::net::TcpStream, (status, ctype, body): Reply) {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        crate::http1::encode::reason(status),
        body.len()
    )
    .into_bytes();
    let _ = write_vec(s, &mut out).await;
}
