//! Per-worker statistics: plain integers and lazily created hdrhistograms, owned by one generation of one
//! worker and never shared. Every request ends in one `record` call; once a second the worker turns what
//! it counted into a `StatsDelta` keyed by names (route, upstream, endpoint) and resets, so the control
//! thread can merge workers and generations without any lock on the request path.

use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Histogram range: 1 µs to 60 s, two significant digits (about 10 KiB, created on first use).
pub const HIST_MAX_US: u64 = 60_000_000;

/// Why a request ended, in the spirit of Envoy's response flags and HAProxy's termination state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndReason {
    /// A complete response was sent.
    #[default]
    Completed,
    /// Answered directly by a route (`respond`).
    Direct,
    /// No route matched.
    NoRoute,
    /// Rejected before routing: bad request, limits, smuggling.
    BadRequest,
    /// The client closed or stalled the request.
    ClientAbort,
    /// The client's head or body timed out.
    ClientTimeout,
    /// Upstream connect refused or failed.
    UpstreamConnect,
    /// Upstream connect timed out.
    UpstreamConnectTimeout,
    /// No response head within the response timeout.
    UpstreamResponseTimeout,
    /// The upstream stalled mid-body or the total timeout passed.
    UpstreamTimeout,
    /// The upstream reset or closed the connection.
    UpstreamReset,
    /// The upstream sent an invalid response.
    UpstreamProtocol,
    /// No healthy endpoint.
    NoHealthy,
    /// Circuit breaker rejected the request.
    Overflow,
    /// Refused by a policy (authentication, access rules, limits).
    Policy,
    /// A bug: serving the request panicked (see `crate::panic`).
    Internal,
}

impl EndReason {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Direct => "direct_response",
            EndReason::NoRoute => "no_route",
            EndReason::BadRequest => "bad_request",
            EndReason::ClientAbort => "client_closed",
            EndReason::ClientTimeout => "client_timeout",
            EndReason::UpstreamConnect => "upstream_connect_failure",
            EndReason::UpstreamConnectTimeout => "upstream_connect_timeout",
            EndReason::UpstreamResponseTimeout => "upstream_response_timeout",
            EndReason::UpstreamTimeout => "upstream_timeout",
            EndReason::UpstreamReset => "upstream_reset",
            EndReason::UpstreamProtocol => "upstream_protocol_error",
            EndReason::NoHealthy => "no_healthy_upstream",
            EndReason::Overflow => "upstream_overflow",
            EndReason::Policy => "policy_rejected",
            EndReason::Internal => "internal_error",
        }
    }

    /// The error kind counted in `sluice_errors_total`, if this is an error.
    pub fn error_kind(self) -> Option<ErrorKind> {
        Some(match self {
            EndReason::Completed | EndReason::Direct => return None,
            EndReason::NoRoute | EndReason::BadRequest | EndReason::ClientAbort => {
                ErrorKind::Client
            }
            EndReason::ClientTimeout => ErrorKind::ClientTimeout,
            EndReason::UpstreamConnect => ErrorKind::UpstreamConnect,
            EndReason::UpstreamConnectTimeout
            | EndReason::UpstreamResponseTimeout
            | EndReason::UpstreamTimeout => ErrorKind::UpstreamTimeout,
            EndReason::UpstreamReset | EndReason::UpstreamProtocol => ErrorKind::UpstreamReset,
            EndReason::NoHealthy | EndReason::Overflow => ErrorKind::Unavailable,
            EndReason::Policy => ErrorKind::Policy,
            EndReason::Internal => ErrorKind::Internal,
        })
    }
}

/// How authentication ended for a request, for `sluice_auth_total` and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// A credential verified.
    Ok,
    /// No credential of any of the route's methods was sent.
    Missing,
    /// A credential was sent and did not verify (unknown key, wrong password, bad token).
    Invalid,
    /// The consumer is disabled.
    Disabled,
    /// A token past its `exp`.
    Expired,
    /// A token before its `nbf`.
    NotYetValid,
    /// Authenticated, but the route's `allow` does not admit the consumer.
    Denied,
    /// Authenticated, but a required scope or claim is missing.
    InsufficientScope,
    /// The verifier could not decide (hash pool saturated, auth service down).
    Unavailable,
    /// A token that does not parse.
    Malformed,
    /// A token whose `alg` is not allowed (or does not fit its key).
    AlgNotAllowed,
    /// The verifier has no keys yet.
    NoKeys,
    /// A token naming a key the verifier does not have.
    UnknownKid,
    /// A token whose signature does not verify.
    BadSignature,
    /// A token without `exp`.
    MissingExp,
    /// A token from another issuer.
    BadIssuer,
    /// A token for another audience.
    BadAudience,
}

