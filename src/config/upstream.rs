//! `[upstreams.NAME]`: endpoints, balancer, sticky sessions, pool, timeouts, retries and their budget,
//! circuit breaker, passive and active health.

use super::check::{is_token, nonzero, Ctx};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// An endpoint: "host:port" or `{ address, weight }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EndpointToml {
    /// Just the address, weight 1.
    Plain(String),
    /// Address with weight.
    Weighted(WeightedEndpointToml),
}
/// `{ address = "...", weight = N }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpointToml {
    /// "host:port".
    pub address: String,
    /// 1..=1000.
    #[serde(default = "dflt::weight")]
    pub weight: u32,
}
/// `[upstreams.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamToml {
    /// The endpoints.
    pub endpoints: Vec<EndpointToml>,
    /// "round_robin", "least_request" or "consistent_hash".
    #[serde(default = "dflt::balancer")]
    pub balancer: String,
    /// Key for consistent_hash: "client_ip", "header:NAME", "cookie:NAME".
    pub hash_on: Option<String>,
    /// Affinity cookie issued by sluice.
    pub sticky: Option<StickyToml>,
    /// TCP connect timeout.
    #[serde(
        default = "dflt::connect_timeout",
        deserialize_with = "units::duration"
    )]
    pub connect_timeout: Duration,
    /// Until the response head arrives.
    #[serde(
        default = "dflt::response_timeout",
        deserialize_with = "units::duration"
    )]
    pub response_timeout: Duration,
    /// Longest gap between reads of the response body.
    #[serde(
        default = "dflt::upstream_idle_timeout",
        deserialize_with = "units::duration"
    )]
    pub idle_timeout: Duration,
    /// Whole exchange; 0 = unlimited.
    #[serde(default, deserialize_with = "units::duration")]
    pub total_timeout: Duration,
    /// Idle connection pool.
    #[serde(default)]
    pub pool: PoolToml,
    /// Extra attempts after a failure that is safe to retry.
    #[serde(default = "dflt::retries")]
    pub retries: u32,
    /// Caps retries to a share of traffic.
    #[serde(default)]
    pub retry_budget: RetryBudgetToml,
    /// Connection and queue limits.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerToml,
    /// Ejection after consecutive failures.
    #[serde(default)]
    pub passive_health: PassiveHealthToml,
    /// Optional active HTTP health checks.
    pub health_check: Option<HealthCheckToml>,
    /// Endpoints each worker uses (a deterministic per-worker subset); absent = all of them.
    pub subset_size: Option<u32>,
    /// TLS to the endpoints.
    pub tls: Option<super::tls::UpstreamTlsToml>,
}
/// `sticky = { cookie, ttl }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyToml {
    /// Cookie name.
    #[serde(default = "dflt::sticky_cookie")]
    pub cookie: String,
    /// Max-Age of the cookie; absent = session cookie.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub ttl: Option<Duration>,
}
/// `pool = { max_idle, idle_timeout }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolToml {
    /// Idle connections kept per endpoint per worker.
    #[serde(default = "dflt::max_idle")]
    pub max_idle: usize,
    /// How long an idle pooled connection is kept.
    #[serde(
        default = "dflt::pool_idle_timeout",
        deserialize_with = "units::duration"
    )]
    pub idle_timeout: Duration,
}
impl Default for PoolToml {
    fn default() -> Self {
        PoolToml {
            max_idle: dflt::max_idle(),
            idle_timeout: dflt::pool_idle_timeout(),
        }
    }
}
/// `retry_budget = { ratio, min_per_second }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetToml {
    /// Retries allowed as a share of requests.
    #[serde(default = "dflt::retry_ratio")]
    pub ratio: f64,
    /// Retries always allowed per second.
    #[serde(default = "dflt::retry_min")]
    pub min_per_second: u32,
}
impl Default for RetryBudgetToml {
    fn default() -> Self {
        RetryBudgetToml {
            ratio: dflt::retry_ratio(),
            min_per_second: dflt::retry_min(),
        }
    }
}
/// `circuit_breaker = { max_connections, max_pending, queue_timeout }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerToml {
    /// Concurrent upstream requests for the group (divided among workers).
    #[serde(default = "dflt::max_connections")]
    pub max_connections: u32,
    /// Requests waiting for a slot (divided among workers).
    #[serde(default = "dflt::max_pending")]
    pub max_pending: u32,
    /// How long a request waits for a slot before 503.
    #[serde(default = "dflt::queue_timeout", deserialize_with = "units::duration")]
    pub queue_timeout: Duration,
}
impl Default for CircuitBreakerToml {
    fn default() -> Self {
        CircuitBreakerToml {
            max_connections: dflt::max_connections(),
            max_pending: dflt::max_pending(),
            queue_timeout: dflt::queue_timeout(),
        }
    }
}
/// `passive_health = { max_failures, cooldown }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthToml {
    /// Consecutive failures before ejection; 0 disables.
    #[serde(default = "dflt::max_failures")]
    pub max_failures: u32,
    /// Ejection time.
    #[serde(default = "dflt::cooldown", deserialize_with = "units::duration")]
    pub cooldown: Duration,
}
impl Default for PassiveHealthToml {
    fn default() -> Self {
        PassiveHealthToml {
            max_failures: dflt::max_failures(),
            cooldown: dflt::cooldown(),
        }
    }
}
/// `health_check = { path, interval, timeout, healthy_threshold, unhealthy_threshold }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckToml {
    /// Path to GET.
    #[serde(default = "dflt::hc_path")]
    pub path: String,
    /// Host header to send; default: the endpoint address.
    pub host: Option<String>,
    /// Time between probes.
    #[serde(default = "dflt::hc_interval", deserialize_with = "units::duration")]
    pub interval: Duration,
    /// Probe timeout.
    #[serde(default = "dflt::hc_timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    /// Successes to mark up.
    #[serde(default = "dflt::hc_healthy")]
    pub healthy_threshold: u32,
    /// Failures to mark down.
    #[serde(default = "dflt::hc_unhealthy")]
    pub unhealthy_threshold: u32,
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
/// Spelled as in the config (`round_robin`, `consistent_hash (hash_on = header:x-user-id)`), for what
/// users read: `--check`, the admin API, the stats page.
impl std::fmt::Display for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Balancer::RoundRobin => f.write_str("round_robin"),
            Balancer::LeastRequest => f.write_str("least_request"),
            Balancer::ConsistentHash(on) => write!(f, "consistent_hash (hash_on = {on})"),
        }
    }
}

