//! The admin API as `sluice top` reads it: a blocking HTTP/1.1 GET over `std::net::TcpStream`
//! (one request per connection, `Connection: close`, bounded in size and time) and the JSON shapes
//! of `/status` (with its top consumers), `/workers`, `/routes` and `/upstreams`. Unknown fields are
//! ignored and missing ones default, so a newer or older sluice still shows what both know.

use super::{Options, TopError};
use serde::Deserialize;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The largest admin response read (a /routes of thousands of routes fits).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Every admin call finishes within this, connect included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET path` on the admin listener; the body parsed as JSON.
pub(super) fn get<T: for<'de> Deserialize<'de>>(
    admin: &str,
    path: &'static str,
    token: Option<&str>,
) -> Result<T, TopError> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    let addrs: Vec<_> = admin
        .to_socket_addrs()
        .map_err(|_| TopError::Resolve(admin.to_string()))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CALL_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some(mut s) = stream else {
        return Err(TopError::Connect {
            addr: admin.to_string(),
            source: last,
        });
    };
    let io_err = |source| TopError::Io { path, source };
    s.set_read_timeout(Some(CALL_TIMEOUT)).map_err(io_err)?;
    s.set_write_timeout(Some(CALL_TIMEOUT)).map_err(io_err)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: sluice-top\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(io_err)?;
    // Read to EOF (the admin API closes after one response), bounded in size and time.
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    loop {
        if Instant::now() >= deadline {
            return Err(io_err(io::ErrorKind::TimedOut.into()));
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if buf.len() + n <= MAX_RESPONSE_BYTES => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(TopError::Malformed { path }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    let (status, body) = parse_response(&buf).ok_or(TopError::Malformed { path })?;
    match status {
        200 => serde_json::from_slice(body).map_err(|source| TopError::Json { path, source }),
        401 => Err(TopError::Unauthorized { path }),
        status => Err(TopError::Status { path, status }),
    }
}

/// Status and body of one complete HTTP/1.1 response (Content-Length or close-delimited).
fn parse_response(buf: &[u8]) -> Option<(u16, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = resp.parse(buf).ok()? else {
        return None;
    };
    let status = resp.code?;
    let rest = &buf[head_len..];
    let mut body = rest;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // the admin API never chunks
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            body = rest.get(..n)?;
        }
    }
    Some((status, body))
}

/// `GET /status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Status {
    pub(super) version: String,
    pub(super) pid: u64,
    pub(super) uptime_seconds: u64,
    pub(super) workers: u64,
    pub(super) io_driver: String,
    pub(super) config: String,
    pub(super) config_generation: u64,
    pub(super) connections: u64,
    pub(super) in_flight: u64,
    pub(super) requests_total: u64,
    pub(super) consumers: Consumers,
}

/// One consumer (or the rest, summed) of `/status` `consumers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct ConsumerFigures {
    pub(super) name: String,
    pub(super) requests_per_second: f64,
    pub(super) requests: u64,
    /// Answered 429.
    pub(super) limited: u64,
    /// 5xx or no response.
    pub(super) errors: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    /// Share of the quota used (0..1), when known.
    pub(super) quota_used: Option<f64>,
    /// In `other`: how many consumers it sums.
    pub(super) consumers: u64,
}

/// `/status` `consumers`: the top consumers by rate, the rest summed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Consumers {
    pub(super) rate_window_seconds: u64,
    pub(super) top: Vec<ConsumerFigures>,
    pub(super) other: ConsumerFigures,
}

/// One worker of `GET /workers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct WorkerFigures {
    pub(super) worker: u64,
    pub(super) cpu: Option<i64>,
    pub(super) utilization: f64,
    pub(super) requests_per_second: f64,
    pub(super) errors_per_second: f64,
    pub(super) accepts_per_second: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) connections: u64,
    pub(super) in_flight: u64,
    pub(super) requests_total: u64,
}

/// Responses by status class.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Responses {
    #[serde(rename = "2xx")]
    pub(super) s2xx: u64,
    #[serde(rename = "3xx")]
    pub(super) s3xx: u64,
    #[serde(rename = "4xx")]
    pub(super) s4xx: u64,
    #[serde(rename = "5xx")]
    pub(super) s5xx: u64,
    pub(super) none: u64,
}

/// One route of `GET /routes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct RouteFigures {
    pub(super) name: String,
    pub(super) host: Option<String>,
    pub(super) path: String,
    pub(super) action: serde_json::Value,
    pub(super) requests: u64,
    pub(super) responses: Responses,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
}

/// One endpoint of an upstream in `GET /upstreams`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct EndpointFigures {
    pub(super) address: String,
    pub(super) admin_state: Option<String>,
    pub(super) healthy: bool,
    pub(super) ejected: bool,
    pub(super) in_flight: u64,
    pub(super) idle_connections: u64,
    pub(super) requests: u64,
    pub(super) failures: u64,
    pub(super) ttfb_p99_ms: f64,
}

/// One upstream of `GET /upstreams`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct UpstreamFigures {
    pub(super) name: String,
    pub(super) endpoints: Vec<EndpointFigures>,
}

#[derive(Deserialize)]
pub(super) struct WorkersBody {
    pub(super) workers: Vec<WorkerFigures>,
}
#[derive(Deserialize)]
pub(super) struct RoutesBody {
    pub(super) routes: Vec<RouteFigures>,
}
#[derive(Deserialize)]
pub(super) struct UpstreamsBody {
    pub(super) upstreams: Vec<UpstreamFigures>,
}

/// One poll of the admin API.
#[derive(Debug, Clone)]
pub(super) struct Poll {
    pub(super) at: Instant,
    pub(super) status: Status,
    pub(super) workers: Vec<WorkerFigures>,
    pub(super) routes: Vec<RouteFigures>,
    pub(super) upstreams: Vec<UpstreamFigures>,
}

pub(super) fn poll(opts: &Options) -> Result<Poll, TopError> {
    let t = opts.token.as_deref();
    let status = get(&opts.admin, "/status", t)?;
    let workers: WorkersBody = get(&opts.admin, "/workers", t)?;
    let routes: RoutesBody = get(&opts.admin, "/routes", t)?;
    let upstreams: UpstreamsBody = get(&opts.admin, "/upstreams", t)?;
    Ok(Poll {
        at: Instant::now(),
        status,
        workers: workers.workers,
        routes: routes.routes,
        upstreams: upstreams.upstreams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_close_delimited_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}junk";
        assert_eq!(parse_response(r), Some((200, &b"{}"[..])));
        let r = b"HTTP/1.1 401 Unauthorized\r\n\r\n{\"error\":1}";
        assert_eq!(parse_response(r), Some((401, &b"{\"error\":1}"[..])));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"),
            None
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
            None
        );
    }
}
