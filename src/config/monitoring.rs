//! Monitoring keys: `[access_log]`, `[alerts.NAME]` and `[signals]`, as written and validated.

use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogToml {
    /// File path, or "stderr"/"stdout".
    pub path: String,
    /// "json" (default) or a line template with `$variables`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Share of requests logged, 0.0..=1.0 (errors are always logged).
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Per-worker buffer flushed to the log thread when this full or every 100 ms.
    #[serde(default = "default_buffer", deserialize_with = "units::size")]
    pub buffer_bytes: u64,
}

fn default_format() -> String {
    "json".into()
}
fn default_sample() -> f64 {
    1.0
}
fn default_buffer() -> u64 {
    64 * 1024
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// A file, reopened on SIGUSR1.
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// `[access_log]`, validated.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// Destination.
    pub target: LogTarget,
    /// None = JSON lines; Some = template.
    pub template: Option<String>,
    /// Sampling ratio.
    pub sample: f64,
    /// Buffer size per worker.
    pub buffer_bytes: usize,
}

/// Variables a template may use.
pub const LOG_VARIABLES: &[&str] = &[
    "time",
    "request_id",
    "trace_id",
    "client",
    "method",
    "path",
    "query",
    "host",
    "status",
    "route",
    "upstream",
    "endpoint",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "connect_ms",
    "ttfb_ms",
    "reason",
    "attempts",
    "consumer",
    "auth",
    "worker",
    "user_agent",
    "traceparent",
];

/// A piece of an access log template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePiece<'a> {
    /// Literal text.
    Lit(&'a str),
    /// `$name` or `${name}`.
    Var(&'a str),
    /// `${` without its `}`.
    Unclosed,
}

/// Splits a template into literals and variables.
pub fn template_pieces(tpl: &str) -> impl Iterator<Item = TemplatePiece<'_>> {
    let mut rest = tpl;
    let mut pending: Option<TemplatePiece<'_>> = None;
    std::iter::from_fn(move || {
        if let Some(p) = pending.take() {
            return Some(p);
        }
        if rest.is_empty() {
            return None;
        }
        let Some(i) = rest.find('$') else {
            let lit = rest;
            rest = "";
            return Some(TemplatePiece::Lit(lit));
        };
        let lit = &rest[..i];
        let tail = &rest[i + 1..];
        let var = match tail.strip_prefix('{') {
            Some(b) => match b.find('}') {
                Some(e) => {
                    rest = &b[e + 1..];
                    TemplatePiece::Var(&b[..e])
                }
                None => {
                    rest = "";
                    TemplatePiece::Unclosed
                }
            },
            None => {
                let n = tail
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                rest = &tail[n..];
                TemplatePiece::Var(&tail[..n])
            }
        };
        if lit.is_empty() {
            Some(var)
        } else {
            pending = Some(var);
            Some(TemplatePiece::Lit(lit))
        }
    })
}

/// `[alerts.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertToml {
    /// "error_ratio", "p99_latency_ms", "upstream_unhealthy", "rate_limited_per_second", "worker_utilization".
    pub metric: String,
    /// "global" (default), "route:NAME" or "upstream:NAME".
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Fires when the metric is above this.
    pub threshold: f64,
    /// Resolves when the metric falls to or below this (hysteresis); default: the threshold.
    pub clear_below: Option<f64>,
    /// Window the metric is computed over.
    #[serde(default = "default_window", deserialize_with = "units::duration")]
    pub window: Duration,
    /// Webhook to POST firing/resolved events to (http://host:port/path).
    pub webhook: Option<String>,
}

fn default_scope() -> String {
    "global".into()
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}

/// What an alert measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMetric {
    /// 5xx (and requests with no response) / requests.
    ErrorRatio,
    /// p99 latency in ms.
    P99LatencyMs,
    /// Number of unhealthy endpoints.
    UpstreamUnhealthy,
    /// Requests rejected by policy per second.
    RateLimitedPerSecond,
    /// Busiest worker's utilization (0..1).
    WorkerUtilization,
    /// The share of its quota (requests or bytes, whichever is more) a consumer used this period;
    /// each consumer fires and resolves on its own.
    QuotaUsed,
    /// ACME orders failed since the last success, of the name with the most (0 while all are fine).
    AcmeFailures,
}

/// Where an alert looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertScope {
    /// The whole instance.
    Global,
    /// One route.
    Route(String),
    /// One upstream group.
    Upstream(String),
    /// One consumer (`quota_used` only).
    Consumer(String),
}

/// A parsed `http://host:port/path` webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as written.
    pub url: String,
    /// "host:port".
    pub authority: String,
    /// Path and query.
    pub path: String,
}

