//! Fetching JWT verifiers' keys, on a blocking thread of its own (like `dns.rs`), never on a worker's
//! request path. For every verifier with a URL (`jwks`, or the issuer's OpenID discovery document and
//! its `jwks_uri`) it fetches at start and on every reload, again every `refresh`, and early when a
//! worker reports an unknown `kid` (at most once per `min_refresh_interval` per verifier). New key
//! sets are broadcast as `ToWorker::JwtKeys`; a failed fetch keeps the last good keys, logs a warning,
//! is counted, and is retried after `min_refresh_interval` (or `refresh`, if shorter). Every change of
//! state is reported to the control thread (`ToControl::AuthStatus`) for `GET /auth` and `/metrics`.

use super::Broadcast;
use crate::link::Link;
use crate::msg::{ToControl, ToWorker, VerifierStatus};
use crate::policy::jwt::keys::parse_jwks;
use crate::policy::jwt::KeySet;
use crate::snapshot::Snapshot;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest discovery or JWKS document read.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;

enum Msg {
    Snapshot(Arc<Snapshot>),
    UnknownKid(Arc<str>),
    Stop,
}

/// Handle to the key-fetch thread.
pub struct JwksHandle(Sender<Msg>);

impl JwksHandle {
    /// Switches to a new snapshot (fetches its remote verifiers' keys again).
    pub fn update(&self, s: Arc<Snapshot>) {
        let _ = self.0.send(Msg::Snapshot(s));
    }
    /// A worker saw an unknown kid for `verifier`.
    pub fn unknown_kid(&self, verifier: Arc<str>) {
        let _ = self.0.send(Msg::UnknownKid(verifier));
    }
    /// Stops the thread.
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// Starts the key-fetch thread.
pub fn spawn(
    workers: Broadcast,
    to_control: Link<ToControl>,
    first: Arc<Snapshot>,
) -> io::Result<JwksHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("sluice-jwks".into())
        .spawn(move || run(workers, to_control, first, rx))?;
    Ok(JwksHandle(tx))
}

/// A verifier whose keys are fetched.
struct Remote {
    url: String,
    discovery: bool,
    issuer: Option<String>,
    refresh: Duration,
    min_interval: Duration,
    timeout: Duration,
    due: Instant,
    last_attempt: Option<Instant>,
    /// Hash of the last JWKS body broadcast, so an unchanged document is not sent again.
    last_body: Option<u64>,
    status: VerifierStatus,
}

