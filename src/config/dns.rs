//! `[dns]`: resolver servers and TTL bounds for endpoint names.

use super::check::{socket_addr, Ctx};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

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

/// Validates `[dns]`.
pub(super) fn dns(cx: &Ctx, raw: &DnsToml) -> Result<Dns, ConfigError> {
    let dns = Dns {
        servers: match &raw.servers {
            None => Vec::new(),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, s)| socket_addr(cx, &format!("dns.servers[{i}]"), s))
                .collect::<Result<_, _>>()?,
        },
        min_ttl: raw.min_ttl.unwrap_or(Duration::from_secs(1)),
        max_ttl: raw.max_ttl.unwrap_or(Duration::from_secs(300)),
    };
    if dns.min_ttl > dns.max_ttl {
        return Err(cx.err("dns.min_ttl", "must not exceed dns.max_ttl"));
    }
    Ok(dns)
}
