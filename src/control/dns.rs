//! DNS re-resolution of endpoint names on a thread of its own, since resolution blocks. Each name is
//! re-resolved when its records' TTL runs out (clamped to `[dns] min_ttl..=max_ttl`); a changed address
//! set for an upstream is sent to the workers like a health change. A failed lookup keeps the last answer.

use super::Broadcast;
use crate::msg::ToWorker;
use crate::snapshot::Snapshot;
use crate::upstream::EndpointAddr;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

enum Msg {
    Snapshot(Arc<Snapshot>),
    Stop,
}

/// Handle to the DNS thread.
pub struct DnsHandle(Sender<Msg>);

impl DnsHandle {
    /// Switches to a new snapshot.
    pub fn update(&self, s: Arc<Snapshot>) {
        let _ = self.0.send(Msg::Snapshot(s));
    }
    /// Stops the thread.
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// Starts the DNS thread.
pub fn spawn(workers: Broadcast, first: Arc<Snapshot>) -> io::Result<DnsHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("sluice-dns".into())
        .spawn(move || run(workers, first, rx))?;
    Ok(DnsHandle(tx))
}

/// What is known about one name.
struct Name {
    addrs: Vec<SocketAddr>,
    due: Instant,
}

struct State {
    snap: Arc<Snapshot>,
    names: HashMap<(String, u16), Name>,
    sent: Vec<Vec<EndpointAddr>>,
}

impl State {
    fn new(snap: Arc<Snapshot>) -> State {
        let mut names = HashMap::new();
        let first_due = Instant::now() + snap.config.dns.min_ttl;
        for u in &snap.config.upstreams {
            for e in u.endpoints.iter().filter(|e| e.literal.is_none()) {
                // The load already resolved these; look again after min_ttl to learn the real TTL.
                names.entry((e.host.clone(), e.port)).or_insert(Name {
                    addrs: Vec::new(),
                    due: first_due,
                });
            }
        }
        let sent = snap.upstreams.iter().map(|u| u.endpoints.clone()).collect();
        State { snap, names, sent }
    }

    fn next_due(&self) -> Option<Instant> {
        self.names.values().map(|n| n.due).min()
    }

    fn refresh_due(&mut self, workers: &Broadcast) {
        let now = Instant::now();
        let dns = self.snap.config.dns.clone();
        let mut changed = false;
        for ((host, port), name) in self.names.iter_mut().filter(|(_, n)| n.due <= now) {
            match crate::dns::resolve(host, *port, &dns) {
                Ok(answer) => {
                    name.due = now + answer.ttl;
                    if answer.addrs != name.addrs {
                        name.addrs = answer.addrs;
                        changed = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %host, error = %e, "re-resolution failed; keeping previous addresses");
                    name.due = now + dns.min_ttl.max(Duration::from_secs(1));
                }
            }
        }
        if changed {
            self.broadcast(workers);
        }
    }

    fn broadcast(&mut self, workers: &Broadcast) {
        let generation = self.snap.generation;
        for (ui, u) in self.snap.config.upstreams.iter().enumerate() {
            if u.endpoints.iter().all(|e| e.literal.is_some()) {
                continue;
            }
            let mut list: Vec<EndpointAddr> = Vec::new();
            let mut complete = true;
            for (entry, e) in u.endpoints.iter().enumerate() {
                let addrs = match e.literal {
                    Some(a) => vec![a],
                    None => match self.names.get(&(e.host.clone(), e.port)) {
                        Some(n) if !n.addrs.is_empty() => n.addrs.clone(),
                        _ => {
                            complete = false;
                            continue;
                        }
                    },
                };
                for addr in addrs {
                    if !list.iter().any(|x| x.addr == addr) {
                        list.push(EndpointAddr {
                            addr,
                            weight: e.weight,
                            entry: entry as u32,
                        });
                    }
                }
            }
            if !complete || list.is_empty() || list == self.sent[ui] {
                continue;
            }
            tracing::info!(upstream = %u.name, endpoints = ?list.iter().map(|e| e.addr).collect::<Vec<_>>(), "endpoint addresses changed");
            self.sent[ui] = list.clone();
            workers.send(|| ToWorker::Endpoints {
                generation,
                upstream: ui,
                list: list.clone(),
            });
        }
    }
}

fn run(workers: Broadcast, first: Arc<Snapshot>, rx: Receiver<Msg>) {
    let mut st = State::new(first);
    loop {
        let wait = st.next_due().map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Msg::Snapshot(s)) => st = State::new(s),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => st.refresh_due(&workers),
        }
    }
}