/// `[alerts.NAME]`, validated.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Table name.
    pub name: String,
    /// Metric.
    pub metric: AlertMetric,
    /// Scope.
    pub scope: AlertScope,
    /// Fire above.
    pub threshold: f64,
    /// Resolve at or below.
    pub clear_below: f64,
    /// Window.
    pub window: Duration,
    /// Webhook.
    pub webhook: Option<Webhook>,
}

/// `[signals]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsToml {
    /// Target utilization per core (the HPA target), 0 < t <= 1.
    #[serde(default = "default_target")]
    pub target_utilization: f64,
    /// Instances currently running (the HPA's "current replicas").
    #[serde(default = "default_instances")]
    pub current_instances: u32,
    /// Window the utilization is averaged over.
    #[serde(
        default = "default_signal_window",
        deserialize_with = "units::duration"
    )]
    pub window: Duration,
    /// Webhook fired when the recommendation changes.
    pub webhook: Option<String>,
    /// Minimum time between two webhook calls.
    #[serde(default = "default_cooldown", deserialize_with = "units::duration")]
    pub cooldown: Duration,
}

fn default_target() -> f64 {
    0.6
}
fn default_instances() -> u32 {
    1
}
fn default_signal_window() -> Duration {
    Duration::from_secs(30)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

/// `[signals]`, validated.
#[derive(Debug, Clone)]
pub struct Signals {
    /// Target utilization.
    pub target_utilization: f64,
    /// Current instances.
    pub current_instances: u32,
    /// Averaging window.
    pub window: Duration,
    /// Webhook.
    pub webhook: Option<Webhook>,
    /// Webhook cooldown.
    pub cooldown: Duration,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            target_utilization: default_target(),
            current_instances: default_instances(),
            window: default_signal_window(),
            webhook: None,
            cooldown: default_cooldown(),
        }
    }
}

fn err(file: &str, key: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        key,
        message: message.into(),
    }
}

/// Parses `http://host:port/path`.
pub fn parse_webhook(file: &str, key: &str, url: &str) -> Result<Webhook, ConfigError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        err(
            file,
            key.into(),
            format!("expected an http:// URL, got {url:?}"),
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || path.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(err(
            file,
            key.into(),
            format!("expected http://host:port/path, got {url:?}"),
        ));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Webhook {
        url: url.to_string(),
        authority,
        path: path.to_string(),
    })
}

/// Validates `[access_log]`.
pub fn access_log(file: &str, t: AccessLogToml) -> Result<AccessLog, ConfigError> {
    let target = match t.path.as_str() {
        "stdout" => LogTarget::Stdout,
        "stderr" => LogTarget::Stderr,
        "" => {
            return Err(err(
                file,
                "access_log.path".into(),
                "expected a file path, \"stdout\" or \"stderr\"",
            ))
        }
        p => LogTarget::File(PathBuf::from(p)),
    };
    if !(0.0..=1.0).contains(&t.sample) {
        return Err(err(
            file,
            "access_log.sample".into(),
            format!("expected 0.0..=1.0, got {}", t.sample),
        ));
    }
    let template = if t.format == "json" {
        None
    } else {
        for piece in template_pieces(&t.format) {
            match piece {
                TemplatePiece::Lit(_) => {}
                TemplatePiece::Unclosed => {
                    return Err(err(file, "access_log.format".into(), "unclosed ${"))
                }
                TemplatePiece::Var(name) if LOG_VARIABLES.contains(&name) => {}
                TemplatePiece::Var(name) => {
                    return Err(err(
                        file,
                        "access_log.format".into(),
                        format!(
                            "unknown variable ${name}; known: {}",
                            LOG_VARIABLES.join(", ")
                        ),
                    ))
                }
            }
        }
        Some(t.format)
    };
    if t.buffer_bytes < 1024 || t.buffer_bytes > 16 << 20 {
        return Err(err(
            file,
            "access_log.buffer_bytes".into(),
            format!("expected 1KiB..=16MiB, got {}", t.buffer_bytes),
        ));
    }
    Ok(AccessLog {
        target,
        template,
        sample: t.sample,
        buffer_bytes: t.buffer_bytes as usize,
    })
}