/// Number of `AuthOutcome`s.
pub const AUTH_OUTCOMES: usize = 17;

impl AuthOutcome {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthOutcome::Ok => "ok",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Invalid => "invalid",
            AuthOutcome::Disabled => "disabled",
            AuthOutcome::Expired => "expired",
            AuthOutcome::NotYetValid => "not_yet_valid",
            AuthOutcome::Denied => "denied",
            AuthOutcome::InsufficientScope => "insufficient_scope",
            AuthOutcome::Unavailable => "unavailable",
            AuthOutcome::Malformed => "malformed",
            AuthOutcome::AlgNotAllowed => "alg_not_allowed",
            AuthOutcome::NoKeys => "no_keys",
            AuthOutcome::UnknownKid => "unknown_kid",
            AuthOutcome::BadSignature => "bad_signature",
            AuthOutcome::MissingExp => "missing_exp",
            AuthOutcome::BadIssuer => "bad_issuer",
            AuthOutcome::BadAudience => "bad_audience",
        }
    }
}

/// Which method (an index into the generation's method names: `api_key`, `basic`, then each
/// `[auth.NAME]`) ended how. For a request that sent no credential the method is the route's first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMark {
    pub method: u8,
    pub outcome: AuthOutcome,
}

/// Error kinds for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Client errors (bad requests, no route, client aborts).
    Client = 0,
    /// Client timeouts.
    ClientTimeout,
    /// Upstream connect failures.
    UpstreamConnect,
    /// Upstream timeouts of any phase.
    UpstreamTimeout,
    /// Upstream resets and protocol errors.
    UpstreamReset,
    /// No healthy endpoint or circuit open.
    Unavailable,
    /// Rejected by a policy (auth, rate limit; later issues).
    Policy,
    /// A bug in sluice (a caught panic).
    Internal,
}

/// Number of `ErrorKind`s.
pub const ERROR_KINDS: usize = 8;

/// Labels of `ErrorKind`s, by discriminant.
pub const ERROR_KIND_NAMES: [&str; ERROR_KINDS] = [
    "client",
    "client_timeout",
    "upstream_connect",
    "upstream_timeout",
    "upstream_reset",
    "unavailable",
    "policy",
    "internal",
];

/// What one request did; filled along the path, recorded once at the end.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    /// When the head was complete.
    pub start: Instant,
    /// Matched route index.
    pub route: Option<u32>,
    /// Upstream group and endpoint index.
    pub endpoint: Option<(u32, u32)>,
    /// Status sent (0 = none).
    pub status: u16,
    /// Bytes received from the client for this request (head and body).
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Microseconds to connect upstream (0 = pooled).
    pub connect_us: u32,
    /// Microseconds from request sent to response head.
    pub ttfb_us: u32,
    /// Why it ended.
    pub reason: EndReason,
    /// Attempts made upstream.
    pub attempts: u8,
    /// How authentication ended (None: the route has none).
    pub auth: Option<AuthMark>,
    /// The route's policies (authentication, access rules, limits, quotas) all let it through: what a
    /// quota counts, as opposed to a request sluice refused itself.
    pub admitted: bool,
    /// The consumer is a configured or runtime one (not a token's unknown subject): its usage is
    /// always counted under its name, past the bound on names (`usage::MAX_CONSUMERS`).
    pub known_consumer: bool,
}

impl RequestRecord {
    /// A record for a request whose head arrived now.
    pub fn new(bytes_in: u64) -> Self {
        RequestRecord {
            start: Instant::now(),
            route: None,
            endpoint: None,
            status: 0,
            bytes_in,
            bytes_out: 0,
            connect_us: 0,
            ttfb_us: 0,
            reason: EndReason::Completed,
            attempts: 0,
            auth: None,
            admitted: false,
            known_consumer: false,
        }
    }
}

/// Plain counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Responses by class: index 0 = no response, 1..=5 = 1xx..5xx.
    pub status: [u64; 6],
    /// Errors by kind.
    pub errors: [u64; ERROR_KINDS],
    /// Sum of latencies in µs (for histogram `_sum`).
    pub latency_sum_us: u64,
}

impl Counters {
    fn add_record(&mut self, r: &RequestRecord, latency_us: u64) {
        self.requests += 1;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
        self.status[(r.status / 100).min(5) as usize] += 1;
        if let Some(k) = r.reason.error_kind() {
            self.errors[k as usize] += 1;
        }
        self.latency_sum_us += latency_us;
    }