struct State {
    remotes: Vec<Remote>,
    statics: Vec<VerifierStatus>,
    serial: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn describe(keys: &KeySet, st: &mut VerifierStatus) {
    st.keys = keys.len();
    st.kids = keys.kids().map(String::from).collect();
}

impl State {
    /// The verifiers of `snap`; remote ones keep what `old` knew of the same name and URL (keys stay
    /// with the workers meanwhile), and all of them are due now.
    fn new(snap: &Snapshot, old: Option<State>) -> State {
        let mut old = old.map(|o| o.remotes).unwrap_or_default();
        let now = Instant::now();
        let mut remotes = Vec::new();
        let mut statics = Vec::new();
        // `snap.jwt` holds the jwt-type tables of `config.auth`, in the same order.
        let jwt_tables = snap.config.auth.iter().filter_map(|a| match &a.kind {
            crate::config::AuthKind::Jwt(cfg) => Some((a, cfg)),
            _ => None,
        });
        for (v, (a, cfg)) in snap.jwt.iter().zip(jwt_tables) {
            let base = VerifierStatus {
                name: v.name.clone(),
                kind: a.kind.type_name(),
                source: cfg.keys.kind(),
                location: cfg.keys.location(),
                ..Default::default()
            };
            match v.remote_url() {
                Some(url) => {
                    let kept = old
                        .iter()
                        .position(|r| r.status.name == v.name && r.url == url)
                        .map(|i| old.swap_remove(i));
                    if url.starts_with("http://") {
                        // Keys decide who gets in: over plain HTTP anyone on the path can swap them.
                        tracing::warn!(verifier = %v.name, url, "JWT keys are fetched over plain HTTP; use https outside tests");
                    }
                    let (status, last_attempt, last_body) = match kept {
                        Some(r) => (r.status, r.last_attempt, r.last_body),
                        None => (base, None, None),
                    };
                    remotes.push(Remote {
                        url: url.to_string(),
                        discovery: matches!(cfg.keys, crate::config::KeySource::Discovery(_)),
                        issuer: cfg.issuer.clone(),
                        refresh: cfg.refresh,
                        min_interval: cfg.min_refresh_interval,
                        timeout: cfg.fetch_timeout,
                        due: now,
                        last_attempt,
                        last_body,
                        status,
                    });
                }
                None => {
                    let mut st = base;
                    if let Some(k) = v.static_keys() {
                        describe(k, &mut st);
                    }
                    st.last_refresh = Some(unix_now());
                    st.refreshes = 1;
                    statics.push(st);
                }
            }
        }
        State {
            remotes,
            statics,
            serial: 0,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.remotes.iter().map(|r| r.due).min()
    }

    fn report(&self, to_control: &Link<ToControl>) {
        let mut all: Vec<VerifierStatus> = self.statics.clone();
        all.extend(self.remotes.iter().map(|r| r.status.clone()));
        to_control.send(ToControl::AuthStatus(all));
    }

    fn unknown_kid(&mut self, name: &str) -> bool {
        let now = Instant::now();
        let Some(r) = self.remotes.iter_mut().find(|r| &*r.status.name == name) else {
            return false;
        };
        let earliest = r.last_attempt.map_or(now, |t| t + r.min_interval);
        if earliest < r.due {
            tracing::info!(verifier = name, "unknown kid: refreshing keys early");
            r.due = earliest.max(now);
        }
        true
    }

    fn refresh_due(&mut self, workers: &Broadcast) -> bool {
        let now = Instant::now();
        let mut any = false;
        for r in self.remotes.iter_mut().filter(|r| r.due <= now) {
            any = true;
            r.last_attempt = Some(now);
            self.serial += 1;
            match fetch(r, self.serial) {
                Ok((keys, jwks_uri, body)) => {
                    r.status.refreshes += 1;
                    r.status.last_refresh = Some(unix_now());
                    r.status.jwks_uri = jwks_uri;
                    describe(&keys, &mut r.status);
                    r.due = now + r.refresh;
                    if r.last_body != Some(body) {
                        r.last_body = Some(body);
                        tracing::info!(verifier = %r.status.name, keys = keys.len(), kids = ?r.status.kids, "JWT keys loaded");
                        let keys = Arc::new(keys);
                        let name = r.status.name.clone();
                        workers.send(|| ToWorker::JwtKeys {
                            verifier: name.clone(),
                            keys: keys.clone(),
                        });
                    }
                }
                Err(e) => {
                    r.status.failures += 1;
                    r.status.last_error_at = Some(unix_now());
                    tracing::warn!(verifier = %r.status.name, url = %r.url, error = %e, failures = r.status.failures, keys = r.status.keys, "JWT key refresh failed; keeping the last good keys");
                    r.status.last_error = Some(e);
                    r.due = now + r.refresh.min(r.min_interval.max(Duration::from_secs(1)));
                }
            }
        }
        any
    }
}

/// Fetches one verifier's keys: the discovery document first when the source is an issuer.
/// Returns the keys, the jwks_uri used (discovery only) and a hash of the JWKS body.
fn fetch(r: &Remote, serial: u64) -> Result<(KeySet, Option<String>, u64), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(r.timeout))
        .max_redirects(3)
        .build()
        .into();
    let get = |url: &str| -> Result<Vec<u8>, String> {
        let mut resp = agent
            .get(url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        resp.body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: {e}"))
    };
    let (jwks_url, jwks_uri) = if r.discovery {
        let body = get(&r.url)?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery document {}: not JSON: {e}", r.url))?;
        // OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one configured.
        if let (Some(want), Some(got)) = (&r.issuer, doc.get("issuer").and_then(|v| v.as_str())) {
            if want != got {
                return Err(format!(
                    "discovery document {} names issuer {got:?}, expected {want:?}",
                    r.url
                ));
            }
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| format!("discovery document {} has no http(s) jwks_uri", r.url))?;
        (uri.to_string(), Some(uri.to_string()))
    } else {
        (r.url.clone(), None)
    };
    let body = get(&jwks_url)?;
    let (keys, skipped) =
        parse_jwks(&body, &r.url, serial).map_err(|e| format!("{jwks_url}: {e}"))?;
    for s in skipped {
        tracing::warn!(verifier = %r.status.name, kid = ?s.kid, why = %s.why, "JWKS key skipped");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    Ok((keys, jwks_uri, h.finish()))
}

fn run(workers: Broadcast, to_control: Link<ToControl>, first: Arc<Snapshot>, rx: Receiver<Msg>) {
    let mut st = State::new(&first, None);
    st.report(&to_control);
    loop {
        if st.refresh_due(&workers) {
            st.report(&to_control);
        }
        let wait = st.next_due().map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Msg::Snapshot(s)) => {
                st = State::new(&s, Some(st));
                st.report(&to_control);
            }
            Ok(Msg::UnknownKid(name)) => {
                st.unknown_kid(&name);
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(min_interval: Duration) -> Remote {
        Remote {
            url: "http://127.0.0.1:9/jwks".into(),
            discovery: false,
            issuer: None,
            refresh: Duration::from_secs(600),
            min_interval,
            timeout: Duration::from_secs(1),
            due: Instant::now() + Duration::from_secs(600),
            last_attempt: Some(Instant::now()),
            last_body: None,
            status: VerifierStatus {
                name: "corp".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn unknown_kid_refresh_is_rate_limited() {
        let mut st = State {
            remotes: vec![remote(Duration::from_secs(30))],
            statics: Vec::new(),
            serial: 0,
        };
        let before = Instant::now();
        assert!(st.unknown_kid("corp"));
        // Just fetched: the early refresh waits for min_refresh_interval, not for `refresh`.
        let due = st.remotes[0].due;
        assert!(due >= before + Duration::from_secs(29), "{due:?}");
        assert!(due <= Instant::now() + Duration::from_secs(31));
        // Asking again changes nothing.
        assert!(st.unknown_kid("corp"));
        assert_eq!(st.remotes[0].due, due);
        assert!(!st.unknown_kid("other"));
        // Long after the last fetch, the refresh is due at once.
        st.remotes[0].last_attempt = Some(Instant::now() - Duration::from_secs(60));
        st.unknown_kid("corp");
        assert!(st.remotes[0].due <= Instant::now());
    }
}
