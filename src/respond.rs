//! The one place errors become responses: an exhaustive match from error to status, and the JSON body
//! every error carries (`{"error", "status", "request_id"}`). Nothing here allocates beyond the output buffer.

use crate::http1::chunked::ChunkError;
use crate::http1::head::HeadError;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why talking to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// Endpoint.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The upstream closed or reset before a complete response.
    #[error("upstream {0} closed the connection")]
    Reset(SocketAddr),
    /// No response head within the response timeout.
    #[error("no response head within {0:?}")]
    HeadTimeout(Duration),
    /// The response body stalled or the total timeout passed.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream sent something that is not a valid HTTP/1.1 response.
    #[error("invalid response from upstream: {0}")]
    BadResponse(HeadError),
    /// Invalid chunked framing from the upstream.
    #[error("invalid chunked body from upstream: {0}")]
    BadChunk(ChunkError),
    /// Every endpoint is ejected or marked down.
    #[error("no healthy endpoint in upstream {0}")]
    NoHealthy(usize),
    /// Circuit breaker: too many concurrent requests and the queue is full or timed out.
    #[error("upstream {0} is at its connection limit")]
    CircuitOpen(usize),
}

/// Why a request failed; one per failure site on the proxy path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Bad request head.
    #[error("{0}")]
    Head(#[from] HeadError),
    /// Bad chunked request body.
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    /// Request body over the limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// The client did not send the head in time.
    #[error("request head timeout")]
    HeadTimeout,
    /// The client did not send the body in time.
    #[error("request body timeout")]
    BodyTimeout,
    /// The client went away mid-request.
    #[error("client closed the connection")]
    ClientClosed,
    /// No route matched.
    #[error("no route")]
    NoRoute,
    /// Talking to the upstream failed.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
}

/// The status code for an error. Exhaustive: a new variant forces a decision here.
pub fn status_for(e: &ProxyError) -> u16 {
    use HeadError as H;
    use UpstreamError as U;
    match e {
        ProxyError::Head(H::TooLarge | H::TooManyHeaders) => 431,
        ProxyError::Head(H::UriTooLong) => 414,
        ProxyError::Head(H::MethodNotImplemented) => 501,
        ProxyError::Head(H::Version) => 505,
        ProxyError::Head(
            H::Syntax
            | H::BareLf
            | H::BadValue
            | H::LengthAndChunked
            | H::BadLength
            | H::BadTransferEncoding
            | H::BadHost
            | H::BadStatus,
        ) => 400,
        ProxyError::Chunk(_) => 400,
        ProxyError::BodyTooLarge => 413,
        ProxyError::HeadTimeout | ProxyError::BodyTimeout => 408,
        ProxyError::ClientClosed => 400,
        ProxyError::NoRoute => 404,
        ProxyError::Upstream(
            U::Connect { .. } | U::Reset(_) | U::BadResponse(_) | U::BadChunk(_),
        ) => 502,
        ProxyError::Upstream(U::ConnectTimeout(_) | U::HeadTimeout(_) | U::Timeout) => 504,
        ProxyError::Upstream(U::NoHealthy(_) | U::CircuitOpen(_)) => 503,
    }
}

/// Why the request ended, for metrics and the access log. Exhaustive like `status_for`.
pub fn reason_for(e: &ProxyError) -> crate::metrics::EndReason {
    use crate::metrics::EndReason as R;
    use UpstreamError as U;
    match e {
        ProxyError::Head(_) | ProxyError::Chunk(_) | ProxyError::BodyTooLarge => R::BadRequest,
        ProxyError::HeadTimeout | ProxyError::BodyTimeout => R::ClientTimeout,
        ProxyError::ClientClosed => R::ClientAbort,
        ProxyError::NoRoute => R::NoRoute,
        ProxyError::Upstream(U::Connect { .. }) => R::UpstreamConnect,
        ProxyError::Upstream(U::ConnectTimeout(_)) => R::UpstreamConnectTimeout,
        ProxyError::Upstream(U::HeadTimeout(_)) => R::UpstreamResponseTimeout,
        ProxyError::Upstream(U::Timeout) => R::UpstreamTimeout,
        ProxyError::Upstream(U::Reset(_)) => R::UpstreamReset,
        ProxyError::Upstream(U::BadResponse(_) | U::BadChunk(_)) => R::UpstreamProtocol,
        ProxyError::Upstream(U::NoHealthy(_)) => R::NoHealthy,
        ProxyError::Upstream(U::CircuitOpen(_)) => R::Overflow,
    }
}

/// Short, stable text for the JSON body (no per-request formatting).
pub fn message_for(e: &ProxyError) -> &'static str {
    use UpstreamError as U;
    match e {
        ProxyError::Head(h) => match h {
            HeadError::TooLarge => "request header section too large",
            HeadError::TooManyHeaders => "too many request headers",
            HeadError::UriTooLong => "request-target too long",
            HeadError::Syntax => "malformed request",
            HeadError::BareLf => "bare LF in request head",
            HeadError::BadValue => "invalid character in header value",
            HeadError::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            HeadError::BadLength => "invalid Content-Length",
            HeadError::BadTransferEncoding => "unsupported Transfer-Encoding",
            HeadError::BadHost => "missing or duplicate Host header",
            HeadError::Version => "unsupported HTTP version",
            HeadError::MethodNotImplemented => "method not implemented",
            HeadError::BadStatus => "invalid status code",
        },
        ProxyError::Chunk(_) => "invalid chunked body",
        ProxyError::BodyTooLarge => "request body too large",
        ProxyError::HeadTimeout => "request head timeout",
        ProxyError::BodyTimeout => "request body timeout",
        ProxyError::ClientClosed => "client closed the connection",
        ProxyError::NoRoute => "no route",
        ProxyError::Upstream(u) => match u {
            U::Connect { .. } => "upstream connection refused",
            U::ConnectTimeout(_) => "upstream connect timeout",
            U::Reset(_) => "upstream closed the connection",
            U::HeadTimeout(_) => "upstream response timeout",
            U::Timeout => "upstream timeout",
            U::BadResponse(_) | U::BadChunk(_) => "invalid response from upstream",
            U::NoHealthy(_) => "no healthy upstream endpoint",
            U::CircuitOpen(_) => "upstream overloaded",
        },
    }
}

/// Appends a complete error response to `out`.
pub fn write_error(out: &mut Vec<u8>, status: u16, message: &str, request_id: &[u8], close: bool) {
    let mut body_len = itoa::Buffer::new();
    let mut st = itoa::Buffer::new();
    let status_s = st.format(status);
    // {"error":"...","status":NNN,"request_id":"..."}\n
    let len = 10 + message.len() + 11 + status_s.len() + 15 + request_id.len() + 3;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_s.as_bytes());
    out.push(b' ');
    out.extend_from_slice(crate::router::reason(status).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body_len.format(len).as_bytes());
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request_id);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    let start = out.len() + 4;
    out.extend_from_slice(b"\r\n\r\n{\"error\":\"");
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    out.extend_from_slice(status_s.as_bytes());
    out.extend_from_slice(b",\"request_id\":\"");
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\"}\n");
    debug_assert_eq!(out.len() - start, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json_with_exact_length() {
        let mut out = Vec::new();
        write_error(&mut out, 404, "no route", b"abc", false);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            "{\"error\":\"no route\",\"status\":404,\"request_id\":\"abc\"}\n"
        );
    }
}