    /// Adds another set of counters.
    pub fn merge(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for i in 0..6 {
            self.status[i] += o.status[i];
        }
        for i in 0..ERROR_KINDS {
            self.errors[i] += o.errors[i];
        }
        self.latency_sum_us += o.latency_sum_us;
    }
}

/// A latency histogram in µs, created on first use.
#[derive(Debug, Clone, Default)]
pub struct LazyHist(Option<Box<Histogram<u32>>>);

impl LazyHist {
    fn record(&mut self, us: u64) {
        if self.0.is_none() {
            self.0 = Histogram::new_with_bounds(1, HIST_MAX_US, 2)
                .ok()
                .map(Box::new);
        }
        if let Some(h) = self.0.as_mut() {
            h.saturating_record(us.clamp(1, HIST_MAX_US));
        }
    }

    fn take(&mut self) -> Option<Histogram<u32>> {
        let h = self.0.as_mut()?;
        if h.is_empty() {
            return None;
        }
        let out = (**h).clone();
        h.reset();
        Some(out)
    }
}

/// A cumulative histogram for the control thread (None only if hdrhistogram rejected constant bounds).
pub fn new_hist_u64() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 2).ok()
}

#[derive(Debug, Clone, Default)]
struct RouteStats {
    c: Counters,
    total: LazyHist,
}

#[derive(Debug, Clone, Default)]
struct EndpointStats {
    requests: u64,
    failures: u64,
    status: [u64; 6],
    ttfb: LazyHist,
}

/// Statistics of one generation on one worker.
#[derive(Debug, Default)]
pub struct GenStats {
    global: Counters,
    latency: LazyHist,
    ttfb: LazyHist,
    routes: Vec<RouteStats>,
    unrouted: Counters,
    endpoints: Vec<Vec<EndpointStats>>,
    /// Authentication outcomes by (route, method, outcome); an entry is created on its first use.
    auth: std::collections::HashMap<(u32, u8, u8), u64, ahash::RandomState>,
    /// Usage by (consumer, route, status class), for the ledger and the consumer figures.
    usage: crate::usage::UsageTable,
}

impl GenStats {
    /// Stats sized for `routes` routes and these endpoint counts per upstream.
    pub fn new(routes: usize, endpoints: &[usize]) -> GenStats {
        GenStats {
            routes: vec![RouteStats::default(); routes],
            endpoints: endpoints
                .iter()
                .map(|&n| vec![EndpointStats::default(); n])
                .collect(),
            ..Default::default()
        }
    }

    /// Counts one finished request of `consumer` (None: no one authenticated).
    pub fn record(&mut self, r: &RequestRecord, endpoint_failed: bool, consumer: Option<&str>) {
        let latency_us = r.start.elapsed().as_micros() as u64;
        self.usage.record(
            consumer,
            r.known_consumer,
            r.route,
            r.status,
            &crate::usage::UsageCounts {
                requests: 1,
                admitted: r.admitted as u64,
                limited: (r.status == 429 && !r.admitted) as u64,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                latency_us,
            },
        );
        self.global.add_record(r, latency_us);
        if let (Some(a), Some(route)) = (r.auth, r.route) {
            *self
                .auth
                .entry((route, a.method, a.outcome as u8))
                .or_insert(0) += 1;
        }
        self.latency.record(latency_us);
        match r.route.and_then(|i| self.routes.get_mut(i as usize)) {
            Some(rs) => {
                rs.c.add_record(r, latency_us);
                rs.total.record(latency_us);
            }
            None => self.unrouted.add_record(r, latency_us),
        }
        if let Some((u, e)) = r.endpoint {
            if let Some(es) = self
                .endpoints
                .get_mut(u as usize)
                .and_then(|v| v.get_mut(e as usize))
            {
                es.requests += 1;
                es.failures += endpoint_failed as u64;
                es.status[(r.status / 100).min(5) as usize] += 1;
                if r.ttfb_us > 0 {
                    es.ttfb.record(r.ttfb_us as u64);
                    self.ttfb.record(r.ttfb_us as u64);
                }
            }
        }
    }

    /// Moves the usage rows counted since the last call into `out`.
    pub fn drain_usage(&mut self, route_names: &[Arc<str>], out: &mut Vec<crate::usage::UsageRow>) {
        self.usage.drain_into(route_names, out);
    }

    /// Resizes the endpoint table of upstream `u` after a DNS change.
    pub fn resize_upstream(&mut self, u: usize, n: usize) {
        if let Some(v) = self.endpoints.get_mut(u) {
            v.resize(n, EndpointStats::default());
        }
    }

