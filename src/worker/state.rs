//! Everything one worker owns: its current generation and the ones requests still hold, its upstream
//! connection pools, its counters, its access log buffer, its parked connections. Not `Send`; nothing
//! in it is locked, and no borrow of it is held across an `.await`.

use super::event::LocalEvent;
use super::gen::Gen;
use super::ids::IdGen;
use crate::access_log::LogSink;
use crate::link::Link;
use crate::metrics::{RequestRecord, StatsDelta, WorkerGauges};
use crate::msg::{ToControl, ToWorker};
use crate::policy::jwt::{Claims, JwtError, JwtState};
use crate::snapshot::Snapshot;
use crate::upstream::pool::{PoolKey, Pools, UpConn};
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything worker k owns. Not Send; nothing locked.
pub struct Worker {
    pub id: usize,
    pub(super) workers: usize,
    pub(super) current: RefCell<Rc<Gen>>,
    pub(super) generation: Cell<u64>,
    pub(super) pools: RefCell<Pools>,
    pub(super) draining: Cell<bool>,
    pub(super) in_flight: Cell<usize>,
    pub(super) connections: Cell<usize>,
    /// Request and span ids.
    pub ids: IdGen,
    pub(super) stop: LocalEvent,
    pub(super) accepted: Cell<u64>,
    pub(super) pool_retired: Cell<u64>,
    pub(super) panics: Cell<u64>,
    pub(super) driver: Cell<&'static str>,
    pub(super) log: RefCell<Option<LogSink>>,
    pub(super) cpu: Cell<i64>,
    pub(super) retired: RefCell<Vec<Rc<Gen>>>,
    pub(super) to_control: Link<ToControl>,
    /// Idle deadlines of parked keep-alive connections.
    pub parking: crate::conn::park::Parking,
    /// Runtime consumers and verified-credential caches.
    pub auth: crate::policy::auth_state::AuthState,
    /// Fetched JWT keys and the cache of verified tokens.
    pub(super) jwt: RefCell<JwtState>,
    /// Rate limit and quota shards.
    pub limits: crate::limit::local::Local,
    /// TLS handshakes and failures by listener, since start.
    pub(super) tls: RefCell<Vec<crate::metrics::TlsCounts>>,
    /// (second, failures logged in it): handshake failures are logged at a bounded rate.
    pub(super) tls_log: Cell<(u64, u32)>,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        workers: usize,
        snap: Snapshot,
        to_control: Link<ToControl>,
    ) -> Worker {
        let limits = crate::limit::local::Local::default();
        limits.configure(&snap.config.limits, workers);
        Worker {
            limits,
            id,
            workers,
            generation: Cell::new(snap.generation),
            current: RefCell::new(Rc::new(Gen::new(snap, id, workers))),
            pools: RefCell::new(Pools::default()),
            draining: Cell::new(false),
            in_flight: Cell::new(0),
            connections: Cell::new(0),
            ids: IdGen::new(id),
            stop: LocalEvent::default(),
            accepted: Cell::new(0),
            pool_retired: Cell::new(0),
            panics: Cell::new(0),
            driver: Cell::new(""),
            log: RefCell::new(None),
            cpu: Cell::new(-1),
            retired: RefCell::new(Vec::new()),
            to_control,
            parking: Default::default(),
            auth: Default::default(),
            jwt: RefCell::new(JwtState::default()),
            tls: RefCell::new(Vec::new()),
            tls_log: Cell::new((0, 0)),
        }
    }

    /// Counts a handshake outcome of listener `name`.
    pub fn count_tls(
        &self,
        name: &std::sync::Arc<str>,
        f: impl FnOnce(&mut crate::metrics::TlsCounts),
    ) {
        let mut all = self.tls.borrow_mut();
        let i = match all.iter().position(|c| c.listener == *name) {
            Some(i) => i,
            None => {
                all.push(crate::metrics::TlsCounts {
                    listener: name.clone(),
                    ..Default::default()
                });
                all.len() - 1
            }
        };
        f(&mut all[i]);
    }

    /// Whether one more handshake failure may be logged this second (at most `per_second`).
    pub fn tls_log_allowed(&self, per_second: u32) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (sec, n) = self.tls_log.get();
        let n = if sec == now { n } else { 0 };
        self.tls_log.set((now, n + 1));
        n < per_second
    }

    /// The current generation (an Rc clone; connections re-fetch only when the generation changed).
    pub fn snapshot(&self) -> Rc<Gen> {
        self.current.borrow().clone()
    }

    /// Generation of the current snapshot.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// True once a drain started.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Marks a request as started; the guard ends it.
    pub fn begin_request(&self) -> InFlight<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self)
    }

    /// Counts an open connection; the guard ends it.
    pub fn begin_connection(&self) -> ConnGuard<'_> {
        self.connections.set(self.connections.get() + 1);
        ConnGuard(self)
    }

    /// Writes an access log line for a finished request if an access log is on and the record is sampled.
    pub fn log_request(
        &self,
        gen: &Gen,
        rec: &RequestRecord,
        f: impl FnOnce(&mut Vec<u8>, Option<&str>),
    ) {
        let Some(cfg) = gen.config.access_log.as_ref() else {
            return;
        };
        let mut log = self.log.borrow_mut();
        let Some(sink) = log.as_mut() else { return };
        if sink.sampled(rec, cfg.sample) {
            sink.line(|out| f(out, cfg.template.as_deref()));
        }
    }

    /// Resolves when the worker starts draining: listeners stop accepting.
    pub async fn stopped(&self) {
        self.stop.wait().await
    }

    /// Counts an accepted connection.
    pub fn count_accept(&self) {
        self.accepted.set(self.accepted.get() + 1);
    }

    /// Builds this interval's report: every live generation's counts plus the worker's gauges.
    pub(super) fn report(&self) -> StatsDelta {
        let cur = self.snapshot();
        let mut d = StatsDelta {
            worker: self.id,
            generation: cur.generation,
            ..Default::default()
        };
        // Requests that started on an older generation record there; collect those too, then let go of
        // generations nobody else holds.
        let mut retired = self.retired.borrow_mut();
        for g in retired.iter() {
            g.drain_into(&mut d);
        }
        retired.retain(|g| Rc::strong_count(g) > 1);
        cur.drain_into(&mut d);
        self.limits.report(&mut d.limits);
        let pools = self.pools.borrow();
        let mut endpoints = Vec::new();
        cur.endpoint_gauges(&pools, &mut endpoints);
        d.gauges = WorkerGauges {
            driver: self.driver.get(),
            cpu: self.cpu.get(),
            // A parked connection has no task and so no guard; it is open all the same.
            connections: (self.connections.get() + self.parking.parked()) as u64,
            parked: self.parking.parked() as u64,
            in_flight: self.in_flight.get() as u64,
            accepted: self.accepted.get(),
            pool_retired: self.pool_retired.get(),
            panics: self.panics.get(),
            cpu_ns: crate::metrics::thread_cpu_ns(),
            pooled: pools.total_idle() as u64,
            endpoints,
            tls: self.tls.borrow().clone(),
        };
        d
    }

    /// Takes an idle pooled connection.
    pub fn pool_take(&self, key: PoolKey, now: Instant) -> Option<UpConn> {
        self.pools.borrow_mut().take(key, now)
    }

    /// Returns a connection to the pool.
    pub fn pool_put(&self, conn: UpConn, max_idle: usize, idle_timeout: Duration) {
        self.pools
            .borrow_mut()
            .put(conn, max_idle, idle_timeout, Instant::now());
    }

    /// A read buffer for a new upstream connection.
    pub fn pool_buffer(&self) -> BytesMut {
        self.pools.borrow_mut().buffer(crate::io::READ_CHUNK)
    }

    /// Closes a pooled connection that something arrived on while idle, counting it, and keeps its buffer.
    pub fn pool_retire(&self, buf: BytesMut) {
        self.pool_retired.set(self.pool_retired.get() + 1);
        self.pool_recycle(buf);
    }

    /// Counts a panic caught on this worker (a connection or a request that hit a bug).
    pub fn count_panic(&self) {
        self.panics.set(self.panics.get() + 1);
    }

    /// Keeps a buffer for reuse.
    pub fn pool_recycle(&self, buf: BytesMut) {
        self.pools.borrow_mut().recycle(buf);
    }

    /// Idle pooled connections of `key`.
    pub fn pool_idle(&self, key: &PoolKey) -> usize {
        self.pools.borrow().idle(key)
    }

    /// Verifies a bearer token with verifier `verifier` of `gen` (`Snapshot::jwt` index), through this
    /// worker's cache. An unknown `kid` asks the control side for an early key refresh (rate-limited).
    pub fn verify_jwt(
        &self,
        gen: &Gen,
        verifier: usize,
        token: &[u8],
        now_unix: u64,
    ) -> Result<Rc<Claims>, JwtError> {
        let Some(v) = gen.jwt.get(verifier) else {
            return Err(JwtError::NoKeys);
        };
        let mut st = self.jwt.borrow_mut();
        let r = st.verify(v, token, now_unix);
        if matches!(r, Err(JwtError::UnknownKid)) && st.should_ask_refresh(v, now_unix) {
            self.to_control.send(ToControl::JwtUnknownKid {
                verifier: v.name.clone(),
            });
        }
        r
    }

    /// Tells the control thread how a call to introspection endpoint `verifier` ended.
    pub fn report_introspection(&self, verifier: Arc<str>, call: crate::msg::IntrospectionCall) {
        self.to_control
            .send(ToControl::Introspected { verifier, call });
    }

    /// Sends the usage counted since the last report, from every generation still counting.
    fn report_usage(&self, seq: u64) {
        let mut rows = Vec::new();
        for g in self.retired.borrow().iter() {
            g.drain_usage(&mut rows);
        }
        self.snapshot().drain_usage(&mut rows);
        self.to_control.send(ToControl::Usage(seq, rows));
    }

    pub(super) fn apply(&self, msg: ToWorker) -> Option<Duration> {
        match msg {
            ToWorker::ReportUsage(seq) => self.report_usage(seq),
            ToWorker::Snapshot(s) => {
                self.generation.set(s.generation);
                self.limits.configure(&s.config.limits, self.workers);
                let old = std::mem::replace(
                    &mut *self.current.borrow_mut(),
                    Rc::new(Gen::new(*s, self.id, self.workers)),
                );
                self.retired.borrow_mut().push(old);
                tracing::debug!(
                    worker = self.id,
                    generation = self.generation.get(),
                    "snapshot applied"
                );
            }
            ToWorker::Health {
                generation,
                upstream,
                addr,
                healthy,
            } => {
                let cur = self.snapshot();
                if cur.generation == generation {
                    cur.with_group(upstream, |g| g.set_active(addr, healthy));
                }
            }
            ToWorker::Endpoints {
                generation,
                upstream,
                list,
            } => {
                let cur = self.snapshot();
                if cur.generation == generation {
                    cur.with_group(upstream, |g| g.set_endpoints(&list));
                    cur.stats.borrow_mut().resize_upstream(upstream, list.len());
                }
            }
            ToWorker::EndpointAdmin {
                upstream,
                addr,
                mode,
                weight,
            } => {
                let cur = self.snapshot();
                if let Some(gi) = cur.upstream_names.iter().position(|n| *n == upstream) {
                    cur.with_group(gi, |g| g.set_admin(addr, mode, weight));
                }
            }
            ToWorker::JwtKeys { verifier, keys } => {
                tracing::debug!(worker = self.id, verifier = %verifier, keys = keys.len(), "JWT keys applied");
                self.jwt.borrow_mut().set_keys(verifier, keys);
            }
            ToWorker::Consumers(set) => {
                tracing::debug!(
                    worker = self.id,
                    consumers = set.len(),
                    "runtime consumers applied"
                );
                self.auth.set_runtime(*set);
            }
            ToWorker::Limits { grants, recalls } => self.limits.apply(grants, recalls),
            ToWorker::Drain(grace) => return Some(grace),
        }
        None
    }
}

