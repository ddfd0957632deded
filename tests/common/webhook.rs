//! A webhook receiver for alert and signal tests: records each POST body (JSON), and can close the
//! first N connections without answering to exercise sluice's retries.

use super::IO_TIMEOUT;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A webhook receiver: records each POST body; closes the first `fail_first` connections without
/// answering.
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections that delivered a request (dropped ones included).
    pub tries: Arc<AtomicUsize>,
    bodies: crossbeam_channel::Receiver<String>,
    seen: Vec<Value>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1:0.
    pub fn start(fail_first: usize) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let tries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, bodies) = crossbeam_channel::unbounded();
        let (t2, s2) = (tries.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = stream else { continue };
                let Some(body) = read_post(&mut s) else {
                    continue;
                };
                if t2.fetch_add(1, Ordering::SeqCst) < fail_first {
                    continue; // dropped: closed without a response
                }
                let _ = tx.send(body);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        WebhookReceiver {
            addr,
            tries,
            bodies,
            seen: Vec::new(),
            stop,
            thread: Some(thread),
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every event received so far, in arrival order.
    pub fn events(&mut self) -> &[Value] {
        while let Ok(b) = self.bodies.try_recv() {
            self.seen
                .push(serde_json::from_str(&b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}")));
        }
        &self.seen
    }

    /// An event with this `alert` and `state` arrived.
    pub fn has(&mut self, alert: &str, state: &str) -> bool {
        self.events()
            .iter()
            .any(|e| e["alert"] == alert && e["state"] == state)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request with a Content-Length body; returns the body.
fn read_post(s: &mut TcpStream) -> Option<String> {
    s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("post "), "webhook must POST: {head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}
