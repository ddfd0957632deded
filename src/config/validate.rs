//! `ConfigToml` -> `Config`: every cross-field rule, every reference between tables, every range.
//! The result is immutable and shared as `Arc<Config>`; workers never see the TOML structs.

use super::file::*;
use super::secret::{Secret, SecretToml};
use super::{ConfigError, Source};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where it came from.
    pub source: Source,
    /// Worker count; None = one per CPU in the affinity mask.
    pub workers: Option<usize>,
    /// Explicit CPU list.
    pub cpus: Option<Vec<usize>>,
    /// I/O driver choice.
    pub driver: Driver,
    /// Default log filter.
    pub log_level: String,
    /// Drain grace period.
    pub shutdown_timeout: Duration,
    /// Per-request metrics on.
    pub metrics: bool,
    /// Admin API.
    pub admin: Option<Admin>,
    /// Client listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Downstream HTTP limits.
    pub http: Http,
    /// Upstream groups, in file order.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
    /// Access log.
    pub access_log: Option<super::monitoring::AccessLog>,
    /// Alert rules.
    pub alerts: Vec<super::monitoring::Alert>,
    /// Scaling signals.
    pub signals: super::monitoring::Signals,
}

/// Which io driver workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll.
    Epoll,
}

/// `[admin]`, validated.
#[derive(Debug)]
pub struct Admin {
    /// Bind address.
    pub listen: SocketAddr,
    /// Bearer token.
    pub token: Option<Secret>,
}

/// A client listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Table name.
    pub name: String,
    /// Bind address (port may be 0).
    pub addr: SocketAddr,
}

/// `[http]`, validated.
#[derive(Debug, Clone)]
pub struct Http {
    /// Whole head must arrive within this.
    pub header_timeout: Duration,
    /// Keep-alive idle time.
    pub idle_timeout: Duration,
    /// Whole body must arrive within this.
    pub body_timeout: Duration,
    /// Head size limit.
    pub max_header_bytes: usize,
    /// Header count limit.
    pub max_headers: usize,
    /// Request-target limit.
    pub max_uri_bytes: usize,
    /// Body limit.
    pub max_body_bytes: u64,
}

/// `[dns]`, validated.
#[derive(Debug, Clone)]
pub struct Dns {
    /// Name servers; empty = /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// Re-resolve no more often than this.
    pub min_ttl: Duration,
    /// Re-resolve at least this often.
    pub max_ttl: Duration,
}

/// One configured endpoint (before DNS).
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// Host part: an IP literal or a DNS name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight 1..=1000.
    pub weight: u32,
    /// Set when `host` is an IP literal.
    pub literal: Option<SocketAddr>,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices on in-flight requests / weight.
    LeastRequest,
    /// Ring hash on a request key.
    ConsistentHash(HashOn),
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client address.
    ClientIp,
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
}

/// Affinity cookie settings.
#[derive(Debug, Clone)]
pub struct Sticky {
    /// Cookie name.
    pub cookie: String,
    /// Max-Age.
    pub ttl: Option<Duration>,
}

/// Active health check settings.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Path to probe.
    pub path: String,
    /// Host header.
    pub host: Option<String>,
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes to mark up.
    pub healthy_threshold: u32,
    /// Failures to mark down.
    pub unhealthy_threshold: u32,
}

/// An upstream group, validated.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Table name.
    pub name: String,
    /// Endpoints as configured.
    pub endpoints: Vec<EndpointSpec>,
    /// Algorithm.
    pub balancer: Balancer,
    /// Affinity cookie.
    pub sticky: Option<Sticky>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response head timeout.
    pub response_timeout: Duration,
    /// Body read inactivity timeout.
    pub idle_timeout: Duration,
    /// Whole exchange timeout; None = unlimited.
    pub total_timeout: Option<Duration>,
    /// Idle connections kept per endpoint per worker.
    pub pool_max_idle: usize,
    /// Idle pooled connection lifetime.
    pub pool_idle_timeout: Duration,
    /// Extra attempts.
    pub retries: u32,
    /// Retry budget ratio.
    pub retry_ratio: f64,
    /// Retries always allowed per second.
    pub retry_min_per_second: u32,
    /// Concurrent requests (whole process).
    pub max_connections: u32,
    /// Waiting requests (whole process).
    pub max_pending: u32,
    /// Wait for a slot.
    pub queue_timeout: Duration,
    /// Consecutive failures to eject; 0 = never.
    pub max_failures: u32,
    /// Ejection time.
    pub cooldown: Duration,
    /// Active checks.
    pub health_check: Option<HealthCheck>,
    /// Endpoints each worker balances over; None = every endpoint.
    pub subset_size: Option<usize>,
}

