//! Accepting: one loop per listening socket of the worker, each connection spawned as its own task
//! on the worker's runtime and served by its driver (HTTP/1.1, over TLS where the listener terminates it) until it closes.

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
