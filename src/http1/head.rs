//! Request and response heads: httparse over the read buffer, kept as the frozen bytes plus spans.
//! Accessors return slices of those bytes; nothing is copied. This is where smuggling is stopped:
//! every framing rule of RFC 9112 §6 that a proxy must enforce is checked here, before anything is forwarded.

use bytes::{Bytes, BytesMut};

/// httparse needs a fixed header array; `[http] max_headers` may not exceed it.
pub const MAX_HEADERS_CAP: usize = 256;

/// A byte range of the head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `s` within `buf`. httparse hands back slices of the buffer it parsed, except where
    /// it has nothing to point at: an absent or non-UTF-8 reason phrase is a static `""`. Only
    /// addresses are compared, so a slice from anywhere else becomes the empty span instead of an
    /// offset computed across two allocations (which wrapped, and panicked in `get` later).
    fn of(buf: &[u8], s: &[u8]) -> Span {
        let base = buf.as_ptr() as usize;
        let at = s.as_ptr() as usize;
        match at.checked_sub(base) {
            Some(start) if start <= buf.len() && s.len() <= buf.len() - start => Span {
                start: start as u32,
                end: (start + s.len()) as u32,
            },
            _ => {
                debug_assert!(s.is_empty(), "a non-empty slice outside the parsed buffer");
                Span::default()
            }
        }
    }

    /// The bytes this span covers.
    #[inline]
    pub fn get<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.start as usize..self.end as usize]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Headers the proxy treats specially; classified once at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// Forwarded as is.
    Other,
    /// Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Connection, or named by Connection.
    HopByHop,
    Host,
    ContentLength,
    XForwardedFor,
    /// X-Forwarded-Proto / X-Forwarded-Host: replaced, never trusted from clients.
    XForwardedOther,
    RequestId,
    Expect,
    /// W3C traceparent: replaced by sluice's own span.
    TraceParent,
    /// Authorization: forwarded unless it authenticated the request at the gateway.
    Authorization,
}

/// One header: spans into the head bytes.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    /// Classification.
    pub kind: HeaderKind,
}

/// Why a head was rejected. Cheap to build: no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Head larger than the limit (431), or a response head too large (502).
    #[error("header section too large")]
    TooLarge,
    /// More headers than the limit (431).
    #[error("too many headers")]
    TooManyHeaders,
    /// Request-target longer than the limit (414).
    #[error("request-target too long")]
    UriTooLong,
    /// Syntax error (400).
    #[error("malformed request head")]
    Syntax,
    /// A line ended in LF without CR.
    #[error("bare LF in head")]
    BareLf,
    /// Control character in a header value.
    #[error("invalid character in header value")]
    BadValue,
    /// Content-Length and Transfer-Encoding together.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// Bad or conflicting Content-Length.
    #[error("invalid Content-Length")]
    BadLength,
    /// Transfer-Encoding other than exactly "chunked".
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    /// HTTP/1.1 request without exactly one Host.
    #[error("missing or duplicate Host")]
    BadHost,
    /// A Host (or absolute-form authority) that is not `uri-host[:port]` (see `authority`).
    #[error("invalid Host")]
    InvalidHost,
    /// Version other than HTTP/1.0 and HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// CONNECT and other methods a reverse proxy does not serve (501).
    #[error("method not implemented")]
    MethodNotImplemented,
    /// A response status outside 100-599 (RFC 9112 §4: three digits; RFC 9110 §15: classes 1xx-5xx).
    #[error("status code outside 100-599")]
    BadStatus,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// Well-known methods, for the decisions the proxy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    /// Anything else (PATCH, custom tokens).
    Other,
}