/// A host matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host.
    Any,
    /// Exact, lowercase.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// A header or query matcher; `None` value = must be present.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Lowercase header name or exact query key.
    pub name: String,
    /// Required value.
    pub value: Option<String>,
}

/// One target of a route.
#[derive(Debug, Clone)]
pub struct SplitTarget {
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Weighted share.
    pub weight: u32,
    /// Header rule that selects this target outright.
    pub when: Option<Matcher>,
}

/// A direct response.
#[derive(Debug, Clone)]
pub struct Respond {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to one of these groups.
    Proxy(Vec<SplitTarget>),
    /// Answer directly.
    Respond(Respond),
}

/// A route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Table name.
    pub name: String,
    /// Host matcher.
    pub host: HostPattern,
    /// Path pattern as written (validated).
    pub path: String,
    /// Allowed methods, uppercase; None = any.
    pub methods: Option<Vec<String>>,
    /// Header matchers.
    pub match_headers: Vec<Matcher>,
    /// Query matchers.
    pub match_query: Vec<Matcher>,
    /// Action.
    pub action: RouteAction,
    /// Prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Path template.
    pub rewrite_path: Option<String>,
    /// Host sent upstream.
    pub host_rewrite: Option<String>,
    /// Body limit override.
    pub max_body_bytes: Option<u64>,
}

/// What validation may touch besides the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Reads `{ file = .. }` secrets and resolves host names in listen, admin and DNS server
    /// addresses: what `parse` and `load_file` do.
    World,
    /// Neither: such a secret or address is a validation error, so arbitrary text cannot block on a
    /// file (`/dev/zero`) or the resolver. For the fuzz target. `{ env = .. }` is still read (process
    /// memory only); endpoint names are only checked here either way (`Snapshot::build` resolves them).
    TextOnly,
}

struct Ctx {
    file: String,
    reach: Reach,
}

/// Upstream index by name. Names are unique (they are TOML table keys).
type UpstreamIndex<'a> = std::collections::HashMap<&'a str, usize, ahash::RandomState>;

