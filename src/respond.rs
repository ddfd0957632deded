//! The one place errors become responses: an exhaustive match from error to status, and the JSON body
//! every error carries (`{"error", "status", "request_id"}`). Nothing here allocates beyond the output buffer.

use crate::http1::chunked::ChunkError;
use crate::http1::encode::{Reply, ReplyBody};
use crate::http1::head::HeadError;
use crate::http1::path::PathError;
use crate::metrics::EndReason;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why talking to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// TCP connect (and, to a TLS upstream, the handshake) did not finish in time.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The TLS handshake with the upstream failed (its certificate did not verify, it refused ours,
    /// no common version or cipher): a connect failure. The detail is logged where it happened.
    #[error("TLS handshake with {addr} failed: {}", reason.label())]
    TlsHandshake {
        addr: SocketAddr,
        reason: crate::tls::Failure,
    },
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

/// Why a policy refused a request. The policy chain (`crate::policy`) returns these; what the
/// client must be told besides (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`) travels in the
/// request's header edits, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No credential, or one that does not verify.
    #[error("authentication required")]
    Unauthenticated,
    /// A known caller that may not reach this route.
    #[error("access denied")]
    Forbidden,
    /// Over a rate limit.
    #[error("too many requests")]
    TooManyRequests,
    /// Past the consumer's quota for the period.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The quota pool did not answer in time.
    #[error("quota could not be checked")]
    QuotaUnavailable,
    /// The external authorization service could not be asked.
    #[error("authorization service unavailable")]
    AuthUnavailable,
    /// The client's address is denied, or not allowed, by the listener's or the route's IP lists.
    #[error("client address not allowed")]
    IpDenied,
}

/// Why a request failed; one per failure site on the request path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Bad request head.
    #[error("{0}")]
    Head(#[from] HeadError),
    /// A path with no canonical form, or with an encoded slash its route does not allow.
    #[error("{0}")]
    Path(#[from] PathError),
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
    /// Routes match the host and path but none takes the method (the `Allow` header travels in the
    /// request's header edits).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A policy refused the request.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// Talking to the upstream failed.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// A bug: serving the request panicked (see `crate::panic`).
    #[error("internal error")]
    Internal,
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client's request or behaviour (also: no route).
    Client,
    /// A policy said no.
    Policy,
    /// The upstream endpoint: counts toward its passive health.
    Upstream,
    /// Not the endpoint's doing on the upstream side: the group has no healthy endpoint or is full.
    Capacity,
    /// A bug in sluice.
    Internal,
}

/// What an error means for the client, the record and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// The response status.
    pub status: u16,
    /// Why the request ended, for metrics and the access log.
    pub reason: EndReason,
    /// Whose fault it is.
    pub fault: Fault,
    /// Short, stable text for the JSON body (no per-request formatting).
    pub message: &'static str,
    /// The request body may be partly unread, so the connection cannot carry another request.
    pub body_unread: bool,
}

/// The one mapping from error to status, end reason and message. Exhaustive: a new variant forces a
/// decision here.
pub fn classify(e: &ProxyError) -> Class {
    use EndReason as R;
    use HeadError as H;
    use UpstreamError as U;
    let class = |status, reason, fault, message, body_unread| Class {
        status,
        reason,
        fault,
        message,
        body_unread,
    };
    // The client's error whose body may be partly unread, then one whose body is not in question.
    let unread = |status, reason, message| class(status, reason, Fault::Client, message, true);
    let c = |status, reason, message| class(status, reason, Fault::Client, message, false);
    let up = |status, reason, message| class(status, reason, Fault::Upstream, message, false);
    let policy = |status, message| class(status, R::Policy, Fault::Policy, message, false);
    let capacity = |reason, message| class(503, reason, Fault::Capacity, message, false);
    match e {
        ProxyError::Head(h) => {
            let (status, message) = match h {
                H::TooLarge => (431, "request header section too large"),
                H::TooManyHeaders => (431, "too many request headers"),
                H::UriTooLong => (414, "request-target too long"),
                H::MethodNotImplemented => (501, "method not implemented"),
                H::Version => (505, "unsupported HTTP version"),
                H::Syntax => (400, "malformed request"),
                H::BareLf => (400, "bare LF in request head"),
                H::BadValue => (400, "invalid character in header value"),
                H::LengthAndChunked => (400, "both Content-Length and Transfer-Encoding"),
                H::BadLength => (400, "invalid Content-Length"),
                H::BadTransferEncoding => (400, "unsupported Transfer-Encoding"),
                H::BadHost => (400, "missing or duplicate Host header"),
                H::InvalidHost => (400, "invalid Host header"),
                H::BadStatus => (400, "invalid status code"),
            };
            unread(status, R::BadRequest, message)
        }
        // Refused before any of the body is read, like a missing route: framing is intact.
        ProxyError::Path(p) => c(
            400,
            R::BadRequest,
            match p {
                PathError::BadEscape => "malformed percent-encoding in path",
                PathError::EncodedNul => "encoded NUL in path",
                PathError::EncodedSlash => "encoded slash in path",
            },
        ),
        ProxyError::Chunk(_) => unread(400, R::BadRequest, "invalid chunked body"),
        ProxyError::BodyTooLarge => unread(413, R::BadRequest, "request body too large"),
        ProxyError::HeadTimeout => unread(408, R::ClientTimeout, "request head timeout"),
        ProxyError::BodyTimeout => unread(408, R::ClientTimeout, "request body timeout"),
        ProxyError::ClientClosed => unread(400, R::ClientAbort, "client closed the connection"),
        ProxyError::NoRoute => c(404, R::NoRoute, "no route"),
        // Counted with the misses: the request reached no route either.
        ProxyError::MethodNotAllowed => c(405, R::NoRoute, "method not allowed"),
        ProxyError::Policy(p) => match p {
            PolicyError::Unauthenticated => policy(401, "authentication required"),
            PolicyError::Forbidden => policy(403, "access denied"),
            PolicyError::TooManyRequests => policy(429, "too many requests"),
            PolicyError::QuotaExceeded => policy(429, "quota exceeded"),
            PolicyError::QuotaUnavailable => policy(503, "quota could not be checked"),
            PolicyError::AuthUnavailable => policy(503, "authorization service unavailable"),
            PolicyError::IpDenied => policy(403, "client address not allowed"),
        },
        ProxyError::Upstream(u) => match u {
            U::Connect { .. } => up(502, R::UpstreamConnect, "upstream connection refused"),
            // Counted with the connect failures: no connection to send the request on.
            U::TlsHandshake { .. } => up(502, R::UpstreamConnect, "upstream TLS handshake failed"),
            U::ConnectTimeout(_) => up(504, R::UpstreamConnectTimeout, "upstream connect timeout"),
            U::Reset(_) => up(502, R::UpstreamReset, "upstream closed the connection"),
            U::HeadTimeout(_) => up(504, R::UpstreamResponseTimeout, "upstream response timeout"),
            U::Timeout => up(504, R::UpstreamTimeout, "upstream timeout"),
            U::BadResponse(_) | U::BadChunk(_) => {
                up(502, R::UpstreamProtocol, "invalid response from upstream")
            }
            U::NoHealthy(_) => capacity(R::NoHealthy, "no healthy upstream endpoint"),
            U::CircuitOpen(_) => capacity(R::Overflow, "upstream overloaded"),
        },
        ProxyError::Internal => class(500, R::Internal, Fault::Internal, "internal error", false),
    }
}

