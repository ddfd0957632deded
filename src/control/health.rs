//! Active HTTP health checks: one probe loop per endpoint of every upstream that configures
//! `health_check`, over TLS (verified like the traffic: same names, roots and client certificate)
//! when the group has `tls`. Thresholds debounce flapping; each change of verdict is broadcast to
//! every worker. Verdicts survive a reload for endpoints that are still configured.

use super::Broadcast;
use crate::config::HealthCheck;
use crate::conn::wire::{WireRead, WireWrite};
use crate::http1::head::ResponseHead;
use crate::io::Timed;
use crate::msg::ToWorker;
use crate::snapshot::Snapshot;
use crate::tls::client::Connector;
use crate::upstream::client;
use crate::upstream::pool::UpConn;
use bytes::BytesMut;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Last verdict per (upstream name, endpoint): true = healthy.
#[derive(Default)]
pub struct HealthState(Rc<RefCell<HashMap<(String, SocketAddr), bool>>>);

/// Starts probe loops for `snap`; loops of older generations stop on their own.
pub fn start(
    snap: &Snapshot,
    workers: &Rc<Broadcast>,
    current: &Rc<Cell<u64>>,
    state: &mut HealthState,
) {
    let generation = snap.generation;
    for (ui, u) in snap.upstreams.iter().enumerate() {
        let Some(hc) = &u.cfg.health_check else {
            continue;
        };
        for e in &u.endpoints {
            let key = (u.cfg.name.clone(), e.addr);
            // Re-announce a known "down" so workers on the new snapshot do not route to it.
            if state.0.borrow().get(&key) == Some(&false) {
                let addr = e.addr;
                workers.send(|| ToWorker::Health {
                    generation,
                    upstream: ui,
                    addr,
                    healthy: false,
                });
            }
            let tls = u.tls.clone().map(|t| (t, e.entry));
            monoio::spawn(probe_loop(
                hc.clone(),
                tls,
                e.addr,
                ui,
                generation,
                key,
                workers.clone(),
                current.clone(),
                state.0.clone(),
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn probe_loop(
    hc: HealthCheck,
    tls: Option<(Connector, u32)>,
    addr: SocketAddr,
    upstream: usize,
    generation: u64,
    key: (String, SocketAddr),
    workers: Rc<Broadcast>,
    current: Rc<Cell<u64>>,
    state: Rc<RefCell<HashMap<(String, SocketAddr), bool>>>,
) {
    let mut healthy = state.borrow().get(&key).copied().unwrap_or(true);
    let mut streak = 0u32;
    loop {
        if current.get() != generation {
            return;
        }
        let ok = probe(&hc, tls.as_ref(), addr).await;
        if current.get() != generation {
            return;
        }
        if ok == healthy {
            streak = 0;
        } else {
            streak += 1;
            let need = if healthy {
                hc.unhealthy_threshold
            } else {
                hc.healthy_threshold
            };
            if streak >= need {
                healthy = ok;
                streak = 0;
                state.borrow_mut().insert(key.clone(), healthy);
                if healthy {
                    tracing::info!(upstream = %key.0, endpoint = %addr, "health check passed; endpoint up");
                } else {
                    tracing::warn!(upstream = %key.0, endpoint = %addr, "health check failed; endpoint down");
                }
                workers.send(|| ToWorker::Health {
                    generation,
                    upstream,
                    addr,
                    healthy,
                });
            }
        }
        monoio::time::sleep(hc.interval).await;
    }
}

/// One probe: GET path, success on 2xx/3xx within the timeout.
async fn probe(hc: &HealthCheck, tls: Option<&(Connector, u32)>, addr: SocketAddr) -> bool {
    monoio::time::timeout(hc.timeout, probe_inner(hc, tls, addr))
        .await
        .unwrap_or(false)
}

async fn probe_inner(hc: &HealthCheck, tls: Option<&(Connector, u32)>, addr: SocketAddr) -> bool {
    // The probe's own timeout bounds the connect and the handshake.
    let Ok(s) = client::dial(addr, hc.timeout).await else {
        return false;
    };
    let buf = BytesMut::with_capacity(4096);
    let mut up = match tls {
        None => UpConn::new(s, addr, buf),
        Some((t, entry)) => {
            match client::handshake(s, t, *entry, Instant::now() + hc.timeout).await {
                Ok((rd, wr)) => UpConn::tls(rd, wr, addr, 0, buf),
                Err(e) => {
                    tracing::debug!(upstream = %t.upstream, endpoint = %addr, error = %e, "health check TLS handshake failed");
                    return false;
                }
            }
        }
    };
    let host = hc.host.clone().unwrap_or_else(|| addr.to_string());
    let mut out = format!("GET {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: sluice-health-check\r\nconnection: close\r\n\r\n", hc.path).into_bytes();
    if up.wr.write_vec(&mut out).await.is_err() {
        return false;
    }
    let mut head = ResponseHead::default();
    loop {
        match head.parse(&mut up.buf, false, 64 * 1024) {
            Ok(Some(())) => return (200..400).contains(&head.status),
            Ok(None) => {}
            Err(_) => return false,
        }
        match up
            .rd
            .read_more_timeout(&mut up.buf, 4096, Duration::from_secs(3600))
            .await
        {
            Timed::Done(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}