impl Ctx {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Validates the raw TOML structs into a `Config`.
pub fn validate(raw: ConfigToml, source: Source) -> Result<Config, ConfigError> {
    validate_in(raw, source, Reach::World)
}

/// `validate`, touching only what `reach` allows.
pub(super) fn validate_in(
    raw: ConfigToml,
    source: Source,
    reach: Reach,
) -> Result<Config, ConfigError> {
    let cx = Ctx {
        file: source.label(),
        reach,
    };

    let driver = match raw.driver.as_str() {
        "auto" => Driver::Auto,
        "io_uring" | "iouring" => Driver::IoUring,
        "epoll" | "legacy" => Driver::Epoll,
        other => {
            return Err(cx.err(
                "driver",
                format!("expected \"auto\", \"io_uring\" or \"epoll\", got {other:?}"),
            ))
        }
    };
    if let Some(cpus) = &raw.cpus {
        if cpus.is_empty() {
            return Err(cx.err("cpus", "expected a non-empty list of CPU numbers"));
        }
    }
    let workers = match raw.workers {
        WorkersToml::Auto => None,
        WorkersToml::Count(n) => Some(n),
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
        return Err(cx.err(
            "log_level",
            format!(
                "expected a level like \"info\" or \"debug\", got {:?}",
                raw.log_level
            ),
        ));
    }

    let admin = match raw.admin {
        None => None,
        Some(a) => Some(Admin {
            listen: socket_addr(&cx, "admin.listen", &a.listen)?,
            token: match &a.token {
                None => None,
                Some(SecretToml::File { file }) if cx.reach == Reach::TextOnly => {
                    return Err(cx.err(
                        "admin.token",
                        format!("secret file {file:?} is not read in text-only validation"),
                    ))
                }
                Some(t) => Some(Secret::resolve(t).map_err(|m| cx.err("admin.token", m))?),
            },
        }),
    };

    if raw.listeners.is_empty() {
        return Err(cx.err(
            "listeners",
            "expected at least one [listeners.NAME] table with `listen = \"ip:port\"`",
        ));
    }
    let mut listeners = Vec::new();
    for (name, l) in &raw.listeners {
        let key = format!("listeners.{name}.listen");
        let addr = socket_addr(&cx, &key, &l.listen)?;
        if addr.port() != 0 && listeners.iter().any(|o: &Listener| o.addr == addr) {
            return Err(cx.err(key, format!("address {addr} is used by another listener")));
        }
        listeners.push(Listener {
            name: name.clone(),
            addr,
        });
    }

    let h = &raw.http;
    let http = Http {
        header_timeout: nonzero(&cx, "http.header_timeout", h.header_timeout)?,
        idle_timeout: nonzero(&cx, "http.idle_timeout", h.idle_timeout)?,
        body_timeout: nonzero(&cx, "http.body_timeout", h.body_timeout)?,
        max_header_bytes: range(
            &cx,
            "http.max_header_bytes",
            h.max_header_bytes,
            1024,
            1 << 20,
        )? as usize,
        max_headers: range(&cx, "http.max_headers", h.max_headers as u64, 1, 256)? as usize,
        max_uri_bytes: range(&cx, "http.max_uri_bytes", h.max_uri_bytes, 16, 1 << 20)? as usize,
        max_body_bytes: h.max_body_bytes,
    };

    let dns = Dns {
        servers: match &raw.dns.servers {
            None => Vec::new(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, s)| socket_addr(&cx, &format!("dns.servers[{i}]"), s))
                .collect::<Result<_, _>>()?,
        },
        min_ttl: raw.dns.min_ttl.unwrap_or(Duration::from_secs(1)),
        max_ttl: raw.dns.max_ttl.unwrap_or(Duration::from_secs(300)),
    };
    if dns.min_ttl > dns.max_ttl {
        return Err(cx.err("dns.min_ttl", "must not exceed dns.max_ttl"));
    }

    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    for (name, u) in raw.upstreams {
        upstreams.push(upstream(&cx, name, u)?);
    }

    // Routes name their upstream; hashed, so that many routes over many upstreams stay linear.
    let by_name: UpstreamIndex = upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (name, r) in raw.routes {
        routes.push(route(&cx, name, r, &upstreams, &by_name)?);
    }

    let access_log = match raw.access_log {
        Some(t) => Some(super::monitoring::access_log(&cx.file, t)?),
        None => None,
    };
    let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut alerts = Vec::new();
    for (name, t) in raw.alerts {
        alerts.push(super::monitoring::alert(
            &cx.file,
            name,
            t,
            &route_names,
            &upstream_names,
        )?);
    }
    let signals = match raw.signals {
        Some(t) => super::monitoring::signals(&cx.file, t)?,
        None => super::monitoring::Signals::default(),
    };

    Ok(Config {
        source,
        workers,
        cpus: raw.cpus,
        driver,
        log_level: raw.log_level,
        shutdown_timeout: raw.shutdown_timeout,
        metrics: raw.metrics,
        admin,
        listeners,
        http,
        upstreams,
        routes,
        dns,
        access_log,
        alerts,
        signals,
    })
}

fn nonzero(cx: &Ctx, key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(cx.err(key, "expected a duration greater than 0"))
    } else {
        Ok(d)
    }
}

fn range(cx: &Ctx, key: &str, v: u64, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(cx.err(key, format!("expected {lo}..={hi}, got {v}")))
    }
}

fn socket_addr(cx: &Ctx, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if cx.reach == Reach::TextOnly {
        return Err(cx.err(
            key,
            format!(
                "expected \"ip:port\" (names are not resolved in text-only validation), got {s:?}"
            ),
        ));
    }
    // Names such as "localhost:8080" are resolved once, at load time.
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| cx.err(key, format!("{s:?} resolves to no address"))),
        Err(_) => Err(cx.err(
            key,
            format!("expected \"ip:port\" or \"host:port\", got {s:?}"),
        )),
    }
}

