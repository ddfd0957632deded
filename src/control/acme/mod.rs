//! Automatic certificates (ACME, RFC 8555) on a blocking thread of its own, like `jwks.rs`: never on a
//! worker, never on the control thread's runtime. For every name of `[listeners.NAME.acme]` it reads
//! the stored certificate at start, after every reload and every `check_interval`, and orders a new
//! one when none is stored or less than `renew_before` is left. A new certificate is written to the
//! state directory (`store`) and swapped in by the same reload `POST /reload` asks for (a SIGHUP to
//! this process: the reload reads the certificate files again). A failed order keeps the stored
//! certificate, is logged and counted, and is retried after `retry`, doubling up to `retry_max`; its
//! count since the last success is what the `acme_failures` alert metric reads. Every change is
//! reported to the control thread (`ToControl::Acme`) for `GET /acme` and `/metrics`.

mod client;
mod order;
pub mod store;

use crate::config::acme::Acme;
use crate::link::Link;
use crate::msg::{AcmeStatus, ToControl};
use crate::snapshot::Snapshot;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound of one HTTP request to the CA.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an order or a check failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: no certificate in the PEM file")]
    Roots(PathBuf),
    #[error("certificate not readable: {0}")]
    Certificate(String),
    #[error("account file {path}: {source}")]
    AccountFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the CA offers no {0} challenge")]
    NoChallenge(&'static str),
    #[error("the authorization of {name} is {status}")]
    Authorization { name: String, status: String },
    #[error("the order became invalid: {0}")]
    Invalid(String),
    #[error("the order was not done within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Challenge(#[from] crate::tls::challenge::ChallengeError),
    #[error("cannot make the key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
}

enum Msg {
    Snapshot(Arc<Snapshot>),
    Stop,
}

/// Handle to the ACME thread.
pub struct AcmeHandle(Sender<Msg>);

impl AcmeHandle {
    /// Takes a reloaded config: new names are looked at now, kept ones keep their schedule.
    pub fn update(&self, s: Arc<Snapshot>) {
        let _ = self.0.send(Msg::Snapshot(s));
    }
    /// Stops the thread (after the order in progress, if any).
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// Starts the ACME thread; without `[acme]` it only waits for a reload that adds one.
pub fn spawn(to_control: Link<ToControl>, first: Arc<Snapshot>) -> io::Result<AcmeHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("sluice-acme".into())
        .spawn(move || run(to_control, first, rx))?;
    Ok(AcmeHandle(tx))
}

/// One name's schedule and status.
struct Name {
    due: Instant,
    /// The wait after the next failure.
    backoff: Duration,
    status: AcmeStatus,
}

/// What the thread keeps between checks.
struct State {
    cfg: Option<Acme>,
    names: Vec<Name>,
    /// The account, for the directory, contact and roots it was made with.
    account: Option<(
        (String, Option<String>, Option<PathBuf>),
        instant_acme::Account,
    )>,
}

fn unix_now() -> i64 {
    crate::control::webhook::unix_now() as i64
}

/// What a name's next step is, from what is stored.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Order now.
    Order,
    /// Look again in this long.
    Wait(Duration),
}

/// Pure scheduling: with `not_after` stored (or none), at `now`, order or wait how long.
fn plan(
    not_after: Option<i64>,
    now: i64,
    renew_before: Duration,
    check_interval: Duration,
) -> Plan {
    let Some(not_after) = not_after else {
        return Plan::Order;
    };
    let renew_at = not_after.saturating_sub(renew_before.as_secs() as i64);
    if now >= renew_at {
        return Plan::Order;
    }
    Plan::Wait(check_interval.min(Duration::from_secs((renew_at - now) as u64)))
}

/// The wait after a failure, and the one after the next: `retry`, doubling, capped at `retry_max`.
fn next_backoff(current: Duration, retry_max: Duration) -> Duration {
    (current * 2).min(retry_max)
}

