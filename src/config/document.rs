//! The document as a whole: its top-level keys (`workers`, `cpus`, `driver`, `log_level`, ...), the
//! `Config` every table validates into, and `validate`, which runs each table's rules in file order and
//! then the checks across tables (routes naming upstreams, alerts naming routes).

use super::admin::{Admin, AdminToml};
use super::auth::{Auth, AuthToml};
use super::check::{Ctx, Reach};
use super::dns::{Dns, DnsToml};
use super::http::{Http, HttpToml};
use super::listener::{Listener, ListenerToml};
use super::route::{route, Route, RouteToml, UpstreamIndex};
use super::units;
use super::upstream::{upstream, Upstream, UpstreamToml};
use super::ConfigError;
use super::Source;
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
    /// API consumers by name.
    #[serde(default)]
    pub consumers: IndexMap<String, super::consumer::ConsumerToml>,
    /// Where API keys are read from.
    #[serde(default)]
    pub api_key: super::consumer::ApiKeyToml,
    /// Headers naming the consumer upstream.
    #[serde(default)]
    pub consumer_headers: super::consumer::ConsumerHeadersToml,
    /// The state database.
    pub state: Option<super::consumer::StateToml>,
    /// Authentication methods by name.
    #[serde(default)]
    pub auth: IndexMap<String, AuthToml>,
    /// Rate limits by name.
    #[serde(default)]
    pub limits: IndexMap<String, super::limits::LimitToml>,
    /// Plans by name.
    #[serde(default)]
    pub plans: IndexMap<String, super::limits::PlanToml>,
    /// The usage ledger and billing export.
    pub usage: Option<super::usage::UsageToml>,
    /// Automatic certificates.
    pub acme: Option<super::acme::AcmeToml>,
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
    /// Consumers from the file.
    pub consumers: Vec<super::consumer::Consumer>,
    /// Where API keys are read from.
    pub api_key: super::consumer::ApiKeySource,
    /// Headers naming the consumer upstream.
    pub consumer_headers: super::consumer::ConsumerHeaders,
    /// The state database file, if runtime state is kept.
    pub state: Option<std::path::PathBuf>,
    /// Authentication methods (`[auth.NAME]`), in file order.
    pub auth: Vec<Auth>,
    /// Rate limits: `[limits.NAME]` in file order, then routes' inline limits.
    pub limits: Vec<super::limits::Limit>,
    /// Plans, in file order.
    pub plans: Vec<super::limits::Plan>,
    /// The usage ledger (`[usage]`), kept in the state database.
    pub usage: Option<super::usage::Usage>,
    /// Automatic certificates (`[acme]` and the listeners' names), kept in the state directory.
    pub acme: Option<super::acme::Acme>,
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
/// Spelled as `driver` is written: `auto`, `io_uring`, `epoll`.
impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        })
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
        Some(a) => Some(super::admin::admin(&cx, &a)?),
    };

    // ACME first: a TLS listener serves the certificates it has stored for the listener's names.
    let state = super::consumer::state(&cx, raw.state);
    let acme_tables: Vec<super::acme::ListenerAcme<'_>> = raw
        .listeners
        .iter()
        .map(|(name, l)| super::acme::ListenerAcme {
            name,
            acme: l.acme.as_ref(),
            tls: l.tls.is_some(),
        })
        .collect();
    let acme = super::acme::acme(&cx, raw.acme, &acme_tables, state.as_deref())?;
    let listeners = super::listener::listeners(&cx, &raw.listeners, acme.as_ref())?;

    let http = super::http::http(&cx, &raw.http)?;

    let dns = super::dns::dns(&cx, &raw.dns)?;

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
    // Routes name their authentication methods.
    let auth = super::auth::auths(&cx, raw.auth, &by_name)?;
    // Request header rules may not name the consumer headers.
    let consumer_headers = super::consumer::consumer_headers(&cx, raw.consumer_headers)?;
    let mut limits = super::limits::limits(&cx, raw.limits)?;
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (name, mut r) in raw.routes {
        let rate_limit = r.rate_limit.take();
        let lims = super::limits::route_limits(&cx, &name, rate_limit.as_ref(), &mut limits)?;
        let mut route = route(&cx, name, r, &upstreams, &by_name, &auth, &consumer_headers)?;
        route.rate_limit = lims;
        routes.push(route);
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

    let plans = super::limits::plans(&cx, raw.plans, &limits, &route_names)?;
    let consumers = super::consumer::consumers(&cx, raw.consumers, &plans)?;
    let api_key = super::consumer::api_key(&cx, raw.api_key)?;
    let usage = super::usage::usage(&cx, raw.usage, state.is_some())?;

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
        consumers,
        api_key,
        consumer_headers,
        state,
        auth,
        limits,
        plans,
        usage,
        acme,
    })
}

/// Defaults, one function per key (serde needs functions); each is named after its key.
mod dflt {
    use std::time::Duration;
    pub fn driver() -> String {
        "auto".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn metrics() -> bool {
        true
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
}