impl Method {
    fn of(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// RFC 9110 §9.2.2: safe to retry.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// A parsed request head. Reused per connection: `headers` keeps its capacity.
#[derive(Debug, Default)]
pub struct RequestHead {
    bytes: Bytes,
    method: Span,
    /// The method as an enum.
    pub method_kind: Option<Method>,
    path: Span,
    query: Option<Span>,
    authority: Option<Span>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// All headers in order.
    pub headers: Vec<Header>,
    pub framing: Option<Framing>,
    /// The client wants the connection kept open.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    host: Option<Span>,
}

impl RequestHead {
    /// The head bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn method(&self) -> &[u8] {
        self.method.get(&self.bytes)
    }
    /// Method enum (Other for extension methods).
    pub fn method_kind(&self) -> Method {
        self.method_kind.unwrap_or(Method::Other)
    }
    /// Path without the query.
    pub fn path(&self) -> &[u8] {
        self.path.get(&self.bytes)
    }
    /// Query without '?'.
    pub fn query(&self) -> Option<&[u8]> {
        self.query.map(|q| q.get(&self.bytes))
    }
    /// Host: from an absolute-form target, else the Host header.
    pub fn host(&self) -> Option<&[u8]> {
        self.authority.or(self.host).map(|h| h.get(&self.bytes))
    }
    /// Body framing (None before a successful parse).
    pub fn body(&self) -> Framing {
        self.framing.unwrap_or(Framing::None)
    }
    /// Name and value of header `h`.
    #[inline]
    pub fn header(&self, h: &Header) -> (&[u8], &[u8]) {
        (h.name.get(&self.bytes), h.value.get(&self.bytes))
    }
    /// First value of a header (name in lowercase).
    pub fn get(&self, lower_name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.get(&self.bytes).eq_ignore_ascii_case(lower_name))
            .map(|h| h.value.get(&self.bytes))
    }

    /// Lets go of the head's bytes (keeping the header list's capacity); accessors return empty
    /// slices until the next `parse`. Call it once the request is answered, before the
    /// connection reads again: a head still held keeps the read buffer shared, and when that
    /// buffer runs out of room the next read must allocate a fresh one instead of reusing it.
    pub fn release(&mut self) {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        *self = RequestHead {
            headers,
            ..RequestHead::default()
        };
    }

    /// Parses a complete head at the front of `buf`. Ok(None) = need more bytes.
    /// On success the head is split off `buf` (zero-copy) and the rest stays for the body.
    pub fn parse(&mut self, buf: &mut BytesMut, limits: &Limits) -> Result<Option<()>, HeadError> {
        let len = match self.parse_spans(buf, limits)? {
            None => {
                if buf.len() > limits.max_header_bytes {
                    return Err(
                        if memchr::memchr(b'\n', buf).is_none() && buf.len() > limits.max_uri_bytes
                        {
                            HeadError::UriTooLong
                        } else {
                            HeadError::TooLarge
                        },
                    );
                }
                return Ok(None);
            }
            Some(n) => n,
        };
        self.bytes = buf.split_to(len).freeze();
        Ok(Some(()))
    }

