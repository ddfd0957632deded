//! In-process HTTP/1.1 origin servers for the tests (std threads, port 0).
//!
//! A backend decodes Content-Length and chunked request bodies, honours
//! keep-alive, records every request it completes, counts connections and
//! bytes, and answers through a handler closure. `/healthz` is answered from
//! a toggle and never recorded as a request. Dropping a `Backend` stops its
//! accept thread; connection threads notice within 100 ms and close.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{eventually, sha256_hex};

/// Path answered from the health toggle (200 "ok" / 503), not recorded.
pub const HEALTH_PATH: &str = "/healthz";
const MAX_HEAD: usize = 1024 * 1024;
const POLL: Duration = Duration::from_millis(100);

/// A request as the backend received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path + query).
    pub path: String,
    /// Minor version: 0 or 1.
    pub version: u8,
    /// Header names as sent; values lossily decoded.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// The request head exactly as received (request line + headers + CRLF).
    pub raw_head: Vec<u8>,
    /// Which accepted connection (0-based, in accept order) carried it.
    pub conn_id: usize,
    pub peer: SocketAddr,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_head).into_owned()
    }
}

/// How the backend answers.
#[derive(Clone, Debug)]
pub enum ReplyBody {
    /// Content-Length framed (none for HEAD/204/304/1xx).
    Full(Vec<u8>),
    /// `Transfer-Encoding: chunked`, one chunk per element.
    Chunked(Vec<Vec<u8>>),
    /// No length: the body ends when the backend closes.
    CloseDelimited(Vec<u8>),
    /// RST right after reading the request, no byte of response.
    ResetBeforeHead,
    /// Head with `Content-Length: declared`, then `sent` bytes, then RST.
    ResetMidBody { declared: usize, sent: usize },
    /// Head with `Content-Length: declared`, then `sent` bytes, then silence
    /// (connection held open until the peer closes or the backend drops).
    StallMidBody { declared: usize, sent: usize },
    /// Keep the connection open and never write (until the peer closes or the backend drops).
    NeverAnswer,
    /// These exact bytes, then close.
    Raw(Vec<u8>),
    /// Head with Content-Length, then the body in `pieces` writes `pause` apart (keep-alive).
    Trickled {
        body: Vec<u8>,
        pieces: usize,
        pause: Duration,
    },
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    /// Sleep this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Full(body.into()),
            delay: Duration::ZERO,
        }
    }
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, body)
    }
    /// A status with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::new(status, Vec::new())
    }
    pub fn chunked(chunks: &[&[u8]]) -> Reply {
        Reply {
            body: ReplyBody::Chunked(chunks.iter().map(|c| c.to_vec()).collect()),
            ..Reply::status(200)
        }
    }
    pub fn close_delimited(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            body: ReplyBody::CloseDelimited(body.into()),
            ..Reply::status(200)
        }
    }
    pub fn reset_before_head() -> Reply {
        Reply {
            body: ReplyBody::ResetBeforeHead,
            ..Reply::status(200)
        }
    }
    pub fn reset_mid_body(declared: usize, sent: usize) -> Reply {
        Reply {
            body: ReplyBody::ResetMidBody { declared, sent },
            ..Reply::status(200)
        }
    }
    pub fn stall_mid_body(declared: usize, sent: usize) -> Reply {
        Reply {
            body: ReplyBody::StallMidBody { declared, sent },
            ..Reply::status(200)
        }
    }
    pub fn never() -> Reply {
        Reply {
            body: ReplyBody::NeverAnswer,
            ..Reply::status(200)
        }
    }
    /// A Content-Length response whose body is written in `pieces` parts, `pause` apart.
    pub fn trickled(body: impl Into<Vec<u8>>, pieces: usize, pause: Duration) -> Reply {
        Reply {
            body: ReplyBody::Trickled {
                body: body.into(),
                pieces: pieces.max(1),
                pause,
            },
            ..Reply::status(200)
        }
    }
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            body: ReplyBody::Raw(bytes.into()),
            ..Reply::status(200)
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type Handler = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

struct Inner {
    handler: Handler,
    stream_echo: bool,
    requests: Mutex<Vec<Request>>,
    connections: AtomicUsize,
    closed_by_peer: AtomicUsize,
    bytes_received: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    healthy: AtomicBool,
    health_checks: AtomicUsize,
    bad_requests: AtomicUsize,
    stop: AtomicBool,
}

/// A threaded HTTP/1.1 origin on 127.0.0.1:0.
pub struct Backend {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Backend {
    /// A backend answering every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Backend {
        Self::spawn(Box::new(handler), false)
    }

    /// 200 with `body` for every request.
    pub fn fixed(body: &str) -> Backend {
        let body = body.to_owned();
        Self::start(move |_| Reply::ok(body.clone()))
    }

