//! DNS re-resolution of endpoint names on a thread of its own, since the system resolver blocks.
//! Each upstream that names hosts is re-resolved every `dns.max_ttl` (bounded below by `dns.min_ttl`);
//! a changed address set is sent to the workers like a health change.

use super::Broadcast;
use crate::snapshot::Snapshot;
use crate::upstream::EndpointAddr;
use crate::worker::ToWorker;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Instant;

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

fn has_names(s: &Snapshot) -> bool {
    s.upstreams
        .iter()
        .any(|u| u.cfg.endpoints.iter().any(|e| e.literal.is_none()))
}

fn run(workers: Broadcast, mut snap: Arc<Snapshot>, rx: Receiver<Msg>) {
    let mut current: Vec<Vec<EndpointAddr>> =
        snap.upstreams.iter().map(|u| u.endpoints.clone()).collect();
    loop {
        let interval = snap.config.dns.max_ttl.max(snap.config.dns.min_ttl);
        let wait = if has_names(&snap) {
            interval
        } else {
            std::time::Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Snapshot(s)) => {
                current = s.upstreams.iter().map(|u| u.endpoints.clone()).collect();
                snap = s;
                continue;
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let started = Instant::now();
        for (ui, u) in snap.upstreams.iter().enumerate() {
            if u.cfg.endpoints.iter().all(|e| e.literal.is_some()) {
                continue;
            }
            let mut list = Vec::new();
            let mut failed = false;
            for e in &u.cfg.endpoints {
                match e.literal {
                    Some(addr) => list.push(EndpointAddr {
                        addr,
                        weight: e.weight,
                    }),
                    None => match (e.host.as_str(), e.port).to_socket_addrs() {
                        Ok(addrs) => {
                            for addr in addrs {
                                if !list.iter().any(|x: &EndpointAddr| x.addr == addr) {
                                    list.push(EndpointAddr {
                                        addr,
                                        weight: e.weight,
                                    });
                                }
                            }
                        }
                        Err(err) => {
                            // Keep serving the last good answer rather than emptying the group.
                            tracing::warn!(upstream = %u.cfg.name, host = %e.host, error = %err, "re-resolution failed; keeping previous addresses");
                            failed = true;
                        }
                    },
                }
            }
            if failed || list.is_empty() || list == current[ui] {
                continue;
            }
            tracing::info!(upstream = %u.cfg.name, endpoints = list.len(), "endpoint addresses changed");
            current[ui] = list.clone();
            let generation = snap.generation;
            workers.send(|| ToWorker::Endpoints {
                generation,
                upstream: ui,
                list: list.clone(),
            });
        }
        tracing::debug!(elapsed = ?started.elapsed(), "dns refresh done");
    }
}