    fn parse_spans(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, HeadError> {
        // Uninitialised storage: zeroing 256 headers per parse cost more than the parse itself.
        let mut storage =
            [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS_CAP];
        let cap = limits.max_headers.min(MAX_HEADERS_CAP);
        let mut req = httparse::Request::new(&mut []);
        let n = match req.parse_with_uninit_headers(buf, &mut storage[..cap]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
            Err(httparse::Error::Version) => return Err(version_error(buf)),
            Err(_) => {
                // httparse stops at the first bad byte; a missing line end may still be incomplete input.
                return Err(HeadError::Syntax);
            }
        };
        if n > limits.max_header_bytes {
            return Err(HeadError::TooLarge);
        }
        check_line_endings(&buf[..n])?;
        let method = req.method.ok_or(HeadError::Syntax)?;
        let target = req.path.ok_or(HeadError::Syntax)?;
        if target.len() > limits.max_uri_bytes {
            return Err(HeadError::UriTooLong);
        }
        self.minor = req.version.ok_or(HeadError::Syntax)?;
        self.method = Span::of(buf, method.as_bytes());
        let kind = Method::of(method.as_bytes());
        self.method_kind = Some(kind);
        if method == "CONNECT" {
            return Err(HeadError::MethodNotImplemented);
        }
        // RFC 9112 §3.2: origin-form, absolute-form, or "*" for OPTIONS.
        let t = target.as_bytes();
        self.authority = None;
        let path_bytes: &[u8] =
            if t.first() == Some(&b'/') || (t == b"*" && kind == Method::Options) {
                t
            } else if t.len() > 7
                && (t[..7].eq_ignore_ascii_case(b"http://")
                    || (t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://")))
            {
                let rest = &t[if t[4] == b':' { 7 } else { 8 }..];
                let slash = memchr::memchr(b'/', rest).unwrap_or(rest.len());
                let auth = &rest[..slash];
                if auth.is_empty() || auth.contains(&b'@') {
                    return Err(HeadError::Syntax);
                }
                self.authority = Some(Span::of(buf, auth));
                // "http://host" leaves an empty path; the router and the forwarder read it as "/".
                &rest[slash..]
            } else {
                return Err(HeadError::Syntax);
            };
        match memchr::memchr(b'?', path_bytes) {
            Some(q) => {
                self.path = Span::of(buf, &path_bytes[..q]);
                self.query = Some(Span::of(buf, &path_bytes[q + 1..]));
            }
            None => {
                self.path = Span::of(buf, path_bytes);
                self.query = None;
            }
        }

        self.headers.clear();
        self.host = None;
        self.expect_continue = false;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut te_seen = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut has_conn_tokens = false;
        let mut host_count = 0;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            let value = h.value;
            check_value(value)?;
            let kind = classify(name);
            match kind {
                HeaderKind::Host => {
                    host_count += 1;
                    self.host = Some(Span::of(buf, value));
                }
                HeaderKind::ContentLength => {
                    let v = parse_length(value)?;
                    if content_length.is_some_and(|c| c != v) {
                        return Err(HeadError::BadLength);
                    }
                    content_length = Some(v);
                }
                HeaderKind::HopByHop if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    if te_seen || !trim(value).eq_ignore_ascii_case(b"chunked") {
                        return Err(HeadError::BadTransferEncoding);
                    }
                    te_seen = true;
                    chunked = true;
                }
                HeaderKind::HopByHop if name.eq_ignore_ascii_case(b"connection") => {
                    for tok in value.split(|&b| b == b',') {
                        let tok = trim(tok);
                        if tok.eq_ignore_ascii_case(b"close") {
                            conn_close = true;
                        } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                            conn_keep_alive = true;
                        } else if !tok.is_empty() {
                            has_conn_tokens = true;
                        }
                    }
                }
                HeaderKind::Expect if trim(value).eq_ignore_ascii_case(b"100-continue") => {
                    self.expect_continue = true;
                }
                _ => {}
            }
            self.headers.push(Header {
                name: Span::of(buf, name),
                value: Span::of(buf, value),
                kind,
            });
        }
        if has_conn_tokens {
            mark_connection_named(&mut self.headers, buf);
        }
        if self.minor == 1 && host_count != 1 {
            return Err(HeadError::BadHost);
        }
        if host_count > 1 {
            return Err(HeadError::BadHost);
        }
        // RFC 9112 §3.2: a Host whose value is not a valid authority gets 400. Checked whichever of
        // the two names the host, so the header cannot smuggle a second reading past the router.
        let invalid = |s: Option<Span>| s.is_some_and(|s| !super::authority::valid(s.get(buf)));
        if invalid(self.host) || invalid(self.authority) {
            return Err(HeadError::InvalidHost);
        }
        if chunked && content_length.is_some() {
            return Err(HeadError::LengthAndChunked);
        }
        if chunked && self.minor == 0 {
            return Err(HeadError::BadTransferEncoding);
        }
        self.framing = Some(if chunked {
            Framing::Chunked
        } else {
            match content_length {
                Some(0) | None => Framing::None,
                Some(n) => Framing::Length(n),
            }
        });
        self.keep_alive = if self.minor == 1 {
            !conn_close
        } else {
            conn_keep_alive && !conn_close
        };
        Ok(Some(n))
    }
}

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
}