    /// Streaming echo: the response head goes out at once and each body
    /// piece is written back as it arrives (same length, or chunked if the
    /// request was chunked). Needs a client that reads while it writes.
    pub fn echo() -> Backend {
        Self::spawn(Box::new(|_| Reply::status(500)), true)
    }

    /// 200 whose body is the hex sha256 of the request body; `x-body-len` header.
    pub fn sha256() -> Backend {
        Self::start(|r| {
            Reply::ok(sha256_hex(&r.body)).header("x-body-len", &r.body.len().to_string())
        })
    }

    /// 200 `body` after `delay`.
    pub fn slow(delay: Duration, body: &str) -> Backend {
        let body = body.to_owned();
        Self::start(move |_| Reply::ok(body.clone()).delay(delay))
    }

    /// Reads requests and never answers them.
    pub fn never_answer() -> Backend {
        Self::start(|_| Reply::never())
    }

    fn spawn(handler: Handler, stream_echo: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let inner = Arc::new(Inner {
            handler,
            stream_echo,
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            closed_by_peer: AtomicUsize::new(0),
            bytes_received: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            health_checks: AtomicUsize::new(0),
            bad_requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let inner2 = inner.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if inner2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn_id = inner2.connections.fetch_add(1, Ordering::SeqCst);
                let inner3 = inner2.clone();
                thread::spawn(move || serve(&inner3, stream, conn_id));
            }
        });
        Backend {
            addr,
            inner,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every request completed so far (health checks excluded).
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().unwrap().clone()
    }
    pub fn request_count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }
    /// The most recent request; panics if none.
    pub fn last_request(&self) -> Request {
        self.inner
            .requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw no request")
    }
    /// Waits up to `timeout` for at least `n` recorded requests.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        eventually(timeout, || self.request_count() >= n)
    }
    /// Connections accepted so far (health-check connections included).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }
    /// Connections the peer (sluice) closed while idle between requests.
    pub fn closed_by_peer(&self) -> usize {
        self.inner.closed_by_peer.load(Ordering::SeqCst)
    }
    /// Bytes received on all connections so far.
    pub fn bytes_received(&self) -> usize {
        self.inner.bytes_received.load(Ordering::SeqCst)
    }
    /// Requests whose head arrived and whose reply is not finished.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }
    /// Heads the backend itself could not parse (answered 400).
    pub fn bad_requests(&self) -> usize {
        self.inner.bad_requests.load(Ordering::SeqCst)
    }
    /// What `/healthz` answers: 200 when true, 503 when false.
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, Ordering::SeqCst);
    }
    pub fn health_checks(&self) -> usize {
        self.inner.health_checks.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// An address with nothing listening on it (connect gets refused).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

// ------------------------------------------------------------- connection

struct Reader<'a> {
    stream: &'a TcpStream,
    inner: &'a Inner,
    buf: Vec<u8>,
}

impl Reader<'_> {
    /// Reads more bytes into `buf`; 0 on EOF or when the backend is stopping.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        loop {
            if self.inner.stop.load(Ordering::SeqCst) {
                return Ok(0);
            }
            match (&*self.stream).read(&mut tmp) {
                Ok(n) => {
                    self.inner.bytes_received.fetch_add(n, Ordering::SeqCst);
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn eof_err() -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed")
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(Self::eof_err());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Up to `max` bytes, at least one.
    fn take_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if self.buf.is_empty() && self.fill()? == 0 {
            return Err(Self::eof_err());
        }
        let k = max.min(self.buf.len());
        Ok(self.buf.drain(..k).collect())
    }

    /// A CRLF-terminated line without the CRLF; `None` if a bare LF ends it.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if i == 0 || line[i - 1] != b'\r' {
                    return Ok(None);
                }
                return Ok(Some(line[..i - 1].to_vec()));
            }
            if self.buf.len() > MAX_HEAD {
                return Ok(None);
            }
            if self.fill()? == 0 {
                return Err(Self::eof_err());
            }
        }
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// Decrements in_flight when a request's exchange ends, however it ends.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(inner: &Inner, stream: TcpStream, conn_id: usize) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut rd = Reader {
        stream: &stream,
        inner,
        buf: Vec::new(),
    };
    loop {
        match serve_one(inner, &mut rd, conn_id, peer) {
            Ok(true) => continue,
            Ok(false) | Err(_) => return,
        }
    }
}