fn endpoint(cx: &Ctx, key: &str, address: &str, weight: u32) -> Result<EndpointSpec, ConfigError> {
    if !(1..=1000).contains(&weight) {
        return Err(cx.err(
            format!("{key}.weight"),
            format!("expected 1..=1000, got {weight}"),
        ));
    }
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(EndpointSpec {
            host: a.ip().to_string(),
            port: a.port(),
            weight,
            literal: Some(a),
        });
    }
    let bad = || cx.err(key, format!("expected \"host:port\", got {address:?}"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid_name || port == 0 {
        return Err(bad());
    }
    Ok(EndpointSpec {
        host: host.to_ascii_lowercase(),
        port,
        weight,
        literal: None,
    })
}

fn upstream(cx: &Ctx, name: String, u: UpstreamToml) -> Result<Upstream, ConfigError> {
    let base = format!("upstreams.{name}");
    if u.endpoints.is_empty() {
        return Err(cx.err(
            format!("{base}.endpoints"),
            "expected at least one endpoint",
        ));
    }
    let mut endpoints = Vec::new();
    for (i, e) in u.endpoints.iter().enumerate() {
        let key = format!("{base}.endpoints[{i}]");
        endpoints.push(match e {
            EndpointToml::Plain(a) => endpoint(cx, &key, a, 1)?,
            EndpointToml::Weighted(w) => endpoint(cx, &key, &w.address, w.weight)?,
        });
    }
    let hash_on = match &u.hash_on {
        None => None,
        Some(s) => Some(parse_hash_on(s).ok_or_else(|| {
            cx.err(
                format!("{base}.hash_on"),
                format!("expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\", got {s:?}"),
            )
        })?),
    };
    let balancer = match u.balancer.as_str() {
        "round_robin" => Balancer::RoundRobin,
        "least_request" => Balancer::LeastRequest,
        "consistent_hash" => Balancer::ConsistentHash(hash_on.clone().unwrap_or(HashOn::ClientIp)),
        other => {
            return Err(cx.err(
                format!("{base}.balancer"),
                format!(
                "expected \"round_robin\", \"least_request\" or \"consistent_hash\", got {other:?}"
            ),
            ))
        }
    };
    if hash_on.is_some() && !matches!(balancer, Balancer::ConsistentHash(_)) {
        return Err(cx.err(
            format!("{base}.hash_on"),
            "only used with balancer = \"consistent_hash\"",
        ));
    }
    let sticky = match u.sticky {
        None => None,
        Some(s) => {
            if !is_token(&s.cookie) {
                return Err(cx.err(
                    format!("{base}.sticky.cookie"),
                    format!("expected a cookie name, got {:?}", s.cookie),
                ));
            }
            Some(Sticky {
                cookie: s.cookie,
                ttl: s.ttl,
            })
        }
    };
    let rb = &u.retry_budget;
    if !(0.0..=1.0).contains(&rb.ratio) {
        return Err(cx.err(
            format!("{base}.retry_budget.ratio"),
            format!("expected 0.0..=1.0, got {}", rb.ratio),
        ));
    }
    if u.retries > 10 {
        return Err(cx.err(
            format!("{base}.retries"),
            format!("expected 0..=10, got {}", u.retries),
        ));
    }
    let cb = &u.circuit_breaker;
    if cb.max_connections == 0 {
        return Err(cx.err(
            format!("{base}.circuit_breaker.max_connections"),
            "expected at least 1",
        ));
    }
    let health_check = match u.health_check {
        None => None,
        Some(h) => {
            if !h.path.starts_with('/') {
                return Err(cx.err(
                    format!("{base}.health_check.path"),
                    format!("expected a path starting with '/', got {:?}", h.path),
                ));
            }
            if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                return Err(cx.err(
                    format!("{base}.health_check"),
                    "thresholds must be at least 1",
                ));
            }
            Some(HealthCheck {
                path: h.path,
                host: h.host,
                interval: nonzero(cx, &format!("{base}.health_check.interval"), h.interval)?,
                timeout: nonzero(cx, &format!("{base}.health_check.timeout"), h.timeout)?,
                healthy_threshold: h.healthy_threshold,
                unhealthy_threshold: h.unhealthy_threshold,
            })
        }
    };
    let subset_size = match u.subset_size {
        None => None,
        Some(0) => {
            return Err(cx.err(
                format!("{base}.subset_size"),
                "expected at least 1, got 0 (leave it out to use every endpoint on every worker)",
            ))
        }
        Some(n) => {
            // A key must map to the same endpoint on every worker; subsets differ per worker.
            if matches!(balancer, Balancer::ConsistentHash(_)) {
                return Err(cx.err(
                    format!("{base}.subset_size"),
                    "cannot be used with balancer = \"consistent_hash\": each worker sees different endpoints",
                ));
            }
            if sticky.is_some() {
                return Err(cx.err(
                    format!("{base}.subset_size"),
                    "cannot be used with `sticky`: each worker sees different endpoints",
                ));
            }
            Some(n as usize)
        }
    };
    Ok(Upstream {
        subset_size,
        connect_timeout: nonzero(cx, &format!("{base}.connect_timeout"), u.connect_timeout)?,
        response_timeout: nonzero(cx, &format!("{base}.response_timeout"), u.response_timeout)?,
        idle_timeout: nonzero(cx, &format!("{base}.idle_timeout"), u.idle_timeout)?,
        pool_idle_timeout: nonzero(
            cx,
            &format!("{base}.pool.idle_timeout"),
            u.pool.idle_timeout,
        )?,
        name,
        endpoints,
        balancer,
        sticky,
        total_timeout: if u.total_timeout.is_zero() {
            None
        } else {
            Some(u.total_timeout)
        },
        pool_max_idle: u.pool.max_idle,
        retries: u.retries,
        retry_ratio: rb.ratio,
        retry_min_per_second: rb.min_per_second,
        max_connections: cb.max_connections,
        max_pending: cb.max_pending,
        queue_timeout: cb.queue_timeout,
        max_failures: u.passive_health.max_failures,
        cooldown: u.passive_health.cooldown,
        health_check,
    })
}

