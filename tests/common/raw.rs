//! A scripted raw TCP origin, for what a well-behaved `Backend` never sends: malformed status lines,
//! heads dripped a byte at a time, bytes written unsolicited on an idle keep-alive connection.
//!
//! Each accepted connection runs the test's script on its own thread against a `RawConn`, which reads
//! request heads, writes exact bytes (at once or dripped), pauses, and holds the connection open to see
//! whether the peer (sluice) closes it. Every wait polls a stop flag: dropping the `RawBackend` stops
//! and joins every thread within a few tens of milliseconds, and no connection lives past 60 s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often a blocked read looks at the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// No scripted connection outlives this.
const MAX_LIFE: Duration = Duration::from_secs(60);
const MAX_HEAD: usize = 1024 * 1024;

type Script = Box<dyn Fn(&mut RawConn) + Send + Sync>;

struct Inner {
    script: Script,
    stop: AtomicBool,
    connections: AtomicUsize,
    /// (connection id, when the peer's close was seen).
    closed: Mutex<Vec<(usize, Instant)>>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

/// A raw TCP origin on 127.0.0.1:0 running a script per connection.
pub struct RawBackend {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<thread::JoinHandle<()>>,
}

/// What `RawConn::read_head` got.
#[derive(Debug)]
pub enum HeadRead {
    /// One request head, through its empty line.
    Head(Vec<u8>),
    /// The peer closed (or reset) the connection.
    Eof,
    /// Nothing complete within the wait (or the backend is stopping).
    Idle,
}

impl RawBackend {
    /// Runs `script` for every accepted connection, each on its own thread.
    pub fn start(script: impl Fn(&mut RawConn) + Send + Sync + 'static) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw backend");
        let addr = listener.local_addr().expect("raw backend addr");
        let inner = Arc::new(Inner {
            script: Box::new(script),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            closed: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let inner2 = inner.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if inner2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let id = inner2.connections.fetch_add(1, Ordering::SeqCst);
                let inner3 = inner2.clone();
                let t = thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(POLL));
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.set_nodelay(true);
                    let mut conn = RawConn {
                        id,
                        stream,
                        buf: Vec::new(),
                        born: Instant::now(),
                        inner: &inner3,
                    };
                    (inner3.script)(&mut conn);
                });
                inner2.threads.lock().unwrap().push(t);
            }
        });
        RawBackend {
            addr,
            inner,
            accept: Some(accept),
        }
    }

    /// Every connection: reads one request head, writes `bytes`, then holds the connection open
    /// until the peer closes it (recorded, see `peer_closed`).
    pub fn reply_once(bytes: &[u8]) -> RawBackend {
        let bytes = bytes.to_vec();
        Self::start(move |c| {
            if let HeadRead::Head(_) = c.read_head(Duration::from_secs(10)) {
                if c.write(&bytes) {
                    c.hold();
                }
            }
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }
    /// When the peer's close of connection `id` (0-based, in accept order) was seen, if it was:
    /// only while the script was reading or holding it.
    pub fn peer_closed(&self, id: usize) -> Option<Instant> {
        self.inner
            .closed
            .lock()
            .unwrap()
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, at)| *at)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// One accepted connection, as a script sees it.
pub struct RawConn<'a> {
    /// 0-based, in accept order.
    pub id: usize,
    pub stream: TcpStream,
    buf: Vec<u8>,
    born: Instant,
    inner: &'a Inner,
}

impl RawConn<'_> {
    /// Whether the script should give up: the backend is dropping, or the connection is 60 s old.
    pub fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst) || self.born.elapsed() > MAX_LIFE
    }

    fn note_closed(&self) {
        self.inner
            .closed
            .lock()
            .unwrap()
            .push((self.id, Instant::now()));
    }

    /// One read into the buffer: Some(true) data, Some(false) peer closed, None nothing yet.
    fn read_once(&mut self) -> Option<bool> {
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.note_closed();
                Some(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Some(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(_) => {
                self.note_closed();
                Some(false)
            }
        }
    }

    /// Reads one request head (requests without a body), waiting at most `wait`.
    pub fn read_head(&mut self, wait: Duration) -> HeadRead {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return HeadRead::Head(self.buf.drain(..i + 4).collect());
            }
            if self.stopping() || Instant::now() >= deadline || self.buf.len() > MAX_HEAD {
                return HeadRead::Idle;
            }
            if self.read_once() == Some(false) {
                return HeadRead::Eof;
            }
        }
    }

    /// Writes all of `bytes`; false if the peer is gone (a failed write counts as its close).
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        let ok = self.stream.write_all(bytes).is_ok();
        if !ok {
            self.note_closed();
        }
        ok
    }

    /// Writes `bytes` one at a time, `every` apart (the first one at once); false if the peer went
    /// away or the backend is stopping.
    pub fn drip(&mut self, bytes: &[u8], every: Duration) -> bool {
        for (i, b) in bytes.iter().enumerate() {
            if (i > 0 && !self.pause(every)) || !self.write(&[*b]) {
                return false;
            }
        }
        true
    }

    /// Waits `d` (a deliberate pause in the script); false if the backend is stopping.
    pub fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopping() {
                return false;
            }
            thread::sleep(until.saturating_duration_since(Instant::now()).min(POLL));
        }
        true
    }

    /// Keeps the connection open, buffering whatever arrives, until the peer closes it (true) or the
    /// backend stops (false).
    pub fn hold(&mut self) -> bool {
        while !self.stopping() {
            if self.read_once() == Some(false) {
                return true;
            }
        }
        false
    }
}

/// The request target of a request head (`GET /x HTTP/1.1` → `/x`).
pub fn request_path(head: &[u8]) -> String {
    let line = head.split(|b| *b == b'\r').next().unwrap_or(b"");
    let text = String::from_utf8_lossy(line);
    text.split(' ').nth(1).unwrap_or("").to_owned()
}
