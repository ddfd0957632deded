//! The configuration as written: serde structs that mirror the TOML exactly.
//! Every struct denies unknown keys; defaults live here so `--check` and the README agree.

use super::secret::SecretToml;
use super::units;
use indexmap::IndexMap;
use serde::Deserialize;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigToml {
    /// "auto" or a number of workers.
    #[serde(default)]
    pub workers: WorkersToml,
    /// Explicit CPUs to pin workers to, in order.
    pub cpus: Option<Vec<usize>>,
    /// "auto", "io_uring" or "epoll".
    #[serde(default = "dflt::driver")]
    pub driver: String,
    /// Log level filter when RUST_LOG is unset.
    #[serde(default = "dflt::log_level")]
    pub log_level: String,
    /// Per-request metrics (counters, histograms); off only to measure their cost.
    #[serde(default = "dflt::metrics")]
    pub metrics: bool,
    /// How long a drain waits for in-flight requests.
    #[serde(
        default = "dflt::shutdown_timeout",
        deserialize_with = "units::duration"
    )]
    pub shutdown_timeout: Duration,
    /// The admin listener.
    pub admin: Option<AdminToml>,
    /// Client-facing listeners by name.
    #[serde(default)]
    pub listeners: IndexMap<String, ListenerToml>,
    /// Downstream HTTP limits and timeouts.
    #[serde(default)]
    pub http: HttpToml,
    /// Upstream groups by name.
    #[serde(default)]
    pub upstreams: IndexMap<String, UpstreamToml>,
    /// Routes by name, in precedence order for ties.
    #[serde(default)]
    pub routes: IndexMap<String, RouteToml>,
    /// DNS resolution of endpoint names.
    #[serde(default)]
    pub dns: DnsToml,
    /// Access log.
    pub access_log: Option<super::monitoring::AccessLogToml>,
    /// Alert rules by name.
    #[serde(default)]
    pub alerts: IndexMap<String, super::monitoring::AlertToml>,
    /// Scaling signals.
    pub signals: Option<super::monitoring::SignalsToml>,
}

/// `workers = "auto" | N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkersToml {
    /// One worker per CPU in the affinity mask.
    #[default]
    Auto,
    /// Exactly N workers.
    Count(usize),
}

impl<'de> Deserialize<'de> for WorkersToml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(i64),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(n) if (1..=1024).contains(&n) => Ok(WorkersToml::Count(n as usize)),
            Repr::Str(s) if s == "auto" => Ok(WorkersToml::Auto),
            Repr::Num(n) => Err(serde::de::Error::custom(format!(
                "expected 1..=1024 or \"auto\", got {n}"
            ))),
            Repr::Str(s) => Err(serde::de::Error::custom(format!(
                "expected \"auto\" or a number, got {s:?}"
            ))),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToml {
    /// Address of the admin API.
    pub listen: String,
    /// Optional bearer token.
    pub token: Option<SecretToml>,
}

/// `[listeners.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerToml {
    /// Address to bind; port 0 picks a free port once for all workers.
    pub listen: String,
}

/// `[http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToml {
    /// The client must send the whole head within this.
    #[serde(default = "dflt::header_timeout", deserialize_with = "units::duration")]
    pub header_timeout: Duration,
    /// Keep-alive idle time between requests.
    #[serde(default = "dflt::idle_timeout", deserialize_with = "units::duration")]
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this.
    #[serde(default = "dflt::body_timeout", deserialize_with = "units::duration")]
    pub body_timeout: Duration,
    /// Request head size limit.
    #[serde(default = "dflt::max_header_bytes", deserialize_with = "units::size")]
    pub max_header_bytes: u64,
    /// Request header count limit.
    #[serde(default = "dflt::max_headers")]
    pub max_headers: usize,
    /// Request-target length limit.
    #[serde(default = "dflt::max_uri_bytes", deserialize_with = "units::size")]
    pub max_uri_bytes: u64,
    /// Request body size limit.
    #[serde(default = "dflt::max_body_bytes", deserialize_with = "units::size")]
    pub max_body_bytes: u64,
}

