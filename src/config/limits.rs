//! `[limits.NAME]` (token buckets and what keys them), a route's `rate_limit`, `[plans.NAME]`
//! (limits, a quota and access rules bundled for consumers) and a consumer's `plan` and `quota`.

use super::check::{is_token, name_ok, Ctx};
use super::units;
use super::ConfigError;
use indexmap::IndexMap;
use serde::Deserialize;

/// `[limits.NAME]`, or a route's inline `rate_limit = { ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitToml {
    /// "100/s", "600/m", "10000/h".
    pub rate: String,
    /// Requests admitted at once; default: the rate's count.
    pub burst: Option<u64>,
    /// What the bucket is kept per; default "consumer".
    pub key: Option<KeyToml>,
    /// Distinct keys held per worker.
    pub max_keys: Option<usize>,
}

/// `key = "consumer"` or `key = ["consumer", "route"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyToml {
    One(String),
    Many(Vec<String>),
}

/// A route's `rate_limit`: limit names, or one inline limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RateLimitToml {
    Names(Vec<String>),
    Inline(LimitToml),
}

/// `quota = { requests, bytes, period }`, on a plan or (overriding it) a consumer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaToml {
    /// Requests per period.
    pub requests: Option<u64>,
    /// Bytes (in plus out) per period.
    #[serde(default, deserialize_with = "units::opt_size")]
    pub bytes: Option<u64>,
    /// "day" or "month" (UTC); default "month".
    pub period: Option<String>,
}

/// `[plans.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanToml {
    /// Limits every consumer of the plan is held to, on every route it calls.
    #[serde(default)]
    pub limits: Vec<String>,
    /// The plan's quota.
    pub quota: Option<QuotaToml>,
    /// Route names the plan's consumers may call; absent = any.
    pub allow: Option<Vec<String>>,
}

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The authenticated consumer's name (the client address when there is none).
    Consumer,
    /// The client address, as `trusted_proxies` decided it.
    Ip,
    /// The route's name.
    Route,
    /// A request header's value (lowercase name); absent = empty.
    Header(String),
}

/// A limit, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// `[limits.NAME]`, or `route:NAME` for a route's inline limit.
    pub name: String,
    /// Requests per `window_secs`.
    pub count: u64,
    /// The rate's window.
    pub window_secs: u64,
    /// Bucket capacity.
    pub burst: u64,
    /// Key parts, joined.
    pub key: Vec<KeyPart>,
    /// Keys held per worker.
    pub max_keys: usize,
}

impl Limit {
    /// Tokens per second.
    pub fn per_sec(&self) -> f64 {
        self.count as f64 / self.window_secs as f64
    }
}

/// Quota period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    /// As written in the config and in `/usage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// A quota, validated (a consumer's override already applied over its plan's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per period.
    pub requests: Option<u64>,
    /// Bytes per period.
    pub bytes: Option<u64>,
    pub period: Period,
}

/// A plan, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// Indices into `Config::limits`.
    pub limits: Vec<usize>,
    pub quota: Option<QuotaSpec>,
    /// Route names allowed; None = any.
    pub allow: Option<Vec<String>>,
}

/// Keys held per worker and limit unless `max_keys` says otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// The most keys a limit may hold per worker.
const MAX_MAX_KEYS: usize = 10_000_000;

/// Parses "100/s", "600/m", "10000/h".
pub fn parse_rate(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("expected a rate like \"100/s\", \"600/m\" or \"10000/h\", got {s:?}");
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    let window = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    if n == 0 || n > 1_000_000_000 {
        return Err(format!("rate {s:?}: the count must be 1..=1000000000"));
    }
    Ok((n, window))
}

fn key_part(s: &str) -> Result<KeyPart, String> {
    match s {
        "consumer" => Ok(KeyPart::Consumer),
        "ip" => Ok(KeyPart::Ip),
        "route" => Ok(KeyPart::Route),
        _ => match s.strip_prefix("header:") {
            Some(h) if is_token(h) => Ok(KeyPart::Header(h.to_ascii_lowercase())),
            _ => Err(format!(
                "expected \"consumer\", \"ip\", \"route\" or \"header:NAME\", got {s:?}"
            )),
        },
    }
}