/// The error response for `e`: the one shape every error takes (status, JSON body, request id), with
/// `headers` for what a rejection must tell the client (`WWW-Authenticate`, `Retry-After`, ...).
/// `head_only` for a HEAD request: the body's Content-Length without the body.
pub fn error_reply<'a>(
    e: &ProxyError,
    request_id: &'a [u8],
    headers: &'a [u8],
    head_only: bool,
) -> Reply<'a> {
    let class = classify(e);
    Reply {
        status: class.status,
        headers,
        body: ReplyBody::ErrorJson(class.message),
        request_id,
        head_only,
    }
}

/// The reply that replaces an upstream's 5xx on a route with `intercept_errors`: the upstream's status,
/// sluice's JSON error body, and the policies' `headers` (CORS, so a browser can read it).
pub fn intercepted_reply<'a>(
    status: u16,
    request_id: &'a [u8],
    headers: &'a [u8],
    head_only: bool,
) -> Reply<'a> {
    debug_assert!((500..=599).contains(&status));
    Reply {
        status,
        headers,
        body: ReplyBody::ErrorJson("upstream error"),
        request_id,
        head_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rejections_are_4xx_policy_faults_that_keep_the_connection() {
        for (p, status) in [
            (PolicyError::Unauthenticated, 401),
            (PolicyError::Forbidden, 403),
            (PolicyError::TooManyRequests, 429),
            (PolicyError::QuotaExceeded, 429),
            (PolicyError::QuotaUnavailable, 503),
            (PolicyError::AuthUnavailable, 503),
            (PolicyError::IpDenied, 403),
        ] {
            let c = classify(&ProxyError::Policy(p));
            assert_eq!(
                (c.status, c.reason, c.fault, c.body_unread),
                (status, EndReason::Policy, Fault::Policy, false),
                "{p:?}"
            );
        }
    }

    #[test]
    fn only_upstream_failures_blame_the_endpoint() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let upstream = [
            UpstreamError::ConnectTimeout(addr),
            UpstreamError::Reset(addr),
            UpstreamError::HeadTimeout(Duration::from_secs(1)),
            UpstreamError::Timeout,
            UpstreamError::BadResponse(HeadError::BadStatus),
        ];
        for u in upstream {
            assert_eq!(classify(&ProxyError::Upstream(u)).fault, Fault::Upstream);
        }
        for u in [UpstreamError::NoHealthy(0), UpstreamError::CircuitOpen(0)] {
            let c = classify(&ProxyError::Upstream(u));
            assert_eq!((c.status, c.fault), (503, Fault::Capacity));
        }
        for e in [
            ProxyError::ClientClosed,
            ProxyError::BodyTimeout,
            ProxyError::NoRoute,
            ProxyError::MethodNotAllowed,
        ] {
            assert_eq!(classify(&e).fault, Fault::Client);
        }
        assert_eq!(classify(&ProxyError::Internal).status, 500);
    }

    #[test]
    fn path_errors_are_400s_that_keep_the_connection() {
        for p in [
            PathError::BadEscape,
            PathError::EncodedNul,
            PathError::EncodedSlash,
        ] {
            let c = classify(&ProxyError::Path(p));
            assert_eq!(
                (c.status, c.reason, c.fault, c.body_unread),
                (400, EndReason::BadRequest, Fault::Client, false),
                "{p:?}"
            );
        }
        let c = classify(&ProxyError::Head(HeadError::InvalidHost));
        assert_eq!((c.status, c.reason), (400, EndReason::BadRequest));
    }

    #[test]
    fn body_errors_leave_the_body_unread() {
        assert!(classify(&ProxyError::BodyTooLarge).body_unread);
        assert!(classify(&ProxyError::BodyTimeout).body_unread);
        assert!(!classify(&ProxyError::NoRoute).body_unread);
        assert!(!classify(&ProxyError::Upstream(UpstreamError::Timeout)).body_unread);
    }
}