fn parse_hash_on(s: &str) -> Option<HashOn> {
    if s == "client_ip" {
        return Some(HashOn::ClientIp);
    }
    let (kind, name) = s.split_once(':')?;
    if !is_token(name) {
        return None;
    }
    match kind {
        "header" => Some(HashOn::Header(name.to_ascii_lowercase())),
        "cookie" => Some(HashOn::Cookie(name.to_string())),
        _ => None,
    }
}

/// RFC 9110 token characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_value_ok(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// `key` is called only to name an error: building it for every route was a measurable part of a reload.
fn matchers(
    cx: &Ctx,
    key: impl Fn() -> String,
    m: Option<indexmap::IndexMap<String, String>>,
    header: bool,
) -> Result<Vec<Matcher>, ConfigError> {
    let Some(m) = m else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(m.len());
    for (name, value) in m {
        if header && !is_token(&name) {
            return Err(cx.err(format!("{}.{name}", key()), "expected a header name"));
        }
        if !header_value_ok(&value) {
            return Err(cx.err(format!("{}.{name}", key()), "value has control characters"));
        }
        out.push(Matcher {
            name: if header {
                name.to_ascii_lowercase()
            } else {
                name
            },
            value: if value == "*" { None } else { Some(value) },
        });
    }
    Ok(out)
}

/// Checks a path pattern; returns its parameter names (and whether it ends in `*`).
pub fn path_params(pattern: &str) -> Result<(Vec<String>, bool), String> {
    if !pattern.starts_with('/') {
        return Err(format!(
            "expected a path starting with '/', got {pattern:?}"
        ));
    }
    let mut params = Vec::new();
    let mut segs = pattern[1..].split('/').peekable();
    let mut wildcard = false;
    while let Some(seg) = segs.next() {
        if seg == "*" {
            if segs.peek().is_some() {
                return Err(format!("'*' must be the last segment in {pattern:?}"));
            }
            wildcard = true;
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("bad parameter name {seg:?} in {pattern:?}"));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("parameter {{{name}}} appears twice in {pattern:?}"));
            }
            params.push(name.to_string());
        } else if seg
            .bytes()
            .any(|b| matches!(b, b'{' | b'}' | b'*' | b'?' | b'#') || b <= b' ' || b == 0x7f)
        {
            return Err(format!(
                "bad segment {seg:?} in {pattern:?} (literals, {{name}} or a final *)"
            ));
        }
    }
    if params.len() > super::MAX_PARAMS {
        return Err(format!("at most {} parameters per path", super::MAX_PARAMS));
    }
    Ok((params, wildcard))
}