/// Validates one limit; `at` is its key path for errors.
pub(super) fn limit(cx: &Ctx, at: &str, name: String, t: &LimitToml) -> Result<Limit, ConfigError> {
    let (count, window_secs) = parse_rate(&t.rate).map_err(|m| cx.err(format!("{at}.rate"), m))?;
    let burst = t.burst.unwrap_or(count);
    if burst == 0 || burst > 1_000_000_000 {
        return Err(cx.err(format!("{at}.burst"), "expected 1..=1000000000"));
    }
    let parts = match &t.key {
        None => vec!["consumer".to_string()],
        Some(KeyToml::One(s)) => vec![s.clone()],
        Some(KeyToml::Many(v)) => v.clone(),
    };
    if parts.is_empty() || parts.len() > 8 {
        return Err(cx.err(format!("{at}.key"), "expected 1 to 8 key parts"));
    }
    let key = parts
        .iter()
        .map(|p| key_part(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| cx.err(format!("{at}.key"), m))?;
    let max_keys = t.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if !(1..=MAX_MAX_KEYS).contains(&max_keys) {
        return Err(cx.err(
            format!("{at}.max_keys"),
            format!("expected 1..={MAX_MAX_KEYS}"),
        ));
    }
    Ok(Limit {
        name,
        count,
        window_secs,
        burst,
        key,
        max_keys,
    })
}

/// A `[limits.NAME]` or `[plans.NAME]` name: what a route, a plan or a consumer names it by.
fn table_name(cx: &Ctx, at: &str, name: &str) -> Result<(), ConfigError> {
    if name_ok(name) {
        Ok(())
    } else {
        Err(cx.err(
            at.to_string(),
            "expected a name of letters, digits and - _ . @",
        ))
    }
}

/// `[limits.NAME]` tables, in file order.
pub(super) fn limits(
    cx: &Ctx,
    raw: IndexMap<String, LimitToml>,
) -> Result<Vec<Limit>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, t) in raw {
        let at = format!("limits.{name}");
        table_name(cx, &at, &name)?;
        out.push(limit(cx, &at, name, &t)?);
    }
    Ok(out)
}

/// A route's `rate_limit`: indices into `limits`, appending an inline limit as `route:NAME`.
pub(super) fn route_limits(
    cx: &Ctx,
    route: &str,
    t: Option<&RateLimitToml>,
    limits: &mut Vec<Limit>,
) -> Result<Vec<usize>, ConfigError> {
    let at = format!("routes.{route}.rate_limit");
    match t {
        None => Ok(Vec::new()),
        Some(RateLimitToml::Inline(l)) => {
            limits.push(limit(cx, &at, format!("route:{route}"), l)?);
            Ok(vec![limits.len() - 1])
        }
        Some(RateLimitToml::Names(names)) => names_to_limits(cx, &at, names, limits),
    }
}

fn names_to_limits(
    cx: &Ctx,
    at: &str,
    names: &[String],
    limits: &[Limit],
) -> Result<Vec<usize>, ConfigError> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let i = limits.iter().position(|l| l.name == *n).ok_or_else(|| {
            cx.err(
                at.to_string(),
                format!("names limit {n:?}, which no [limits.{n}] defines"),
            )
        })?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

fn period(cx: &Ctx, at: &str, p: Option<&str>) -> Result<Period, ConfigError> {
    match p {
        None | Some("month") => Ok(Period::Month),
        Some("day") => Ok(Period::Day),
        Some(other) => Err(cx.err(
            format!("{at}.period"),
            format!("expected \"day\" or \"month\", got {other:?}"),
        )),
    }
}

/// A quota table, validated; fields left out are taken from the plan (for a consumer's own).
pub(super) fn quota_spec(cx: &Ctx, at: &str, q: &QuotaToml) -> Result<QuotaSpec, ConfigError> {
    if let Some(p) = q.period.as_deref() {
        period(cx, at, Some(p))?;
    }
    QuotaSpec::from_toml(q).map_err(|(field, msg)| {
        let at = match field {
            Some(f) => format!("{at}.{f}"),
            None => at.to_string(),
        };
        cx.err(at, msg)
    })
}