/// Ends a request on drop.
pub struct InFlight<'a>(&'a Worker);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// Ends a connection on drop.
pub struct ConnGuard<'a>(&'a Worker);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

#[cfg(test)]
mod jwt_tests {
    //! The worker side of JWT keys: a `JwtKeys` message installs fetched keys, `verify_jwt` uses them
    //! through the cache, and an unknown kid asks the control side for a refresh, at most once per
    //! `UNKNOWN_KID_ASK_SECS`.

    use super::*;
    use crate::policy::jwt::keys::parse_jwks;
    use std::sync::Arc;

    const URL: &str = "http://127.0.0.1:9/jwks.json";
    const NOW: u64 = 1_800_000_000;

    fn token(kid: &str) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
            "../../tests/data/jwt/rsa_private.pem"
        ))
        .unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.into());
        let claims = serde_json::json!({ "sub": "alice", "exp": NOW + 60 });
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    }

    #[test]
    fn keys_arrive_by_message_and_unknown_kids_ask_for_a_refresh() {
        let cfg = crate::config::parse(
            &format!("[listeners.a]\nlisten = \"127.0.0.1:0\"\n[auth.corp]\ntype = \"jwt\"\njwks = \"{URL}\"\n"),
            crate::config::Source::Embedded,
        )
        .unwrap();
        let snap = Snapshot::build(Arc::new(cfg), 1).unwrap();
        let vi = snap.jwt_index("corp").unwrap();
        let (link, inbox) = crate::link::pair::<ToControl>().unwrap();
        let w = Worker::new(0, 1, snap, link);
        let gen = w.snapshot();
        let good = token("rsa1");
        assert_eq!(
            w.verify_jwt(&gen, vi, good.as_bytes(), NOW),
            Err(JwtError::NoKeys)
        );

        let (keys, _) =
            parse_jwks(include_bytes!("../../tests/data/jwt/jwks.json"), URL, 1).unwrap();
        w.apply(ToWorker::JwtKeys {
            verifier: "corp".into(),
            keys: Arc::new(keys),
        });
        let claims = w.verify_jwt(&gen, vi, good.as_bytes(), NOW).unwrap();
        assert_eq!(claims.consumer(), Some("alice"));
        assert!(inbox.try_recv().is_none());

        let unknown = token("rotated-in");
        for _ in 0..3 {
            assert_eq!(
                w.verify_jwt(&gen, vi, unknown.as_bytes(), NOW),
                Err(JwtError::UnknownKid)
            );
        }
        assert!(matches!(
            inbox.try_recv(),
            Some(ToControl::JwtUnknownKid { verifier }) if &*verifier == "corp"
        ));
        assert!(inbox.try_recv().is_none(), "asked once per interval");
        let later = NOW + crate::policy::jwt::UNKNOWN_KID_ASK_SECS;
        let _ = w.verify_jwt(&gen, vi, unknown.as_bytes(), later);
        assert!(matches!(
            inbox.try_recv(),
            Some(ToControl::JwtUnknownKid { .. })
        ));
    }
}
