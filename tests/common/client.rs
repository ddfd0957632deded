//! Raw HTTP/1.1 client for the tests: writes exact bytes, reads exactly one
//! response at a time (Content-Length, chunked, or close-delimited), so
//! pipelined responses can be read in order. Never trusts a single `read()`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

const MAX_HEAD: usize = 256 * 1024;

/// One parsed response (or interim 1xx head, whose body is empty).
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    pub trailers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
}

/// How the response body was delimited on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// No body by rule (HEAD, 1xx, 204, 304).
    #[default]
    NoBody,
    Length(u64),
    Chunked,
    Close,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of header `name`.
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
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Whether the response said the connection will close.
    pub fn says_close(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.raw_head))?;
        let shown = self.body.len().min(2048);
        write!(f, "{}", String::from_utf8_lossy(&self.body[..shown]))?;
        if self.body.len() > shown {
            write!(f, "... ({} body bytes)", self.body.len())?;
        }
        Ok(())
    }
}

/// Builds a request. Adds `Host: localhost` unless a Host header is given, and
/// `Content-Length` when there is a body (or the method is POST/PUT) and no
/// framing header is given.
pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        out.extend_from_slice(b"Host: localhost\r\n");
    }
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !has("content-length")
        && !has("transfer-encoding")
        && (!body.is_empty() || method == "POST" || method == "PUT")
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Encodes `body` as chunks of `chunk` bytes plus the last chunk.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk.max(1) * 8 + 16);
    for piece in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A client connection with its own read buffer (bytes past one response stay for the next).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    total_read: u64,
}