/// Serves one request; Ok(true) to keep the connection.
fn serve_one(
    inner: &Inner,
    rd: &mut Reader<'_>,
    conn_id: usize,
    peer: SocketAddr,
) -> io::Result<bool> {
    // Head.
    let (head_len, method, path, version, headers) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&rd.buf) {
            Ok(httparse::Status::Complete(n)) => {
                break (
                    n,
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                    req.version.unwrap_or(1),
                    req.headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>(),
                );
            }
            Ok(httparse::Status::Partial) if rd.buf.len() <= MAX_HEAD => {
                if rd.fill()? == 0 {
                    if rd.buf.is_empty() && !inner.stop.load(Ordering::SeqCst) {
                        inner.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    }
                    return Ok(false);
                }
            }
            _ => return bad_request(inner, rd.stream),
        }
    };
    let raw_head: Vec<u8> = rd.buf.drain(..head_len).collect();
    let mut req = Request {
        method,
        path,
        version,
        headers,
        body: Vec::new(),
        chunked: false,
        raw_head,
        conn_id,
        peer,
    };

    // Framing (RFC 9112 §6.3).
    let te = req.header_all("transfer-encoding").join(",");
    let framing = if !te.trim().is_empty() {
        let codings: Vec<String> = te
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        if codings != ["chunked"] || req.has_header("content-length") {
            return bad_request(inner, rd.stream);
        }
        Framing::Chunked
    } else if let Some(cl) = req.header("content-length") {
        let cls = req.header_all("content-length");
        match cl.trim().parse::<usize>() {
            Ok(n) if cls.iter().all(|v| v == &cl) && cl.bytes().all(|b| b.is_ascii_digit()) => {
                Framing::Length(n)
            }
            _ => return bad_request(inner, rd.stream),
        }
    } else {
        Framing::None
    };
    req.chunked = matches!(framing, Framing::Chunked);
    let conn_tokens = req.header_all("connection").join(",").to_ascii_lowercase();
    let close = conn_tokens.split(',').any(|t| t.trim() == "close")
        || (req.version == 0 && !conn_tokens.split(',').any(|t| t.trim() == "keep-alive"));
    let has_body = match framing {
        Framing::None => false,
        Framing::Length(n) => n > 0,
        Framing::Chunked => true,
    };
    if has_body
        && req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        (&*rd.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }

    // Health checks: answered from the toggle, never recorded.
    if req.path.split('?').next() == Some(HEALTH_PATH) {
        read_body(rd, &framing, &mut |_| Ok(()))?;
        inner.health_checks.fetch_add(1, Ordering::SeqCst);
        let reply = if inner.healthy.load(Ordering::SeqCst) {
            Reply::ok("ok")
        } else {
            Reply::new(503, "down")
        };
        return write_reply(inner, rd.stream, &req.method, &reply, close);
    }

    let _in_flight = InFlight::enter(inner);

    if inner.stream_echo {
        return stream_echo(inner, rd, req, &framing, close);
    }

    let mut body = Vec::new();
    let ok = read_body(rd, &framing, &mut |piece| {
        body.extend_from_slice(piece);
        Ok(())
    })?;
    if !ok {
        return bad_request(inner, rd.stream);
    }
    req.body = body;
    inner.requests.lock().unwrap().push(req.clone());

    let reply = (inner.handler)(&req);
    let deadline = Instant::now() + reply.delay;
    while Instant::now() < deadline {
        if inner.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        thread::sleep(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10)),
        );
    }
    write_reply(inner, rd.stream, &req.method, &reply, close)
}

/// Reads a body, handing each decoded piece to `sink`. Ok(false) on bad chunked framing.
fn read_body(
    rd: &mut Reader<'_>,
    framing: &Framing,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    match *framing {
        Framing::None => Ok(true),
        Framing::Length(n) => {
            let mut left = n;
            while left > 0 {
                let piece = rd.take_some(left.min(256 * 1024))?;
                left -= piece.len();
                sink(&piece)?;
            }
            Ok(true)
        }
        Framing::Chunked => loop {
            let Some(line) = rd.line()? else {
                return Ok(false);
            };
            let size = line.split(|b| *b == b';').next().unwrap_or(b"");
            let Ok(size) = std::str::from_utf8(size) else {
                return Ok(false);
            };
            let size = size.trim_end_matches([' ', '\t']);
            if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(false);
            }
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return Ok(false);
            };
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    match rd.line()? {
                        None => return Ok(false),
                        Some(l) if l.is_empty() => return Ok(true),
                        Some(_) => {}
                    }
                }
            }
            let mut left = size;
            while left > 0 {
                let piece = rd.take_some(left.min(256 * 1024))?;
                left -= piece.len();
                sink(&piece)?;
            }
            if rd.take(2)? != b"\r\n" {
                return Ok(false);
            }
        },
    }
}