/// A response head larger than this from an upstream is a bad response.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A parsed upstream response head.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    /// 0 or 1.
    pub minor: u8,
    reason: Span,
    /// Headers, spans into `bytes`.
    pub headers: Vec<Header>,
    bytes: Bytes,
    /// Framing as the upstream declared it (before the request method is considered).
    pub framing: Option<Framing>,
    /// The upstream will keep the connection open.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The head as received (status line through the blank line), for the fuzz targets' checks.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.bytes)
    }
    /// Name and value of header `h`.
    #[inline]
    pub fn header(&self, h: &Header) -> (&[u8], &[u8]) {
        (h.name.get(&self.bytes), h.value.get(&self.bytes))
    }
    pub fn body(&self) -> Framing {
        self.framing.unwrap_or(Framing::None)
    }

    /// Lets go of the head's bytes (keeping the header list's capacity), as
    /// `RequestHead::release` does: call it once the head has been forwarded, before the upstream
    /// connection reads again or goes back to the pool, so its read buffer is reused, not replaced.
    pub fn release(&mut self) {
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        *self = ResponseHead {
            headers,
            ..ResponseHead::default()
        };
    }

    /// Parses a response head at the front of `buf`; Ok(None) = need more.
    /// `head_request` and the status decide whether a body follows (RFC 9112 §6.3).
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        head_request: bool,
        max_bytes: usize,
    ) -> Result<Option<()>, HeadError> {
        // Uninitialised storage, as for requests: zeroing 128 headers per response showed in profiles.
        let mut storage = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 128];
        let mut res = httparse::Response::new(&mut []);
        let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut storage,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > max_bytes {
                    Err(HeadError::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
            Err(_) => return Err(HeadError::Syntax),
        };
        check_line_endings(&buf[..n])?;
        self.status = res.code.ok_or(HeadError::Syntax)?;
        if !(100..=599).contains(&self.status) {
            return Err(HeadError::BadStatus);
        }
        self.minor = res.version.ok_or(HeadError::Syntax)?;
        self.reason = reason_span(buf);
        self.headers.clear();
        let mut content_length = None;
        let mut chunked = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut has_conn_tokens = false;
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            check_value(h.value)?;
            let kind = classify(name);
            match kind {
                HeaderKind::ContentLength => {
                    let v = parse_length(h.value)?;
                    if content_length.is_some_and(|c| c != v) {
                        return Err(HeadError::BadLength);
                    }
                    content_length = Some(v);
                }
                HeaderKind::HopByHop if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    // RFC 9112 §6.3: chunked must be the final coding; anything else we cannot delimit.
                    let last = h
                        .value
                        .rsplit(|&b| b == b',')
                        .next()
                        .map(trim)
                        .unwrap_or(b"");
                    if !last.eq_ignore_ascii_case(b"chunked") || chunked {
                        return Err(HeadError::BadTransferEncoding);
                    }
                    if trim(h.value).len() != last.len() {
                        // Other codings before chunked (e.g. gzip) cannot be passed on verbatim without TE.
                        return Err(HeadError::BadTransferEncoding);
                    }
                    chunked = true;
                }
                HeaderKind::HopByHop if name.eq_ignore_ascii_case(b"connection") => {
                    for tok in h.value.split(|&b| b == b',') {
                        let tok = trim(tok);
                        if tok.eq_ignore_ascii_case(b"close") {
                            conn_close = true;
                        } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                            conn_keep_alive = true;
                        } else if !tok.is_empty() {
                            has_conn_tokens = true;
                        }
                    }
                }
                _ => {}
            }
            self.headers.push(Header {
                name: Span::of(buf, name),
                value: Span::of(buf, h.value),
                kind,
            });
        }
        if has_conn_tokens {
            mark_connection_named(&mut self.headers, buf);
        }
        let bodiless = head_request
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304;
        self.framing = Some(if bodiless {
            Framing::None
        } else if chunked {
            if content_length.is_some() {
                return Err(HeadError::LengthAndChunked);
            }
            Framing::Chunked
        } else {
            match content_length {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        });
        self.keep_alive = !matches!(self.framing, Some(Framing::Close))
            && if self.minor == 1 {
                !conn_close
            } else {
                conn_keep_alive && !conn_close
            };
        self.bytes = buf.split_to(n).freeze();
        Ok(Some(()))
    }
}

/// The reason phrase exactly as received: everything after `HTTP/1.x NNN ` up to the CR, obs-text
/// included (httparse returns `""` for a non-UTF-8 reason, and the relay must not invent one). Runs
/// only on a status line httparse accepted, whose version and code are fixed-width (RFC 9112 §4).
fn reason_span(buf: &[u8]) -> Span {
    const REASON_AT: usize = b"HTTP/1.1 200 ".len();
    // httparse skips empty lines before the status line (RFC 9112 §2.2).
    let line_start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let line = &buf[line_start..];
    let line_end = memchr::memchr(b'\r', line).unwrap_or(0);
    if line_end > REASON_AT {
        Span::of(buf, &line[REASON_AT..line_end])
    } else {
        Span::default()
    }
}

