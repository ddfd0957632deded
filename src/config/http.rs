//! `[http]`: downstream limits and timeouts.

use super::check::{nonzero, range, Ctx};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

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
    /// Repeated slashes in a path count as one before matching (see `http1::path`).
    #[serde(default = "dflt::merge_slashes")]
    pub merge_slashes: bool,
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
            merge_slashes: dflt::merge_slashes(),
        }
    }
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
    /// `//` is `/` in the path routes and policies see.
    pub merge_slashes: bool,
}

/// Validates `[http]`.
pub(super) fn http(cx: &Ctx, h: &HttpToml) -> Result<Http, ConfigError> {
    Ok(Http {
        header_timeout: nonzero(cx, "http.header_timeout", h.header_timeout)?,
        idle_timeout: nonzero(cx, "http.idle_timeout", h.idle_timeout)?,
        body_timeout: nonzero(cx, "http.body_timeout", h.body_timeout)?,
        max_header_bytes: range(
            cx,
            "http.max_header_bytes",
            h.max_header_bytes,
            1024,
            1 << 20,
        )? as usize,
        max_headers: range(cx, "http.max_headers", h.max_headers as u64, 1, 256)? as usize,
        max_uri_bytes: range(cx, "http.max_uri_bytes", h.max_uri_bytes, 16, 1 << 20)? as usize,
        max_body_bytes: h.max_body_bytes,
        merge_slashes: h.merge_slashes,
    })
}

/// Defaults, one function per key (serde needs functions); each is named after its key.
mod dflt {
    use std::time::Duration;
    pub fn body_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_body_bytes() -> u64 {
        10 * 1024 * 1024
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
    pub fn merge_slashes() -> bool {
        true
    }
}
