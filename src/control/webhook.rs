//! Webhook delivery for alerts and scaling signals: an HTTP/1.1 POST of a JSON body, retried with
//! exponential backoff. Runs as tasks on the control thread; a slow or dead receiver delays only its own
//! queue, never rule evaluation and never a worker (workers are on other threads and send nothing here).
//! Events of one queue go out in order, one at a time, so a receiver never sees "resolved" before the
//! "firing" it resolves.

use crate::config::monitoring::Webhook;
use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Tries per event.
pub const MAX_TRIES: u32 = 5;
/// Wait before the first retry; doubles after each failure (0.5 s, 1 s, 2 s, 4 s).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Bound of one try: resolve, connect, send and read the status line.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Events waiting behind a slow receiver; older ones are dropped (and counted) past this.
const MAX_QUEUED: usize = 16;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What identifies this instance to a receiver: the host name, else `pid-N`.
pub fn instance() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_proc = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_env
        .or_else(from_proc)
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// Outcome of the latest event of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryState {
    /// Nothing sent yet.
    #[default]
    Idle,
    /// Being sent or waiting to retry.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every try failed.
    Failed,
}

impl DeliveryState {
    /// Label for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Idle => "idle",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// Delivery status of a queue, as shown by `/alerts` and `/signals`.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The latest event's state.
    pub state: DeliveryState,
    /// Tries made for the latest event.
    pub attempts: u32,
    /// Why the latest try failed.
    pub last_error: Option<String>,
    /// When the state last changed (unix seconds).
    pub at: u64,
    /// Events delivered since start.
    pub delivered: u64,
    /// Events given up after every try, or dropped from a full queue.
    pub failed: u64,
}

/// One receiver's queue of JSON bodies.
pub struct Queue {
    hook: RefCell<Webhook>,
    pending: RefCell<VecDeque<String>>,
    busy: Cell<bool>,
    status: RefCell<Delivery>,
}

impl Queue {
    /// A queue posting to `hook`.
    pub fn new(hook: Webhook) -> Rc<Queue> {
        Rc::new(Queue {
            hook: RefCell::new(hook),
            pending: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            status: RefCell::new(Delivery::default()),
        })
    }

    /// Points the queue at a new URL (after a reload); events not yet sent go there.
    pub fn set_hook(&self, hook: &Webhook) {
        if *self.hook.borrow() != *hook {
            *self.hook.borrow_mut() = hook.clone();
        }
    }

    /// The URL events go to.
    pub fn url(&self) -> String {
        self.hook.borrow().url.clone()
    }

    /// The current delivery status.
    pub fn status(&self) -> Delivery {
        self.status.borrow().clone()
    }

    /// Queues `body` and starts the sender if it is not running. Must be called on a monoio runtime.
    pub fn push(self: &Rc<Self>, body: String) {
        {
            let mut q = self.pending.borrow_mut();
            if q.len() >= MAX_QUEUED {
                q.pop_front();
                self.status.borrow_mut().failed += 1;
                tracing::warn!(url = %self.hook.borrow().url, "webhook queue full; dropped the oldest event");
            }
            q.push_back(body);
        }
        if !self.busy.replace(true) {
            monoio::spawn(drain(self.clone()));
        }
    }
}