impl State {
    /// Names of `cfg`; those `old` knew keep their status and schedule, new ones are due now.
    fn new(cfg: Option<Acme>, old: Option<State>) -> State {
        let (mut old_names, account) = match old {
            Some(o) => (o.names, o.account),
            None => (Vec::new(), None),
        };
        let now = Instant::now();
        let mut names = Vec::new();
        if let Some(c) = &cfg {
            for n in &c.names {
                let kept = old_names
                    .iter()
                    .position(|o| &*o.status.name == n.as_str())
                    .map(|i| old_names.swap_remove(i));
                names.push(kept.unwrap_or_else(|| Name {
                    due: now,
                    backoff: c.retry,
                    status: AcmeStatus {
                        name: Arc::from(n.as_str()),
                        state: "missing",
                        ..Default::default()
                    },
                }));
            }
        }
        State {
            cfg,
            names,
            account,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.names.iter().map(|n| n.due).min()
    }

    fn report(&self, to_control: &Link<ToControl>) {
        to_control.send(ToControl::Acme(
            self.names.iter().map(|n| n.status.clone()).collect(),
        ));
    }

    /// The account for the current settings (registered or read back once, then kept).
    fn account(&mut self, cfg: &Acme) -> Result<instant_acme::Account, AcmeError> {
        let key = (cfg.directory.clone(), cfg.contact.clone(), cfg.ca.clone());
        if let Some((k, a)) = &self.account {
            if *k == key {
                return Ok(a.clone());
            }
        }
        let client = client::UreqClient::new(cfg.ca.as_deref(), REQUEST_TIMEOUT)?;
        let a = order::account(cfg, &client)?;
        self.account = Some((key, a.clone()));
        Ok(a)
    }

    /// Looks at every due name; returns whether anything was reported changed and whether a
    /// certificate was written.
    fn work(&mut self) -> (bool, bool) {
        let Some(cfg) = self.cfg.clone() else {
            return (false, false);
        };
        let mut changed = false;
        let mut written = false;
        for i in 0..self.names.len() {
            if self.names[i].due > Instant::now() {
                continue;
            }
            changed = true;
            written |= self.look_at(&cfg, i);
        }
        (changed, written)
    }

    /// One due name: read what is stored; order when it is missing or due for renewal. Returns
    /// whether a new certificate was written.
    fn look_at(&mut self, cfg: &Acme, i: usize) -> bool {
        let name = self.names[i].status.name.clone();
        let (crt, key) = cfg.files(&name);
        let stored = match store::read_cert(&crt).and_then(|s| {
            match (&s, crt.to_str(), key.to_str()) {
                // The pair must load as the TLS listener loads it, or it is ordered again.
                (Some(_), Some(c), Some(k)) => crate::config::tls::certified_key(c, k)
                    .map(|_| s)
                    .map_err(AcmeError::Certificate),
                _ => Ok(s),
            }
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(name = %name, path = %crt.display(), error = %e, "stored certificate unusable; ordering a new one");
                None
            }
        };
        {
            let st = &mut self.names[i].status;
            st.not_after = stored.as_ref().map(|s| s.not_after);
            st.serial = stored.as_ref().map(|s| s.serial.clone());
            st.issuer = stored.as_ref().map(|s| s.issuer.clone());
        }
        let now = unix_now();
        let not_after = stored.as_ref().map(|s| s.not_after);
        if let Plan::Wait(wait) = plan(not_after, now, cfg.renew_before, cfg.check_interval) {
            let n = &mut self.names[i];
            n.due = Instant::now() + wait;
            n.status.next_check_at = (now as u64).saturating_add(wait.as_secs());
            if n.status.consecutive_failures == 0 {
                n.status.state = "valid";
            }
            return false;
        }
        self.names[i].status.state = if stored.is_some() {
            "renewing"
        } else {
            "missing"
        };
        tracing::info!(name = %name, directory = %cfg.directory, challenge = cfg.challenge.as_str(), not_after = ?not_after, "ordering a certificate");
        let started = Instant::now();
        let result = self.account(cfg).and_then(|a| {
            let issued = order::issue(cfg, &a, &name)?;
            let leaf = store::parse_leaf(issued.chain.as_bytes())?;
            store::write_pair(
                &crt,
                issued.chain.as_bytes(),
                &key,
                issued.key_pem.as_bytes(),
            )?;
            Ok(leaf)
        });
        let now = unix_now();
        let n = &mut self.names[i];
        match result {
            Ok(leaf) => {
                tracing::info!(name = %name, serial = %leaf.serial, not_after = leaf.not_after, elapsed = ?started.elapsed(), path = %crt.display(), "certificate issued and stored");
                n.status.state = "valid";
                n.status.orders_ok += 1;
                n.status.consecutive_failures = 0;
                n.status.retry_in_ms = 0;
                n.status.last_issued_at = Some(now as u64);
                n.status.not_after = Some(leaf.not_after);
                n.status.serial = Some(leaf.serial);
                n.status.issuer = Some(leaf.issuer);
                n.backoff = cfg.retry;
                let wait = match plan(
                    Some(leaf.not_after),
                    now,
                    cfg.renew_before,
                    cfg.check_interval,
                ) {
                    Plan::Wait(w) => w,
                    // A `renew_before` longer than the CA's lifetimes: renew every check.
                    Plan::Order => cfg.check_interval,
                };
                n.due = Instant::now() + wait;
                n.status.next_check_at = (now as u64).saturating_add(wait.as_secs());
                true
            }
            Err(e) => {
                let wait = n.backoff;
                n.backoff = next_backoff(wait, cfg.retry_max);
                n.status.state = "failing";
                n.status.orders_failed += 1;
                n.status.consecutive_failures = n.status.consecutive_failures.saturating_add(1);
                n.status.last_error = Some(e.to_string());
                n.status.last_error_at = Some(now as u64);
                n.status.retry_in_ms = wait.as_millis() as u64;
                n.due = Instant::now() + wait;
                n.status.next_check_at = (now as u64).saturating_add(wait.as_secs());
                let left = n.status.not_after.map(|t| t - now);
                if left.is_none_or(|l| l <= 0) {
                    tracing::error!(name = %name, error = %e, failures = n.status.consecutive_failures, retry_in = ?wait, "certificate order failed and no valid certificate is stored");
                } else {
                    tracing::warn!(name = %name, error = %e, failures = n.status.consecutive_failures, retry_in = ?wait, seconds_left = ?left, "certificate order failed; keeping the stored certificate");
                }
                false
            }
        }
    }
}

/// Asks the main thread to reload, as `POST /reload` does: the reload reads certificate files again.
fn request_reload() {
    if let Err(e) = signal_hook::low_level::raise(signal_hook::consts::SIGHUP) {
        tracing::warn!(error = %e, "new certificate stored but the reload could not be signalled");
    }
}

fn run(to_control: Link<ToControl>, first: Arc<Snapshot>, rx: Receiver<Msg>) {
    let mut st = State::new(first.config.acme.clone(), None);
    st.report(&to_control);
    loop {
        let (changed, written) = st.work();
        if changed {
            st.report(&to_control);
        }
        if written {
            request_reload();
        }
        let wait = st.next_due().map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Msg::Snapshot(s)) => {
                st = State::new(s.config.acme.clone(), Some(st));
                st.report(&to_control);
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn plan_orders_when_missing_or_due() {
        let hour = Duration::from_secs(3600);
        assert_eq!(plan(None, 1000, 30 * DAY, hour), Plan::Order);
        // 90 days left, renew at 30: look again in an hour.
        let now = 1_000_000_000;
        let na = now + 90 * 86_400;
        assert_eq!(plan(Some(na), now, 30 * DAY, hour), Plan::Wait(hour));
        // 30 days and 10 s left: wake exactly when renewal is due.
        let na = now + 30 * 86_400 + 10;
        assert_eq!(
            plan(Some(na), now, 30 * DAY, hour),
            Plan::Wait(Duration::from_secs(10))
        );
        assert_eq!(plan(Some(now + 86_400), now, 30 * DAY, hour), Plan::Order);
        assert_eq!(plan(Some(now - 1), now, 30 * DAY, hour), Plan::Order);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let max = Duration::from_secs(300);
        let mut b = Duration::from_secs(60);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(b.as_secs());
            b = next_backoff(b, max);
        }
        assert_eq!(seen, [60, 120, 240, 300]);
    }
}