impl Conn {
    /// Connects with IO timeouts; panics if the connection fails.
    pub fn connect(addr: SocketAddr) -> Conn {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            eof: false,
            total_read: 0,
        })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
    }

    /// Writes all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to sluice: {e}"));
    }

    /// Writes all of `bytes`, returning the error (the peer may have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `bytes` from another thread (so a large upload and the
    /// response can flow at the same time). Join to get the write result.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> thread::JoinHandle<io::Result<()>> {
        let mut w = self.stream.try_clone().expect("clone stream");
        thread::spawn(move || {
            for piece in bytes.chunks(64 * 1024) {
                w.write_all(piece)?;
            }
            Ok(())
        })
    }

    /// Sends a request and reads its response; panics on IO error.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(&build_request(method, path, headers, body));
        self.read_response_to(method)
            .unwrap_or_else(|e| panic!("{method} {path}: reading response: {e}"))
    }

    /// `GET path` with `headers`; panics on IO error.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, b"")
    }

    /// Reads one final response to a non-HEAD request (1xx heads are skipped).
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to("GET")
    }

    /// Reads one final response to a `method` request (1xx heads are skipped).
    pub fn read_response_to(&mut self, method: &str) -> io::Result<Response> {
        loop {
            let mut resp = self.read_head()?;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                continue;
            }
            self.read_body(&mut resp, method)?;
            return Ok(resp);
        }
    }

    /// Reads one response head (including interim 1xx), leaving the body unread.
    pub fn read_head(&mut self) -> io::Result<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 256];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let resp = Response {
                        version: parsed.version.unwrap_or(1),
                        status: parsed.code.unwrap_or(0),
                        reason: parsed.reason.unwrap_or("").to_owned(),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        raw_head: self.buf[..n].to_vec(),
                        ..Response::default()
                    };
                    self.buf.drain(..n);
                    return Ok(resp);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(invalid("response head too large"));
                    }
                    if self.fill()? == 0 {
                        return Err(if self.buf.is_empty() {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "connection closed before any response byte",
                            )
                        } else {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!(
                                    "connection closed mid-head: {:?}",
                                    String::from_utf8_lossy(&self.buf)
                                ),
                            )
                        });
                    }
                }
                Err(e) => {
                    return Err(invalid(&format!(
                        "bad response head ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf[..self.buf.len().min(512)])
                    )))
                }
            }
        }
    }

    /// Reads the body of `resp` (whose head was just read) per RFC 9112 §6.3.
    pub fn read_body(&mut self, resp: &mut Response, method: &str) -> io::Result<()> {
        let no_body = method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304;
        if no_body {
            resp.framing = Framing::NoBody;
            return Ok(());
        }
        let te = resp.header_all("transfer-encoding").join(",");
        if !te.trim().is_empty() {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                resp.framing = Framing::Chunked;
                return self.read_chunked(resp);
            }
            resp.framing = Framing::Close;
            resp.body = self.read_to_end()?;
            return Ok(());
        }
        let cls = resp.header_all("content-length");
        if let Some(cl) = cls.first() {
            if cls.iter().any(|v| v != cl) {
                return Err(invalid(&format!("differing Content-Length values {cls:?}")));
            }
            let n: u64 = cl
                .trim()
                .parse()
                .map_err(|_| invalid(&format!("bad Content-Length {cl:?}")))?;
            resp.framing = Framing::Length(n);
            resp.body = self.take(n as usize)?;
            return Ok(());
        }
        resp.framing = Framing::Close;
        resp.body = self.read_to_end()?;
        Ok(())
    }

    fn read_chunked(&mut self, resp: &mut Response) -> io::Result<()> {
        loop {
            let line = self.read_line()?;
            let size_str = line.split(|b| *b == b';').next().unwrap_or(b"");
            let size_str =
                std::str::from_utf8(size_str).map_err(|_| invalid("non-ascii chunk size"))?;
            let size = u64::from_str_radix(size_str.trim(), 16).map_err(|_| {
                invalid(&format!(
                    "bad chunk size line {:?}",
                    String::from_utf8_lossy(&line)
                ))
            })?;
            if size == 0 {
                loop {
                    let t = self.read_line()?;
                    if t.is_empty() {
                        return Ok(());
                    }
                    let t = String::from_utf8_lossy(&t).into_owned();
                    if let Some((k, v)) = t.split_once(':') {
                        resp.trailers
                            .push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
            }
            let data = self.take(size as usize)?;
            resp.body.extend_from_slice(&data);
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed mid chunked body",
                ));
            }
        }
    }

    /// Reads exactly `n` bytes.
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let k = n.min(self.buf.len());
        let mut out = Vec::with_capacity(n);
        out.extend(self.buf.drain(..k));
        while out.len() < n {
            let start = out.len();
            let want = (n - start).min(256 * 1024);
            out.resize(start + want, 0);
            let got = self.read_some(&mut out[start..])?;
            out.truncate(start + got);
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {} of {n} body bytes", out.len()),
                ));
            }
        }
        Ok(out)
    }

    /// Reads until EOF (close-delimited body).
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.buf);
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            let n = self.read_some(&mut tmp)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&tmp[..n]);
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.read_some(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_some(&mut self, into: &mut [u8]) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        loop {
            match self.stream.read(into) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.total_read += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes read from the socket so far (to tell "closed before any response
    /// byte", which a client may retry, from a broken response).
    pub fn total_read(&self) -> u64 {
        self.total_read
    }

    /// Whether the peer closes (EOF or reset) within `timeout` without
    /// sending anything more. Unread buffered bytes count as "not closed".
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if self.eof {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut tmp = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let r = self.stream.read(&mut tmp);
            let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
            match r {
                Ok(0) => {
                    self.eof = true;
                    return true;
                }
                Ok(n) => {
                    self.total_read += n as u64;
                    self.buf.extend_from_slice(&tmp[..n]);
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                // ECONNRESET and friends: closed.
                Err(_) => return true,
            }
        }
    }

    /// Bytes received but not consumed by a parsed response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Connects, writes `bytes` (ignoring write errors: sluice may close early)
/// and returns everything received until EOF or 3 s of silence.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    out
}

/// One `GET path` on a fresh connection; panics on IO error.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    Conn::connect(addr).get(path, headers)
}
