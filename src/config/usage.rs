//! `[usage]`: the usage ledger (how often it is written, how long it is kept) and the billing
//! webhook its closed periods are pushed to. The ledger lives in the state database, so `[usage]`
//! needs `[state] path`.

use super::check::{nonzero, Ctx};
use super::monitoring::{parse_webhook, Webhook};
use super::secret::{resolve_at, Secret, SecretToml};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// `[usage]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageToml {
    /// How often the control thread writes what it collected (one transaction each time).
    #[serde(default = "dflt::flush_interval", deserialize_with = "units::duration")]
    pub flush_interval: Duration,
    /// Per-day and per-month rows older than this are deleted.
    #[serde(default = "dflt::retention", deserialize_with = "units::duration")]
    pub retention: Duration,
    /// Per-minute rows (analytics) older than this are deleted; at most `retention`.
    #[serde(
        default = "dflt::minute_retention",
        deserialize_with = "units::duration"
    )]
    pub minute_retention: Duration,
    /// Where closed periods are pushed.
    pub billing_webhook: Option<BillingWebhookToml>,
}

/// `billing_webhook = { url, period, secret }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingWebhookToml {
    /// `http://host:port/path`.
    pub url: String,
    /// "day" (default) or "month".
    #[serde(default = "dflt::period")]
    pub period: String,
    /// HMAC-SHA256 key of `X-Sluice-Signature`.
    pub secret: SecretToml,
}

/// A billing period length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingPeriod {
    /// A UTC day: ids like `2026-12-03`.
    Day,
    /// A UTC month: ids like `2026-12`.
    Month,
}

impl BillingPeriod {
    /// As written in TOML and in the push body.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingPeriod::Day => "day",
            BillingPeriod::Month => "month",
        }
    }
}

/// `billing_webhook`, validated.
#[derive(Debug, Clone)]
pub struct BillingWebhook {
    pub hook: Webhook,
    pub period: BillingPeriod,
    pub secret: Secret,
}

/// `[usage]`, validated.
#[derive(Debug, Clone)]
pub struct Usage {
    pub flush_interval: Duration,
    pub retention: Duration,
    pub minute_retention: Duration,
    pub billing: Option<BillingWebhook>,
}

/// Validates `[usage]`; `state` says whether `[state] path` is set (the ledger's file).
pub(super) fn usage(
    cx: &Ctx,
    raw: Option<UsageToml>,
    state: bool,
) -> Result<Option<Usage>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    if !state {
        return Err(cx.err(
            "usage",
            "needs [state] path: the usage ledger is kept in the state database",
        ));
    }
    let flush_interval = nonzero(cx, "usage.flush_interval", raw.flush_interval)?;
    if flush_interval > Duration::from_secs(3600) {
        return Err(cx.err(
            "usage.flush_interval",
            format!("expected at most 1h, got {flush_interval:?}"),
        ));
    }
    let retention = nonzero(cx, "usage.retention", raw.retention)?;
    if retention < Duration::from_secs(86400) {
        return Err(cx.err(
            "usage.retention",
            format!("expected at least 1d (per-day rows), got {retention:?}"),
        ));
    }
    let minute_retention = nonzero(cx, "usage.minute_retention", raw.minute_retention)?;
    if minute_retention > retention {
        return Err(cx.err(
            "usage.minute_retention",
            format!("expected at most retention ({retention:?}), got {minute_retention:?}"),
        ));
    }
    let billing = match raw.billing_webhook {
        None => None,
        Some(b) => {
            let hook = parse_webhook(&cx.file, "usage.billing_webhook.url", &b.url)?;
            let period = match b.period.as_str() {
                "day" => BillingPeriod::Day,
                "month" => BillingPeriod::Month,
                other => {
                    return Err(cx.err(
                        "usage.billing_webhook.period",
                        format!("expected \"day\" or \"month\", got {other:?}"),
                    ))
                }
            };
            let secret = resolve_at(cx, "usage.billing_webhook.secret", &b.secret)?;
            if secret.expose().is_empty() {
                return Err(cx.err(
                    "usage.billing_webhook.secret",
                    "expected a non-empty secret",
                ));
            }
            Some(BillingWebhook {
                hook,
                period,
                secret,
            })
        }
    };
    if let Some(b) = &billing {
        // A closed period is pushed from its rows: they must outlive it by a margin, or a receiver
        // that was down for a while would find its period trimmed before it was sent.
        let need = match b.period {
            BillingPeriod::Day => Duration::from_secs(2 * 86_400),
            BillingPeriod::Month => Duration::from_secs(62 * 86_400),
        };
        if retention < need {
            return Err(cx.err(
                "usage.retention",
                format!(
                    "expected at least {}d with a billing period of a {} (rows must outlive the period they are pushed with), got {retention:?}",
                    need.as_secs() / 86_400,
                    b.period.as_str()
                ),
            ));
        }
    }
    Ok(Some(Usage {
        flush_interval,
        retention,
        minute_retention,
        billing,
    }))
}

/// Defaults, one function per key.
mod dflt {
    use std::time::Duration;
    pub fn flush_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn retention() -> Duration {
        Duration::from_secs(400 * 86400)
    }
    pub fn minute_retention() -> Duration {
        Duration::from_secs(30 * 86400)
    }
    pub fn period() -> String {
        "day".into()
    }
}
