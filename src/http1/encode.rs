//! What sluice itself writes in HTTP/1.1: the status line with its canonical reason phrase, and whole
//! responses of its own (direct responses and errors, with any headers a policy adds). Pure encoding
//! into a caller's buffer; no I/O.

/// Canonical reason phrase for a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The body of a response sluice writes itself.
#[derive(Debug, Clone, Copy)]
pub enum ReplyBody<'a> {
    Bytes(&'a [u8]),
    /// `{"error":MESSAGE,"status":STATUS,"request_id":ID}` and a newline: every error sluice answers.
    ErrorJson(&'a str),
}

/// A complete response from sluice (a direct response, an error, a policy's rejection).
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// Status code (100-599).
    pub status: u16,
    /// Extra header lines, already in field-line form (`name: value\r\n` each), e.g. a route's
    /// configured headers or a policy's `WWW-Authenticate` / `Retry-After`.
    pub headers: &'a [u8],
    pub body: ReplyBody<'a>,
    /// The request id, sent as `x-request-id` (and inside an error body).
    pub request_id: &'a [u8],
    /// Omit the body (HEAD, 204, 304) but keep its Content-Length.
    pub head_only: bool,
}

/// How the connection goes on after a reply, as the client must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// `connection: close`.
    Close,
    /// Nothing to say (HTTP/1.1 keeps the connection by default).
    Keep,
    /// `connection: keep-alive`, for an HTTP/1.0 client that asked for it.
    KeepAlive10,
}

/// Appends `HTTP/1.1 NNN Reason\r\n`.
pub fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the whole response `r` (head and body) in HTTP/1.1.
pub fn reply(out: &mut Vec<u8>, r: &Reply<'_>, persist: Persist) {
    let mut st = itoa::Buffer::new();
    let status_s = st.format(r.status);
    status_line(out, r.status);
    if matches!(r.body, ReplyBody::ErrorJson(_)) {
        out.extend_from_slice(b"content-type: application/json\r\n");
    }
    out.extend_from_slice(r.headers);
    let body_len = match r.body {
        ReplyBody::Bytes(b) => b.len(),
        // {"error":"...","status":NNN,"request_id":"..."}\n
        ReplyBody::ErrorJson(m) => 10 + m.len() + 11 + status_s.len() + 15 + r.request_id.len() + 3,
    };
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(r.request_id);
    out.extend_from_slice(match persist {
        Persist::Close => &b"\r\nconnection: close\r\n\r\n"[..],
        Persist::KeepAlive10 => b"\r\nconnection: keep-alive\r\n\r\n",
        Persist::Keep => b"\r\n\r\n",
    });
    if r.head_only {
        return;
    }
    let start = out.len();
    match r.body {
        ReplyBody::Bytes(b) => out.extend_from_slice(b),
        ReplyBody::ErrorJson(m) => {
            out.extend_from_slice(b"{\"error\":\"");
            out.extend_from_slice(m.as_bytes());
            out.extend_from_slice(b"\",\"status\":");
            out.extend_from_slice(status_s.as_bytes());
            out.extend_from_slice(b",\"request_id\":\"");
            out.extend_from_slice(r.request_id);
            out.extend_from_slice(b"\"}\n");
        }
    }
    debug_assert_eq!(out.len() - start, body_len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json_with_exact_length() {
        let mut out = Vec::new();
        let r = Reply {
            status: 404,
            headers: b"",
            body: ReplyBody::ErrorJson("no route"),
            request_id: b"abc",
            head_only: false,
        };
        reply(&mut out, &r, Persist::Keep);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            "{\"error\":\"no route\",\"status\":404,\"request_id\":\"abc\"}\n"
        );
    }

    #[test]
    fn extra_headers_and_head_only() {
        let mut out = Vec::new();
        let r = Reply {
            status: 401,
            headers: b"www-authenticate: Basic realm=\"api\"\r\n",
            body: ReplyBody::ErrorJson("unauthorized"),
            request_id: b"id",
            head_only: true,
        };
        reply(&mut out, &r, Persist::Close);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\nwww-authenticate: Basic realm=\"api\"\r\n"),
            "{text}"
        );
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    }
}