fn stream_echo(
    inner: &Inner,
    rd: &mut Reader<'_>,
    mut req: Request,
    framing: &Framing,
    close: bool,
) -> io::Result<bool> {
    let mut w = rd.stream;
    let conn = if close { "Connection: close\r\n" } else { "" };
    let mut body = Vec::new();
    match *framing {
        Framing::None => {
            w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{conn}\r\n").as_bytes())?;
        }
        Framing::Length(n) => {
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n{conn}\r\n").as_bytes(),
            )?;
            read_body(rd, framing, &mut |piece| {
                body.extend_from_slice(piece);
                w.write_all(piece)
            })?;
        }
        Framing::Chunked => {
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn}\r\n").as_bytes(),
            )?;
            let ok = read_body(rd, framing, &mut |piece| {
                body.extend_from_slice(piece);
                w.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                w.write_all(piece)?;
                w.write_all(b"\r\n")
            })?;
            if !ok {
                return Ok(false);
            }
            w.write_all(b"0\r\n\r\n")?;
        }
    }
    req.body = body;
    inner.requests.lock().unwrap().push(req);
    Ok(!close)
}

fn bad_request(inner: &Inner, stream: &TcpStream) -> io::Result<bool> {
    inner.bad_requests.fetch_add(1, Ordering::SeqCst);
    let _ = (&*stream)
        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Ok(false)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// Waits (≤1 s) until the kernel has sent everything queued, then closes with RST.
fn reset(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    eventually(Duration::from_secs(1), || {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one c_int to the pointer we pass.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
        rc != 0 || queued == 0
    });
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    // The caller returns and drops the stream: close with linger 0 sends RST.
}

/// Holds the connection, discarding input, until the peer closes or the
/// backend stops (≤60 s).
fn hold(inner: &Inner, stream: &TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rd = Reader {
        stream,
        inner,
        buf: Vec::new(),
    };
    while Instant::now() < deadline {
        match rd.fill() {
            Ok(0) | Err(_) => break,
            Ok(_) => rd.buf.clear(),
        }
    }
}

/// Writes `reply`; Ok(true) to keep the connection.
fn write_reply(
    inner: &Inner,
    stream: &TcpStream,
    method: &str,
    reply: &Reply,
    close: bool,
) -> io::Result<bool> {
    let mut w = stream;
    let is_head = method.eq_ignore_ascii_case("HEAD");
    let bodyless_status =
        (100..200).contains(&reply.status) || reply.status == 204 || reply.status == 304;
    let user_cl = reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &reply.body {
        ReplyBody::NeverAnswer => {
            hold(inner, stream);
            Ok(false)
        }
        ReplyBody::StallMidBody { declared, sent } => {
            head.push_str(&format!("Content-Length: {declared}\r\n\r\n"));
            w.write_all(head.as_bytes())?;
            w.write_all(&vec![b'x'; *sent])?;
            hold(inner, stream);
            Ok(false)
        }
        ReplyBody::ResetBeforeHead => {
            reset(stream);
            Ok(false)
        }
        ReplyBody::ResetMidBody { declared, sent } => {
            head.push_str(&format!("Content-Length: {declared}\r\n\r\n"));
            w.write_all(head.as_bytes())?;
            w.write_all(&vec![b'x'; *sent])?;
            w.flush()?;
            reset(stream);
            Ok(false)
        }
        ReplyBody::Trickled {
            body,
            pieces,
            pause,
        } => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            w.write_all(head.as_bytes())?;
            if !is_head && !bodyless_status {
                for part in body.chunks(body.len().div_ceil(*pieces).max(1)) {
                    thread::sleep(*pause);
                    w.write_all(part)?;
                }
            }
            Ok(!close)
        }
        ReplyBody::Raw(bytes) => {
            w.write_all(bytes)?;
            let _ = stream.shutdown(std::net::Shutdown::Write);
            Ok(false)
        }
        ReplyBody::CloseDelimited(body) => {
            head.push_str("Connection: close\r\n\r\n");
            w.write_all(head.as_bytes())?;
            if !is_head && !bodyless_status {
                w.write_all(body)?;
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            Ok(false)
        }
        ReplyBody::Full(body) => {
            if !user_cl
                && reply.status != 204
                && reply.status != 304
                && !(100..200).contains(&reply.status)
            {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            if close {
                head.push_str("Connection: close\r\n");
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            if !is_head && !bodyless_status {
                out.extend_from_slice(body);
            }
            w.write_all(&out)?;
            Ok(!close)
        }
        ReplyBody::Chunked(chunks) => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            if close {
                head.push_str("Connection: close\r\n");
            }
            head.push_str("\r\n");
            w.write_all(head.as_bytes())?;
            if !is_head && !bodyless_status {
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    w.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                    w.write_all(c)?;
                    w.write_all(b"\r\n")?;
                }
                w.write_all(b"0\r\n\r\n")?;
            }
            Ok(!close)
        }
    }
}