    /// Moves everything counted since the last call into `out`, naming routes and endpoints.
    pub fn drain_into(
        &mut self,
        out: &mut StatsDelta,
        route_names: &[Arc<str>],
        upstream_names: &[Arc<str>],
        endpoint_addrs: &[Vec<SocketAddr>],
        auth_methods: &[Arc<str>],
    ) {
        for (&(route, method, outcome), n) in self.auth.iter_mut() {
            if *n == 0 {
                continue;
            }
            let (Some(r), Some(m)) = (
                route_names.get(route as usize),
                auth_methods.get(method as usize),
            ) else {
                continue;
            };
            out.auth.push(AuthDelta {
                route: r.clone(),
                method: m.clone(),
                outcome: AUTH_OUTCOME_NAMES[outcome as usize % AUTH_OUTCOMES],
                count: std::mem::take(n),
            });
        }
        self.usage.drain_into(route_names, &mut out.usage);
        out.global.merge(&std::mem::take(&mut self.global));
        merge_opt(&mut out.latency, self.latency.take());
        merge_opt(&mut out.ttfb, self.ttfb.take());
        if self.unrouted.requests > 0 {
            out.routes.push(RouteDelta {
                route: Arc::from("(none)"),
                c: std::mem::take(&mut self.unrouted),
                total: None,
            });
        }
        for (i, rs) in self.routes.iter_mut().enumerate() {
            if rs.c.requests == 0 {
                continue;
            }
            let Some(name) = route_names.get(i) else {
                continue;
            };
            out.routes.push(RouteDelta {
                route: name.clone(),
                c: std::mem::take(&mut rs.c),
                total: rs.total.take(),
            });
        }
        for (u, eps) in self.endpoints.iter_mut().enumerate() {
            for (e, es) in eps.iter_mut().enumerate() {
                if es.requests == 0 {
                    continue;
                }
                let (Some(name), Some(addr)) = (
                    upstream_names.get(u),
                    endpoint_addrs.get(u).and_then(|v| v.get(e)),
                ) else {
                    continue;
                };
                out.endpoints.push(EndpointDelta {
                    upstream: name.clone(),
                    addr: *addr,
                    requests: std::mem::take(&mut es.requests),
                    failures: std::mem::take(&mut es.failures),
                    status: std::mem::take(&mut es.status),
                    ttfb: es.ttfb.take(),
                });
            }
        }
    }
}

fn merge_opt(into: &mut Option<Histogram<u32>>, h: Option<Histogram<u32>>) {
    match (into.as_mut(), h) {
        (Some(a), Some(b)) => {
            let _ = a.add(&b);
        }
        (None, Some(b)) => *into = Some(b),
        _ => {}
    }
}

/// Per-route part of a delta.
#[derive(Debug, Clone)]
pub struct RouteDelta {
    /// Route name ("(none)" for requests that matched no route).
    pub route: Arc<str>,
    pub c: Counters,
    /// Total latency histogram.
    pub total: Option<Histogram<u32>>,
}

/// Per-endpoint part of a delta.
#[derive(Debug, Clone)]
pub struct EndpointDelta {
    pub upstream: Arc<str>,
    pub addr: SocketAddr,
    /// Requests sent.
    pub requests: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Responses by class.
    pub status: [u64; 6],
    /// Upstream time to first byte.
    pub ttfb: Option<Histogram<u32>>,
}

/// Gauges of a worker at report time.
#[derive(Debug, Clone, Default)]
pub struct WorkerGauges {
    /// "io_uring" or "epoll".
    pub driver: &'static str,
    /// CPU the worker is pinned to (-1 = not pinned).
    pub cpu: i64,
    /// Open client connections.
    pub connections: u64,
    /// Of those, keep-alive connections parked while idle (no session, no buffer).
    pub parked: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Idle pooled upstream connections closed instead of reused since start, because bytes or a close
    /// arrived on them while idle.
    pub pool_retired: u64,
    /// Panics caught since start (each closed one connection; the worker kept serving).
    pub panics: u64,
    /// Worker thread CPU time since start, ns.
    pub cpu_ns: u64,
    /// Idle pooled upstream connections.
    pub pooled: u64,
    /// Endpoint state: (upstream, addr, in_flight, available, active-down, ejected).
    pub endpoints: Vec<EndpointGauge>,
    /// TLS handshakes and failures by listener, since start.
    pub tls: Vec<TlsCounts>,
}

