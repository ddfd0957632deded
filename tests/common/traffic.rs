//! Steady background traffic for tests that watch live figures (the stats page, `sluice top`):
//! a few keep-alive clients cycle through paths until the `Traffic` is dropped. Several
//! connections, so SO_REUSEPORT spreads them over the workers. Every thread is joined on drop.

use super::client::Conn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Clients sending requests until dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    /// `clients` connections to `addr`, each cycling through `paths` with `pause` between requests
    /// (so a 2-core CI box keeps room for the thing under test). A failed connection is replaced.
    pub fn start(addr: SocketAddr, clients: usize, paths: &[&str], pause: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let paths: Arc<Vec<String>> = Arc::new(paths.iter().map(|p| p.to_string()).collect());
        let threads = (0..clients)
            .map(|c| {
                let (stop, sent, paths) = (stop.clone(), sent.clone(), paths.clone());
                thread::spawn(move || {
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut conn) = Conn::try_connect(addr) else {
                            thread::sleep(pause.max(Duration::from_millis(10)));
                            continue;
                        };
                        // A new connection every 200 requests: spreads load across workers over time.
                        for _ in 0..200 {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let path = &paths[i % paths.len()];
                            i += 1;
                            let req = super::build_request("GET", path, &[], b"");
                            if conn.try_send(&req).is_err() || conn.read_response().is_err() {
                                break;
                            }
                            sent.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(pause);
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            sent,
            threads,
        }
    }

    /// Responses received so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