impl Default for HttpToml {
    fn default() -> Self {
        HttpToml {
            header_timeout: dflt::header_timeout(),
            idle_timeout: dflt::idle_timeout(),
            body_timeout: dflt::body_timeout(),
            max_header_bytes: dflt::max_header_bytes(),
            max_headers: dflt::max_headers(),
            max_uri_bytes: dflt::max_uri_bytes(),
            max_body_bytes: dflt::max_body_bytes(),
        }
    }
}

/// `[dns]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DnsToml {
    /// Name servers ("ip:port"); default: those in /etc/resolv.conf.
    pub servers: Option<Vec<String>>,
    /// Lower bound on re-resolution interval.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub min_ttl: Option<Duration>,
    /// Upper bound on re-resolution interval.
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub max_ttl: Option<Duration>,
}

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

/// `[routes.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteToml {
    /// Host matcher.
    pub host: Option<String>,
    /// Path pattern.
    #[serde(default = "dflt::path")]
    pub path: String,
    /// Allowed methods.
    pub methods: Option<Vec<String>>,
    /// Header matchers ("*" = present).
    pub match_headers: Option<IndexMap<String, String>>,
    /// Query parameter matchers ("*" = present).
    pub match_query: Option<IndexMap<String, String>>,
    /// Single upstream group.
    pub upstream: Option<String>,
    /// Several groups by weight or header.
    pub split: Option<Vec<SplitToml>>,
    /// Removed from the front of the path before forwarding.
    pub strip_prefix: Option<String>,
    /// New path template with {param} and {*}.
    pub rewrite_path: Option<String>,
    /// Host header sent upstream.
    pub host_rewrite: Option<String>,
    /// Per-route body limit.
    #[serde(default, deserialize_with = "units::opt_size")]
    pub max_body_bytes: Option<u64>,
    /// Answer directly.
    pub respond: Option<RespondToml>,
}

/// One entry of `split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitToml {
    /// Target group.
    pub upstream: String,
    /// Weighted share (when no header rule matched).
    pub weight: Option<u32>,
    /// Header that selects this entry.
    pub header: Option<String>,
    /// Value of `header` that selects it ("*" = present).
    pub value: Option<String>,
}

/// `respond = { status, body, headers }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondToml {
    /// Status code.
    #[serde(default = "dflt::status")]
    pub status: u16,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Extra response headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
}

/// Defaults, one function per key (serde needs functions); each is named after its key.
#[allow(missing_docs)]
pub mod dflt {
    use std::time::Duration;
    pub fn metrics() -> bool {
        true
    }
    pub fn driver() -> String {
        "auto".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn body_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header_bytes() -> u64 {
        16 * 1024
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn max_uri_bytes() -> u64 {
        8 * 1024
    }
    pub fn max_body_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn balancer() -> String {
        "round_robin".into()
    }
    pub fn sticky_cookie() -> String {
        "sluice_affinity".into()
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn upstream_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_idle() -> usize {
        64
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn retry_ratio() -> f64 {
        0.2
    }
    pub fn retry_min() -> u32 {
        10
    }
    pub fn max_connections() -> u32 {
        10_000
    }
    pub fn max_pending() -> u32 {
        1_000
    }
    pub fn queue_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_failures() -> u32 {
        5
    }
    pub fn cooldown() -> Duration {
        Duration::from_secs(10)
    }
    pub fn hc_path() -> String {
        "/healthz".into()
    }
    pub fn hc_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn hc_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn hc_healthy() -> u32 {
        2
    }
    pub fn hc_unhealthy() -> u32 {
        3
    }
    pub fn path() -> String {
        "/*".into()
    }
    pub fn status() -> u16 {
        200
    }
}