async fn drain(q: Rc<Queue>) {
    loop {
        let Some(body) = q.pending.borrow_mut().pop_front() else {
            break;
        };
        {
            let mut s = q.status.borrow_mut();
            s.state = DeliveryState::Pending;
            s.attempts = 0;
            s.last_error = None;
            s.at = unix_now();
        }
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_TRIES {
            let hook = q.hook.borrow().clone();
            let res = try_post(&hook, &[], body.as_bytes()).await;
            let retry = {
                let mut s = q.status.borrow_mut();
                s.attempts = attempt;
                s.at = unix_now();
                match res {
                    Ok(()) => {
                        s.state = DeliveryState::Delivered;
                        s.last_error = None;
                        s.delivered += 1;
                        false
                    }
                    Err(e) if attempt == MAX_TRIES => {
                        s.state = DeliveryState::Failed;
                        s.last_error = Some(e.to_string());
                        s.failed += 1;
                        tracing::warn!(url = %hook.url, error = %e, tries = attempt, "webhook delivery failed; giving up");
                        false
                    }
                    Err(e) => {
                        tracing::debug!(url = %hook.url, error = %e, attempt, "webhook try failed; retrying");
                        s.last_error = Some(e.to_string());
                        true
                    }
                }
            };
            if !retry {
                break;
            }
            monoio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    q.busy.set(false);
}

/// Resolves `host:port`: a literal address at once, a name on a short-lived thread so the control
/// thread's runtime keeps running while the resolver blocks.
async fn resolve(authority: &str) -> io::Result<SocketAddr> {
    if let Ok(a) = authority.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let name = authority.to_string();
    std::thread::Builder::new()
        .name("sluice-webhook-dns".into())
        .spawn(move || {
            let r = name
                .to_socket_addrs()
                .and_then(|mut it| it.next().ok_or_else(|| io::Error::other("no address")));
            let _ = tx.send(r);
        })?;
    loop {
        match rx.try_recv() {
            Ok(r) => return r,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                monoio::time::sleep(Duration::from_millis(20)).await
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return Err(io::Error::other("resolver thread failed"))
            }
        }
    }
}

/// The request bytes of one POST of a JSON body, with `headers` (name, value) after the fixed ones.
/// Header values come from sluice itself (signatures, ids), never from a client.
pub fn request(hook: &Webhook, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\nuser-agent: sluice/{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        hook.path,
        hook.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        debug_assert!(!value.contains(['\r', '\n']));
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// One try, bounded by `TRY_TIMEOUT`: Ok once the receiver answered 2xx. Shared by alert, signal and
/// billing deliveries, which each keep their own retry policy.
pub async fn try_post(hook: &Webhook, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
    match monoio::time::timeout(TRY_TIMEOUT, post(hook, headers, body)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

/// The status code of a response whose status line is complete in `buf`; None while incomplete.
pub fn status_code(buf: &[u8]) -> Option<io::Result<u16>> {
    let end = memchr::memchr(b'\n', buf)?;
    let line = &buf[..end];
    // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    let code = line
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u16>().ok());
    Some(code.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.x response")))
}

/// One try: connect, send, read the status line. Only a 2xx counts as delivered.
async fn post(hook: &Webhook, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
    let addr = resolve(&hook.authority).await?;
    let mut s = monoio::net::TcpStream::connect(addr).await?;
    let (res, _) = s.write_all(request(hook, headers, body)).await;
    res?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(code) = status_code(&buf) {
            let code = code?;
            return if (200..300).contains(&code) {
                Ok(())
            } else {
                Err(io::Error::other(format!("receiver answered {code}")))
            };
        }
        if buf.len() > 8192 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "status line too long",
            ));
        }
        let n = crate::io::read_more(&mut s, &mut buf, 1024).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(status_code(b"HTTP/1.1 20").is_none());
        assert_eq!(
            status_code(b"HTTP/1.1 204 No Content\r\n")
                .unwrap()
                .unwrap(),
            204
        );
        assert_eq!(status_code(b"HTTP/1.0 500 x\r\n").unwrap().unwrap(), 500);
        assert!(status_code(b"SSH-2.0\r\n").unwrap().is_err());
    }

    #[test]
    fn request_bytes() {
        let hook =
            crate::config::monitoring::parse_webhook("f", "k", "http://127.0.0.1:9/h?x=1").unwrap();
        let r = String::from_utf8(request(&hook, &[], b"{}")).unwrap();
        assert!(r.starts_with("POST /h?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"));
        assert!(r.ends_with("content-length: 2\r\nconnection: close\r\n\r\n{}"));
        let r = String::from_utf8(request(&hook, &[("idempotency-key", "b1")], b"{}")).unwrap();
        assert!(
            r.ends_with("content-length: 2\r\nidempotency-key: b1\r\nconnection: close\r\n\r\n{}")
        );
    }
}