/// Per-endpoint gauge from one worker.
#[derive(Debug, Clone)]
pub struct EndpointGauge {
    pub upstream: Arc<str>,
    pub addr: SocketAddr,
    /// In flight from this worker.
    pub in_flight: u32,
    /// Passively ejected on this worker now.
    pub ejected: bool,
    /// Marked down by active checks.
    pub active_down: bool,
    /// Idle pooled connections on this worker.
    pub idle: u32,
}

/// What a worker reports each interval.
#[derive(Debug, Clone, Default)]
pub struct StatsDelta {
    pub worker: usize,
    /// Generation the worker runs.
    pub generation: u64,
    /// Global counters.
    pub global: Counters,
    /// Total latency histogram.
    pub latency: Option<Histogram<u32>>,
    /// Upstream time to first byte.
    pub ttfb: Option<Histogram<u32>>,
    /// Routes with traffic.
    pub routes: Vec<RouteDelta>,
    /// Endpoints with traffic.
    pub endpoints: Vec<EndpointDelta>,
    /// Authentication outcomes counted.
    pub auth: Vec<AuthDelta>,
    /// Usage by (consumer, route, status class).
    pub usage: Vec<crate::usage::UsageRow>,
    /// Every limit shard of the worker (rate limits by name, then "quota:day" and "quota:month").
    pub limits: Vec<LimitDelta>,
    pub gauges: WorkerGauges,
}

/// One limit shard of one worker: counts since the last report, keys held now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitDelta {
    /// The limit's name (`Config::limits`; inline route limits are "route:NAME"), or "quota:day" /
    /// "quota:month" for the quota shards.
    pub limit: Arc<str>,
    /// Admitted, rejected, evicted keys, lease asks and grants since the last report.
    pub counts: crate::limit::shard::ShardCounts,
    /// Keys held now (a gauge).
    pub keys: u64,
}

/// Authentication outcomes of one (route, method, outcome) since the last report.
#[derive(Debug, Clone)]
pub struct AuthDelta {
    pub route: Arc<str>,
    pub method: Arc<str>,
    pub outcome: &'static str,
    pub count: u64,
}

/// Labels of `AuthOutcome`s, by discriminant.
pub const AUTH_OUTCOME_NAMES: [&str; AUTH_OUTCOMES] = [
    "ok",
    "missing",
    "invalid",
    "disabled",
    "expired",
    "not_yet_valid",
    "denied",
    "insufficient_scope",
    "unavailable",
    "malformed",
    "alg_not_allowed",
    "no_keys",
    "unknown_kid",
    "bad_signature",
    "missing_exp",
    "bad_issuer",
    "bad_audience",
];

/// CPU time used by the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    crate::sys::thread_cpu_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_drain() {
        let mut s = GenStats::new(2, &[1]);
        let mut r = RequestRecord::new(100);
        r.route = Some(1);
        r.endpoint = Some((0, 0));
        r.status = 200;
        r.bytes_out = 50;
        r.ttfb_us = 300;
        s.record(&r, false, Some("alice"));
        let mut miss = RequestRecord::new(10);
        miss.status = 404;
        miss.reason = EndReason::NoRoute;
        s.record(&miss, false, None);
        let mut d = StatsDelta::default();
        let names: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        let ups: Vec<Arc<str>> = vec![Arc::from("u")];
        let addrs = vec![vec!["127.0.0.1:1".parse().unwrap()]];
        s.drain_into(&mut d, &names, &ups, &addrs, &[]);
        assert_eq!(d.global.requests, 2);
        assert_eq!(d.global.status[2], 1);
        assert_eq!(d.global.status[4], 1);
        assert_eq!(d.global.errors[ErrorKind::Client as usize], 1);
        assert_eq!(d.routes.len(), 2);
        assert_eq!(d.endpoints[0].requests, 1);
        assert!(d.ttfb.is_some());
        assert_eq!(d.usage.len(), 2);
        assert!(d
            .usage
            .iter()
            .any(|u| &*u.consumer == "alice" && &*u.route == "b" && u.class == 2));
        let mut again = StatsDelta::default();
        s.drain_into(&mut again, &names, &ups, &addrs, &[]);
        assert_eq!(again.global.requests, 0);
        assert!(again.routes.is_empty());
    }
}

/// One listener's handshake counts on one worker, since start.
#[derive(Debug, Clone, Default)]
pub struct TlsCounts {
    pub listener: Arc<str>,
    /// By (TLS 1.2, 1.3) x (full, resumed).
    pub handshakes: [[u64; 2]; 2],
    /// By `tls::Failure::ALL`.
    pub failures: [u64; 8],
}