/// Classifies a header name once, so forwarding compares an enum, not strings.
fn classify(name: &[u8]) -> HeaderKind {
    let eq = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        4 if eq(b"host") => HeaderKind::Host,
        2 if eq(b"te") => HeaderKind::HopByHop,
        6 if eq(b"expect") => HeaderKind::Expect,
        11 if eq(b"traceparent") => HeaderKind::TraceParent,
        7 if eq(b"trailer") || eq(b"upgrade") => HeaderKind::HopByHop,
        10 if eq(b"connection") || eq(b"keep-alive") => HeaderKind::HopByHop,
        12 if eq(b"x-request-id") => HeaderKind::RequestId,
        13 if eq(b"authorization") => HeaderKind::Authorization,
        // RFC 9110 §11.7.2: meant for this proxy, never for the next hop.
        19 if eq(b"proxy-authorization") => HeaderKind::HopByHop,
        14 if eq(b"content-length") => HeaderKind::ContentLength,
        15 if eq(b"x-forwarded-for") => HeaderKind::XForwardedFor,
        16 if eq(b"x-forwarded-host") || eq(b"proxy-connection") => {
            if eq(b"proxy-connection") {
                HeaderKind::HopByHop
            } else {
                HeaderKind::XForwardedOther
            }
        }
        17 if eq(b"transfer-encoding") || eq(b"x-forwarded-proto") => {
            if eq(b"transfer-encoding") {
                HeaderKind::HopByHop
            } else {
                HeaderKind::XForwardedOther
            }
        }
        _ => HeaderKind::Other,
    }
}

/// Marks headers named in Connection as hop-by-hop (RFC 9110 §7.6.1).
fn mark_connection_named(headers: &mut [Header], buf: &[u8]) {
    let named: Vec<(usize, usize)> = headers
        .iter()
        .filter(|h| h.name.get(buf).eq_ignore_ascii_case(b"connection"))
        .flat_map(|h| {
            let v = h.value.get(buf);
            let base = h.value.start as usize;
            let mut out = Vec::new();
            let mut off = 0;
            for tok in v.split(|&b| b == b',') {
                let t = trim(tok);
                if !t.is_empty() {
                    let s = base + off + (t.as_ptr() as usize - tok.as_ptr() as usize);
                    out.push((s, s + t.len()));
                }
                off += tok.len() + 1;
            }
            out
        })
        .collect();
    for h in headers.iter_mut() {
        if h.kind == HeaderKind::Other
            || h.kind == HeaderKind::XForwardedOther
            || h.kind == HeaderKind::XForwardedFor
        {
            let n = h.name.get(buf);
            if named
                .iter()
                .any(|&(s, e)| buf[s..e].eq_ignore_ascii_case(n))
            {
                h.kind = HeaderKind::HopByHop;
            }
        }
    }
}

/// 505 only for a well-formed request line naming another version (`GET / HTTP/2.0`); anything else
/// that trips httparse's version check (`GET /a b HTTP/1.1`, `GET / FOO/1.1`) is a malformed line: 400.
fn version_error(buf: &[u8]) -> HeadError {
    let line = &buf[..memchr::memchr(b'\r', buf).unwrap_or(buf.len())];
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return HeadError::Syntax;
    };
    if v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit()
    {
        HeadError::Version
    } else {
        HeadError::Syntax
    }
}

/// RFC 9112 §2.2: a recipient may accept bare LF, but a proxy that does creates a parsing differential.
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    for i in memchr::memchr_iter(b'\n', head) {
        if i == 0 || head[i - 1] != b'\r' {
            return Err(HeadError::BareLf);
        }
    }
    Ok(())
}

/// Field values: visible characters, SP and HTAB, obs-text; no NUL, CR, LF or other controls.
fn check_value(v: &[u8]) -> Result<(), HeadError> {
    if v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        Err(HeadError::BadValue)
    } else {
        Ok(())
    }
}

/// Content-Length: 1*DIGIT, nothing else (no sign, no list, no whitespace inside).
fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadLength);
    }
    Ok(v.iter().fold(0u64, |a, &d| a * 10 + (d - b'0') as u64))
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(head: &'a RequestHead, name: &[u8]) -> Option<&'a [u8]> {
    for h in &head.headers {
        let (n, v) = head.header(h);
        if !n.eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for pair in v.split(|&b| b == b';') {
            let pair = trim(pair);
            if let Some(eq) = memchr::memchr(b'=', pair) {
                if &pair[..eq] == name {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

/// Strips optional whitespace (SP, HTAB) from both ends.
pub fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(s, |p| p + 1);
    &v[s..e]
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
