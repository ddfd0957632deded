//! Accepting: one loop per listening socket of the worker, each connection spawned as its own task
//! on the worker's runtime and served by its driver (HTTP/1.1, over TLS where the listener terminates
//! it) until it closes or parks; and one loop that hands parked connections back to their driver
//! when they become readable (`conn::park`).

use super::h1;
use crate::worker::Worker;
use std::rc::Rc;
use std::time::Duration;

/// Serves `listeners` on the current worker (`worker::Serve`).
pub fn start(w: &Rc<Worker>, listeners: Vec<std::net::TcpListener>) {
    // Sockets come in listener order (`listener::bind_all`), so the position names the listener;
    // config validation keeps their count within u16.
    for (index, l) in listeners.into_iter().enumerate() {
        match monoio::net::TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(w.clone(), l, index as u16));
            }
            Err(e) => tracing::error!(worker = w.id, error = %e, "cannot use listener"),
        }
    }
    monoio::spawn(resume_loop(w.clone()));
}

async fn resume_loop(w: Rc<Worker>) {
    let mut ready = Vec::new();
    loop {
        let watching = monoio::select! {
            r = w.parking.take_ready(&mut ready) => r,
            _ = w.stopped() => false,
        };
        for entry in ready.drain(..) {
            if entry.session.is_some() {
                monoio::spawn(super::tls::resume(w.clone(), entry));
            } else {
                monoio::spawn(h1::resume(w.clone(), entry));
            }
        }
        if !watching {
            // Draining, or nothing can report readiness: what is parked would only wait for its
            // deadline, so it closes now.
            w.parking.close_all();
            return;
        }
    }
}

async fn accept_loop(w: Rc<Worker>, listener: monoio::net::TcpListener, index: u16) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = w.stopped() => None,
        };
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                // Inherited from the listener on Linux (see `listener`); elsewhere set it here.
                #[cfg(not(target_os = "linux"))]
                let _ = stream.set_nodelay(true);
                w.count_accept();
                // The generation current at accept decides: a reload that adds TLS to a listener
                // applies to connections accepted after it.
                match w.snapshot().tls(usize::from(index)) {
                    Some(cfg) => {
                        monoio::spawn(super::tls::serve(
                            w.clone(),
                            stream,
                            peer,
                            index,
                            cfg.clone(),
                        ));
                    }
                    None => {
                        monoio::spawn(h1::serve(w.clone(), stream, peer, index));
                    }
                }
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = w.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