/// Validates one `[alerts.NAME]`; `routes`/`upstreams` are the defined names.
pub fn alert(
    file: &str,
    name: String,
    t: AlertToml,
    routes: &[&str],
    upstreams: &[&str],
) -> Result<Alert, ConfigError> {
    let base = format!("alerts.{name}");
    let metric = match t.metric.as_str() {
        "error_ratio" => AlertMetric::ErrorRatio,
        "p99_latency_ms" => AlertMetric::P99LatencyMs,
        "upstream_unhealthy" => AlertMetric::UpstreamUnhealthy,
        "rate_limited_per_second" => AlertMetric::RateLimitedPerSecond,
        "worker_utilization" => AlertMetric::WorkerUtilization,
        "quota_used" => AlertMetric::QuotaUsed,
        "acme_failures" => AlertMetric::AcmeFailures,
        other => {
            return Err(err(file, format!("{base}.metric"), format!(
                "expected error_ratio, p99_latency_ms, upstream_unhealthy, rate_limited_per_second, worker_utilization, quota_used or acme_failures, got {other:?}"
            )))
        }
    };
    let scope = match t.scope.split_once(':') {
        None if t.scope == "global" => AlertScope::Global,
        Some(("route", r)) if routes.contains(&r) => AlertScope::Route(r.to_string()),
        Some(("upstream", u)) if upstreams.contains(&u) => AlertScope::Upstream(u.to_string()),
        // Consumers may be created at runtime, so the name is not checked against the file's.
        Some(("consumer", c)) if super::check::name_ok(c) => AlertScope::Consumer(c.to_string()),
        _ => return Err(err(file, format!("{base}.scope"), format!("expected \"global\", \"route:NAME\", \"upstream:NAME\" naming a defined table, or \"consumer:NAME\", got {:?}", t.scope))),
    };
    let fits = match (metric, &scope) {
        (AlertMetric::QuotaUsed, s) => matches!(s, AlertScope::Global | AlertScope::Consumer(_)),
        (_, AlertScope::Consumer(_)) => false,
        (AlertMetric::UpstreamUnhealthy, AlertScope::Route(_)) => false,
        (
            AlertMetric::WorkerUtilization
            | AlertMetric::RateLimitedPerSecond
            | AlertMetric::AcmeFailures,
            s,
        ) => *s == AlertScope::Global,
        _ => true,
    };
    if !fits {
        return Err(err(
            file,
            format!("{base}.scope"),
            format!("metric {:?} cannot be scoped to {:?}", t.metric, t.scope),
        ));
    }
    if !t.threshold.is_finite() || t.threshold < 0.0 {
        return Err(err(
            file,
            format!("{base}.threshold"),
            "expected a number >= 0",
        ));
    }
    let clear_below = t.clear_below.unwrap_or(t.threshold);
    if clear_below > t.threshold || clear_below < 0.0 {
        return Err(err(
            file,
            format!("{base}.clear_below"),
            "expected 0 <= clear_below <= threshold",
        ));
    }
    if t.window.is_zero() || t.window > Duration::from_secs(300) {
        return Err(err(file, format!("{base}.window"), "expected 1s..=5m"));
    }
    let webhook = match &t.webhook {
        Some(u) => Some(parse_webhook(file, &format!("{base}.webhook"), u)?),
        None => None,
    };
    Ok(Alert {
        name,
        metric,
        scope,
        threshold: t.threshold,
        clear_below,
        window: t.window,
        webhook,
    })
}

/// Validates `[signals]`.
pub fn signals(file: &str, t: SignalsToml) -> Result<Signals, ConfigError> {
    if !(t.target_utilization > 0.0 && t.target_utilization <= 1.0) {
        return Err(err(
            file,
            "signals.target_utilization".into(),
            format!("expected 0 < t <= 1, got {}", t.target_utilization),
        ));
    }
    if t.current_instances == 0 {
        return Err(err(
            file,
            "signals.current_instances".into(),
            "expected at least 1",
        ));
    }
    if t.window.is_zero() || t.window > Duration::from_secs(300) {
        return Err(err(file, "signals.window".into(), "expected 1s..=5m"));
    }
    let webhook = match &t.webhook {
        Some(u) => Some(parse_webhook(file, "signals.webhook", u)?),
        None => None,
    };
    Ok(Signals {
        target_utilization: t.target_utilization,
        current_instances: t.current_instances,
        window: t.window,
        webhook,
        cooldown: t.cooldown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let w = parse_webhook("f", "k", "http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(w.authority, "127.0.0.1:9000");
        assert_eq!(w.path, "/hook?x=1");
        assert_eq!(
            parse_webhook("f", "k", "http://example.com")
                .unwrap()
                .authority,
            "example.com:80"
        );
        assert!(parse_webhook("f", "k", "https://x/").is_err());
    }

    #[test]
    fn templates_are_checked() {
        let t = |f: &str| AccessLogToml {
            path: "stderr".into(),
            format: f.into(),
            sample: 1.0,
            buffer_bytes: 65536,
        };
        assert!(access_log("f", t("$client - $status ${duration_ms}ms")).is_ok());
        assert!(access_log("f", t("$nope")).is_err());
    }
}
