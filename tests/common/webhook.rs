//! A webhook receiver for alert, signal and billing tests: records each POST (head and JSON body), and
//! can fail the first N tries (close without answering, or answer a status) to exercise sluice's retries.

use super::IO_TIMEOUT;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A webhook receiver: records each POST (head and body); fails the tries its script names.
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections that delivered a request (dropped ones included).
    pub tries: Arc<AtomicUsize>,
    bodies: crossbeam_channel::Receiver<(String, String)>,
    seen: Vec<Value>,
    /// Every try, failed ones included: (head, body), in arrival order.
    all: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Heads of the acknowledged posts, in the order of `seen`.
    heads: Vec<String>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1:0; the first `fail_first` tries are closed without an answer.
    pub fn start(fail_first: usize) -> WebhookReceiver {
        Self::start_failing(fail_first, None)
    }

    /// Starts on 127.0.0.1:0; the first `fail_first` tries get `status` (or, with None, a close).
    pub fn start_failing(fail_first: usize, status: Option<u16>) -> WebhookReceiver {
        Self::start_script(vec![status; fail_first])
    }

    /// Starts on 127.0.0.1:0; try i (0-based) fails as `failures[i]` says (a status, or None: closed
    /// without an answer); every try past the script is acknowledged with 200.
    pub fn start_script(failures: Vec<Option<u16>>) -> WebhookReceiver {
        let all = Arc::new(std::sync::Mutex::new(Vec::new()));
        let all2 = all.clone();
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
                let Some((head, body)) = read_post(&mut s) else {
                    continue;
                };
                if let Ok(mut a) = all2.lock() {
                    a.push((head.clone(), body.clone()));
                }
                if let Some(fail) = failures.get(t2.fetch_add(1, Ordering::SeqCst)) {
                    if let Some(code) = fail {
                        let _ = s.write_all(
                            format!("HTTP/1.1 {code} Failing\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        );
                    }
                    continue; // dropped: closed without a response, or a failure status
                }
                let _ = tx.send((head, body));
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
            all,
            heads: Vec::new(),
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
        while let Ok((h, b)) = self.bodies.try_recv() {
            self.seen
                .push(serde_json::from_str(&b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}")));
            self.heads.push(h);
        }
        &self.seen
    }

    /// The acknowledged posts so far: (lowercased head, body as sent).
    pub fn acknowledged(&mut self) -> Vec<(String, Value)> {
        self.events();
        self.heads
            .iter()
            .cloned()
            .zip(self.seen.iter().cloned())
            .collect()
    }

    /// Every try so far, failed ones included: (lowercased head, body bytes as sent).
    pub fn tries_seen(&self) -> Vec<(String, String)> {
        self.all.lock().map(|a| a.clone()).unwrap_or_default()
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

/// Reads one request with a Content-Length body; returns the lowercased head and the body.
fn read_post(s: &mut TcpStream) -> Option<(String, String)> {
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
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            return Some((head, body));
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}