/// Spelled as `hash_on` is written: `client_ip`, `header:NAME`, `cookie:NAME`.
impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::ClientIp => f.write_str("client_ip"),
            HashOn::Header(n) => write!(f, "header:{n}"),
            HashOn::Cookie(n) => write!(f, "cookie:{n}"),
        }
    }
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
    /// TLS to the endpoints, material loaded.
    pub tls: Option<std::sync::Arc<super::tls::UpstreamTls>>,
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
pub(super) fn upstream(cx: &Ctx, name: String, u: UpstreamToml) -> Result<Upstream, ConfigError> {
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
    let tls = match &u.tls {
        Some(t) => Some(std::sync::Arc::new(super::tls::upstream_tls(cx, &name, t)?)),
        None => None,
    };
    Ok(Upstream {
        tls,
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

/// Defaults, one function per key (serde needs functions); each is named after its key.
mod dflt {
    use std::time::Duration;
    pub fn balancer() -> String {
        "round_robin".into()
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn cooldown() -> Duration {
        Duration::from_secs(10)
    }
    pub fn hc_healthy() -> u32 {
        2
    }
    pub fn hc_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn hc_path() -> String {
        "/healthz".into()
    }
    pub fn hc_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn hc_unhealthy() -> u32 {
        3
    }
    pub fn max_connections() -> u32 {
        10_000
    }
    pub fn max_failures() -> u32 {
        5
    }
    pub fn max_idle() -> usize {
        64
    }
    pub fn max_pending() -> u32 {
        1_000
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn queue_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn retry_min() -> u32 {
        10
    }
    pub fn retry_ratio() -> f64 {
        0.2
    }
    pub fn sticky_cookie() -> String {
        "sluice_affinity".into()
    }
    pub fn upstream_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn weight() -> u32 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancers_and_hash_keys_read_as_configured() {
        assert_eq!(Balancer::RoundRobin.to_string(), "round_robin");
        assert_eq!(Balancer::LeastRequest.to_string(), "least_request");
        let h = Balancer::ConsistentHash(HashOn::Header("x-user-id".into()));
        assert_eq!(
            h.to_string(),
            "consistent_hash (hash_on = header:x-user-id)"
        );
        assert_eq!(HashOn::ClientIp.to_string(), "client_ip");
        assert_eq!(HashOn::Cookie("sid".into()).to_string(), "cookie:sid");
        for text in ["client_ip", "header:x-user-id", "cookie:sid"] {
            assert_eq!(
                parse_hash_on(text).map(|h| h.to_string()).as_deref(),
                Some(text)
            );
        }
    }
}