/// A quota as a plan or a consumer writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaSpec {
    pub requests: Option<u64>,
    pub bytes: Option<u64>,
    pub period: Option<Period>,
}

impl QuotaSpec {
    /// Validates a quota as written (in the config, or in an admin API body); the error names the
    /// field, when it is one.
    pub fn from_toml(q: &QuotaToml) -> Result<QuotaSpec, (Option<&'static str>, String)> {
        let period = match q.period.as_deref() {
            None => None,
            Some("day") => Some(Period::Day),
            Some("month") => Some(Period::Month),
            Some(other) => {
                return Err((
                    Some("period"),
                    format!("expected \"day\" or \"month\", got {other:?}"),
                ))
            }
        };
        if q.requests == Some(0) || q.bytes == Some(0) {
            return Err((
                None,
                "a quota of 0 admits nothing; disable the consumer instead".into(),
            ));
        }
        // Counts are kept in SQLite's signed 64-bit integers (the ledger, the state database).
        let max = i64::MAX as u64;
        if q.requests.is_some_and(|n| n > max) {
            return Err((Some("requests"), format!("expected at most {max}")));
        }
        if q.bytes.is_some_and(|n| n > max) {
            return Err((Some("bytes"), format!("expected at most {max} bytes")));
        }
        Ok(QuotaSpec {
            requests: q.requests,
            bytes: q.bytes,
            period,
        })
    }

    /// As an admin API answer shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "bytes": self.bytes,
            "period": self.period.map(Period::as_str),
        })
    }

    /// The quota in force: a consumer's own fields over its plan's; None when neither counts
    /// anything. The period defaults to a month.
    pub fn effective(own: Option<&QuotaSpec>, plan: Option<&QuotaSpec>) -> Option<Quota> {
        let pick = |f: fn(&QuotaSpec) -> Option<u64>| own.and_then(f).or_else(|| plan.and_then(f));
        let requests = pick(|q| q.requests);
        let bytes = pick(|q| q.bytes);
        let period = own
            .and_then(|q| q.period)
            .or_else(|| plan.and_then(|q| q.period))
            .unwrap_or(Period::Month);
        (requests.is_some() || bytes.is_some()).then_some(Quota {
            requests,
            bytes,
            period,
        })
    }
}

/// `[plans.NAME]` tables, in file order; `routes` are the route names an `allow` may name.
pub(super) fn plans(
    cx: &Ctx,
    raw: IndexMap<String, PlanToml>,
    limits: &[Limit],
    routes: &[&str],
) -> Result<Vec<Plan>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, p) in raw {
        let at = format!("plans.{name}");
        table_name(cx, &at, &name)?;
        let lims = names_to_limits(cx, &format!("{at}.limits"), &p.limits, limits)?;
        let quota = match &p.quota {
            Some(q) => Some(quota_spec(cx, &format!("{at}.quota"), q)?),
            None => None,
        };
        if let Some(allow) = &p.allow {
            for r in allow {
                if !routes.contains(&r.as_str()) {
                    return Err(cx.err(
                        format!("{at}.allow"),
                        format!("names route {r:?}, which no [routes.{r}] defines"),
                    ));
                }
            }
        }
        out.push(Plan {
            name,
            limits: lims,
            quota,
            allow: p.allow,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_windows() {
        assert_eq!(parse_rate("100/s"), Ok((100, 1)));
        assert_eq!(parse_rate("600/m"), Ok((600, 60)));
        assert_eq!(parse_rate(" 5 / h "), Ok((5, 3600)));
        for bad in ["100", "0/s", "x/s", "10/d", "10/", "-1/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_parts() {
        assert_eq!(key_part("ip"), Ok(KeyPart::Ip));
        assert_eq!(
            key_part("header:X-Tenant"),
            Ok(KeyPart::Header("x-tenant".into()))
        );
        assert!(key_part("header:").is_err());
        assert!(key_part("user").is_err());
    }
}