fn route(
    cx: &Ctx,
    name: String,
    r: RouteToml,
    upstreams: &[Upstream],
    by_name: &UpstreamIndex,
) -> Result<Route, ConfigError> {
    // Key paths are built only for an error: formatting them for each of 10,000 routes cost more than
    // checking the route.
    let base = || format!("routes.{name}");
    let host = match r.host {
        None => HostPattern::Any,
        Some(h) if h == "*" => HostPattern::Any,
        Some(h) => {
            // Most hosts are written in lowercase already: keep the string rather than copy it.
            let lower = if h.bytes().any(|b| b.is_ascii_uppercase()) {
                h.to_ascii_lowercase()
            } else {
                h.clone()
            };
            let check = lower.strip_prefix("*.").unwrap_or(&lower);
            if check.is_empty()
                || !check
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
            {
                return Err(cx.err(
                    format!("{}.host", base()),
                    format!("expected \"example.com\", \"*.example.com\" or \"*\", got {h:?}"),
                ));
            }
            match lower.strip_prefix('*') {
                Some(suffix) => HostPattern::Suffix(suffix.to_string()),
                None => HostPattern::Exact(lower),
            }
        }
    };
    let (params, wildcard) =
        path_params(&r.path).map_err(|m| cx.err(format!("{}.path", base()), m))?;
    let methods = match r.methods {
        None => None,
        Some(ms) => {
            let mut out = Vec::new();
            for (i, m) in ms.into_iter().enumerate() {
                if !is_token(&m) {
                    return Err(cx.err(
                        format!("{}.methods[{i}]", base()),
                        format!("expected a method name, got {m:?}"),
                    ));
                }
                out.push(m.to_ascii_uppercase());
            }
            Some(out)
        }
    };
    let find = |key: &dyn Fn() -> String, n: &str| -> Result<usize, ConfigError> {
        by_name.get(n).copied().ok_or_else(|| {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            cx.err(
                key(),
                format!("unknown upstream {n:?} (defined: {known:?})"),
            )
        })
    };
    let action = match (r.respond, r.upstream, r.split) {
        (Some(resp), None, None) => {
            if !(100..=999).contains(&resp.status) || (100..200).contains(&resp.status) {
                return Err(cx.err(
                    format!("{}.respond.status", base()),
                    format!("expected 200..=999, got {}", resp.status),
                ));
            }
            let mut headers = Vec::new();
            for (k, v) in resp.headers {
                if !is_token(&k) || !header_value_ok(&v) {
                    return Err(cx.err(
                        format!("{}.respond.headers.{k}", base()),
                        "expected a header name and a value without control characters",
                    ));
                }
                let lower = k.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ) {
                    return Err(cx.err(
                        format!("{}.respond.headers.{k}", base()),
                        "set by sluice itself",
                    ));
                }
                headers.push((k, v));
            }
            RouteAction::Respond(Respond {
                status: resp.status,
                body: resp.body,
                headers,
            })
        }
        (None, Some(u), None) => RouteAction::Proxy(vec![SplitTarget {
            upstream: find(&|| format!("{}.upstream", base()), &u)?,
            weight: 1,
            when: None,
        }]),
        (None, None, Some(split)) => {
            if split.is_empty() {
                return Err(cx.err(format!("{}.split", base()), "expected at least one entry"));
            }
            let mut targets = Vec::new();
            for (i, s) in split.into_iter().enumerate() {
                let key = || format!("{}.split[{i}]", base());
                let upstream = find(&|| format!("{}.upstream", key()), &s.upstream)?;
                let when = match (s.header, s.value) {
                    (Some(h), v) => {
                        if !is_token(&h) {
                            return Err(
                                cx.err(format!("{}.header", key()), "expected a header name")
                            );
                        }
                        Some(Matcher {
                            name: h.to_ascii_lowercase(),
                            value: v.filter(|v| v != "*"),
                        })
                    }
                    (None, Some(_)) => {
                        return Err(cx.err(format!("{}.value", key()), "needs `header`"))
                    }
                    (None, None) => None,
                };
                let weight = match (s.weight, &when) {
                    (Some(w), _) if w > 1_000_000 => {
                        return Err(cx.err(
                            format!("{}.weight", key()),
                            format!("expected 0..=1000000, got {w}"),
                        ))
                    }
                    (Some(w), _) => w,
                    (None, Some(_)) => 0,
                    (None, None) => {
                        return Err(cx.err(key(), "expected `weight`, or `header` (and `value`)"))
                    }
                };
                targets.push(SplitTarget {
                    upstream,
                    weight,
                    when,
                });
            }
            if targets.iter().all(|t| t.weight == 0) && targets.iter().all(|t| t.when.is_some()) {
                return Err(cx.err(format!("{}.split", base()), "needs at least one entry with a weight above 0 for requests no header rule selects"));
            }
            RouteAction::Proxy(targets)
        }
        (None, None, None) => {
            return Err(cx.err(base(), "expected one of `upstream`, `split` or `respond`"))
        }
        _ => {
            return Err(cx.err(
                base(),
                "`upstream`, `split` and `respond` are exclusive: set exactly one",
            ))
        }
    };
    if let Some(p) = &r.strip_prefix {
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') {
            return Err(cx.err(
                format!("{}.strip_prefix", base()),
                format!("expected a path like \"/v1\", got {p:?}"),
            ));
        }
    }
    if let Some(t) = &r.rewrite_path {
        if r.strip_prefix.is_some() {
            return Err(cx.err(
                format!("{}.rewrite_path", base()),
                "use either strip_prefix or rewrite_path",
            ));
        }
        if !t.starts_with('/') {
            return Err(cx.err(
                format!("{}.rewrite_path", base()),
                format!("expected a path starting with '/', got {t:?}"),
            ));
        }
        let mut rest = t.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| cx.err(format!("{}.rewrite_path", base()), "unclosed '{'"))?
                + open;
            let name = &rest[open + 1..close];
            if name == "*" {
                if !wildcard {
                    return Err(cx.err(
                        format!("{}.rewrite_path", base()),
                        "{*} needs a path ending in /*",
                    ));
                }
            } else if !params.iter().any(|p| p == name) {
                return Err(cx.err(
                    format!("{}.rewrite_path", base()),
                    format!("{{{name}}} is not a parameter of path {:?}", r.path),
                ));
            }
            rest = &rest[close + 1..];
        }
        if t.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(cx.err(
                format!("{}.rewrite_path", base()),
                "has spaces or control characters",
            ));
        }
    }
    if let Some(h) = &r.host_rewrite {
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        {
            return Err(cx.err(
                format!("{}.host_rewrite", base()),
                format!("expected a host name, got {h:?}"),
            ));
        }
    }
    let match_headers = matchers(
        cx,
        || format!("{}.match_headers", base()),
        r.match_headers,
        true,
    )?;
    let match_query = matchers(
        cx,
        || format!("{}.match_query", base()),
        r.match_query,
        false,
    )?;
    Ok(Route {
        name,
        host,
        path: r.path,
        methods,
        match_headers,
        match_query,
        action,
        strip_prefix: r.strip_prefix,
        rewrite_path: r.rewrite_path,
        host_rewrite: r.host_rewrite,
        max_body_bytes: r.max_body_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        super::super::parse(s, Source::File("t.toml".into()))
    }

    const MIN: &str = "[listeners.a]\nlisten = \"127.0.0.1:0\"\n";

    #[test]
    fn minimal_contract_config_loads() {
        let c = parse(
            "workers = 1\n[listeners.main]\nlisten = \"127.0.0.1:0\"\n[http]\nheader_timeout = \"5s\"\n\
             [upstreams.backend]\nendpoints = [\"127.0.0.1:9\"]\nresponse_timeout = \"5s\"\n\
             [routes.all]\npath = \"/*\"\nupstream = \"backend\"\n",
        )
        .unwrap();
        assert_eq!(c.workers, Some(1));
        assert_eq!(c.upstreams[0].response_timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MIN}[http]\nheader_timout = \"5s\"\n")).unwrap_err();
        assert_eq!(e.key, "http.header_timout");
        assert!(e.message.contains("header_timout"), "{e}");
    }

    #[test]
    fn bad_weight_names_key() {
        let e = parse(&format!(
            "{MIN}[upstreams.api]\nendpoints = [\"127.0.0.1:1\", {{ address = \"127.0.0.1:2\", weight = 0 }}]\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml: upstreams.api.endpoints[1].weight: expected 1..=1000, got 0"
        );
    }

    #[test]
    fn unknown_upstream_in_route() {
        let e = parse(&format!(
            "{MIN}[routes.r]\npath = \"/\"\nupstream = \"nope\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "routes.r.upstream");
    }

    #[test]
    fn duration_needs_unit() {
        let e = parse(&format!("{MIN}[http]\nidle_timeout = \"5\"\n")).unwrap_err();
        assert_eq!(e.key, "http.idle_timeout");
    }

    #[test]
    fn subset_size() {
        let up = |extra: &str| {
            parse(&format!(
                "{MIN}[upstreams.api]\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n{extra}\n"
            ))
        };
        assert_eq!(up("").unwrap().upstreams[0].subset_size, None);
        assert_eq!(
            up("subset_size = 1").unwrap().upstreams[0].subset_size,
            Some(1)
        );
        let e = up("subset_size = 0").unwrap_err();
        assert_eq!(e.key, "upstreams.api.subset_size");
        assert!(e.message.starts_with("expected at least 1, got 0"), "{e}");
        let e = up("subset_size = -1").unwrap_err();
        assert_eq!(e.key, "upstreams.api.subset_size");
        let e = up("subset_size = 1\nbalancer = \"consistent_hash\"").unwrap_err();
        assert_eq!(e.key, "upstreams.api.subset_size");
        let e = up("subset_size = 1\nsticky = {}").unwrap_err();
        assert_eq!(e.key, "upstreams.api.subset_size");
    }

    #[test]
    fn text_only_reads_no_secret_file_and_resolves_no_name() {
        let text_only = |s: &str| super::super::parse_text_only(s, Source::File("t.toml".into()));
        let path = std::env::temp_dir().join(format!("sluice-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let admin = format!(
            "{MIN}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = {:?} }}\n",
            path.display().to_string()
        );
        let read = parse(&admin);
        let refused = text_only(&admin);
        std::fs::remove_file(&path).unwrap();
        let token = read.unwrap().admin.unwrap().token.unwrap();
        assert_eq!(token.expose(), "s3cret");
        let e = refused.unwrap_err();
        assert_eq!(e.key, "admin.token");
        assert!(e.message.contains("not read"), "{e}");
        // `/dev/zero` would never finish reading: it is refused before any open.
        let e = text_only(&format!(
            "{MIN}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"/dev/zero\" }}\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "admin.token");

        for (text, key) in [
            (
                "[listeners.a]\nlisten = \"localhost:0\"\n",
                "listeners.a.listen",
            ),
            (
                &format!("{MIN}[admin]\nlisten = \"example.com:9901\"\n"),
                "admin.listen",
            ),
            (
                &format!("{MIN}[dns]\nservers = [\"ns.example:53\"]\n"),
                "dns.servers[0]",
            ),
        ] {
            let e = text_only(text).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.message.contains("not resolved"), "{e}");
        }
        // Literals, env secrets and endpoint names (resolved later, by the snapshot) still pass.
        let c = text_only(&format!(
            "{MIN}[admin]\nlisten = \"[::1]:9901\"\ntoken = \"inline\"\n\
             [upstreams.u]\nendpoints = [\"backend.internal:80\", \"10.0.0.1:80\"]\n"
        ))
        .unwrap();
        assert_eq!(c.upstreams[0].endpoints[0].host, "backend.internal");
        assert!(c.upstreams[0].endpoints[0].literal.is_none());
    }

    #[test]
    fn path_patterns() {
        assert!(path_params("/a/{id}/*").is_ok());
        assert!(path_params("/a/*/b").is_err());
        assert!(path_params("a").is_err());
        assert!(path_params("/{a}/{a}").is_err());
    }
}
