//! The main thread after start-up: binds listeners, starts workers and the control thread, then waits
//! for signals. SIGHUP reloads the file (a bad file keeps the old config); SIGTERM/SIGINT drain.

use crate::config::{self, Config, ConfigError, Source};
use crate::control;
use crate::msg::{ToControl, ToWorker};
use crate::snapshot::Snapshot;
use crate::worker::{self, WorkerHandle, WorkerSpec};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::io;
use std::sync::Arc;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Binding, threads or signals failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The state database cannot be opened or read.
    #[error("{0}")]
    State(#[from] control::consumers::StoreError),
    /// The usage ledger cannot be opened or read.
    #[error("{0}")]
    Ledger(#[from] control::usage::LedgerError),
    /// The CPU plan does not fit the machine.
    #[error("{0}")]
    Cpus(String),
}

/// Chooses the CPU for each worker: `cpus` if set, else the process affinity mask in order.
pub fn plan_cpus(cfg: &Config) -> Result<Vec<Option<core_affinity::CoreId>>, ServerError> {
    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    let chosen: Vec<core_affinity::CoreId> = match &cfg.cpus {
        Some(list) => list
            .iter()
            .map(|&id| core_affinity::CoreId { id })
            .collect(),
        None => allowed.clone(),
    };
    if let Some(list) = &cfg.cpus {
        if let Some(bad) = list.iter().find(|id| !allowed.iter().any(|c| c.id == **id)) {
            return Err(ServerError::Cpus(format!(
                "cpus: CPU {bad} is not in this process's affinity mask {:?}",
                allowed.iter().map(|c| c.id).collect::<Vec<_>>()
            )));
        }
    }
    let n = cfg.workers.unwrap_or(chosen.len().max(1));
    Ok((0..n)
        .map(|i| {
            if chosen.is_empty() {
                None
            } else {
                Some(chosen[i % chosen.len()])
            }
        })
        .collect())
}

/// Runs until drained. Logging must already be initialised.
pub fn run(cfg: Config) -> Result<(), ServerError> {
    crate::panic::install_hook();
    let cfg = Arc::new(cfg);
    let mut generation = 1u64;
    let snapshot = Snapshot::build(cfg.clone(), generation)?;
    let cpus = plan_cpus(&cfg)?;
    // Read runtime consumers here, before any worker exists: each worker starts with its table, so a
    // stored key works from the first request; a damaged database stops the start, naming its path,
    // before any listener is bound.
    let store = match &cfg.state {
        Some(p) => {
            let s = control::consumers::ConsumerStore::open(p)?;
            tracing::info!(path = %p.display(), consumers = s.rows().count(), "state database open");
            Some(s)
        }
        None => None,
    };
    // The ledger's tables live in the same file; opened here too, so a damaged ledger stops the start.
    let ledger = match (&cfg.usage, &cfg.state) {
        (Some(u), Some(p)) => {
            let l = control::usage::Ledger::open(
                p,
                u.retention,
                u.minute_retention,
                control::webhook::unix_now(),
            )?;
            tracing::info!(path = %p.display(), "usage ledger open");
            Some(l)
        }
        _ => None,
    };
    let (addrs, sockets) = crate::listener::bind_all(&cfg.listeners, cpus.len())?;
    // Register signals before any worker runs, so an early SIGTERM drains instead of killing.
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])?;
    for (l, a) in cfg.listeners.iter().zip(&addrs) {
        tracing::info!(listener = %l.name, "listening on {a}");
    }
    let mut admin = match &cfg.admin {
        None => None,
        Some(a) => {
            let listener = std::net::TcpListener::bind(a.listen).map_err(|e| {
                io::Error::new(e.kind(), format!("admin: cannot bind {}: {e}", a.listen))
            })?;
            listener.set_nonblocking(true)?;
            tracing::info!("admin listening on {}", listener.local_addr()?);
            Some(control::AdminSetup {
                listener,
                token: a.token.clone(),
                log_counters: None,
            })
        }
    };
    let (control_link, control_inbox) = crate::link::pair()?;
    let (log_thread, mut sinks): (Option<crate::access_log::LogThread>, Vec<_>) =
        match &cfg.access_log {
            Some(a) => {
                let (t, s) = crate::access_log::start(a, cpus.len())?;
                (Some(t), s.into_iter().map(Some).collect())
            }
            None => (None, (0..cpus.len()).map(|_| None).collect::<Vec<_>>()),
        };
    let mut workers: Vec<WorkerHandle> = Vec::new();
    for (id, (cpu, listeners)) in cpus.iter().zip(sockets).enumerate() {
        workers.push(worker::spawn(
            WorkerSpec {
                id,
                workers: cpus.len(),
                cpu: *cpu,
                driver: cfg.driver,
                listeners,
                snapshot: snapshot.clone(),
                to_control: control_link.try_clone()?,
                log: sinks.get_mut(id).and_then(Option::take),
                consumers: store.as_ref().map(|s| s.table()),
            },
            crate::conn::start,
        )?);
    }
    if let (Some(a), Some(t)) = (admin.as_mut(), log_thread.as_ref()) {
        a.log_counters = Some(t.counters.clone());
    }
    let links = workers
        .iter()
        .map(|w| w.link.try_clone())
        .collect::<io::Result<Vec<_>>>()?;
    let control = control::spawn(
        control_link,
        control_inbox,
        links,
        Arc::new(snapshot),
        admin,
        store,
        ledger,
    )?;
    tracing::info!(workers = workers.len(), config = %cfg.source.label(), "sluice ready");

    let mut current = cfg;
    for sig in signals.forever() {
        match sig {
            SIGUSR1 => match &log_thread {
                Some(t) => t.reopen(),
                None => tracing::info!("SIGUSR1: no access log to reopen"),
            },
            SIGHUP => {
                if let Some(next) = reload(&current, generation + 1, &workers, &control) {
                    generation += 1;
                    current = next;
                }
            }
            _ => {
                let grace = current.shutdown_timeout;
                tracing::info!(grace = ?grace, "draining: no new connections; finishing requests in flight");
                for w in &workers {
                    w.link.send(ToWorker::Drain(grace));
                }
                break;
            }
        }
    }
    // Workers first: their last reports reach the control thread before it stops.
    for w in workers {
        let _ = w.join.join();
    }
    control.link.send(ToControl::Stop);
    let _ = control.join.join();
    if let Some(t) = log_thread {
        t.stop();
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// Loads, validates and compiles the file again; on success hands every worker its copy.
fn reload(
    current: &Arc<Config>,
    generation: u64,
    workers: &[WorkerHandle],
    control: &control::ControlHandle,
) -> Option<Arc<Config>> {
    let Source::File(path) = &current.source else {
        tracing::warn!("reload rejected: the running config did not come from a file");
        return None;
    };
    let started = std::time::Instant::now();
    let next = match config::load_file(path).and_then(|c| {
        let c = Arc::new(c);
        Snapshot::build(c.clone(), generation).map(|s| (c, s))
    }) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "reload rejected; keeping the running config");
            return None;
        }
    };
    let (cfg, snap) = next;
    let listeners_changed = cfg.listeners.len() != current.listeners.len()
        || cfg
            .listeners
            .iter()
            .zip(&current.listeners)
            .any(|(a, b)| a.addr != b.addr);
    if listeners_changed
        || cfg.workers != current.workers
        || cfg.cpus != current.cpus
        || cfg.driver != current.driver
        || cfg.usage.is_some() != current.usage.is_some()
    {
        tracing::warn!("listeners, workers, cpus, driver and adding or removing [usage] take effect on restart; the rest is applied now");
    }
    for w in workers {
        w.link.send(ToWorker::Snapshot(Box::new(snap.clone())));
    }
    control.link.send(ToControl::Snapshot(Arc::new(snap)));
    tracing::info!(generation, elapsed = ?started.elapsed(), routes = cfg.routes.len(), "config reloaded");
    Some(cfg)
}
